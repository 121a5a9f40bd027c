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


@pytest.fixture(scope="session")
def gpt2_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hub cache holding toy GPT2LMHeadModels saved by transformers as gpt2 and distilgpt2."""
    cache = tmp_path_factory.mktemp("hf_gpt2")
    standin.build_gpt2(cache, "gpt2", seed=0)
    standin.build_gpt2(cache, "distilgpt2", seed=1)
    return cache
