"""Figures of in-context Markov chains (Edelman et al. 2024): the model's KL to each in-context
strategy over training, with the phase shaded, and KL by position. Data comes from
:mod:`circuits.analysis.markov`."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from circuits.analysis.markov import STRATEGIES
from circuits.plots.style import HEAD_COLOURS, finish
from circuits.records import EvalRecord

__all__ = ["kl_by_position_figure", "strategy_kl_figure"]

STRATEGY_COLOURS = {"uniform": "#7f7f7f", "unigram": HEAD_COLOURS[0], "bigram": HEAD_COLOURS[2]}
PHASE_FILL = {"uniform": "#eeeeee", "unigram": "#dbe8f5", "bigram": "#f6dcdc"}


def strategy_kl_figure(
    history: Sequence[Mapping[str, Any]],
    title: str = "KL from each in-context strategy to the model",
) -> go.Figure:
    """KL(strategy || model) over training (``PhaseTracker.history``), log scale, each step's
    phase (the closest strategy) shaded behind, and the KL to the true transition rows dashed:
    the uniform -> unigram -> bigram sequence of the paper's Figure 2.

    ``history`` may also be a training history (``TrainResult.history``) of
    ``markov_icl``: its records' ``metrics`` (``late_kls``) are plotted, without the truth.
    """
    if history and all(isinstance(h, EvalRecord) for h in history):
        history = _from_records(history)  # type: ignore[arg-type]
    if not history or any("step" not in h or "phase" not in h for h in history):
        raise ValueError("history must be PhaseTracker.history: dicts with 'step' and 'phase'")
    steps = [h["step"] for h in history]
    fig = go.Figure()
    edges = [steps[0]] + [(a + b) / 2 for a, b in itertools.pairwise(steps)]
    edges.append(steps[-1])
    for i, h in enumerate(history):
        fig.add_vrect(
            x0=edges[i],
            x1=edges[i + 1],
            fillcolor=PHASE_FILL[h["phase"]],
            opacity=1,
            line_width=0,
            layer="below",
        )
    for name, colour in STRATEGY_COLOURS.items():
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=[h[name] for h in history],
                name=f"KL({name} || model)",
                line_color=colour,
            )
        )
    if "true" in history[0]:
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=[h["true"] for h in history],
                name="KL(true || model)",
                line=dict(color="black", dash="dash"),
            )
        )
    fig.update_yaxes(type="log", title_text="nats (late positions)")
    fig.update_xaxes(title_text="step (shading: closest strategy)")
    fig.update_layout(width=900, height=420)
    return finish(fig, title)


def _from_records(records: Sequence[EvalRecord]) -> list[dict[str, Any]]:
    """PhaseTracker-style rows from the records that hold ``late_kls``' metrics."""
    rows = []
    for r in records:
        if "phase" in r.metrics:
            row: dict[str, Any] = {"step": r.step, "phase": STRATEGIES[int(r.metrics["phase"])]}
            row.update({name: r.metrics[f"kl_{name}"] for name in STRATEGIES})
            rows.append(row)
    if not rows:
        raise ValueError("the history's records hold no Markov metrics (kl_*, phase)")
    return rows


def kl_by_position_figure(
    kls: Mapping[str, Any], title: str = "KL to the model by position"
) -> go.Figure:
    """KL per position for each strategy (``markov.strategy_kls``)."""
    if not kls:
        raise ValueError("kls must map strategy names to per-position KLs")
    fig = go.Figure()
    for i, (name, values) in enumerate(kls.items()):
        y = np.asarray(values.numpy() if hasattr(values, "numpy") else values, dtype=float)
        colour = STRATEGY_COLOURS.get(name, HEAD_COLOURS[(i + 3) % len(HEAD_COLOURS)])
        fig.add_trace(go.Scatter(y=y, name=name, line_color=colour if name != "true" else "black"))
    fig.update_yaxes(type="log", title_text="nats")
    fig.update_xaxes(title_text="position")
    fig.update_layout(width=800, height=380)
    return finish(fig, title)
