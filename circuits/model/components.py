"""The layers of :class:`circuits.HookedTransformer`, with TransformerLens 3.x names and hooks.

Each module's ``forward`` is the hooked, spelled-out computation: every intermediate passes
through a ``HookPoint`` where TransformerLens puts one. (The fused path that skips them lives in
:mod:`circuits.model.fast_path`.) Parameter names and shapes are TransformerLens's, so its
state dicts load with ``strict=True``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from circuits.config import ModelConfig
from circuits.model.state_dict import consume_tl3_buffers, rotary_tables


def gelu_new(x: Tensor) -> Tensor:
    """GPT-2's tanh approximation of GELU (TransformerLens's ``gelu_new``)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def solu(x: Tensor) -> Tensor:
    """SoLU, ``x * softmax(x)`` over the neurons (the LayerNorm after it is the MLP's ``ln``)."""
    return x * x.softmax(dim=-1)


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": F.gelu,
    "gelu_new": gelu_new,
    "relu": F.relu,
    "solu_ln": solu,
}


class Embed(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_model))

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        return F.embedding(tokens, self.W_E)


class PosEmbed(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model))

    def forward(
        self, tokens: Int[Tensor, "batch pos"], attention_mask: Tensor | None = None
    ) -> Float[Tensor, "batch pos d_model"]:
        """``W_pos[:pos]`` per sequence; with a padding mask, positions count from each
        sequence's first real token and padded positions get zeros (TransformerLens 3.x).

        The result may be a broadcast view of ``W_pos``: copy it before handing it to a hook.
        """
        batch, pos = tokens.shape
        if attention_mask is None:
            return self.W_pos[:pos].unsqueeze(0).expand(batch, pos, -1)
        position_ids = offset_position_ids(attention_mask)
        return torch.where(attention_mask.bool().unsqueeze(-1), self.W_pos[position_ids], 0.0)


