"""Causal attention for the stacked trainer, on Q, K and V laid out as the projections write them.

:func:`attention` takes ``q, k, v`` as ``[G, batch * pos, n_heads * d_head]`` (heads in the last
dimension, the layout a ``bmm`` with ``[G, d_model, n_heads * d_head]`` weights produces) and
returns ``z`` in that layout, ready for ``W_O``. Four ways, one function:

- CPU, float32, one thread, heads of width 16, 32, 48 or 64, and the compiled kernel built
  (:mod:`circuits.training.native_attention`): that kernel, forward and backward on the same
  strided views, writing the patterns too when they are wanted without gradients (evaluation).
- otherwise CPU, one thread, no patterns wanted: :class:`_FlashCPU`, the fused CPU kernel of
  ``scaled_dot_product_attention`` called forward and backward on strided views of ``q, k, v``.
  Its gradients come back as ``[G, batch * pos, n_heads * d_head]`` without a copy, where
  autograd through ``scaled_dot_product_attention`` on a packed QKV tensor stacked the three
  gradients and copied them back into the packed layout (a quarter of a training step).
- other devices, no patterns wanted: ``scaled_dot_product_attention`` on the same views.
- patterns wanted, or several CPU threads: the matmuls spelled out (their backward parallelises
  better than the fused kernel's on short sequences), appending each pattern.

All four compute the same function; ``tests/training/test_stacked_attention.py`` checks them
against each other and the custom backward by ``gradcheck``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from circuits.training import native_attention
from circuits.training.native_attention import NativeAttention, TableAttention, forward_tables
from circuits.training.native_attention import forward as native_forward

__all__ = ["attention", "attention_from_tables"]

_FLASH: Any
_FLASH_BACKWARD: Any
try:
    _FLASH = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    _FLASH_BACKWARD = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward
except (AttributeError, RuntimeError):  # an older torch: the other paths below
    _FLASH = _FLASH_BACKWARD = None


def _native(q: Tensor, d_head: int) -> Any:
    """The compiled kernel if it applies here (CPU, float32, one thread, a supported head
    width, and it built), else None."""
    if (
        q.device.type != "cpu"
        or q.dtype != torch.float32
        or torch.get_num_threads() != 1
        or not native_attention.supports(d_head)
    ):
        return None
    return native_attention.load()


def _heads(x: Tensor, batch: int, n_heads: int) -> Tensor:
    """``[G, batch * pos, n * e]`` -> a view ``[(G batch), n, pos, e]`` (strided, no copy)."""
    G, bp, _ = x.shape
    return x.view(G * batch, bp // batch, n_heads, -1).transpose(1, 2)


def _merge(z: Tensor, G: int) -> Tensor:
    """``[(G batch), n, pos, e]`` -> ``[G, batch * pos, n * e]`` (a view when ``z``'s memory is
    ``[(G batch), pos, n, e]``, as the fused kernel writes it)."""
    B, n, p, e = z.shape
    return z.transpose(1, 2).reshape(G, (B // G) * p, n * e)


class _FlashCPU(torch.autograd.Function):
    """The fused CPU kernel, forward and backward, on views of ``q, k, v`` (see module doc)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, q: Tensor, k: Tensor, v: Tensor, batch: int, n_heads: int, scale: float
    ) -> Tensor:
        views = [_heads(x, batch, n_heads) for x in (q, k, v)]
        out, lse = _FLASH(*views, 0.0, True, scale=scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.shape = (batch, n_heads, scale)
        return _merge(out, q.shape[0])

    @staticmethod
    def backward(ctx: Any, dz: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        q, k, v, out, lse = ctx.saved_tensors
        batch, n_heads, scale = ctx.shape
        views = [_heads(x, batch, n_heads) for x in (dz.contiguous(), q, k, v)]
        grads = _FLASH_BACKWARD(*views, out, lse, 0.0, True, scale=scale)
        return (*(_merge(g, q.shape[0]) for g in grads), None, None, None)


def attention(
    q: Float[Tensor, "G bp ne"],
    k: Float[Tensor, "G bp ne"],
    v: Float[Tensor, "G bp ne"],
    batch: int,
    n_heads: int,
    scale: float,
    patterns: list[Tensor] | None = None,
) -> Float[Tensor, "G bp ne"]:
    """Causal attention of ``G`` models' ``batch`` sequences each, ``z [G, batch * pos, n * e]``.

    Args:
        q, k, v: ``[G, batch * pos, n_heads * d_head]``, sequence-major within each instance.
        scale: What the scores are multiplied by (``1 / attn_scale``).
        patterns: If a list, the pattern ``[G, batch, n_heads, query, key]`` is appended
            (memory: ``G batch n_heads pos^2`` floats; the other paths keep none).
    """
    G, bp, ne = q.shape
    lib = _native(q, ne // n_heads)
    if lib is not None and patterns is None:
        z: Tensor = NativeAttention.apply(lib, q, k, v, batch, n_heads, scale)
        return z
    if lib is not None and patterns is not None and not torch.is_grad_enabled():
        p = bp // batch
        pattern = torch.empty(G, batch, n_heads, p, p, dtype=q.dtype)
        z, _ = native_forward(lib, q, k, v, batch, n_heads, scale, pattern)
        patterns.append(pattern)
        return z
    if patterns is None and q.device.type != "cpu":
        q4, k4, v4 = (_heads(x, batch, n_heads) for x in (q, k, v))
        return _merge(F.scaled_dot_product_attention(q4, k4, v4, is_causal=True, scale=scale), G)
    if patterns is None and torch.get_num_threads() == 1 and _FLASH is not None:
        z = _FlashCPU.apply(q, k, v, batch, n_heads, scale)
        return z
    p = bp // batch
    q_, k_, v_ = (
        _heads(x, batch, n_heads).reshape(-1, p, x.shape[-1] // n_heads) for x in (q, k, v)
    )
    causal = torch.full((p, p), float("-inf"), device=q.device, dtype=q.dtype).triu(1)
    pattern = torch.baddbmm(causal, q_, k_.transpose(1, 2), alpha=scale).softmax(dim=-1)
    if patterns is not None:
        patterns.append(pattern.view(G, batch, n_heads, p, p))
    z = torch.bmm(pattern, v_).view(G * batch, n_heads, p, -1)
    return _merge(z, G)


def attention_from_tables(
    by_token: Float[Tensor, "G_vocab three_ne"],
    by_pos: Float[Tensor, "G pos three_ne"],
    tokens: Int[Tensor, "G batch pos"],
    batch: int,
    n_heads: int,
    scale: float,
    patterns: list[Tensor] | None = None,
) -> Tensor | None:
    """A first layer's causal attention from its tables, ``z [G, batch * pos, n * e]``, or None
    where the compiled kernel does not apply (the caller looks the rows up and calls
    :func:`attention`).

    Args:
        by_token: Each instance's token embedding times ``[W_Q | W_K | W_V]``, ``[G * d_vocab,
            3 * n * e]`` (instance ``g``'s rows from ``g * d_vocab``).
        by_pos: The position embedding times the same, plus the biases, ``[G, pos, 3 * n * e]``.
        tokens: The ids (not offset by instance).
        patterns: As for :func:`attention` (only without gradients here).

    Memory: none of the ``[G, batch * pos, 3 * n * e]`` lookup; gradients go straight into the
    tables' (:class:`~circuits.training.native_attention.TableAttention`).
    """
    G, _, p = tokens.shape
    lib = _native(by_token, by_token.shape[-1] // (3 * n_heads))
    if lib is None or (patterns is not None and torch.is_grad_enabled()):
        return None
    if patterns is None:
        z: Tensor = TableAttention.apply(lib, by_token, by_pos, tokens, batch, n_heads, scale)
        return z
    pattern = torch.empty(G, batch, n_heads, p, p, dtype=by_token.dtype)
    z, _ = forward_tables(lib, by_token, by_pos, tokens, batch, n_heads, scale, pattern)
    patterns.append(pattern)
    return z
