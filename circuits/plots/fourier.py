"""Figures of the Fourier mechanism of modular addition (Nanda et al. 2023): the embedding's
norm per frequency, and the progress measures over training. Data comes from
:mod:`circuits.analysis.fourier`; nothing here computes model internals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from circuits.plots.style import HEAD_COLOURS, finish
from circuits.records import EvalRecord

__all__ = ["frequency_norms_figure", "progress_measures_figure"]


def frequency_norms_figure(
    norms: Any, key_frequencies: Sequence[int] = (), title: str = "Embedding norm per frequency"
) -> go.Figure:
    """Bars of a per-frequency norm (``fourier.embedding_norms``: frequencies ``1..(p-1)/2``),
    the key frequencies in colour and the rest grey, like the paper's Figure 3 (left)."""
    values = np.asarray(norms.numpy() if hasattr(norms, "numpy") else norms, dtype=float).ravel()
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError("norms must be a non-empty sequence of finite numbers")
    ks = np.arange(1, values.size + 1)
    key = set(int(k) for k in key_frequencies)
    colours = [HEAD_COLOURS[0] if k in key else "#bbbbbb" for k in ks]
    fig = go.Figure(
        go.Bar(x=ks, y=values, marker_color=colours, hovertemplate="k=%{x}<br>norm=%{y:.3g}")
    )
    fig.update_layout(
        xaxis_title="frequency k (w_k = 2 pi k / p)", yaxis_title="norm", width=800, height=360
    )
    label = ", ".join(map(str, sorted(key))) or "none"
    return finish(fig, f"{title} (key frequencies: {label})")


PANELS = (
    ("loss", ("train_loss", "test_loss", "restricted_loss", "excluded_loss"), True),
    ("Gini of frequency norms", ("gini_embed", "gini_unembed"), False),
    ("total squared weight norm", ("weight_norm_sq",), False),
)


def _from_records(records: Sequence[EvalRecord]) -> list[dict[str, float]]:
    """Progress-measure rows from the records that hold ``training_measures``' metrics."""
    rows = [
        {"step": r.step, **r.metrics, "train_loss": r.metrics["train_set_loss"]}
        for r in records
        if "train_set_loss" in r.metrics
    ]
    if not rows:
        raise ValueError("the history's records hold no modular-addition metrics")
    return rows


def progress_measures_figure(
    history: Sequence[Mapping[str, float]], title: str = "Progress measures over training"
) -> go.Figure:
    """Three panels over training steps: train, test, restricted and excluded loss (log
    scale), the Gini coefficients, and the squared weight norm, like the paper's Figure 7.

    ``history``: one ``fourier.progress_measures`` dict per checkpoint, each with ``step``, or
    a training history (``TrainResult.history``) of ``modular_addition``: the records that
    hold its metrics (``fourier.training_measures``, key frequencies of each step).
    """
    if history and all(isinstance(h, EvalRecord) for h in history):
        history = _from_records(history)  # type: ignore[arg-type]
    if not history or any("step" not in h for h in history):
        raise ValueError("history must be a non-empty list of dicts with a 'step'")
    steps = [h["step"] for h in history]
    fig = make_subplots(rows=1, cols=3, subplot_titles=[p[0] for p in PANELS])
    colour = 0
    for col, (_, keys, log) in enumerate(PANELS, start=1):
        for key in keys:
            if key not in history[0]:
                continue
            fig.add_trace(
                go.Scatter(
                    x=steps,
                    y=[h[key] for h in history],
                    name=key.replace("_", " "),
                    line_color=HEAD_COLOURS[colour % len(HEAD_COLOURS)],
                ),
                row=1,
                col=col,
            )
            colour += 1
        fig.update_xaxes(title_text="step", row=1, col=col)
        if log:
            fig.update_yaxes(type="log", title_text="nats", row=1, col=col)
    fig.update_layout(width=1150, height=400, margin_t=90)
    return finish(fig, title)
