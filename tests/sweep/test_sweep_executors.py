"""The same sweep on the process pool and on a Dask LocalCluster: identical results per run.

Runs are seeded and, on one CPU thread, deterministic, so everything but the timings must
match: steps, losses, every score, formation and phase-change steps, the circuit found.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from circuits.sweep import ResultsStore, SweepSpec, canonical, run_sweep

pytestmark = pytest.mark.slow


def _histories(root: Path) -> dict[str, dict]:
    out = {}
    for path in sorted((root / "histories").glob("*.json")):
        data = json.loads(path.read_text())
        data.pop("seconds_at")  # timings, and the records' own "seconds"
        out[path.stem] = canonical([data])[0]
    return out


def test_process_pool_and_dask_give_identical_runs(small_spec: dict, tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    spec = SweepSpec.from_dict(small_spec)
    pool = run_sweep(spec, tmp_path / "pool", workers=2, quiet=True)
    # A cluster of two worker processes, reached by its address as `--scheduler tcp://...` is.
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        address = cluster.scheduler_address
        dask = run_sweep(spec, tmp_path / "dask", scheduler=address, quiet=True)
    assert address.startswith("tcp://")
    assert (pool.ok, pool.failed, pool.lost) == (8, 0, 0), pool.line()
    assert (dask.ok, dask.failed, dask.lost) == (8, 0, 0), dask.line()
    assert "process pool" in pool.executor and f"Dask scheduler {address}" in dask.executor
    a = canonical(ResultsStore(tmp_path / "pool").rows())
    b = canonical(ResultsStore(tmp_path / "dask").rows())
    assert [r["run_id"] for r in a] == sorted(r.run_id for r in spec.runs())
    assert a == b
    assert _histories(tmp_path / "pool") == _histories(tmp_path / "dask")
    # Not vacuous: the runs differ from each other (seeds and learning rates matter).
    assert len({json.dumps(r["final"], sort_keys=True) for r in a}) == 8
    assert all(r["circuit"]["k_composition"] is not None for r in a)


_FAULTS = """
import dataclasses, resource, sys
import torch
from circuits.presets import build
from circuits.sweep.executors import keep_freed_memory
from circuits.training.batched import BatchedRun
torch.set_num_threads(1)
if sys.argv[1] == "keep":
    assert keep_freed_memory()
runs = [build("induction", seed) for seed in range(8)]
cfgs = [dataclasses.replace(c, eval_every=10**6, progress=False) for _, _, c in runs]
group = BatchedRun([m for m, _, _ in runs], [t for _, t, _ in runs], cfgs)
for _ in range(3):
    group.step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    group.step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_workers_keep_freed_memory_so_a_training_step_does_not_fault_again():
    def faults_per_step(mode: str) -> float:
        out = subprocess.run(
            [sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True
        )
        return float(out.stdout.strip())

    # A stacked step frees and reallocates the same MiB-sized activations: by default glibc
    # hands them back to the system and faults fresh pages in every step.
    default, kept = faults_per_step("default"), faults_per_step("keep")
    assert kept < default / 5, (default, kept)
