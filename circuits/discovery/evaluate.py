"""Grading circuits: faithfulness, completeness, minimality, and ROC AUC against a reference.

Faithfulness (normalised, as in Hanna et al. 2024): ``(M(circuit) - M(empty)) / (M(full) -
M(empty))``, where "circuit" patches every edge outside it and "empty" patches every edge; 1 means
the circuit alone recovers the model's behaviour. Completeness asks the converse of the
complement: ``1 - faithfulness(complement)`` is 1 when the edges outside the circuit recover
nothing on their own. Minimality: how much faithfulness each circuit edge is worth (the drop
when it alone is removed); an edge worth nothing is superfluous.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from circuits.analysis.resources import torch_threads
from circuits.discovery.metrics import Metric
from circuits.discovery.problem import Problem
from circuits.discovery.scores import EdgeScores


def faithfulness(
    problem: Problem,
    circuit: Tensor | list[str],
    metric: Metric | None = None,
    *,
    threads: int | None = 1,
) -> float:
    """Fraction of the metric recovered by ``circuit`` (bool ``[n_edges]`` or edge names)."""
    circuit = problem.graph.check_mask(circuit, "circuit")
    n = problem.graph.n_edges
    patch = torch.stack([torch.zeros(n), torch.ones(n), (~circuit).float()])
    with torch_threads(threads):
        full, empty, kept = problem.evaluate(patch, metric).tolist()
    if abs(full - empty) < 1e-9:
        raise ValueError(
            "the full model and the fully patched one score the same: the corruption removes "
            "nothing the metric sees, so faithfulness is undefined"
        )
    return (kept - empty) / (full - empty)


def completeness(
    problem: Problem,
    circuit: Tensor | list[str],
    metric: Metric | None = None,
    *,
    threads: int | None = 1,
) -> float:
    """``1 - faithfulness`` of the complement: 1 if nothing outside the circuit matters."""
    circuit = problem.graph.check_mask(circuit, "circuit")
    return 1.0 - faithfulness(problem, ~circuit, metric, threads=threads)


def minimality(
    problem: Problem,
    circuit: Tensor | list[str],
    metric: Metric | None = None,
    *,
    threads: int | None = 1,
) -> dict[str, float]:
    """Per circuit edge, the faithfulness lost when that edge alone is also patched."""
    circuit = problem.graph.check_mask(circuit, "circuit")
    n = problem.graph.n_edges
    ids = circuit.nonzero().flatten().tolist()
    base = (~circuit).float()
    patch = torch.stack(
        [torch.zeros(n), torch.ones(n), base]
        + [base + torch.nn.functional.one_hot(torch.tensor(i), n).float() for i in ids]
    )
    with torch_threads(threads):
        values = problem.evaluate(patch, metric).tolist()
    full, empty, kept = values[:3]
    scale = full - empty
    return {
        problem.graph.edges[i].name: (kept - v) / scale
        for i, v in zip(ids, values[3:], strict=True)
    }


def roc_curve(
    scores: Float[Tensor, " n"] | EdgeScores, reference: Bool[Tensor, " n"]
) -> tuple[Tensor, Tensor]:
    """False- and true-positive rates as the threshold on ``|score|`` falls (ties together)."""
    s = (scores.scores if isinstance(scores, EdgeScores) else scores).detach().cpu()
    ref = reference.detach().cpu().bool()
    if s.shape != ref.shape:
        raise ValueError(f"scores {tuple(s.shape)} and reference {tuple(ref.shape)} differ")
    n_pos, n_neg = int(ref.sum()), int((~ref).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("the reference circuit must contain some edges and leave some out")
    mag = s.abs()
    thresholds = mag.unique(sorted=True).flip(0)
    tpr = [0.0] + [float((ref & (mag >= t)).sum()) / n_pos for t in thresholds]
    fpr = [0.0] + [float((~ref & (mag >= t)).sum()) / n_neg for t in thresholds]
    return torch.tensor(fpr), torch.tensor(tpr)


def roc_auc(scores: Float[Tensor, " n"] | EdgeScores, reference: Bool[Tensor, " n"]) -> float:
    """Area under the ROC curve of ``|score|`` against the reference edges (ties count half)."""
    fpr, tpr = roc_curve(scores, reference)
    return float(torch.trapezoid(tpr, fpr))


def reference_circuit(exact: EdgeScores, fraction: float = 0.02) -> Bool[Tensor, " n"]:
    """Exact patching's top edges: ``|score| >= fraction * max |score|``.

    The default is low enough to keep a weaker second induction head of the default preset,
    whose edges measured 4-5% of the largest on one seed (bench/discovery_results.md).
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    mag = exact.scores.abs()
    return mag >= fraction * mag.max()


@dataclass(frozen=True)
class CircuitGrade:
    """Faithfulness, completeness and size of one circuit."""

    n_edges: int
    faithfulness: float
    completeness: float


def grade(
    problem: Problem,
    circuit: Tensor | list[str],
    metric: Metric | None = None,
    *,
    threads: int | None = 1,
) -> CircuitGrade:
    """Faithfulness, completeness and size of ``circuit``."""
    circuit = problem.graph.check_mask(circuit, "circuit")
    return CircuitGrade(
        int(circuit.sum()),
        faithfulness(problem, circuit, metric, threads=threads),
        completeness(problem, circuit, metric, threads=threads),
    )
