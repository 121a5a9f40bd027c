"""When did it form? Threshold crossings and the phase change of one run's score series.

Both work on series of ``(step, value)`` pairs, one value per evaluation (see
:func:`circuits.sweep.runner.score_series` for how they are read from a training history).

**Formation** of a target: the first evaluated step at which its series reaches the threshold
(e.g. the best induction score >= 0.4). Evaluations are ``eval_every`` steps apart, so the true
crossing lies in the ``eval_every`` steps before.

**Phase change** (the rule, :data:`PHASE_RULE`): the step ending the evaluation interval over
which the best induction score (the highest of any head after layer 0) rose fastest per step,
``argmax_i (s_i - s_{i-1}) / (step_i - step_{i-1})``. Induction heads form abruptly (Olsson et
al. 2022), so that interval brackets the bump; ties go to the earliest interval. A history with
no induction score (a task without repeated-sequence probes) falls back to the steepest drop of
the probe loss, the rule of :func:`circuits.plots.phase_change_step`. No phase change is
recorded when the series never moves the right way or has fewer than two evaluations.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping, Sequence
from typing import Any

Series = Sequence[tuple[int, float]]

PHASE_RULE = (
    "steepest rise of the best layer>=1 induction score per step (else: steepest probe-loss drop)"
)


def first_crossing(series: Series, threshold: float, lower: bool = False) -> int | None:
    """The first step whose value is at least ``threshold`` (at most, if ``lower``), or None."""
    for step, value in series:
        if (value <= threshold) if lower else (value >= threshold):
            return int(step)
    return None


def steepest(series: Series, direction: int) -> tuple[int, float] | None:
    """``(step, rate)`` of the interval with the largest ``direction * change`` per step.

    ``direction`` is +1 for a rise, -1 for a drop; ``rate`` is that change per step (> 0).
    None with fewer than two points or when the series never moves that way.
    """
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction!r}")
    best: tuple[int, float] | None = None
    for (s0, v0), (s1, v1) in itertools.pairwise(series):
        if s1 <= s0:
            raise ValueError(f"steps must increase, got {s0} then {s1}")
        rate = direction * (v1 - v0) / (s1 - s0)
        if rate > 0 and (best is None or rate > best[1]):
            best = (int(s1), float(rate))
    return best


def phase_change(series: Mapping[str, Series]) -> dict[str, Any] | None:
    """The phase change of one run by :data:`PHASE_RULE`.

    Args:
        series: Score name -> ``(step, value)`` pairs; reads ``"induction"``, else ``"loss"``.

    Returns:
        ``{"score": name, "step": step, "rate": change per step}`` or None.
    """
    if series.get("induction"):
        found, score = steepest(series["induction"], +1), "induction"
    elif series.get("loss"):
        found, score = steepest(series["loss"], -1), "loss"
    else:
        return None
    if found is None:
        return None
    return {"score": score, "step": found[0], "rate": found[1]}


def formation(
    series: Mapping[str, Series],
    thresholds: Mapping[str, float],
    seconds_at: Mapping[int, float],
    lower: Collection[str] = (),
) -> dict[str, dict[str, Any]]:
    """When each thresholded score first reached its threshold.

    Args:
        series: Score name -> ``(step, value)`` pairs.
        thresholds: Score name -> threshold (a score absent from ``series`` never forms).
        seconds_at: Evaluated step -> seconds since the run started.
        lower: Scores for which lower is better (formed once at or below the threshold).

    Returns:
        Name -> ``{"threshold", "step", "seconds"}`` (step and seconds None if never reached).
    """
    out: dict[str, dict[str, Any]] = {}
    for name, threshold in thresholds.items():
        step = first_crossing(series.get(name, ()), threshold, lower=name in lower)
        out[name] = {
            "threshold": threshold,
            "step": step,
            "seconds": None if step is None else seconds_at.get(step),
        }
    return out
