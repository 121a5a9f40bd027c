"""Batched groups: the runs of a sweep that differ only in their seeds, trained as one.

``circuits sweep --batch-seeds N`` puts up to ``N`` runs that share an architecture, a task
and a train config (everything but the seeds) into one group, trained together by
:func:`circuits.training.batched.train_batched` in one worker. A group is the unit of work:
the executor runs it as one task, and its rows are appended, one per run, exactly as
:func:`circuits.sweep.runner.execute` writes them, when the group returns. A killed group
leaves no rows, so ``--resume`` runs it again; runs already recorded are never redone.

Runs that cannot be stacked (an architecture :func:`circuits.training.stacked.unsupported`
refuses, or training interventions) form groups of one and run as today. Groups are formed
over the whole spec in its order and then emptied of finished runs, so a resumed sweep keeps
the same groups.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from circuits.sweep.runner import base_row, execute, import_run_modules, record_of
from circuits.sweep.spec import RunSpec
from circuits.sweep.store import CHECKPOINTS
from circuits.validation import check_int

__all__ = ["execute_group", "group_key", "group_runs"]

_SEEDS = ("seed",)


def group_key(run: RunSpec) -> str:
    """What the runs of one group share: the settings without the seeds (and ``checkpoint``)."""
    parts = {
        part: {k: v for k, v in fields.items() if k not in _SEEDS}
        for part, fields in run.settings.items()
    }
    return json.dumps(
        {"settings": parts, "checkpoint": run.checkpoint}, sort_keys=True, default=str
    )


def _stackable(run: RunSpec) -> bool:
    from circuits.config import ModelConfig
    from circuits.training.stacked import unsupported

    if run.settings.get("train", {}).get("interventions"):
        return False  # interventions hook the model: the stacked trainer has no hooks
    try:
        return unsupported(ModelConfig.from_dict(run.settings["model"])) is None
    except (TypeError, ValueError):
        return False  # a bad config fails in its own run, with its own row


# The largest group "auto" forms: larger stacks gained nothing more per model in the step
# profile (bench/RESULTS.md, "Batched seeds").
AUTO_MAX_GROUP = 16


def auto_group_size(n_runs: int, slots: int) -> int:
    """``--batch-seeds auto``: groups of up to :data:`AUTO_MAX_GROUP` seeds, small enough that
    the sweep has at least one group per slot (a 4-seed sweep on two workers trains two groups
    of two, not one of four while a worker idles)."""
    check_int(n_runs, "n_runs", 0)
    check_int(slots, "slots", 1)
    return max(1, min(AUTO_MAX_GROUP, -(-n_runs // slots)))


def batch_group_size(batch_seeds: int | str, n_runs: int, slots: int) -> int:
    """The group size ``batch_seeds`` asks for: a positive int as given, ``"auto"`` by
    :func:`auto_group_size`. Raises ValueError/TypeError for anything else."""
    if batch_seeds == "auto":
        return auto_group_size(n_runs, slots)
    if isinstance(batch_seeds, str):
        raise ValueError(f"batch_seeds must be a positive integer or 'auto', got {batch_seeds!r}")
    return check_int(batch_seeds, "batch_seeds", 1)


def group_runs(
    runs: Sequence[RunSpec], size: int, done: set[str] | frozenset[str] = frozenset()
) -> list[list[RunSpec]]:
    """The groups of ``runs`` still to do: runs with one :func:`group_key`, chunked by ``size``
    in spec order, minus the runs in ``done``; empty groups dropped.

    ``size`` 1 gives one group per run (the unbatched sweep). Runs whose architecture cannot
    be stacked get a group each.
    """
    check_int(size, "batch_seeds", 1)
    by_key: dict[str, list[RunSpec]] = {}
    order: list[list[RunSpec]] = []
    for run in runs:
        if size == 1 or not _stackable(run):
            order.append([run])
            continue
        key = group_key(run)
        current = by_key.get(key)
        if current is None or len(current) == size:
            current = by_key[key] = []
            order.append(current)
        current.append(run)
    groups = [[r for r in g if r.run_id not in done] for g in order]
    return [g for g in groups if g]


def execute_group(
    runs: list[RunSpec], root: str | None = None, stacked: bool = False
) -> list[dict[str, Any]]:
    """Trains a group; returns ``[{"row": ..., "history": ...}]`` in the order of ``runs``.

    A group of one is :func:`~circuits.sweep.runner.execute` unless ``stacked``: the runs a
    killed sweep left of a stacked group train stacked when it resumes, even one alone, so
    their rows are the uninterrupted sweep's bit for bit (the stacked and single-model steps
    agree only to float32 rounding). A larger group trains stacked;
    each row is the one ``execute`` would write (its ``seconds`` run from the group's start to
    the end of that run's analysis: runs of a group share the clock). A run that diverges is a
    failed row; a group that cannot start (bad settings, too large for memory) makes every
    run a failed row, so the sweep goes on.
    """
    if len(runs) == 1 and not stacked:
        return [execute(runs[0], root)]
    import torch

    import_run_modules()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        return _train_group(runs, root, start)
    except Exception as e:  # the group's failure is every run's result, not the sweep's end
        last = traceback.extract_tb(e.__traceback__)[-1:] if e.__traceback__ else []
        where = f" ({Path(last[0].filename).name}:{last[0].lineno})" if last else ""
        out = []
        for run in runs:
            row = base_row(run)
            row.update(
                status="failed",
                error=f"{type(e).__name__}: {e}{where}",
                seconds=time.perf_counter() - start,
            )
            out.append({"row": row, "history": None})
        return out
    finally:
        torch.set_num_threads(threads)


def _train_group(runs: list[RunSpec], root: str | None, start: float) -> list[dict[str, Any]]:
    from circuits.run import RunConfig
    from circuits.training import TrainResult
    from circuits.training.batched import BatchedRun, train_batched

    built = [RunConfig.from_dict(run.settings).build() for run in runs]
    models = [model for model, _, _ in built]
    tasks = [task for _, task, _ in built]
    cfgs = [cfg for _, _, cfg in built]
    paths: list[str | None] = [None] * len(runs)
    if runs[0].checkpoint:
        if root is None:
            raise ValueError("run.checkpoint needs the sweep directory")
        paths = [str(Path(root) / CHECKPOINTS / run.run_id) for run in runs]

    def save(i: int, group: BatchedRun) -> None:
        path = paths[i]
        if path is not None:  # the checkpoint circuits.train writes when a run stops
            group.save_training(i, path, cfgs[i].replace(checkpoint_dir=path))

    offset = time.perf_counter() - start  # records' seconds count from the group's start
    results = train_batched(models, tasks, cfgs, on_leave=save)
    out = []
    for i, (run, result) in enumerate(zip(runs, results, strict=True)):
        if not isinstance(result, TrainResult):
            row = base_row(run)
            row.update(status="failed", error=f"{type(result).__name__}: {result}")
            row["seconds"] = time.perf_counter() - start
            out.append({"row": row, "history": None})
            continue
        seconds_at = {r.step: (r.seconds or 0.0) + offset for r in result.history}
        row, history = record_of(run, models[i], cfgs[i], result, seconds_at)
        row["seconds"] = time.perf_counter() - start
        row["checkpoint"] = paths[i]
        out.append({"row": row, "history": history})
    return out
