"""Training from scratch on a synthetic task: AdamW, warm-up, seeded, with head-score history.

The history records the probe accuracy and head scores every ``eval_every`` steps, so the
phase change (previous-token heads, then induction heads, then the loss drop) can be watched.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from circuits import checkpoint
from circuits.analysis.head_scores import evaluate
from circuits.model import HookedTransformer, cross_entropy
from circuits.tasks import Task


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Args:
        steps: Maximum number of optimizer steps.
        batch_size: Sequences per step.
        lr: Peak learning rate (AdamW).
        weight_decay: AdamW weight decay.
        betas: AdamW betas.
        warmup_steps: Linear warm-up from 0 to ``lr``; constant afterwards.
        grad_clip: Clip the global gradient norm (None: no clipping).
        seed: Seed of the data stream (the model's init has its own seed in ``ModelConfig``).
        eval_every: Evaluate the probe (accuracy, head scores) every this many steps.
        probe_size: Sequences in the evaluation probe.
        target_accuracy: Stop early once the probe accuracy reaches this (None: don't).
        target_induction: ...and some layer>=1 head's induction score reaches this.
        target_previous_token: ...and some head's previous-token score reaches this.
        progress: Show a tqdm progress bar.
        checkpoint_dir: Save a resumable checkpoint here (see :mod:`circuits.checkpoint`) every
            ``checkpoint_every`` steps and when training stops.
        checkpoint_every: Steps between checkpoints (None: only when training stops).
        threads: Torch intra-op threads while training, restored afterwards. At toy sizes one
            thread is as fast as several and is not slowed down by other busy processes (with
            two threads on two busy cores a step can take 20x longer); None keeps torch's.
        device: Move the model here before training ("cpu", "cuda", "mps", ...); None trains
            where the model already is. Batches are drawn on the CPU (the same data stream
            on every device) and moved to the model's device.
    """

    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-2
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = 20
    grad_clip: float | None = 1.0
    seed: int = 0
    eval_every: int = 50
    probe_size: int = 64
    target_accuracy: float | None = None
    target_induction: float | None = None
    target_previous_token: float | None = None
    progress: bool = True
    checkpoint_dir: str | None = None
    checkpoint_every: int | None = None
    threads: int | None = 1
    device: str | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "probe_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if (
            isinstance(self.warmup_steps, bool)
            or not isinstance(self.warmup_steps, int)
            or self.warmup_steps < 0
        ):
            raise ValueError(f"warmup_steps must be a non-negative int, got {self.warmup_steps!r}")
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive float, got {self.lr!r}")
        if not (isinstance(self.weight_decay, int | float) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two floats in [0, 1), got {self.betas!r}")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be positive or None, got {self.grad_clip!r}")
        for name in ("target_accuracy", "target_induction", "target_previous_token"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1] or None, got {value!r}")
        every = self.checkpoint_every
        if every is not None and (
            isinstance(every, bool) or not isinstance(every, int) or every <= 0
        ):
            raise ValueError(f"checkpoint_every must be a positive int or None, got {every!r}")
        if every is not None and self.checkpoint_dir is None:
            raise ValueError("checkpoint_every needs checkpoint_dir")
        if self.checkpoint_dir is not None:
            object.__setattr__(self, "checkpoint_dir", str(self.checkpoint_dir))
        if self.threads is not None and (
            isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads <= 0
        ):
            raise ValueError(f"threads must be a positive int or None, got {self.threads!r}")
        if self.device is not None:
            try:
                torch.device(self.device)
            except (RuntimeError, TypeError) as e:
                raise ValueError(f"device must be a torch device name, got {self.device!r}") from e
            object.__setattr__(self, "device", str(self.device))

    @property
    def has_targets(self) -> bool:
        return any(
            t is not None
            for t in (self.target_accuracy, self.target_induction, self.target_previous_token)
        )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown train config field(s): {', '.join(unknown)}")
        data = dict(data)
        if "betas" in data:
            data["betas"] = tuple(data["betas"])
        return cls(**data)


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


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or inf; the last good checkpoint is left intact."""


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        losses: Training loss at every step.
        history: One record per evaluation: ``step``, ``loss``, ``accuracy``,
            ``previous_token`` and ``induction`` (``[n_layers][n_heads]`` nested lists).
        steps: Steps taken.
        solved_at: First step at which every target was met (None if never or no targets).
        seconds: Wall time of the loop, evaluations included.
    """

    losses: list[float] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    solved_at: int | None = None
    seconds: float = 0.0

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


def targets_met(metrics: dict[str, Any], cfg: TrainConfig) -> bool:
    """Whether ``metrics`` (from :func:`~circuits.analysis.head_scores.evaluate`) meet targets."""
    if not cfg.has_targets:
        return False
    if cfg.target_accuracy is not None and metrics["accuracy"] < cfg.target_accuracy:
        return False
    previous = float(torch.as_tensor(metrics["previous_token"]).max())
    if cfg.target_previous_token is not None and previous < cfg.target_previous_token:
        return False
    if cfg.target_induction is not None:
        induction = torch.as_tensor(metrics.get("induction", [[0.0]]))
        # Induction needs composition: only heads after the first layer count.
        if induction.shape[0] < 2 or float(induction[1:].max()) < cfg.target_induction:
            return False
    return True


def check_compatible(model: HookedTransformer, task: Task) -> None:
    """Raises ValueError if ``task``'s sequences do not fit ``model``."""
    if task.d_vocab > model.cfg.d_vocab:
        raise ValueError(
            f"task d_vocab={task.d_vocab} exceeds the model's d_vocab={model.cfg.d_vocab}"
        )
    if task.seq_len > model.cfg.n_ctx:
        raise ValueError(f"task seq_len={task.seq_len} exceeds the model's n_ctx={model.cfg.n_ctx}")


