"""What a model configuration supports, declared once and derived from ``ModelConfig``.

Each capability is a list of requirements on the config (a field's allowed values, or a
relation between fields), each with the words an error uses. The fast path, weight processing,
discovery's graph and the exports to GPT-2 / TransformerLens 4 ask here instead of testing
fields themselves::

    supports(cfg, "fast_path")           # bool
    capabilities(cfg)                    # frozenset of every capability cfg has
    require(cfg, "gpt2", "convert to GPT-2")   # ValueError naming every unmet requirement

Adding a model variant: add its field to ``ModelConfig``, then to the requirements below of
every capability that does not implement it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["CAPABILITIES", "Requirement", "capabilities", "missing", "require", "supports"]


@dataclass(frozen=True)
class Requirement:
    """One condition on a config: ``holds(cfg)``; ``needs`` says it, ``got(cfg)`` shows why not."""

    needs: str
    holds: Callable[[Any], bool]
    got: Callable[[Any], str]


def field_in(name: str, allowed: tuple[Any, ...]) -> Requirement:
    """``cfg.<name>`` is one of ``allowed``."""
    shown = " or ".join(repr(a) for a in allowed)
    return Requirement(
        f"{name} {shown}",
        lambda cfg: getattr(cfg, name, None) in allowed,
        lambda cfg: f"{name}={getattr(cfg, name, None)!r}",
    )


def switch_off(*names: str) -> Requirement:
    """Every one of TransformerLens's switches ``names`` is off."""
    return Requirement(
        f"{', '.join(names)} off",
        lambda cfg: not any(getattr(cfg, n, False) for n in names),
        lambda cfg: ", ".join(f"{n}=True" for n in names if getattr(cfg, n, False)),
    )


NO_GQA = Requirement(
    "no grouped-query attention",
    lambda cfg: getattr(cfg, "n_key_value_heads", None) is None,
    lambda cfg: f"n_key_value_heads={cfg.n_key_value_heads}",
)
CAUSAL = Requirement(
    "attention_dir 'causal'",
    lambda cfg: getattr(cfg, "attention_dir", "causal") == "causal",
    lambda cfg: f"attention_dir={getattr(cfg, 'attention_dir', 'causal')!r}",
)
MLP_ACTS = ("gelu", "gelu_new", "relu")
PLAIN_ACT = field_in("act_fn", MLP_ACTS)
HAS_MLP_AND_LN = Requirement(
    "MLPs and LayerNorm (attn_only=False, normalization_type='LN')",
    lambda cfg: not cfg.attn_only and cfg.normalization_type == "LN",
    lambda cfg: f"attn_only={cfg.attn_only}, normalization_type={cfg.normalization_type!r}",
)
HEADS_SPAN_D_MODEL = Requirement(
    "n_heads * d_head == d_model",
    lambda cfg: cfg.n_heads * cfg.d_head == cfg.d_model,
    lambda cfg: f"n_heads * d_head = {cfg.n_heads * cfg.d_head} != d_model={cfg.d_model}",
)
TIED_VOCAB = Requirement(
    "d_vocab_out == d_vocab",
    lambda cfg: cfg.d_vocab_out == cfg.d_vocab,
    lambda cfg: f"d_vocab_out={cfg.d_vocab_out} != d_vocab={cfg.d_vocab}",
)
STANDARD_SCALE = Requirement(
    "attn_scale sqrt(d_head) or 1",
    lambda cfg: math.isclose(cfg.attn_scale, math.sqrt(cfg.d_head)) or cfg.attn_scale == 1.0,
    lambda cfg: f"attn_scale={cfg.attn_scale} (sqrt(d_head)={math.sqrt(cfg.d_head):g})",
)

SCALED = Requirement(
    "scaled attention (TransformerLens 4's native model refuses attn_scale=1)",
    lambda cfg: cfg.d_head <= 1 or not math.isclose(cfg.attn_scale, 1.0),
    lambda cfg: f"attn_scale={cfg.attn_scale}: unscaled",
)

CAPABILITIES: dict[str, tuple[Requirement, ...]] = {
    # The hook-free block forward (circuits.model.fast_path).
    "fast_path": (
        CAUSAL,
        field_in("normalization_type", (None, "LN")),
        field_in("positional_embedding_type", ("standard", "shortformer")),
        PLAIN_ACT,
        NO_GQA,
        switch_off("use_split_qkv_input", "use_attn_in", "use_hook_mlp_in"),
    ),
    # Weight processing (circuits.model.processing), each step exact.
    "fold_ln": (
        field_in("normalization_type", ("LN", "RMS")),
        field_in("positional_embedding_type", ("standard", "rotary")),
    ),
    "center_writing_weights": (field_in("normalization_type", ("LN", "LNPre")),),
    "refactor_factored_attn_matrices": (
        field_in("positional_embedding_type", ("standard", "shortformer")),
        NO_GQA,
    ),
    # Discovery's edge graph (circuits.discovery.graph): every norm and activation, recomputed
    # per receiver; rotary positions are no sender in the residual stream.
    "edge_graph": (
        field_in("positional_embedding_type", ("standard", "shortformer")),
        Requirement(
            "n_key_value_heads None (no grouped-query attention)",
            lambda cfg: getattr(cfg, "n_key_value_heads", None) in (None, cfg.n_heads),
            lambda cfg: f"n_key_value_heads={cfg.n_key_value_heads}",
        ),
        Requirement(
            "parallel_attn_mlp off",
            lambda cfg: not getattr(cfg, "parallel_attn_mlp", False),
            lambda cfg: "parallel_attn_mlp=True",
        ),
        CAUSAL,
    ),
    # Exports (circuits.interop).
    "gpt2": (
        HAS_MLP_AND_LN,
        field_in("positional_embedding_type", ("standard",)),
        HEADS_SPAN_D_MODEL,
        TIED_VOCAB,
        PLAIN_ACT,
        NO_GQA,
        STANDARD_SCALE,
        CAUSAL,
    ),
    "tl4_bridge": (
        field_in("positional_embedding_type", ("standard",)),
        field_in("normalization_type", (None, "LN")),
        PLAIN_ACT,
        NO_GQA,
        SCALED,
        CAUSAL,
    ),
}


def missing(cfg: Any, capability: str) -> list[str]:
    """What ``cfg`` lacks for ``capability``: ``"needs X (got Y)"`` per unmet requirement.

    Raises:
        ValueError: unknown capability.
    """
    if capability not in CAPABILITIES:
        raise ValueError(f"unknown capability {capability!r}; known: {', '.join(CAPABILITIES)}")
    return [
        f"needs {r.needs} (got {r.got(cfg)})" for r in CAPABILITIES[capability] if not r.holds(cfg)
    ]


def supports(cfg: Any, capability: str) -> bool:
    """Whether ``cfg`` has every requirement of ``capability``."""
    return not missing(cfg, capability)


def capabilities(cfg: Any) -> frozenset[str]:
    """Every capability ``cfg`` has."""
    return frozenset(name for name in CAPABILITIES if supports(cfg, name))


def require(cfg: Any, capability: str, action: str) -> None:
    """Raises ``ValueError("cannot <action>: needs ... (got ...); ...")`` unless supported."""
    problems = missing(cfg, capability)
    if problems:
        raise ValueError(f"cannot {action}: " + "; ".join(problems))
