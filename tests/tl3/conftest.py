"""TL3-compatibility tests: offline, on the shipped stand-in hub (``data/standin_hub``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

STANDIN_HUB = Path(__file__).resolve().parents[2] / "data" / "standin_hub"


@pytest.fixture
def standin_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The Hugging Face cache pointed at the shipped stand-in, the hub offline."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(STANDIN_HUB))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(STANDIN_HUB))
    yield STANDIN_HUB
