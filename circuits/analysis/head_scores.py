"""Per-head attention scores ``[n_layers, n_heads]``: what kind of head is each head?

Scores are means of attention weights at positions that define the head type, computed from
``hook_pattern`` activations. Thresholds in the literature (ARENA): 0.4 for previous-token and
induction heads.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.model import cross_entropy
from circuits.tasks import Batch
from circuits.validation import check_tokens

Patterns = Float[Tensor, "n_layers batch n_heads query_pos key_pos"]


def attention_patterns(model: Any, tokens: Tensor) -> Patterns:
    """Runs ``model`` on ``tokens`` and stacks every layer's attention pattern.

    Works for any TransformerLens-style model with ``blocks.{l}.attn.hook_pattern``.
    """
    tokens = check_tokens(tokens, model.cfg.d_vocab, model.cfg.n_ctx)
    with torch.no_grad():
        _, cache = model.run_with_cache(
            tokens, names_filter=lambda name: name.endswith("attn.hook_pattern")
        )
    return torch.stack(
        [cache[f"blocks.{layer}.attn.hook_pattern"] for layer in range(model.cfg.n_layers)]
    )


def _check_patterns(patterns: Tensor) -> None:
    if patterns.ndim != 5 or patterns.shape[-1] != patterns.shape[-2]:
        raise ValueError(
            "patterns must be [n_layers, batch, n_heads, query_pos, key_pos], got "
            f"{tuple(patterns.shape)}"
        )


def diagonal_score(
    patterns: Patterns, offset: int, first_query: int = 0
) -> Float[Tensor, "n_layers n_heads"]:
    """Mean attention from query ``q`` to key ``q + offset`` over queries ``q >= first_query``."""
    _check_patterns(patterns)
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
    return patterns[..., 1:, 0].mean(dim=(1, 3))


def induction_score(patterns: Patterns, repeat_length: int) -> Float[Tensor, "n_layers n_heads"]:
    """Prefix-matching score on a repeated random sequence ``[BOS] r r`` with ``len(r) = S``.

    Mean attention from each position of the second copy to the position right after the
    earlier copy of its token (key ``q - S + 1``), as in Olsson et al. Any prefix before the
    first copy (e.g. BOS) is inferred from the sequence length.
    """
    _check_patterns(patterns)
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
    offset = patterns.shape[-1] - 2 * repeat_length
    if repeat_length < 1 or offset < 0:
        raise ValueError(f"repeat_length={repeat_length} does not fit the patterns")
    return diagonal_score(patterns, offset=-repeat_length, first_query=offset + repeat_length)


def probe_accuracy(logits: Float[Tensor, "batch pos d_vocab"], batch: Batch) -> float:
    """Top-1 accuracy of ``logits`` on the masked positions of ``batch``."""
    if logits.shape[:2] != batch.tokens.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} do not match tokens {tuple(batch.tokens.shape)}"
        )
    correct = (logits.argmax(-1) == batch.targets) & batch.mask
    return correct.sum().item() / max(int(batch.mask.sum()), 1)


def evaluate(model: Any, probe: Batch) -> dict[str, Any]:
    """Probe accuracy and head scores of ``model`` in one forward pass.

    Returns a dict with ``accuracy`` (float), ``loss`` (masked cross-entropy), and
    ``previous_token`` (and ``induction`` when ``probe.repeat_length`` is set) as
    ``[n_layers, n_heads]`` tensors.
    """
    tokens = check_tokens(probe.tokens, model.cfg.d_vocab, model.cfg.n_ctx)
    with torch.no_grad():
        logits, cache = model.run_with_cache(
            tokens, names_filter=lambda name: name.endswith("attn.hook_pattern")
        )
        loss = cross_entropy(logits, tokens, probe.targets, probe.mask)
    patterns = torch.stack(
        [cache[f"blocks.{layer}.attn.hook_pattern"] for layer in range(model.cfg.n_layers)]
    )
    out: dict[str, Any] = {
        "accuracy": probe_accuracy(logits, probe),
        "loss": float(loss),
        "previous_token": previous_token_score(patterns),
    }
    if probe.repeat_length is not None:
        out["induction"] = induction_score(patterns, probe.repeat_length)
    return out
