"""The fast path: a transformer block computed without hooks, for training and plain inference.

:class:`circuits.HookedTransformer` runs a block here when nothing can observe its
intermediates (no hook attached to any of its hook points) and its configuration uses only what
this module implements (:func:`supports`). Otherwise the block's own, hooked ``forward`` runs.
Both compute the same function; ``tests/test_fast_path.py`` checks logits, gradients and
training curves against each other.

What it saves over the hooked path:

- one matmul for Q, K and V (their weights concatenated) instead of three einsums;
- attention through ``scaled_dot_product_attention``, or, for short sequences on several
  threads, an explicit ``baddbmm``-softmax-``bmm`` whose backward parallelises better on CPUs;
- in layer 0 of a model without LayerNorm, Q, K and V projected from two small tables
  (:func:`embedding_tables`) instead of from every position;
- no hook calls and no per-head intermediates.

Interface: :func:`supports`, :func:`embedding_tables` and :func:`block_forward`. Measured
speed-ups are recorded in ``bench/RESULTS.md``, not here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from circuits.model import capabilities
from circuits.model.components import ACTIVATIONS

if TYPE_CHECKING:
    from circuits.config import ModelConfig
    from circuits.model.components import Attention, TransformerBlock

# Up to this many positions the fast path on several threads spells attention out instead of
# calling the fused kernel; beyond it the kernel's memory saving matters more.
EXPLICIT_ATTENTION_MAX_POS = 128

Tables = tuple[Tensor, Tensor, Tensor]  # (tokens, W_E, W_pos)


def supports(cfg: ModelConfig) -> bool:
    """Whether the fast path implements everything ``cfg`` asks for.

    It steps aside for split or per-head attention inputs, ``hook_mlp_in``, rotary embeddings,
    grouped-query attention, RMS or weightless norms and SoLU (and, per call, for an attention
    mask): those run on the hooked path only, which is always correct. The list is
    :data:`circuits.model.capabilities.CAPABILITIES`'s ``"fast_path"``.
    """
    return capabilities.supports(cfg, "fast_path")


def embedding_tables(cfg: ModelConfig, tokens: Tensor, W_E: Tensor, W_pos: Tensor) -> Tables | None:
    """``(tokens, W_E, W_pos)`` when layer 0 may project its input from tables, else None.

    Without LayerNorm and with positions added to the residual stream, layer 0 reads exactly
    ``W_E[tokens] + W_pos[:pos]`` (when no hook can change the embeddings), so
    ``x @ W = (W_E @ W)[tokens] + (W_pos @ W)[:pos]``. That pays while the vocabulary and the
    positions are few against the batch's tokens.
    """
    batch, pos = tokens.shape
    return (tokens, W_E, W_pos) if tables_pay(cfg, batch, pos) else None


def tables_pay(cfg: ModelConfig, batch: int, pos: int) -> bool:
    """Whether layer 0 reads ``W_E[tokens] + W_pos`` and projecting the two tables (``d_vocab
    + pos`` rows) costs at most half of projecting every token (``batch * pos`` rows): a
    large vocabulary against a small batch projects the tokens."""
    return (
        cfg.normalization_type is None
        and cfg.positional_embedding_type == "standard"
        and 2 * (cfg.d_vocab + pos) <= batch * pos
    )


def block_forward(
    block: TransformerBlock,
    resid: Tensor,
    shortformer_pos_embed: Tensor | None = None,
    tables: Tables | None = None,
) -> Tensor:
    """``block``'s forward pass ``[batch, pos, d_model] -> [batch, pos, d_model]``, no hooks."""
    cfg = block.cfg
    normed = _norm(block.ln1, resid, cfg)
    if shortformer_pos_embed is None:
        resid = resid + attention(block.attn, normed, normed, normed, tables)
    else:  # positions reach queries and keys only, never values
        qk_input = normed + shortformer_pos_embed
        resid = resid + attention(block.attn, qk_input, qk_input, normed)
    if cfg.attn_only:
        return resid
    mlp = block.mlp
    x = _norm(block.ln2, resid, cfg)
    b, p, d = x.shape
    hidden = ACTIVATIONS[cfg.act_fn](torch.addmm(mlp.b_in, x.reshape(b * p, d), mlp.W_in))
    return resid + torch.addmm(mlp.b_out, hidden, mlp.W_out).view(b, p, d)


def _norm(ln: torch.nn.Module, x: Tensor, cfg: ModelConfig) -> Tensor:
    if cfg.normalization_type is None:
        return x
    w, b = cast(Tensor, ln.w), cast(Tensor, ln.b)
    return F.layer_norm(x, x.shape[-1:], w, b, cfg.eps)


