"""An exact key-value cache: run only the new positions, attending to the stored keys and values.

:class:`HookedTransformerKeyValueCache` has TransformerLens 3's shape (``entries``, one
:class:`HookedTransformerKeyValueCacheEntry` per layer with ``past_keys``/``past_values``
``[batch, pos_so_far, n_kv_heads, d_head]``, ``previous_attention_mask [batch, pos_so_far]``,
``frozen``, ``freeze()``, ``append()``...), so code written for TL3 handles it unchanged.

:func:`forward` is the cached forward pass. It computes what the model's hooked path computes for
those positions, through the same modules and hook points, so the result equals an uncached run
on the whole sequence up to float rounding (a matmul over fewer rows may round differently):
positions continue from the cache for learned ("standard" and "shortformer") and rotary
embeddings, and padding in the stored mask shifts them as in the uncached run. (TransformerLens
3.5.1's own cached path adds learned positions without that shift and fails on shortformer
models; this one is tested against our uncached forward instead.)

Memory: two ``[batch, pos_so_far, n_kv_heads, d_head]`` tensors per layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuits.model.components import offset_position_ids, project
from circuits.validation import check_tokens


@dataclass
class HookedTransformerKeyValueCacheEntry:
    """One layer's stored keys and values ``[batch, pos_so_far, n_kv_heads, d_head]``."""

    past_keys: Float[Tensor, "batch pos_so_far n_kv_heads d_head"]
    past_values: Float[Tensor, "batch pos_so_far n_kv_heads d_head"]
    frozen: bool = False

    @classmethod
    def init_cache_entry(
        cls,
        cfg: Any,
        device: torch.device | str | None = None,
        batch_size: int = 1,
        dtype: torch.dtype | None = None,
    ) -> HookedTransformerKeyValueCacheEntry:
        """An empty entry for ``batch_size`` sequences of a model with config ``cfg``."""
        heads = cfg.n_key_value_heads if cfg.n_key_value_heads is not None else cfg.n_heads
        shape = (batch_size, 0, heads, cfg.d_head)
        dtype = dtype or cfg.dtype
        return cls(
            torch.empty(shape, device=device, dtype=dtype),
            torch.empty(shape, device=device, dtype=dtype),
        )

    def append(
        self,
        new_keys: Float[Tensor, "batch new n_kv_heads d_head"],
        new_values: Float[Tensor, "batch new n_kv_heads d_head"],
    ) -> tuple[Tensor, Tensor]:
        """Keys and values so far plus the new ones; stored unless the entry is frozen."""
        keys = torch.cat([self.past_keys, new_keys], dim=1)
        values = torch.cat([self.past_values, new_values], dim=1)
        if not self.frozen:
            self.past_keys, self.past_values = keys, values
        return keys, values


