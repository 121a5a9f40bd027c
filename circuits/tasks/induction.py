"""The induction task: sequences that repeat with a random period per sequence."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from circuits.tasks.base import (
    Batch,
    TaskBase,
    check_bool,
    check_generator,
    check_task_fields,
    probe_seed,
)
from circuits.tasks.probes import distinct_ids, next_token_targets, repeated_tokens, with_bos
from circuits.validation import check_int

if TYPE_CHECKING:
    import torch

__all__ = ["InductionTask"]


@dataclass(frozen=True)
class InductionTask(TaskBase):
    """Sequences that repeat with a random period: ``x[t] = x[t - period]`` after one period.

    Each sequence draws its period uniformly from ``[min_period, max_period]`` and its first
    period of tokens without replacement. The model predicts the next token; the loss mask
    keeps the positions ``t >= period``, whose token occurred one period earlier and is
    followed by the token to predict. Position ``period - 1`` is not kept: its next token is
    the first repeat, but nothing in the context says the period has ended. A random period
    per sequence rules out positional shortcuts.

    Args:
        d_vocab: Vocabulary size of the model; with ``bos`` id 0 is reserved for BOS.
        seq_len: Length of each sequence, BOS included.
        min_period: Shortest period.
        max_period: Longest period; at most the number of non-BOS ids, and short enough to
            leave a predictable position (``max_period <= seq_len - bos - 2``).
        bos: Prepend a BOS token (id 0) to every sequence.
        seed: Seed of the default data stream and of :meth:`probe`.
    """

    d_vocab: int = 32
    seq_len: int = 48
    min_period: int = 4
    max_period: int = 24
    bos: bool = False
    seed: int = 0
    name: str = field(default="induction", init=False)

    def __post_init__(self) -> None:
        check_task_fields(self)
        check_bool("bos", self.bos)
        check_int(self.min_period, "min_period", 1)
        check_int(self.max_period, "max_period", self.min_period)
        n_ids, body = self.d_vocab - int(self.bos), self.seq_len - int(self.bos)
        if self.max_period > n_ids:
            raise ValueError(
                f"max_period={self.max_period} exceeds the {n_ids} distinct ids available "
                f"(d_vocab={self.d_vocab}, bos={self.bos})"
            )
        if self.max_period > body - 2:
            raise ValueError(
                f"max_period={self.max_period} leaves no predictable repeat in "
                f"seq_len={self.seq_len}: a sequence needs a period, one repeated token and its "
                f"successor (max_period <= {body - 2})"
            )
        if self.probe_length < 2:
            raise ValueError(
                f"seq_len={self.seq_len}, d_vocab={self.d_vocab} leave no room for the "
                f"probe, two copies of at least 2 distinct tokens (seq_len >= "
                f"{4 + int(self.bos)}, d_vocab >= {2 + int(self.bos)})"
            )

    @property
    def probe_length(self) -> int:
        """Default length ``S`` of the probe's repeat: half the sequence, if the ids allow."""
        return min((self.seq_len - int(self.bos)) // 2, self.d_vocab - int(self.bos))

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        """Draws a batch; ``tokens``, ``targets`` and ``mask`` are ``[batch_size, seq_len]``."""
        import torch

        check_int(batch_size, "batch_size", 1)
        check_generator(generator)
        offset = int(self.bos)
        body = self.seq_len - offset
        period = torch.randint(
            self.min_period, self.max_period + 1, (batch_size, 1), generator=generator
        )
        ids = distinct_ids(batch_size, self.max_period, self.d_vocab - offset, generator)
        pos = torch.arange(body).unsqueeze(0)
        tokens = ids.gather(1, pos % period) + offset
        mask = pos >= period  # the current token is a repeat: its successor is known
        mask[:, -1] = False
        if self.bos:
            tokens, mask = with_bos(tokens, mask)
        return Batch(tokens, next_token_targets(tokens), mask)

    def probe(
        self, batch_size: int = 32, seed: int | None = None, *, length: int | None = None
    ) -> Batch:
        """The repeated-random-tokens probe: ``[BOS] r r`` with ``r`` of ``length`` distinct ids.

        ``length`` defaults to :attr:`probe_length`. The mask marks the second copy's positions
        whose next token is a repeat (``length - 1`` per sequence).
        """
        length = self.probe_length if length is None else length
        check_int(length, "length", 2, self.probe_length)
        return repeated_tokens(
            batch_size,
            length,
            self.d_vocab,
            bos=self.bos,
            distinct=True,
            seed=probe_seed(self.seed, seed),
        )
