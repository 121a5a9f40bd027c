"""Edge scores of a discovery method, with the ranking and circuit helpers every method shares."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from circuits.discovery.graph import Graph
from circuits.validation import check_int


@dataclass(frozen=True)
class EdgeScores:
    """One score per edge; larger magnitude means more important.

    Attributes:
        graph: The graph the scores index.
        scores: ``[n_edges]``, signed: the change of the metric when the edge is patched (exact
            patching) or its estimate (attribution). ACDC's are its measured KL increases.
        method: The method's name, for tables and figures.
    """

    graph: Graph
    scores: Float[Tensor, " n_edges"]
    method: str

    def __post_init__(self) -> None:
        if not isinstance(self.scores, Tensor):
            raise TypeError(f"scores must be a tensor, got {type(self.scores).__name__}")
        object.__setattr__(self, "scores", self.scores.detach().cpu())
        if self.scores.shape != (self.graph.n_edges,):
            raise ValueError(
                f"scores must have shape [{self.graph.n_edges}], got {tuple(self.scores.shape)}"
            )
        if not torch.isfinite(self.scores).all():
            raise ValueError(f"{self.method} produced non-finite edge scores")

    def __getitem__(self, edge: str) -> float:
        return float(self.scores[self.graph.index(edge)])

    def top(self, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` edges of largest ``|score|``, largest first, as ``(name, score)``
        (``k`` from 0 to ``n_edges``)."""
        check_int(k, "k", 0, self.graph.n_edges)
        order = self.scores.abs().argsort(descending=True, stable=True)[:k]
        return [(self.graph.edges[i].name, float(self.scores[i])) for i in order.tolist()]

    def circuit(self, k: int | None = None, threshold: float | None = None) -> Bool[Tensor, " n"]:
        """The top ``k`` edges by ``|score|``, or those with ``|score| > threshold``."""
        if (k is None) == (threshold is None):
            raise ValueError("give exactly one of k and threshold")
        if threshold is not None:
            return self.scores.abs() > threshold
        assert k is not None
        check_int(k, "k", 0, self.graph.n_edges)
        mask = torch.zeros(self.graph.n_edges, dtype=torch.bool)
        mask[self.scores.abs().argsort(descending=True, stable=True)[:k]] = True
        return mask

    def rank(self, edge: str) -> int:
        """0-based rank of ``edge`` by ``|score|`` (0 = the most important)."""
        order = self.scores.abs().argsort(descending=True, stable=True).tolist()
        return order.index(self.graph.index(edge))

    def as_dict(self) -> dict[str, float]:
        return {e.name: float(s) for e, s in zip(self.graph.edges, self.scores, strict=True)}

    def __repr__(self) -> str:
        top = ", ".join(f"{name} {score:+.3g}" for name, score in self.top(min(3, len(self))))
        return f"EdgeScores({self.method!r}, {len(self)} {self.graph.level}s; top: {top})"

    def __len__(self) -> int:
        return int(self.scores.shape[0])
