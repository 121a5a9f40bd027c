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
from circuits.plots.tokens import visible


def lens_row_names(labels: list[str] | None, n_points: int) -> list[str]:
    """Display names of a lens's rows, the same in every figure.

    Args:
        labels: The lens's own point labels (``LensResult.labels``: ``"0_pre"``, ``"0_mid"``,
            ..., ``"final_post"``), or None for the default points (before each block, then
            the end: ``n_points - 1`` blocks).
        n_points: Number of rows.

    Returns:
        ``"embed"`` (before block 0), ``"after L{i}"`` (before block ``i + 1``),
        ``"after L{i} attn"`` (between block ``i``'s attention and MLP), ``"output"`` (after
        the last block and the final LayerNorm: the model's own prediction); any other label
        unchanged.
    """
    if labels is None:
        labels = [f"{i}_pre" for i in range(n_points - 1)] + ["final_post"]
    if len(labels) != n_points:
        raise ValueError(f"layer_labels has {len(labels)} names for {n_points} rows")
    names = []
    for label in labels:
        index, _, where = str(label).partition("_")
        if label == "final_post":
            names.append("output")
        elif index.isdigit() and where == "pre":
            names.append("embed" if index == "0" else f"after L{int(index) - 1}")
        elif index.isdigit() and where == "mid":
            names.append(f"after L{index} attn")
        else:
            names.append(str(label))
    return names


def lens_heatmap(
    values: Float[Tensor, "n_points pos"],
    tokens: Any = None,
    top_tokens: Any = None,
    metric: str = "probability",
    layer_labels: list[str] | None = None,
    title: str = "Logit lens",
) -> go.Figure:
    """A (lens point) x position heatmap of the target's probability (or rank) under a lens.

    Args:
        values: ``[n_points, pos]``: per lens point (embeddings first, model output last), the
            target token's probability or rank at each position.
        tokens: The input tokens labelling the position axis: ids, or strings (shown with
            whitespace made visible; :func:`circuits.plots.tokens.token_strings` turns ids
            into strings).
        top_tokens: ``[n_points, pos]`` top-1 predicted token per cell, written in the cells:
            ids, or nested lists of strings.
        metric: "probability" (colour range [0, 1], darker is better) or "rank" (log colour,
            0 is best; darker is better too), or another name for a free colour range.
        layer_labels: The lens's point labels (``LensResult.labels``); rows are named from them
            by :func:`lens_row_names` (default: the points before each block and the output).
        title: Figure title (say which lens).
    """
    v = to_numpy(values, "values", ndim=2)
    n_layers, n_pos = v.shape
    rows = lens_row_names(layer_labels, n_layers)
    text = None
    if top_tokens is not None:
        text = _cell_text(top_tokens, v.shape)
    # Cells 50 px high and 26 px wide, or as wide as the widest top token (up to 48 px), so
    # that it can be written in; narrower for long sequences, so the figure fits MAX_WIDTH.
    cell = 26 if text is None else min(max(26, max(text_px(str(t), 10) for t in text.flat) + 4), 48)
    size = grid_size(
        1,
        1,
        cell * n_pos,
        gap_x=0,
        gap_y=0,
        margin=dict(l=110, r=120, t=70, b=90),
        aspect=50 * n_layers / (cell * n_pos),
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
            # Top tokens in the cells only if the widest fits its cell (10 px font).
            texttemplate="%{text}" if text is not None and _fits(text, cell_w) else None,
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
    fig.update_yaxes(title_text="residual stream at")
    fig.update_layout(width=max(520, size.width), height=max(300, size.height), margin=size.margin)
    return finish(fig, title)


def _cell_text(top_tokens: Any, shape: tuple[int, ...]) -> np.ndarray:
    """``[n_points, pos]`` cell labels from token ids or strings."""
    raw = top_tokens.tolist() if hasattr(top_tokens, "tolist") else top_tokens
    rows = [list(r) for r in raw] if isinstance(raw, list | tuple) else None
    if rows is None or len(rows) != shape[0] or any(len(r) != shape[1] for r in rows):
        got = np.shape(np.asarray(raw, dtype=object))
        raise ValueError(f"top_tokens shape {tuple(got)} != values shape {tuple(shape)}")
    if all(isinstance(t, str) for r in rows for t in r):
        return np.array([[visible(t) for t in r] for r in rows], dtype=object)
    return np.asarray(to_numpy(rows, "top_tokens", ndim=2), dtype=int).astype(str)


def _fits(text: np.ndarray, cell_w: float) -> bool:
    return max(text_px(str(t), 10) for t in text.flat) + 4 <= cell_w
