"""Training from scratch on a synthetic task: AdamW, warm-up, seeded, with head-score history.

The history records an :class:`~circuits.records.EvalRecord` (probe loss, accuracy and the
registered head scores) every ``eval_every`` steps, so the phase change (previous-token heads,
then induction heads, then the loss drop) can be watched. Training can stop on any registered
score: ``TrainConfig(targets={"induction": 0.4}, target_accuracy=0.9)``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from circuits import checkpoint
from circuits.analysis.head_scores import evaluate
from circuits.analysis.scores import applicable, get_score, score_names
from circuits.losses import cross_entropy
from circuits.model import HookedTransformer
from circuits.records import EvalRecord, history_from_json
from circuits.tasks import Task

# Deprecated aliases of ``targets`` entries (configs and checkpoints of earlier versions).
TARGET_ALIASES = {"target_induction": "induction", "target_previous_token": "previous_token"}


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
        targets: ``{score name: threshold}``: ...and the best head of each registered score
            (over the layers that count, e.g. induction from layer 1) reaches its threshold.
        scores: Scores recorded in the history (None: every score registered with
            ``track=True`` that the task's probe supports); target scores are always recorded.
        target_induction: Deprecated alias of ``targets["induction"]`` (kept in sync with it).
        target_previous_token: Deprecated alias of ``targets["previous_token"]``.
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
    targets: Mapping[str, float] = field(default_factory=dict)
    scores: tuple[str, ...] | None = None
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
        acc = self.target_accuracy
        if acc is not None and (isinstance(acc, bool) or not isinstance(acc, int | float)):
            raise TypeError(f"target_accuracy must be a number or None, got {acc!r}")
        if acc is not None and not 0 <= acc <= 1:
            raise ValueError(f"target_accuracy must be in [0, 1] or None, got {acc!r}")
        self._normalise_targets()
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

    def _normalise_targets(self) -> None:
        if not isinstance(self.targets, Mapping):
            raise TypeError(f"targets must be a mapping score -> threshold, got {self.targets!r}")
        targets: dict[str, float] = {}
        for name, value in self.targets.items():
            if value is not None:
                targets[get_score(name).name] = get_score(name).check_threshold(value)
        for alias, name in TARGET_ALIASES.items():
            value = getattr(self, alias)
            if value is None:
                continue
            value = get_score(name).check_threshold(value)
            if name in self.targets and targets.get(name) != value:
                raise ValueError(f"{alias}={value} contradicts targets[{name!r}]")
            targets[name] = value
        object.__setattr__(self, "targets", targets)
        for alias, name in TARGET_ALIASES.items():  # the aliases mirror ``targets``
            object.__setattr__(self, alias, targets.get(name))
        if self.scores is not None:
            if isinstance(self.scores, str):
                raise TypeError(f"scores must be a list of score names, got {self.scores!r}")
            object.__setattr__(self, "scores", tuple(get_score(n).name for n in self.scores))

    @property
    def has_targets(self) -> bool:
        return self.target_accuracy is not None or bool(self.targets)

    def recorded_scores(self, probe: Any) -> tuple[str, ...]:
        """Score names each evaluation records on ``probe`` (see ``scores``)."""
        names = score_names(tracked=True) if self.scores is None else self.scores
        names = tuple(s.name for s in applicable(names, probe))
        return names + tuple(n for n in self.targets if n not in names)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields; the deprecated ``target_*`` aliases are folded into ``targets``."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        d["targets"] = dict(self.targets)
        d["scores"] = None if self.scores is None else list(self.scores)
        for alias in TARGET_ALIASES:
            del d[alias]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Reads :meth:`to_dict`'s output, or the config of an earlier version (``target_*``)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown train config field(s): {', '.join(unknown)}")
        data = dict(data)
        if "betas" in data:
            data["betas"] = tuple(data["betas"])
        if data.get("scores") is not None:
            data["scores"] = tuple(data["scores"])
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
        history: One :class:`~circuits.records.EvalRecord` per evaluation (``step``, probe
            ``loss`` and ``accuracy``, ``scores`` by name, ``train_loss``, ``seconds``).
        steps: Steps taken.
        solved_at: First step at which every target was met (None if never or no targets).
        seconds: Wall time of the loop, evaluations included.
    """

    losses: list[float] = field(default_factory=list)
    history: list[EvalRecord] = field(default_factory=list)
    steps: int = 0
    solved_at: int | None = None
    seconds: float = 0.0

    @property
    def final(self) -> EvalRecord | None:
        """The last evaluation (None before the first)."""
        return self.history[-1] if self.history else None


def targets_met(record: EvalRecord | Mapping[str, Any], cfg: TrainConfig) -> bool:
    """Whether an evaluation meets every target of ``cfg`` (False when it has none).

    Each score target is met when the score's best head over the layers that count reaches
    the threshold (``HeadScore.met``); a score the record lacks is not met.
    """
    record = EvalRecord.from_dict(record)
    if not cfg.has_targets:
        return False
    if cfg.target_accuracy is not None and record.accuracy < cfg.target_accuracy:
        return False
    return all(
        name in record.scores and get_score(name).met(record.scores[name], threshold)
        for name, threshold in cfg.targets.items()
    )


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
    callback: Callable[[int, EvalRecord], None] | None = None,
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
                record = dataclasses.replace(
                    evaluate(model, probe, recorded, step=step),
                    train_loss=result.losses[-1],
                    seconds=time.perf_counter() - start,
                )
                model.train()
                result.history.append(record)
                bar.set_postfix(loss=f"{loss_value:.3f}", acc=f"{record.accuracy:.2f}")
                if callback is not None:
                    callback(step, record)
                if targets_met(record, cfg):
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
    "targets",
    "scores",
    *TARGET_ALIASES,
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
    try:  # the flat dict records of earlier versions are migrated here
        result.history = history_from_json(state["history"])
    except ValueError as e:
        raise checkpoint.CheckpointError(f"{path}: bad training history: {e}") from e
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
