"""Head scores read from attention patterns ``[n_layers, batch, n_heads, query_pos, key_pos]``:
mean attention along a diagonal (previous-, current-, first-token, induction and duplicate-token
heads), and :func:`attention_patterns`, which stacks a model's patterns. Registered as head
scores in :mod:`circuits.analysis.head_scores`."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.analysis.protocol import HookedModel, check_model
from circuits.analysis.scores import PATTERN_HOOK, stack_patterns
from circuits.validation import all_finite, check_int, check_tokens

__all__ = [
    "Patterns",
    "attention_patterns",
    "current_token_score",
    "diagonal_score",
    "duplicate_token_score",
    "first_token_score",
    "induction_score",
    "previous_token_score",
]

Patterns = Float[Tensor, "n_layers batch n_heads query_pos key_pos"]


def attention_patterns(model: HookedModel, tokens: Tensor) -> Patterns:
    """Runs ``model`` on ``tokens`` ``[batch, pos]`` and stacks every layer's attention pattern
    into ``[n_layers, batch, n_heads, query_pos, key_pos]``.

    Works for any TransformerLens-style model with ``blocks.{l}.attn.hook_pattern``. Memory: the
    stacked patterns, ``n_layers * batch * n_heads * pos^2`` floats (plus the cache while stacking).
    """
    check_model(model)
    tokens = check_tokens(tokens, model.cfg.d_vocab, model.cfg.n_ctx)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith(PATTERN_HOOK))
    return stack_patterns(model, cache)


def _check_patterns(patterns: Tensor) -> None:
    if not isinstance(patterns, Tensor):
        raise TypeError(f"patterns must be a torch.Tensor, got {type(patterns).__name__}")
    if not patterns.is_floating_point():
        raise TypeError(f"patterns must be floating point, got {patterns.dtype}")
    if patterns.ndim != 5 or patterns.shape[-1] != patterns.shape[-2] or 0 in patterns.shape:
        raise ValueError(
            "patterns must be a non-empty [n_layers, batch, n_heads, query_pos, key_pos], got "
            f"{tuple(patterns.shape)}"
        )
    if not all_finite(patterns):
        raise ValueError("patterns contain NaN or inf")


def diagonal_score(
    patterns: Patterns, offset: int, first_query: int = 0
) -> Float[Tensor, "n_layers n_heads"]:
    """Mean attention from query ``q`` to key ``q + offset`` over queries ``q >= first_query``."""
    _check_patterns(patterns)
    check_int(offset, "offset")
    check_int(first_query, "first_query")
    n = patterns.shape[-1]
    queries = torch.arange(max(first_query, -offset, 0), min(n, n - offset))
    if len(queries) == 0:
        raise ValueError(f"no query position has a key at offset {offset} in length {n}")
    weights = patterns[..., queries, queries + offset]  # [layers, batch, heads, n_queries]
    return weights.mean(dim=(1, 3))


def previous_token_score(patterns: Patterns) -> Float[Tensor, "n_layers n_heads"]:
    """Mean attention from each position ``i >= 1`` to ``i - 1``."""
    return diagonal_score(patterns, offset=-1)


def current_token_score(patterns: Patterns) -> Float[Tensor, "n_layers n_heads"]:
    """Mean attention from each position to itself."""
    return diagonal_score(patterns, offset=0)


def first_token_score(patterns: Patterns) -> Float[Tensor, "n_layers n_heads"]:
    """Mean attention to position 0 (the BOS token, when there is one), from positions ``>= 1``."""
    _check_patterns(patterns)
    if patterns.shape[-1] < 2:
        raise ValueError("first_token_score needs at least 2 positions")
    return patterns[..., 1:, 0].mean(dim=(1, 3))


def induction_score(patterns: Patterns, repeat_length: int) -> Float[Tensor, "n_layers n_heads"]:
    """Prefix-matching score on a repeated random sequence ``[BOS] r r`` with ``len(r) = S``.

    Mean attention from each position of the second copy to the position right after the
    earlier copy of its token (key ``q - S + 1``), as in Olsson et al. Any prefix before the
    first copy (e.g. BOS) is inferred from the sequence length.
    """
    _check_patterns(patterns)
    check_int(repeat_length, "repeat_length")
    n = patterns.shape[-1]
    offset = n - 2 * repeat_length
    if repeat_length < 2 or offset < 0:
        raise ValueError(f"repeat_length={repeat_length} does not fit patterns over {n} positions")
    return diagonal_score(patterns, offset=1 - repeat_length, first_query=offset + repeat_length)


def duplicate_token_score(
    patterns: Patterns, repeat_length: int
) -> Float[Tensor, "n_layers n_heads"]:
    """Mean attention from each second-copy position to the earlier copy of the same token."""
    _check_patterns(patterns)
    check_int(repeat_length, "repeat_length")
    offset = patterns.shape[-1] - 2 * repeat_length
    if repeat_length < 1 or offset < 0:
        raise ValueError(f"repeat_length={repeat_length} does not fit the patterns")
    return diagonal_score(patterns, offset=-repeat_length, first_query=offset + repeat_length)
