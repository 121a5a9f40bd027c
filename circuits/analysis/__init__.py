"""Circuit analysis for any model with TransformerLens's weight properties and hook names.

Modules, one concept each: :mod:`~circuits.analysis.circuits` (QK/OV circuits, copying),
:mod:`~circuits.analysis.composition` (Q/K/V composition with a random baseline),
:mod:`~circuits.analysis.head_scores` (attention-pattern head scores, ``find_heads``),
:mod:`~circuits.analysis.ablation` (ablation, activation patching),
:mod:`~circuits.analysis.attribution` (residual decomposition, direct logit attribution),
:mod:`~circuits.analysis.logit_lens` and :mod:`~circuits.analysis.tuned_lens`.

Submodules import lazily, so ``import circuits.analysis.head_scores`` (used by training) stays
cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    # circuits
    "ov_circuit": "circuits",
    "qk_circuit": "circuits",
    "full_ov_circuit": "circuits",
    "full_qk_circuit": "circuits",
    "positional_qk_circuit": "circuits",
    "positional_attention": "circuits",
    "k_composition_circuit": "circuits",
    "copying_score": "circuits",
    "diagonal_accuracy": "circuits",
    "circuit_stats": "circuits",
    "CircuitStats": "circuits",
    # composition
    "composition_scores": "composition",
    "all_composition_scores": "composition",
    "random_baseline": "composition",
    "CompositionScores": "composition",
    # head scores
    "head_scores": "head_scores",
    "find_heads": "head_scores",
    "copying_score_activations": "head_scores",
    "attention_patterns": "head_scores",
    "previous_token_score": "head_scores",
    "current_token_score": "head_scores",
    "first_token_score": "head_scores",
    "duplicate_token_score": "head_scores",
    "induction_score": "head_scores",
    "evaluate": "head_scores",
    # ablation and patching
    "ablation_effects": "ablation",
    "ablation_hooks": "ablation",
    "run_with_ablation": "ablation",
    "patch_heads": "ablation",
    "masked_loss": "ablation",
    # attribution
    "decompose_resid": "attribution",
    "direct_logit_attribution": "attribution",
    "Decomposition": "attribution",
    "LogitAttribution": "attribution",
    # lenses
    "logit_lens": "logit_lens",
    "accumulated_resid": "logit_lens",
    "LensResult": "logit_lens",
    "TunedLens": "tuned_lens",
    # weights
    "get_weights": "weights",
    "head_name": "weights",
}

if TYPE_CHECKING:
    from circuits.analysis.ablation import (
        ablation_effects,
        ablation_hooks,
        masked_loss,
        patch_heads,
        run_with_ablation,
    )
    from circuits.analysis.attribution import (
        Decomposition,
        LogitAttribution,
        decompose_resid,
        direct_logit_attribution,
    )
    from circuits.analysis.circuits import (
        CircuitStats,
        circuit_stats,
        copying_score,
        diagonal_accuracy,
        full_ov_circuit,
        full_qk_circuit,
        k_composition_circuit,
        ov_circuit,
        positional_attention,
        positional_qk_circuit,
        qk_circuit,
    )
    from circuits.analysis.composition import (
        CompositionScores,
        all_composition_scores,
        composition_scores,
        random_baseline,
    )
    from circuits.analysis.head_scores import (
        attention_patterns,
        copying_score_activations,
        current_token_score,
        duplicate_token_score,
        evaluate,
        find_heads,
        first_token_score,
        head_scores,
        induction_score,
        previous_token_score,
    )
    from circuits.analysis.logit_lens import LensResult, accumulated_resid, logit_lens
    from circuits.analysis.tuned_lens import TunedLens
    from circuits.analysis.weights import get_weights, head_name


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'circuits.analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"circuits.analysis.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "CircuitStats",
    "CompositionScores",
    "Decomposition",
    "LensResult",
    "LogitAttribution",
    "TunedLens",
    "ablation_effects",
    "ablation_hooks",
    "accumulated_resid",
    "all_composition_scores",
    "attention_patterns",
    "circuit_stats",
    "composition_scores",
    "copying_score",
    "copying_score_activations",
    "current_token_score",
    "decompose_resid",
    "diagonal_accuracy",
    "direct_logit_attribution",
    "duplicate_token_score",
    "evaluate",
    "find_heads",
    "first_token_score",
    "full_ov_circuit",
    "full_qk_circuit",
    "get_weights",
    "head_name",
    "head_scores",
    "induction_score",
    "k_composition_circuit",
    "logit_lens",
    "masked_loss",
    "ov_circuit",
    "patch_heads",
    "positional_attention",
    "positional_qk_circuit",
    "previous_token_score",
    "qk_circuit",
    "random_baseline",
    "run_with_ablation",
]
