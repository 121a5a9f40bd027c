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

from circuits.analysis.final_ln import CENTRED, WITH_GAIN, final_ln_param, norm_type
from circuits.analysis.names import head_name
from circuits.analysis.protocol import HookedModel, check_model
from circuits.analysis.readout import final_normed, final_resid_name, token_losses
from circuits.analysis.resources import (
    CHUNK_BYTES,
    DEFAULT_THREADS,
    check_chunk_bytes,
    row_chunks,
    torch_threads,
)
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


def _full_logits_fit(model: HookedModel, tokens: Tensor, chunk_bytes: int) -> bool:
    """Whether the run's whole output ``[batch, pos, d_vocab_out]`` fits one chunk."""
    return tokens.numel() * model.W_U.shape[-1] * 4 <= chunk_bytes


def _run(
    model: HookedModel, probe: Batch, names: Iterable[str], logits: bool, extra: Iterable[str] = ()
) -> tuple[Tensor | None, Any, tuple]:
    """One forward pass caching what the scores ``names`` need (and the hooks ``extra``).

    With ``logits=False`` the model stops before the unembedding (``return_type=None``).
    """
    specs = applicable(names, probe)
    keep, wanted = hooks_filter(specs), set(extra)
    with torch.no_grad():
        out, cache = model.run_with_cache(
            probe.tokens,
            names_filter=lambda n: keep(n) or n in wanted,
            return_type="logits" if logits else None,
        )
    return out, cache, tuple(s.name for s in specs)


def evaluate(
    model: HookedModel,
    probe: Batch,
    scores: Iterable[str] | None = None,
    *,
    step: int = 0,
    threads: int | None = DEFAULT_THREADS,
    chunk_bytes: int = CHUNK_BYTES,
) -> EvalRecord:
    """Probe loss, accuracy and head scores of ``model`` in one forward pass.

    Args:
        probe: A task's probe batch.
        scores: Registered score names to compute; default: every score registered with
            ``track=True`` that ``probe`` supports (repeated-probe scores such as ``induction``
            only when ``probe.repeat_length`` is set). Named scores the probe cannot support
            are an error.
        step: Recorded in the result (training passes its step).
        threads: Torch threads while it runs (restored after; None: torch's setting).
        chunk_bytes: Working-set budget of the vocabulary-sized loops.

    Memory: the forward pass's activations plus the scores' caches (attention patterns,
    O(n_layers batch n_heads pos^2)); the output ``[batch, pos, d_vocab_out]`` only when it
    fits ``chunk_bytes``; otherwise loss and accuracy unembed the masked positions in chunks
    (O(chunk_bytes)).

    Returns:
        An :class:`~circuits.records.EvalRecord`; ``record["induction"]`` etc. still reads a
        score as the dicts of earlier versions did.
    """
    check_model(model)
    check_chunk_bytes(chunk_bytes)
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
    with torch_threads(threads):
        full = _full_logits_fit(model, probe.tokens, chunk_bytes)
        resid = final_resid_name(model)
        logits, cache, names = _run(model, probe, names, logits=full, extra=() if full else [resid])
        with torch.no_grad():
            if logits is not None:
                loss = float(cross_entropy(logits, probe.tokens, probe.targets, probe.mask))
                accuracy = probe_accuracy(logits, probe)
            else:
                normed = final_normed(model, probe.tokens, cache)
                per_token, correct = token_losses(
                    model, normed, probe.targets, probe.mask, chunk_bytes
                )
                n = max(int(probe.mask.sum()), 1)
                loss = float(per_token.sum() / n)
                accuracy = int(correct.sum()) / n
        values = compute_scores(
            model, probe, names, cache=cache, logits=logits, chunk_bytes=chunk_bytes
        )
    return EvalRecord(step, loss, accuracy, values)


def __getattr__(name: str) -> Any:
    # KINDS is derived from the registry on each access, so scores registered later appear.
    if name == "KINDS":
        return score_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# The default probe's repeat length at most: head scores read the patterns, whose cache grows as
# the square of the length (64 x 2 positions is what the papers' head detectors use).
MAX_PROBE_REPEAT = 64


