"""In-context learning, measured as Olsson et al. (2022) do: loss falling with position.

The **in-context learning score** is the mean loss at a late token minus the mean loss at an early
one (the paper: token 500 minus token 50 of 512-token contexts); more negative means the model
uses more of its context. Without repeats there is little to gain from context, so read it on
data with repeats (an induction task's batches, or the repeated-random-tokens probe): there,
induction heads are what make late tokens cheap, and a 1-layer attention-only model cannot.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.analysis.protocol import HookedModel, check_model
from circuits.analysis.readout import final_normed, token_losses
from circuits.analysis.resources import (
    CHUNK_BYTES,
    DEFAULT_THREADS,
    check_chunk_bytes,
    torch_threads,
)
from circuits.validation import check_mask, check_tokens


def loss_by_position(
    model: HookedModel,
    tokens: Tensor,
    targets: Tensor | None = None,
    mask: Tensor | None = None,
    *,
    threads: int | None = DEFAULT_THREADS,
    chunk_bytes: int = CHUNK_BYTES,
) -> Float[Tensor, " pos"]:
    """Mean cross-entropy over the batch at each position.

    Memory: a forward pass without its output; the counted positions are unembedded
    ``chunk_bytes`` at a time (never ``[batch, pos, d_vocab]``).

    Args:
        model: Any model mapping ``[batch, pos]`` token ids to ``[batch, pos, d_vocab]`` logits.
        tokens: ``[batch, pos]`` token ids.
        targets: ``[batch, pos]`` ids to predict at each position; default: the next token, so
            the result has ``pos - 1`` entries (position ``t`` predicts token ``t + 1``).
        mask: Bool, same shape as ``targets`` (or ``tokens``): positions that count. A position
            no sequence counts at is NaN.

    Returns:
        ``[pos]`` (or ``[pos - 1]`` for next-token targets) mean losses, in nats.
    """
    check_model(model)
    tokens = check_tokens(tokens, model.cfg.d_vocab, model.cfg.n_ctx)
    if targets is None and tokens.shape[1] < 2:
        raise ValueError("tokens must have at least 2 positions to predict a next token")
    if targets is not None:
        targets = check_tokens(targets, model.cfg.d_vocab_out, model.cfg.n_ctx, name="targets")
        if targets.shape != tokens.shape:
            raise ValueError(
                f"targets shape {tuple(targets.shape)} != tokens {tuple(tokens.shape)}"
            )
    if mask is not None:
        mask = check_mask(mask, tokens.shape)
    chunk_bytes = check_chunk_bytes(chunk_bytes)
    with torch_threads(threads):
        normed = final_normed(model, tokens)
        if targets is None:  # position t predicts token t + 1; the last predicts nothing
            normed, goal = normed[:, :-1], tokens[:, 1:]
            counted_mask = None if mask is None else mask[:, :-1]
        else:
            goal, counted_mask = targets, mask
        per_token, _ = token_losses(model, normed, goal, counted_mask, chunk_bytes)
    if mask is None:
        return per_token.mean(0)
    counted = mask[:, :-1] if targets is None else mask
    n = counted.sum(0)
    return torch.where(n > 0, per_token.sum(0) / n.clamp(min=1), torch.nan)


def in_context_learning_score(
    model: HookedModel,
    tokens: Tensor,
    early: int | None = None,
    late: int | None = None,
    targets: Tensor | None = None,
    mask: Tensor | None = None,
) -> float:
    """Loss at position ``late`` minus loss at position ``early`` (Olsson et al. 2022).

    Args:
        model: As for :func:`loss_by_position`.
        tokens: ``[batch, pos]`` token ids; the more sequences, the steadier the score.
        early: Position of the early token; default about ``pos // 10`` (the paper's 50 of
            512), or the first position after it that ``mask`` counts.
        late: Position of the late token; default the last one that has a target and that
            ``mask`` counts.
        targets: As for :func:`loss_by_position`.
        mask: As for :func:`loss_by_position`.

    Returns:
        The score in nats: negative when late tokens are predicted better than early ones.
    """
    check_model(model)
    losses = loss_by_position(model, tokens, targets, mask)
    n = losses.shape[0]
    counted = (~losses.isnan()).nonzero().flatten().tolist()
    if late is None:
        late = counted[-1] if counted else n - 1
    if early is None:
        # The paper's 50 of 512, moved on to a position the mask counts.
        early = next((i for i in counted if i >= max(1, (n + 1) // 10)), 0)
    for name, value in (("early", early), ("late", late)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
            raise ValueError(f"{name}={value!r} must be a position in [0, {n})")
    if early >= late:
        raise ValueError(f"early={early} must come before late={late}")
    score = float(losses[late] - losses[early])
    if math.isnan(score):  # the mask counts no sequence at one of the two positions
        raise ValueError(f"mask leaves no sequence at position early={early} or late={late}")
    return score
