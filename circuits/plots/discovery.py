"""Figures of circuit discovery: the circuit graph, ROC curves, ACDC's KL versus edges, and
path-expansion bars. They take results of :mod:`circuits.discovery` and compute nothing else."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from torch import Tensor

from circuits.plots.style import finish, to_numpy

POSITIVE, NEGATIVE, REFERENCE = "#d6604d", "#4393c3", "#fdb863"
IDLE = "#bbbbbb"  # a node none of whose edges is drawn

# Geometry in data units (one unit: one layer across, one head up). A head is a box whose left
# side carries its three input ports, queries below, keys level, values above; edges end there.
HEAD_HALF_W, HEAD_HALF_H = 0.24, 0.3
PORT_OFFSET = {"q": -0.2, "k": 0.0, "v": 0.2}
UNIT_X_PX, UNIT_Y_PX = 220, 140
MAX_WIDTH_PX = 12.0  # line width of the largest |score|; the smallest drawn is 1 px


def _position(name: str, n_heads: int, n_layers: int) -> tuple[float, float]:
    """Node centre: column by layer (embeddings left, logits right), row by head."""
    mid = (n_heads - 1) / 2
    if name == "embed":
        return 0.0, mid - 0.35
    if name == "pos":
        return 0.0, mid + 0.35
    if name == "logits":
        return float(n_layers + 1), mid
    if name.startswith("MLP"):
        return int(name[3:]) + 1.5, float(n_heads)
    layer, head = name[1:].split("H")
    return int(layer) + 1.0, float(head)


def _is_head(name: str) -> bool:
    return name.startswith("L") and "H" in name


def _out_point(name: str, n_heads: int, n_layers: int) -> tuple[float, float]:
    """Where a sender's edges leave it: a head's right side, another node's centre."""
    x, y = _position(name, n_heads, n_layers)
    return (x + HEAD_HALF_W, y) if _is_head(name) else (x, y)


def _in_point(node: str, kind: str, n_heads: int, n_layers: int) -> tuple[float, float]:
    """Where an edge reaches its receiver: a head's q/k/v port, another node's centre."""
    x, y = _position(node, n_heads, n_layers)
    if kind in PORT_OFFSET:
        return x - HEAD_HALF_W, y + PORT_OFFSET[kind]
    return x, y


def _width(value: float, top: float) -> float:
    return 1 + (MAX_WIDTH_PX - 1) * abs(value) / top


