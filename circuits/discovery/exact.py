"""Exact path patching of every edge: one patched forward per edge, batched.

On models this small (tens to hundreds of edges) it is the ground truth the cheaper methods
are graded against: the score of an edge is ``M(edge patched) - M(clean)``, everything else
clean.
"""

from __future__ import annotations

import torch

from circuits.discovery.metrics import Metric
from circuits.discovery.problem import Problem
from circuits.discovery.scores import EdgeScores


def exact_patching(problem: Problem, metric: Metric | None = None) -> EdgeScores:
    """Patches each edge alone and returns ``M(patched) - M(clean)`` per edge.

    Args:
        problem: The model, batch, source and metric.
        metric: Defaults to the problem's task metric (``problem.kl`` gives KL scores).
    """
    metric = metric or problem.metric
    graph = problem.graph
    clean = float(problem.evaluate(torch.zeros(1, graph.n_edges), metric)[0])
    eye = torch.eye(graph.n_edges)
    # Edges into one group at a time: everything upstream of the group is the clean run.
    values = torch.cat(
        [problem.evaluate(eye[g.edge_slice], metric, start=i) for i, g in enumerate(graph.groups)]
    )
    return EdgeScores(graph, values - clean, "exact")
