"""Olsson et al.'s copying score on activations: does a head's direct path raise the logit of the
token it attends to? :func:`copying_score_activations` ``[n_layers, n_heads]``; registered as the
``copying`` and ``copying_top1`` head scores in :mod:`circuits.analysis.head_scores`."""

from __future__ import annotations

import math
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

    Memory: a chunk of vocabulary columns at a time, every head's read-out of it and one
    layer's counted queries' logits: O(n_layers n_heads queries d_head + chunk_bytes) beyond
    the cache; never ``[batch, pos, n_heads, d_vocab]`` nor a head's whole ``[d_head,
    d_vocab_out]`` read-out. Time: O(n_layers n_heads (d_head d_model + queries d_head)
    d_vocab_out), in two matrix products per chunk and layer.

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


# Vocabulary columns per chunk at most on one thread: a layer's gains then stay in cache across
# their four reads. With more threads every op pays a synchronisation (costly on busy cores),
# so there chunks grow to ``chunk_bytes``.
ONE_THREAD_VOCAB_CHUNK = 512


def vocab_chunk_width(readout_width: int, gain_width: int, chunk_bytes: int) -> int:
    """Vocabulary columns per chunk: the chunk's read-out (``readout_width`` floats a column)
    and one layer's gains (``gain_width``) under ``chunk_bytes``."""
    width = rows_per_chunk(readout_width + gain_width, chunk_bytes)
    return min(width, ONE_THREAD_VOCAB_CHUNK) if torch.get_num_threads() == 1 else width


class _Buffers:
    """The loop's two reused work buffers (a fresh tensor per chunk costs page faults on every
    allocation, as much as the products themselves): views of flat ones."""

    def __init__(self, readout_width: int, gain_width: int, columns: int, like: Tensor):
        self.readout = like.new_empty(readout_width * columns)
        self.gain = like.new_empty(gain_width * columns)

    @staticmethod
    def view(flat: Tensor, *shape: int) -> Tensor:
        return flat[: math.prod(shape)].view(*shape)


def _leads_its_chunk(gain: Float[Tensor, "H n c"], local: Tensor, candidate: Tensor) -> Tensor:
    """``[H, n]`` bool: for each ``candidate`` query (its attended column ``local`` holds the
    chunk's maximum), whether no column left of it in the chunk reaches that maximum."""
    lead = torch.zeros(candidate.shape, dtype=torch.bool, device=candidate.device)
    heads, queries = candidate.nonzero(as_tuple=True)
    if len(heads) == 0:
        return lead
    cols = torch.arange(gain.shape[-1], device=gain.device)
    # At most n rows of the chunk gathered at once: the working set stays bounded.
    step = max(1, gain.shape[1])
    for s in range(0, len(heads), step):
        h, q = heads[s : s + step], queries[s : s + step]
        at = local[h, q]
        part = gain[h, q]  # [k, c], a copy
        value = part.gather(-1, at[:, None])
        part.masked_fill_(cols >= at[:, None], -torch.inf)
        lead[h, q] = (part < value).all(-1)
    return lead


