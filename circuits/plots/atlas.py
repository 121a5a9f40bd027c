"""The formation atlas of a sweep: distributions over seeds, per setting (issue 24).

Every function takes the rows of a sweep's ``results.jsonl`` (and, where said, each run's
history ``series``/final evaluation) and returns a plotly figure; a *setting* is a run's swept
values other than the seed (:func:`circuits.plots.sweep.setting_label`).

- :func:`formation_quantiles`: the formation step's distribution per setting, with its 10%,
  50% and 90% quantiles;
- :func:`aligned_band`: a score's trajectory aligned at each run's phase change, as the median
  and the 10-90% band over runs;
- :func:`previous_token_heads`: which layer-0 head became the previous-token head, and in how
  many runs the work is split (by ablation: the top head alone vs every candidate head);
- :func:`previous_token_share`: the top head's share of that work, per run;
- :func:`k_composition_excess`: the K-composition excess of the circuit each run ended with;
- :func:`failure_modes`: never formed / formed late, counted per setting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from circuits.plots.sweep import _check_rows, _groups, formed_step

__all__ = [
    "aligned_band",
    "failure_modes",
    "formation_quantiles",
    "k_composition_excess",
    "previous_token_heads",
    "previous_token_share",
]

Row = Mapping[str, Any]
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _circuit_values(rows: Sequence[Row], record: str, key: str) -> list[float]:
    """``row["circuit"][record][key]`` of the ok rows that have it."""
    return [
        rec[key]
        for r in rows
        if r.get("status") == "ok"
        and (rec := (r.get("circuit") or {}).get(record))
        and rec.get(key) is not None
    ]


def formation_quantiles(rows: Sequence[Row], score: str = "induction") -> go.Figure:
    """One box per setting of the steps at which ``score`` formed (every run a point), with
    the 10%, 50% and 90% quantiles in the hover and the setting's name."""
    rows = _check_rows(rows)
    labels, groups = _groups(rows, None)
    fig = go.Figure()
    for i, label in enumerate(labels):
        steps = [s for s in (formed_step(r, score) for r in groups[label]) if s is not None]
        if not steps:
            continue
        q10, q50, q90 = np.quantile(steps, [0.1, 0.5, 0.9])
        fig.add_trace(
            go.Box(
                x=steps,
                name=f"{label} (n={len(steps)}/{len(groups[label])}; 10/50/90%: "
                f"{q10:g}/{q50:g}/{q90:g})",
                boxpoints="all",
                jitter=0.4,
                marker=dict(size=4, color=PALETTE[i % len(PALETTE)]),
                orientation="h",
            )
        )
    if not fig.data:
        raise ValueError(f"no run formed {score!r}")
    fig.update_layout(
        title=f"step at which {score.replace('_', '-')} formed, per setting",
        xaxis_title="training step (first evaluation at the threshold)",
        showlegend=False,
        height=max(300, 120 + 60 * len(fig.data)),
    )
    return fig


def aligned_band(
    rows: Sequence[Row],
    series: Mapping[str, Mapping[str, Any]],
    score: str = "induction",
    min_runs: int = 3,
) -> go.Figure:
    """``score`` against steps since each run's phase change: median and 10-90% band per
    setting, where at least ``min_runs`` runs have a value (each run linearly interpolated
    between its evaluations, never extrapolated)."""
    rows = _check_rows(rows)
    labels, groups = _groups(rows, None)
    fig = go.Figure()
    for i, label in enumerate(labels):
        curves = []
        for r in groups[label]:
            phase = (r.get("phase") or {}).get("step")
            points = series.get(r["run_id"], {}).get(score)
            if r.get("status") == "ok" and phase is not None and points:
                steps, values = (np.asarray(v, dtype=float) for v in zip(*points, strict=True))
                curves.append((steps - phase, values))
        if len(curves) < min_runs:
            continue
        grid = np.unique(np.concatenate([c[0] for c in curves]))
        table = np.full((len(curves), len(grid)), np.nan)
        for j, (x, y) in enumerate(curves):
            inside = (grid >= x[0]) & (grid <= x[-1])
            table[j, inside] = np.interp(grid[inside], x, y)
        enough = np.sum(~np.isnan(table), axis=0) >= min_runs
        if not enough.any():
            continue
        x = grid[enough]
        lo, mid, hi = np.nanquantile(table[:, enough], [0.1, 0.5, 0.9], axis=0)
        colour = PALETTE[i % len(PALETTE)]
        fig.add_trace(
            go.Scatter(
                x=np.concatenate([x, x[::-1]]),
                y=np.concatenate([hi, lo[::-1]]),
                fill="toself",
                fillcolor=_rgba(colour, 0.2),
                line=dict(width=0),
                name=f"{label}: 10-90%",
                hoverinfo="skip",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=x, y=mid, mode="lines", line=dict(color=colour, width=2),
                name=f"{label}: median of {len(curves)} runs",
            )
        )  # fmt: skip
    if not fig.data:
        raise ValueError(
            f"fewer than {min_runs} runs per setting have a phase change and {score!r}"
        )
    fig.add_vline(x=0, line_dash="dash", line_color="gray")
    fig.update_layout(
        title=f"{score.replace('_', '-')} aligned at the phase change: median and 10-90% band",
        xaxis_title="steps since the phase change",
        yaxis_title=score.replace("_", "-"),
        height=450,
    )
    return fig


