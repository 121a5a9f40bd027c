"""Running a model with any set of edges patched, many patch sets in one batched forward.

Each receiver's input is rebuilt as the sum of its senders' outputs; patching edge ``s -> r``
with weight ``m`` gives ``r`` the input ``sum_s out_s - m * (out_s - source_s)``: ``m = 1`` swaps
the sender's output for the source's (a corrupted run, a mean, zero, a resampled run), ``m = 0``
leaves it, and a fractional or differentiable ``m`` interpolates (what attribution patching
differentiates). Receivers with no patched edge read the shared residual stream (one norm and
one projection for all of them); only patched receivers get their own input, norm and
projection, as TransformerLens's ``use_split_qkv_input`` does for every head.

**Norms are recomputed** (not frozen): every receiver applies its LayerNorm (or LNPre, RMS) to
its own patched input, exactly as the model would if that input were its residual stream; the
final norm is applied to the patched residual stream at the logits. On shortformer models the
positional embedding is added to queries and keys after ``ln1``, and never enters the residual
stream. Tested to match the model's own hooks on every supported architecture.

Working memory per config: the senders' outputs ``[batch, pos, n_senders, d_model]`` plus one
layer's activations; logits only with ``logits=True`` (see :mod:`circuits.discovery.readout`
for the metric's rows only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from circuits.discovery.graph import Graph, Group
from circuits.discovery.readout import final_norm
from circuits.validation import check_tokens

SourceKind = Literal["corrupted", "mean", "zero", "resampled"]


@dataclass
class GraphRun:
    """What :func:`run` returns.

    Attributes:
        logits: ``[configs, batch, pos, d_vocab]`` (None with ``logits=False``).
        outputs: Every sender's output ``[configs, batch, pos, n_senders, d_model]`` (shortformer
            ``pos``: the positional embedding added to queries and keys).
        resid: The residual stream read by the logits, before the final norm
            ``[configs, batch, pos, d_model]``.
        inputs: Per group (in ``graph.groups`` order), the receivers' inputs before their norm
            ``[configs, batch, pos, n_receivers, d_model]``; only with ``keep_inputs``.
    """

    logits: Float[Tensor, "configs batch pos d_vocab"] | None
    outputs: Float[Tensor, "configs batch pos n_senders d_model"]
    resid: Float[Tensor, "configs batch pos d_model"]
    inputs: list[Tensor] | None = None


def _attention(model: Any, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Causal attention of ``[c, b, p, h, e]`` queries, keys, values: z ``[c, b, p, h, e]``."""
    c, _b, _p, _h, _e = q.shape

    def heads(x: Tensor) -> Tensor:
        return einops.rearrange(x, "c b p h e -> (c b) h p e")

    z = F.scaled_dot_product_attention(
        heads(q), heads(k), heads(v), is_causal=True, scale=1.0 / model.cfg.attn_scale
    )
    return einops.rearrange(z, "(c b) h p e -> c b p h e", c=c)


def _receiver_inputs(
    group: Group,
    active: list[int],
    resid: Tensor,
    outs: list[Tensor],
    src: Tensor | None,
    W: Tensor | None,
    offsets: Tensor | None,
    shortformer: bool,
) -> tuple[Tensor, Tensor | None]:
    """Inputs of the ``active`` receivers before their norm ``[c, b, p, a, d]``, and for
    shortformer the patched part of their positional input ``[c, b, p, a, d]`` (or None)."""
    inp = resid.unsqueeze(-2).expand(*resid.shape[:3], len(active), resid.shape[-1])
    pos_delta = None
    if W is not None and src is not None:
        w = W[:, active]  # [c, a, s]
        delta = torch.stack(outs[: group.n_senders], dim=-2) - src[..., : group.n_senders, :]
        if shortformer:  # positions are added after the norm: keep them apart
            pos_delta = einops.einsum(w[..., 1], delta[..., 1, :], "c a, c b p d -> c b p a d")
            w = torch.cat([w[..., :1], torch.zeros_like(w[..., 1:2]), w[..., 2:]], dim=-1)
        inp = inp - einops.einsum(w, delta, "c a s, c b p s d -> c b p a d")
    if offsets is not None:
        inp = inp + offsets[..., active, :]
    return inp, pos_delta


