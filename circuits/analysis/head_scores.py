"""Per-head scores ``[n_layers, n_heads]``: what kind of head is each head?

The built-in scores are means of attention weights at positions that define the head type,
computed from ``hook_pattern`` activations; the copying scores read the heads' direct-path
logits (:func:`copying_score_activations`). Every score is registered in
:mod:`circuits.analysis.scores` (the built-ins at the bottom of this module), and everything
here is derived from that registry: :data:`KINDS`, :func:`head_scores` (every score in one
pass), :func:`find_heads` (heads above a threshold, ``"L1H0"``) and :func:`evaluate` (a typed
:class:`~circuits.records.EvalRecord`). Thresholds in the literature (ARENA): 0.4 for
previous-token and induction heads.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.analysis.final_ln import apply_final_ln
from circuits.analysis.names import head_name
from circuits.analysis.protocol import HookedModel, check_model
from circuits.analysis.scores import (
    PATTERN_HOOK,
    ScoreContext,
    applicable,
    compute_scores,
    get_score,
    hooks_filter,
    register_score,
    score_names,
    stack_patterns,
)
from circuits.losses import cross_entropy
from circuits.records import EvalRecord
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


def _run(model: HookedModel, probe: Batch, names: Iterable[str]) -> tuple[Tensor, Any, tuple]:
    specs = applicable(names, probe)
    with torch.no_grad():
        logits, cache = model.run_with_cache(probe.tokens, names_filter=hooks_filter(specs))
    return logits, cache, tuple(s.name for s in specs)


def evaluate(
    model: HookedModel,
    probe: Batch,
    scores: Iterable[str] | None = None,
    *,
    step: int = 0,
) -> EvalRecord:
    """Probe loss, accuracy and head scores of ``model`` in one forward pass.

    Args:
        probe: A task's probe batch.
        scores: Registered score names to compute; default: every score registered with
            ``track=True`` that ``probe`` supports (repeated-probe scores such as ``induction``
            only when ``probe.repeat_length`` is set). Named scores the probe cannot support
            are an error.
        step: Recorded in the result (training passes its step).

    Returns:
        An :class:`~circuits.records.EvalRecord`; ``record["induction"]`` etc. still reads a
        score as the dicts of earlier versions did.
    """
    check_model(model)
    probe = _check_probe(model, probe)
    if scores is None:
        names = score_names(tracked=True)
    else:
        if isinstance(scores, str):
            raise TypeError(f"scores must be a list of score names, got the string {scores!r}")
        names = tuple(scores)
        skipped = set(names) - {s.name for s in applicable(names, probe)}
        if skipped:
            raise ValueError(
                f"score(s) {sorted(skipped)} need a repeated-tokens probe (repeat_length set)"
            )
    logits, cache, names = _run(model, probe, names)
    with torch.no_grad():
        loss = cross_entropy(logits, probe.tokens, probe.targets, probe.mask)
    values = compute_scores(model, probe, names, cache=cache, logits=logits)
    return EvalRecord(step, float(loss), probe_accuracy(logits, probe), values)


def __getattr__(name: str) -> Any:
    # KINDS is derived from the registry on each access, so scores registered later appear.
    if name == "KINDS":
        return score_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


COPYING_HOOKS = ("attn.hook_z", PATTERN_HOOK, "ln_final.hook_scale")


def _copying_stats(
    model: HookedModel, tokens: Tensor, cache: Any, query_mask: Tensor | None
) -> dict[str, Tensor]:
    """Both statistics of :func:`copying_score_activations` from one pass over the heads."""
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


def head_scores(
    model: HookedModel, probe: Batch | None = None, scores: Iterable[str] | None = None
) -> dict[str, Tensor]:
    """Registered head scores as ``[n_layers, n_heads]``, from one forward pass.

    Args:
        probe: A repeated-random-tokens batch (``repeat_length`` set); defaults to
            :func:`default_probe`.
        scores: Names to compute; default: every registered score (:data:`KINDS`).
    """
    check_model(model)
    probe = default_probe(model) if probe is None else _check_probe(model, probe)
    if probe.repeat_length is None:
        raise ValueError("probe.repeat_length is None: head scores need a repeated sequence")
    names = score_names() if scores is None else tuple(get_score(n).name for n in scores)
    logits, cache, names = _run(model, probe, names)
    return compute_scores(model, probe, names, cache=cache, logits=logits)


def find_heads(
    model: HookedModel,
    kind: str,
    threshold: float = 0.4,
    probe: Batch | None = None,
    scores: dict[str, Tensor] | None = None,
) -> list[str]:
    """Names (``L{layer}H{head}``) of heads whose ``kind`` score is at least ``threshold``.

    Sorted by score, highest first. Only layers that count for ``kind`` are searched (induction
    from layer 1: see ``HeadScore.min_layer``); for a ``direction="lower"`` score, heads at or
    below ``threshold``, lowest first. ``scores`` (from :func:`head_scores`) avoids a rerun.
    """
    check_model(model)
    if not isinstance(kind, str):
        raise TypeError(f"kind must be a score name, got {kind!r}")
    try:
        spec = get_score(kind)
    except ValueError as e:
        raise ValueError(f"kind={kind!r}: {e}") from None
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise TypeError(f"threshold must be a number, got {threshold!r}")
    if not math.isfinite(threshold):
        raise ValueError(f"threshold={threshold} must be finite")
    scores = head_scores(model, probe, [kind]) if scores is None else scores
    s = scores.get(kind) if isinstance(scores, dict) else None
    shape = (model.cfg.n_layers, model.cfg.n_heads)
    if not isinstance(s, Tensor) or tuple(s.shape) != shape:
        raise ValueError(f"scores[{kind!r}] must be a [n_layers, n_heads] = {shape} tensor")
    sign = 1.0 if spec.direction == "higher" else -1.0
    hits = (s * sign >= threshold * sign).clone()
    hits[: spec.min_layer] = False
    found = [(float(s[la, h]) * sign, la, h) for la, h in torch.nonzero(hits).tolist()]
    return [head_name(la, h) for _, la, h in sorted(found, key=lambda t: (-t[0], t[1], t[2]))]


# --- the built-in scores ---


def _copying_from(ctx: ScoreContext, statistic: str) -> Tensor:
    # Both statistics come from one pass; the context keeps it for the other one.
    if "copying" not in ctx.memo:
        ctx.memo["copying"] = _copying_stats(ctx.model, ctx.tokens, ctx.cache, ctx.probe.mask)
    return ctx.memo["copying"][statistic]


REPEATED_SEQUENCE = "mean attention from each token of a repeated random sequence"

register_score(
    "previous_token",
    lambda c: previous_token_score(c.patterns),
    label="previous-token",
    description="mean attention from each position to the one before it",
    replace=True,
)
register_score(
    "current_token",
    lambda c: current_token_score(c.patterns),
    label="current-token",
    track=False,
    description="mean attention from each position to itself",
    replace=True,
)
register_score(
    "first_token",
    lambda c: first_token_score(c.patterns),
    label="first-token",
    track=False,
    description="mean attention to position 0 (the BOS token, when there is one)",
    replace=True,
)
register_score(
    "duplicate_token",
    lambda c: duplicate_token_score(c.patterns, c.repeat_length),
    label="duplicate-token",
    probe="repeated",
    track=False,
    description=f"{REPEATED_SEQUENCE} to its earlier copy",
    replace=True,
)
register_score(
    "induction",
    lambda c: induction_score(c.patterns, c.repeat_length),
    label="induction",
    probe="repeated",
    min_layer=1,  # induction needs composition with an earlier head
    description=f"{REPEATED_SEQUENCE} to the token after its earlier copy (layers >= 1 count)",
    replace=True,
)
# Copying is read where the probe's next token is a repeat: where induction heads copy.
register_score(
    "copying",
    lambda c: _copying_from(c, "share"),
    label="copying",
    probe="repeated",
    hooks=COPYING_HOOKS,
    track=False,
    description="share of the head's direct-path logit gain that lands on the attended token",
    replace=True,
)
register_score(
    "copying_top1",
    lambda c: _copying_from(c, "top1"),
    label="copying (top-1)",
    probe="repeated",
    hooks=COPYING_HOOKS,
    track=False,
    description="fraction of queries whose attended token the head's direct path ranks first",
    replace=True,
)
