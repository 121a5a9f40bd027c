"""Training dynamics: loss and head scores over steps, with the phase change marked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from circuits.plots.style import HEAD_COLOURS, PHASE_COLOUR, finish, head_label
from circuits.records import EvalRecord

DASHES = ("dash", "solid", "dot", "dashdot", "longdash", "longdashdot")


def score_kinds(history: Sequence[Any]) -> list[tuple[str, str]]:
    """``(name, label)`` of every head score in ``history``: registered scores in registry order
    (labels from :mod:`circuits.analysis.scores`), then any other score the records carry."""
    from circuits.analysis.scores import registered_scores

    present: dict[str, None] = {}
    for record in history:
        present.update(dict.fromkeys(record.scores))
    kinds = [(s.name, s.label) for s in registered_scores() if s.name in present]
    known = {name for name, _ in kinds}
    return kinds + [(name, name.replace("_", "-")) for name in present if name not in known]


def _history_of(result: Any) -> tuple[list[dict[str, Any]], list[float]]:
    if isinstance(result, dict):
        return list(result.get("history", [])), list(result.get("losses", []))
    if hasattr(result, "history"):
        return list(result.history), list(getattr(result, "losses", []))
    if isinstance(result, Sequence):
        return list(result), []
    raise TypeError(
        "result must be a TrainResult, a dict with 'history', or a list of history records, "
        f"got {type(result).__name__}"
    )


def phase_change_step(history: Sequence[Any], key: str = "loss") -> int | None:
    """The evaluation ending the phase change, by the toolkit's one definition.

    See :func:`circuits.analysis.phase.phase_change` (the steepest fall of the probe loss, the
    in-context-learning score up to a constant, after the first plateau); ``key`` reads another
    recorded quantity. None when there is no phase change in ``history``.
    """
    from circuits.analysis.phase import phase_change

    found = phase_change(history, key=key)
    return None if found is None else found.step


def training_dynamics(
    result: Any, title: str = "Training dynamics", mark_phase_change: bool = True
) -> go.Figure:
    """Loss (top), probe accuracy (middle) and every head's scores (bottom) over training.

    Args:
        result: A :class:`circuits.TrainResult` (``losses`` per step and ``history`` per
            evaluation), a dict with those keys (e.g. loaded from a checkpoint), or the list
            of history records alone.
        title: Figure title.
        mark_phase_change: Draw a vertical line at :func:`phase_change_step` of the probe loss.

    Returns:
        Three stacked panels sharing the step axis: training loss per step and probe loss per
        evaluation (nats); probe accuracy (fraction of targets right); one line per head and
        registered score in the history: one colour per head (:data:`HEAD_COLOURS`, the same
        head the same colour in every score), one dash per score (previous-token dashed,
        induction solid). Two legends: the metrics beside the top panels, the heads beside
        the scores.
    """
    history, losses = _history_of(result)
    if not history and not losses:
        raise ValueError("result has no training history to plot")
    records = [EvalRecord.from_dict(r) for r in history]  # any version's records
    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.07,
        row_heights=[0.36, 0.2, 0.44],
        subplot_titles=["loss", "probe accuracy", "head scores on the probe"],
    )
    if losses:
        fig.add_trace(
            go.Scatter(
                x=np.arange(1, len(losses) + 1),
                y=losses,
                name="train loss (per step)",
                line=dict(color="#b0b0b0", width=1),
            ),
            row=1,
            col=1,
        )
    steps = [r["step"] for r in records]
    if records and "loss" in records[0]:
        fig.add_trace(
            go.Scatter(
                x=steps, y=[r["loss"] for r in records], name="probe loss", line=dict(color="black")
            ),
            row=1,
            col=1,
        )
    if records and "accuracy" in records[0]:
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=[r["accuracy"] for r in records],
                name="probe accuracy",
                line=dict(color="black", dash="dot"),
            ),
            row=2,
            col=1,
        )
    unit_range = True
    for i, (kind, label) in enumerate(score_kinds(records)):
        dash = DASHES[i % len(DASHES)]
        kind_steps = [r.step for r in records if kind in r.scores]
        scores = np.array([r.scores[kind].numpy() for r in records if kind in r.scores])
        unit_range = unit_range and bool(((scores >= 0) & (scores <= 1)).all())
        n_heads = scores.shape[2]  # scores: [evals, layers, heads]
        for layer in range(scores.shape[1]):
            for head in range(n_heads):
                colour = HEAD_COLOURS[(layer * n_heads + head) % len(HEAD_COLOURS)]
                fig.add_trace(
                    go.Scatter(
                        x=kind_steps,
                        y=scores[:, layer, head],
                        name=f"{head_label(layer, head)} {label}",
                        line=dict(dash=dash, color=colour),
                        legend="legend2",
                    ),
                    row=3,
                    col=1,
                )
    from circuits.analysis.phase import phase_change

    phase = phase_change(records) if mark_phase_change else None
    if phase is not None:
        step = phase.step
        fig.add_vline(
            x=step,
            line=dict(color=PHASE_COLOUR, width=2, dash="dash"),
            row="all",
            col=1,
            exclude_empty_subplots=False,  # one line through every panel, drawn or not
        )
        # One label, inside the loss panel (a label per panel would sit on the lower title), on
        # the side of the line with more room, so that it stays inside the panel.
        last = max([len(losses), *(r.step for r in records)])
        right = step > last / 2
        fig.add_annotation(
            x=step,
            y=1.0,
            xref="x",
            yref="y domain",
            text=f"phase change (steps {phase.start}-{step})",  # resolved to that interval
            showarrow=False,
            xanchor="right" if right else "left",
            yanchor="top",
            xshift=-4 if right else 4,
        )
    fig.update_yaxes(title_text="cross-entropy (nats)", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(
        title_text="accuracy", range=[0, 1.02], tickformat=".0%", nticks=3, row=2, col=1
    )
    fig.update_yaxes(title_text="score", range=[0, 1.02] if unit_range else None, row=3, col=1)
    fig.update_xaxes(title_text="step", row=3, col=1)
    # The metrics' legend beside the top two panels, the heads' beside the scores.
    score_top = fig.layout.yaxis3.domain[1]
    fig.update_layout(
        height=760,
        width=940,
        margin=dict(l=80, r=220, t=80, b=60),
        legend=dict(font=dict(size=11), x=1.02, xanchor="left", y=1.0, yanchor="top"),
        legend2=dict(
            font=dict(size=11),
            x=1.02,
            xanchor="left",
            y=score_top,
            yanchor="top",
            title=dict(text="head score<br>(dash: score, colour: head)", font=dict(size=11)),
        ),
    )
    return finish(fig, title)
