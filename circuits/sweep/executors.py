"""Where runs execute: any ``concurrent.futures.Executor``; we schedule nothing ourselves.

- **Process pool** (default): ``ProcessPoolExecutor`` with the ``spawn`` start method (a fork
  of a process that has run torch can deadlock) and one torch thread per worker.
- **Dask distributed** (``pip install circuits[dask]``): ``scheduler="local"`` starts a
  ``LocalCluster`` of ``workers`` single-threaded worker processes on this machine; a
  ``tcp://HOST:PORT`` address connects to a running scheduler (a cluster started by hand, by
  ``dask-jobqueue`` on SLURM/PBS, or on Kubernetes). ``Client.get_executor()`` is a
  ``concurrent.futures.Executor``, so the sweep code is the same. Workers must have
  ``circuits`` installed; checkpoints need a directory every worker can write (rows and
  histories are written by the process that runs the sweep).
- **Inline**: runs in the calling process, one at a time (a baseline, and for debugging).
"""

from __future__ import annotations

import multiprocessing
import os
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

# Local worker processes at most (a process pool or a LocalCluster): each loads torch.
MAX_WORKERS = 256


def prepare_worker() -> None:
    """A worker's initializer: one torch thread, and every module a run needs imported now.

    Runs once per worker process (the pool's ``initializer``, Dask's ``client.run``), so its
    seconds of imports are paid before the first run's clock starts, not inside it.
    """
    # Before torch is imported in the worker: BLAS pools read these at load.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    import torch

    torch.set_num_threads(1)
    keep_freed_memory()
    from circuits.sweep.runner import import_run_modules
    from circuits.training import native_attention

    import_run_modules()
    # The stacked trainer's attention kernel: compiled (the first time on a machine) and
    # checked here, not inside the first group's clock.
    native_attention.load()


# glibc's mallopt parameters (malloc.h) and the largest mmap threshold it accepts on 64 bits.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX = -1, -3, 32 * 2**20


def keep_freed_memory() -> bool:
    """Asks glibc to keep freed blocks of up to 32 MiB for reuse instead of returning them to
    the system; True if it took effect (glibc only; elsewhere nothing changes).

    A training step allocates and frees the same few-MiB activations every step; by default
    glibc serves blocks this large with fresh ``mmap`` pages and unmaps them when freed, so
    every step pays thousands of page faults to zero them again (a few percent of a stacked
    step, bench/RESULTS.md). A worker's memory then stays at its peak until it exits.
    """
    import ctypes

    try:  # the symbols already loaded into this process, libc's among them
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # no mallopt (macOS, musl) or no CDLL(None)
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
    return bool(ok and mallopt(_M_TRIM_THRESHOLD, 2**30) == 1)


class InlineExecutor(Executor):
    """Runs each submitted call at once, in this process (a serial baseline)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_running_or_notify_cancel()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as e:
            future.set_exception(e)
        return future


@dataclass(frozen=True)
class Engine:
    """An executor and what it is.

    Attributes:
        executor: Where runs are submitted.
        slots: How many runs it executes at once (runs kept in flight).
        description: One line for the log, e.g. ``"process pool, 2 workers"``.
    """

    executor: Executor
    slots: int
    description: str


def check_scheduler(scheduler: str | None) -> None:
    """Raises ValueError unless ``scheduler`` is None, ``"local"`` or ``tcp://HOST:PORT``."""
    if scheduler is None or scheduler == "local":
        return
    if not isinstance(scheduler, str) or "://" not in scheduler:
        raise ValueError(
            f"--scheduler must be 'local' or an address such as tcp://HOST:8786, got {scheduler!r}"
        )


def check_reachable(scheduler: str | None, timeout: float = 3.0) -> None:
    """Raises ValueError within ``timeout`` seconds unless the scheduler's port answers.

    Called before a sweep writes anything, so an unreachable scheduler leaves no trace (Dask's
    own connection attempt would take its 20 s timeout, after the directory was prepared).
    """
    if scheduler is None or scheduler == "local":
        return
    check_scheduler(scheduler)
    _, _, where = scheduler.partition("://")
    host, sep, port = where.rstrip("/").rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"--scheduler {scheduler!r} needs a host and a port: tcp://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except (OSError, OverflowError) as e:
        reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise ValueError(
            f"cannot reach the Dask scheduler at {scheduler} ({reason}); nothing was written"
        ) from None


@contextmanager
def engine(workers: int = 2, scheduler: str | None = None) -> Iterator[Engine]:
    """An :class:`Engine`, shut down on exit.

    Args:
        workers: Worker processes for the process pool or the local Dask cluster; 0 runs
            inline. Ignored with a scheduler address (the cluster has its own workers).
        scheduler: None (process pool), ``"local"`` (Dask ``LocalCluster``) or the address
            of a Dask scheduler.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be an int >= 0, got {workers!r}")
    if workers > MAX_WORKERS:  # each is a process with torch loaded (~300 MB)
        raise ValueError(
            f"workers={workers:,} is more than {MAX_WORKERS} processes on this machine; use a "
            "Dask scheduler address for a cluster"
        )
    check_scheduler(scheduler)
    if scheduler is None:
        if workers == 0:
            yield Engine(InlineExecutor(), 1, "inline, this process")
            return
        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=prepare_worker,
        )
        try:
            yield Engine(pool, workers, f"process pool, {workers} worker(s)")
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return
    with _dask(workers, scheduler) as eng:
        yield eng


@contextmanager
def _dask(workers: int, scheduler: str) -> Iterator[Engine]:
    try:
        from distributed import Client, LocalCluster
    except ImportError as e:
        raise ValueError("--scheduler needs Dask distributed: pip install 'circuits[dask]'") from e
    if scheduler == "local":
        if workers == 0:
            raise ValueError("a local Dask cluster needs workers >= 1")
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=40,  # logging.ERROR: the progress bar is the sweep's output
        )
        client = Client(cluster)
        where = f"Dask LocalCluster, {workers} worker process(es)"
    else:
        cluster = None
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as e:
            raise ValueError(f"cannot reach the Dask scheduler at {scheduler}: {e}") from e
        where = f"Dask scheduler {scheduler}"
    try:
        client.run(prepare_worker)
        threads = sum(client.nthreads().values())
        if threads == 0:
            raise ValueError(f"the Dask scheduler at {scheduler} has no workers")
        yield Engine(client.get_executor(pure=False), threads, f"{where}, {threads} thread(s)")
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