def _split_of(row: Row, finals: Mapping[str, Any], threshold: float) -> tuple[Any, bool]:
    """``(split, by_ablation)``: the row's ablation record's ``split`` (True, False, or None:
    no previous-token dependence), or, for a row written before it existed, the score rule
    (two or more layer-0 heads at ``threshold`` or above in the final table; None without a
    table)."""
    circuit = row.get("circuit") or {}
    if "previous_token_split" in circuit:
        return (circuit["previous_token_split"] or {}).get("split"), True
    table = finals.get(row["run_id"])
    if table is None:
        return None, False
    return sum(v >= threshold for v in table[0]) >= 2, False


def previous_token_heads(
    rows: Sequence[Row], finals: Mapping[str, Any] | None = None, threshold: float = 0.4
) -> go.Figure:
    """Per setting, how many runs ended with each layer-0 head as the top previous-token head,
    and how many split the previous-token work across heads.

    A run's split is read from its ablation record (``circuit.previous_token_split``: the top
    head alone carries less than :data:`~circuits.analysis.split.SPLIT_SHARE` of the accuracy
    lost by mean-ablating every candidate head). Rows written before that record existed fall
    back to the final scores (two or more layer-0 heads at ``threshold`` or above), and the
    subtitle says how many did.

    Args:
        finals: Run id -> the run's final ``previous_token`` table ``[n_layers][n_heads]``
            (only read for rows without an ablation record).
    """
    from circuits.analysis.split import SPLIT_SHARE

    rows = _check_rows(rows)
    finals = finals or {}
    labels, groups = _groups(rows, None)
    heads: list[str] = []
    counts: dict[str, dict[str, int]] = {}
    split: dict[str, int] = {}
    undetermined: dict[str, int] = {}
    by_scores = ablated = 0
    for label in labels:
        counts[label], split[label], undetermined[label] = {}, 0, 0
        for r in groups[label]:
            top = ((r.get("circuit") or {}).get("previous_token_head") or {}).get("head")
            if r.get("status") != "ok" or top is None or not str(top).startswith("L0"):
                continue
            counts[label][top] = counts[label].get(top, 0) + 1
            heads += [top] if top not in heads else []
            is_split, by_ablation = _split_of(r, finals, threshold)
            ablated += by_ablation
            by_scores += not by_ablation and is_split is not None
            split[label] += is_split is True
            undetermined[label] += is_split is None
    if not heads:
        raise ValueError("no run has a layer-0 previous-token head")
    fig = go.Figure()
    for i, head in enumerate(sorted(heads)):
        fig.add_trace(
            go.Bar(
                x=labels,
                y=[counts[label].get(head, 0) for label in labels],
                name=f"top head {head}",
                marker_color=PALETTE[i % len(PALETTE)],
            )
        )
    fig.add_trace(
        go.Scatter(
            x=labels,
            y=[split[label] for label in labels],
            mode="markers",
            marker=dict(symbol="diamond", size=12, color="black"),
            name="split" if not by_scores else "split (see subtitle)",
        )
    )
    if any(undetermined.values()):
        fig.add_trace(
            go.Scatter(
                x=labels,
                y=[undetermined[label] for label in labels],
                mode="markers",
                marker=dict(symbol="x", size=10, color="#7f7f7f"),
                name="undetermined",
            )
        )
    rule = []
    if ablated:
        rule.append(
            f"split: top head alone < {SPLIT_SHARE:.0%} of the accuracy lost when every "
            "candidate head is mean-ablated"
        )
    if by_scores:
        rule.append(
            f"{by_scores} run(s) without an ablation record (older rows): split read from "
            f"final scores, >= 2 layer-0 heads >= {threshold:g}"
        )
    if any(undetermined.values()):
        rule.append("undetermined: no previous-token dependence, or no record")
    fig.update_layout(
        barmode="stack",
        title=dict(
            text="which layer-0 head became the previous-token head (runs per setting)",
            subtitle=dict(text="<br>".join(rule)),
        ),
        margin=dict(t=60 + 18 * len(rule)),
        yaxis_title="runs",
        height=420 + 18 * len(rule),
    )
    return fig