@dataclass
class HookedTransformerKeyValueCache:
    """Per-layer key-value entries and the attention mask of the positions they hold."""

    entries: list[HookedTransformerKeyValueCacheEntry]
    previous_attention_mask: Int[Tensor, "batch pos_so_far"] = field(
        default_factory=lambda: torch.empty(1, 0, dtype=torch.int)
    )
    frozen: bool = False

    @classmethod
    def init_cache(
        cls,
        cfg: Any,
        device: torch.device | str | None = None,
        batch_size: int = 1,
        dtype: torch.dtype | None = None,
    ) -> HookedTransformerKeyValueCache:
        """An empty cache for ``batch_size`` sequences (TL3's signature; ``dtype`` optional)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        device = device if device is not None else getattr(cfg, "device", None)
        return cls(
            [
                HookedTransformerKeyValueCacheEntry.init_cache_entry(cfg, device, batch_size, dtype)
                for _ in range(cfg.n_layers)
            ],
            torch.empty((batch_size, 0), device=device, dtype=torch.int),
        )

    def freeze(self) -> None:
        """Stop storing: later forwards read the cache but leave it as it is."""
        self.frozen = True
        for entry in self.entries:
            entry.frozen = True

    def unfreeze(self) -> None:
        self.frozen = False
        for entry in self.entries:
            entry.frozen = False

    def append_attention_mask(
        self, attention_mask: Int[Tensor, "batch new"]
    ) -> Int[Tensor, "batch pos_so_far_plus_new"]:
        """The mask so far plus ``attention_mask``; stored unless frozen."""
        attention_mask = attention_mask.to(self.previous_attention_mask.device)
        full = torch.cat([self.previous_attention_mask, attention_mask.int()], dim=-1)
        if not self.frozen:
            self.previous_attention_mask = full
        return full

    @property
    def pos_so_far(self) -> int:
        return int(self.entries[0].past_keys.shape[1]) if self.entries else 0

    def __getitem__(self, idx: int) -> HookedTransformerKeyValueCacheEntry:
        return self.entries[idx]

    def __len__(self) -> int:
        return len(self.entries)


def check_cache(model: Any, cache: Any, batch: int, new: int) -> int:
    """Validates ``cache`` for ``batch`` sequences of ``new`` more positions; the offset."""
    cfg = model.cfg
    if not isinstance(cache, HookedTransformerKeyValueCache):
        raise TypeError(
            "past_kv_cache must be a HookedTransformerKeyValueCache "
            f"(HookedTransformerKeyValueCache.init_cache(model.cfg, ...)), got "
            f"{type(cache).__name__}"
        )
    if len(cache.entries) != cfg.n_layers:
        raise ValueError(f"the cache has {len(cache.entries)} layers, the model {cfg.n_layers}")
    heads = cfg.n_key_value_heads or cfg.n_heads
    offset = cache.pos_so_far
    device = model.W_E.device
    for entry in cache.entries:
        if entry.past_keys.device != device or entry.past_values.device != device:
            raise ValueError(
                f"the cache is on {entry.past_keys.device}, the model on {device}: make it with "
                "init_cache(model.cfg, model.cfg.device, batch)"
            )
        shape = tuple(entry.past_keys.shape)
        if shape != (batch, offset, heads, cfg.d_head) or shape != tuple(entry.past_values.shape):
            raise ValueError(
                f"cache entry of shape {shape} does not fit batch={batch}, pos_so_far={offset}, "
                f"n_kv_heads={heads}, d_head={cfg.d_head}"
            )
    if tuple(cache.previous_attention_mask.shape) != (batch, offset):
        raise ValueError(
            f"the cache's attention mask is {tuple(cache.previous_attention_mask.shape)}, its "
            f"keys hold batch={batch}, pos_so_far={offset}"
        )
    if offset + new > cfg.n_ctx:
        raise ValueError(f"{offset} cached + {new} new positions exceed n_ctx={cfg.n_ctx}")
    return offset


def forward(
    model: Any,
    tokens: Int[Tensor, "batch new"] | None,
    cache: HookedTransformerKeyValueCache,
    *,
    embeds: Float[Tensor, "batch new d_model"] | None = None,
    attention_mask: Int[Tensor, "batch new"] | None = None,
    return_type: str | None = "logits",
) -> Any:
    """The model on ``new`` positions after the ``pos_so_far`` in ``cache`` (which grows).

    Args:
        model: A :class:`circuits.HookedTransformer`.
        tokens: The new ids ``[batch, new]`` (or None with ``embeds``).
        cache: From :meth:`HookedTransformerKeyValueCache.init_cache`; updated unless frozen.
        embeds: Token embeddings ``[batch, new, d_model]`` instead of ids (positions are added
            here, as for ids).
        attention_mask: ``[batch, new]``, 0 for padding; default all ones.
        return_type: "logits" ``[batch, new, d_vocab_out]``, "loss" (next-token, over the new
            ids), "both" or None.
    """
    cfg = model.cfg
    if return_type not in ("logits", "loss", "both", None):
        raise ValueError(f"unknown return_type {return_type!r}")
    if getattr(cfg, "attention_dir", "causal") != "causal":
        raise ValueError(
            "a key-value cache needs causal attention: with attention_dir='bidirectional' "
            "earlier positions see later ones, so their keys and values change"
        )
    if embeds is None:
        tokens = check_tokens(tokens, cfg.d_vocab, cfg.n_ctx).to(model.W_E.device)
        batch, new = tokens.shape
    else:
        if not isinstance(embeds, Tensor) or embeds.ndim != 3 or embeds.shape[-1] != cfg.d_model:
            raise ValueError(f"embeds must be [batch, pos, d_model={cfg.d_model}]")
        batch, new = embeds.shape[:2]
    offset = check_cache(model, cache, batch, new)
    device = model.W_E.device
    if attention_mask is None:
        attention_mask = torch.ones(batch, new, dtype=torch.int, device=device)
    elif tuple(attention_mask.shape) != (batch, new) or attention_mask.is_floating_point():
        raise ValueError(f"attention_mask must be an integer tensor [batch={batch}, new={new}]")
    full_mask = cache.append_attention_mask(attention_mask).to(device)
    # (A meta tensor has no values: shapes only, computed as if unpadded.)
    padded = full_mask.device.type != "meta" and not bool(full_mask.all())
    if padded:
        ids = offset_position_ids(full_mask)[:, offset:]  # [batch, new]
    else:
        ids = torch.arange(offset, offset + new, device=device).expand(batch, new)

    if embeds is None:
        assert tokens is not None
        if cfg.use_hook_tokens:
            tokens = model.hook_tokens(tokens)
        residual = model.hook_embed(model.embed(tokens))
    else:
        residual = embeds.to(device)
    shortformer = None
    if cfg.positional_embedding_type != "rotary":
        pos = model.pos_embed.W_pos[ids]
        if padded:
            pos = torch.where(full_mask[:, offset:].bool().unsqueeze(-1), pos, 0.0)
        pos = model.hook_pos_embed(pos)
        if cfg.positional_embedding_type == "shortformer":
            shortformer = pos
        else:
            residual = residual + pos
    for block, entry in zip(model.blocks, cache.entries, strict=True):
        residual = _block(
            block, residual, entry, full_mask if padded else None, offset, shortformer
        )
    if cfg.normalization_type is not None:
        residual = model.ln_final(residual)
    if return_type is None:
        return None
    logits = model.unembed(residual)
    if return_type == "logits":
        return logits
    if tokens is None:
        raise ValueError("the loss needs token ids, not embeddings")
    loss = model.loss(logits, tokens)
    return loss if return_type == "loss" else (logits, loss)


def _block(
    block: Any,
    resid_pre: Tensor,
    entry: HookedTransformerKeyValueCacheEntry,
    full_mask: Tensor | None,
    offset: int,
    shortformer: Tensor | None,
) -> Tensor:
    """``TransformerBlock.forward`` for the new positions (same hooks, same order)."""
    x = block.hook_resid_pre(resid_pre)
    q_in, k_in, v_in = block.attention_inputs(x, shortformer)
    x = x + block.hook_attn_out(_attention(block.attn, q_in, k_in, v_in, entry, full_mask, offset))
    if block.cfg.attn_only:
        return block.hook_resid_post(x)
    x = block.hook_resid_mid(x)
    mlp_in = block.hook_mlp_in(x.clone()) if block.cfg.use_hook_mlp_in else x
    return block.hook_resid_post(x + block.hook_mlp_out(block.mlp(block.ln2(mlp_in))))


def _attention(
    attn: Any,
    query_input: Tensor,
    key_input: Tensor,
    value_input: Tensor,
    entry: HookedTransformerKeyValueCacheEntry,
    full_mask: Tensor | None,
    offset: int,
) -> Tensor:
    """``Attention.forward`` for new queries against cached plus new keys and values."""
    cfg = attn.cfg
    W_K, b_K, W_V, b_V = attn.kv_weights()
    q = attn.hook_q(project(query_input, attn.W_Q, attn.b_Q))
    k = attn.hook_k(project(key_input, W_K, b_K))
    v = attn.hook_v(project(value_input, W_V, b_V))
    k, v = entry.append(k, v)  # keys are cached before rotation, as in TL3
    new, total = q.shape[1], k.shape[1]
    if cfg.positional_embedding_type == "rotary":
        # The model's own rotation, on the queries placed at their positions (elementwise, so
        # the numbers are those of the full run).
        q_at = q.new_zeros(q.shape[0], total, *q.shape[2:])
        q_at[:, offset:] = q
        q = attn.hook_rot_q(attn.rotary(q_at, full_mask)[:, offset:])
        k = attn.hook_rot_k(attn.rotary(k, full_mask))
    k, v = attn._repeat_kv(k), attn._repeat_kv(v)
    scores = einops.einsum(q, k, "b q h e, b k h e -> b h q k")
    query_pos = torch.arange(offset, offset + new, device=q.device)[:, None]
    allowed = torch.arange(total, device=q.device)[None, :] <= query_pos  # [new, total]
    if full_mask is not None:
        allowed = allowed & full_mask.bool()[:, None, None, :]
    scores = scores.div_(cfg.attn_scale).masked_fill_(~allowed, float("-inf"))
    pattern = attn.hook_attn_scores(scores).softmax(dim=-1)
    if full_mask is not None:
        pattern = torch.where(pattern.isnan(), 0.0, pattern)
    pattern = attn.hook_pattern(pattern)
    z = attn.hook_z(einops.einsum(pattern, v, "b h q k, b k h e -> b q h e"))
    if cfg.use_attn_result:
        result = attn.hook_result(einops.einsum(z, attn.W_O, "b p h e, h e d -> b p h d"))
        return result.sum(dim=-2) + attn.b_O
    return einops.einsum(z, attn.W_O, "b p h e, h e d -> b p d") + attn.b_O
