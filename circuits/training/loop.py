"""The training loop: AdamW with warm-up on a task's batches, evaluations, checkpoints, resume.

Reproducible on the CPU: the same model config, task and train config give the same weights,
and a run resumed from a checkpoint ends with the same weights, bit for bit, as one that never
stopped (the state a resume needs is :mod:`circuits.training.state`'s).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from circuits import checkpoint
from circuits.analysis.head_scores import evaluate
from circuits.analysis.scores import applicable
from circuits.files import check_writable, writer_lock
from circuits.losses import cross_entropy
from circuits.model import HookedTransformer
from circuits.records import EvalRecord
from circuits.tasks import Task
from circuits.training.config import TARGET_ALIASES, TrainConfig, targets_met
from circuits.training.intervention_plan import InterventionPlan
from circuits.training.metrics import evaluation_metrics, metrics_due
from circuits.training.state import (
    RESUMABLE_CHANGES,
    TrainingCheckpoint,
    TrainResult,
    read_training_metadata,
    save_training,
)

__all__ = ["TrainingDiverged", "check_compatible", "make_optimizer", "resume", "train"]


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or inf; the last good checkpoint is left intact."""


def _to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with its tensors on ``device`` (the same object when already there)."""
    if batch.tokens.device == device:
        return batch
    return dataclasses.replace(
        batch,
        tokens=batch.tokens.to(device),
        targets=batch.targets.to(device),
        mask=batch.mask.to(device),
    )


def check_compatible(model: HookedTransformer, task: Task) -> None:
    """Raises ValueError if ``task``'s sequences do not fit ``model``."""
    if task.d_vocab > model.cfg.d_vocab:
        raise ValueError(
            f"task d_vocab={task.d_vocab} exceeds the model's d_vocab={model.cfg.d_vocab}"
        )
    if task.seq_len > model.cfg.n_ctx:
        raise ValueError(f"task seq_len={task.seq_len} exceeds the model's n_ctx={model.cfg.n_ctx}")


def progress_bar(cfg: TrainConfig, task: Task, initial: int) -> Any:
    """The run's tqdm bar. A run with targets usually stops long before its step budget, so
    its bar counts steps without a total (the goal is in the description); a run without
    targets has the budget as its total."""
    if cfg.has_targets:
        goal = ", ".join(f"{k}>={v:g}" for k, v in cfg.targets.items())
        if cfg.target_accuracy is not None:
            goal = ", ".join(filter(None, [goal, f"accuracy>={cfg.target_accuracy:g}"]))
        desc = f"train {task.name} until {goal} (max {cfg.steps} steps)"
        total = None
    else:
        desc, total = f"train {task.name}", cfg.steps
    return tqdm(total=total, initial=initial, disable=not cfg.progress, desc=desc, leave=False)


