"""The shift-by-one task: copy the previous token (what a previous-token head computes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from circuits.tasks.base import Batch, TaskBase, check_generator, check_task_fields
from circuits.validation import check_int

if TYPE_CHECKING:
    import torch

__all__ = ["ShiftByOneTask"]


@dataclass(frozen=True)
class ShiftByOneTask(TaskBase):
    """Copy the previous token: the target at position ``t`` is the token at ``t - 1``.

    This is exactly what a previous-token head computes; a 1-layer model learns it. The probe
    is a held-out batch of the task.

    Args:
        d_vocab: Vocabulary size; tokens are uniform over ``[0, d_vocab)``.
        seq_len: Length of each sequence.
        seed: Seed of the default data stream and of :meth:`probe`.
    """

    d_vocab: int = 32
    seq_len: int = 32
    seed: int = 0
    name: str = field(default="shift", init=False)

    def __post_init__(self) -> None:
        check_task_fields(self)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        import torch

        check_int(batch_size, "batch_size", 1)
        check_generator(generator)
        tokens = torch.randint(0, self.d_vocab, (batch_size, self.seq_len), generator=generator)
        targets = torch.cat([tokens[:, :1], tokens[:, :-1]], dim=1)
        mask = torch.ones_like(tokens, dtype=torch.bool)
        mask[:, 0] = False
        return Batch(tokens, targets, mask)
