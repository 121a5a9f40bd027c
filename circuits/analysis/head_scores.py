"""Per-head scores ``[n_layers, n_heads]``: what kind of head is each head?

The built-in scores are means of attention weights at positions that define the head type,
computed from ``hook_pattern`` activations; the copying scores read the heads' direct-path
logits (:func:`~circuits.analysis.copying.copying_score_activations`). Every score is registered in
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

# The attention-pattern scores and the copying score live in their own modules; their names stay
# importable from here (the module they were first defined in).
from circuits.analysis.attention_scores import Patterns as Patterns
from circuits.analysis.attention_scores import attention_patterns as attention_patterns
from circuits.analysis.attention_scores import current_token_score as current_token_score
from circuits.analysis.attention_scores import diagonal_score as diagonal_score
from circuits.analysis.attention_scores import duplicate_token_score as duplicate_token_score
from circuits.analysis.attention_scores import first_token_score as first_token_score
from circuits.analysis.attention_scores import induction_score as induction_score
from circuits.analysis.attention_scores import previous_token_score as previous_token_score
from circuits.analysis.copying import COPYING_HOOKS, copying_stats
from circuits.analysis.copying import copying_score_activations as copying_score_activations
from circuits.analysis.names import head_name
from circuits.analysis.protocol import HookedModel, check_model
from circuits.analysis.readout import final_normed, final_resid_name, token_losses
from circuits.analysis.resources import (
    CHUNK_BYTES,
    DEFAULT_THREADS,
    check_chunk_bytes,
    torch_threads,
)
from circuits.analysis.scores import (
    ScoreContext,
    applicable,
    compute_scores,
    get_score,
    hooks_filter,
    register_score,
    score_names,
)
from circuits.losses import cross_entropy
from circuits.records import EvalRecord
from circuits.tasks import Batch
from circuits.validation import check_batch, check_int


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
        ctx.memo["copying"] = copying_stats(
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
    layerwise=True,
)
register_score(
    "current_token",
    lambda c: current_token_score(c.patterns),
    label="current-token",
    track=False,
    description="mean attention from each position to itself",
    replace=True,
    layerwise=True,
)
register_score(
    "first_token",
    lambda c: first_token_score(c.patterns),
    label="first-token",
    track=False,
    description="mean attention to position 0 (the BOS token, when there is one)",
    replace=True,
    layerwise=True,
)
register_score(
    "duplicate_token",
    lambda c: duplicate_token_score(c.patterns, c.repeat_length),
    label="duplicate-token",
    probe="repeated",
    track=False,
    description=f"{REPEATED_SEQUENCE} to its earlier copy",
    replace=True,
    layerwise=True,
)
register_score(
    "induction",
    lambda c: induction_score(c.patterns, c.repeat_length),
    label="induction",
    probe="repeated",
    min_layer=1,  # induction needs composition with an earlier head
    description=f"{REPEATED_SEQUENCE} to the token after its earlier copy (layers >= 1 count)",
    replace=True,
    layerwise=True,
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
