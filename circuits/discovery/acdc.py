"""ACDC (Conmy et al. 2023): greedy edge pruning from the logits backwards under a threshold.

Start from the full graph. Visit receivers from the output backwards (logits, then the last
layer's components, ...); for each edge into the receiver (latest sender first), patch it on top
of everything already removed; if the KL to the clean output rises by less than ``tau``, remove
it for good. A component none of whose outputs is still read is skipped: its inputs cannot
matter, so they are removed without a forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from circuits.discovery.metrics import Metric
from circuits.discovery.problem import Problem
from circuits.discovery.scores import EdgeScores

# KL (nats, averaged over the metric's positions) an edge may add and still be pruned. Chosen on
# the default induction preset (bench/discovery_results.md): it keeps the induction circuit on
# every seed measured, with >= 90% of the loss recovered.
DEFAULT_TAU = 0.02


@dataclass(frozen=True)
class AcdcResult:
    """What ACDC found at one threshold.

    Attributes:
        tau: The threshold.
        circuit: Bool ``[n_edges]``: the edges kept.
        scores: The KL increase measured when each edge was tested (0 for edges skipped), as
            :class:`EdgeScores` (method ``"ACDC"``).
        kl: KL of the circuit (everything else patched) to the clean model.
        n_forward: Patched forward passes it took.
    """

    tau: float
    circuit: Bool[Tensor, " n_edges"]
    scores: EdgeScores
    kl: float
    n_forward: int

    @property
    def n_edges(self) -> int:
        return int(self.circuit.sum())

    def edge_names(self) -> list[str]:
        return self.scores.graph.names(self.circuit)


def acdc(problem: Problem, tau: float = DEFAULT_TAU, metric: Metric | None = None) -> AcdcResult:
    """Runs ACDC at threshold ``tau`` (KL to the clean run by default).

    Args:
        problem: The model, batch, source and metric.
        tau: An edge is removed if patching it raises the metric by less than ``tau``.
        metric: The metric to keep low; defaults to ``problem.kl``.
    """
    if not isinstance(tau, (int, float)) or isinstance(tau, bool) or not tau >= 0:
        raise ValueError(f"tau must be a number >= 0, got {tau!r}")
    metric = metric or problem.kl
    if metric.higher_is_better:
        raise ValueError(
            f"ACDC removes edges while the metric stays low; {metric.name!r} is higher-is-better "
            "(use the KL or the loss)"
        )
    graph = problem.graph
    patched = torch.zeros(graph.n_edges, dtype=torch.bool)
    scores = torch.zeros(graph.n_edges)
    current = float(problem.evaluate(patched.float(), metric)[0])
    n_forward = 1
    for gi, group in reversed(list(enumerate(graph.groups))):
        for r, receiver in reversed(list(enumerate(group.receivers))):
            first = group.first_edge + r * group.n_senders
            ids = list(range(first, first + group.n_senders))
            node = receiver.node
            if receiver.kind != "logits":
                outgoing = [i for i, e in enumerate(graph.edges) if e.sender.name == node]
                if bool(patched[outgoing].all()):
                    patched[ids] = True
                    continue
            for i in reversed(ids):
                patched[i] = True
                # Edges into earlier groups are all still clean here: resume at this group.
                value = float(problem.evaluate(patched.float(), metric, start=gi)[0])
                n_forward += 1
                scores[i] = value - current
                if value - current < tau:
                    current = value
                else:
                    patched[i] = False
    return AcdcResult(float(tau), ~patched, EdgeScores(graph, scores, "ACDC"), current, n_forward)


def acdc_sweep(
    problem: Problem, taus: Sequence[float], metric: Metric | None = None
) -> list[AcdcResult]:
    """ACDC at each threshold (the KL-versus-edges curve)."""
    return [acdc(problem, tau, metric) for tau in taus]


def kl_curve(results: Sequence[AcdcResult]) -> Float[Tensor, "n 3"]:
    """Rows of ``(tau, n_edges, kl)`` for a sweep."""
    return torch.tensor([[r.tau, r.n_edges, r.kl] for r in results])
