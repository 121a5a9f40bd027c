"""One self-contained HTML page of a sweep's results (``circuits sweep-report``).

The page is rendered like the model report (:func:`circuits.report.render`: plotly.js inline
once, one section per figure), so it opens offline. Sections a sweep cannot have (a phase
diagram with fewer than two swept axes, trajectories when no run has a phase change) are left
out rather than drawn empty.
"""

from __future__ import annotations

import contextlib
import json
import statistics
from pathlib import Path
from typing import Any

from circuits.analysis.phase import PHASE_RULE
from circuits.sweep.store import RESULTS, SPEC, ResultsStore, read_rows


def load_results(path: str | Path) -> tuple[Path, list[dict[str, Any]]]:
    """The sweep directory and its rows, from the directory or its ``results.jsonl``."""
    path = Path(path)
    root = path if path.is_dir() else path.parent
    results = root / RESULTS if path.is_dir() else path
    if not results.is_file():
        raise FileNotFoundError(f"no sweep results at {results}")
    rows, _ = read_rows(results)
    if not rows:
        raise ValueError(f"{results} has no finished runs yet")
    return root, rows


def formation_stats(rows: list[dict[str, Any]], score: str = "induction") -> dict[str, Any]:
    """Median, quartiles and range of the step at which ``score`` formed, and the success rate.

    Over the runs that finished ok and where ``score`` formed; ``success`` is the share of all
    rows that met every target.
    """
    from circuits.plots.sweep import formed_step

    steps = sorted(s for s in (formed_step(r, score) for r in rows) if s is not None)
    out: dict[str, Any] = {
        "runs": len(rows),
        "failed": sum(1 for r in rows if r.get("status") != "ok"),
        "formed": len(steps),
        "success": sum(1 for r in rows if r.get("status") == "ok" and r.get("success")),
    }
    out["success_rate"] = out["success"] / len(rows) if rows else 0.0
    if steps:
        q = statistics.quantiles(steps, n=4, method="inclusive") if len(steps) > 1 else steps * 3
        out.update(median=statistics.median(steps), q1=q[0], q3=q[2], min=steps[0], max=steps[-1])
    return out


def sweep_report(path: str | Path, title: str | None = None) -> str:
    """The HTML page of the sweep at ``path`` (its directory or ``results.jsonl``)."""
    from circuits.plots import sweep as sp
    from circuits.report import Section, render

    root, rows = load_results(path)
    spec_file = root / SPEC
    spec = json.loads(spec_file.read_text()) if spec_file.is_file() else {}
    store = ResultsStore(root)
    series, finals = {}, {}
    for r in rows:
        if r.get("status") == "ok" and r.get("history"):
            # The trajectories show the runs that have a history file.
            with contextlib.suppress(FileNotFoundError):
                history = store.history(r["run_id"])
                series[r["run_id"]] = history.get("series", {})
                last = (history.get("history") or [{}])[-1]
                if "previous_token" in last:
                    finals[r["run_id"]] = last["previous_token"]
    axes = sp.swept_axes(rows)
    score = "induction" if any(r.get("formed", {}).get("induction") for r in rows) else None
    score = score or next(
        (k for r in rows for k in r.get("formed", {}) if k != "accuracy"), "accuracy"
    )
    sections: list[Section] = []
    add = lambda t, c, f: sections.append(Section(t, c, f))
    add(
        "Formation steps",
        f"For each setting, the share of its runs whose {score} score had reached its "
        "threshold by each training step (an empirical cumulative distribution: a steep rise "
        "is many runs forming together). A run's step is its first evaluation at the "
        "threshold, so it formed in the eval_every steps before it (the resolution, in the "
        "title); runs where it never formed keep the curve below 100% (the setting's name "
        "counts them). Quantiles are in the summary above.",
        sp.formation_steps(rows, score=score),
    )
    add(
        "Success rate",
        "Share of the runs of each setting that met every training target before their last "
        "step; runs that failed with an error count as not met.",
        sp.success_rate(rows),
    )
    if len(axes) >= 2:
        for value, what in (("formation", "median formation step"), ("success", "success rate")):
            add(
                f"Phase diagram: {what}",
                f"The {what} over the first two swept axes ({axes[0]} across, {axes[1]} "
                "down); blank cells have no run (or no run that formed).",
                sp.phase_diagram(rows, axes[0], axes[1], value=value, score=score),
            )
    try:
        trajectories = sp.aligned_trajectories(rows, series, score=score)
    except ValueError:
        trajectories = None
    if trajectories is not None:
        add(
            "Trajectories aligned at the phase change",
            f"Every run's {score} score over training, shifted so that its phase change is at "
            f"step 0. Phase change rule: {PHASE_RULE}.",
            trajectories,
        )
    _atlas_sections(rows, series, finals, score, add)
    stats = formation_stats(rows, score)
    summary: dict[str, Any] = {
        "sweep": spec.get("name", root.name),
        "runs": f"{stats['runs']} ({stats['failed']} failed)",
        "swept axes": ", ".join(axes) or "seeds only",
        f"{score} formed": f"{stats['formed']}/{stats['runs']}",
        "success rate": f"{stats['success_rate']:.0%}",
    }
    if "median" in stats:
        summary[f"{score} formation step"] = (
            f"median {stats['median']:g}, quartiles {stats['q1']:g}-{stats['q3']:g}, "
            f"range {stats['min']}-{stats['max']}"
        )
    split = _split_summary(rows)
    if split:
        summary["previous-token work split"] = split
    every = sp.eval_interval(rows)
    if every:
        summary["resolution"] = (
            f"evaluated every {', '.join(map(str, every))} steps (set train.eval_every in the "
            "spec to resolve formation and the phase change more finely)"
        )
    for r in [r for r in rows if r.get("status") != "ok"][:5]:
        summary[f"failed {r['run_id']}"] = r.get("error")
    return render(sections, title or f"circuits sweep: {summary['sweep']}", summary)


