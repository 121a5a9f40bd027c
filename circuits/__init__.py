"""circuits: mechanistic interpretability for small transformers.

Imports are lazy so that ``circuits --help`` and task generation never pay for torch or
TransformerLens until they are used.

The package is also TransformerLens 3's namespace (``import circuits as transformer_lens``):
``HookedTransformer``, ``HookedTransformerConfig``, ``ActivationCache``, ``FactoredMatrix``,
``HookPoint``, ``utils``, ``patching``, ``head_detector``... (see docs/tl3.md).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> "module" (the module itself) or "module:attribute".
_EXPORTS = {
    "ModelConfig": "circuits.config:ModelConfig",
    "HookedTransformer": "circuits.model:HookedTransformer",
    "TrainConfig": "circuits.training:TrainConfig",
    "TrainResult": "circuits.training:TrainResult",
    "EvalRecord": "circuits.records:EvalRecord",
    "train": "circuits.training:train",
    "tasks": "circuits.tasks",
    "analysis": "circuits.analysis",
    "plots": "circuits.plots",
    "presets": "circuits.presets",
    "checkpoint": "circuits.checkpoint",
    "discovery": "circuits.discovery",
    # TransformerLens 3's namespace.
    "HookedTransformerConfig": "circuits.model.tl3_config:HookedTransformerConfig",
    "HookedTransformerKeyValueCache": "circuits.model.kv_cache:HookedTransformerKeyValueCache",
    "HookedTransformerKeyValueCacheEntry": (
        "circuits.model.kv_cache:HookedTransformerKeyValueCacheEntry"
    ),
    "TransformerLensKeyValueCache": "circuits.model.kv_cache:HookedTransformerKeyValueCache",
    "TransformerLensKeyValueCacheEntry": (
        "circuits.model.kv_cache:HookedTransformerKeyValueCacheEntry"
    ),
    "utils": "circuits.utils",
    "utilities": "circuits.utils",
    "ActivationCache": "transformer_lens.ActivationCache:ActivationCache",
    "FactoredMatrix": "transformer_lens.FactoredMatrix:FactoredMatrix",
    "HookedRootModule": "transformer_lens.HookedRootModule:HookedRootModule",
    "HookPoint": "transformer_lens.hook_points:HookPoint",
    "SVDInterpreter": "transformer_lens.SVDInterpreter:SVDInterpreter",
    "hook_points": "transformer_lens.hook_points",
    "patching": "transformer_lens.patching",
    "head_detector": "transformer_lens.head_detector",
    "evals": "transformer_lens.evals",
}

if TYPE_CHECKING:
    from transformer_lens import evals, head_detector, hook_points, patching
    from transformer_lens.ActivationCache import ActivationCache
    from transformer_lens.FactoredMatrix import FactoredMatrix
    from transformer_lens.hook_points import HookPoint
    from transformer_lens.HookedRootModule import HookedRootModule
    from transformer_lens.SVDInterpreter import SVDInterpreter

    from circuits import analysis, checkpoint, discovery, plots, presets, tasks, utils
    from circuits import utils as utilities
    from circuits.config import ModelConfig
    from circuits.model import HookedTransformer
    from circuits.model.kv_cache import (
        HookedTransformerKeyValueCache,
        HookedTransformerKeyValueCacheEntry,
    )
    from circuits.model.kv_cache import (
        HookedTransformerKeyValueCache as TransformerLensKeyValueCache,
    )
    from circuits.model.kv_cache import (
        HookedTransformerKeyValueCacheEntry as TransformerLensKeyValueCacheEntry,
    )
    from circuits.model.tl3_config import HookedTransformerConfig
    from circuits.records import EvalRecord
    from circuits.training import TrainConfig, TrainResult, train


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'circuits' has no attribute {name!r}")
    module_name, _, attribute = _EXPORTS[name].partition(":")
    module = importlib.import_module(module_name)
    value = getattr(module, attribute) if attribute else module
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "ActivationCache",
    "EvalRecord",
    "FactoredMatrix",
    "HookPoint",
    "HookedRootModule",
    "HookedTransformer",
    "HookedTransformerConfig",
    "HookedTransformerKeyValueCache",
    "HookedTransformerKeyValueCacheEntry",
    "ModelConfig",
    "SVDInterpreter",
    "TrainConfig",
    "TrainResult",
    "TransformerLensKeyValueCache",
    "TransformerLensKeyValueCacheEntry",
    "analysis",
    "checkpoint",
    "discovery",
    "evals",
    "head_detector",
    "hook_points",
    "patching",
    "plots",
    "presets",
    "tasks",
    "train",
    "utilities",
    "utils",
]