def _gain_stats(
    z: Float[Tensor, "L H n e"],
    offset: Float[Tensor, "L H n"],
    inputs_t: Float[Tensor, "d_model LHe"],
    W_U: Float[Tensor, "d_model d_vocab_out"],
    target: Tensor,
    chunk_bytes: int,
) -> tuple[Tensor, Tensor]:
    """Every head's per-query share of positive mass on the attended token and whether that
    token is the first maximum: ``([L, H, n], [L, H, n] bool)``.

    The vocabulary a chunk of columns at a time: one read-out product for every head of every
    layer ``[columns, L H e]`` (one large GEMM, MKL's faster orientation), then per layer one
    batched product for its heads' gains ``[H, n, columns]``, reduced at once (a layer's chunk
    stays in cache). No argmax (a slow reduction): the token is the first maximum iff its gain
    equals the row's maximum, the first chunk reaching that maximum is its own, and no column
    left of it in that chunk reaches it (checked only where the token tops its chunk): what
    ``argmax == token`` means with ties going to the first column.
    """
    n_layers, n_heads, n, d_head = z.shape
    d_vocab_out = W_U.shape[-1]
    readout_width, gain_width = inputs_t.shape[1], n_heads * n
    width = min(d_vocab_out, vocab_chunk_width(readout_width, gain_width, chunk_bytes))
    buffers = _Buffers(readout_width, gain_width, width, W_U)
    dev = target.device  # the model's: nothing here may assume the CPU
    best = torch.full(target.shape, -torch.inf, device=dev)
    first = torch.zeros(target.shape, dtype=torch.long, device=dev)  # first chunk reaching ``best``
    # Whether the token tops its chunk, first:
    lead = torch.zeros(target.shape, dtype=torch.bool, device=dev)
    on_token = torch.zeros(target.shape, device=dev)
    positive = torch.zeros(target.shape, device=dev)
    for k, start in enumerate(range(0, d_vocab_out, width)):
        c = min(width, d_vocab_out - start)
        readout = buffers.view(buffers.readout, c, readout_width)
        torch.mm(W_U[:, start : start + c].t(), inputs_t, out=readout)
        per_head = readout.view(c, n_layers, n_heads, d_head)
        local = target - start
        inside = (local >= 0) & (local < c)
        for layer in range(n_layers):
            gain = buffers.view(buffers.gain, n_heads, n, c)
            torch.bmm(z[layer], per_head[:, layer].permute(1, 2, 0), out=gain)
            gain.sub_(offset[layer][..., None])  # minus the vocabulary mean, in place
            top = gain.amax(-1)
            first[layer] = torch.where(top > best[layer], k, first[layer])
            torch.maximum(best[layer], top, out=best[layer])
            at = local[layer].clamp(0, c - 1)
            picked = gain.gather(-1, at[..., None]).squeeze(-1)
            on_token[layer] = torch.where(inside[layer], picked, on_token[layer])
            candidate = inside[layer] & (picked >= top)
            lead[layer] |= _leads_its_chunk(gain, local[layer], candidate)
            positive[layer] += gain.relu_().sum(-1)
    ratio = on_token.clamp_min(0) / positive.clamp_min(1e-12)
    hit = lead & (on_token >= best) & (first == torch.div(target, width, rounding_mode="floor"))
    return ratio, hit


def copying_stats(
    model: HookedModel, tokens: Tensor, cache: Any, query_mask: Tensor | None, chunk_bytes: int
) -> dict[str, Tensor]:
    """Both statistics of :func:`copying_score_activations` from one pass over the vocabulary:
    ``{"share": [n_layers, n_heads], "top1": [n_layers, n_heads]}``.

    The counted queries' ``z`` of every layer (scaled by the final norm), their attended tokens
    and vocabulary means first; then :func:`_gain_stats` visits the vocabulary in chunks of
    columns whose read-out and one layer's gains fit ``chunk_bytes``. Memory:
    O(n_layers n_heads queries d_head + chunk_bytes) beyond the cache.
    """
    tokens = check_tokens(tokens, model.cfg.d_vocab, model.cfg.n_ctx)
    if tokens.shape[1] < 2:
        raise ValueError("tokens must have at least 2 positions")
    weights = torch.ones(tokens.shape, dtype=torch.float32, device=tokens.device)
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
        W_U = model.W_U.detach()
        inputs = head_inputs(model)  # [L, H, e, d_model]
        # The vocabulary mean of each head's read-out, without a pass over the vocabulary.
        mean_readout = inputs @ W_U.mean(-1)  # [L, H, e]
        flat_w = weights.flatten()
        rows = flat_w.nonzero().flatten()  # the counted queries, [n]
        row_w = flat_w[rows]
        batch, pos = tokens.shape
        zs, targets, offsets, ws = [], [], [], []
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
            zs.append(z)
            targets.append(target)
            offsets.append((z @ mean_readout[layer][..., None]).squeeze(-1))  # [H, n]
            ws.append(w)
        inputs_t = inputs.reshape(-1, inputs.shape[-1]).t()  # [d_model, L H e]
        ratio, hit = _gain_stats(
            torch.stack(zs), torch.stack(offsets), inputs_t, W_U, torch.stack(targets), chunk_bytes
        )
        w = torch.stack(ws)  # [L, H, n]
        total = w.sum(-1)
        share = (ratio * w).sum(-1) / total
        top = (hit.float() * w).sum(-1) / total
    return {"share": share, "top1": top}
