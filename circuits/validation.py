"""Input checks shared by the model, tasks and analysis: clear errors instead of wrong answers."""

from __future__ import annotations

import torch
from torch import Tensor


def check_tokens(tokens: object, d_vocab: int, n_ctx: int, name: str = "tokens") -> Tensor:
    """Validates token ids and returns them as a ``[batch, pos]`` int64 tensor.

    Raises:
        TypeError: ``tokens`` is not a tensor.
        ValueError: Wrong rank, non-integer dtype, empty, longer than ``n_ctx``, or ids
            outside ``[0, d_vocab)``.
    """
    if not isinstance(tokens, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(tokens).__name__}")
    if tokens.dtype == torch.bool or tokens.is_floating_point() or tokens.is_complex():
        raise ValueError(f"{name} must have an integer dtype, got {tokens.dtype}")
    if tokens.ndim == 1:
        tokens = tokens.unsqueeze(0)
    if tokens.ndim != 2:
        raise ValueError(f"{name} must have shape [batch, pos] or [pos], got {tuple(tokens.shape)}")
    batch, pos = tokens.shape
    if batch == 0 or pos == 0:
        raise ValueError(f"{name} is empty: shape {tuple(tokens.shape)}")
    if pos > n_ctx:
        raise ValueError(f"{name} has length {pos}, longer than n_ctx={n_ctx}")
    lo, hi = int(tokens.min()), int(tokens.max())
    if lo < 0 or hi >= d_vocab:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{name} contains id {bad}, outside [0, d_vocab={d_vocab})")
    return tokens if tokens.dtype == torch.long else tokens.long()


def check_layer_head(layer: int, head: int | None, n_layers: int, n_heads: int) -> None:
    """Raises ValueError naming ``layer`` or ``head`` when out of range."""
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n_layers:
        raise ValueError(f"layer={layer!r} out of range [0, {n_layers})")
    if head is not None and (
        isinstance(head, bool) or not isinstance(head, int) or not 0 <= head < n_heads
    ):
        raise ValueError(f"head={head!r} out of range [0, {n_heads})")


def check_mask(mask: object, shape: tuple[int, ...], name: str = "mask") -> Tensor:
    """Validates a ``[batch, pos]`` position mask against ``shape`` and returns it as bool.

    Raises:
        TypeError: ``mask`` is not a tensor.
        ValueError: Its shape is not ``shape``.
    """
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} shape {tuple(mask.shape)} != tokens {tuple(shape)}")
    return mask.bool()