def train(
    model: HookedTransformer,
    task: Task,
    cfg: TrainConfig | None = None,
    callback: Callable[[int, EvalRecord], None] | None = None,
    *,
    resume: str | Path | TrainingCheckpoint | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Trains ``model`` in place on batches of ``task``.

    Reproducible on the CPU: the same model config, task and ``cfg`` give the same weights, and
    a run resumed from a checkpoint ends with the same weights, bit for bit, as one that never
    stopped.

    Args:
        model: The model to train (modified in place).
        task: A task (see :mod:`circuits.tasks`).
        cfg: Training configuration; defaults to ``TrainConfig()``.
        callback: Called as ``callback(step, metrics)`` after each evaluation.
        resume: A checkpoint written by an earlier run with the same model config, task and
            ``cfg`` (``steps``, ``progress`` and the checkpoint fields may differ), or that
            checkpoint already read: training continues from its step.
        overwrite: Replace an existing checkpoint in ``cfg.checkpoint_dir`` (a fresh run
            refuses to otherwise).

    Returns:
        The loss curve and the evaluation history (of the whole run, when resumed).

    Raises:
        TrainingDiverged: The loss or the weights became NaN or inf.
    """
    cfg = cfg or TrainConfig()
    check_compatible(model, task)
    plan = InterventionPlan(cfg.interventions, model, task.seq_len, cfg.steps)  # checks first
    if cfg.device is not None:
        model.to(cfg.device)
    device = next(model.parameters()).device
    if cfg.checkpoint_dir is not None and resume is None:
        check_writable(cfg.checkpoint_dir, overwrite)  # fail now, not after training
    probe = _to_device(task.probe(cfg.probe_size), device)
    unsupported = [n for n in cfg.targets if not applicable([n], probe)]
    if unsupported:
        raise ValueError(
            f"target score(s) {unsupported} need a repeated-tokens probe; the probe of task "
            f"{task.name!r} has no repeat_length"
        )
    recorded = cfg.recorded_scores(probe)
    generator = torch.Generator().manual_seed(cfg.seed)
    optimizer = make_optimizer(model, cfg)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    )
    result = TrainResult()
    saved_at = None  # step of the last checkpoint written or resumed from
    if resume is not None:
        if not isinstance(resume, TrainingCheckpoint):
            resume = TrainingCheckpoint.read(resume)
        saved_at = resume.restore(model, task, cfg, optimizer, schedule, generator, result)
        # A solved run continues only if its targets were dropped (it would stop at once).
        if (result.solved_at is not None and cfg.has_targets) or saved_at >= cfg.steps:
            return result
    start = time.perf_counter() - result.seconds
    bar = progress_bar(cfg, task, result.steps)
    threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    model.train()
    try:
        for step in range(result.steps + 1, cfg.steps + 1):
            plan.apply(step - 1)  # hooks and freezes of this step; its evaluation sees them too
            batch = _to_device(task.sample(cfg.batch_size, generator), device)
            logits = model(batch.tokens)
            loss = cross_entropy(logits, batch.tokens, batch.targets, batch.mask)
            loss_value = loss.item()
            if not math.isfinite(loss_value):  # before the step, so the weights stay finite
                raise TrainingDiverged(_diverged(f"loss is {loss_value}", step, cfg, saved_at))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            schedule.step()
            result.losses.append(loss_value)
            result.steps = step
            bar.update(1)
            done = step == cfg.steps
            if step % cfg.eval_every == 0 or done:
                model.eval()
                record = evaluate(model, probe, recorded, step=step, threads=None)  # run's threads
                record = dataclasses.replace(
                    record, train_loss=result.losses[-1], seconds=time.perf_counter() - start
                )
                solved = targets_met(record, cfg)
                if metrics_due(task, len(result.history), done or solved):
                    with torch.no_grad():
                        metrics = evaluation_metrics(task, model, probe)
                    record = dataclasses.replace(record, metrics=metrics)
                model.train()
                result.history.append(record)
                bar.set_postfix(loss=f"{loss_value:.3f}", acc=f"{record.accuracy:.2f}")
                if callback is not None:
                    callback(step, record)
                if solved:
                    result.solved_at = step
                    done = True
            every = cfg.checkpoint_every
            if cfg.checkpoint_dir is not None and (done or (every and step % every == 0)):
                if not checkpoint.all_finite(model):
                    raise TrainingDiverged(_diverged("weights are not finite", step, cfg, saved_at))
                result.seconds = time.perf_counter() - start
                save_training(
                    cfg.checkpoint_dir,
                    model,
                    step=step,
                    optimizer=optimizer,
                    schedule=schedule,
                    generator=generator,
                    result=result,
                    task=task,
                    train_config=cfg.to_dict(),
                )
                saved_at = step
            if done:
                break
    finally:
        plan.close()
        torch.set_num_threads(threads)
        bar.close()
        model.eval()
        result.seconds = time.perf_counter() - start
    return result


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """The AdamW of :func:`train`: the fused kernel where torch has it on the CPU (>= 2.4).

    With a dozen small tensors, one fused update instead of a dozen op sequences per tensor
    cuts the optimizer's share of a step by more than half.
    """
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    return torch.optim.AdamW(
        model.parameters(),
        lr=cfg.lr,
        betas=cfg.betas,
        weight_decay=cfg.weight_decay,
        fused=(major, minor) >= (2, 4) or None,
    )


def _diverged(what: str, step: int, cfg: TrainConfig, saved_at: int | None) -> str:
    if cfg.checkpoint_dir is None:
        where = "no checkpoint was being written"
    elif saved_at is None:
        where = "no checkpoint had been written yet"
    else:
        where = f"the last good checkpoint, {cfg.checkpoint_dir} (step {saved_at}), is intact"
    return f"training diverged at step {step}: {what} (lr={cfg.lr}); {where}"


def resume(
    path: str | Path, **changes: Any
) -> tuple[HookedTransformer, Task, TrainConfig, TrainResult]:
    """Continues the training run checkpointed at ``path`` (and keeps checkpointing there).

    The model, task and training config come from the checkpoint; ``changes`` may set
    ``steps`` (to train longer), ``progress``, ``checkpoint_every`` and the targets (None / {}
    continues a run that already met its targets); :func:`~circuits.training.resume_plan`
    works them out from what a user asks. Holds the checkpoint's writer lock throughout: a
    second writer gets :class:`~circuits.files.CheckpointBusy`. The checkpoint is read once.

    Returns:
        ``(model, task, train_config, result)``; ``result`` covers the whole run.
    """
    bad = sorted(set(changes) - set(RESUMABLE_CHANGES) - set(TARGET_ALIASES))
    if bad:
        raise ValueError(f"cannot change {', '.join(bad)} when resuming (it would change the run)")
    read_training_metadata(path)  # a clear error first if it is no training run
    with writer_lock(path):
        saved = TrainingCheckpoint.read(path)
        task, cfg = saved.run(**{**changes, "checkpoint_dir": str(path)})
        result = train(saved.model, task, cfg, resume=saved)
    return saved.model, task, cfg, result
