"""The toolkit's one phase-change definition (circuits.analysis.phase), checked against an
independent computation on the shipped checkpoints and on hand-made histories."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from circuits.analysis.phase import (
    PhaseChange,
    phase_change,
    prefix_matching_step,
    steepest_fall,
)

DATA = Path(__file__).resolve().parents[2] / "data"


def record(step: int, loss: float, induction: float | None = None) -> dict:
    out: dict = {"step": step, "loss": loss, "accuracy": 0.0}
    if induction is not None:  # layer 0 high on purpose: it must not count
        out["induction"] = [[0.9, 0.9], [induction, 0.0]]
    return out


def reference(series: list[tuple[int, float]]) -> tuple[int, int] | None:
    """The rule written out directly: per-step slopes; search from the first interval falling
    more steeply than the previous one; the steepest fall after it."""
    slopes = [
        ((s0, s1), (v1 - v0) / (s1 - s0)) for (s0, v0), (s1, v1) in itertools.pairwise(series)
    ]
    starts = [i for i in range(1, len(slopes)) if slopes[i][1] < slopes[i - 1][1] - 1e-12]
    if not starts:
        return None
    window = slopes[starts[0] :]
    best = min(window, key=lambda w: w[1])
    return best[0] if best[1] < 0 else None


def test_the_shipped_two_layer_model_agrees_with_the_reference_and_the_cross_check() -> None:
    from circuits import checkpoint

    history = checkpoint.read_metadata(DATA / "induction_2l")["history"]
    series = [(r["step"], r["loss"]) for r in history]
    found = phase_change(history)
    assert (found.start, found.step) == reference(series)
    assert found.resolution == found.step - found.start == 25  # eval_every of that run
    # The cross-check: first evaluation whose best layer>=1 induction score reaches 0.4.
    best = [max(r["scores"]["induction"][1]) for r in history]
    first = next(r["step"] for r, b in zip(history, best, strict=True) if b >= 0.4)
    assert found.prefix_matching_step == first
    # The two agree to one evaluation interval on this run.
    assert abs(found.step - found.prefix_matching_step) <= found.resolution


def test_the_initial_descent_is_never_the_phase_change() -> None:
    # A steep initial descent (3.5 -> 2.0 in 10 steps), a plateau, then the bump.
    series = [(0, 3.5), (10, 2.0), (20, 1.9), (30, 1.85), (40, 1.0), (50, 0.8), (60, 0.75)]
    history = [record(s, v) for s, v in series]
    found = phase_change(history)
    assert (found.start, found.step) == (30, 40) == reference(series)
    assert found.rate == pytest.approx(0.085)
    # The rule that took the whole run's steepest fall would have said step 10.
    assert min(itertools.pairwise(series), key=lambda p: p[1][1] - p[0][1])[1][0] == 10
    # A run that only decelerates has no phase change.
    assert phase_change([record(s, v) for s, v in series[:3]]) is None
    assert phase_change(history[:2]) is None


def test_slopes_are_per_step_and_ties_go_to_the_earliest() -> None:
    uneven = [(0, 2.0), (10, 1.99), (20, 1.5), (1000, 0.5)]  # 1.0 over 980 steps is slow
    assert steepest_fall(uneven)[:2] == (10, 20)
    tie = [(0, 1.0), (10, 0.99), (20, 0.5), (30, 0.01), (40, 0.0)]
    assert steepest_fall(tie)[:2] == (10, 20)
    # Equal slopes up to rounding (2.9-3.0, 2.8-2.9) do not count as steepening.
    flat_then_bump = [(s, 3.0 - 0.1 * i) for i, s in enumerate((0, 10, 20, 30))] + [(40, 1.0)]
    assert steepest_fall(flat_then_bump)[:2] == (30, 40)


def test_smoothing_and_bad_input() -> None:
    series = [(0, 3.0), (10, 3.0), (20, 2.0), (30, 1.0), (40, 1.0)]
    assert steepest_fall(series)[:2] == (10, 20)  # a tie with (20, 30): the earliest
    smoothed = steepest_fall(series, smooth=3)  # [3, 2.67, 2, 1.33, 1]: (10, 20) and (20, 30)
    assert smoothed is not None and smoothed[2] == pytest.approx(2 / 30)
    for bad in (0, 2, -1, 1.0, True):
        with pytest.raises(ValueError, match="smooth"):
            steepest_fall(series, smooth=bad)
    with pytest.raises(ValueError, match="steps must increase"):
        steepest_fall([(10, 1.0), (10, 0.5), (20, 0.1)])
    with pytest.raises(ValueError, match="NaN"):
        steepest_fall([(0, 1.0), (10, float("nan")), (20, 0.1)])
    with pytest.raises(TypeError, match="list of records"):
        phase_change({"step": 1})
    with pytest.raises(ValueError, match="no step"):
        phase_change([{"loss": 1.0}])


def test_records_of_every_version_read_the_same() -> None:
    from circuits.records import EvalRecord

    flat = [record(s, v, ind) for s, v, ind in ((0, 3.0, 0.0), (10, 2.9, 0.1), (20, 1.0, 0.5))]
    flat.append(record(30, 0.9, 0.6))
    typed = [EvalRecord.from_dict(r) for r in flat]
    nested = [r.to_dict() for r in typed]
    results = {repr(phase_change(h)) for h in (flat, typed, nested)}
    assert len(results) == 1
    found = phase_change(flat)
    assert isinstance(found, PhaseChange) and found.prefix_matching_step == 20
    assert found.to_dict() == {
        "score": "loss",
        "step": 20,
        "start": 10,
        "resolution": 10,
        "rate": pytest.approx(0.19),
        "prefix_matching_step": 20,
    }
    # Layer 0 does not count for the cross-check (induction needs composition).
    assert prefix_matching_step([record(0, 1.0, 0.1)]) is None


def test_the_sweep_the_figure_and_the_report_use_this_definition() -> None:
    import circuits.sweep.phase as sweep_phase
    from circuits.plots.training import phase_change_step, training_dynamics

    series = [(0, 3.5), (10, 2.0), (20, 1.9), (30, 1.85), (40, 1.0), (50, 0.8), (60, 0.75)]
    history = [record(s, v, 0.5 if s >= 40 else 0.1) for s, v in series]
    assert sweep_phase.phase_change is phase_change
    assert phase_change_step(history) == phase_change(history).step == 40
    fig = training_dynamics(history)
    assert {shape.x0 for shape in fig.layout.shapes} == {40}
    assert any(a.text == "phase change (steps 30-40)" for a in fig.layout.annotations)
