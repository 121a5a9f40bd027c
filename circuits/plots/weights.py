"""Weight-based circuits: QK / OV heatmaps and the eigenvalue view of copying."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from jaxtyping import Float
from torch import Tensor

from circuits.plots.style import (
    DIVERGING,
    TITLE_PX,
    finish,
    grid_axis_titles,
    grid_size,
    head_label,
    outer_tick_labels,
    position_ticks,
    row_colorbar,
    subplot_grid,
    to_numpy,
    token_labels,
)


def _masked(z: np.ndarray, causal: bool) -> np.ndarray:
    if not causal:
        return z
    return np.where(np.triu(np.ones(z.shape[-2:], dtype=bool), k=1), np.nan, z)


def circuit_heatmap(
    matrix: Any,  # [rows, cols] tensor or FactoredMatrix
    title: str = "Circuit",
    x_title: str = "key / output token",
    y_title: str = "query / input token",
    labels: Any = None,
    causal: bool = False,
) -> go.Figure:
    """One circuit matrix (e.g. a head's full OV ``W_E W_OV W_U``) as a heatmap centred on 0.

    Args:
        matrix: ``[rows, cols]`` tensor or ``FactoredMatrix`` (its product is formed).
        title, x_title, y_title: Figure and axis titles.
        labels: Token labels of both axes (square matrices only); default: indices.
        causal: Blank the entries above the diagonal (keys after the query), for positional
            QK circuits.
    """
    z = _masked(to_numpy(matrix, "matrix", ndim=2), causal)
    span = _span(z)
    fig = go.Figure(
        go.Heatmap(
            z=z,
            colorscale=DIVERGING,
            zmid=0.0,
            zmin=-span,
            zmax=span,
            hovertemplate=f"{y_title} %{{y}}<br>{x_title} %{{x}}<br>%{{z:.3f}}<extra></extra>",
        )
    )
    if labels is not None:
        if z.shape[0] != z.shape[1]:
            raise ValueError("labels need a square matrix")
        ticks = position_ticks(token_labels(labels, z.shape[0], "labels"))
        fig.update_xaxes(**ticks)
        fig.update_yaxes(**ticks)
    fig.update_yaxes(autorange="reversed", title_text=y_title, scaleanchor="x")
    fig.update_xaxes(title_text=x_title)
    fig.update_layout(width=560, height=520)
    return finish(fig, title)


def circuit_grid(
    circuits: Any,  # [n_layers, n_heads, rows, cols] tensor or FactoredMatrix
    title: str = "Circuits per head",
    x_title: str = "key / output",
    y_title: str = "query / input",
    causal: bool = False,
    cell_px: int = 240,
    scale: str = "shared",
) -> go.Figure:
    """Every head's circuit matrix in a layers x heads grid, colours centred on 0.

    Args:
        circuits: ``[n_layers, n_heads, rows, cols]`` tensor or ``FactoredMatrix`` (e.g.
            ``circuits.analysis.circuits.full_ov_circuit(model)``).
        title, x_title, y_title: Figure title and axis titles (also shown on hover).
        causal: Blank entries above the diagonal (positional QK: keys after the query).
        cell_px: Size of each head's panel in pixels; panels shrink so that the figure
            fits :data:`~circuits.plots.style.MAX_WIDTH`.
        scale: ``"shared"``: one colour scale for every head, so heads compare by magnitude;
            ``"layer"``: one per layer (a colour bar beside each row), for circuits whose
            magnitude differs between layers (QK circuits: a later layer's would look blank).
    """
    if scale not in ("shared", "layer"):
        raise ValueError(f"scale={scale!r} must be 'shared' or 'layer'")
    z = _masked(to_numpy(circuits, "circuits", ndim=4), causal)
    n_layers, n_heads, n_rows, n_cols = z.shape
    size = grid_size(
        n_layers,
        n_heads,
        cell_px,
        gap_x=16,
        gap_y=TITLE_PX + 8,
        margin=dict(l=80, r=120, t=80, b=70),
        aspect=n_rows / n_cols,
    )
    fig = subplot_grid(
        size, [head_label(lay, h) for lay in range(n_layers) for h in range(n_heads)]
    )
    with np.errstate(all="ignore"):
        spans = [_span(z[layer]) for layer in range(n_layers)]
    shared = max(spans)
    for layer in range(n_layers):
        axis = "coloraxis" if scale == "shared" or layer == 0 else f"coloraxis{layer + 1}"
        for head in range(n_heads):
            fig.add_trace(
                go.Heatmap(
                    z=z[layer, head],
                    coloraxis=axis,
                    name=head_label(layer, head),
                    hovertemplate=(
                        f"{y_title} %{{y}}<br>{x_title} %{{x}}<br>%{{z:.3f}}"
                        "<extra>%{fullData.name}</extra>"
                    ),
                ),
                row=layer + 1,
                col=head + 1,
            )
        if scale == "layer":
            span = spans[layer]
            fig.update_layout(
                {
                    axis: dict(
                        colorscale=DIVERGING,
                        cmin=-span,
                        cmax=span,
                        cmid=0.0,
                        colorbar=row_colorbar(size, layer, f"layer {layer}"),
                    )
                }
            )
    if scale == "shared":
        fig.update_layout(coloraxis=dict(colorscale=DIVERGING, cmin=-shared, cmax=shared, cmid=0.0))
    fig.update_yaxes(autorange="reversed")
    outer_tick_labels(fig, size)
    grid_axis_titles(fig, size, x_title, y_title)
    per_layer = " (colour scale per layer)" if scale == "layer" and n_layers > 1 else ""
    return finish(fig, title + per_layer)


def _span(z: np.ndarray) -> float:
    """Largest absolute finite entry (1.0 when there is none), for a range centred on 0."""
    finite = np.abs(z[np.isfinite(z)])
    span = float(finite.max()) if finite.size else 0.0
    return span if span > 0 else 1.0


def _eigenvalues(circuits: Any) -> np.ndarray:
    import torch

    if hasattr(circuits, "eigenvalues") and hasattr(circuits, "AB"):  # FactoredMatrix
        eig = circuits.eigenvalues  # from the small d_head x d_head product B A
    else:
        eig = torch.linalg.eigvals(torch.as_tensor(to_numpy(circuits, "circuits")))
    return eig.detach().cpu().numpy()


def eigenvalues(
    circuits: Any,
    copying: Float[Tensor, "n_layers n_heads"] | None = None,
    title: str = "Eigenvalues of the OV circuits",
) -> go.Figure:
    """Eigenvalues of each head's circuit in the complex plane (the framework paper's view).

    Positive real eigenvalues mean the head *copies*: a token it attends to raises its own
    logit. Each head's legend entry names its copying score ``sum(eig) / sum(|eig|)``.

    Args:
        circuits: ``[n_layers, n_heads, n, n]`` ``FactoredMatrix`` or tensor, e.g.
            ``full_ov_circuit(model)``.
        copying: ``[n_layers, n_heads]`` copying scores for the legend; computed with
            :func:`circuits.analysis.circuits.copying_score` when None and ``circuits`` is a
            ``FactoredMatrix``.
    """
    eig = _eigenvalues(circuits)
    if eig.ndim != 3:
        raise ValueError(f"circuits must be [n_layers, n_heads, n, n], got {eig.shape[:-1]} heads")
    if copying is None and hasattr(circuits, "AB"):
        from circuits.analysis.circuits import copying_score

        copying = copying_score(circuits)
    scores = None if copying is None else to_numpy(copying, "copying", ndim=2)
    fig = go.Figure()
    n_layers, n_heads = eig.shape[:2]
    for layer in range(n_layers):
        for head in range(n_heads):
            e = eig[layer, head]
            # Eigenvalues of a low-rank product: most are ~0; keep the informative ones.
            keep = np.abs(e) > 1e-6 * max(float(np.abs(e).max()), 1e-12)
            name = head_label(layer, head)
            if scores is not None:
                name += f" (copying {scores[layer, head]:+.2f})"
            fig.add_trace(
                go.Scatter(
                    x=e.real[keep],
                    y=e.imag[keep],
                    mode="markers",
                    name=name,
                    hovertemplate="Re %{x:.3f}<br>Im %{y:.3f}<extra>" + name + "</extra>",
                )
            )
    fig.add_hline(y=0, line=dict(color="gray", width=1))
    fig.add_vline(x=0, line=dict(color="gray", width=1))
    fig.update_xaxes(title_text="real part (positive: copying)")
    fig.update_yaxes(title_text="imaginary part", scaleanchor="x")
    fig.update_layout(width=720, height=560)
    return finish(fig, title)
