"""Per-head heatmaps: head scores (layers x heads) and composition scores (head x head)."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from jaxtyping import Float
from torch import Tensor

from circuits.plots.style import (
    DIVERGING,
    SEQUENTIAL,
    TITLE_PX,
    finish,
    grid_axis_titles,
    grid_size,
    head_labels,
    subplot_grid,
    to_numpy,
)

# Cell values are written in the cells only where a cell is wide enough for "0.00".
TEXT_MIN_PX = 34


def head_scores(
    scores: Float[Tensor, "n_layers n_heads"],
    title: str = "Head scores",
    threshold: float | None = 0.4,
    zmin: float | None = 0.0,
    zmax: float | None = 1.0,
) -> go.Figure:
    """A layers x heads heatmap of any per-head score, values written in the cells.

    Args:
        scores: ``[n_layers, n_heads]`` (e.g. ``previous_token_score(patterns)``).
        title: Figure title (name the score).
        threshold: Outline heads scoring at least this (0.4 is ARENA's threshold for
            previous-token and induction heads); None: no outlines.
        zmin, zmax: Colour range; None lets plotly pick it from the data.
    """
    s = to_numpy(scores, "scores", ndim=2)
    n_layers, n_heads = s.shape
    # One panel whose "cells" are heads: 70 x 60 px each, narrower when there are many heads.
    size = grid_size(
        1,
        1,
        70 * n_heads,
        gap_x=0,
        gap_y=0,
        margin=dict(l=80, r=110, t=110, b=30),
        aspect=60 * n_layers / (70 * n_heads),
        min_panel_px=24 * n_heads,
    )
    cell_w = size.panel_w / n_heads
    fig = go.Figure(
        go.Heatmap(
            z=s,
            x=[f"H{h}" for h in range(n_heads)],
            y=[f"L{lay}" for lay in range(n_layers)],
            colorscale=SEQUENTIAL,
            zmin=zmin,
            zmax=zmax,
            texttemplate="%{z:.2f}" if cell_w >= TEXT_MIN_PX else None,
            hovertemplate="%{y}%{x}: %{z:.3f}<extra></extra>",
            colorbar_title="score",
        )
    )
    if threshold is not None:
        for layer, head in zip(*np.nonzero(s >= threshold), strict=True):
            fig.add_shape(
                type="rect",
                x0=head - 0.5,
                x1=head + 0.5,
                y0=layer - 0.5,
                y1=layer + 0.5,
                line=dict(color="orange", width=3),
            )
        title = f"{title} (outlined: >= {threshold:g})"
    fig.update_yaxes(autorange="reversed", title_text="layer")
    fig.update_xaxes(side="top", title_text="head", title_standoff=2)
    fig.update_layout(
        width=max(320, size.width),
        height=max(240, size.height),
        margin=size.margin,
    )
    # The head names and "head" are in the top margin too, below the title.
    return finish(fig, title)


def composition_scores(
    scores: Any, baseline: float | None = None, title: str = "Composition scores"
) -> go.Figure:
    """Q, K and V composition heatmaps: earlier heads (rows) x later heads (columns).

    Args:
        scores: A :class:`circuits.analysis.composition.CompositionScores` (its ``q, k, v``
            and ``baseline`` are used), or a dict ``{"Q": s, "K": s, "V": s}`` (any subset)
            of ``[n_layers, n_heads, n_layers, n_heads]`` tensors.
        baseline: The random-matrix score; taken from ``scores.baseline`` when present.
            Colours diverge from it (red above chance, blue below) and it is named in the
            title and on the colour bar.
        title: Figure title.

    Only pairs with ``layer1 < layer2`` are shown; the rest are left blank.
    """
    if isinstance(scores, dict):
        modes = dict(scores)
    elif all(hasattr(scores, a) for a in ("q", "k", "v")):
        modes = {"Q": scores.q, "K": scores.k, "V": scores.v}
        if baseline is None:
            baseline = getattr(scores, "baseline", None)
    else:
        raise TypeError(
            "scores must be a CompositionScores or a dict of mode -> [L, H, L, H] tensor, "
            f"got {type(scores).__name__}"
        )
    if not modes or set(modes) - {"Q", "K", "V"}:
        raise ValueError(f"scores must have modes among Q, K, V, got {sorted(modes)}")
    arrays = {m: to_numpy(s, f"scores[{m!r}]", ndim=4) for m, s in modes.items()}
    n_layers, n_heads = next(iter(arrays.values())).shape[:2]
    if n_layers < 2:
        raise ValueError("composition needs at least 2 layers")
    rows = head_labels(n_layers - 1, n_heads)  # earlier heads: layers 0 .. L-2
    cols = head_labels(n_layers, n_heads, first_layer=1)  # later heads: layers 1 .. L-1
    layers = np.arange(n_layers)
    valid = (layers[:, None, None, None] < layers[None, None, :, None]) & np.ones(
        (1, n_heads, 1, n_heads), dtype=bool
    )
    # Head cells of 50 px, smaller as heads are added, so the panels fit MAX_WIDTH side by side.
    size = grid_size(
        1,
        len(arrays),
        max(50 * len(cols), 160),  # wide enough for the axis title under each panel
        gap_x=24,
        gap_y=0,
        margin=dict(l=150, r=150, t=70 + TITLE_PX, b=90),
        aspect=len(rows) / len(cols),
        min_panel_px=8 * len(cols),
    )
    text = size.panel_w / len(cols) >= TEXT_MIN_PX
    fig = subplot_grid(size, [f"{m}-composition" for m in arrays])
    mid = 0.0 if baseline is None else float(baseline)
    for i, (mode, a) in enumerate(arrays.items()):
        if a.shape != (n_layers, n_heads, n_layers, n_heads):
            raise ValueError(f"scores[{mode!r}] has shape {a.shape}, expected [L, H, L, H]")
        z = np.where(valid, a, np.nan).reshape(n_layers * n_heads, n_layers * n_heads)
        z = z[: len(rows), n_heads:]
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=cols,
                y=rows,
                coloraxis="coloraxis",
                texttemplate="%{z:.2f}" if text else None,
                hovertemplate=f"{mode}: %{{y}} -> %{{x}}: %{{z:.3f}}<extra></extra>",
            ),
            row=1,
            col=i + 1,
        )
    fig.update_yaxes(autorange="reversed")
    fig.update_yaxes(showticklabels=False)  # every panel has the same rows
    fig.update_yaxes(showticklabels=True, col=1)
    grid_axis_titles(fig, size, "later head (reads)", "earlier head (writes)")
    top = max(float(np.nanmax(np.where(valid, a, np.nan))) for a in arrays.values())
    span = max(top - mid, mid, 1e-6)
    colorbar: dict[str, Any] = dict(title="score")
    if baseline is not None:
        title = f"{title} (random baseline {baseline:.3f}: white)"
        colorbar.update(
            tickvals=[mid - span, mid, mid + span],
            ticktext=[f"{mid - span:.2f}", f"baseline {mid:.2f}", f"{mid + span:.2f}"],
        )
    fig.update_layout(
        coloraxis=dict(
            colorscale=DIVERGING,
            cmin=mid - span,
            cmax=mid + span,
            colorbar=colorbar,
        ),
    )
    return finish(fig, title)
