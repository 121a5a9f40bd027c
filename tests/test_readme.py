"""The README's Python examples run as written (they train a model: slow tier)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_opens_with_the_two_setup_commands():
    first = re.search(r"```bash\n(.*?)```", README.read_text(), re.S)
    assert first is not None
    commands = [line.split("#")[0].strip() for line in first.group(1).splitlines()]
    assert commands == ["make demo", "make test"]


@pytest.mark.slow
def test_readme_python_examples_run_in_order(monkeypatch: pytest.MonkeyPatch):
    # from_pretrained("attn-only-2l") loads the shipped stand-in: no network here.
    import huggingface_hub.constants

    standin = README.parent / "data" / "standin_hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(standin))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    blocks = python_blocks()
    assert len(blocks) >= 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    from circuits.analysis import find_heads

    # What the README says this model shows.
    model = namespace["model"]
    assert namespace["result"].solved_at is not None
    assert find_heads(model, "previous_token")[0].startswith("L0")
    assert find_heads(model, "induction")[0].startswith("L1")
    batch = namespace["batch"]
    icl = namespace["in_context_learning_score"]
    assert icl(model, batch.tokens) < 0
    assert namespace["lm"].tokenizer is not None
