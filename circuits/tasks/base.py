"""What a task is: :class:`Batch`, the :class:`Task` protocol, :class:`TaskBase` and the checks
every task shares. Torch is imported only when a batch is drawn."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from circuits.validation import check_int

if TYPE_CHECKING:
    import torch
    from jaxtyping import Bool, Int
    from torch import Tensor

__all__ = [
    "PROBE_SEED_OFFSET",
    "Batch",
    "Task",
    "TaskBase",
    "check_bool",
    "check_generator",
    "check_task_fields",
    "probe_seed",
]

# The probe's default seed is the task's seed plus this: held out from the training stream.
PROBE_SEED_OFFSET = 1_000_003
MAX_SEED = 2**62


@dataclass(frozen=True)
class Batch:
    """A batch of a task.

    Attributes:
        tokens: Input ids ``[batch, pos]``.
        targets: Ids to predict at each position ``[batch, pos]`` (arbitrary where masked out).
        mask: Bool ``[batch, pos]``: positions whose target is determined by the context.
        repeat_length: For a repeated-random-tokens probe, the length ``S`` of each copy
            (what induction scores need); None otherwise.
    """

    tokens: Int[Tensor, "batch pos"]
    targets: Int[Tensor, "batch pos"]
    mask: Bool[Tensor, "batch pos"]
    repeat_length: int | None = None


@runtime_checkable
class Task(Protocol):
    """What training, checkpoints, the CLI and the report need from a task.

    :class:`TaskBase` supplies ``probe`` and ``to_dict`` for a frozen dataclass; a task is
    rebuilt from ``to_dict()`` by :func:`task_from_dict`.
    """

    @property
    def name(self) -> str: ...

    @property
    def d_vocab(self) -> int: ...

    @property
    def seq_len(self) -> int: ...

    @property
    def seed(self) -> int: ...

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        """A training batch of ``batch_size`` sequences of ``seq_len``, drawn from ``generator``."""
        ...

    def probe(self, batch_size: int = 32, seed: int | None = None) -> Batch:
        """The held-out evaluation batch (training's accuracy and head scores); seeded."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable fields, ``name`` included: ``task_from_dict`` inverts it."""
        ...


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")


def check_generator(generator: Any) -> None:
    import torch

    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")


def check_task_fields(task: Any) -> None:
    """Validates the fields every task has: ``d_vocab``, ``seq_len``, ``seed``, ``name``."""
    check_int(task.d_vocab, "d_vocab", 2)
    check_int(task.seq_len, "seq_len", 2)
    check_int(task.seed, "seed", 0, MAX_SEED)
    if not isinstance(task.name, str) or not task.name:
        raise TypeError(f"name must be a non-empty str, got {task.name!r}")


class TaskBase:
    """Base of a task written as a frozen dataclass: ``to_dict`` and a seeded ``probe``.

    The default probe is a batch of the task itself, drawn from a generator seeded with
    ``seed + PROBE_SEED_OFFSET`` (so it is never a training batch of the same seed).
    """

    seed: int

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        raise NotImplementedError

    def probe(self, batch_size: int = 32, seed: int | None = None) -> Batch:
        import torch

        check_int(batch_size, "batch_size", 1)
        generator = torch.Generator().manual_seed(probe_seed(self.seed, seed))
        return self.sample(batch_size, generator)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


def probe_seed(task_seed: int, seed: int | None) -> int:
    """The seed of a probe: ``seed`` if given, else the task's seed plus PROBE_SEED_OFFSET."""
    if seed is None:
        return task_seed + PROBE_SEED_OFFSET
    check_int(seed, "seed", 0, MAX_SEED)
    return seed
