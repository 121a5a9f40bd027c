"""circuits.pretrained is the loader's public face: the logic lives in circuits.pretrained.loader
(issue 21's layout) and every name the package exported before the move still resolves there."""

from __future__ import annotations

import importlib

import pytest

import circuits.pretrained as pretrained
from circuits.pretrained import loader

# The package's __all__ before the logic moved to loader.py.
PUBLIC = (
    "GPT2_MODELS",
    "HubOptions",
    "PretrainedError",
    "from_pretrained",
    "from_pretrained_no_processing",
    "known_names",
    "load_tokenizer",
)


def test_public_names_are_the_same_objects() -> None:
    assert sorted(pretrained.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        assert getattr(pretrained, name) is getattr(loader, name), name


def test_the_loader_functions_live_in_loader() -> None:
    assert pretrained.from_pretrained.__module__ == "circuits.pretrained.loader"
    assert pretrained.from_pretrained_no_processing.__module__ == "circuits.pretrained.loader"


def test_the_model_classmethods_reach_the_same_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    """HookedTransformer.from_pretrained imports circuits.pretrained at call time: it must
    resolve to the loader's function (a patched package attribute is what it calls)."""
    from circuits.model import HookedTransformer

    seen: list[str] = []
    monkeypatch.setattr(pretrained, "from_pretrained", lambda name, *a, **k: seen.append(name))
    HookedTransformer.from_pretrained("attn-only-2l", device="cpu")
    assert seen == ["attn-only-2l"]
    assert importlib.import_module("circuits.pretrained") is pretrained