def train(
    model: HookedTransformer,
    task: Task,
    cfg: TrainConfig | None = None,
    callback: Callable[[int, dict[str, Any]], None] | None = None,
    *,
    resume: str | Path | None = None,
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
            ``cfg`` (``steps``, ``progress`` and the checkpoint fields may differ): training
            continues from its step.
        overwrite: Replace an existing checkpoint in ``cfg.checkpoint_dir`` (a fresh run
            refuses to otherwise).

    Returns:
        The loss curve and the evaluation history (of the whole run, when resumed).

    Raises:
        TrainingDiverged: The loss or the weights became NaN or inf.
    """
    cfg = cfg or TrainConfig()
    check_compatible(model, task)
    if cfg.device is not None:
        model.to(cfg.device)
    device = next(model.parameters()).device
    if cfg.checkpoint_dir is not None and resume is None:
        checkpoint.check_writable(cfg.checkpoint_dir, overwrite)  # fail now, not after training
    probe = _to_device(task.probe(cfg.probe_size), device)
    generator = torch.Generator().manual_seed(cfg.seed)
    optimizer = make_optimizer(model, cfg)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    )
    result = TrainResult()
    saved_at = None  # step of the last checkpoint written or resumed from
    if resume is not None:
        saved_at = _restore(resume, model, task, cfg, optimizer, schedule, generator, result)
        # A solved run continues only if its targets were dropped (it would stop at once).
        if (result.solved_at is not None and cfg.has_targets) or saved_at >= cfg.steps:
            return result
    start = time.perf_counter() - result.seconds
    bar = tqdm(
        total=cfg.steps,
        initial=result.steps,
        disable=not cfg.progress,
        desc=f"train {task.name}",
        leave=False,
    )
    threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    model.train()
    try:
        for step in range(result.steps + 1, cfg.steps + 1):
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
                metrics = evaluate(model, probe)
                model.train()
                record = {
                    "step": step,
                    "train_loss": result.losses[-1],
                    **{k: v.tolist() if torch.is_tensor(v) else v for k, v in metrics.items()},
                }
                result.history.append(record)
                bar.set_postfix(loss=f"{record['train_loss']:.3f}", acc=f"{record['accuracy']:.2f}")
                if callback is not None:
                    callback(step, record)
                if targets_met(metrics, cfg):
                    result.solved_at = step
                    done = True
            every = cfg.checkpoint_every
            if cfg.checkpoint_dir is not None and (done or (every and step % every == 0)):
                if not checkpoint.all_finite(model):
                    raise TrainingDiverged(_diverged("weights are not finite", step, cfg, saved_at))
                result.seconds = time.perf_counter() - start
                checkpoint.save_training(
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


# Fields that may change between a run and its resumption without changing the numbers (the
# targets only decide where to stop: dropping them continues a solved run past its targets).
RESUMABLE_CHANGES = (
    "steps",
    "device",
    "progress",
    "checkpoint_dir",
    "checkpoint_every",
    "target_accuracy",
    "target_induction",
    "target_previous_token",
)


def _restore(
    path: str | Path,
    model: HookedTransformer,
    task: Task,
    cfg: TrainConfig,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
    result: TrainResult,
) -> int:
    """Loads a training checkpoint into the objects of a fresh run; returns its step."""
    saved_model, meta, state = checkpoint.load_training(path)
    if saved_model.cfg != model.cfg:
        raise ValueError(f"resume={path}: the checkpoint's model config differs from the model's")
    saved_task = meta.get("task")
    if hasattr(task, "to_dict") and saved_task != task.to_dict():
        raise ValueError(f"resume={path}: the checkpoint was trained on another task: {saved_task}")
    saved_cfg = TrainConfig.from_dict(meta["train_config"]).to_dict()
    differ = [
        k for k, v in cfg.to_dict().items() if k not in RESUMABLE_CHANGES and saved_cfg[k] != v
    ]
    if differ:
        raise ValueError(f"resume={path}: train config differs in {', '.join(differ)}")
    with torch.no_grad():
        for name, tensor in saved_model.state_dict().items():
            model.get_parameter(name).copy_(tensor)
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    generator.set_state(state["generator"])
    result.losses = list(state["losses"])
    result.history = list(state["history"])
    result.steps = state["step"]
    result.solved_at = state.get("solved_at")
    result.seconds = float(state.get("seconds", 0.0))
    return int(state["step"])


def resume(
    path: str | Path, **changes: Any
) -> tuple[HookedTransformer, Task, TrainConfig, TrainResult]:
    """Continues the training run checkpointed at ``path`` (and keeps checkpointing there).

    The model, task and training config come from the checkpoint; ``changes`` may set
    ``steps`` (to train longer), ``progress``, ``checkpoint_every`` and the ``target_*`` fields
    (None continues a run that already met its targets). Holds the checkpoint's writer lock
    throughout: a second writer gets :class:`~circuits.checkpoint.CheckpointBusy`.

    Returns:
        ``(model, task, train_config, result)``; ``result`` covers the whole run.
    """
    bad = sorted(set(changes) - set(RESUMABLE_CHANGES) - {"checkpoint_dir"})
    if bad:
        raise ValueError(f"cannot change {', '.join(bad)} when resuming (it would change the run)")
    checkpoint.read_training_metadata(path)  # a clear error first if it is no training run
    with checkpoint.writer_lock(path):
        task, cfg = checkpoint.training_run(path, **{**changes, "checkpoint_dir": str(path)})
        model = HookedTransformer(checkpoint.load(path).cfg)
        result = train(model, task, cfg, resume=path)
    return model, task, cfg, result
