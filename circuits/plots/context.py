"""In-context learning: loss by position, one line per model (Olsson et al.'s view)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import plotly.graph_objects as go

from circuits.plots.style import finish, to_numpy


def loss_by_position(
    losses: Mapping[str, Any],
    early: int | None = None,
    late: int | None = None,
    title: str = "Loss by position",
) -> go.Figure:
    """Lines of mean loss against position, one per model, with the score's two tokens marked.

    Args:
        losses: Name -> ``[pos]`` losses (from :func:`circuits.analysis.loss_by_position`);
            NaN positions (none counted) are left as gaps.
        early: Position of the in-context learning score's early token, drawn as a dashed line.
        late: Position of its late token, likewise.
        title: Figure title.
    """
    if not losses:
        raise ValueError("losses is empty: pass at least one name -> [pos] losses")
    fig = go.Figure()
    for name, values in losses.items():
        v = to_numpy(values, f"losses[{name!r}]", ndim=1)
        fig.add_trace(
            go.Scatter(
                x=np.arange(len(v)),
                y=v,
                mode="lines+markers",
                name=str(name),
                hovertemplate=f"{name}<br>position %{{x}}<br>loss %{{y:.3f}}<extra></extra>",
            )
        )
    for pos, label in ((early, "early"), (late, "late")):
        if pos is not None:
            fig.add_vline(x=pos, line_dash="dash", line_color="gray", annotation_text=label)
    fig.update_xaxes(title_text="position")
    fig.update_yaxes(title_text="loss (nats)", rangemode="tozero")
    fig.update_layout(width=720, height=400)
    return finish(fig, title)
