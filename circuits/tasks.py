"""Synthetic tasks for probing attention heads: induction and shift-by-one.

Every task is seeded and deterministic (same seed, same batches) and returns tokens, targets and
a loss mask of the positions that can be predicted at all. Only torch is imported here, so task
generation never pays for TransformerLens.

A task with a fixed repeat offset can be solved by a *positional* head in one layer, with no
induction at all. :class:`InductionTask` therefore draws a random period for every sequence:
the only way to predict a repeated token is to find its earlier copy by content.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor


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

    tokens: Tensor
    targets: Tensor
    mask: Tensor
    repeat_length: int | None = None


@runtime_checkable
class Task(Protocol):
    """What :func:`circuits.train` needs from a task (a frozen dataclass satisfies it)."""

    @property
    def name(self) -> str: ...

    @property
    def d_vocab(self) -> int: ...

    @property
    def seq_len(self) -> int: ...

    @property
    def seed(self) -> int: ...

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch: ...

    def to_dict(self) -> dict[str, Any]: ...


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def next_token_targets(tokens: Tensor) -> Tensor:
    """Targets of a language model: the next token, padded with the last one (mask it out)."""
    return torch.cat([tokens[:, 1:], tokens[:, -1:]], dim=1)


@dataclass(frozen=True)
class InductionTask:
    """Sequences that repeat with a random period: ``x[t] = x[t - period]`` after one period.

    Each sequence draws its period uniformly from ``[min_period, max_period]`` and its first
    period of tokens without replacement (so every repeat is unambiguous). The model predicts the
    next token; the predictable positions are those whose next token is a repeat. A random
    period per sequence rules out positional shortcuts.

    Args:
        d_vocab: Vocabulary size of the model; with ``bos`` id 0 is reserved for BOS.
        seq_len: Length of each sequence, BOS included.
        min_period: Shortest period.
        max_period: Longest period; at most the number of non-BOS ids.
        bos: Prepend a BOS token (id 0) to every sequence.
        seed: Seed of the default data stream and of :meth:`probe`.
    """

    d_vocab: int = 32
    seq_len: int = 48
    min_period: int = 4
    max_period: int = 24
    bos: bool = False
    seed: int = 0
    name: str = "induction"

    def __post_init__(self) -> None:
        _check_int("d_vocab", self.d_vocab, 2)
        _check_int("seq_len", self.seq_len, 2)
        _check_int("min_period", self.min_period, 1)
        _check_int("max_period", self.max_period, self.min_period)
        n_ids = self.d_vocab - int(self.bos)
        if self.max_period > n_ids:
            raise ValueError(
                f"max_period={self.max_period} exceeds the {n_ids} distinct ids available "
                f"(d_vocab={self.d_vocab}, bos={self.bos})"
            )
        if self.max_period >= self.seq_len - int(self.bos):
            raise ValueError(
                f"max_period={self.max_period} leaves no repeat in seq_len={self.seq_len}"
            )

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        """Draws a batch; ``tokens``, ``targets`` and ``mask`` are ``[batch_size, seq_len]``."""
        _check_int("batch_size", batch_size, 1)
        offset = int(self.bos)
        n_ids, body = self.d_vocab - offset, self.seq_len - offset
        period = torch.randint(
            self.min_period, self.max_period + 1, (batch_size, 1), generator=generator
        )
        # The first max_period ids of a random permutation: distinct tokens per sequence.
        ids = torch.rand(batch_size, n_ids, generator=generator).argsort(dim=1)[
            :, : self.max_period
        ]
        pos = torch.arange(body).unsqueeze(0)
        tokens = ids.gather(1, pos % period) + offset
        # Position t predicts token t+1, a repeat iff t+1 >= period.
        mask = pos + 1 >= period
        mask[:, -1] = False
        if self.bos:
            tokens = torch.cat([torch.zeros(batch_size, 1, dtype=torch.long), tokens], dim=1)
            mask = torch.cat([torch.zeros(batch_size, 1, dtype=torch.bool), mask], dim=1)
        return Batch(tokens, next_token_targets(tokens), mask)

    def probe(
        self, batch_size: int = 32, length: int | None = None, seed: int | None = None
    ) -> Batch:
        """The standard repeated-random-tokens probe: ``[BOS] r r`` with ``r`` of length ``S``.

        ``S`` defaults to ``(seq_len - bos) // 2``. The mask marks the second copy's positions
        whose next token is a repeat (``S - 1`` per sequence).
        """
        return repeated_tokens(
            batch_size,
            length if length is not None else (self.seq_len - int(self.bos)) // 2,
            self.d_vocab,
            bos=self.bos,
            seed=self.seed + 1_000_003 if seed is None else seed,
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def repeated_tokens(
    batch_size: int,
    length: int,
    d_vocab: int,
    *,
    bos: bool = False,
    distinct: bool | None = None,
    seed: int = 0,
) -> Batch:
    """A random sequence of ``length`` tokens repeated once (after BOS id 0 if ``bos``).

    ``mask`` is True at second-copy positions whose next token is a repeat.

    Args:
        distinct: Draw the sequence without replacement, so that every token has exactly one
            earlier copy and the next token is unambiguous. The papers draw with replacement
            from a vocabulary of 50k, where duplicates are rare; in a toy vocabulary they are
            not, so the default is distinct whenever ``length`` fits in the vocabulary.
    """
    _check_int("batch_size", batch_size, 1)
    _check_int("length", length, 2)
    offset = int(bos)
    n_ids = d_vocab - offset
    if distinct is None:
        distinct = length <= n_ids
    if distinct and length > n_ids:
        raise ValueError(f"length={length} distinct tokens do not fit in {n_ids} ids")
    gen = torch.Generator().manual_seed(seed)
    if distinct:
        half = torch.rand(batch_size, n_ids, generator=gen).argsort(dim=1)[:, :length] + offset
    else:
        half = torch.randint(offset, d_vocab, (batch_size, length), generator=gen)
    tokens = torch.cat([half, half], dim=1)
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, length:-1] = True
    if bos:
        tokens = torch.cat([torch.zeros(batch_size, 1, dtype=torch.long), tokens], dim=1)
        mask = torch.cat([torch.zeros(batch_size, 1, dtype=torch.bool), mask], dim=1)
    return Batch(tokens, next_token_targets(tokens), mask, repeat_length=length)


@dataclass(frozen=True)
class ShiftByOneTask:
    """Copy the previous token: the target at position ``t`` is the token at ``t - 1``.

    This is exactly what a previous-token head computes; a 1-layer model learns it.

    Args:
        d_vocab: Vocabulary size; tokens are uniform over ``[0, d_vocab)``.
        seq_len: Length of each sequence.
        seed: Seed of the default data stream.
    """

    d_vocab: int = 32
    seq_len: int = 32
    seed: int = 0
    name: str = "shift"

    def __post_init__(self) -> None:
        _check_int("d_vocab", self.d_vocab, 2)
        _check_int("seq_len", self.seq_len, 2)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        _check_int("batch_size", batch_size, 1)
        tokens = torch.randint(0, self.d_vocab, (batch_size, self.seq_len), generator=generator)
        targets = torch.cat([tokens[:, :1], tokens[:, :-1]], dim=1)
        mask = torch.ones_like(tokens, dtype=torch.bool)
        mask[:, 0] = False
        return Batch(tokens, targets, mask)

    def probe(self, batch_size: int = 32, seed: int | None = None) -> Batch:
        gen = torch.Generator().manual_seed(self.seed + 1_000_003 if seed is None else seed)
        return self.sample(batch_size, gen)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


TASKS: dict[str, Callable[..., Task]] = {}


def register_task(name: str) -> Callable[[Callable[..., Task]], Callable[..., Task]]:
    """Class decorator adding a task to the registry (``circuits train --task NAME``).

    Example:
        >>> @register_task("constant")
        ... @dataclass(frozen=True)
        ... class Constant:
        ...     d_vocab: int = 8; seq_len: int = 8; seed: int = 0; name: str = "constant"
        ...     def sample(self, batch_size, generator): ...
        ...     def to_dict(self): return {}
    """

    def decorator(factory: Callable[..., Task]) -> Callable[..., Task]:
        if name in TASKS:
            raise ValueError(f"a task named {name!r} is already registered")
        TASKS[name] = factory
        return factory

    return decorator


def make_task(name: str, **kwargs: Any) -> Task:
    """Builds a registered task by name, e.g. ``make_task("induction", d_vocab=32)``."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; registered: {', '.join(sorted(TASKS))}")
    return TASKS[name](**kwargs)


register_task("induction")(InductionTask)
register_task("shift")(ShiftByOneTask)
