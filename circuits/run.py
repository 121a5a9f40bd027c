"""``RunConfig``: one training run as data, ``{model, task, train}``, and the one place that
turns that data into a model, a task and a train config.

Presets (:mod:`circuits.presets`), sweeps (each run's settings) and the CLI describe a run as
three parts of plain values; :meth:`RunConfig.from_dict` reads them (every part checked by its
own config: :class:`~circuits.config.ModelConfig`, the task registry,
:class:`~circuits.training.TrainConfig`; unknown keys refused), :meth:`RunConfig.to_dict`
writes them with every field resolved, and :meth:`RunConfig.build` allocates the model.
A training checkpoint records the same parts (``config.json``, ``task``, ``train_config``);
:meth:`RunConfig.from_checkpoint` reads them back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from circuits.config import ModelConfig
from circuits.model import HookedTransformer
from circuits.tasks import Task, task_from_dict
from circuits.training import TrainConfig
from circuits.validation import check_fields, check_int

__all__ = ["PARTS", "RunConfig"]

PARTS = ("model", "task", "train")


@dataclass(frozen=True)
class RunConfig:
    """A run: the model's architecture, the task and how to train.

    Attributes:
        model: The architecture (and init seed).
        task: The task (built: tasks are small frozen dataclasses, no tensors).
        train: How to train (data seed, optimizer, targets, checkpoints).
    """

    model: ModelConfig
    task: Task
    train: TrainConfig

    def __post_init__(self) -> None:
        for part, kind in (("model", ModelConfig), ("train", TrainConfig)):
            if not isinstance(getattr(self, part), kind):
                raise TypeError(f"RunConfig.{part} must be a {kind.__name__}")
        if not isinstance(self.task, Task):
            raise TypeError(f"RunConfig.task must be a task, got {type(self.task).__name__}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], seed: int | None = None) -> RunConfig:
        """Reads ``{"model": {...}, "task": {"name": ..., ...}, "train": {...}}``.

        Args:
            seed: Set as the seed of every part (model init, task probe, data stream), as a
                preset's ``seed`` does; None keeps each part's own.

        Raises:
            ValueError: a missing or unknown part or field, or a bad value (named; each
                part is read by its own strict ``from_dict``).
        """
        parts = check_fields(cls, data, "run config")
        missing = [p for p in PARTS if p not in parts]
        if missing:
            raise ValueError(f"run config lacks {', '.join(missing)} (needs {', '.join(PARTS)})")
        for part in PARTS:
            if not isinstance(parts[part], Mapping):
                raise ValueError(f"run config part {part!r} must be a mapping of fields")
        parts = {part: dict(parts[part]) for part in PARTS}
        if seed is not None:
            check_int(seed, "seed")
            for part in PARTS:
                parts[part]["seed"] = seed
        return cls(
            model=ModelConfig.from_dict(parts["model"]),
            task=task_from_dict(parts["task"]),
            train=TrainConfig.from_dict(parts["train"]),
        )

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The three parts as plain, JSON-ready data (every field resolved)."""
        return {
            "model": self.model.to_dict(),
            "task": self.task.to_dict(),
            "train": self.train.to_dict(),
        }

    def build(self) -> tuple[HookedTransformer, Task, TrainConfig]:
        """``(model, task, train_config)``: a freshly initialised model (seeded by
        ``model.seed``; allocates its parameters), the task and the train config."""
        return HookedTransformer(self.model), self.task, self.train

    @classmethod
    def from_checkpoint(cls, path: str | Path, **train_changes: Any) -> RunConfig:
        """The run a training checkpoint records, with ``train_changes`` to its train config
        (see :func:`circuits.training.training_run`). Reads no weights."""
        from circuits import checkpoint
        from circuits.training import read_training_metadata, training_run

        meta = read_training_metadata(path)
        task, train = training_run(path, meta, **train_changes)
        return cls(model=checkpoint.read_config(path, meta), task=task, train=train)
