"""Attribution patching of edges (EAP) and nodes, and EAP with integrated gradients (EAP-IG).

First-order estimates of exact patching from gradients (Nanda 2023; Syed et al. 2023):
the score of edge ``u -> v`` is ``(z_u,source - z_u,clean) . dM/d(input of v)``, summed over
batch and positions, with the gradient taken on the clean run. EAP-IG (Hanna et al. 2024)
averages that gradient over ``m`` points on the straight line from the source's input
embeddings to the clean ones (``alpha = k / m``, ``k = 1..m``; ``m = 1`` is EAP). A node's
score is the sum of its outgoing edges' scores, which is the node's attribution patching
estimate (its output feeds the metric only through those receivers).

Swap the roles of the clean and corrupted runs (run on the corrupted tokens, patch in the
clean outputs) for TransformerLens's "denoising" convention, ``(a_clean - a_corrupt) .
g_corrupt``; ``tests/discovery`` checks the two agree that way.
"""

from __future__ import annotations

import einops
import torch

from circuits.discovery.forward import run
from circuits.discovery.metrics import Metric
from circuits.discovery.problem import Problem
from circuits.discovery.scores import EdgeScores


def _input_grads(problem: Problem, metric: Metric, alphas: list[float]) -> list[torch.Tensor]:
    """``dM/d(receiver inputs)`` per group ``[batch, pos, receivers, d_model]``, averaged over
    the points ``alpha`` (fraction of the way from the source embeddings to the clean ones)."""
    graph = problem.graph
    from_embeddings = torch.tensor([e.sender.kind in ("embed", "pos") for e in graph.edges])
    b, p = problem.tokens.shape
    d = problem.model.cfg.d_model
    total = [torch.zeros(b, p, len(g.receivers), d) for g in graph.groups]
    for alpha in alphas:
        offsets = [
            torch.zeros(1, b, p, len(g.receivers), d, requires_grad=True) for g in graph.groups
        ]
        patch = None
        if alpha != 1.0:
            patch = (from_embeddings.float() * (1.0 - alpha)).unsqueeze(0)
        logits = run(
            problem.model, graph, problem.tokens, patch, problem.source, input_offsets=offsets
        ).logits
        value = metric(logits)[0]
        grads = torch.autograd.grad(value, offsets)
        for acc, g in zip(total, grads, strict=True):
            acc += g[0] / len(alphas)
    return total


def edge_attribution(
    problem: Problem, ig_steps: int = 1, metric: Metric | None = None
) -> EdgeScores:
    """EAP (``ig_steps=1``) or EAP-IG (``ig_steps=m``) edge scores.

    Args:
        problem: The model, batch, source and metric.
        ig_steps: Points on the path from the source's embeddings to the clean ones.
        metric: Defaults to the problem's task metric.
    """
    if isinstance(ig_steps, bool) or not isinstance(ig_steps, int) or ig_steps < 1:
        raise ValueError(f"ig_steps must be an int >= 1, got {ig_steps!r}")
    metric = metric or problem.metric
    graph = problem.graph
    with torch.no_grad():
        clean = run(problem.model, graph, problem.tokens).outputs[0]
    delta = (problem.source - clean).detach()  # [b, p, senders, d]
    grads = _input_grads(problem, metric, [k / ig_steps for k in range(1, ig_steps + 1)])
    scores = torch.cat(
        [
            einops.einsum(
                delta[..., : group.n_senders, :], grad, "b p s d, b p r d -> r s"
            ).flatten()
            for group, grad in zip(graph.groups, grads, strict=True)
        ]
    )
    name = "EAP" if ig_steps == 1 else f"EAP-IG (m={ig_steps})"
    return EdgeScores(graph, scores.detach(), name)


def node_attribution(problem: Problem, metric: Metric | None = None) -> dict[str, float]:
    """Attribution patching of each sender (embeddings, heads, MLPs): ``{name: score}``."""
    edges = edge_attribution(problem, 1, metric)
    out = {s.name: 0.0 for s in problem.graph.senders}
    for edge, score in zip(problem.graph.edges, edges.scores.tolist(), strict=True):
        out[edge.sender.name] += score
    return out
