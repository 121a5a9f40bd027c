"""Losses on logits: the one home of the cross-entropy the model, training and analysis use."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor


def cross_entropy(
    logits: Float[Tensor, "batch pos d_vocab"],
    tokens: Int[Tensor, "batch pos"],
    targets: Int[Tensor, "batch pos"] | None = None,
    loss_mask: Tensor | None = None,
    per_token: bool = False,
) -> Tensor:
    """Cross-entropy of ``logits``: next-token by default, else against ``targets``.

    Args:
        logits: ``[batch, pos, d_vocab_out]``.
        tokens: ``[batch, pos]``; the next token is the target when ``targets`` is None (the
            last position has none, so the loss covers ``pos - 1`` positions).
        targets: ``[batch, pos]`` ids in ``[0, d_vocab_out)`` to predict at each position.
        loss_mask: Bool ``[batch, pos]``: positions that count (a mean over none is 0).
        per_token: Return the per-position loss (zero where masked) instead of the mean.

    Raises:
        ValueError: Shapes that do not match, float or out-of-range targets, or a next-token
            loss over a single position (there is nothing to predict).
    """
    n_out = logits.shape[-1]
    if targets is None:
        if tokens.shape[-1] < 2:
            raise ValueError(
                "the next-token loss needs at least 2 positions (the last has no next token); "
                f"got tokens of shape {tuple(tokens.shape)}"
            )
        logits, targets = logits[:, :-1], tokens[:, 1:]
        if loss_mask is not None:
            loss_mask = loss_mask[:, :-1]
        name = "next-token target"
    else:
        if not isinstance(targets, Tensor):
            raise ValueError(f"targets must be a tensor of ids, got {type(targets).__name__}")
        if targets.shape != tokens.shape:
            raise ValueError(
                f"targets shape {tuple(targets.shape)} != tokens {tuple(tokens.shape)}"
            )
        name = "target"
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise ValueError(f"targets must have an integer dtype, got {targets.dtype}")
    if targets.device.type != "meta" and targets.numel():
        lo, hi = int(targets.min()), int(targets.max())
        if lo < 0 or hi >= n_out:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name} id {bad} is outside the model's outputs [0, {n_out})")
    # Rows of [batch * pos, d_vocab]: log-softmax over contiguous rows is faster than over
    # the strided d_vocab axis of a [batch, d_vocab, pos] view.
    per_pos = F.cross_entropy(
        logits.reshape(-1, n_out), targets.reshape(-1).long(), reduction="none"
    ).view(targets.shape)
    if loss_mask is None:
        return per_pos if per_token else per_pos.mean()
    if loss_mask.shape != per_pos.shape:
        raise ValueError(
            f"loss_mask shape {tuple(loss_mask.shape)} does not match {tuple(per_pos.shape)}"
        )
    per_pos = per_pos * loss_mask
    return per_pos if per_token else per_pos.sum() / loss_mask.sum().clamp(min=1)


def kl_divergence(
    p_logits: Float[Tensor, "... d_vocab"], q_logits: Float[Tensor, "... d_vocab"]
) -> Float[Tensor, "..."]:
    """``KL(p || q)`` in nats over the last axis, from logits (softmax taken here).

    The lenses' distance to the model's output: ``kl_divergence(final, lens)``.
    """
    if p_logits.shape[-1] != q_logits.shape[-1]:
        raise ValueError(
            f"KL over different vocabularies: {p_logits.shape[-1]} vs {q_logits.shape[-1]}"
        )
    log_p, log_q = p_logits.log_softmax(-1), q_logits.log_softmax(-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)