def _split_summary(rows: list[dict[str, Any]]) -> str | None:
    """``"k/n runs (by ablation ...)"``: the runs whose ablation record says the previous-token
    work is split, over those with a record that decides; None when no row has one."""
    from circuits.analysis.split import SPLIT_SHARE

    records = [
        r["circuit"]["previous_token_split"]
        for r in rows
        if r.get("status") == "ok" and (r.get("circuit") or {}).get("previous_token_split")
    ]
    decided = [s["split"] for s in records if s.get("split") is not None]
    if not decided:
        return None
    text = (
        f"{sum(decided)}/{len(decided)} runs (by ablation: the top head alone carries < "
        f"{SPLIT_SHARE:.0%} of the work)"
    )
    if len(records) > len(decided):
        text += f"; {len(records) - len(decided)} without previous-token dependence"
    return text


def _atlas_sections(
    rows: list[dict[str, Any]],
    series: dict[str, Any],
    finals: dict[str, Any],
    score: str,
    add: Any,
) -> None:
    """The formation atlas (:mod:`circuits.plots.atlas`): distributions over seeds per setting.
    A figure the sweep has no data for (no phase change, no layer-0 head) is left out."""
    from circuits.analysis.split import SPLIT_SHARE
    from circuits.plots import atlas

    figures = [
        (
            "Formation step: distribution",
            f"Each run's {score} formation step (a point), per setting, with the 10%, 50% and "
            "90% quantiles in the setting's name.",
            lambda: atlas.formation_quantiles(rows, score),
        ),
        (
            "Aligned trajectories: median and 10-90% band",
            f"The {score} score against steps since each run's phase change: the median over "
            "the setting's runs and the band between its 10% and 90% quantiles (where at "
            "least 3 runs have a value).",
            lambda: atlas.aligned_band(rows, series, score),
        ),
        (
            "Previous-token head",
            "Which layer-0 head each run ended with as its top previous-token head, and "
            "(diamonds) in how many runs the previous-token work is split across heads: "
            f"mean-ablating the top head alone costs less than {SPLIT_SHARE:.0%} of the probe "
            "accuracy that "
            "mean-ablating every head below the induction head costs. Rows of sweeps run "
            "before this ablation was recorded fall back to the final scores (two or more "
            "layer-0 heads at 0.4 or more); the subtitle says how many.",
            lambda: atlas.previous_token_heads(rows, finals),
        ),
        (
            "Previous-token head: its share of the work",
            "Per run, the probe accuracy lost when the top previous-token head alone is "
            "mean-ablated, over that lost when every head below the induction head is: 1 "
            "when it does the work alone, near 0 when another head can stand in for it. Runs "
            "whose accuracy does not depend on those heads have no share.",
            lambda: atlas.previous_token_share(rows),
        ),
        (
            "K-composition excess",
            "How much the K-composition from the top previous-token head into the top "
            "induction head exceeds that of random matrices of the same shapes, per run.",
            lambda: atlas.k_composition_excess(rows),
        ),
        (
            "Failure modes",
            f"Runs whose {score} formed on time, late (after twice the setting's median), "
            "never within their steps, or that failed with an error.",
            lambda: atlas.failure_modes(rows, score),
        ),
    ]
    for title, caption, make in figures:
        try:
            figure = make()
        except ValueError:  # nothing of this kind in the sweep: no empty figure
            continue
        add(title, caption, figure)
