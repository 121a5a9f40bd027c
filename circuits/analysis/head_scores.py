"""Per-head attention scores ``[n_layers, n_heads]``: what kind of head is each head?

Scores are means of attention weights at positions that define the head type, computed from
``hook_pattern`` activations; the copying score reads the heads' direct-path logits
(:func:`copying_score_activations`). :func:`head_scores` computes every kind in one pass and
:func:`find_heads` names the heads above a threshold (``"L1H0"``). Thresholds in the literature
(ARENA): 0.4 for previous-token and induction heads.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.analysis.names import head_name
from circuits.analysis.protocol import HookedModel, check_model
from circuits.model import cross_entropy
from circuits.tasks import Batch
from circuits.validation import check_batch, check_cache, check_int, check_mask, check_tokens

Patterns = Float[Tensor, "n_layers batch n_heads query_pos key_pos"]


def attention_patterns(model: HookedModel, tokens: Tensor) -> Patterns:
    """Runs ``model`` on ``tokens`` and stacks every layer's attention pattern.

    Works for any TransformerLens-style model with ``blocks.{l}.attn.hook_pattern``.
    """
    check_model(model)
    tokens = check_tokens(tokens, model.cfg.d_vocab, model.cfg.n_ctx)
    with torch.no_grad():
        _, cache = model.run_with_cache(
            tokens, names_filter=lambda name: name.endswith("attn.hook_pattern")
        )
    return torch.stack(
        [cache[f"blocks.{layer}.attn.hook_pattern"] for layer in range(model.cfg.n_layers)]
    )


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
    if not bool(torch.isfinite(patterns).all()):
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


def _check_probe(model: HookedModel, probe: object) -> Batch:
    cfg = model.cfg
    out: Batch = check_batch(probe, cfg.d_vocab, model.W_U.shape[-1], cfg.n_ctx)
    return out


def probe_accuracy(logits: Float[Tensor, "batch pos d_vocab"], batch: Batch) -> float:
    """Top-1 accuracy of ``logits`` on the masked positions of ``batch``."""
    if logits.shape[:2] != batch.tokens.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} do not match tokens {tuple(batch.tokens.shape)}"
        )
    correct = (logits.argmax(-1) == batch.targets) & batch.mask
    return correct.sum().item() / max(int(batch.mask.sum()), 1)


def evaluate(model: HookedModel, probe: Batch) -> dict[str, Any]:
    """Probe accuracy and head scores of ``model`` in one forward pass.

    Returns a dict with ``accuracy`` (float), ``loss`` (masked cross-entropy), and
    ``previous_token`` (and ``induction`` when ``probe.repeat_length`` is set) as
    ``[n_layers, n_heads]`` tensors.
    """
    check_model(model)
    probe = _check_probe(model, probe)
    tokens = probe.tokens
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


# --- all scores at once, copying on activations, and finding heads by kind ---

KINDS = (
    "previous_token",
    "current_token",
    "first_token",
    "duplicate_token",
    "induction",
    "copying",
    "copying_top1",
)


def default_probe(model: HookedModel, batch_size: int = 32, seed: int = 0) -> Batch:
    """A random sequence of ``n_ctx // 2`` tokens repeated once: what the head scores read."""
    check_model(model)
    from circuits.tasks import repeated_tokens

    return repeated_tokens(batch_size, model.cfg.n_ctx // 2, model.cfg.d_vocab, seed=seed)


def copying_score_activations(
    model: HookedModel,
    tokens: Tensor,
    cache: Any = None,
    query_mask: Tensor | None = None,
    statistic: str = "share",
) -> Float[Tensor, "n_layers n_heads"]:
    """Olsson et al.'s copying score, measured on activations.

    For each head and query position: the head's direct-path logits (its output through the
    final LayerNorm, with the clean run's scale, and ``W_U``), minus their mean over the
    vocabulary, ReLU'd; the score is the share of that positive mass on the token at the key the
    head attends to most. A perfect copying head scores 1. Queries at position 0 are skipped
    (they can only attend to themselves).

    The share is strict: with a small vocabulary, a head that ranks the attended token first can
    still spread most positive mass over near-misses (trained induction heads score ~0.25).
    ``statistic="top1"`` asks the coarser question, the fraction of queries where the attended
    token gets the head's largest direct-path logit (the same heads score ~0.95).

    Args:
        query_mask: Bool ``[batch, pos]``: average only over these query positions (e.g. a
            probe's mask, where induction heads do their work); default: every position >= 1.
        statistic: ``"share"`` (of positive logit mass) or ``"top1"`` (attended token ranked
            first).
    """
    check_model(model)
    if statistic not in ("share", "top1"):
        raise ValueError(f"statistic={statistic!r} must be 'share' or 'top1'")
    return _copying_stats(model, tokens, cache, query_mask)[statistic]


def _copying_stats(
    model: HookedModel, tokens: Tensor, cache: Any, query_mask: Tensor | None
) -> dict[str, Tensor]:
    """Both statistics of :func:`copying_score_activations` from one pass over the heads."""
    from circuits.analysis.attribution import apply_final_ln

    tokens = check_tokens(tokens, model.cfg.d_vocab, model.cfg.n_ctx)
    if tokens.shape[1] < 2:
        raise ValueError("tokens must have at least 2 positions")
    weights = torch.ones(tokens.shape, dtype=torch.float32)
    if query_mask is not None:
        # A fresh tensor: zeroing position 0 below never touches the caller's mask.
        weights = check_mask(query_mask, tokens.shape, "query_mask").float()
    weights[:, 0] = 0.0
    if weights.sum() == 0:
        raise ValueError("query_mask selects no query position after position 0")
    with torch.no_grad():
        if cache is None:
            _, cache = model.run_with_cache(tokens)
        else:
            names = [
                f"blocks.{layer}.attn.{hook}"
                for layer in range(model.cfg.n_layers)
                for hook in ("hook_z", "hook_pattern")
            ]
            if getattr(model.cfg, "normalization_type", None) is not None:
                names.append("ln_final.hook_scale")
            check_cache(model, tokens, cache, names)
        W_O, W_U = model.W_O.detach(), model.W_U.detach()
        shares, tops = [], []
        for layer in range(model.cfg.n_layers):
            z = cache[f"blocks.{layer}.attn.hook_z"]
            result = torch.einsum("bphe,hed->hbpd", z, W_O[layer])
            logits = apply_final_ln(model, result, cache) @ W_U  # [h, b, p, V]
            gain = (logits - logits.mean(-1, keepdim=True)).relu()
            attended = cache[f"blocks.{layer}.attn.hook_pattern"].argmax(-1)  # [b, h, q]
            attended_token = tokens.gather(1, attended.flatten(1)).view(attended.shape)
            attended_token = attended_token.transpose(0, 1)  # [h, b, q]
            on_token = gain.gather(-1, attended_token.unsqueeze(-1)).squeeze(-1)
            share = on_token / gain.sum(-1).clamp_min(1e-12)  # [h, b, q]
            top = (logits.argmax(-1) == attended_token).float()
            shares.append((share * weights).sum(dim=(1, 2)) / weights.sum())
            tops.append((top * weights).sum(dim=(1, 2)) / weights.sum())
    return {"share": torch.stack(shares), "top1": torch.stack(tops)}


def head_scores(model: HookedModel, probe: Batch | None = None) -> dict[str, Tensor]:
    """Every score in :data:`KINDS` as ``[n_layers, n_heads]``, from one forward pass.

    Args:
        probe: A repeated-random-tokens batch (``repeat_length`` set); defaults to
            :func:`default_probe`. Duplicate-token and induction scores need ``repeat_length``.
    """
    check_model(model)
    probe = default_probe(model) if probe is None else _check_probe(model, probe)
    if probe.repeat_length is None:
        raise ValueError("probe.repeat_length is None: head scores need a repeated sequence")
    tokens = probe.tokens
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    patterns = torch.stack(
        [cache[f"blocks.{layer}.attn.hook_pattern"] for layer in range(model.cfg.n_layers)]
    )
    copying = _copying_stats(model, tokens, cache, probe.mask)
    return {
        "previous_token": previous_token_score(patterns),
        "current_token": current_token_score(patterns),
        "first_token": first_token_score(patterns),
        "duplicate_token": duplicate_token_score(patterns, probe.repeat_length),
        "induction": induction_score(patterns, probe.repeat_length),
        # Where the probe's next token is a repeat: where induction heads copy.
        "copying": copying["share"],
        "copying_top1": copying["top1"],
    }


def find_heads(
    model: HookedModel,
    kind: str,
    threshold: float = 0.4,
    probe: Batch | None = None,
    scores: dict[str, Tensor] | None = None,
) -> list[str]:
    """Names (``L{layer}H{head}``) of heads whose ``kind`` score is at least ``threshold``.

    Sorted by score, highest first. ``scores`` (from :func:`head_scores`) avoids a rerun.
    """
    check_model(model)
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} must be one of {KINDS}")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise TypeError(f"threshold must be a number, got {threshold!r}")
    if not math.isfinite(threshold):
        raise ValueError(f"threshold={threshold} must be finite")
    scores = head_scores(model, probe) if scores is None else scores
    s = scores.get(kind) if isinstance(scores, dict) else None
    shape = (model.cfg.n_layers, model.cfg.n_heads)
    if not isinstance(s, Tensor) or tuple(s.shape) != shape:
        raise ValueError(f"scores[{kind!r}] must be a [n_layers, n_heads] = {shape} tensor")
    found = [(float(s[la, h]), la, h) for la, h in torch.nonzero(s >= threshold).tolist()]
    return [head_name(la, h) for _, la, h in sorted(found, key=lambda t: (-t[0], t[1], t[2]))]
