"""Attribution patching of edges (EAP) and nodes, and EAP with integrated gradients (EAP-IG).

First-order estimates of exact patching from gradients (Nanda 2023; Syed et al. 2023):
the score of edge ``u -> v`` is ``(z_u,source - z_u,clean) . dM/d(input of v)``, summed over
batch and positions, with the gradient taken on the clean run. EAP-IG (Hanna et al. 2024)
averages that gradient over ``m`` points on the straight line from the source's input
embeddings to the clean ones (``alpha = k / m``, ``k = 1..m``; ``m = 1`` is EAP). A node's
score is the sum of its outgoing edges' scores, which is the node's attribution patching
estimate (its output feeds the metric only through those receivers).

On shortformer models the gradient for ``pos -> q/k`` edges is taken where positions join,
after the norm. Swap the roles of the clean and corrupted runs (run on the corrupted tokens,
patch in the clean outputs) for TransformerLens's "denoising" convention, ``(a_clean -
a_corrupt) . g_corrupt``; ``tests/discovery`` checks the two agree that way.

Cost: ``ig_steps`` forward and backward passes, one at a time, with every receiver's input
split (``3 x n_heads`` copies of the residual stream per layer kept for the backward pass), and
the unembedding at the metric's rows only. Memory: one step's backward graph (the model's
parameters are frozen while it runs, so no weight-gradient inputs are kept) plus the
accumulated gradients, ``O(n_layers n_receivers batch pos d_model)``, whatever ``ig_steps``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import einops
import torch
from torch import Tensor

from circuits.analysis.resources import torch_threads
from circuits.discovery.forward import run
from circuits.discovery.metrics import Metric
from circuits.discovery.problem import Problem
from circuits.discovery.readout import metric_values
from circuits.discovery.scores import EdgeScores
from circuits.validation import check_int


@contextlib.contextmanager
def _frozen(model: Any) -> Iterator[None]:
    """The model's parameters not requiring grad while the block runs (restored after).

    Only ``dM/d(receiver inputs)`` is asked for; with parameters that require grad, autograd
    would also keep every matrix product's input for a weight gradient nobody reads (most of
    the backward pass's memory at GPT-2 size).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _step_grads(problem: Problem, metric: Metric, alpha: float) -> list[Tensor | None]:
    """One point of the path: ``dM/d(receiver inputs)`` per group ``[batch, pos, receivers,
    d_model]``, then per shortformer attention group the gradient after the norm (or None)."""
    graph, model = problem.graph, problem.model
    b, p = problem.tokens.shape
    d = model.cfg.d_model
    like = dict(dtype=model.W_E.dtype, device=model.W_E.device)
    clean, src = problem.clean_outputs, problem.source
    offsets = [
        torch.zeros(1, b, p, len(g.receivers), d, requires_grad=True, **like) for g in graph.groups
    ]
    post = [
        torch.zeros(1, b, p, len(g.receivers), d, requires_grad=True, **like)
        if graph.shortformer and g.kind == "attn"
        else None
        for g in graph.groups
    ]
    embeddings = (
        alpha * clean[:, :, 0] + (1 - alpha) * src[:, :, 0],
        alpha * clean[:, :, 1] + (1 - alpha) * src[:, :, 1],
    )
    resid = run(
        model,
        graph,
        problem.tokens,
        input_offsets=offsets,
        post_offsets=post,
        embeddings=embeddings,
        logits=False,
        keep_outputs=False,
    ).resid
    value = metric_values(model, metric, metric.rows(resid))[0]
    wrt = offsets + [t for t in post if t is not None]
    grads = torch.autograd.grad(value, wrt, allow_unused=True)
    return [g if g is None else g[0] for g in grads]


