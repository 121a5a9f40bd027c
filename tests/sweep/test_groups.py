"""``--batch-seeds``: runs that differ only in their seeds trained as stacked groups."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

import pytest

from circuits.sweep import ResultsStore, SweepSpec, canonical, run_sweep
from circuits.sweep import driver as driver_module
from circuits.sweep import groups as groups_module
from circuits.sweep.groups import (
    AUTO_MAX_GROUP,
    auto_group_size,
    batch_group_size,
    execute_group,
    group_runs,
)
from circuits.sweep.runner import execute

# Fields of a row that do not depend on the float rounding of a stacked step.
KEY = ("run_id", "status", "steps", "solved_at", "success", "axes")


def rows_by_id(path: Path) -> dict[str, dict]:
    return {r["run_id"]: r for r in ResultsStore(path).rows()}


def test_groups_share_everything_but_the_seeds(small_spec: dict) -> None:
    runs = SweepSpec.from_dict(small_spec).runs()  # 2 learning rates x 4 seeds
    groups = group_runs(runs, 4)
    assert [len(g) for g in groups] == [4, 4]
    for g in groups:
        assert len({r.settings["train"]["lr"] for r in g}) == 1
        assert len({r.axes["seed"] for r in g}) == 4
    assert [len(g) for g in group_runs(runs, 3)] == [3, 1, 3, 1]
    assert [len(g) for g in group_runs(runs, 1)] == [1] * 8
    assert sorted(r.run_id for g in group_runs(runs, 3) for r in g) == sorted(
        r.run_id for r in runs
    )


def test_finished_runs_leave_their_group_and_the_groups_stay(small_spec: dict) -> None:
    runs = SweepSpec.from_dict(small_spec).runs()
    done = {runs[0].run_id, runs[5].run_id}
    groups = group_runs(runs, 4, done)
    assert [[r.run_id for r in g] for g in groups] == [
        [r.run_id for r in runs[1:4]],
        [r.run_id for r in runs[4:8] if r.run_id not in done],
    ]


def test_mixed_architectures_fall_back_to_per_architecture_groups(small_spec: dict) -> None:
    grid = {"model.d_model": [16, 32], "model.positional_embedding_type": ["standard", "rotary"]}
    runs = SweepSpec.from_dict({**small_spec, "grid": grid, "seeds": 3}).runs()
    groups = group_runs(runs, 8)
    stacked = [g for g in groups if len(g) > 1]
    alone = [g for g in groups if len(g) == 1]
    assert len(stacked) == 2 and all(len(g) == 3 for g in stacked)  # one per d_model
    assert {g[0].settings["model"]["d_model"] for g in stacked} == {16, 32}
    assert len(alone) == 6  # rotary cannot be stacked: each of its runs on its own
    assert all(g[0].settings["model"]["positional_embedding_type"] == "rotary" for g in alone)
    with pytest.raises(ValueError, match="batch_seeds"):
        group_runs(runs, 0)


def test_auto_groups_keep_every_worker_busy_up_to_the_largest_group() -> None:
    assert auto_group_size(128, 2) == AUTO_MAX_GROUP == 16  # 8 groups of 16
    assert auto_group_size(8, 2) == 4  # two groups, one per worker
    assert auto_group_size(3, 2) == 2 and auto_group_size(1, 2) == 1 and auto_group_size(0, 2) == 1
    assert auto_group_size(5, 1) == 5  # inline: one slot
    assert batch_group_size("auto", 8, 2) == 4 and batch_group_size(3, 8, 2) == 3
    for bad in (0, -1, "four", 2.5, True):
        with pytest.raises((TypeError, ValueError), match="batch_seeds"):
            batch_group_size(bad, 8, 2)


def test_a_sweeps_default_is_auto_groups(small_spec: dict, tmp_path: Path) -> None:
    """The default trains the spec's 8 runs (two settings x 4 seeds, inline) as two stacked
    groups: the same rows as asking for groups of 4."""
    from circuits.sweep import canonical

    default = run_sweep(SweepSpec.from_dict(small_spec), tmp_path / "a", workers=0, quiet=True)
    asked = run_sweep(
        SweepSpec.from_dict(small_spec), tmp_path / "b", workers=0, quiet=True, batch_seeds=4
    )
    assert default.ok == asked.ok == 8
    rows = [canonical(ResultsStore(tmp_path / d).rows()) for d in "ab"]
    assert rows[0] == rows[1]


def test_a_groups_rows_are_the_runs_rows(small_spec: dict) -> None:
    runs = SweepSpec.from_dict({**small_spec, "grid": {"train.lr": [0.03]}, "seeds": 3}).runs()
    batched = execute_group(runs)
    for run, result in zip(runs, batched, strict=True):
        single = execute(run)
        row, ref = result["row"], single["row"]
        assert {k: row[k] for k in KEY} == {k: ref[k] for k in KEY}
        assert set(row) == set(ref)
        assert row["formed"].keys() == ref["formed"].keys()
        for name, f in ref["formed"].items():
            assert row["formed"][name]["step"] == f["step"]
        history, ref_history = result["history"], single["history"]
        assert set(history) == set(ref_history)
        assert history["losses"] == pytest.approx(ref_history["losses"], abs=1e-4)


def test_checkpoint_true_writes_each_runs_resumable_checkpoint(
    small_spec: dict, tmp_path: Path
) -> None:
    from circuits import checkpoint
    from circuits.model import HookedTransformer
    from circuits.training import read_training_metadata, resume

    base = {**small_spec["base"], "train": {**small_spec["base"]["train"], "steps": 10}}
    spec = SweepSpec.from_dict({**small_spec, "base": base, "seeds": 2, "checkpoint": True})
    summary = run_sweep(spec, tmp_path, workers=0, quiet=True, batch_seeds=2)
    assert summary.ok == 4
    for row in ResultsStore(tmp_path).rows():
        path = Path(row["checkpoint"])
        assert path == (tmp_path / "checkpoints" / row["run_id"]).resolve()
        model = checkpoint.load(path, HookedTransformer)
        assert model.cfg.seed == row["axes"]["seed"]
        assert read_training_metadata(path)["step"] == row["steps"] == 10
    # One of them resumed for 5 more steps, as a checkpoint of circuits.train would be.
    _, _, _, result = resume(Path(row["checkpoint"]), steps=15, progress=False)
    assert result.steps == 15 and len(result.losses) == 15


class DiesOnSecondGroup(Executor):
    """Runs inline, but the second task's worker 'dies' (its future raises)."""

    def __init__(self) -> None:
        self.calls = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future:
        self.calls += 1
        future: Future = Future()
        if self.calls == 2:
            future.set_exception(SystemExit("worker killed"))
        else:
            future.set_result(fn(*args, **kwargs))
        return future