def circuit_graph(
    scores: Any,
    reference: Tensor | Sequence[str] | None = None,
    min_fraction: float = 0.01,
    title: str | None = None,
) -> go.Figure:
    """The graph with each edge drawn by its score: width by ``|score|``, red positive, blue
    negative; reference edges underlaid in orange.

    Each head is a box with three input ports on its left side (``q`` below, ``k`` level,
    ``v`` above) where its incoming edges end; edges leave senders on their right. The legend
    gives the colours and three reference widths (the largest ``|score|``, half, a tenth).
    Nodes none of whose edges is drawn are grey.

    Args:
        scores: :class:`~circuits.discovery.EdgeScores` (any method).
        reference: Bool ``[n_edges]`` mask or edge names to mark (e.g. the planted circuit).
        min_fraction: Edges below this fraction of the largest ``|score|`` are not drawn
            (reference edges always are).
        title: Figure title; defaults to the method's name.
    """
    graph = scores.graph
    values = to_numpy(scores.scores, "scores", ndim=1)
    ref = set() if reference is None else set(graph.names(graph.check_mask(reference)))
    top = max(float(abs(values).max()), 1e-12)
    n_heads, n_layers = graph.n_heads, graph.n_layers
    names = [s.name for s in graph.senders] + ["logits"]
    heads = [n for n in names if _is_head(n)]
    fig = go.Figure()
    # Head boxes first: an edge that passes a head is drawn over it, not hidden behind it.
    _draw_boxes(fig, heads, n_heads, n_layers)
    active: set[str] = set()
    for edge, value in zip(graph.edges, values, strict=True):
        marked = edge.name in ref
        if abs(value) < min_fraction * top and not marked:
            continue
        active.update((edge.sender.name, edge.receiver.node))
        x0, y0 = _out_point(edge.sender.name, n_heads, n_layers)
        x1, y1 = _in_point(edge.receiver.node, edge.receiver.kind, n_heads, n_layers)
        width = _width(value, top)
        if marked:
            fig.add_trace(
                go.Scatter(
                    x=[x0, x1],
                    y=[y0, y1],
                    mode="lines",
                    hoverinfo="skip",
                    showlegend=False,
                    line=dict(color=REFERENCE, width=width + 8),
                )
            )
        fig.add_trace(
            go.Scatter(
                x=[x0, x1],
                y=[y0, y1],
                mode="lines",
                showlegend=False,
                line=dict(color=POSITIVE if value >= 0 else NEGATIVE, width=width),
                opacity=0.85,
                hovertemplate=f"{edge.name}<br>score {value:.4g}<extra></extra>",
            )
        )
    xy = [_position(n, n_heads, n_layers) for n in names]
    colours = ["white" if n in active else IDLE for n in names]
    fig.add_trace(
        go.Scatter(
            x=[p[0] for p in xy],
            y=[p[1] for p in xy],
            mode="markers+text",
            text=names,
            textposition="middle center",
            # Heads are drawn as boxes (above); the other nodes are circles.
            marker=dict(
                size=[0 if _is_head(n) else 44 for n in names],
                color=colours,
                line=dict(color="black", width=[0 if _is_head(n) else 1.5 for n in names]),
            ),
            textfont=dict(color=["black" if n in active else "#777777" for n in names]),
            hovertext=[n if n in active else f"{n}: no edge drawn" for n in names],
            hoverinfo="text",
            showlegend=False,
        )
    )
    _draw_ports(fig, heads, active, n_heads, n_layers)
    _legend(fig, top, min_fraction, bool(ref), len(active) < len(names))
    fig.update_xaxes(
        tickvals=list(range(n_layers + 2)),
        ticktext=["embeddings"] + [f"layer {layer}" for layer in range(n_layers)] + ["output"],
        range=[-0.5, n_layers + 1.5],
        zeroline=False,
        showgrid=False,
        fixedrange=True,
    )
    top_row = n_heads if any(s.kind == "mlp" for s in graph.senders) else n_heads - 1
    fig.update_yaxes(visible=False, range=[-0.6, top_row + 0.6], fixedrange=True)
    margin = dict(l=40, r=40, t=80, b=130)
    fig.update_layout(
        width=UNIT_X_PX * (n_layers + 2) + margin["l"] + margin["r"],
        height=int(UNIT_Y_PX * (top_row + 1.2)) + margin["t"] + margin["b"],
        margin=margin,
        plot_bgcolor="white",
        legend=dict(orientation="h", x=0.0, xanchor="left", y=-0.08, yanchor="top"),
    )
    return finish(fig, title or f"Edges by {scores.method}")


def _draw_boxes(fig: go.Figure, heads: list[str], n_heads: int, n_layers: int) -> None:
    """Every head's box, as one filled trace."""
    xs: list[float | None] = []
    ys: list[float | None] = []
    for name in heads:
        x, y = _position(name, n_heads, n_layers)
        x0, x1, y0, y1 = x - HEAD_HALF_W, x + HEAD_HALF_W, y - HEAD_HALF_H, y + HEAD_HALF_H
        xs += [x0, x1, x1, x0, x0, None]
        ys += [y0, y0, y1, y1, y0, None]
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=ys,
            mode="lines",
            fill="toself",
            fillcolor="white",
            line=dict(color="black", width=1.5),
            hoverinfo="skip",
            showlegend=False,
        )
    )


def _draw_ports(
    fig: go.Figure, heads: list[str], active: set[str], n_heads: int, n_layers: int
) -> None:
    """Each head's q/k/v ports on its box's left side: markers with their labels."""
    ports = [(h, k) for h in heads for k in PORT_OFFSET]
    where = [_in_point(h, k, n_heads, n_layers) for h, k in ports]
    fig.add_trace(
        go.Scatter(
            x=[p[0] for p in where],
            y=[p[1] for p in where],
            mode="markers+text",
            text=[k for _, k in ports],
            textposition="middle right",
            textfont=dict(size=10, color="#555555"),
            marker=dict(
                symbol="square",
                size=7,
                color=["black" if h in active else IDLE for h, _ in ports],
            ),
            hovertext=[f"{h}.{k}" for h, k in ports],
            hoverinfo="text",
            showlegend=False,
        )
    )


def _legend(fig: go.Figure, top: float, min_fraction: float, ref: bool, idle: bool) -> None:
    """Legend-only traces: edge colours, three reference widths, the reference underlay."""

    def entry(name: str, colour: str, width: float) -> None:
        fig.add_trace(
            go.Scatter(x=[None], y=[None], mode="lines", name=name,
                       line=dict(color=colour, width=width))
        )  # fmt: skip

    entry("positive score", POSITIVE, 4)
    entry("negative score", NEGATIVE, 4)
    for fraction in (1.0, 0.5, 0.1):
        entry(f"|score| {top * fraction:.3g} ({fraction:.0%} of max)", "#666666",
              _width(fraction * top, top))  # fmt: skip
    if ref:
        entry("reference circuit", REFERENCE, 8)
    if idle:
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                name=f"grey: no edge above {min_fraction:.0%} of max",
                marker=dict(size=12, color=IDLE, line=dict(color="black", width=1)),
            )
        )


