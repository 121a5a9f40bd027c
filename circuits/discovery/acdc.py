"""ACDC (Conmy et al. 2023): greedy edge pruning from the logits backwards under a threshold.

Start from the full graph. Visit receivers from the output backwards (logits, then the last
layer's components, ...); for each edge into the receiver (latest sender first), patch it on top
of everything already removed; if the KL to the clean output rises by less than ``tau``, remove
it for good. A component none of whose outputs is still read is skipped: its inputs cannot
matter, so they are removed without a forward pass. At node level the same greedy pass runs
over the nodes, latest first.

Each test is one forward of the general engine (:mod:`circuits.discovery.forward`) resumed at
the receiver's group from the clean run, with the unembedding at the metric's rows only; on
attention-only models the edges into the logits and the last layer go through the low-rank
readout instead (:mod:`circuits.discovery.acdc_fast`; the same decisions, tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from tqdm.auto import tqdm

from circuits.analysis.resources import torch_threads
from circuits.discovery.acdc_fast import LastLayer
from circuits.discovery.metrics import Metric
from circuits.discovery.problem import Problem
from circuits.discovery.scores import EdgeScores

# KL (nats, averaged over the metric's positions) an edge may add and still be pruned. Chosen on
# the default induction preset (bench/discovery_results.md): it keeps the induction circuit on
# every seed measured, with >= 90% of the loss recovered.
DEFAULT_TAU = 0.02


@dataclass(frozen=True, repr=False)
class AcdcResult:
    """What ACDC found at one threshold.

    Attributes:
        tau: The threshold.
        circuit: Bool ``[n_edges]``: the units kept.
        scores: The KL increase measured when each unit was tested (0 for units skipped), as
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

    def __repr__(self) -> str:
        graph = self.scores.graph
        names = self.edge_names()
        shown = ", ".join(names[:4]) + (f", ... ({len(names) - 4} more)" if len(names) > 4 else "")
        return (
            f"AcdcResult(tau={self.tau:g}, kept {self.n_edges} of {graph.n_edges} "
            f"{graph.level}s, kl={self.kl:.4g}, n_forward={self.n_forward}; [{shown}])"
        )


def _order(problem: Problem) -> list[tuple[int, list[int], str | None]]:
    """``(group to resume at, units tested latest first, reading node or None)`` in ACDC order."""
    graph = problem.graph
    if graph.level == "node":
        return [(0, [u], None) for u in reversed(range(graph.n_edges))]
    steps = []
    for gi in reversed(range(len(graph.groups))):
        by_receiver: dict[str, list[int]] = {}
        for u in graph.group_units(gi):
            by_receiver.setdefault(graph.edges[u].receiver.name, []).append(u)
        for ids in reversed(list(by_receiver.values())):
            receiver = graph.edges[ids[0]].receiver
            node = None if receiver.kind == "logits" else receiver.node
            steps.append((gi, list(reversed(ids)), node))
    return steps


def acdc(
    problem: Problem,
    tau: float = DEFAULT_TAU,
    metric: Metric | None = None,
    *,
    threads: int | None = 1,
    progress: bool = False,
) -> AcdcResult:
    """Runs ACDC at threshold ``tau`` (KL to the clean run by default).

    Args:
        problem: The model, batch, source and metric.
        tau: A unit is removed if patching it raises the metric by less than ``tau``.
        metric: The metric to keep low; defaults to ``problem.kl``.
        threads: Torch threads while it runs (None: torch's setting); restored afterwards.
        progress: Show a progress bar over receivers.
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
    scores = torch.zeros(graph.n_edges, dtype=torch.float64)
    outgoing: dict[str, list[int]] = {}
    for i, e in enumerate(graph.edges):
        outgoing.setdefault(e.sender.name, []).append(i)
    with torch_threads(threads):
        fast = LastLayer(problem, metric) if LastLayer.applies(problem) else None
        current = float(problem.evaluate(patched.float(), metric)[0])
        if fast is not None:
            current = fast.clean_value()
        n_forward = 1
        for gi, ids, node in tqdm(_order(problem), disable=not progress, desc="ACDC"):
            if node is not None and bool(patched[outgoing.get(node, [])].all()):
                patched[ids] = True  # nothing reads this component any more
                continue
            for i in ids:
                patched[i] = True
                how = None
                edge = graph.edges[i]
                if fast is not None and fast.handles(edge):
                    value, how = fast.test(i, patched)
                else:
                    if fast is not None and not fast.in_scope(edge):
                        # Leaving the low-rank part: measure the state anew.
                        before = patched.clone()
                        before[i] = False
                        current = float(problem.evaluate(before.float(), metric)[0])
                        fast = None
                    # Edges into earlier groups are all still clean here: resume at this group.
                    value = float(problem.evaluate(patched.float(), metric, start=gi)[0])
                n_forward += 1
                scores[i] = value - current
                if value - current < tau:
                    current = value
                    if fast is not None:
                        if how is not None:
                            fast.accept(how)
                        else:
                            fast.reset(patched, gi)
                else:
                    patched[i] = False
    scores = scores.to(problem.model.W_E.dtype)
    return AcdcResult(float(tau), ~patched, EdgeScores(graph, scores, "ACDC"), current, n_forward)


def acdc_sweep(
    problem: Problem,
    taus: Sequence[float],
    metric: Metric | None = None,
    *,
    threads: int | None = 1,
) -> list[AcdcResult]:
    """ACDC at each threshold (the KL-versus-edges curve)."""
    return [acdc(problem, tau, metric, threads=threads) for tau in taus]


def kl_curve(results: Sequence[AcdcResult]) -> Float[Tensor, "n 3"]:
    """Rows of ``(tau, n_edges, kl)`` for a sweep."""
    return torch.tensor([[r.tau, r.n_edges, r.kl] for r in results])
