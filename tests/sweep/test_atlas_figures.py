"""The formation-atlas figures (circuits.plots.atlas) on rows with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from circuits.plots import atlas


def row(i: int, lr: float, formed: int | None, head: str = "L0H0", excess: float = 0.1) -> dict:
    return {
        "run_id": f"r{i}",
        "status": "ok",
        "axes": {"train.lr": lr, "seed": i},
        "settings": {"train": {"lr": lr, "eval_every": 5}},
        "formed": {"induction": {"threshold": 0.4, "step": formed}},
        "phase": None if formed is None else {"step": formed},
        "circuit": {
            "previous_token_head": {"head": head, "score": 0.5},
            "k_composition": {"excess": excess},
        },
    }


ROWS = [row(i, 0.01, 100 + 10 * i, head="L0H1" if i % 4 == 0 else "L0H0") for i in range(10)]
ROWS += [row(10 + i, 0.03, 50 + 5 * i) for i in range(9)] + [row(19, 0.03, None)]


def test_formation_quantiles_names_each_settings_quantiles() -> None:
    fig = atlas.formation_quantiles(ROWS)
    assert len(fig.data) == 2
    q10, q50, q90 = np.quantile([100 + 10 * i for i in range(10)], [0.1, 0.5, 0.9])
    names = {trace.name for trace in fig.data}
    assert f"lr=0.01 (n=10/10; 10/50/90%: {q10:g}/{q50:g}/{q90:g})" in names
    assert any(name.startswith("lr=0.03 (n=9/10;") for name in names)


def test_aligned_band_is_the_median_and_quantiles_of_the_aligned_runs() -> None:
    # Every run is a step at its phase change: aligned, all runs are the same curve.
    series = {
        r["run_id"]: {"induction": [[s, float(s >= r["phase"]["step"])] for s in range(0, 300, 5)]}
        for r in ROWS
        if r["phase"]
    }
    fig = atlas.aligned_band(ROWS, series)
    medians = [t for t in fig.data if "median" in t.name]
    assert len(medians) == 2
    for trace in medians:
        x, y = np.asarray(trace.x), np.asarray(trace.y)
        assert np.all(y[x < 0] == 0) and np.all(y[x >= 0] == 1)
    with pytest.raises(ValueError, match="fewer than 3 runs"):
        atlas.aligned_band(ROWS, {})


def test_previous_token_heads_counts_top_heads_and_splits() -> None:
    finals = {r["run_id"]: [[0.5, 0.45], [0.0, 0.0]] for r in ROWS[:3]}  # 3 split runs
    fig = atlas.previous_token_heads(ROWS, finals)
    bars = {t.name: list(t.y) for t in fig.data if t.type == "bar"}
    assert bars["top head L0H1"] == [3, 0]  # runs 0, 4, 8 of lr=0.01
    assert bars["top head L0H0"] == [7, 10]
    split = next(t for t in fig.data if t.type == "scatter")
    assert list(split.y) == [3, 0]


def test_failure_modes_and_k_composition() -> None:
    late = [*ROWS, row(20, 0.01, 1000)]
    fig = atlas.failure_modes(late)
    kinds = {t.name: list(t.y) for t in fig.data}
    assert kinds["late"] == [1, 0] and kinds["never formed"] == [0, 1]
    assert kinds["on time"] == [10, 9] and kinds["error"] == [0, 0]
    fig = atlas.k_composition_excess(ROWS)
    assert sorted(len(t.x) for t in fig.data) == [10, 10]


def test_a_run_that_formed_but_missed_its_targets_is_its_own_failure_mode() -> None:
    # Two lr=0.03 runs formed induction and then ended unsolved (e.g. collapsed to chance).
    rows = [{**r, "success": r["run_id"] not in ("r10", "r11")} for r in ROWS]
    kinds = {t.name: list(t.y) for t in atlas.failure_modes(rows).data}
    assert kinds["formed, targets missed"] == [0, 2]
    assert kinds["on time"] == [10, 7] and kinds["never formed"] == [0, 1]


def with_split(r: dict, share: float | None) -> dict:
    """``r`` with the ablation record of its previous-token split (None: no dependence)."""
    from circuits.analysis.split import SPLIT_SHARE

    split = None if share is None else share < SPLIT_SHARE
    record = {"top": r["circuit"]["previous_token_head"]["head"], "share": share, "split": split}
    return {**r, "circuit": {**r["circuit"], "previous_token_split": record}}


def test_previous_token_heads_reads_the_ablation_record_and_says_when_it_falls_back() -> None:
    # lr=0.01: shares 0.1 (split), 0.9, ..., one without dependence; lr=0.03: no record.
    shares = [0.1, 0.2, 0.9, 0.95, 1.0, 0.8, 0.99, 0.3, None, 0.9]
    rows = [with_split(r, s) for r, s in zip(ROWS[:10], shares, strict=True)] + ROWS[10:]
    # Final scores that the score rule would read as split for every run: ignored where an
    # ablation record exists.
    finals = {r["run_id"]: [[0.5, 0.45], [0.0, 0.0]] for r in rows}
    fig = atlas.previous_token_heads(rows, finals)
    split = next(t for t in fig.data if t.name.startswith("split"))
    assert list(split.y) == [3, 10]  # shares 0.1, 0.2, 0.3; lr=0.03 by the score rule
    undetermined = next(t for t in fig.data if t.name == "undetermined")
    assert list(undetermined.y) == [1, 0]
    subtitle = fig.layout.title.subtitle.text
    assert "10 run(s) without an ablation record" in subtitle and "mean-ablated" in subtitle
    # All rows recorded: no fallback is mentioned.
    recorded = atlas.previous_token_heads(rows[:10])
    assert "without an ablation record" not in recorded.layout.title.subtitle.text
    assert list(next(t for t in recorded.data if t.name == "split").y) == [3]


def test_previous_token_share_draws_each_settings_shares() -> None:
    shares = [0.1, 0.2, 0.9, 0.95, 1.0, 0.8, 0.99, 0.3, None, 0.9]
    rows = [with_split(r, s) for r, s in zip(ROWS[:10], shares, strict=True)] + ROWS[10:]
    fig = atlas.previous_token_share(rows)
    (box,) = fig.data  # lr=0.03 has no record: no box
    assert sorted(box.x) == sorted(s for s in shares if s is not None)
    assert box.name == "lr=0.01 (n=9; split 3)"
    with pytest.raises(ValueError, match="no run has a previous-token split"):
        atlas.previous_token_share(ROWS)