def test_a_killed_group_resumes_to_the_same_rows(small_spec: dict, tmp_path: Path) -> None:
    spec = SweepSpec.from_dict(small_spec)
    whole = run_sweep(spec, tmp_path / "whole", workers=0, quiet=True, batch_seeds=4)
    assert whole.ok == 8
    out = tmp_path / "killed"
    first = run_sweep(spec, out, executor=DiesOnSecondGroup(), quiet=True, batch_seeds=4)
    assert (first.ok, first.lost) == (4, 4)  # the killed group left no row
    assert len(ResultsStore(out).rows()) == 4
    kept = rows_by_id(out)
    second = run_sweep(spec, out, workers=0, quiet=True, resume=True, batch_seeds=4)
    assert (second.skipped, second.ran) == (4, 4)  # no finished run redone
    resumed, reference = rows_by_id(out), rows_by_id(tmp_path / "whole")
    assert resumed.keys() == reference.keys()
    for run_id, row in resumed.items():
        assert {k: row[k] for k in KEY} == {k: reference[run_id][k] for k in KEY}
        if run_id in kept:
            assert row == kept[run_id]


def test_a_group_left_with_one_run_resumes_stacked(small_spec: dict, tmp_path: Path) -> None:
    # A kill between the rows of a group (the parent appends them one by one) can leave one
    # run of a stacked group without a row. It must train stacked on resume, as its group
    # would have: the single-model step agrees with the stacked one only to float32
    # rounding, and a row that moved in its last digits is not "the same rows".
    spec = SweepSpec.from_dict(small_spec)
    whole = tmp_path / "whole"
    run_sweep(spec, whole, workers=0, quiet=True, batch_seeds=4)
    reference = rows_by_id(whole)
    groups = group_runs(spec.runs(), 4)
    left = groups[0][-1].run_id
    out = tmp_path / "cut"
    shutil.copytree(whole, out)
    results = out / "results.jsonl"
    lines = results.read_text().splitlines(keepends=True)
    results.write_text("".join(ln for ln in lines if json.loads(ln)["run_id"] != left))
    calls: list[tuple[int, bool]] = []
    real = groups_module.execute_group

    def spy(runs: list, root: str | None = None, stacked: bool = False) -> list:
        calls.append((len(runs), stacked))
        return real(runs, root, stacked)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(driver_module, "execute_group", spy)
        again = run_sweep(spec, out, workers=0, quiet=True, resume=True, batch_seeds=4)
    assert (again.skipped, again.ran) == (7, 1)
    assert calls == [(1, True)]  # the leftover trained as its stacked group would have
    assert canonical([rows_by_id(out)[left]]) == canonical([reference[left]])  # bit for bit


