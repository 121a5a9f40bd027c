"""Figures of a sweep: when circuits formed, how often, and over which settings.

Every function takes the rows of a sweep's ``results.jsonl`` (see :mod:`circuits.sweep.runner`
for the fields). A *setting* is a run's swept values other than the seed, so the seeds of one
setting make one box, one bar or one cell.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from circuits.plots.style import SEQUENTIAL

Row = Mapping[str, Any]


def swept_axes(rows: Sequence[Row]) -> list[str]:
    """The axes (other than ``seed``) that take more than one value across ``rows``."""
    names: list[str] = []
    for r in rows:
        for name in r.get("axes", {}):
            if name != "seed" and name not in names:
                names.append(name)
    return [n for n in names if len({_key(axis_value(r, n)) for r in rows}) > 1]


def axis_value(row: Row, axis: str) -> Any:
    """A run's value of ``axis`` (``"train.lr"``, ``"seed"``): swept, else from its settings."""
    if axis in row.get("axes", {}):
        return row["axes"][axis]
    part, _, name = axis.partition(".")
    return row.get("settings", {}).get(part, {}).get(name)


def _key(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def setting_label(row: Row, axes: Sequence[str]) -> str:
    """``"lr=0.01, d_model=32"``: the run's values of ``axes`` (``"all runs"`` if none)."""
    if not axes:
        return "all runs"
    return ", ".join(f"{a.partition('.')[2] or a}={_fmt(axis_value(row, a))}" for a in axes)


def _check_rows(rows: Any) -> list[Row]:
    if isinstance(rows, Mapping) or not isinstance(rows, Sequence):
        raise TypeError(f"rows must be a list of result rows, got {type(rows).__name__}")
    if not rows:
        raise ValueError("no result rows to plot")
    for r in rows:
        if not isinstance(r, Mapping) or "run_id" not in r:
            raise ValueError("every row must be a result row with a run_id")
    return list(rows)


def _groups(
    rows: Sequence[Row], by: Sequence[str] | None
) -> tuple[list[str], dict[str, list[Row]]]:
    """Settings in sorted order of their values, and the rows of each."""
    axes = swept_axes(rows) if by is None else list(by)
    keyed: dict[tuple, list[Row]] = {}
    for r in rows:
        keyed.setdefault(tuple(_key(axis_value(r, a)) for a in axes), []).append(r)
    order = sorted(keyed, key=lambda k: tuple((v is None, str(type(v)), v) for v in k))
    labels = [setting_label(keyed[k][0], axes) for k in order]
    return labels, {label: keyed[k] for label, k in zip(labels, order, strict=True)}


def formed_step(row: Row, score: str) -> int | None:
    """The step at which ``score`` reached its threshold in this run (None: never, or failed)."""
    if row.get("status") != "ok":
        return None
    formed = row.get("formed", {}).get(score)
    return None if formed is None else formed.get("step")


def eval_interval(rows: Sequence[Row]) -> list[int]:
    """The distinct ``train.eval_every`` of ``rows``: the resolution of their formation steps."""
    found = {axis_value(r, "train.eval_every") for r in rows}
    return sorted(v for v in found if isinstance(v, int) and not isinstance(v, bool))


def formation_steps(
    rows: Sequence[Row], by: Sequence[str] | None = None, score: str = "induction"
) -> go.Figure:
    """The distribution of the step at which ``score`` formed: one ECDF per setting.

    Formation steps are evaluation steps (``eval_every`` apart), so many runs share a value;
    an empirical cumulative distribution shows how many formed by each step, ties included,
    where a strip of points would pile up on two or three values.

    Args:
        rows: Result rows.
        by: Axes that define a setting (default: every swept axis but the seed).
        score: A thresholded score of the rows' ``formed`` field.

    Returns:
        One step curve per setting, from step 0 to the setting's last step: at step ``x``, the
        share of the setting's runs (all of them, so a curve ends at ``formed/n``) whose
        ``score`` had formed by ``x``; a marker per distinct formation step, its hover listing
        the runs. The title states the resolution.
    """
    rows = _check_rows(rows)
    labels, groups = _groups(rows, by)
    fig = go.Figure()
    for label in labels:
        group = groups[label]
        formed = sorted((s, r["run_id"]) for r in group if (s := formed_step(r, score)) is not None)
        xs: list[int] = []
        ys: list[float] = []
        texts: list[str] = []
        for i, (step, rid) in enumerate(formed):
            if xs and xs[-1] == step:  # a tie: one point, the runs listed together
                ys[-1] = (i + 1) / len(group)
                texts[-1] += f", {rid}"
            else:
                xs.append(step)
                ys.append((i + 1) / len(group))
                texts.append(rid)
        # From (0, 0) to the setting's last step, so that a plateau below 100% (runs that
        # never formed) and a setting where none formed both show.
        end = max([*(r.get("steps") or 0 for r in group), *xs])
        share = ys[-1] if ys else 0.0
        fig.add_trace(
            go.Scatter(
                x=[0, *xs, end],
                y=[0.0, *ys, share],
                mode="lines+markers",
                marker=dict(size=[0] + [8] * len(xs) + [0]),  # markers at formation steps only
                line_shape="hv",
                name=f"{label} (formed {len(formed)}/{len(group)})",
                text=["", *texts, ""],
                hovertemplate="step %{x}: %{y:.0%} formed<br>%{text}<extra></extra>",
            )
        )
    every = eval_interval(rows)
    resolution = (
        f"resolution: evaluated every {', '.join(map(str, every))} steps"
        if every
        else "resolution: the evaluation interval"
    )
    fig.update_layout(
        title=f"Share of runs whose {score.replace('_', '-')} score had formed, by step "
        f"({resolution})",
        xaxis_title="training step (first evaluation at the threshold)",
        yaxis=dict(title="share of the setting's runs", range=[0, 1.05], tickformat=".0%"),
        height=460,
    )
    return fig


def success_rate(rows: Sequence[Row], by: Sequence[str] | None = None) -> go.Figure:
    """Share of runs per setting that met every target (failed runs count as not met)."""
    rows = _check_rows(rows)
    labels, groups = _groups(rows, by)
    rates, texts = [], []
    for label in labels:
        group = groups[label]
        wins = sum(1 for r in group if r.get("status") == "ok" and r.get("success"))
        failed = sum(1 for r in group if r.get("status") != "ok")
        rates.append(wins / len(group))
        texts.append(f"{wins}/{len(group)}" + (f" ({failed} failed)" if failed else ""))
    fig = go.Figure(go.Bar(x=labels, y=rates, text=texts, textposition="auto"))
    fig.update_layout(
        title="Success rate per setting (every target met)",
        yaxis=dict(title="share of runs", range=[0, 1.05]),
        height=400,
    )
    return fig


def phase_diagram(
    rows: Sequence[Row],
    x: str,
    y: str,
    value: str = "formation",
    score: str = "induction",
) -> go.Figure:
    """A heatmap over two swept axes: median formation step, or success rate, per cell.

    Args:
        rows: Result rows.
        x, y: The axes (e.g. ``"train.lr"``, ``"model.d_model"``).
        value: ``"formation"`` (median step at which ``score`` formed, over the runs where it
            did) or ``"success"`` (share of runs meeting every target).
        score: The score of ``"formation"``.

    Returns:
        A heatmap; cells with no run, or no run where ``score`` formed, are blank. Hover gives
        the cell's run count.
    """
    rows = _check_rows(rows)
    if value not in ("formation", "success"):
        raise ValueError(f"value must be 'formation' or 'success', got {value!r}")
    if x == y:
        raise ValueError(f"x and y must be two different axes, got {x!r} twice")
    xs = sorted({_key(axis_value(r, x)) for r in rows}, key=lambda v: (v is None, str(v)))
    ys = sorted({_key(axis_value(r, y)) for r in rows}, key=lambda v: (v is None, str(v)))
    xs = _numeric_sort(xs)
    ys = _numeric_sort(ys)
    z = np.full((len(ys), len(xs)), np.nan)
    counts = [["0 runs"] * len(xs) for _ in ys]
    for j, yv in enumerate(ys):
        for i, xv in enumerate(xs):
            cell = [
                r for r in rows if _key(axis_value(r, x)) == xv and _key(axis_value(r, y)) == yv
            ]
            if not cell:
                continue
            if value == "success":
                z[j, i] = sum(
                    1 for r in cell if r.get("status") == "ok" and r.get("success")
                ) / len(cell)
                counts[j][i] = f"{len(cell)} runs"
            else:
                steps = [s for s in (formed_step(r, score) for r in cell) if s is not None]
                if steps:
                    z[j, i] = float(np.median(steps))
                counts[j][i] = f"formed {len(steps)}/{len(cell)}"
    label = "success rate" if value == "success" else f"median {score} formation step"
    fig = go.Figure(
        go.Heatmap(
            z=[[None if math.isnan(v) else v for v in row] for row in z],
            x=[_fmt(v) for v in xs],
            y=[_fmt(v) for v in ys],
            text=counts,
            colorscale=SEQUENTIAL if value == "success" else "Viridis",
            zmin=0 if value == "success" else None,
            zmax=1 if value == "success" else None,
            colorbar=dict(title=label),
            hovertemplate=f"{x}=%{{x}}, {y}=%{{y}}: %{{z}} (%{{text}})<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Phase diagram: {label}",
        xaxis=dict(title=x, type="category"),
        yaxis=dict(title=y, type="category"),
        height=450,
    )
    return fig


def _numeric_sort(values: list[Any]) -> list[Any]:
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return sorted(values)
    return values


def aligned_trajectories(
    rows: Sequence[Row], series: Mapping[str, Mapping[str, Any]], score: str = "induction"
) -> go.Figure:
    """Every run's ``score`` over steps, shifted so that its phase change is at step 0.

    Args:
        rows: Result rows (runs without a phase change are left out).
        series: Run id -> the ``series`` of its history file (score -> ``[[step, value]]``).
        score: Which series to draw (the best layer>=1 induction score by default).

    Returns:
        One thin line per run, coloured by setting; x is steps since the run's phase change.
    """
    rows = _check_rows(rows)
    labels, groups = _groups(rows, None)
    palette = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
        "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    ]  # fmt: skip
    fig = go.Figure()
    drawn = 0
    for i, label in enumerate(labels):
        shown = False
        for r in groups[label]:
            phase = r.get("phase") or {}
            points = series.get(r["run_id"], {}).get(score)
            if r.get("status") != "ok" or phase.get("step") is None or not points:
                continue
            steps, values = zip(*points, strict=True)
            fig.add_trace(
                go.Scatter(
                    x=[s - phase["step"] for s in steps],
                    y=list(values),
                    mode="lines",
                    line=dict(width=1, color=palette[i % len(palette)]),
                    opacity=0.6,
                    name=label,
                    legendgroup=label,
                    showlegend=not shown,
                    hovertemplate=f"{r['run_id']}: %{{y:.3f}} at %{{x}}<extra></extra>",
                )
            )
            shown = True
            drawn += 1
    if drawn == 0:
        raise ValueError(f"no run has a phase change and a {score!r} series to draw")
    fig.add_vline(x=0, line_dash="dash", line_color="gray")
    fig.update_layout(
        title=f"{score.replace('_', '-')} score of every run, aligned at its phase change",
        xaxis_title="steps since the phase change",
        yaxis_title=score.replace("_", "-"),
        height=450,
    )
    return fig