def _input_grads(
    problem: Problem, metric: Metric, alphas: list[float]
) -> tuple[list[Tensor], list[Tensor | None]]:
    """``dM/d(receiver inputs)`` per group ``[batch, pos, receivers, d_model]`` (and after the
    norm for shortformer attention groups), averaged over the points ``alpha``."""
    graph, model = problem.graph, problem.model
    b, p = problem.tokens.shape
    d = model.cfg.d_model
    like = dict(dtype=model.W_E.dtype, device=model.W_E.device)
    total = [torch.zeros(b, p, len(g.receivers), d, **like) for g in graph.groups]
    post_total: list[Tensor | None] = [
        torch.zeros(b, p, len(g.receivers), d, **like)
        if graph.shortformer and g.kind == "attn"
        else None
        for g in graph.groups
    ]
    with _frozen(model):
        for alpha in alphas:
            grads = _step_grads(problem, metric, alpha)
            for acc, g in zip(total, grads[: len(graph.groups)], strict=True):
                if g is not None:
                    acc += g / len(alphas)
            extra = iter(grads[len(graph.groups) :])
            for t in post_total:
                if t is not None:
                    g = next(extra)
                    if g is not None:
                        t += g / len(alphas)
            # Freed before the next step's forward (else they would be held through it).
            del grads, g
    return total, post_total


def slot_attribution(problem: Problem, ig_steps: int, metric: Metric) -> Tensor:
    """EAP(-IG) score of every slot of the graph ``[n_slots]`` (0 where no edge exists)."""
    graph = problem.graph
    delta = (problem.source - problem.clean_outputs).detach()  # [b, p, senders, d]
    grads, post = _input_grads(problem, metric, [k / ig_steps for k in range(1, ig_steps + 1)])
    parts = []
    for group, grad, post_grad in zip(graph.groups, grads, post, strict=True):
        s = einops.einsum(delta[..., : group.n_senders, :], grad, "b p s d, b p r d -> r s")
        if post_grad is not None:  # shortformer: pos joins queries and keys after the norm
            s[:, 1] = einops.einsum(delta[..., 1, :], post_grad, "b p d, b p r d -> r")
        parts.append(s.flatten())
    slots = torch.cat(parts).detach()
    return slots * graph.slot_exists.to(slots.device, slots.dtype)


def edge_attribution(
    problem: Problem, ig_steps: int = 1, metric: Metric | None = None, *, threads: int | None = 1
) -> EdgeScores:
    """EAP (``ig_steps=1``) or EAP-IG (``ig_steps=m``) scores of the problem's units (edges,
    or nodes at node level: the sum of each node's outgoing edges).

    Args:
        problem: The model, batch, source and metric.
        ig_steps: Points on the path from the source's embeddings to the clean ones.
        metric: Defaults to the problem's task metric.
        threads: Torch threads while it runs (None: torch's setting); restored afterwards.
    """
    check_int(ig_steps, "ig_steps", 1)
    metric = metric or problem.metric
    graph = problem.graph
    with torch_threads(threads):
        slots = slot_attribution(problem, ig_steps, metric).cpu()
    if graph.level == "node":
        scores = torch.zeros(graph.n_senders, dtype=slots.dtype)
        scores.index_add_(0, graph.slot_sender, slots)
    else:
        scores = slots[graph.edge_slot]
    name = "EAP" if ig_steps == 1 else f"EAP-IG (m={ig_steps})"
    return EdgeScores(graph, scores, name)


def node_attribution(
    problem: Problem, metric: Metric | None = None, *, threads: int | None = 1
) -> dict[str, float]:
    """Attribution patching of each sender (embeddings, heads, MLPs): ``{name: score}``."""
    metric = metric or problem.metric
    with torch_threads(threads):
        slots = slot_attribution(problem, 1, metric).cpu()
    graph = problem.graph
    scores = torch.zeros(graph.n_senders, dtype=slots.dtype)
    scores.index_add_(0, graph.slot_sender, slots)
    return {s.name: float(v) for s, v in zip(graph.senders, scores, strict=True)}
