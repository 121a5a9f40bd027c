"""circuits: mechanistic interpretability for small transformers.

Imports are lazy so that ``circuits --help`` and task generation never pay for torch or
TransformerLens until they are used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "ModelConfig": "circuits.config",
    "HookedTransformer": "circuits.model",
    "TrainConfig": "circuits.training",
    "TrainResult": "circuits.training",
    "EvalRecord": "circuits.records",
    "train": "circuits.training",
    "tasks": "circuits.tasks",
    "analysis": "circuits.analysis",
    "plots": "circuits.plots",
    "presets": "circuits.presets",
    "checkpoint": "circuits.checkpoint",
    "discovery": "circuits.discovery",
}

if TYPE_CHECKING:
    from circuits import analysis, checkpoint, discovery, plots, presets, tasks
    from circuits.config import ModelConfig
    from circuits.model import HookedTransformer
    from circuits.records import EvalRecord
    from circuits.training import TrainConfig, TrainResult, train


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'circuits' has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name])
    value = module if module.__name__.endswith("." + name) else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "EvalRecord",
    "HookedTransformer",
    "ModelConfig",
    "TrainConfig",
    "TrainResult",
    "analysis",
    "checkpoint",
    "discovery",
    "plots",
    "presets",
    "tasks",
    "train",
]
