"""Olsson et al.'s copying score on activations: does a head's direct path raise the logit of the
token it attends to? :func:`copying_score_activations` ``[n_layers, n_heads]``; registered as the
``copying`` and ``copying_top1`` head scores in :mod:`circuits.analysis.head_scores`."""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.analysis.final_ln import CENTRED, WITH_GAIN, final_ln_param, norm_type
from circuits.analysis.protocol import HookedModel, check_model
from circuits.analysis.resources import (
    CHUNK_BYTES,
    DEFAULT_THREADS,
    check_chunk_bytes,
    row_chunks,
    torch_threads,
)
from circuits.analysis.scores import PATTERN_HOOK
from circuits.validation import check_cache, check_mask, check_tokens

__all__ = ["COPYING_HOOKS", "copying_score_activations", "copying_stats"]


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
        return copying_stats(model, tokens, cache, query_mask, chunk_bytes)[statistic]


COPYING_HOOKS = ("attn.hook_z", PATTERN_HOOK, "ln_final.hook_scale")


def head_readout(model: HookedModel, W_O: Tensor, W_U: Tensor) -> Tensor:
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


def copying_stats(
    model: HookedModel, tokens: Tensor, cache: Any, query_mask: Tensor | None, chunk_bytes: int
) -> dict[str, Tensor]:
    """Both statistics of :func:`copying_score_activations` from one pass over the heads:
    ``{"share": [n_layers, n_heads], "top1": [n_layers, n_heads]}``."""
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
                readout = head_readout(model, W_O[layer, head], W_U)  # [e, V]
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
