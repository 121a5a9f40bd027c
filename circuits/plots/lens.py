"""Logit lens / tuned lens: what each layer's residual stream predicts, position by position."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from jaxtyping import Float
from torch import Tensor

from circuits.plots.style import (
    SEQUENTIAL,
    finish,
    grid_size,
    position_ticks,
    text_px,
    to_numpy,
    token_labels,
)


def lens_heatmap(
    values: Float[Tensor, "n_layers pos"],
    tokens: Any = None,
    top_tokens: Any = None,
    metric: str = "probability",
    layer_labels: list[str] | None = None,
    title: str = "Logit lens",
) -> go.Figure:
    """A layer x position heatmap of the target's probability (or rank) under a lens.

    Args:
        values: ``[n_layers, pos]``: per lens layer (embeddings first, final layer last), the
            target token's probability or rank at each position.
        tokens: The input tokens, labelling the position axis.
        top_tokens: ``[n_layers, pos]`` top-1 predicted token per cell, written in the cells.
        metric: "probability" (colour range [0, 1], darker is better) or "rank" (log colour,
            0 is best; darker is better too), or another name for a free colour range.
        layer_labels: Names of the rows (default ``L0 .. L{n-1}``).
        title: Figure title (say which lens).
    """
    v = to_numpy(values, "values", ndim=2)
    n_layers, n_pos = v.shape
    rows = layer_labels or [f"L{i}" for i in range(n_layers)]
    if len(rows) != n_layers:
        raise ValueError(f"layer_labels has {len(rows)} names for {n_layers} rows")
    text = None
    if top_tokens is not None:
        top = np.asarray(to_numpy(top_tokens, "top_tokens", ndim=2), dtype=int)
        if top.shape != v.shape:
            raise ValueError(f"top_tokens shape {top.shape} != values shape {v.shape}")
        text = top.astype(str)
    # Cells of 26 x 50 px, narrower for long sequences so that the figure fits MAX_WIDTH.
    size = grid_size(
        1,
        1,
        26 * n_pos,
        gap_x=0,
        gap_y=0,
        margin=dict(l=110, r=120, t=70, b=90),
        aspect=50 * n_layers / (26 * n_pos),
        min_panel_px=6 * n_pos,
    )
    cell_w = size.panel_w / n_pos
    heat: dict[str, Any] = dict(colorscale=SEQUENTIAL, colorbar_title=metric)
    z = v
    if metric == "probability":
        heat.update(zmin=0.0, zmax=1.0)
    elif metric == "rank":
        # log colour so that ranks 0, 1, 10 are told apart; reversed so rank 0 is darkest.
        z = np.log10(1.0 + v)
        heat.update(
            reversescale=True,
            colorbar=dict(title="rank", tickvals=[0, 1, 2, 3], ticktext=["0", "9", "99", "999"]),
        )
        heat.pop("colorbar_title")
    fig = go.Figure(
        go.Heatmap(
            z=z,
            y=rows,
            text=text,
            # Token ids in the cells while they fit (about 3 digits at 10 px).
            texttemplate="%{text}" if text is not None and cell_w >= 16 else None,
            textfont=dict(size=10),
            customdata=v,
            hovertemplate=f"%{{y}} pos %{{x}}<br>{metric} %{{customdata:.3g}}"
            + ("<br>top token %{text}" if text is not None else "")
            + "<extra></extra>",
            **heat,
        )
    )
    labels = token_labels(tokens, n_pos)
    # As many "i:token" labels as fit side by side: upright, none overlapping.
    widest = max(text_px(f"{i}:{t}") for i, t in enumerate(labels))
    fig.update_xaxes(
        **position_ticks(labels, max_ticks=int(size.panel_w // (widest + 8))),
        tickangle=0,
        title_text="position:token",
    )
    fig.update_yaxes(title_text="layer (lens)")
    fig.update_layout(width=max(520, size.width), height=max(300, size.height), margin=size.margin)
    return finish(fig, title)
