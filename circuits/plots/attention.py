"""Attention patterns of one sequence: a grid of heatmaps, layers down, heads across."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from jaxtyping import Float
from plotly.subplots import make_subplots
from torch import Tensor

from circuits.plots._common import SEQUENTIAL, head_label, position_ticks, to_numpy, token_labels


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
        cell_px: Size of each head's panel in pixels.

    Returns:
        A figure with ``n_layers x n_heads`` heatmaps (query down, key across); hovering shows
        the query and key positions, their tokens and the weight.
    """
    p = to_numpy(patterns, "patterns", ndim=4)
    n_layers, n_heads, n_q, n_k = p.shape
    if n_q != n_k:
        raise ValueError(f"patterns must be square over positions, got {n_q}x{n_k}")
    labels = token_labels(tokens, n_q)
    fig = make_subplots(
        rows=n_layers,
        cols=n_heads,
        subplot_titles=[head_label(lay, h) for lay in range(n_layers) for h in range(n_heads)],
        horizontal_spacing=0.04,
        vertical_spacing=min(0.12, 0.5 / n_layers) if n_layers > 1 else 0.0,
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
    ticks = position_ticks(labels, max_ticks=12)
    fig.update_xaxes(**ticks)
    fig.update_xaxes(title_text="key", title_standoff=2, row=n_layers)
    fig.update_yaxes(**ticks, autorange="reversed")
    fig.update_yaxes(title_text="query", title_standoff=2, col=1)
    fig.update_layout(
        title=title,
        coloraxis=dict(colorscale=SEQUENTIAL, cmin=0.0, cmax=1.0, colorbar_title="weight"),
        width=max(420, cell_px * n_heads + 160),
        height=max(320, cell_px * n_layers + 120),
        margin=dict(l=60, r=40, t=80, b=50),
    )
    return fig


def attention_patterns(model: Any, tokens: Tensor, title: str | None = None) -> go.Figure:
    """Runs ``model`` on one sequence ``tokens [pos]`` and plots every head's pattern."""
    from circuits.analysis.head_scores import attention_patterns as patterns_of

    if hasattr(tokens, "ndim") and tokens.ndim == 2:
        if tokens.shape[0] != 1:
            raise ValueError(f"tokens must be one sequence, got a batch of {tokens.shape[0]}")
        tokens = tokens[0]
    patterns = patterns_of(model, tokens)[:, 0]  # [n_layers, n_heads, q, k]
    return attention_grid(patterns, tokens, title=title or "Attention patterns")
