"""`circuits report NAME` on a pretrained model (a stand-in in the Hugging Face cache)."""

from __future__ import annotations

from pathlib import Path

import pytest

from circuits import cli
from circuits.pretrained import from_pretrained


def test_report_takes_a_zoo_name(zoo_cache: Path, tmp_path: Path, monkeypatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(zoo_cache))
    out = tmp_path / "r.html"
    assert cli.main(["report", "attn-only-2l", "-o", str(out)]) == 0
    page = out.read_text()
    assert "circuits report: attn-only-2l" in page and "Token QK circuits" in page
    assert "<|endoftext|>" in page or "&lt;|endoftext|&gt;" in page or "qu" in page


def test_a_local_model_without_its_tokenizer_loads_with_a_warning(
    zoo_cache: Path, tmp_path: Path
) -> None:
    from test_pretrained_zoo import snapshot

    with pytest.warns(UserWarning, match="no tokenizer"):
        model = from_pretrained(snapshot(zoo_cache, "gelu-1l"), cache_dir=tmp_path)
    assert model.tokenizer is None


def test_report_takes_a_gpt2_name(gpt2_cache: Path, tmp_path: Path, monkeypatch) -> None:
    # `gpt2` was taken for a checkpoint path ("no such directory") before the CLI knew
    # the GPT-2 names.
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(gpt2_cache))
    out = tmp_path / "g.html"
    assert cli.main(["report", "gpt2", "-o", str(out)]) == 0
    assert "circuits report: gpt2" in out.read_text()
