"""The stacked forward pass as it was before Q, K and V were projected separately (kept as the
reference the new one is checked against in ``test_stacked_attention.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float, Int
from torch import Tensor

from circuits.config import ModelConfig
from circuits.model.components import ACTIVATIONS
from circuits.training.stacked import Params, _layer_norm


def reference_forward(
    params: Params,
    cfg: ModelConfig,
    tokens: Int[Tensor, "G batch pos"],
    patterns: list[Tensor] | None = None,
) -> Float[Tensor, "G batch pos d_vocab_out"]:
    """Logits of ``G`` models on their own batches, ``[G, batch, pos, d_vocab_out]``.

    Args:
        params: :func:`stack`'s tensors.
        tokens: One batch per instance.
        patterns: If a list, each layer's attention pattern ``[G, batch, n_heads, query,
            key]`` is appended (memory: ``G batch n_heads pos^2`` floats per layer).

    Memory: the activations of ``G`` ordinary forward passes; nothing vocabulary-squared.
    """
    G, b, p = tokens.shape
    h, d = cfg.n_heads, cfg.d_model
    W_E, W_pos = params["embed.W_E"], params["pos_embed.W_pos"][:, :p]
    # Instance g's ids index rows g * d_vocab + id of the flattened tables.
    offsets = torch.arange(G, device=tokens.device).view(G, 1, 1) * cfg.d_vocab
    flat_ids = (tokens + offsets).reshape(G, b * p)
    resid = F.embedding(flat_ids, W_E.reshape(-1, d)).view(G, b, p, d) + W_pos.unsqueeze(1)
    resid = resid.reshape(G, b * p, d)
    causal = torch.full((p, p), float("-inf"), device=tokens.device).triu(1)
    for layer in range(cfg.n_layers):
        pre = f"blocks.{layer}"
        W_QKV = torch.cat([params[f"{pre}.attn.W_{x}"] for x in "QKV"], dim=1)
        W_QKV = rearrange(W_QKV, "G n d e -> G d (n e)")  # n = 3 * heads
        b_QKV = torch.cat([params[f"{pre}.attn.b_{x}"] for x in "QKV"], dim=1).reshape(G, 1, -1)
        if layer == 0 and cfg.normalization_type is None:
            # The input is W_E[tokens] + W_pos: project the two tables, then look rows up.
            by_token = torch.bmm(W_E, W_QKV).reshape(G * cfg.d_vocab, -1)
            by_pos = torch.baddbmm(b_QKV, W_pos, W_QKV)  # [G, pos, 3 * heads * d_head]
            qkv = F.embedding(flat_ids, by_token).view(G, b, p, -1) + by_pos.unsqueeze(1)
        else:
            normed = _layer_norm(resid, params, f"{pre}.ln1", cfg)
            qkv = torch.baddbmm(b_QKV, normed, W_QKV).view(G, b, p, -1)
        if patterns is None and torch.get_num_threads() == 1:
            # One thread: the fused kernel beats the matmuls spelled out (as on the fast path).
            q, k, v = rearrange(qkv, "G b p (t n e) -> t (G b) n p e", t=3, n=h).unbind(0)
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1 / cfg.attn_scale)
            z = rearrange(z, "(G b) n p e -> G (b p) (n e)", G=G)
        else:
            q, k, v = rearrange(qkv, "G b p (t n e) -> t (G b n) p e", t=3, n=h).unbind(0)
            scores = torch.baddbmm(causal, q, k.transpose(1, 2), alpha=1 / cfg.attn_scale)
            pattern = scores.softmax(dim=-1)
            if patterns is not None:
                patterns.append(pattern.view(G, b, h, p, p))
            z = rearrange(torch.bmm(pattern, v), "(G b n) p e -> G (b p) (n e)", G=G, n=h)
        W_O = rearrange(params[f"{pre}.attn.W_O"], "G n e d -> G (n e) d")
        resid = resid + torch.baddbmm(params[f"{pre}.attn.b_O"].unsqueeze(1), z, W_O)
        if not cfg.attn_only:
            x = _layer_norm(resid, params, f"{pre}.ln2", cfg)
            hidden = torch.baddbmm(
                params[f"{pre}.mlp.b_in"].unsqueeze(1), x, params[f"{pre}.mlp.W_in"]
            )
            hidden = ACTIVATIONS[cfg.act_fn](hidden)
            out = torch.baddbmm(
                params[f"{pre}.mlp.b_out"].unsqueeze(1), hidden, params[f"{pre}.mlp.W_out"]
            )
            resid = resid + out
    resid = _layer_norm(resid, params, "ln_final", cfg)
    logits = torch.baddbmm(params["unembed.b_U"].unsqueeze(1), resid, params["unembed.W_U"])
    return logits.view(G, b, p, -1)