def roc_curves(
    curves: Mapping[str, tuple[Tensor, Tensor]],
    aucs: Mapping[str, float] | None = None,
    title: str = "ROC against the reference circuit",
) -> go.Figure:
    """One ROC curve per method.

    Args:
        curves: Method name -> ``(fpr, tpr)`` from :func:`circuits.discovery.roc_curve`.
        aucs: Method name -> AUC, shown in the legend.
    """
    if not curves:
        raise ValueError("curves is empty: pass {method: (fpr, tpr)}")
    fig = go.Figure()
    for name, (fpr, tpr) in curves.items():
        label = name if aucs is None or name not in aucs else f"{name} (AUC {aucs[name]:.3f})"
        fig.add_trace(
            go.Scatter(
                x=to_numpy(fpr, "fpr", ndim=1),
                y=to_numpy(tpr, "tpr", ndim=1),
                mode="lines+markers",
                name=label,
                line_shape="linear",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", name="chance", line=dict(color="grey", dash="dot")
        )
    )
    fig.update_xaxes(title="false-positive rate", range=[0, 1.02])
    fig.update_yaxes(title="true-positive rate", range=[0, 1.02])
    fig.update_layout(width=560, height=480)
    return finish(fig, title)


def acdc_curve(
    results: Sequence[Any], title: str = "ACDC: KL to the model vs edges kept"
) -> go.Figure:
    """KL of ACDC's circuit against its number of edges, one point per threshold tau.

    Each point is labelled with its tau on the side facing the middle of the plot, and the
    axes leave room around the points, so no label runs off the plot.
    """
    if not results:
        raise ValueError("results is empty: pass acdc_sweep(...)")
    x = [r.n_edges for r in results]
    y = [max(r.kl, 1e-6) for r in results]  # log axis: a zero KL sits at the floor
    lo, hi = min(x), max(x)
    pad = max(0.12 * (hi - lo), 1.0)
    mid = (lo + hi) / 2
    fig = go.Figure(
        go.Scatter(
            x=x,
            y=y,
            mode="lines+markers+text",
            text=[f"τ={r.tau:g}" for r in results],
            textposition=["top left" if v > mid else "top right" for v in x],
            cliponaxis=False,
            hovertemplate="%{text}<br>%{x} edges<br>KL %{y:.3g} nats<extra></extra>",
        )
    )
    log_lo, log_hi = np.log10(min(y)), np.log10(max(y))
    fig.update_xaxes(title="edges kept", range=[lo - pad, hi + pad])
    fig.update_yaxes(
        title="KL(model || circuit), nats", type="log", range=[log_lo - 0.3, log_hi + 0.4]
    )
    fig.update_layout(width=620, height=440)
    return finish(fig, title)


def path_expansion_bars(expansion: Any, title: str = "Path expansion of the logits") -> go.Figure:
    """Size and ablation importance of each path term (direct, heads, virtual heads, biases)."""
    labels = expansion.labels
    rows = 1 if expansion.importance is None else 2
    fig = make_subplots(
        rows=rows,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        subplot_titles=["size (mean norm of centred logits)", "importance (loss rise if removed)"][
            :rows
        ],
    )
    colors = ["#999999" if o == 0 else "#4393c3" if o == 1 else "#d6604d" for o in expansion.order]
    fig.add_trace(
        go.Bar(
            x=labels,
            y=to_numpy(expansion.sizes, "sizes", ndim=1),
            marker_color=colors,
            showlegend=False,
        ),
        row=1,
        col=1,
    )
    if expansion.importance is not None:
        fig.add_trace(
            go.Bar(
                x=labels,
                y=to_numpy(expansion.importance, "importance", ndim=1),
                marker_color=colors,
                showlegend=False,
            ),
            row=2,
            col=1,
        )
    fig.update_yaxes(title_text="logit norm", row=1, col=1)
    if rows == 2:
        fig.update_yaxes(title_text="loss rise (nats)", row=2, col=1)
    fig.update_layout(width=max(520, 48 * len(labels) + 160), height=260 * rows + 140)
    return finish(fig, title + " (grey: direct/biases, blue: one head, red: virtual heads)")
