"""Attention patterns of one sequence: a grid of heatmaps, layers down, heads across."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from jaxtyping import Float
from torch import Tensor

from circuits.plots.style import (
    SEQUENTIAL,
    TITLE_PX,
    finish,
    grid_axis_titles,
    grid_size,
    head_label,
    outer_tick_labels,
    position_ticks,
    subplot_grid,
    to_numpy,
    token_labels,
)
from circuits.plots.tokens import token_strings


def attention_grid(
    patterns: Float[Tensor, "n_layers n_heads query_pos key_pos"],
    tokens: Any = None,
    title: str = "Attention patterns",
    cell_px: int = 220,
) -> go.Figure:
    """Heatmaps of every head's attention on one sequence.

    Args:
        patterns: Attention weights ``[n_layers, n_heads, query_pos, key_pos]``, rows summing
            to 1 (e.g. ``circuits.analysis.head_scores.attention_patterns(model, tokens)[:, 0]``).
        tokens: The ``pos`` token ids or strings shown on the axes and on hover (default:
            positions only).
        title: Figure title.
        cell_px: Size of each head's panel in pixels; panels shrink so that the figure
            fits :data:`~circuits.plots.style.MAX_WIDTH`.

    Returns:
        A figure with ``n_layers x n_heads`` heatmaps (query down, key across); hovering shows
        the query and key positions, their tokens and the weight.
    """
    p = to_numpy(patterns, "patterns", ndim=4)
    n_layers, n_heads, n_q, n_k = p.shape
    if n_q != n_k:
        raise ValueError(f"patterns must be square over positions, got {n_q}x{n_k}")
    labels = token_labels(tokens, n_q)
    size = grid_size(
        n_layers,
        n_heads,
        cell_px,
        gap_x=16,
        gap_y=TITLE_PX + 8,
        margin=dict(l=95, r=110, t=80, b=85),
    )
    fig = subplot_grid(
        size, [head_label(lay, h) for lay in range(n_layers) for h in range(n_heads)]
    )
    # Hover text per cell: (query token, key token); causal-masked cells are blank.
    custom = np.empty((n_q, n_k, 2), dtype=object)
    for q in range(n_q):
        for k in range(n_k):
            custom[q, k] = (labels[q], labels[k])
    masked = np.triu(np.ones((n_q, n_k), dtype=bool), k=1)
    for layer in range(n_layers):
        for head in range(n_heads):
            z = np.where(masked, np.nan, p[layer, head])
            fig.add_trace(
                go.Heatmap(
                    z=z,
                    customdata=custom,
                    coloraxis="coloraxis",
                    name=head_label(layer, head),
                    hovertemplate=(
                        "query %{y} (token %{customdata[0]})<br>"
                        "key %{x} (token %{customdata[1]})<br>"
                        "weight %{z:.3f}<extra>%{fullData.name}</extra>"
                    ),
                ),
                row=layer + 1,
                col=head + 1,
            )
    # About one label per 18 px of panel: position labels stay legible as panels shrink.
    ticks = position_ticks(labels, max_ticks=int(size.panel_h // 18))
    fig.update_xaxes(**ticks)
    fig.update_yaxes(**ticks, autorange="reversed")
    outer_tick_labels(fig, size)
    grid_axis_titles(fig, size, "key position:token", "query")
    fig.update_layout(
        coloraxis=dict(colorscale=SEQUENTIAL, cmin=0.0, cmax=1.0, colorbar_title="weight"),
    )
    return finish(fig, title)


def attention_patterns(model: Any, tokens: Tensor, title: str | None = None) -> go.Figure:
    """Runs ``model`` on one sequence ``tokens [pos]`` and plots every head's pattern."""
    from circuits.analysis.head_scores import attention_patterns as patterns_of

    if hasattr(tokens, "ndim") and tokens.ndim == 2:
        if tokens.shape[0] != 1:
            raise ValueError(f"tokens must be one sequence, got a batch of {tokens.shape[0]}")
        tokens = tokens[0]
    patterns = patterns_of(model, tokens)[:, 0]  # [n_layers, n_heads, q, k]
    # A model with a tokenizer labels the axes with token strings (whitespace made visible).
    labels = token_strings(model, tokens) if getattr(model, "tokenizer", None) else tokens
    return attention_grid(patterns, labels, title=title or "Attention patterns")
