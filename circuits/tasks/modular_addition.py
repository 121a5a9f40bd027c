"""Modular addition ``(a + b) mod p`` on sequences ``[a, b, =]`` (Nanda et al. 2023, grokking).

All ``p^2`` pairs are split once, by a seeded shuffle, into a training set (the first
``int(train_fraction * p^2)``) and a held-out test set; the test set is the probe, so the
recorded accuracy is held-out accuracy. The split depends only on ``(p, train_fraction, seed)``,
all three in ``to_dict()`` (a checkpoint's ``metadata.json``): anyone can rebuild the test set.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from circuits.tasks.base import Batch, TaskBase, check_bool, check_generator, check_task_fields
from circuits.validation import check_int, is_number

if TYPE_CHECKING:
    import torch
    from jaxtyping import Int
    from torch import Tensor

__all__ = ["ModularAdditionTask", "is_prime"]

# p^2 pairs are materialised (3 int64 per pair): p = 3001 is ~216 MB, enough for any study here.
MAX_P = 3001


def is_prime(n: int) -> bool:
    """Whether ``n`` is prime (trial division: ``n`` is at most :data:`MAX_P`)."""
    if n < 2:
        return False
    return all(n % d for d in range(2, math.isqrt(n) + 1))


@dataclass(frozen=True)
class ModularAdditionTask(TaskBase):
    """Predict ``(a + b) mod p`` at the last position of ``[a, b, p]`` (token ``p`` is "=").

    The vocabulary is ``p + 1`` and sequences have length 3; only the last position is in the
    loss mask. ``p`` must be prime: the task is defined on the field Z_p as in the paper, and
    :mod:`circuits.analysis.fourier` assumes an odd modulus (an even one has a Nyquist
    frequency without a sine); a composite odd modulus would work mathematically but is
    refused so that a typo is not silently a different task.

    Args:
        p: The prime modulus (3 to :data:`MAX_P`).
        train_fraction: Fraction of the ``p^2`` pairs in the training set, in (0, 1); both
            sets must be non-empty.
        full_batch: ``sample`` returns the whole training set, whatever ``batch_size`` (one
            optimizer step per epoch, as in the paper); False draws ``batch_size`` training
            pairs with replacement.
        seed: Seed of the train/test split.
    """

    p: int = 113
    train_fraction: float = 0.3
    full_batch: bool = True
    seed: int = 0
    name: str = field(default="modular_addition", init=False)

    def __post_init__(self) -> None:
        check_int(self.p, "p", 3, MAX_P)
        if not is_prime(self.p):
            raise ValueError(
                f"p must be prime (the task is addition in the field Z_p), got {self.p}"
            )
        frac = self.train_fraction
        if not (is_number(frac) and 0 < frac < 1):
            raise ValueError(f"train_fraction must be a number in (0, 1), got {frac!r}")
        n_train = int(frac * self.p**2)
        if not 1 <= n_train < self.p**2:
            raise ValueError(
                f"p={self.p} is too small for train_fraction={frac}: {n_train} of {self.p**2} "
                "pairs would be in the training set (both sets must be non-empty)"
            )
        object.__setattr__(self, "train_fraction", float(frac))
        check_bool("full_batch", self.full_batch)
        check_task_fields(self)

    @property
    def d_vocab(self) -> int:
        """``p + 1``: the residues and the "=" token ``p``."""
        return self.p + 1

    @property
    def seq_len(self) -> int:
        return 3

    @property
    def n_train(self) -> int:
        return int(self.train_fraction * self.p**2)

    def pairs(self, split: str = "all") -> Int[Tensor, "pair 2"]:
        """The ``(a, b)`` pairs of ``split``: "train", "test" (in shuffled order) or "all"
        (a-major, ``a * p + b``: the order :mod:`circuits.analysis.fourier` expects)."""
        if split == "all":
            return _all_pairs(self.p).clone()
        order = _split_order(self.p, self.seed)
        if split == "train":
            idx = order[: self.n_train]
        elif split == "test":
            idx = order[self.n_train :]
        else:
            raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
        return _all_pairs(self.p)[idx]

    def batch(self, pairs: Int[Tensor, "pair 2"]) -> Batch:
        """The batch of ``pairs``: tokens ``[a, b, p]``, target ``(a + b) mod p`` at the end."""
        import torch

        n = pairs.shape[0]
        eq = torch.full((n, 1), self.p, dtype=torch.long)
        tokens = torch.cat([pairs, eq], dim=1)
        targets = torch.zeros_like(tokens)
        targets[:, -1] = (pairs[:, 0] + pairs[:, 1]) % self.p
        mask = torch.zeros_like(tokens, dtype=torch.bool)
        mask[:, -1] = True
        return Batch(tokens, targets, mask)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        import torch

        check_int(batch_size, "batch_size", 1)
        check_generator(generator)
        train = self.pairs("train")
        if self.full_batch:
            return self.batch(train)
        idx = torch.randint(0, train.shape[0], (batch_size,), generator=generator)
        return self.batch(train[idx])

    def probe(self, batch_size: int = 32, seed: int | None = None) -> Batch:
        """The first ``batch_size`` held-out pairs (all of them when ``batch_size`` is at least
        their number): the probe's accuracy is test accuracy. ``seed`` is checked and ignored:
        the test set is fixed by the task's split."""
        check_int(batch_size, "batch_size", 1)
        if seed is not None:
            check_int(seed, "seed", 0)
        return self.batch(self.pairs("test")[:batch_size])


@functools.lru_cache(maxsize=8)
def _all_pairs(p: int) -> Tensor:
    import torch

    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    return torch.stack([a, b], dim=1)


@functools.lru_cache(maxsize=8)
def _split_order(p: int, seed: int) -> Tensor:
    import torch

    return torch.randperm(p * p, generator=torch.Generator().manual_seed(seed))
