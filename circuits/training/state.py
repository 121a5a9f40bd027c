"""The training state and its checkpoint: everything a bit-for-bit resume needs.

A training checkpoint is a model checkpoint (:mod:`circuits.checkpoint`) whose metadata says
``kind: training`` and records the task, the train config, the step and the last metrics, plus
``train_state.pt``: optimizer, LR schedule, data RNG, loss curve and evaluation history. This
module writes it (:func:`save_training`), reads it once (:class:`TrainingCheckpoint`: metadata
and weights each read one time), restores a fresh run from it, and decides what a resume may
change (:func:`resume_plan`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from circuits import checkpoint
from circuits.checkpoint import METADATA_FILE, TRAIN_STATE_FILE, CheckpointError
from circuits.model import HookedTransformer
from circuits.records import EvalRecord, history_from_json
from circuits.tasks import Task, task_from_dict
from circuits.training.config import TARGET_ALIASES, TrainConfig
from circuits.validation import is_int

__all__ = [
    "RESUMABLE_CHANGES",
    "TrainResult",
    "TrainingCheckpoint",
    "load_training",
    "read_training_metadata",
    "resume_plan",
    "save_training",
    "training_run",
]

TRAIN_STATE_KEYS = ("step", "optimizer", "schedule", "generator", "losses", "history")

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
)


@dataclass
class TrainResult:
    """What :func:`~circuits.training.train` returns (and a training checkpoint holds).

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


def save_training(
    path: str | Path,
    model: HookedTransformer,
    *,
    step: int,
    optimizer: Any,
    schedule: Any,
    generator: Any,
    result: Any,
    task: Any,
    train_config: dict[str, Any],
    overwrite: bool = True,
) -> Path:
    """Saves everything a bit-for-bit resume needs: weights, optimizer, LR schedule, the data
    generator's RNG state, the loss curve and the evaluation history (atomically)."""
    state = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "generator": generator.get_state(),
        "losses": list(result.losses),
        "history": [r.to_dict() if hasattr(r, "to_dict") else r for r in result.history],
        "solved_at": result.solved_at,
        "seconds": result.seconds,
    }
    metadata = {
        "kind": "training",
        "step": step,
        "solved_at": result.solved_at,
        "task": task.to_dict() if hasattr(task, "to_dict") else {"name": task.name},
        "train_config": train_config,
        "metrics": state["history"][-1] if state["history"] else None,
    }
    extra = {TRAIN_STATE_FILE: checkpoint.pack(state)}
    return checkpoint.save(model, path, overwrite=overwrite, metadata=metadata, extra_files=extra)


def read_training_metadata(path: str | Path) -> dict[str, Any]:
    """:func:`~circuits.checkpoint.read_metadata` of a training checkpoint, with the fields a
    resume needs checked (``metadata.json`` is not covered by the hashes, so it is validated
    like ``config.json``).

    Raises:
        CheckpointError: no training state, or a field missing or of the wrong type.
    """
    meta = checkpoint.read_metadata(path)
    source = Path(path) / METADATA_FILE
    if meta.get("kind") != "training" or TRAIN_STATE_FILE not in meta["sha256"]:
        raise CheckpointError(f"{path} holds a model but no training state; it cannot be resumed")
    for key, ok, want in (
        ("step", is_int(meta.get("step"), 0), "a non-negative int"),
        ("solved_at", meta.get("solved_at") is None or is_int(meta.get("solved_at"), 0),
         "a non-negative int or null"),
        ("task", isinstance(meta.get("task"), dict)
         and isinstance(meta["task"].get("name"), str), "an object with a string 'name'"),
        ("train_config", isinstance(meta.get("train_config"), dict), "an object"),
    ):  # fmt: skip
        if key not in meta and key != "solved_at":
            raise CheckpointError(f"{source}: missing {key!r}; not a resumable checkpoint")
        if not ok:
            raise CheckpointError(f"{source}: {key!r} must be {want}, got {meta.get(key)!r}")
    return meta


