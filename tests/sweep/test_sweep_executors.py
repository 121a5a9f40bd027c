"""The same sweep on the process pool and on a Dask LocalCluster: identical results per run.

Runs are seeded and, on one CPU thread, deterministic, so everything but the timings must
match: steps, losses, every score, formation and phase-change steps, the circuit found.
"""

from __future__ import annotations

import json
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