def attention(
    attn: Attention,
    query_input: Tensor,
    key_input: Tensor,
    value_input: Tensor,
    tables: Tables | None = None,
) -> Tensor:
    """Causal multi-head attention ``[batch, pos, d_model] -> [batch, pos, d_model]``."""
    h, e = attn.cfg.n_heads, attn.cfg.d_head
    b, p, d = query_input.shape

    def flat(W: Tensor) -> Tensor:  # [n, d_model, d_head] -> [d_model, n * d_head]
        return W.permute(1, 0, 2).reshape(d, -1)

    def project(x: Tensor, W: Tensor, bias: Tensor) -> Tensor:
        out = torch.addmm(bias.reshape(-1), x.reshape(b * p, d), flat(W))
        return out.view(b, p, -1, e)  # [batch, pos, heads (or 3 * heads), d_head]

    W_K, b_K, W_V, b_V = attn.kv_weights()
    if tables is None and not (query_input is key_input is value_input):
        qkv: tuple[Tensor, ...] = (
            project(query_input, attn.W_Q, attn.b_Q),
            project(key_input, W_K, b_K),
            project(value_input, W_V, b_V),
        )
    else:
        W_QKV = torch.cat([attn.W_Q, W_K, W_V], dim=0)  # [3 * heads, d_model, d_head]
        b_QKV = torch.cat([attn.b_Q, b_K, b_V], dim=0)
        if tables is None:
            qkv = project(query_input, W_QKV, b_QKV).split(h, dim=2)
        else:
            # The input is exactly W_E[tokens] + W_pos[:pos] (see embedding_tables), so its
            # projection is a lookup in two projected tables: d_vocab + pos rows go through the
            # matmul (and its two backward matmuls) instead of batch * pos.
            tokens, W_E, W_pos = tables
            by_token = W_E @ flat(W_QKV)  # [d_vocab, 3 * heads * d_head]
            by_pos = torch.addmm(b_QKV.reshape(-1), W_pos[:p], flat(W_QKV))
            qkv = (F.embedding(tokens, by_token) + by_pos).view(b, p, 3 * h, e).split(h, dim=2)
    # Split before transposing to [batch, heads, pos, d_head]: the kernel's gradients come back
    # in [batch, pos, heads, d_head] layout, so the backward concatenates them without a
    # transposing copy.
    q, k, v = (t.transpose(1, 2) for t in qkv)
    if p <= EXPLICIT_ATTENTION_MAX_POS and torch.get_num_threads() > 1:
        z = _explicit_attention(q, k, v, attn.cfg.attn_scale)
    else:
        scale = 1.0 / attn.cfg.attn_scale
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    z = z.transpose(1, 2).reshape(b * p, h * e)
    return torch.addmm(attn.b_O, z, attn.W_O.reshape(h * e, d)).view(b, p, d)


def _explicit_attention(q: Tensor, k: Tensor, v: Tensor, attn_scale: float) -> Tensor:
    """``softmax(q k^T / scale + causal) v`` on ``[batch, heads, pos, d_head]`` as plain matmuls.

    On CPUs with several threads their backward parallelises where the fused kernel's does not,
    and the pattern kept for the backward is small at these lengths. The first half of the
    queries sees only the first half of the keys, so two products skip the masked quarter.
    """
    b, h, p, e = q.shape
    causal = torch.full((p, p), float("-inf"), device=q.device, dtype=q.dtype).triu(1)
    q, k, v = (t.reshape(b * h, p, e) for t in (q, k, v))

    def attend(queries: Tensor, lo: int, hi: int) -> Tensor:  # queries lo:hi see keys :hi
        # Whole k and v where all keys are seen: even a full slice costs the backward a
        # zero-filled copy.
        keys, values = (k, v) if hi == p else (k[:, :hi], v[:, :hi])
        # One GEMM scales the scores and adds the mask: no more passes over them.
        scores = torch.baddbmm(
            causal[lo:hi, :hi], queries, keys.transpose(1, 2), alpha=1 / attn_scale
        )
        return torch.bmm(scores.softmax(dim=-1), values)

    cut = p // 2 if p >= 16 else 0
    if cut:
        first, second = q.split([cut, p - cut], dim=1)
        z = torch.cat([attend(first, 0, cut), attend(second, cut, p)], dim=1)
    else:
        z = attend(q, 0, p)
    return z.view(b, h, p, e)
