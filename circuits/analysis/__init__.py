"""Circuit analysis for any model with TransformerLens's weight properties and hook names.

Modules, one concept each: :mod:`~circuits.analysis.circuits` (QK/OV circuits, copying),
:mod:`~circuits.analysis.composition` (Q/K/V composition with a random baseline),
:mod:`~circuits.analysis.scores` (the registry of head scores: ``register_score``),
:mod:`~circuits.analysis.head_scores` (the built-in scores, ``head_scores``, ``find_heads``,
``evaluate``), :mod:`~circuits.analysis.names` (``head_name``: ``"L1H0"``),
:mod:`~circuits.analysis.final_ln` (the final LayerNorm as analysis applies it),
:mod:`~circuits.analysis.protocol` (``HookedModel``: what a model must provide),
:mod:`~circuits.analysis.ablation` (ablation, activation patching),
:mod:`~circuits.analysis.in_context` (loss by position, the in-context learning score),
:mod:`~circuits.analysis.attribution` (residual decomposition, direct logit attribution),
:mod:`~circuits.analysis.logit_lens` and :mod:`~circuits.analysis.tuned_lens`.

The names below are imported eagerly: a lazy ``__getattr__`` would be shadowed by submodules of
the same name (``logit_lens``, ``head_scores``) once those are imported.
"""

from __future__ import annotations

from circuits.analysis.ablation import (
    AblationRun,
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
    full_ov_spectrum,
    full_qk_circuit,
    full_qk_spectrum,
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
from circuits.analysis.copying import copying_score_activations
from circuits.analysis.final_ln import apply_final_ln, full_final_ln
from circuits.analysis.head_scores import (
    attention_patterns,
    current_token_score,
    duplicate_token_score,
    evaluate,
    find_heads,
    first_token_score,
    head_scores,
    induction_score,
    previous_token_score,
)
from circuits.analysis.in_context import in_context_learning_score, loss_by_position
from circuits.analysis.logit_lens import LensResult, accumulated_resid, logit_lens
from circuits.analysis.markov import statistical_induction_score  # noqa: F401 (registers it)
from circuits.analysis.names import parse_head_name
from circuits.analysis.protocol import HookedModel
from circuits.analysis.resources import torch_threads
from circuits.analysis.scores import (
    HeadScore,
    ScoreContext,
    get_score,
    register_score,
    registered_scores,
    score_names,
    unregister_score,
)
from circuits.analysis.tuned_lens import TunedLens
from circuits.analysis.weights import get_weights, head_name

__all__ = [
    "AblationRun",
    "CircuitStats",
    "CompositionScores",
    "Decomposition",
    "HeadScore",
    "HookedModel",
    "LensResult",
    "LogitAttribution",
    "ScoreContext",
    "TunedLens",
    "ablation_effects",
    "ablation_hooks",
    "accumulated_resid",
    "all_composition_scores",
    "apply_final_ln",
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
    "full_final_ln",
    "full_ov_circuit",
    "full_ov_spectrum",
    "full_qk_circuit",
    "full_qk_spectrum",
    "get_score",
    "get_weights",
    "head_name",
    "head_scores",
    "in_context_learning_score",
    "induction_score",
    "k_composition_circuit",
    "logit_lens",
    "loss_by_position",
    "masked_loss",
    "ov_circuit",
    "parse_head_name",
    "patch_heads",
    "positional_attention",
    "positional_qk_circuit",
    "previous_token_score",
    "qk_circuit",
    "random_baseline",
    "register_score",
    "registered_scores",
    "run_with_ablation",
    "score_names",
    "torch_threads",
    "unregister_score",
]