def previous_token_share(rows: Sequence[Row]) -> go.Figure:
    """Per setting, the distribution of the top previous-token head's share of the work: the
    accuracy lost when it alone is mean-ablated over that lost when every candidate head is
    (``circuit.previous_token_split.share``; 1: it works alone, 0: another head stands in).
    Rows without the record, or without previous-token dependence, are not drawn."""
    from circuits.analysis.split import SPLIT_SHARE

    rows = _check_rows(rows)
    labels, groups = _groups(rows, None)
    fig = go.Figure()
    for i, label in enumerate(labels):
        shares = _circuit_values(groups[label], "previous_token_split", "share")
        if shares:
            below = sum(v < SPLIT_SHARE for v in shares)
            fig.add_trace(
                go.Box(
                    x=shares, name=f"{label} (n={len(shares)}; split {below})",
                    boxpoints="all", jitter=0.4, orientation="h",
                    marker=dict(size=4, color=PALETTE[i % len(PALETTE)]),
                )
            )  # fmt: skip
    if not fig.data:
        raise ValueError("no run has a previous-token split record with a share")
    fig.add_vline(
        x=SPLIT_SHARE, line_dash="dash", line_color="gray",
        annotation_text=f"split below {SPLIT_SHARE:g}", annotation_position="top",
    )  # fmt: skip
    fig.update_layout(
        title="top previous-token head's share of the previous-token work (by ablation)",
        xaxis_title="share = (a - a_top) / (a - a_all); a: probe accuracy, a_top / a_all: ablated",
        showlegend=False,
        height=max(300, 120 + 60 * len(fig.data)),
    )
    return fig


def k_composition_excess(rows: Sequence[Row]) -> go.Figure:
    """Per setting, the distribution of the K-composition excess (over the random-matrix
    baseline) from the top layer-0 head into the top induction head, at the end of each run."""
    rows = _check_rows(rows)
    labels, groups = _groups(rows, None)
    fig = go.Figure()
    for i, label in enumerate(labels):
        values = _circuit_values(groups[label], "k_composition", "excess")
        if values:
            fig.add_trace(
                go.Box(
                    x=values, name=f"{label} (n={len(values)})", boxpoints="all", jitter=0.4,
                    marker=dict(size=4, color=PALETTE[i % len(PALETTE)]), orientation="h",
                )
            )  # fmt: skip
    if not fig.data:
        raise ValueError("no run has a K-composition score")
    fig.add_vline(x=0, line_dash="dash", line_color="gray")
    fig.update_layout(
        title="K-composition excess over the random baseline (previous-token -> induction head)",
        xaxis_title="excess",
        showlegend=False,
        height=max(300, 120 + 60 * len(fig.data)),
    )
    return fig


def failure_modes(rows: Sequence[Row], score: str = "induction", late: float = 2.0) -> go.Figure:
    """Per setting: runs that formed ``score`` on time, late (after ``late`` times the
    setting's median formation step), formed it but ended without meeting their targets
    (``success`` false: the run lost it again, or never reached its other targets), never
    formed it, or failed with an error."""
    rows = _check_rows(rows)
    labels, groups = _groups(rows, None)
    kinds: dict[str, list[int]] = {
        "on time": [],
        "late": [],
        "formed, targets missed": [],
        "never formed": [],
        "error": [],
    }
    for label in labels:
        ok = [r for r in groups[label] if r.get("status") == "ok"]
        formed_rows = [r for r in ok if formed_step(r, score) is not None]
        missed = [r for r in formed_rows if r.get("success") is False]
        steps = {id(r): formed_step(r, score) or 0 for r in formed_rows}  # all formed: not None
        kept = [steps[id(r)] for r in formed_rows if r.get("success") is not False]
        all_formed = list(steps.values())
        median = float(np.median(all_formed)) if all_formed else None
        n_late = sum(s > late * median for s in kept) if median is not None else 0
        kinds["on time"].append(len(kept) - n_late)
        kinds["late"].append(n_late)
        kinds["formed, targets missed"].append(len(missed))
        kinds["never formed"].append(len(ok) - len(formed_rows))
        kinds["error"].append(len(groups[label]) - len(ok))
    colours = {
        "on time": "#2ca02c",
        "late": "#ff7f0e",
        "formed, targets missed": "#9467bd",
        "never formed": "#d62728",
        "error": "#7f7f7f",
    }
    fig = go.Figure(
        [go.Bar(x=labels, y=v, name=k, marker_color=colours[k]) for k, v in kinds.items()]
    )
    fig.update_layout(
        barmode="stack",
        title=f"{score.replace('_', '-')}: formed on time, late (> {late:g}x the median), "
        "formed but targets missed, never",
        yaxis_title="runs",
        height=400,
    )
    return fig
