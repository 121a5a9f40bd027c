"""In-context Markov chains (Edelman et al. 2024, "The evolution of statistical induction heads").

Every sequence is a sample from its own random Markov chain over ``k`` states: the rows of its
transition matrix are drawn i.i.d. from a symmetric Dirichlet prior, the first state from the
chain's stationary distribution. Nothing carries over between sequences, so the only way to
predict well is to estimate the chain in context (a unigram, then a bigram estimator:
:mod:`circuits.analysis.markov`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from circuits.tasks.base import Batch, TaskBase, check_generator, check_task_fields, probe_seed
from circuits.validation import check_int, is_number

if TYPE_CHECKING:
    import torch
    from jaxtyping import Float
    from torch import Tensor

__all__ = ["MAX_STATES", "MarkovICLTask", "stationary_distribution"]

# A batch holds a [batch, k, k] transition tensor: 1024 states is already 4 MB per sequence.
MAX_STATES = 1024


@dataclass(frozen=True)
class MarkovICLTask(TaskBase):
    """Next-token prediction on a sample of length ``seq_len`` from a per-sequence Markov chain.

    Tokens are the states ``[0, k)``; the target at position ``t`` is the state at ``t + 1``
    (every position is in the loss mask: the chain always determines a distribution, though
    never the token). ``d_vocab`` is ``k``.

    Args:
        k: Number of states (at least 2).
        seq_len: Tokens per sequence; at least ``2 k`` so that late positions have seen each
            state about twice (bigram statistics need repeats of the current state).
        alpha: Concentration of the symmetric Dirichlet prior of each row (1: uniform on the
            simplex, as in the paper; smaller: sparser rows).
        seed: Seed of the default data stream and of :meth:`probe`.
    """

    k: int = 3
    seq_len: int = 64
    alpha: float = 1.0
    seed: int = 0
    name: str = field(default="markov_icl", init=False)

    def __post_init__(self) -> None:
        check_int(self.k, "k", 2, MAX_STATES)
        check_int(self.seq_len, "seq_len", 2)
        if self.seq_len < 2 * self.k:
            raise ValueError(
                f"seq_len={self.seq_len} is too short for bigram statistics over k={self.k} "
                f"states: it must be at least 2 k = {2 * self.k}"
            )
        if not (is_number(self.alpha) and 0 < self.alpha < float("inf")):
            raise ValueError(f"alpha must be a positive finite number, got {self.alpha!r}")
        object.__setattr__(self, "alpha", float(self.alpha))
        check_task_fields(self)

    @property
    def d_vocab(self) -> int:
        return self.k

    def sample_chains(
        self, batch_size: int, generator: torch.Generator
    ) -> tuple[Batch, Float[Tensor, "batch k k"]]:
        """A batch and each sequence's transition matrix ``P[b, i, j] = Pr(j | i)``.

        Memory: ``O(batch (k^2 + seq_len))``.
        """
        import torch

        check_int(batch_size, "batch_size", 1)
        check_generator(generator)
        k, n = self.k, self.seq_len + 1
        # Dirichlet(alpha) rows as normalised Gamma(alpha) draws; torch's gamma takes no
        # generator, so alpha = 1 (exponential) is drawn by inversion and other alphas by
        # torch.distributions seeded from the generator.
        if self.alpha == 1.0:
            u = torch.rand(batch_size, k, k, generator=generator, dtype=torch.float64)
            g = -torch.log1p(-u)
        else:
            g = _gamma(self.alpha, (batch_size, k, k), generator)
        P = g / g.sum(-1, keepdim=True)
        pi = stationary_distribution(P)
        cdf = P.cumsum(-1)
        u = torch.rand(batch_size, n, generator=generator, dtype=torch.float64)
        states = torch.empty(batch_size, n, dtype=torch.long)
        states[:, 0] = (u[:, :1] > pi.cumsum(-1)).sum(-1).clamp(max=k - 1)
        rows = torch.arange(batch_size)
        for t in range(1, n):
            row = cdf[rows, states[:, t - 1]]
            states[:, t] = (u[:, t : t + 1] > row).sum(-1).clamp(max=k - 1)
        tokens, targets = states[:, :-1], states[:, 1:]
        mask = torch.ones_like(tokens, dtype=torch.bool)
        return Batch(tokens.contiguous(), targets.contiguous(), mask), P.float()

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        return self.sample_chains(batch_size, generator)[0]

    def probe_chains(
        self, batch_size: int = 32, seed: int | None = None
    ) -> tuple[Batch, Float[Tensor, "batch k k"]]:
        """The probe (as :meth:`probe`) with its sequences' transition matrices."""
        import torch

        check_int(batch_size, "batch_size", 1)
        generator = torch.Generator().manual_seed(probe_seed(self.seed, seed))
        return self.sample_chains(batch_size, generator)


def stationary_distribution(P: Float[Tensor, "*batch k k"]) -> Float[Tensor, "*batch k"]:
    """The stationary distribution ``pi`` (``pi P = pi``, summing to 1) of each chain.

    Solved as a linear system (the left eigenvector for eigenvalue 1), in float64; for a chain
    with several stationary distributions it returns a least-squares one.
    """
    import torch

    k = P.shape[-1]
    Pd = P.double()
    eye = torch.eye(k, dtype=torch.float64)
    A = torch.cat([(Pd.transpose(-1, -2) - eye), torch.ones(*P.shape[:-2], 1, k).double()], -2)
    b = torch.zeros(*P.shape[:-2], k + 1, 1, dtype=torch.float64)
    b[..., -1, 0] = 1.0
    pi = torch.linalg.lstsq(A, b).solution[..., 0]
    pi = pi.clamp(min=0)
    return pi / pi.sum(-1, keepdim=True)


def _gamma(alpha: float, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    import torch

    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    fork = torch.random.fork_rng(devices=[])
    with fork:
        torch.manual_seed(seed)
        return torch.distributions.Gamma(
            torch.full(shape, alpha, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
        ).sample()