def offset_position_ids(attention_mask: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch pos"]:
    """Position of each token counted from its sequence's first unmasked token (0 before it)."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


class Unembed(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.W_U = nn.Parameter(torch.empty(cfg.d_model, cfg.d_vocab_out))
        self.b_U = nn.Parameter(torch.zeros(cfg.d_vocab_out))
        self.hook_in = HookPoint()  # [batch, pos, d_model]
        self.hook_out = HookPoint()  # [batch, pos, d_vocab_out]

    def forward(
        self, x: Float[Tensor, "batch pos d_model"]
    ) -> Float[Tensor, "batch pos d_vocab_out"]:
        x = self.hook_in(x)
        logits = torch.addmm(self.b_U, x.reshape(-1, x.shape[-1]), self.W_U)
        return self.hook_out(logits.view(*x.shape[:-1], -1))


class LayerNorm(nn.Module):
    """Centre, scale to unit RMS (``hook_scale`` is the divisor), then ``* w + b``.

    ``LNPre`` (weights folded into the next layer) is the same without ``w`` and ``b``.
    """

    def __init__(self, cfg: ModelConfig, length: int | None = None, affine: bool = True):
        super().__init__()
        self.eps = cfg.eps
        if affine:
            self.w = nn.Parameter(torch.ones(length or cfg.d_model))
            self.b = nn.Parameter(torch.zeros(length or cfg.d_model))
        self.hook_scale = HookPoint()  # [batch, pos, 1]
        self.hook_normalized = HookPoint()  # [batch, pos, length]

    def forward(self, x: Float[Tensor, "... length"]) -> Float[Tensor, "... length"]:
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        x = self.hook_normalized(x / scale)
        return x * self.w + self.b if hasattr(self, "w") else x


class RMSNorm(nn.Module):
    """Scale to unit RMS, then ``* w`` (no centring, no bias); ``RMSPre`` has no ``w``."""

    def __init__(self, cfg: ModelConfig, affine: bool = True):
        super().__init__()
        self.eps = cfg.eps
        if affine:
            self.w = nn.Parameter(torch.ones(cfg.d_model))
        self.hook_scale = HookPoint()  # [batch, pos, 1]
        self.hook_normalized = HookPoint()  # [batch, pos, d_model]

    def forward(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        x = self.hook_normalized(x / scale)
        return x * self.w if hasattr(self, "w") else x


def make_norm(cfg: ModelConfig) -> nn.Module:
    """The normalization layer ``cfg.normalization_type`` names (identity for ``None``)."""
    kind = cfg.normalization_type
    if kind is None:
        return nn.Identity()
    if kind.startswith("LN"):
        return LayerNorm(cfg, affine=kind == "LN")
    return RMSNorm(cfg, affine=kind == "RMS")


class Attention(nn.Module):
    """Causal multi-head attention (see :class:`GroupedQueryAttention` for shared keys)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        h, d, e = cfg.n_heads, cfg.d_model, cfg.d_head
        # Registration order fixes the seeded initialisation: W_Q, W_K, W_V, W_O, then biases.
        self.W_Q = nn.Parameter(torch.empty(h, d, e))
        self._init_kv(cfg, "W")
        self.W_O = nn.Parameter(torch.empty(h, e, d))
        self.b_Q = nn.Parameter(torch.zeros(h, e))
        self._init_kv(cfg, "b")
        self.b_O = nn.Parameter(torch.zeros(d))
        self.hook_q = HookPoint()  # [batch, pos, n_heads, d_head]
        self.hook_k = HookPoint()  # [batch, pos, n_heads (n_key_value_heads), d_head]
        self.hook_v = HookPoint()
        if cfg.positional_embedding_type == "rotary":
            self.hook_rot_q = HookPoint()  # [batch, pos, n_heads, d_head]
            self.hook_rot_k = HookPoint()
        self.hook_attn_scores = HookPoint()  # [batch, n_heads, query_pos, key_pos], masked
        self.hook_pattern = HookPoint()  # [batch, n_heads, query_pos, key_pos]
        self.hook_z = HookPoint()  # [batch, pos, n_heads, d_head]
        self.hook_result = HookPoint()  # [batch, pos, n_heads, d_model], if use_attn_result

    def _init_kv(self, cfg: ModelConfig, kind: str) -> None:
        """Registers ``W_K``, ``W_V`` (``kind="W"``) or ``b_K``, ``b_V`` (``kind="b"``)."""
        h, d, e = cfg.n_heads, cfg.d_model, cfg.d_head
        shape = (h, d, e) if kind == "W" else (h, e)
        for name in ("K", "V"):
            self.register_parameter(f"{kind}_{name}", nn.Parameter(torch.zeros(shape)))

    def kv_weights(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(W_K, b_K, W_V, b_V)`` as stored (one entry per key-value head)."""
        prefix = "" if self.cfg.n_key_value_heads is None else "_"
        names = ("W_K", "b_K", "W_V", "b_V")
        W_K, b_K, W_V, b_V = (cast(Tensor, self._parameters[prefix + n]) for n in names)
        return W_K, b_K, W_V, b_V

    def _repeat_kv(self, x: Tensor) -> Tensor:
        return x

    def forward(
        self,
        query_input: Float[Tensor, "batch pos d_model"] | Float[Tensor, "batch pos head d_model"],
        key_input: Float[Tensor, "batch pos d_model"] | Float[Tensor, "batch pos head d_model"],
        value_input: Float[Tensor, "batch pos d_model"] | Float[Tensor, "batch pos head d_model"],
        attention_mask: Int[Tensor, "batch pos"] | None = None,
    ) -> Float[Tensor, "batch pos d_model"]:
        W_K, b_K, W_V, b_V = self.kv_weights()
        q = self.hook_q(project(query_input, self.W_Q, self.b_Q))
        k = self.hook_k(project(key_input, W_K, b_K))
        v = self.hook_v(project(value_input, W_V, b_V))
        if self.cfg.positional_embedding_type == "rotary":
            q = self.hook_rot_q(self.rotary(q, attention_mask))
            k = self.hook_rot_k(self.rotary(k, attention_mask))
        k, v = self._repeat_kv(k), self._repeat_kv(v)
        scores = einops.einsum(q, k, "b q h e, b k h e -> b h q k")
        n = scores.shape[-1]
        allowed = torch.ones(n, n, dtype=torch.bool, device=scores.device)
        allowed = allowed.tril() if self.cfg.attention_dir == "causal" else allowed
        if attention_mask is not None:
            allowed = allowed & attention_mask.bool()[:, None, None, :]
        # In place: the same numbers as TransformerLens's `scores / scale` then masking, without
        # two more [batch, heads, pos, pos] copies (neither op's backward needs its input).
        scores = scores.div_(self.cfg.attn_scale).masked_fill_(~allowed, float("-inf"))
        pattern = self.hook_attn_scores(scores).softmax(dim=-1)
        if attention_mask is not None:  # a padded query sees no key at all: zeros, as TL3
            pattern = torch.where(pattern.isnan(), 0.0, pattern)
        pattern = self.hook_pattern(pattern)
        z = self.hook_z(einops.einsum(pattern, v, "b h q k, b k h e -> b q h e"))
        if self.cfg.use_attn_result:
            result = self.hook_result(einops.einsum(z, self.W_O, "b p h e, h e d -> b p h d"))
            return result.sum(dim=-2) + self.b_O
        return einops.einsum(z, self.W_O, "b p h e, h e d -> b p d") + self.b_O

    def rotary(
        self, x: Float[Tensor, "batch pos head d_head"], attention_mask: Tensor | None = None
    ) -> Float[Tensor, "batch pos head d_head"]:
        """Rotates the first ``rotary_dim`` features of queries or keys by position (TL3's
        GPT-NeoX pairing ``(i, i + rotary_dim / 2)``, or adjacent pairs if configured)."""
        r = self.cfg.rotary_dim
        assert r is not None
        x_rot, x_pass = x[..., :r], x[..., r:]
        if self.cfg.rotary_adjacent_pairs:
            flipped = torch.stack([-x_rot[..., 1::2], x_rot[..., ::2]], dim=-1).flatten(-2)
        else:
            half = r // 2
            flipped = torch.cat([-x_rot[..., half:], x_rot[..., :half]], dim=-1)
        pos = x.shape[1]
        if attention_mask is None:
            ids: Tensor = torch.arange(pos, device=x.device)[None, :]
        else:
            ids = offset_position_ids(attention_mask)
        c = self.cfg
        sin, cos = rotary_tables(ids, r, c.rotary_base, c.rotary_adjacent_pairs)  # [b|1, pos, r]
        rotated = x_rot * cos[:, :, None] + flipped * sin[:, :, None]
        return torch.cat([rotated, x_pass], dim=-1)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # TL3 saves causal-mask and rotary buffers; we compute them, so check and drop them.
        consume_tl3_buffers(state_dict, prefix, self.cfg)
        super()._load_from_state_dict(state_dict, prefix, *args)


class GroupedQueryAttention(Attention):
    """Attention whose key and value heads are shared by groups of query heads.

    Key and value weights are stored once per key-value head as ``_W_K``, ``_W_V``, ``_b_K``,
    ``_b_V`` ``[n_key_value_heads, ...]`` (TransformerLens 3.x's names); ``W_K`` etc. are the
    per-query-head weights, repeated. ``hook_k``/``hook_v`` see the key-value heads.
    """

    def _init_kv(self, cfg: ModelConfig, kind: str) -> None:
        kv, d, e = cfg.n_key_value_heads, cfg.d_model, cfg.d_head
        assert kv is not None
        shape = (kv, d, e) if kind == "W" else (kv, e)
        for name in ("K", "V"):
            self.register_parameter(f"_{kind}_{name}", nn.Parameter(torch.zeros(shape)))

    def _repeat_kv(self, x: Tensor) -> Tensor:
        """``[..., n_key_value_heads, ...]`` on dim -2 or 0 -> one entry per query head."""
        kv = self.cfg.n_key_value_heads
        assert kv is not None
        dim = 2 if x.ndim == 4 else 0
        return x.repeat_interleave(self.cfg.n_heads // kv, dim=dim)

    @property
    def W_K(self) -> Tensor:  # type: ignore[override]
        return self._repeat_kv(self.kv_weights()[0])

    @property
    def W_V(self) -> Tensor:  # type: ignore[override]
        return self._repeat_kv(self.kv_weights()[2])

    @property
    def b_K(self) -> Tensor:  # type: ignore[override]
        return self._repeat_kv(self.kv_weights()[1])

    @property
    def b_V(self) -> Tensor:  # type: ignore[override]
        return self._repeat_kv(self.kv_weights()[3])


def project(
    x: Float[Tensor, "batch pos d_model"] | Float[Tensor, "batch pos head d_model"],
    W: Float[Tensor, "head d_model d_head"],
    b: Float[Tensor, "head d_head"],
) -> Float[Tensor, "batch pos head d_head"]:
    """Per-head projection of one shared input, or of one input per head (split inputs)."""
    if x.ndim == 4:
        return einops.einsum(x, W, "b p h d, h d e -> b p h e") + b
    return einops.einsum(x, W, "b p d, h d e -> b p h e") + b


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        assert cfg.d_mlp is not None
        self.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp))
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model))
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model))
        self.act_fn = ACTIVATIONS[cfg.act_fn]
        self.hook_pre = HookPoint()  # [batch, pos, d_mlp]
        if cfg.act_fn == "solu_ln":
            self.hook_mid = HookPoint()  # [batch, pos, d_mlp], SoLU before its LayerNorm
            self.ln = LayerNorm(cfg, cfg.d_mlp, affine=cfg.normalization_type == "LN")
        self.hook_post = HookPoint()

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        post = self.act_fn(self.hook_pre(x @ self.W_in + self.b_in))
        if hasattr(self, "ln"):
            post = self.ln(self.hook_mid(post))
        return self.hook_post(post) @ self.W_out + self.b_out


def repeat_along_heads(x: Float[Tensor, "batch pos d_model"], n: int) -> Tensor:
    """``[batch, pos, n, d_model]``: a copy of ``x`` per head (a copy, so heads patch apart)."""
    return x.unsqueeze(2).expand(-1, -1, n, -1).clone()


class TransformerBlock(nn.Module):
    """One residual block: ``x + attn(ln1(x))``, then ``+ mlp(ln2(.))`` unless attn-only.

    ``forward`` is the hooked path; :func:`circuits.model.fast_path.block_forward` computes the
    same function without hooks.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.ln1 = make_norm(cfg)
        self.attn = (Attention if cfg.n_key_value_heads is None else GroupedQueryAttention)(cfg)
        if not cfg.attn_only:
            self.ln2 = make_norm(cfg)
            self.mlp = MLP(cfg)
            self.hook_resid_mid = HookPoint()  # [batch, pos, d_model]
        self.hook_attn_in = HookPoint()  # [batch, pos, n_heads, d_model], if use_attn_in
        self.hook_q_input = HookPoint()  # [batch, pos, n_heads, d_model], if use_split_qkv_input
        self.hook_k_input = HookPoint()  # [batch, pos, n_kv_heads, d_model]
        self.hook_v_input = HookPoint()
        self.hook_mlp_in = HookPoint()  # [batch, pos, d_model], if use_hook_mlp_in
        self.hook_resid_pre = HookPoint()  # [batch, pos, d_model]
        self.hook_attn_out = HookPoint()
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(
        self,
        resid_pre: Float[Tensor, "batch pos d_model"],
        shortformer_pos_embed: Float[Tensor, "batch pos d_model"] | None = None,
        attention_mask: Int[Tensor, "batch pos"] | None = None,
    ) -> Float[Tensor, "batch pos d_model"]:
        x = self.hook_resid_pre(resid_pre)
        qkv = self.attention_inputs(x, shortformer_pos_embed)
        x = x + self.hook_attn_out(self.attn(*qkv, attention_mask))
        if self.cfg.attn_only:
            return self.hook_resid_post(x)
        x = self.hook_resid_mid(x)
        mlp_in = self.hook_mlp_in(x.clone()) if self.cfg.use_hook_mlp_in else x
        return self.hook_resid_post(x + self.hook_mlp_out(self.mlp(self.ln2(mlp_in))))

    def attention_inputs(
        self, resid_pre: Tensor, shortformer_pos_embed: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Normalised query, key and value inputs: the residual stream itself, or (TL3's
        ``use_attn_in`` / ``use_split_qkv_input``) one hooked copy per head; shortformer
        positions join queries and keys after ``ln1``, never values."""
        cfg = self.cfg
        q_in = k_in = v_in = resid_pre
        if cfg.use_attn_in:
            q_in = k_in = v_in = self.hook_attn_in(repeat_along_heads(resid_pre, cfg.n_heads))
        if cfg.use_split_qkv_input:
            kv = cfg.n_key_value_heads or cfg.n_heads
            q_in = self.hook_q_input(repeat_along_heads(resid_pre, cfg.n_heads))
            k_in = self.hook_k_input(repeat_along_heads(resid_pre, kv))
            v_in = self.hook_v_input(repeat_along_heads(resid_pre, kv))
        if q_in is k_in is v_in:
            q_in = k_in = v_in = self.ln1(q_in)
        else:
            q_in, k_in, v_in = self.ln1(q_in), self.ln1(k_in), self.ln1(v_in)
        pos = shortformer_pos_embed
        if pos is not None:
            pos = pos.unsqueeze(2) if q_in.ndim == 4 else pos  # the same for every head
            q_in, k_in = q_in + pos, k_in + pos
        return q_in, k_in, v_in
