"""When did it form? The phase change of a training run, and when each score crossed its threshold.

This is the toolkit's one definition of the induction **phase change**; the sweep rows, the
report's marker, the training-dynamics figure and notebook 1 all use :func:`phase_change`.

**Definition** (Olsson et al. 2022, "In-context Learning and Induction Heads": the phase-change
window "is selected based on the derivative of the in-context score"; see
``docs/phase-change.md``): the phase change is where the in-context-learning (ICL) score falls
fastest, ``t* = argmin_t ΔICL/Δt``, searched only after the loss's first plateau, so that the
initial descent of every run (learning the token statistics) is never taken for it.

**What is measured.** The ICL score of the synthetic tasks is the mean loss on the repeated part
minus the mean loss on its first occurrence. Training records (``EvalRecord``) hold the first
term only: the probe ``loss``, the masked cross-entropy on the positions whose next token the
context determines, which for the induction task's probe (a random sequence repeated) is exactly
the repeated part. The first occurrence is random tokens, which no model can predict better than
the uniform floor, so after the initial descent that term is a constant and
``ΔICL/Δt = Δloss/Δt``: the phase change is the steepest fall of the probe loss after the first
plateau. On a task whose probe has no repeats the same rule reads its probe loss.

**First plateau.** A run's initial descent is convex (each interval falls less steeply than the
one before); the phase change is "the only place in training where the loss is not convex"
(Olsson et al.). The search therefore starts at the first evaluation interval that falls more
steeply than the one before it; a history that only decelerates has no phase change (None).

**Resolution.** Evaluations are ``eval_every`` steps apart, so ``t*`` is known to lie in the
interval ``(start, step]`` that fell fastest: :class:`PhaseChange` carries both ends and
``resolution = step - start``. To resolve it finer, evaluate more often (``train.eval_every``,
also in a sweep spec's ``base`` or ``grid``). ``smooth`` averages the loss over that many
evaluations first (centred; Olsson et al. smooth their many noisy checkpoints); the default, 1,
does not, because at coarse intervals a 3-point average moves ``t*`` by a whole interval.

**Cross-check.** ``prefix_matching_step``: the first evaluation whose best induction
(prefix-matching) score, over the layers that count (>= 1), reaches 0.4 (ARENA's threshold).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

Series = Sequence[tuple[int, float]]

PHASE_RULE = (
    "steepest fall of the in-context-learning score (the probe loss on the repeated part) after "
    "the first plateau, Olsson et al. 2022; cross-check: first evaluation with an induction "
    "score >= 0.4"
)
PREFIX_MATCHING_THRESHOLD = 0.4
# Slopes equal to this relative tolerance are equal: 2.9-3.0 and 2.8-2.9 must not "steepen".
_REL_TOL = 1e-9


@dataclass(frozen=True)
class PhaseChange:
    """The phase change of one run (see the module docstring).

    Attributes:
        step: The evaluation ending the interval of steepest fall (``t*`` as reported).
        start: The evaluation before it: the fall happened in ``(start, step]``.
        rate: Fall of the ICL score (the probe loss) per step over that interval, in nats.
        prefix_matching_step: The cross-check: first evaluation with a best induction score
            >= 0.4 (None: never, or no induction score recorded).
        score: The recorded quantity read (``"loss"``: the probe loss).
    """

    step: int
    start: int
    rate: float
    prefix_matching_step: int | None = None
    score: str = "loss"

    @property
    def resolution(self) -> int:
        """Steps between the two evaluations that bracket ``t*``."""
        return self.step - self.start

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``score, step, start, resolution, rate, prefix_matching_step``."""
        return {
            "score": self.score,
            "step": self.step,
            "start": self.start,
            "resolution": self.resolution,
            "rate": self.rate,
            "prefix_matching_step": self.prefix_matching_step,
        }


def _smoothed(values: list[float], window: int) -> list[float]:
    if window == 1:
        return values
    half = window // 2
    return [
        math.fsum(values[max(0, i - half) : i + half + 1])
        / len(values[max(0, i - half) : i + half + 1])
        for i in range(len(values))
    ]