def _run_from_metadata(
    path: Path, meta: dict[str, Any], **changes: Any
) -> tuple[Task, TrainConfig]:
    source = path / METADATA_FILE
    try:
        task = task_from_dict(meta["task"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: bad task {meta['task']!r}: {e}") from e
    try:
        cfg = TrainConfig.from_dict({**meta["train_config"], **changes})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: bad train_config: {e}") from e
    return task, cfg


def training_run(
    path: str | Path, meta: dict[str, Any] | None = None, **changes: Any
) -> tuple[Task, TrainConfig]:
    """The task and :class:`~circuits.training.TrainConfig` recorded in a training checkpoint
    (:meth:`circuits.run.RunConfig.from_checkpoint` adds the model config).

    Args:
        meta: Its :func:`read_training_metadata`, if already read.
        changes: Train-config fields to set on top of the recorded ones.

    Raises:
        CheckpointError: the metadata names an unknown task or field, or a value of the
            wrong type or range.
    """
    meta = meta if meta is not None else read_training_metadata(path)
    return _run_from_metadata(Path(path), meta, **changes)


@dataclass
class TrainingCheckpoint:
    """A training checkpoint read once: its metadata, model (eval mode) and training state."""

    path: Path
    meta: dict[str, Any]
    model: HookedTransformer
    state: dict[str, Any]

    @classmethod
    def read(cls, path: str | Path) -> TrainingCheckpoint:
        """Reads and checks a training checkpoint (metadata once, weights once)."""
        path = Path(path)
        meta = read_training_metadata(path)
        model = checkpoint.load(path, HookedTransformer, meta)
        data = checkpoint.read_file(path, TRAIN_STATE_FILE, meta)
        state = checkpoint.unpack(data, str(path / TRAIN_STATE_FILE))
        missing = [k for k in TRAIN_STATE_KEYS if k not in state]
        if missing:
            raise CheckpointError(f"{path}: training state lacks {', '.join(missing)}")
        if state["step"] != meta.get("step") or len(state["losses"]) != state["step"]:
            raise CheckpointError(f"{path}: training state and metadata disagree on the step")
        return cls(path, meta, model, state)

    def run(self, **changes: Any) -> tuple[Task, TrainConfig]:
        """The recorded task and train config, with ``changes`` to the config."""
        return _run_from_metadata(self.path, self.meta, **changes)

    def restore(
        self,
        model: HookedTransformer,
        task: Task,
        cfg: TrainConfig,
        optimizer: torch.optim.Optimizer,
        schedule: torch.optim.lr_scheduler.LRScheduler,
        generator: torch.Generator,
        result: TrainResult,
    ) -> int:
        """Puts this state into the objects of a fresh run; returns its step.

        Raises:
            ValueError: the model config, task or a non-resumable train-config field differs.
        """
        path, meta, state = self.path, self.meta, self.state
        if self.model.cfg != model.cfg:
            raise ValueError(
                f"resume={path}: the checkpoint's model config differs from the model's"
            )
        saved_task = meta.get("task")
        if hasattr(task, "to_dict") and saved_task != task.to_dict():
            raise ValueError(
                f"resume={path}: the checkpoint was trained on another task: {saved_task}"
            )
        saved_cfg = TrainConfig.from_dict(meta["train_config"]).to_dict()
        new_cfg = cfg.to_dict()  # either may lack a key the other has (interventions)
        differ = [
            k
            for k in sorted({*new_cfg, *saved_cfg})
            if k not in RESUMABLE_CHANGES and saved_cfg.get(k) != new_cfg.get(k)
        ]
        if differ:
            raise ValueError(f"resume={path}: train config differs in {', '.join(differ)}")
        if model is not self.model:
            with torch.no_grad():
                for name, tensor in self.model.state_dict().items():
                    model.get_parameter(name).copy_(tensor)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        generator.set_state(state["generator"])
        result.losses = list(state["losses"])
        try:  # the flat dict records of earlier versions are migrated here
            result.history = history_from_json(state["history"])
        except ValueError as e:
            raise CheckpointError(f"{path}: bad training history: {e}") from e
        result.steps = state["step"]
        result.solved_at = state.get("solved_at")
        result.seconds = float(state.get("seconds", 0.0))
        return int(state["step"])


def load_training(path: str | Path) -> tuple[HookedTransformer, dict[str, Any], dict[str, Any]]:
    """Loads a training checkpoint: ``(model, metadata, train_state)``, all validated."""
    ck = TrainingCheckpoint.read(path)
    return ck.model, ck.meta, ck.state


def resume_plan(
    meta: dict[str, Any],
    *,
    steps: int | None = None,
    no_early_stop: bool = False,
    **changes: Any,
) -> tuple[dict[str, Any], str | None]:
    """The train-config changes that resume a run as asked, and what to tell the user.

    A run that met its targets continues only past them: with ``no_early_stop``, or with a
    ``steps`` beyond its step (its targets are then dropped, and the message says so).

    Args:
        meta: :func:`read_training_metadata` of the checkpoint.
        steps: Train up to this step (must be past the checkpoint's).
        no_early_stop: Drop the targets (train all steps).
        changes: Other resumable changes (``progress``, ``checkpoint_every``).

    Raises:
        ValueError: ``steps`` does not go past the checkpoint, or a change would change the
            run (not in :data:`RESUMABLE_CHANGES`).
    """
    bad = sorted(set(changes) - set(RESUMABLE_CHANGES) - set(TARGET_ALIASES))
    if bad:
        raise ValueError(f"cannot change {', '.join(bad)} when resuming (it would change the run)")
    step, solved_at = meta["step"], meta.get("solved_at")
    budget = meta["train_config"].get("steps")
    changes = dict(changes)
    if steps is not None:
        if steps <= step:
            raise ValueError(
                f"steps={steps} does not go past the checkpoint's step {step}; pass a larger "
                "step count to train further"
            )
        changes["steps"] = steps
    goal = changes.get("steps", budget)
    no_targets: dict[str, Any] = dict(target_accuracy=None, targets={})
    message = None
    if solved_at is not None and (no_early_stop or steps is not None):
        changes.update(no_targets)
        message = f"the run met its targets at step {solved_at}; continued to step {goal}"
    elif no_early_stop:
        changes.update(no_targets)
    elif solved_at is not None:
        message = (
            f"the run met its targets at step {solved_at} (checkpoint at step {step}): nothing "
            "to train; pass --steps N to continue past them"
        )
    elif isinstance(budget, int) and step >= budget and steps is None:
        message = f"the run already took all its {budget} steps; pass --steps N to train further"
    return changes, message
