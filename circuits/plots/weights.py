"""Weight-based circuits: QK / OV heatmaps and the eigenvalue view of copying."""

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


KINDS = ("signed", "probability")


def _colour_scale(z: np.ndarray, kind: str, name: str) -> dict[str, Any]:
    """Colour settings for ``kind``: diverging centred on 0, or sequential over [0, 1]."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} must be one of {KINDS}")
    if kind == "probability":
        finite = z[np.isfinite(z)]
        if finite.size and (finite.min() < -1e-6 or finite.max() > 1 + 1e-6):
            raise ValueError(
                f"{name} has values in [{finite.min():.3g}, {finite.max():.3g}], outside [0, 1]: "
                "not probabilities (use kind='signed')"
            )
        return dict(colorscale=SEQUENTIAL, cmin=0.0, cmax=1.0)
    span = _span(z)
    return dict(colorscale=DIVERGING, cmin=-span, cmax=span, cmid=0.0)


def circuit_heatmap(
    matrix: Any,  # [rows, cols] tensor or FactoredMatrix
    title: str = "Circuit",
    x_title: str = "key / output token",
    y_title: str = "query / input token",
    labels: Any = None,
    causal: bool = False,
    value: str = "value",
    kind: str = "signed",
) -> go.Figure:
    """One circuit matrix (e.g. a head's full OV ``W_E W_OV W_U``) as a heatmap.

    Args:
        matrix: ``[rows, cols]`` tensor or ``FactoredMatrix`` (its product is formed).
        title, x_title, y_title: Figure and axis titles.
        labels: Token labels of both axes (square matrices only); default: indices.
        causal: Blank the entries above the diagonal (keys after the query), for positional
            QK circuits.
        value: What a cell is, with its unit: the colour bar's title and the hover label
            (e.g. "logit contribution", "attention score (pre-softmax)", "attention weight").
        kind: "signed" (diverging colours centred on 0, red positive) or "probability"
            (sequential colours over [0, 1]; values outside it are refused).
    """
    z = _masked(to_numpy(matrix, "matrix", ndim=2), causal)
    colour = _colour_scale(z, kind, "matrix")
    fig = go.Figure(
        go.Heatmap(
            z=z,
            colorscale=colour["colorscale"],
            zmid=colour.get("cmid"),
            zmin=colour["cmin"],
            zmax=colour["cmax"],
            colorbar=dict(title=dict(text=_wrap(value), side="top")),
            hovertemplate=(
                f"{y_title} %{{y}}<br>{x_title} %{{x}}<br>{value} %{{z:.3f}}<extra></extra>"
            ),
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
    fig.update_layout(width=580, height=540, margin=dict(l=80, r=130, t=70, b=70))
    return finish(fig, title)


def _wrap(text: str, width: int = 12) -> str:
    """``text`` broken into lines of about ``width`` characters (``<br>``), for colour bars."""
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "<br>".join(lines)


SCALES = ("shared", "layer", "head")


def circuit_grid(
    circuits: Any,  # [n_layers, n_heads, rows, cols] tensor or FactoredMatrix
    title: str = "Circuits per head",
    x_title: str = "key / output",
    y_title: str = "query / input",
    causal: bool = False,
    cell_px: int = 240,
    scale: str = "shared",
    value: str = "value",
    kind: str = "signed",
) -> go.Figure:
    """Every head's circuit matrix in a layers x heads grid.

    Args:
        circuits: ``[n_layers, n_heads, rows, cols]`` tensor or ``FactoredMatrix`` (e.g.
            ``circuits.analysis.circuits.full_ov_circuit(model)``).
        title, x_title, y_title: Figure title and axis titles (also shown on hover).
        causal: Blank entries above the diagonal (positional QK: keys after the query).
        cell_px: Size of each head's panel in pixels; panels shrink so that the figure
            fits :data:`~circuits.plots.style.MAX_WIDTH`.
        scale: ``"shared"``: one colour scale for every head, so heads compare by magnitude;
            ``"layer"``: one per layer (a colour bar beside each row), for circuits whose
            magnitude differs between layers (on a shared scale the quieter layer looks
            blank); ``"head"``: each head coloured by its value over its own largest
            ``|value|`` (that maximum in its panel title, the raw value on hover), for heads
            of one layer that differ by orders of magnitude (signed circuits only). The
            figure title says which.
        value: What a cell is, with its unit (e.g. "logit contribution", "attention score
            (pre-softmax)"): the colour bar's title and the hover label.
        kind: "signed" (diverging, centred on 0) or "probability" (sequential over [0, 1]).
    """
    if scale not in SCALES:
        raise ValueError(f"scale={scale!r} must be one of {SCALES}")
    z = _masked(to_numpy(circuits, "circuits", ndim=4), causal)
    _colour_scale(z, kind, "circuits")  # checks kind (and a probability's range) first
    n_layers, n_heads, n_rows, n_cols = z.shape
    per_layer = scale == "layer" and n_layers > 1
    per_head = scale == "head"
    if per_head and kind != "signed":
        raise ValueError("scale='head' is for signed circuits: probabilities share [0, 1]")
    with np.errstate(all="ignore"):
        spans = np.array([[_span(z[lay, h]) for h in range(n_heads)] for lay in range(n_layers)])
    titles = [
        head_label(lay, h) + (f" ±{spans[lay, h]:.3g}" if per_head else "")
        for lay in range(n_layers)
        for h in range(n_heads)
    ]
    size = grid_size(
        n_layers,
        n_heads,
        cell_px,
        gap_x=16,
        gap_y=TITLE_PX + 8,
        margin=dict(l=80, r=130, t=90, b=70),
        aspect=n_rows / n_cols,
    )
    fig = subplot_grid(size, titles)
    for layer in range(n_layers):
        axis = "coloraxis" if not per_layer or layer == 0 else f"coloraxis{layer + 1}"
        for head in range(n_heads):
            fig.add_trace(
                go.Heatmap(
                    z=z[layer, head] / spans[layer, head] if per_head else z[layer, head],
                    customdata=z[layer, head],  # the raw value, whatever the colour scale
                    coloraxis=axis,
                    name=head_label(layer, head),
                    hovertemplate=(
                        f"{y_title} %{{y}}<br>{x_title} %{{x}}<br>{value} %{{customdata:.3f}}"
                        "<extra>%{fullData.name}</extra>"
                    ),
                ),
                row=layer + 1,
                col=head + 1,
            )
        if per_layer:
            with np.errstate(all="ignore"):
                colour = _colour_scale(z[layer], kind, "circuits")
            bar = row_colorbar(size, layer, f"L{layer}: {value}")
            bar["title"]["text"] = _wrap(bar["title"]["text"])
            fig.update_layout({axis: dict(**colour, colorbar=bar)})
    if per_head:
        bar = dict(title=dict(text=_wrap(f"{value} / head's max"), side="top"))
        fig.update_layout(
            coloraxis=dict(colorscale=DIVERGING, cmin=-1.0, cmax=1.0, cmid=0.0, colorbar=bar)
        )
    elif not per_layer:
        colour = _colour_scale(z, kind, "circuits")
        bar = dict(title=dict(text=_wrap(value), side="top"))
        fig.update_layout(coloraxis=dict(**colour, colorbar=bar))
    fig.update_yaxes(autorange="reversed")
    outer_tick_labels(fig, size)
    grid_axis_titles(fig, size, x_title, y_title)
    if n_layers > 1 or n_heads > 1:
        title += {
            "layer": " (colour scale per layer)" if per_layer else " (one colour scale)",
            "head": " (colour scale per head: ± its max)",
            "shared": " (one colour scale)",
        }[scale]
    return finish(fig, title)


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