def steepest_fall(series: Series, smooth: int = 1) -> tuple[int, int, float] | None:
    """``(start, step, rate)`` of the steepest fall of ``series`` after its first plateau.

    Args:
        series: ``(step, value)`` pairs, steps increasing.
        smooth: Odd number of evaluations of a centred moving average taken first (1: none).

    Returns:
        The interval ``(start, step]`` whose fall per step is largest among the intervals from
        the first one that falls more steeply than its predecessor on, and that fall per step
        (> 0); None with fewer than three points or when the series never steepens.

    Raises:
        ValueError: Steps that do not increase, a non-finite value, or a bad ``smooth``.
    """
    if isinstance(smooth, bool) or not isinstance(smooth, int) or smooth < 1 or smooth % 2 == 0:
        raise ValueError(f"smooth must be an odd int >= 1, got {smooth!r}")
    points = [(int(s), float(v)) for s, v in series]
    for (s0, _), (s1, _) in itertools.pairwise(points):
        if s1 <= s0:
            raise ValueError(f"steps must increase, got {s0} then {s1}")
    if any(not math.isfinite(v) for _, v in points):
        raise ValueError("the series has a NaN or inf value")
    if len(points) < 3:
        return None
    steps = [s for s, _ in points]
    values = _smoothed([v for _, v in points], smooth)
    slopes = [(values[i] - values[i - 1]) / (steps[i] - steps[i - 1]) for i in range(1, len(steps))]
    first = None
    for i in range(1, len(slopes)):
        tol = _REL_TOL * max(abs(slopes[i]), abs(slopes[i - 1]))
        if slopes[i] < slopes[i - 1] - tol:  # the loss steepens: the first plateau is over
            first = i
            break
    if first is None:
        return None
    best = min(range(first, len(slopes)), key=lambda i: (slopes[i], i))  # ties: earliest
    if slopes[best] >= 0:
        return None
    return steps[best], steps[best + 1], -slopes[best]


def _records(history: Iterable[Any]) -> list[Any]:
    if isinstance(history, str | bytes | Mapping):
        raise TypeError(f"history must be a list of records, got {type(history).__name__}")
    records = list(history)
    for r in records:
        if not (isinstance(r, Mapping) or hasattr(r, "scores")) or "step" not in r:
            raise ValueError(f"not an evaluation record (no step): {r!r:.80}")
    return records


def _get(record: Any, key: str) -> Any:
    """A field or a score of a record: an ``EvalRecord``, or a dict of any version (flat, or
    with the scores nested under ``"scores"``)."""
    if key in record:
        return record[key]
    scores = record.get("scores") if isinstance(record, Mapping) else None
    return scores.get(key) if isinstance(scores, Mapping) else None


def prefix_matching_step(
    history: Iterable[Any], threshold: float = PREFIX_MATCHING_THRESHOLD
) -> int | None:
    """The first evaluation whose best induction score (layers >= 1) reaches ``threshold``."""
    from circuits.analysis.scores import get_score

    spec = get_score("induction")
    for record in _records(history):
        table = _get(record, "induction")
        if table is not None:
            best = spec.best(torch.as_tensor(table, dtype=torch.float32))
            if best is not None and best >= threshold:
                return int(record["step"])
    return None


def phase_change(history: Iterable[Any], smooth: int = 1, key: str = "loss") -> PhaseChange | None:
    """The phase change of a training history (see the module docstring).

    Args:
        history: Evaluation records (``TrainResult.history``, a checkpoint's ``history``, or
            their JSON dicts of any version).
        smooth: Centred moving average over this many evaluations first (odd; 1: none).
        key: The recorded quantity: ``"loss"`` (the probe loss, the ICL score up to a
            constant). Another numeric field (``train_loss``) reads that series instead.

    Returns:
        A :class:`PhaseChange`, or None (fewer than three evaluations, or the quantity never
        falls more steeply after its first plateau).
    """
    records = _records(history)
    series = [(int(r["step"]), float(v)) for r in records if (v := _get(r, key)) is not None]
    found = steepest_fall(series, smooth)
    if found is None:
        return None
    start, step, rate = found
    return PhaseChange(step, start, rate, prefix_matching_step(records), key)


# --- threshold crossings (when a target formed) ---


def first_crossing(series: Series, threshold: float, lower: bool = False) -> int | None:
    """The first step whose value is at least ``threshold`` (at most, if ``lower``), or None."""
    for step, value in series:
        if (value <= threshold) if lower else (value >= threshold):
            return int(step)
    return None


def formation(
    series: Mapping[str, Series],
    thresholds: Mapping[str, float],
    seconds_at: Mapping[int, float],
    lower: Collection[str] = (),
) -> dict[str, dict[str, Any]]:
    """When each thresholded score first reached its threshold (an evaluated step: the true
    crossing lies in the ``eval_every`` steps before it).

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
