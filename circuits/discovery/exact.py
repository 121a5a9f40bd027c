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
    n = problem.graph.n_edges
    patch = torch.cat([torch.zeros(1, n), torch.eye(n)])
    values = problem.evaluate(patch, metric)
    return EdgeScores(problem.graph, values[1:] - values[0], "exact")
