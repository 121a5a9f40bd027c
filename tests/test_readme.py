"""The README's and the docs pages' Python examples run as written.

README.md runs as one script, block after block (it trains a model). Each page under docs/
runs the same way in a namespace of its own. All of them are in the slow tier: pages train
models, load pretrained ones or run discovery, and any engineer may add one, so the unit tier
does not depend on what a page does. A block whose first line is ``# illustrative`` is not run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
ILLUSTRATIVE = "# illustrative"
# Dated, machine-specific numbers live in bench/RESULTS.md and history in CHANGELOG.md, not here.
LAB_NOTEBOOK = re.compile(
    r"\b20\d\d-\d\d-\d\d\b|\bissue \d+|\bwas -> |not re-measured|after the mask fix", re.I
)


def python_blocks(path: Path) -> list[str]:
    """The page's fenced ``python`` blocks, in order."""
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), re.S | re.M)


def runnable(blocks: list[str]) -> list[str]:
    return [b for b in blocks if not b.lstrip().startswith(ILLUSTRATIVE)]


def doc_pages() -> list[Path]:
    """Hand-written pages with Python examples (the API reference has none of its own)."""
    pages = sorted(p for p in DOCS.rglob("*.md") if "reference" not in p.relative_to(DOCS).parts)
    return [p for p in pages if python_blocks(p)]


def offline_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """``from_pretrained("attn-only-2l")`` loads the shipped stand-in: no network here."""
    import huggingface_hub.constants

    standin = ROOT / "data" / "standin_hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(standin))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def run_page(path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    import torch

    offline_hub(monkeypatch)
    monkeypatch.chdir(ROOT)  # examples name data/... relative to the repository
    # A page may set torch's global state as a user's script would (TransformerLens-style code
    # starts with torch.set_grad_enabled(False)); the next page must not inherit it.
    grad, dtype = torch.is_grad_enabled(), torch.get_default_dtype()
    threads = torch.get_num_threads()
    namespace: dict = {"__name__": "__docs__"}
    try:
        for block in runnable(python_blocks(path)):
            exec(compile(block, str(path), "exec"), namespace)
    finally:
        torch.set_grad_enabled(grad)
        torch.set_default_dtype(dtype)
        torch.set_num_threads(threads)
    return namespace


def test_readme_opens_with_the_two_setup_commands():
    first = re.search(r"```bash\n(.*?)```", README.read_text(), re.S)
    assert first is not None
    commands = [line.split("#")[0].strip() for line in first.group(1).splitlines()]
    assert commands == ["make demo", "make test"]


def test_readme_is_short_and_not_a_lab_notebook():
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    assert LAB_NOTEBOOK.findall(text) == []
    # Every README block runs: illustrations belong on the docs pages.
    assert all(not b.lstrip().startswith(ILLUSTRATIVE) for b in python_blocks(README))


@pytest.mark.parametrize("page", [p.name for p in sorted(DOCS.glob("*.md"))])
def test_docs_pages_hold_no_dated_numbers_or_history(page: str):
    # bench/RESULTS.md is included into benchmarks.md when the site is built, not here. A line
    # that points into it may name its sections, which carry dates and issue numbers.
    lines = (DOCS / page).read_text().splitlines()
    assert [line for line in lines if LAB_NOTEBOOK.search(line) and "RESULTS.md" not in line] == []


def test_the_history_check_catches_history():
    # Negative control for the check above.
    assert LAB_NOTEBOOK.search("median 3.5 s on 2026-11-25, not re-measured since")
    assert LAB_NOTEBOOK.search("fixed in issue 10") and LAB_NOTEBOOK.search("0.12, was -> 0.59")
    assert not LAB_NOTEBOOK.search("induction heads form in 200-275 steps (median 200)")


def test_the_page_finder_sees_the_pages_with_examples():
    # Negative control for the parametrisation below: it must not silently collect nothing.
    names = {p.name for p in doc_pages()}
    assert {"model.md", "analysis.md", "discovery.md", "training.md"} <= names
    assert runnable(["# illustrative: a fragment\nx = 1\n", "y = 2\n"]) == ["y = 2\n"]


@pytest.mark.slow
def test_readme_python_examples_run_in_order(monkeypatch: pytest.MonkeyPatch):
    blocks = python_blocks(README)
    assert len(blocks) >= 3
    namespace = run_page(README, monkeypatch)
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


@pytest.mark.slow
@pytest.mark.parametrize("page", [p.name for p in doc_pages()])
def test_docs_page_examples_run(page: str, monkeypatch: pytest.MonkeyPatch):
    namespace = run_page(DOCS / page, monkeypatch)
    if page == "analysis.md":
        # The heads the page names for the shipped model.
        from circuits.analysis import find_heads

        model = namespace["model"]
        assert find_heads(model, "previous_token") == ["L0H1"]
        assert find_heads(model, "induction") == ["L1H0", "L1H1"]
    if page == "training.md":
        assert namespace["result"].solved_at is not None
