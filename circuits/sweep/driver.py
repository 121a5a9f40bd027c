"""Running a sweep: submit every run not yet done, store each row as its run ends.

At most ``slots`` runs are in flight at a time (the executor's capacity), so "running" on the
progress bar means running, and a stopped sweep has no queue of submitted work to lose. Rows
are written by this process as futures complete, so an executor on another machine needs no
access to the results file.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from circuits.sweep.executors import check_reachable, engine
from circuits.sweep.groups import batch_group_size, execute_group, group_runs
from circuits.sweep.progress import SweepProgress
from circuits.sweep.runner import execute
from circuits.sweep.spec import RunSpec, SweepSpec
from circuits.sweep.store import ResultsStore


@dataclass(frozen=True)
class SweepSummary:
    """What one invocation of :func:`run_sweep` did.

    Attributes:
        total: Runs in the spec.
        skipped: Runs already finished (a resumed sweep), not run again.
        ran: Runs executed now (ok + failed + lost).
        ok: Runs that trained and were recorded.
        failed: Runs that raised and were recorded with their error.
        lost: Runs whose worker died (no row written; ``--resume`` runs them again).
        seconds: Wall time of this invocation.
        executor: Description of the executor.
    """

    total: int
    skipped: int
    ran: int
    ok: int
    failed: int
    lost: int
    seconds: float
    executor: str

    def line(self, where: str | Path | None = None) -> str:
        """One line for the log (``where``: the sweep directory, named when nothing ran)."""
        if self.ran == 0 and self.skipped == self.total:
            return f"sweep: nothing to do: all {self.total} runs already have results" + (
                f" in {where}" if where is not None else ""
            )
        return (
            f"sweep: {self.total} runs, {self.skipped} already done, {self.ran} run now "
            f"({self.ok} ok, {self.failed} failed, {self.lost} lost) in {self.seconds:.1f}s "
            f"on {self.executor}"
        )


def run_sweep(
    spec: SweepSpec,
    out: str | Path,
    *,
    workers: int = 2,
    scheduler: str | None = None,
    executor: Executor | None = None,
    resume: bool = False,
    quiet: bool = False,
    batch_seeds: int | str = "auto",
) -> SweepSummary:
    """Runs every run of ``spec`` not yet finished in ``out``.

    Args:
        spec: The sweep.
        out: The sweep directory (see :mod:`circuits.sweep.store`).
        workers: Process-pool or local-Dask workers (0: inline in this process).
        scheduler: None, ``"local"`` or a Dask scheduler address (see
            :func:`circuits.sweep.executors.engine`).
        executor: Use this executor instead (``workers`` in flight; it is not shut down).
        resume: Continue a sweep in ``out``, skipping runs that have a row.
        quiet: No progress bar.
        batch_seeds: Train up to this many runs that differ only in their seeds as one
            stacked group (see :mod:`circuits.sweep.groups`); 1 runs each on its own;
            ``"auto"`` (the default) groups up to 16, at least one group per worker
            (:func:`~circuits.sweep.groups.auto_group_size`, from the whole spec, so a resumed
            sweep with the same workers keeps its groups).
    Raises:
        FileExistsError: ``out`` holds files that are not a sweep of ours, results without
            ``resume``, or a symbolic link where we would write (see
            :mod:`circuits.sweep.store`). Checked before anything is written.
        ValueError: An unreachable scheduler (in seconds, before anything is written).
    """
    runs = spec.runs()  # counted and built when the spec was: within its max_runs
    store = ResultsStore(out)
    store.check(resume)  # refuses someone's directory, or a link, before any work
    done = store.done()
    size = batch_group_size(batch_seeds, len(runs), max(workers, 1))
    groups = group_runs(runs, size, done)  # over the whole spec: resume keeps them
    # What a resumed group's leftover runs were planned in: a stacked group's train stacked.
    stacked = {r.run_id for g in group_runs(runs, size) if len(g) > 1 for r in g}
    todo = [r for g in groups for r in g]
    start = time.perf_counter()
    if executor is not None:
        store.start(spec.to_dict(), resume)
        counts = _run_all(executor, max(workers, 1), groups, stacked, store, quiet)
        description = type(executor).__name__
    elif not todo:
        store.start(spec.to_dict(), resume)
        counts, description = (0, 0, 0), "nothing to run"
    else:
        check_reachable(scheduler)  # seconds, not Dask's 20 s timeout; nothing written yet
        with engine(workers, scheduler) as eng:
            store.start(spec.to_dict(), resume)
            counts = _run_all(eng.executor, eng.slots, groups, stacked, store, quiet)
            description = eng.description
    ok, failed, lost = counts
    return SweepSummary(
        total=len(runs),
        skipped=len(runs) - len(todo),
        ran=ok + failed + lost,
        ok=ok,
        failed=failed,
        lost=lost,
        seconds=time.perf_counter() - start,
        executor=description,
    )


def _run_all(
    executor: Executor,
    slots: int,
    groups: list[list[RunSpec]],
    stacked: set[str],
    store: ResultsStore,
    quiet: bool,
) -> tuple[int, int, int]:
    root = str(store.root.resolve())
    pending: Iterator[list[RunSpec]] = iter(groups)
    in_flight: dict[Future[Any], list[RunSpec]] = {}
    lost = 0
    with SweepProgress(sum(map(len, groups)), quiet) as bar:

        def submit_next() -> None:
            group = next(pending, None)
            if group is None:
                return
            # A group is one task: its runs' rows come back together. A run alone is
            # execute's as before (one row, not a list), unless a stacked group left it.
            if len(group) == 1 and group[0].run_id not in stacked:
                in_flight[executor.submit(execute, group[0], root)] = group
            else:
                in_flight[executor.submit(execute_group, group, root, True)] = group
            for _ in group:
                bar.started()

        for _ in range(slots):
            submit_next()
        while in_flight:
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                group = in_flight.pop(future)
                error = future.exception()
                if error is None:
                    results = future.result()
                    for result in results if isinstance(results, list) else [results]:
                        store.append(result["row"], result["history"])
                        bar.finished(ok=result["row"]["status"] == "ok")
                else:
                    # The worker died or the executor broke: not the runs' failure, so no row
                    # (a resumed sweep runs them again).
                    for run in group:
                        lost += 1
                        bar.finished(ok=False)
                        print(
                            f"sweep: run {run.run_id} lost ({type(error).__name__}: {error})",
                            file=sys.stderr,
                        )
                try:
                    submit_next()
                except RuntimeError as e:  # a broken pool refuses new work
                    print(f"sweep: executor stopped ({e}); resume later", file=sys.stderr)
                    pending = iter(())
    return bar.ok, bar.failed - lost, lost
