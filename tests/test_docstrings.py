"""Every public name of circuits' public modules has a docstring, and those that take or return a
bare ``Tensor`` (no jaxtyping shape in the signature) state its shape in the docstring.

Public names are a module's ``__all__``, or, for a module without one, the classes and functions
defined in it (or in its subpackage). Names re-exported from other libraries (TransformerLens's
``hook_points``, ...) are theirs to document. The API reference (``make docs``) renders these
docstrings.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import warnings
from types import ModuleType
from typing import Any

import pytest
import torch

# The public import paths, as the API reference (docs/reference/) names them.
PUBLIC_MODULES = [
    "circuits",
    "circuits.model",
    "circuits.config",
    "circuits.tasks",
    "circuits.training",
    "circuits.run",
    "circuits.presets",
    "circuits.checkpoint",
    "circuits.records",
    "circuits.analysis",
    "circuits.discovery",
    "circuits.plots",
    "circuits.sweep",
    "circuits.pretrained",
    "circuits.interop",
]

# Known gaps (none left): a name listed here that gets its docstring (or shape) fails the test
# until it is removed, so the lists only shrink.
KNOWN_WITHOUT_DOCSTRING: set[str] = set()
KNOWN_WITHOUT_SHAPES: set[str] = set()

# "[batch, pos]", "[n_layers, n_heads]", "shape ...": how docstrings here state a shape.
SHAPE = re.compile(r"\[[^\]\n]*[A-Za-z_]\w*[^\]\n]*\]|\bshape")


def modules() -> list[str]:
    names = list(PUBLIC_MODULES)
    interop = importlib.import_module("circuits.interop")
    names += [
        f"circuits.interop.{m.name}"
        for m in pkgutil.iter_modules(interop.__path__)
        if not m.name.startswith("_")
    ]
    return names


def import_quietly(name: str) -> ModuleType:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return importlib.import_module(name)


def ours(obj: Any) -> bool:
    home = obj.__name__ if inspect.ismodule(obj) else getattr(obj, "__module__", None) or ""
    return home == "circuits" or home.startswith("circuits.")


def public_names(module: ModuleType) -> dict[str, Any]:
    if hasattr(module, "__all__"):
        return {name: getattr(module, name) for name in module.__all__}
    prefix = module.__name__
    return {
        name: obj
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and (obj.__module__ == prefix or obj.__module__.startswith(prefix + "."))
    }


def documented(obj: Any) -> bool:
    doc = obj.__doc__ or ""
    # A dataclass without a docstring gets "Name(field: type, ...)" from the decorator.
    if inspect.isclass(obj) and doc.startswith(obj.__name__ + "("):
        return False
    return bool(doc.strip())


def takes_or_returns_bare_tensor(fn: Any) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    annotations = [p.annotation for p in sig.parameters.values()] + [sig.return_annotation]
    return any(a is torch.Tensor or a in ("Tensor", "torch.Tensor") for a in annotations)


def checked_names() -> dict[str, Any]:
    """``{"module.name": object}`` for every public name we define (modules, classes, functions;
    constants hold no docstring of their own at run time)."""
    out: dict[str, Any] = {}
    for module_name in modules():
        for name, obj in public_names(import_quietly(module_name)).items():
            if (inspect.ismodule(obj) or inspect.isclass(obj) or callable(obj)) and ours(obj):
                out[f"{module_name}.{name}"] = obj
    return out


@pytest.fixture(scope="module")
def names() -> dict[str, Any]:
    return checked_names()


def test_the_check_sees_the_public_api(names: dict[str, Any]) -> None:
    # Negative control: the collection is not empty and covers the main entry points.
    assert {
        "circuits.HookedTransformer",
        "circuits.model.HookedTransformer",
        "circuits.config.ModelConfig",
        "circuits.training.train",
        "circuits.analysis.find_heads",
        "circuits.discovery.acdc",
        "circuits.sweep.run_sweep",
    } <= set(names)
    assert len(names) > 100


def test_the_checks_catch_what_they_should() -> None:
    def bare(x: torch.Tensor) -> torch.Tensor:
        return x

    class Plain:
        pass

    assert not documented(bare) and not documented(Plain)
    bare.__doc__ = "Doubles ``x``."
    assert documented(bare) and takes_or_returns_bare_tensor(bare)
    assert not SHAPE.search(bare.__doc__)
    assert SHAPE.search("Logits ``[batch, pos, d_vocab]``.")
    assert not SHAPE.search("a value in [0, 1]")


def test_every_public_name_has_a_docstring(names: dict[str, Any]) -> None:
    missing = {name for name, obj in names.items() if not documented(obj)}
    assert missing - KNOWN_WITHOUT_DOCSTRING == set(), "public names without a docstring"
    fixed = (KNOWN_WITHOUT_DOCSTRING & set(names)) - missing
    assert fixed == set(), "documented now: remove from KNOWN_WITHOUT_DOCSTRING"


def test_public_functions_on_bare_tensors_state_shapes(names: dict[str, Any]) -> None:
    unshaped = {
        name
        for name, obj in names.items()
        if inspect.isfunction(obj)
        and documented(obj)
        and takes_or_returns_bare_tensor(obj)
        and not SHAPE.search(obj.__doc__)
    }
    assert unshaped - KNOWN_WITHOUT_SHAPES == set(), "docstrings that should state shapes"
    fixed = (KNOWN_WITHOUT_SHAPES & set(names)) - unshaped
    assert fixed == set(), "shapes stated now: remove from KNOWN_WITHOUT_SHAPES"