def default_probe(model: HookedModel, batch_size: int = 32, seed: int = 0) -> Batch:
    """A random sequence of ``min(n_ctx // 2, 64)`` tokens repeated once: what head scores read.

    Tokens are drawn from ids the model both reads and predicts (``min(d_vocab,
    d_vocab_out)``), so the probe's next-token targets are valid outputs.
    """
    check_model(model)
    check_int(batch_size, "batch_size", 1)
    from circuits.tasks import repeated_tokens

    cfg = model.cfg
    n_ids = min(cfg.d_vocab, model.W_U.shape[-1])
    length = min(cfg.n_ctx // 2, MAX_PROBE_REPEAT)
    return repeated_tokens(batch_size, length, n_ids, seed=seed)


def copying_score_activations(
    model: HookedModel,
    tokens: Tensor,
    cache: Any = None,
    query_mask: Tensor | None = None,
    statistic: str = "share",
    *,
    threads: int | None = DEFAULT_THREADS,
    chunk_bytes: int = CHUNK_BYTES,
) -> Float[Tensor, "n_layers n_heads"]:
    """Olsson et al.'s copying score, measured on activations.

    For each head and query position: the head's direct-path logits (its output through the
    final LayerNorm, with the clean run's scale, and ``W_U``), minus their mean over the
    vocabulary, ReLU'd; the score is the share of that positive mass on the token at the key the
    head attends to most. A perfect copying head scores 1. Queries at position 0 are skipped
    (they can only attend to themselves), and so are queries whose attended token is not an
    output of the model (``d_vocab_out < d_vocab``: such a token cannot be copied).

    The share is strict: with a small vocabulary, a head that ranks the attended token first can
    still spread most positive mass over near-misses (trained induction heads score ~0.25).
    ``statistic="top1"`` asks the coarser question, the fraction of queries where the attended
    token gets the head's largest direct-path logit (the same heads score ~0.95).

    Memory: one head at a time, its ``[d_head, d_vocab_out]`` read-out and the counted queries'
    logits ``chunk_bytes`` at a time: O(d_head d_vocab_out + chunk_bytes) beyond the cache;
    never ``[batch, pos, n_heads, d_vocab]``. Time: O(n_layers n_heads (d_head d_model +
    queries d_head) d_vocab_out).

    Args:
        query_mask: Bool ``[batch, pos]``: average only over these query positions (e.g. a
            probe's mask, where induction heads do their work); default: every position >= 1.
        statistic: ``"share"`` (of positive logit mass) or ``"top1"`` (attended token ranked
            first).
        threads: Torch threads while it runs (restored after; None: torch's setting).
        chunk_bytes: Working-set budget of the loop over queries.
    """
    check_model(model)
    if statistic not in ("share", "top1"):
        raise ValueError(f"statistic={statistic!r} must be 'share' or 'top1'")
    check_chunk_bytes(chunk_bytes)
    with torch_threads(threads):
        return _copying_stats(model, tokens, cache, query_mask, chunk_bytes)[statistic]


COPYING_HOOKS = ("attn.hook_z", PATTERN_HOOK, "ln_final.hook_scale")


def _head_readout(model: HookedModel, W_O: Tensor, W_U: Tensor) -> Tensor:
    """``[d_head, d_vocab_out]``: a head's ``z`` to its direct-path logits, before the scale.

    ``W_O`` is the head's ``[d_head, d_model]``. The final LayerNorm's linear part with the
    per-token scale left out (applied per row): centre (LN/LNPre), gain (LN/RMS), then
    ``W_U``; no biases (they belong to no head).
    """
    if norm_type(model) in CENTRED:
        W_O = W_O - W_O.mean(-1, keepdim=True)
    w = final_ln_param(model, "w")
    if w is not None and norm_type(model) in WITH_GAIN:
        W_O = W_O * w
    return W_O @ W_U


def _copying_stats(
    model: HookedModel, tokens: Tensor, cache: Any, query_mask: Tensor | None, chunk_bytes: int
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
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    d_vocab_out = model.W_U.shape[-1]
    names = [
        f"blocks.{layer}.attn.{hook}"
        for layer in range(n_layers)
        for hook in ("hook_z", "hook_pattern")
    ]
    if norm_type(model) is not None:
        names.append("ln_final.hook_scale")
    with torch.no_grad():
        if cache is None:
            _, cache = model.run_with_cache(
                tokens, names_filter=lambda n: n in names, return_type=None
            )
        else:
            check_cache(model, tokens, cache, names)
        scale = cache["ln_final.hook_scale"] if norm_type(model) is not None else None
        share = torch.zeros(n_layers, n_heads)
        top = torch.zeros(n_layers, n_heads)
        W_O, W_U = model.W_O.detach(), model.W_U.detach()
        for layer in range(n_layers):
            z = cache[f"blocks.{layer}.attn.hook_z"]  # [b, p, h, e]
            attended = cache[f"blocks.{layer}.attn.hook_pattern"].argmax(-1)  # [b, h, q]
            for head in range(n_heads):
                attended_token = tokens.gather(1, attended[:, head])  # [b, q]
                # A token the model cannot output cannot be copied: such queries do not count.
                w = weights * (attended_token < d_vocab_out)
                rows = w.flatten().nonzero().flatten()
                if len(rows) == 0:
                    raise ValueError(
                        "no counted query attends to a token in the model's output vocabulary "
                        f"(d_vocab_out={d_vocab_out})"
                    )
                readout = _head_readout(model, W_O[layer, head], W_U)  # [e, V]
                mean_readout = readout.mean(-1)  # the vocabulary mean, without a pass over V
                zs = z[:, :, head].reshape(-1, z.shape[-1])
                if scale is not None:
                    zs = zs / scale.reshape(-1, 1)
                targets = attended_token.flatten()
                row_w = w.flatten()
                s_sum = t_sum = 0.0
                for part in row_chunks(len(rows), d_vocab_out, chunk_bytes):
                    index = rows[part]
                    z_rows = zs[index]
                    target = targets[index]
                    # In place: one [n, V] buffer. Subtracting a per-row constant and a ReLU
                    # keep the argmax (the maximum is above the mean).
                    gain = (z_rows @ readout).sub_((z_rows @ mean_readout)[:, None])
                    hit = (gain.argmax(-1) == target).float()
                    on_token = gain.gather(-1, target[:, None]).squeeze(-1).clamp_min(0)
                    ratio = on_token / gain.relu_().sum(-1).clamp_min(1e-12)
                    s_sum += float((ratio * row_w[index]).sum())
                    t_sum += float((hit * row_w[index]).sum())
                total = float(w.sum())
                share[layer, head] = s_sum / total
                top[layer, head] = t_sum / total
    return {"share": share, "top1": top}


def head_scores(
    model: HookedModel,
    probe: Batch | None = None,
    scores: Iterable[str] | None = None,
    *,
    threads: int | None = DEFAULT_THREADS,
    chunk_bytes: int = CHUNK_BYTES,
) -> dict[str, Tensor]:
    """Registered head scores as ``[n_layers, n_heads]``, from one forward pass.

    Args:
        probe: A repeated-random-tokens batch (``repeat_length`` set); defaults to
            :func:`default_probe`.
        scores: Names to compute; default: every registered score (:data:`KINDS`).
        threads: Torch threads while it runs (restored after; None: torch's setting).
        chunk_bytes: Working-set budget of the vocabulary-sized loops (copying scores).

    Memory: the forward pass without its output (``return_type=None``), the attention
    patterns O(n_layers batch n_heads pos^2), and for the copying scores one head's
    O(d_head d_vocab_out) read-out plus ``chunk_bytes``. Never ``[batch, pos, d_vocab]``
    (unless a registered score reads :attr:`ScoreContext.logits`).
    """
    check_model(model)
    check_chunk_bytes(chunk_bytes)
    probe = default_probe(model) if probe is None else _check_probe(model, probe)
    if probe.repeat_length is None:
        raise ValueError("probe.repeat_length is None: head scores need a repeated sequence")
    names = score_names() if scores is None else tuple(get_score(n).name for n in scores)
    with torch_threads(threads):
        _, cache, names = _run(model, probe, names, logits=False)
        return compute_scores(model, probe, names, cache=cache, chunk_bytes=chunk_bytes)


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
        ctx.memo["copying"] = _copying_stats(
            ctx.model, ctx.tokens, ctx.cache, ctx.probe.mask, ctx.chunk_bytes
        )
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
