"""One run of a sweep: build, train, read when the circuit formed and what it is.

:func:`execute` is what the executors call, in a worker process (a spawned process-pool worker
or a Dask worker): a top-level function of picklable arguments that never raises for a run's own
failure. A run that raises (diverges, bad settings) comes back as a row with ``status:
"failed"`` and its error, so the sweep goes on.

The row of a finished run (JSON, one line of ``results.jsonl``)::

    run_id, status ("ok" | "failed"), error, preset, axes, settings
    steps, seconds, success (every target met), solved_at (step)
    formed: {score: {threshold, step, seconds}}      when each target was first met
    phase: {score, step, start, resolution, rate, prefix_matching_step}
                                                     see circuits.analysis.phase
    final: {accuracy, loss, train_loss, previous_token, induction}   best head per score
    circuit: {previous_token_head, induction_heads, k_composition, previous_token_split}
    checkpoint: path or null, history: path of the run's history file
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

from circuits.analysis.phase import formation, phase_change
from circuits.analysis.summary import induction_circuit, ranked_heads, score_rule
from circuits.sweep.spec import RunSpec
from circuits.sweep.store import CHECKPOINTS, HISTORIES

DEFAULT_THRESHOLD = 0.4  # ARENA's threshold for previous-token and induction heads


def import_run_modules() -> None:
    """Imports everything a run needs (torch, the model, tasks, training, analysis).

    Called by each worker's initializer (:func:`circuits.sweep.executors.prepare_worker`) and
    by :func:`execute` before its clock starts, so a run's ``seconds`` never include imports:
    a worker's first run would otherwise pay seconds of imports against sub-second runs.
    """
    # torch imports torch._dynamo (and sympy, inductor) lazily at the first optimizer step:
    # seconds that would land inside the first run's clock.
    import torch._dynamo  # noqa: F401

    import circuits.analysis.composition
    import circuits.analysis.head_scores
    import circuits.config
    import circuits.model
    import circuits.presets
    import circuits.tasks
    import circuits.training  # noqa: F401


def execute(run: RunSpec, root: str | None = None) -> dict[str, Any]:
    """Trains one run; returns ``{"row": row, "history": history or None}``.

    The row's ``seconds`` run from after the imports (see :func:`import_run_modules`) to the
    end of the run's analysis.

    Args:
        run: The run.
        root: The sweep directory, where a checkpoint is written when ``run.checkpoint`` (on a
            cluster it must be a path every worker can write).
    """
    import torch

    import_run_modules()  # a no-op in a prepared worker; otherwise paid before the clock
    # One thread per worker: runs are tiny, and two workers on two cores must not fight. The
    # analysis after training runs on one thread too, so every executor gets the same numbers.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        return _train_and_record(run, root, start)
    except Exception as e:  # a run's failure is a result, not the sweep's end
        last = traceback.extract_tb(e.__traceback__)[-1:] if e.__traceback__ else []
        where = f" ({Path(last[0].filename).name}:{last[0].lineno})" if last else ""
        row = base_row(run)
        row.update(
            status="failed",
            error=f"{type(e).__name__}: {e}{where}",
            seconds=time.perf_counter() - start,
        )
        return {"row": row, "history": None}
    finally:
        torch.set_num_threads(threads)


def base_row(run: RunSpec) -> dict[str, Any]:
    """The fields every row has, ok or failed."""
    return {
        "run_id": run.run_id,
        "status": "ok",
        "error": None,
        "preset": run.preset,
        "axes": run.axes,
        "settings": run.settings,
        "checkpoint": None,
        "history": None,
    }


def _train_and_record(run: RunSpec, root: str | None, start: float) -> dict[str, Any]:
    from circuits.run import RunConfig
    from circuits.training import train

    settings = {**run.settings, "train": dict(run.settings["train"])}
    checkpoint = None
    if run.checkpoint:
        if root is None:
            raise ValueError("run.checkpoint needs the sweep directory")
        checkpoint = str(Path(root) / CHECKPOINTS / run.run_id)
        settings["train"]["checkpoint_dir"] = checkpoint
    model, task, cfg = RunConfig.from_dict(settings).build()
    seconds_at: dict[int, float] = {}

    def note_time(step: int, _record: Any) -> None:
        seconds_at[step] = time.perf_counter() - start

    # overwrite: a run redone after a killed sweep replaces its half-written checkpoint.
    result = train(model, task, cfg, callback=note_time, overwrite=True)
    row, history = record_of(run, model, cfg, result, seconds_at, task)
    row["seconds"] = time.perf_counter() - start
    row["checkpoint"] = checkpoint
    return {"row": row, "history": history}


# --- reading a finished training run: the one place that knows the history's format ---


def flat_record(record: Any) -> dict[str, Any]:
    """An evaluation record as one flat dict: fields, and each score as nested lists.

    Reads :class:`circuits.records.EvalRecord` (``to_dict()`` nests the scores under
    ``"scores"``) and the flat dicts of earlier histories alike.
    """
    data = record.to_dict() if hasattr(record, "to_dict") else dict(record)
    scores = data.pop("scores", None) or {}
    out = {k: v for k, v in data.items() if v is not None}
    for name, value in scores.items():
        out[name] = value.tolist() if hasattr(value, "tolist") else value
    return out


def _is_table(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], list)


def score_series(history: list[Any]) -> dict[str, list[tuple[int, float]]]:
    """Per-evaluation series ``(step, value)`` of a training history.

    ``accuracy`` and ``loss`` are those of the probe; every head score is its best head over
    the layers that count (``induction`` from layer 1: it needs composition), as the score
    registry defines it. A score with no counted head (induction in one layer) has no series.
    """
    from circuits.records import FIELDS  # torch: imported where a history is read

    out: dict[str, list[tuple[int, float]]] = {}
    for record in history:
        r = flat_record(record)
        step = int(r["step"])
        for key, value in r.items():
            if key in ("accuracy", "loss"):
                out.setdefault(key, []).append((step, float(value)))
            elif key not in FIELDS and _is_table(value):
                ranked = ranked_heads(key, value)  # as the score registry ranks heads
                if ranked:
                    out.setdefault(key, []).append((step, ranked[0][0]))
    return out


def thresholds_of(cfg: Any) -> dict[str, float]:
    """The scores whose formation a run records: the training targets, else the 0.4 rule."""
    targets = dict(cfg.targets)
    if cfg.target_accuracy is not None:
        targets = {"accuracy": cfg.target_accuracy, **targets}
    set_ = {k: float(v) for k, v in targets.items()}
    return set_ or {"previous_token": DEFAULT_THRESHOLD, "induction": DEFAULT_THRESHOLD}


def circuit_of(model: Any, final: Any, probe: Any = None) -> dict[str, Any]:
    """The circuit a run ended with (:func:`circuits.analysis.summary.induction_circuit`): top
    heads, and the K-composition from the strongest earlier head into the top induction head,
    its excess over the random-matrix baseline, and whether that source is the top
    previous-token head (the induction circuit of Elhage et al. 2021).

    With the run's ``probe``, also ``previous_token_split``: whether the top previous-token
    head does the previous-token work alone, by ablation
    (:func:`circuits.analysis.split.previous_token_split`, five forward passes over the probe;
    None without a previous-token head).
    """
    from circuits.analysis.split import previous_token_split

    final = flat_record(final) if final is not None else {}
    scores = {k: final[k] for k in ("previous_token", "induction") if k in final}
    circuit = induction_circuit(model, scores)
    if probe is not None:
        top = circuit["previous_token_head"]
        induction = circuit["induction_heads"][0]["head"] if circuit["induction_heads"] else None
        circuit["previous_token_split"] = (
            None if top is None else previous_token_split(model, probe, top["head"], induction)
        )
    return circuit


def record_of(
    run: RunSpec,
    model: Any,
    cfg: Any,
    result: Any,
    seconds_at: dict[int, float],
    task: Any = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The row and the history file of a finished run (from ``circuits.train``'s result).

    ``task``: the run's task, whose probe (``task.probe(cfg.probe_size)``, the one training
    evaluated) the circuit's ablations run on; default: built from ``run.settings``, so every
    path that trained these weights records the same circuit.
    """
    if task is None:
        from circuits.tasks import task_from_dict

        task = task_from_dict(run.settings["task"])
    series = score_series(result.history)
    final = flat_record(result.final) if result.final else {}
    thresholds = thresholds_of(cfg)
    lower = [n for n in thresholds if n != "accuracy" and score_rule(n)[1] == "lower"]
    formed = formation(series, thresholds, seconds_at, lower=lower)
    phase = phase_change(result.history)
    row = base_row(run)
    row.update(
        steps=result.steps,
        solved_at=result.solved_at,
        success=all(f["step"] is not None for f in formed.values())
        if not cfg.has_targets
        else result.solved_at is not None,
        formed=formed,
        phase=None if phase is None else phase.to_dict(),
        final={
            "train_loss": final.get("train_loss"),
            **{k: v[-1][1] for k, v in series.items()},
        },
        circuit=circuit_of(model, final, task.probe(cfg.probe_size)),
        history=f"{HISTORIES}/{run.run_id}.json",
    )
    history = {
        "run_id": run.run_id,
        "history": [flat_record(r) for r in result.history],
        "losses": result.losses,
        "series": {k: [list(p) for p in v] for k, v in series.items()},
        "seconds_at": {str(k): v for k, v in seconds_at.items()},
    }
    return row, history
