"""Sweeps: when do circuits form? Many seeded training runs, on this machine or a Dask cluster.

Modules, one concept each: :mod:`~circuits.sweep.spec` (what to run: grid or random search,
run ids), :mod:`~circuits.sweep.runner` (one run and its row), :mod:`~circuits.sweep.phase`
(formation steps and the phase-change rule), :mod:`~circuits.sweep.store` (the append-only
results file), :mod:`~circuits.sweep.executors` (process pool, Dask, inline),
:mod:`~circuits.sweep.driver` (``run_sweep``), :mod:`~circuits.sweep.progress` and
:mod:`~circuits.sweep.report` (the HTML page).

Example:
    >>> from circuits.sweep import SweepSpec, run_sweep
    >>> spec = SweepSpec.from_dict({"name": "lr", "grid": {"train.lr": [1e-2, 2e-2]}, "seeds": 4})
    >>> summary = run_sweep(spec, "sweeps/lr", workers=2)  # doctest: +SKIP
"""

from __future__ import annotations

from circuits.sweep.driver import SweepSummary, run_sweep
from circuits.sweep.phase import PHASE_RULE, formation, phase_change
from circuits.sweep.spec import RunSpec, SweepSpec, run_id
from circuits.sweep.store import ResultsStore, canonical, read_rows

__all__ = [
    "PHASE_RULE",
    "ResultsStore",
    "RunSpec",
    "SweepSpec",
    "SweepSummary",
    "canonical",
    "formation",
    "phase_change",
    "read_rows",
    "run_id",
    "run_sweep",
]
