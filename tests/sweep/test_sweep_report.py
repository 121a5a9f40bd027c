"""Sweep figures (known answers from hand-written rows), the HTML page, the CLI, the browser."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from circuits.cli import main
from circuits.plots import sweep as sp
from circuits.sweep.report import formation_stats, sweep_report
from circuits.sweep.store import ResultsStore

# Rows of a 2 x 2 grid (lr x d_model), 2 seeds each; formation steps chosen by hand.
STEPS = {  # (lr, d_model) -> induction formation step per seed (None: never formed)
    (0.01, 16): [200, 300],
    (0.01, 32): [150, None],
    (0.02, 16): [100, 120],
    (0.02, 32): [80, 90],
}


def make_row(lr: float, d_model: int, seed: int, step: int | None) -> dict:
    rid = f"r{lr}-{d_model}-{seed}".replace(".", "")
    return {
        "run_id": rid,
        "status": "ok",
        "error": None,
        "axes": {"train.lr": lr, "model.d_model": d_model, "seed": seed},
        "settings": {"train": {"lr": lr}, "model": {"d_model": d_model}},
        "success": step is not None,
        "formed": {"induction": {"threshold": 0.4, "step": step, "seconds": 1.0}},
        "phase": None if step is None else {"score": "induction", "step": step, "rate": 0.01},
        "history": f"histories/{rid}.json",
        "seconds": 2.0,
    }


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    store = ResultsStore(tmp_path / "sweep")
    store.start({"name": "hand"}, resume=False)
    for (lr, d), steps in STEPS.items():
        for seed, step in enumerate(steps):
            row = make_row(lr, d, seed, step)
            base = step or 100
            series = {"induction": [[base - 50, 0.05], [base, 0.5], [base + 50, 0.7]]}
            store.append(row, {"run_id": row["run_id"], "series": series})
    failed = make_row(0.02, 32, 2, None)
    failed.update(status="failed", error="TrainingDiverged: loss is nan", success=False)
    failed.pop("history")
    store.append(failed)
    return tmp_path / "sweep"


def rows_of(path: Path) -> list[dict]:
    return ResultsStore(path).rows()


def ecdf(fig) -> dict[str, list[tuple[float, float]]]:
    return {t.name: list(zip(t.x, t.y, strict=True)) for t in fig.data}


def test_formation_steps_one_distribution_per_setting(sweep_dir: Path) -> None:
    rows = rows_of(sweep_dir)
    assert sp.swept_axes(rows) == ["train.lr", "model.d_model"]
    fig = sp.formation_steps(rows)
    # Independent computation: for each setting, (step, share of its runs formed by then).
    expected = {}
    for (lr, d), steps in STEPS.items():
        n = len(steps) + (1 if (lr, d) == (0.02, 32) else 0)  # the failed run counts
        formed = sorted(s for s in steps if s is not None)
        name = f"lr={lr}, d_model={d} (formed {len(formed)}/{n})"
        end = formed[-1]  # the hand-made rows have no "steps": the curve ends at its last
        points = [(s, (i + 1) / n) for i, s in enumerate(formed)]
        expected[name] = [(0, 0.0), *points, (end, points[-1][1])]
    assert ecdf(fig) == expected
    assert all(t.line.shape == "hv" for t in fig.data)  # a step function: ties are jumps
    by_lr = ecdf(sp.formation_steps(rows, by=["train.lr"]))
    assert by_lr["lr=0.01 (formed 3/4)"][-1] == (300, 0.75)
    assert by_lr["lr=0.02 (formed 4/5)"][-1] == (120, 0.8)
    # Tied steps are one point whose hover lists every run; the curve runs to the last step.
    tied = [{**make_row(0.01, 16, seed, 100), "steps": 250} for seed in range(3)]
    ((name, points),) = ecdf(sp.formation_steps(tied)).items()
    assert points == [(0, 0.0), (100, 1.0), (250, 1.0)]
    never = [{**make_row(0.01, 16, 0, None), "steps": 250}]
    assert ecdf(sp.formation_steps(never)) == {"all runs (formed 0/1)": [(0, 0.0), (250, 0.0)]}
    assert sp.formation_steps(tied).data[0].text[1].count(", ") == 2
    # The resolution is stated.
    spaced = [{**r, "settings": {**r["settings"], "train": {"eval_every": 25}}} for r in tied]
    assert "evaluated every 25 steps" in sp.formation_steps(spaced).layout.title.text


def test_success_rate_and_phase_diagram(sweep_dir: Path) -> None:
    rows = rows_of(sweep_dir)
    bar = sp.success_rate(rows).data[0]
    assert list(bar.y) == [1.0, 0.5, 1.0, pytest.approx(2 / 3)]
    assert bar.text[-1] == "2/3 (1 failed)"
    heat = sp.phase_diagram(rows, "train.lr", "model.d_model").data[0]
    assert list(heat.x) == ["0.01", "0.02"] and list(heat.y) == ["16", "32"]
    assert [list(r) for r in heat.z] == [[250.0, 110.0], [150.0, 85.0]]  # medians
    success = sp.phase_diagram(rows, "train.lr", "model.d_model", value="success").data[0]
    assert [list(r) for r in success.z] == [[1.0, 1.0], [0.5, pytest.approx(2 / 3)]]
    with pytest.raises(ValueError, match="two different axes"):
        sp.phase_diagram(rows, "train.lr", "train.lr")
    with pytest.raises(ValueError, match="'formation' or 'success'"):
        sp.phase_diagram(rows, "train.lr", "model.d_model", value="loss")
    with pytest.raises(ValueError, match="no result rows"):
        sp.success_rate([])
    with pytest.raises(TypeError, match="list of result rows"):
        sp.success_rate({"run_id": "a"})


def test_trajectories_are_aligned_at_each_phase_change(sweep_dir: Path) -> None:
    rows = rows_of(sweep_dir)
    store = ResultsStore(sweep_dir)
    series = {r["run_id"]: store.history(r["run_id"])["series"] for r in rows if r.get("history")}
    fig = sp.aligned_trajectories(rows, series)
    assert len(fig.data) == 7  # every run that formed; the failed one and the one that didn't
    assert all(list(t.x) == [-50, 0, 50] for t in fig.data)
    with pytest.raises(ValueError, match="no run has a phase change"):
        sp.aligned_trajectories(rows, {})


def test_formation_stats_and_the_page(sweep_dir: Path) -> None:
    rows = rows_of(sweep_dir)
    stats = formation_stats(rows)
    steps = [80, 90, 100, 120, 150, 200, 300]
    assert stats["median"] == 120 and (stats["min"], stats["max"]) == (80, 300)
    assert (stats["runs"], stats["failed"], stats["formed"], stats["success"]) == (9, 1, 7, 7)
    assert stats["q1"] <= 120 <= stats["q3"] and len(steps) == stats["formed"]
    page = sweep_report(sweep_dir)
    # Formation, success, two phase diagrams, trajectories; the atlas's formation-step
    # distribution and failure modes (its other figures need data these rows lack).
    assert len(re.findall(r'<div id="fig-s\d+"', page)) == 7
    assert "Formation step: distribution" in page and "Failure modes" in page
    assert "median 120" in page and "TrainingDiverged: loss is nan" in page
    assert page.count("<script") >= 6  # plotly.js inline once, then one call per figure
    one_axis = sweep_report(sweep_dir / "results.jsonl", title="t")
    assert "<title>t</title>" in one_axis


def test_cli_sweep_report_and_errors(sweep_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "sweep.html"
    assert main(["sweep-report", str(sweep_dir), "-o", str(out)]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert main(["sweep-report", str(tmp_path / "nothing"), "-o", str(tmp_path / "x.html")]) == 2
    assert "no sweep results" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    spec = tmp_path / "s.json"
    spec.write_text('{"name": "s", "seeds": 1}')
    assert main(["sweep", str(spec), "--scheduler", "nowhere"]) == 2
    assert "--scheduler must be" in capsys.readouterr().err
    assert main(["sweep", str(spec), "--workers", "-1"]) == 2
    assert main(["sweep", str(spec), "--out", str(sweep_dir)]) == 2  # has results: --resume
    assert "--resume" in capsys.readouterr().err


@pytest.mark.browser
def test_the_page_renders_in_chromium(sweep_dir: Path, tmp_path: Path) -> None:
    from test_report_browser import render

    page = sweep_report(sweep_dir)
    result = render(page, tmp_path)
    assert result["errors"] == []
    assert result["plots"] == 7  # five sweep figures and two atlas ones
    assert all(n > 0 for n in result["traces"])
