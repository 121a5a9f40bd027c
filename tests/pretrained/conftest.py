"""A Hugging Face cache of zoo stand-ins, with the hub offline (no test here uses the network)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from circuits.pretrained import standin

STANDINS = ("attn-only-2l", "attn-only-2l-demo", "gelu-1l", "solu-1l", "solu-2l")


@pytest.fixture(autouse=True)
def hub_offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    yield


@pytest.fixture(scope="session")
def zoo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return standin.build(tmp_path_factory.mktemp("hf_cache"), STANDINS)
