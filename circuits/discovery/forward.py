"""Running a model with any set of edges patched, many patch sets in one batched forward.

Each receiver's input is rebuilt as the sum of its senders' outputs; patching edge ``s -> r``
with weight ``m`` gives ``r`` the input ``sum_s out_s - m * (out_s - source_s)``: ``m = 1`` swaps
the sender's output for the source's (a corrupted run, a mean, zero, a resampled run), ``m = 0``
leaves it, and a fractional or differentiable ``m`` interpolates (what attribution patching
differentiates). The forward below is the model's own computation spelled out per receiver
(as TransformerLens's ``use_split_qkv_input`` does): q, k and v inputs each get their own
LayerNorm, and patched runs of ``C`` edge masks share one forward with a leading config axis.
It is tested to match the model's logits to float tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuits.discovery.graph import Graph, Group
from circuits.validation import check_tokens

SourceKind = Literal["corrupted", "mean", "zero", "resampled"]


@dataclass
class GraphRun:
    """What :func:`run` returns.

    Attributes:
        logits: ``[configs, batch, pos, d_vocab]``.
        outputs: Every sender's output ``[configs, batch, pos, n_senders, d_model]``.
        inputs: Per group (in ``graph.groups`` order), the receivers' inputs before LayerNorm
            ``[configs, batch, pos, n_receivers, d_model]``; only with ``keep_inputs``.
    """

    logits: Float[Tensor, "configs batch pos d_vocab"]
    outputs: Float[Tensor, "configs batch pos n_senders d_model"]
    inputs: list[Tensor] | None = None


def _ln(x: Tensor, ln: Any, eps: float) -> Tensor:
    x = x - x.mean(-1, keepdim=True)
    scale = (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    return x / scale * ln.w + ln.b


def _group_masks(graph: Graph, patch: Tensor) -> list[Tensor]:
    """``[configs, n_edges]`` patch weights as one ``[configs, receivers, senders]`` per group."""
    return [
        patch[:, g.edge_slice].reshape(patch.shape[0], len(g.receivers), g.n_senders)
        for g in graph.groups
    ]


def _read(
    group: Group,
    outputs: list[Tensor],
    const: Tensor,
    source: Tensor | None,
    mask: Tensor | None,
) -> Tensor:
    """Inputs of a group's receivers ``[configs, batch, pos, receivers, d_model]``."""
    x = torch.stack(outputs, dim=-2)  # [c, b, p, s, d]
    total = (x.sum(-2) + const).unsqueeze(-2)  # [c, b, p, 1, d]
    n_recv = len(group.receivers)
    if mask is None or source is None:
        return total.expand(*total.shape[:3], n_recv, total.shape[-1])
    delta = x - source[..., : group.n_senders, :]
    return total - einops.einsum(mask, delta, "c r s, c b p s d -> c b p r d")


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
) -> GraphRun:
    """Runs ``model`` on ``tokens`` with the edges of ``patch`` replaced by ``source``.

    Args:
        model: The model ``graph`` was built from.
        graph: Its :class:`~circuits.discovery.graph.Graph`.
        tokens: ``[batch, pos]`` token ids.
        patch: Patch weight per edge ``[configs, n_edges]`` (1 = patched, 0 = clean), or a
            bool mask; None runs the model unpatched (one config).
        source: Sender outputs patched in ``[batch, pos, n_senders, d_model]`` (see
            :func:`source_outputs`); required with ``patch``.
        keep_inputs: Keep every group's receiver inputs in the result.
        input_offsets: Per group, a tensor added to its receiver inputs (zeros that require
            grad give ``dM/d(input)`` for attribution); shapes as in ``GraphRun.inputs``.
        start, prefix: Resume at group ``start`` from the sender outputs ``prefix`` ``[batch,
            pos, n_senders, d_model]`` of a run whose earlier groups match this one (patches
            into groups before ``start`` are then ignored): ACDC and exact patching test edges
            into one group at a time, and everything upstream of it is unchanged.
    """
    cfg = model.cfg
    tokens = check_tokens(tokens, cfg.d_vocab, cfg.n_ctx)
    batch, pos = tokens.shape
    masks: list[Tensor] | list[None]
    if patch is None:
        n_configs = 1 if input_offsets is None else input_offsets[0].shape[0]
        masks = [None] * len(graph.groups)
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
        patch = patch.to(model.W_E.dtype)
        n_configs = patch.shape[0]
        masks = _group_masks(graph, patch)
    src = None if source is None else source.unsqueeze(0)
    embed = model.W_E[tokens]
    pos_embed = model.W_pos[:pos].expand(batch, pos, -1)
    outputs = [
        embed.expand(n_configs, *embed.shape),
        pos_embed.expand(n_configs, *pos_embed.shape),
    ]
    const = torch.zeros_like(model.W_E[0])
    if start:
        if prefix is None:
            raise ValueError("start > 0 needs the prefix outputs of an earlier run")
        n_prefix = graph.groups[start].n_senders
        outputs = [x.expand(n_configs, *x.shape) for x in prefix[..., :n_prefix, :].unbind(-2)]
        for group in graph.groups[:start]:
            if group.kind == "attn":
                const = const + model.blocks[group.layer].attn.b_O
    kept: list[Tensor] = []
    causal = torch.ones(pos, pos, dtype=torch.bool, device=tokens.device).tril()
    h = cfg.n_heads
    for gi, group in enumerate(graph.groups):
        if gi < start:
            continue
        inp = _read(group, outputs, const, src, masks[gi])
        if input_offsets is not None:
            inp = inp + input_offsets[gi]
        if keep_inputs:
            kept.append(inp)
        if group.kind == "logits":
            x = inp[..., 0, :]
            if cfg.normalization_type == "LN":
                x = _ln(x, model.ln_final, cfg.eps)
            logits = x @ model.W_U + model.b_U
            break
        block = model.blocks[group.layer]
        if group.kind == "attn":
            if cfg.normalization_type == "LN":
                inp = _ln(inp, block.ln1, cfg.eps)
            attn = block.attn
            q_in, k_in, v_in = inp.split(h, dim=-2)  # [c, b, p, h, d] each
            q = einops.einsum(q_in, attn.W_Q, "c b p h d, h d e -> c b h p e") + attn.b_Q[:, None]
            k = einops.einsum(k_in, attn.W_K, "c b p h d, h d e -> c b h p e") + attn.b_K[:, None]
            v = einops.einsum(v_in, attn.W_V, "c b p h d, h d e -> c b h p e") + attn.b_V[:, None]
            scores = (q @ k.transpose(-1, -2)) / cfg.attn_scale
            pattern = scores.masked_fill(~causal, float("-inf")).softmax(-1)
            z = pattern @ v  # [c, b, h, p, e]
            result = einops.einsum(z, attn.W_O, "c b h p e, h e d -> c b p h d")
            outputs.extend(result.unbind(dim=-2))
            const = const + attn.b_O
        else:
            x = inp[..., 0, :]
            if cfg.normalization_type == "LN":
                x = _ln(x, block.ln2, cfg.eps)
            mlp = block.mlp
            outputs.append(mlp.act_fn(x @ mlp.W_in + mlp.b_in) @ mlp.W_out + mlp.b_out)
    return GraphRun(logits, torch.stack(outputs, dim=-2), kept if keep_inputs else None)


def source_outputs(
    model: Any,
    graph: Graph,
    kind: SourceKind,
    tokens: Int[Tensor, "batch pos"],
    corrupted: Int[Tensor, "batch pos"] | None = None,
) -> Float[Tensor, "batch pos n_senders d_model"]:
    """Sender outputs to patch in, for clean ``tokens``.

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
            return run(model, graph, corrupted).outputs[0]
        if kind == "mean":
            out = run(model, graph, tokens).outputs[0]
            return out.mean(0, keepdim=True).expand_as(out).clone()
        if kind == "zero":
            b, p = tokens.shape
            return torch.zeros(b, p, graph.n_senders, model.cfg.d_model)
        if kind == "resampled":
            if tokens.shape[0] < 2:
                raise ValueError("resampling needs a batch of at least 2 sequences")
            return run(model, graph, tokens.roll(1, dims=0)).outputs[0]
    raise ValueError(f"unknown source kind {kind!r}; choose corrupted, mean, zero or resampled")