def run(
    model: Any,
    graph: Graph,
    tokens: Int[Tensor, "batch pos"],
    patch: Float[Tensor, "configs n_edges"] | None = None,
    source: Float[Tensor, "batch pos n_senders d_model"] | None = None,
    *,
    keep_inputs: bool = False,
    input_offsets: list[Tensor] | None = None,
    start: int = 0,
    prefix: Tensor | None = None,
    logits: bool = True,
    embeddings: tuple[Tensor, Tensor] | None = None,
    post_offsets: list[Tensor | None] | None = None,
    keep_outputs: bool = True,
) -> GraphRun:
    """Runs ``model`` on ``tokens`` with the units of ``patch`` replaced by ``source``.

    Args:
        model: The model ``graph`` was built from.
        graph: Its :class:`~circuits.discovery.graph.Graph`.
        tokens: ``[batch, pos]`` token ids.
        patch: Patch weight per unit ``[configs, n_edges]`` (1 = patched, 0 = clean), or a
            bool mask; None runs the model unpatched (one config).
        source: Sender outputs patched in ``[batch, pos, n_senders, d_model]`` (see
            :func:`source_outputs`); required with ``patch``.
        keep_inputs: Keep every group's receiver inputs in the result.
        input_offsets: Per group, a tensor ``[configs, batch, pos, receivers, d_model]`` added
            to its receiver inputs (zeros that require grad give ``dM/d(input)``).
        start, prefix: Resume at group ``start`` from the sender outputs ``prefix`` ``[batch,
            pos, n_senders, d_model]`` of a run whose earlier groups match this one (patches
            into groups before ``start`` are then ignored).
        logits: Compute the logits at every position (else only ``resid``).
        embeddings: ``(token embeddings, positional embeddings)`` ``[batch, pos, d_model]``
            replacing the model's (attribution's integrated-gradient path).
        post_offsets: Shortformer only: per attention group, a tensor like ``input_offsets``
            added after the norm (where positions join queries and keys), or None.
        keep_outputs: Stack the senders' outputs into the result (else ``outputs`` is empty:
            saves ``configs x batch x pos x n_senders x d_model`` floats).
    """
    cfg = model.cfg
    tokens = check_tokens(tokens, cfg.d_vocab, cfg.n_ctx).to(model.W_E.device)
    batch, pos = tokens.shape
    dtype, device = model.W_E.dtype, model.W_E.device
    slot_patch = None
    if patch is None:
        n_configs = 1 if input_offsets is None else input_offsets[0].shape[0]
    else:
        if patch.ndim != 2 or patch.shape[1] != graph.n_edges:
            raise ValueError(
                f"patch must have shape [configs, {graph.n_edges}], got {tuple(patch.shape)}"
            )
        if source is None:
            raise ValueError("patching needs a source: see circuits.discovery.source_outputs")
        expected = (batch, pos, graph.n_senders, cfg.d_model)
        if tuple(source.shape) != expected:
            raise ValueError(f"source must have shape {list(expected)}, got {list(source.shape)}")
        slot_patch = graph.slot_patch(patch.to(device=device, dtype=dtype))
        n_configs = patch.shape[0]
    src = None if source is None else source.to(device=device, dtype=dtype).unsqueeze(0)
    if embeddings is None:
        embed, pos_embed = model.W_E[tokens], model.W_pos[:pos].expand(batch, pos, -1)
    else:
        embed, pos_embed = embeddings
    outs = [x.expand(n_configs, *x.shape) for x in (embed, pos_embed)]
    const = torch.zeros(cfg.d_model, dtype=dtype, device=device)
    if start:
        if prefix is None:
            raise ValueError("start > 0 needs the prefix outputs of an earlier run")
        n_prefix = graph.groups[start].n_senders
        outs = [x.expand(n_configs, *x.shape) for x in prefix[..., :n_prefix, :].unbind(-2)]
        for group in graph.groups[:start]:
            if group.kind == "attn":
                const = const + model.blocks[group.layer].attn.b_O
    # Shortformer positions (sender 1) are added to queries and keys, not to the stream.
    resid = sum(x for i, x in enumerate(outs) if i != 1 or not graph.shortformer) + const
    kept: list[Tensor] = []
    h = cfg.n_heads
    for gi, group in enumerate(graph.groups):
        if gi < start:
            continue
        W = None
        if slot_patch is not None:
            W = slot_patch[:, group.slot_slice].reshape(n_configs, len(group.receivers), -1)
        offsets = None if input_offsets is None else input_offsets[gi]
        if offsets is not None or keep_inputs:
            active = list(range(len(group.receivers)))
        elif W is not None:
            active = W.ne(0).any(-1).any(0).nonzero().flatten().tolist()
        else:
            active = []
        inp = pos_delta = None
        if active:
            inp, pos_delta = _receiver_inputs(
                group, active, resid, outs, src, W, offsets, graph.shortformer
            )
            if keep_inputs:
                kept.append(inp)
        if group.kind == "logits":
            resid = resid if inp is None else inp[..., 0, :]
            break
        block = model.blocks[group.layer]
        if group.kind == "mlp":
            x = resid if inp is None else inp[..., 0, :]
            mlp_out = block.mlp(block.ln2(x))
            outs.append(mlp_out)
            resid = resid + mlp_out
            continue
        attn = block.attn
        shared = block.ln1(resid)
        weights = ((attn.W_Q, attn.b_Q), (attn.W_K, attn.b_K), (attn.W_V, attn.b_V))
        qkv = []
        for j, (Wk, bk) in enumerate(weights):
            x = shared + outs[1] if graph.shortformer and j < 2 else shared
            qkv.append(einops.einsum(x, Wk, "c b p d, h d e -> c b p h e") + bk)
        if inp is not None:
            normed = block.ln1(inp)  # [c, b, p, a, d]
            for j, (Wk, bk) in enumerate(weights):  # receivers: q of each head, then k, then v
                idx = [a for a, r in enumerate(active) if r // h == j]
                if not idx:
                    continue
                heads = torch.tensor([active[a] % h for a in idx], device=device)
                x = normed[..., idx, :]
                if graph.shortformer and j < 2:
                    x = x + outs[1].unsqueeze(-2)
                    if pos_delta is not None:
                        x = x - pos_delta[..., idx, :]
                    post = None if post_offsets is None else post_offsets[gi]
                    if post is not None:
                        x = x + post[..., [active[a] for a in idx], :]
                proj = einops.einsum(x, Wk[heads], "c b p a d, a d e -> c b p a e") + bk[heads]
                qkv[j] = qkv[j].index_copy(-2, heads, proj)
        z = _attention(model, group.layer, *qkv)
        result = einops.einsum(z, attn.W_O, "c b p h e, h e d -> c b p h d")
        outs.extend(result.unbind(dim=-2))
        resid = resid + result.sum(-2) + attn.b_O
    out_logits = None
    if logits:
        out_logits = final_norm(model, resid) @ model.W_U + model.b_U
    outputs = torch.stack(outs, dim=-2) if keep_outputs else resid.new_zeros(0)
    return GraphRun(out_logits, outputs, resid, kept if keep_inputs else None)


def source_outputs(
    model: Any,
    graph: Graph,
    kind: SourceKind,
    tokens: Int[Tensor, "batch pos"],
    corrupted: Int[Tensor, "batch pos"] | None = None,
) -> Float[Tensor, "batch pos n_senders d_model"]:
    """Sender outputs to patch in, for clean ``tokens`` (the model's dtype and device).

    Args:
        kind: ``"corrupted"``: the unpatched run on ``corrupted`` (same shape as ``tokens``);
            ``"mean"``: the clean run's outputs averaged over the batch (per position);
            ``"zero"``: zeros; ``"resampled"``: the run on the batch rolled by one sequence
            (each sequence gets another sequence's activations).
    """
    tokens = check_tokens(tokens, model.cfg.d_vocab, model.cfg.n_ctx)
    with torch.no_grad():
        if kind == "corrupted":
            if corrupted is None:
                raise ValueError("kind='corrupted' needs the corrupted tokens")
            corrupted = check_tokens(corrupted, model.cfg.d_vocab, model.cfg.n_ctx, "corrupted")
            if corrupted.shape != tokens.shape:
                raise ValueError(
                    f"corrupted tokens {tuple(corrupted.shape)} must match {tuple(tokens.shape)}"
                )
            return run(model, graph, corrupted, logits=False).outputs[0]
        if kind == "mean":
            out = run(model, graph, tokens, logits=False).outputs[0]
            return out.mean(0, keepdim=True).expand_as(out).clone()
        if kind == "zero":
            b, p = tokens.shape
            W_E = model.W_E
            return torch.zeros(
                b, p, graph.n_senders, model.cfg.d_model, dtype=W_E.dtype, device=W_E.device
            )
        if kind == "resampled":
            if tokens.shape[0] < 2:
                raise ValueError("resampling needs a batch of at least 2 sequences")
            return run(model, graph, tokens.roll(1, dims=0), logits=False).outputs[0]
    raise ValueError(f"unknown source kind {kind!r}; choose corrupted, mean, zero or resampled")
