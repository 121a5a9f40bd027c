"""One run's row, and the driver: failures recorded, workers lost, resume skipping done runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from circuits import HookedTransformer, ModelConfig
from circuits.sweep import SweepSpec, run_sweep, runner
from circuits.sweep import driver as driver_module
from circuits.sweep.runner import circuit_of, execute, score_series
from circuits.sweep.spec import RunSpec
from circuits.sweep.store import ResultsStore


def test_score_series_counts_induction_from_layer_one_only() -> None:
    history = [
        {"step": 10, "loss": 2.0, "accuracy": 0.1, "previous_token": [[0.2, 0.9], [0.1, 0.3]],
         "induction": [[0.99, 0.0], [0.2, 0.5]]},
        {"step": 20, "loss": 1.0, "accuracy": 0.5, "previous_token": [[0.1, 0.1], [0.1, 0.3]],
         "induction": [[0.99, 0.0], [0.7, 0.5]]},
    ]  # fmt: skip
    series = score_series(history)
    assert series["induction"] == [(10, 0.5), (20, 0.7)]  # layer 0's 0.99 never counts
    assert series["previous_token"] == [(10, 0.9), (20, 0.3)]
    assert series["loss"] == [(10, 2.0), (20, 1.0)]
    one_layer = score_series([{"step": 1, "induction": [[0.9]], "previous_token": [[0.1]]}])
    assert "induction" not in one_layer


def test_circuit_of_names_the_top_heads_and_their_k_composition() -> None:
    cfg = ModelConfig(n_layers=2, d_model=16, n_ctx=8, d_vocab=8, n_heads=2, attn_only=True)
    model = HookedTransformer(cfg)
    # Hand-build L1H1's keys and queries so that its QK circuit reads what L0H0's OV writes:
    # W_OV W_QK^T = (W_V W_O)(W_V W_O)^T, far from random.
    with torch.no_grad():
        model.blocks[1].attn.W_K[1] = model.blocks[0].attn.W_O[0].T
        model.blocks[1].attn.W_Q[1] = model.blocks[0].attn.W_V[0]
    final = {"previous_token": [[0.9, 0.2], [0.1, 0.3]], "induction": [[0.0, 0.0], [0.4, 0.8]]}
    circuit = circuit_of(model, final)
    assert circuit["previous_token_head"] == {"head": "L0H0", "score": 0.9}
    assert [h["head"] for h in circuit["induction_heads"]] == ["L1H1", "L1H0"]
    assert [h["score"] for h in circuit["induction_heads"]] == pytest.approx([0.8, 0.4])
    k = circuit["k_composition"]
    assert (k["source"], k["target"]) == ("L0H0", "L1H1")
    assert k["source_is_previous_token_head"]
    assert k["excess"] == pytest.approx(k["score"] - k["baseline"])
    assert k["excess"] > 0.2  # twice the random baseline's score (0.26 at these shapes)
    other = circuit_of(model, {**final, "previous_token": [[0.1, 0.9], [0.1, 0.3]]})
    assert other["k_composition"]["source"] == "L0H0"  # read from the weights, not the scores
    assert not other["k_composition"]["source_is_previous_token_head"]


def test_a_run_records_formation_phase_and_circuit(small_spec: dict) -> None:
    spec = SweepSpec.from_dict({**small_spec, "grid": {"train.lr": [0.03]}, "seeds": [1]})
    out = execute(spec.runs()[0])
    row, history = out["row"], out["history"]
    assert row["status"] == "ok" and row["error"] is None
    assert row["steps"] == 60 and len(history["losses"]) == 60
    assert [r["step"] for r in history["history"]] == [10, 20, 30, 40, 50, 60]
    assert set(row["formed"]) == {"accuracy", "induction", "previous_token"}
    series = {k: [tuple(p) for p in v] for k, v in history["series"].items()}
    for name, formed in row["formed"].items():
        crossed = [s for s, v in series[name] if v >= formed["threshold"]]
        assert formed["step"] == (crossed[0] if crossed else None)
    # The phase change by the toolkit's one definition, read from the same history.
    from circuits.analysis.phase import phase_change

    expected = phase_change(history["history"])
    assert row["phase"] == (None if expected is None else expected.to_dict())
    if row["phase"] is not None:
        assert row["phase"]["score"] == "loss" and row["phase"]["resolution"] == 10
    assert row["final"]["induction"] == series["induction"][-1][1]
    assert row["circuit"]["k_composition"]["target"] == row["circuit"]["induction_heads"][0]["head"]
    assert row["success"] == (row["solved_at"] is not None)
    assert torch.get_num_threads() >= 1


def test_a_failing_run_is_a_row_with_its_error() -> None:
    settings = (
        SweepSpec.from_dict({"name": "x", "base": {"train": {"steps": 5}}}).runs()[0].settings
    )
    broken = {**settings, "task": {**settings["task"], "name": "no-such-task"}}
    out = execute(RunSpec("deadbeef0000", "induction", broken, {"seed": 0}))
    assert out["history"] is None
    assert out["row"]["status"] == "failed"
    assert "unknown task 'no-such-task'" in out["row"]["error"]


def test_the_sweep_goes_on_past_a_failure_and_resume_skips_finished_runs(
    small_spec: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = SweepSpec.from_dict({**small_spec, "base": {**small_spec["base"], "train": {
        **small_spec["base"]["train"], "steps": 20}}, "seeds": 2})  # fmt: skip
    runs = spec.runs()
    # One run per task (batch_seeds=1): this is the per-run path's failure handling.
    real = runner._train_and_record
    calls: list[str] = []

    def flaky(run: RunSpec, root: str | None, start: float) -> dict:
        calls.append(run.run_id)
        if run.run_id == runs[1].run_id:
            raise FloatingPointError("diverged on purpose")
        return real(run, root, start)

    monkeypatch.setattr(runner, "_train_and_record", flaky)
    first = run_sweep(spec, tmp_path, workers=0, quiet=True, batch_seeds=1)
    assert (first.ran, first.ok, first.failed, first.lost) == (4, 3, 1, 0)
    rows = {r["run_id"]: r for r in ResultsStore(tmp_path).rows()}
    assert rows[runs[1].run_id]["status"] == "failed"
    assert "diverged on purpose" in rows[runs[1].run_id]["error"]
    assert (tmp_path / "histories" / f"{runs[0].run_id}.json").is_file()

    with pytest.raises(FileExistsError, match="--resume"):
        run_sweep(spec, tmp_path, workers=0, quiet=True, batch_seeds=1)
    calls.clear()
    again = run_sweep(spec, tmp_path, workers=0, quiet=True, resume=True, batch_seeds=1)
    assert (again.skipped, again.ran) == (4, 0) and calls == []
    # Drop the last row, as if the sweep had been killed before writing it.
    results = tmp_path / "results.jsonl"
    lines = results.read_text().splitlines(keepends=True)
    results.write_text("".join(lines[:-1]))
    resumed = run_sweep(spec, tmp_path, workers=0, quiet=True, resume=True, batch_seeds=1)
    assert (resumed.skipped, resumed.ran) == (3, 1) and len(calls) == 1
    assert sorted(r["run_id"] for r in ResultsStore(tmp_path).rows()) == sorted(
        r.run_id for r in runs
    )


def test_a_lost_worker_writes_no_row(small_spec: dict, tmp_path: Path, monkeypatch) -> None:
    spec = SweepSpec.from_dict({**small_spec, "seeds": 1})

    def dies(run: RunSpec, root: str | None = None) -> dict:
        raise SystemExit("worker killed")  # what a future of a dead worker raises

    monkeypatch.setattr(driver_module, "execute", dies)
    summary = run_sweep(spec, tmp_path, workers=0, quiet=True)
    assert (summary.ran, summary.ok, summary.failed, summary.lost) == (2, 0, 0, 2)
    assert ResultsStore(tmp_path).rows() == []
    assert "2 lost" in summary.line()


class NestedRecord:
    """The shape of ``EvalRecord.to_dict()``: scores nested, tensors or lists."""

    def to_dict(self) -> dict:
        return {
            "step": 30,
            "loss": 1.5,
            "accuracy": 0.25,
            "train_loss": None,
            "seconds": 0.5,
            "scores": {"induction": torch.tensor([[0.75, 0.0], [0.5, 0.25]]),
                       "previous_token": [[0.5, 0.125], [0.0, 0.0]]},
        }  # fmt: skip


def test_typed_records_read_like_flat_ones() -> None:
    series = score_series([NestedRecord()])
    assert series == {
        "loss": [(30, 1.5)],
        "accuracy": [(30, 0.25)],
        "induction": [(30, 0.5)],
        "previous_token": [(30, 0.5)],
    }
    flat = runner.flat_record(NestedRecord())
    assert flat["induction"] == [[0.75, 0.0], [0.5, 0.25]] and "train_loss" not in flat


def test_checkpoint_true_keeps_each_trained_model(small_spec: dict, tmp_path: Path) -> None:
    from circuits import checkpoint
    from circuits.model import HookedTransformer

    base = {**small_spec["base"], "train": {**small_spec["base"]["train"], "steps": 10}}
    spec = SweepSpec.from_dict({**small_spec, "base": base, "seeds": 1, "checkpoint": True})
    summary = run_sweep(spec, tmp_path, workers=0, quiet=True)
    assert summary.ok == 2
    for row in ResultsStore(tmp_path).rows():
        path = Path(row["checkpoint"])
        assert path == (tmp_path / "checkpoints" / row["run_id"]).resolve()
        model = checkpoint.load(path, HookedTransformer)
        assert model.cfg.d_model == 16 and model.cfg.seed == row["axes"]["seed"]


def test_a_runs_seconds_start_after_the_imports(small_spec: dict, monkeypatch) -> None:
    """A worker's first run used to pay the worker's imports inside its clock (issue 20)."""
    from circuits.sweep import runner

    clock = [1000.0]
    monkeypatch.setattr(runner.time, "perf_counter", lambda: clock[0])

    def slow_imports() -> None:  # imports that take 100 "seconds" on the fake clock
        clock[0] += 100.0

    monkeypatch.setattr(runner, "import_run_modules", slow_imports)
    spec = SweepSpec.from_dict({**small_spec, "grid": {"train.lr": [0.03]}, "seeds": [1]})
    row = execute(spec.runs()[0])["row"]
    assert row["status"] == "ok"
    assert row["seconds"] < 100.0  # the clock stood still during training: 0 s, imports excluded


def test_each_worker_imports_the_run_modules_before_its_first_run() -> None:
    from worker_probe import RUN_MODULES, modules_loaded

    from circuits.sweep.executors import engine

    with engine(workers=1) as eng:  # the first task a fresh worker runs
        loaded = eng.executor.submit(modules_loaded).result(timeout=300)
    assert loaded == dict.fromkeys(RUN_MODULES, True)
