"""Weight-based circuits: QK / OV heatmaps and the eigenvalue view of copying."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from jaxtyping import Float
from plotly.subplots import make_subplots
from torch import Tensor

from circuits.plots._common import DIVERGING, head_label, position_ticks, to_numpy, token_labels


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
    span = float(np.nanmax(np.abs(z))) or 1.0
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
    fig.update_layout(title=title, width=560, height=520)
    return fig


def circuit_grid(
    circuits: Any,  # [n_layers, n_heads, rows, cols] tensor or FactoredMatrix
    title: str = "Circuits per head",
    x_title: str = "key / output",
    y_title: str = "query / input",
    causal: bool = False,
    cell_px: int = 240,
) -> go.Figure:
    """Every head's circuit matrix in a layers x heads grid, one shared colour scale at 0.

    Args:
        circuits: ``[n_layers, n_heads, rows, cols]`` tensor or ``FactoredMatrix`` (e.g.
            ``circuits.analysis.circuits.full_ov_circuit(model)``).
        causal: Blank entries above the diagonal (positional QK: keys after the query).
    """
    z = _masked(to_numpy(circuits, "circuits", ndim=4), causal)
    n_layers, n_heads = z.shape[:2]
    span = float(np.nanmax(np.abs(z))) or 1.0
    fig = make_subplots(
        rows=n_layers,
        cols=n_heads,
        subplot_titles=[head_label(lay, h) for lay in range(n_layers) for h in range(n_heads)],
        horizontal_spacing=0.05,
        vertical_spacing=0.1 if n_layers > 1 else 0.0,
    )
    for layer in range(n_layers):
        for head in range(n_heads):
            fig.add_trace(
                go.Heatmap(
                    z=z[layer, head],
                    coloraxis="coloraxis",
                    name=head_label(layer, head),
                    hovertemplate=(
                        f"{y_title} %{{y}}<br>{x_title} %{{x}}<br>%{{z:.3f}}"
                        "<extra>%{fullData.name}</extra>"
                    ),
                ),
                row=layer + 1,
                col=head + 1,
            )
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(
        title=title,
        coloraxis=dict(colorscale=DIVERGING, cmin=-span, cmax=span, cmid=0.0),
        width=max(420, cell_px * n_heads + 160),
        height=max(320, cell_px * n_layers + 120),
    )
    return fig


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
    fig.update_layout(title=title, width=720, height=560)
    return fig
