"""Shared helpers for the figures: tensors to lists, head labels, grids, checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# One colour scale per meaning, so every figure reads the same way.
SEQUENTIAL = "Blues"  # attention weights, probabilities, scores in [0, 1]
DIVERGING = "RdBu_r"  # signed quantities, centred on zero (or a baseline); red is positive


def to_numpy(x: Any, name: str, ndim: int | None = None) -> np.ndarray:
    """A detached float numpy array from a tensor, FactoredMatrix, array or nested list."""
    if hasattr(x, "AB") and hasattr(x, "A") and hasattr(x, "B"):  # FactoredMatrix
        x = x.AB
    if hasattr(x, "detach"):
        x = x.detach().cpu().float().numpy()
    try:
        arr = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"{name} must be a tensor or array of numbers, got {type(x).__name__}"
        ) from e
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(arr.shape)}")
    return arr


def head_label(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


def head_labels(n_layers: int, n_heads: int, first_layer: int = 0) -> list[str]:
    return [head_label(lay, h) for lay in range(first_layer, n_layers) for h in range(n_heads)]


def token_labels(tokens: Any, n: int, name: str = "tokens") -> list[str]:
    """``n`` display labels for a sequence of token ids or strings (or positions if None)."""
    if tokens is None:
        return [str(i) for i in range(n)]
    if hasattr(tokens, "tolist"):
        tokens = tokens.tolist()
    if isinstance(tokens, Sequence) and tokens and isinstance(tokens[0], list):
        if len(tokens) != 1:
            raise ValueError(f"{name} must be one sequence, got a batch of {len(tokens)}")
        tokens = tokens[0]
    if not isinstance(tokens, Sequence) or isinstance(tokens, str):
        raise TypeError(f"{name} must be a sequence of token ids or strings")
    if len(tokens) != n:
        raise ValueError(f"{name} has {len(tokens)} entries but the data has {n} positions")
    return [str(t) for t in tokens]


def position_ticks(labels: list[str], max_ticks: int = 24) -> dict[str, Any]:
    """Axis settings that label positions ``i`` as ``i:token``, thinned to ``max_ticks``."""
    step = max(1, -(-len(labels) // max_ticks))
    idx = list(range(0, len(labels), step))
    return dict(tickmode="array", tickvals=idx, ticktext=[f"{i}:{labels[i]}" for i in idx])