def test_sweep_report_shows_the_atlas(small_spec: dict, tmp_path: Path) -> None:
    from circuits.sweep.report import sweep_report

    run_sweep(SweepSpec.from_dict(small_spec), tmp_path, workers=0, quiet=True, batch_seeds=4)
    page = sweep_report(tmp_path)
    assert "Failure modes" in page and "K-composition excess" in page


def test_runs_with_interventions_run_alone(small_spec: dict) -> None:
    clamp = [{"kind": "clamp_pattern", "layer": 0, "head": 0}]
    train = {**small_spec["base"]["train"], "interventions": clamp}
    spec = SweepSpec.from_dict({**small_spec, "base": {**small_spec["base"], "train": train}})
    assert [len(g) for g in group_runs(spec.runs(), 4)] == [1] * 8


@pytest.mark.slow
def test_a_batched_sweep_killed_by_sigkill_resumes_to_the_same_rows(
    small_spec: dict, tmp_path: Path
) -> None:
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from circuits.sweep import canonical, read_rows

    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(small_spec))
    out = tmp_path / "killed"
    cmd = [
        sys.executable, "-m", "circuits.cli", "sweep", str(spec_file), "--out", str(out),
        "--workers", "1", "--quiet", "--batch-seeds", "4",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, start_new_session=True, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "results.jsonl").exists() and read_rows(out / "results.jsonl")[0]:
                break
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # mid-sweep: the second group is running
    finally:
        proc.wait(timeout=60)
    finished = read_rows(out / "results.jsonl")[0]
    n = len(finished)  # a group's rows are appended one by one: the kill may split them
    assert 1 <= n < 8, "the kill came after the sweep ended; nothing to resume"
    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{n} already done, {8 - n} run now" in resumed.stderr
    rows = read_rows(out / "results.jsonl")[0]
    assert rows[:n] == finished and len({r["run_id"] for r in rows}) == 8
    reference = tmp_path / "uninterrupted"
    run_sweep(SweepSpec.from_dict(small_spec), reference, workers=0, quiet=True, batch_seeds=4)
    assert canonical(rows) == canonical(ResultsStore(reference).rows())
