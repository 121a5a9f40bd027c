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
    rows_per_chunk,
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

    Memory: one layer at a time, its heads' read-outs and the counted queries' logits a chunk of
    vocabulary columns at a time: O(n_heads queries d_head + chunk_bytes) beyond the cache;
    never ``[batch, pos, n_heads, d_vocab]`` nor a head's whole ``[d_head, d_vocab_out]``
    read-out. Time: O(n_layers n_heads (d_head d_model + queries d_head) d_vocab_out).

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


def head_inputs(model: HookedModel) -> Float[Tensor, "n_layers n_heads d_head d_model"]:
    """Every head's ``W_O`` through the final LayerNorm's linear part (scale left out).

    ``head_inputs(model)[l, h] @ W_U`` is :func:`head_readout` of head ``(l, h)``; kept
    d_model-sized so the vocabulary is only ever visited a chunk at a time.
    """
    W_O = model.W_O.detach()
    if norm_type(model) in CENTRED:
        W_O = W_O - W_O.mean(-1, keepdim=True)
    w = final_ln_param(model, "w")
    if w is not None and norm_type(model) in WITH_GAIN:
        W_O = W_O * w.detach()
    return W_O


# Vocabulary columns per chunk at most. On one thread a chunk whose [heads, queries, columns]
# gains stay in cache is fastest (they are read five times: max, target, ReLU, sum); with more
# threads every small op pays a synchronisation (costly on busy cores), so chunks grow with them.
MAX_VOCAB_CHUNK = 512
VOCAB_CHUNK_PER_THREAD = 4096


def vocab_chunk_width(n_heads: int, n_queries: int, d_head: int, chunk_bytes: int) -> int:
    """Vocabulary columns per chunk: the chunk's read-out and gains under ``chunk_bytes``."""
    threads = torch.get_num_threads()
    cap = MAX_VOCAB_CHUNK if threads == 1 else VOCAB_CHUNK_PER_THREAD * threads
    return min(cap, rows_per_chunk(n_heads * (n_queries + d_head), chunk_bytes))


def copying_stats(
    model: HookedModel, tokens: Tensor, cache: Any, query_mask: Tensor | None, chunk_bytes: int
) -> dict[str, Tensor]:
    """Both statistics of :func:`copying_score_activations` from one pass over the layers:
    ``{"share": [n_layers, n_heads], "top1": [n_layers, n_heads]}``.

    One layer at a time, its heads together: the vocabulary is visited in chunks of columns;
    each chunk's read-out ``[n_heads, d_head, columns]`` (one matrix product for the layer's
    heads) and gains ``[n_heads, queries, columns]`` fit ``chunk_bytes``; the maximum, the
    attended token's gain and the positive mass are accumulated across chunks. Only counted
    queries are read out. Memory: O(n_heads queries d_head + chunk_bytes) beyond the cache.
    """
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
        W_U = model.W_U.detach()
        inputs = head_inputs(model)  # [L, H, e, d_model]
        # The vocabulary mean of each head's read-out, without a pass over the vocabulary.
        mean_readout = inputs @ W_U.mean(-1)  # [L, H, e]
        flat_w = weights.flatten()
        rows = flat_w.nonzero().flatten()  # the counted queries, [n]
        row_w = flat_w[rows]
        batch, pos = tokens.shape
        d_head = inputs.shape[2]
        width = vocab_chunk_width(n_heads, len(rows), d_head, chunk_bytes)
        for layer in range(n_layers):
            z = cache[f"blocks.{layer}.attn.hook_z"].reshape(batch * pos, n_heads, -1)[rows]
            if scale is not None:
                z = z / scale.reshape(-1, 1, 1)[rows]
            z = z.transpose(0, 1).contiguous()  # [H, n, e]
            attended = cache[f"blocks.{layer}.attn.hook_pattern"].argmax(-1)  # [b, h, q]
            attended_token = tokens[:, None, :].expand_as(attended).gather(2, attended)
            target = attended_token.transpose(0, 1).reshape(n_heads, -1)[:, rows]  # [H, n]
            # A token the model cannot output cannot be copied: such queries do not count.
            w = row_w * (target < d_vocab_out)
            if bool((w.sum(-1) == 0).any()):
                raise ValueError(
                    "no counted query attends to a token in the model's output vocabulary "
                    f"(d_vocab_out={d_vocab_out})"
                )
            offset = (z @ mean_readout[layer][..., None]).squeeze(-1)  # [H, n]
            best = torch.full(target.shape, -torch.inf)
            best_at = torch.zeros(target.shape, dtype=torch.long)
            on_token = torch.zeros(target.shape)
            positive = torch.zeros(target.shape)
            layer_in = inputs[layer].reshape(-1, inputs.shape[-1])  # [H e, d_model]
            for start in range(0, d_vocab_out, width):
                cols = slice(start, min(start + width, d_vocab_out))
                readout = (layer_in @ W_U[:, cols]).view(n_heads, d_head, -1)
                # In place: one [H, n, columns] buffer.
                gain = torch.bmm(z, readout).sub_(offset[..., None])
                value, at = gain.max(-1)
                # Strictly greater: the first maximum wins, as argmax over the whole row.
                better = value > best
                best = torch.where(better, value, best)
                best_at = torch.where(better, at + cols.start, best_at)
                local = target - cols.start
                inside = (local >= 0) & (local < gain.shape[-1])
                picked = gain.gather(-1, local.clamp(0, gain.shape[-1] - 1)[..., None])
                on_token += torch.where(inside, picked.squeeze(-1), 0.0)
                positive += gain.relu_().sum(-1)
            ratio = on_token.clamp_min(0) / positive.clamp_min(1e-12)
            hit = (best_at == target).float()
            total = w.sum(-1)
            share[layer] = (ratio * w).sum(-1) / total
            top[layer] = (hit * w).sum(-1) / total
    return {"share": share, "top1": top}
