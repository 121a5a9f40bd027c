"""Figures of circuit discovery: the circuit graph, ROC curves, ACDC's KL versus edges, and
path-expansion bars. They take results of :mod:`circuits.discovery` and compute nothing else."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots
from torch import Tensor

from circuits.plots.style import finish, to_numpy

# Where each input of a head meets its node: queries below, keys level, values above.
_INPUT_OFFSET = {"q": -0.18, "k": 0.0, "v": 0.18}
POSITIVE, NEGATIVE, REFERENCE = "#d6604d", "#4393c3", "#fdb863"


def _position(name: str, n_heads: int, n_layers: int) -> tuple[float, float]:
    """Node position: column by layer (embeddings left, logits right), row by head."""
    if name == "embed":
        return 0.0, (n_heads - 1) / 2 - 0.5
    if name == "pos":
        return 0.0, (n_heads - 1) / 2 + 0.5
    if name == "logits":
        return float(n_layers + 1), (n_heads - 1) / 2
    if name.startswith("MLP"):
        return int(name[3:]) + 1.45, float(n_heads)
    layer, head = name[1:].split("H")
    return int(layer) + 1.0, float(head)


def circuit_graph(
    scores: Any,
    reference: Tensor | Sequence[str] | None = None,
    min_fraction: float = 0.01,
    title: str | None = None,
) -> go.Figure:
    """The graph with each edge drawn by its score: width by ``|score|``, red positive, blue
    negative; reference edges underlaid in orange.

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
    fig = go.Figure()
    for edge, value in zip(graph.edges, values, strict=True):
        marked = edge.name in ref
        if abs(value) < min_fraction * top and not marked:
            continue
        x0, y0 = _position(edge.sender.name, n_heads, n_layers)
        x1, y1 = _position(edge.receiver.node, n_heads, n_layers)
        y1 += _INPUT_OFFSET.get(edge.receiver.kind, 0.0)
        width = 1 + 9 * abs(value) / top
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
    names = [s.name for s in graph.senders] + ["logits"]
    xy = [_position(n, n_heads, n_layers) for n in names]
    fig.add_trace(
        go.Scatter(
            x=[p[0] for p in xy],
            y=[p[1] for p in xy],
            mode="markers+text",
            text=names,
            textposition="middle center",
            marker=dict(size=44, color="white", line=dict(color="black", width=1.5)),
            hoverinfo="text",
            showlegend=False,
        )
    )
    if ref:
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="lines",
                name="reference circuit",
                line=dict(color=REFERENCE, width=8),
            )
        )
    fig.update_xaxes(
        tickvals=list(range(n_layers + 2)),
        ticktext=["embeddings"] + [f"layer {layer}" for layer in range(n_layers)] + ["output"],
        zeroline=False,
        showgrid=False,
    )
    fig.update_yaxes(visible=False)
    fig.update_layout(
        width=220 * (n_layers + 2),
        height=140 * (n_heads + 1) + 120,
        plot_bgcolor="white",
        legend=dict(orientation="h", y=-0.1),
    )
    return finish(fig, title or f"Edges by {scores.method} (q below, k level, v above each head)")


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
    """KL of ACDC's circuit against its number of edges, one point per threshold tau."""
    if not results:
        raise ValueError("results is empty: pass acdc_sweep(...)")
    fig = go.Figure(
        go.Scatter(
            x=[r.n_edges for r in results],
            y=[max(r.kl, 1e-6) for r in results],
            mode="lines+markers+text",
            text=[f"τ={r.tau:g}" for r in results],
            textposition="top right",
        )
    )
    fig.update_xaxes(title="edges kept")
    fig.update_yaxes(title="KL(model || circuit), nats", type="log")
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
    fig.update_layout(width=max(520, 48 * len(labels) + 160), height=260 * rows + 140)
    return finish(fig, title + " (grey: direct/biases, blue: one head, red: virtual heads)")
