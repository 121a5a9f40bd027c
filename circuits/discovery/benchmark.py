"""Grading every discovery method on one trained induction model against exact patching.

:func:`grade_methods` is what ``scripts/discovery_bench.py`` runs per seed (it writes
``bench/discovery_results.json`` and a markdown table) and what the slow tests assert on.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from circuits.discovery.acdc import DEFAULT_TAU, acdc
from circuits.discovery.attribution import edge_attribution
from circuits.discovery.evaluate import faithfulness, reference_circuit, roc_auc
from circuits.discovery.exact import exact_patching
from circuits.discovery.problem import Problem

# A layer-1 head counts as an induction head above this induction score (ARENA's threshold).
INDUCTION_THRESHOLD = 0.4


def induction_heads(model: Any, probe: Any) -> tuple[str, list[str]]:
    """The layer-0 head with the highest previous-token score, and the layer-1 heads whose
    induction score passes :data:`INDUCTION_THRESHOLD`, as ``("L0H1", ["L1H0", ...])``."""
    from circuits.analysis import head_scores

    scores = head_scores(model, probe)
    prev = int(scores["previous_token"][0].argmax())
    ind = (scores["induction"][1] > INDUCTION_THRESHOLD).nonzero().flatten().tolist()
    return f"L0H{prev}", [f"L1H{h}" for h in ind]


def key_edges(prev: str, induction: list[str]) -> list[str]:
    """Previous-token head -> each induction head's key, and each induction head -> logits."""
    return [f"{prev}->{h}.k" for h in induction] + [f"{h}->logits" for h in induction]


def grade_methods(
    model: Any,
    probe: Any,
    ig_steps: int = 5,
    tau: float = DEFAULT_TAU,
    seed: int = 0,
    threads: int | None = 1,
) -> dict[str, Any]:
    """Runs exact patching, EAP, EAP-IG and ACDC on ``probe`` and grades them.

    Returns a JSON-ready dict: the heads found by their scores, exact patching's top 10 edges,
    where the key edges rank, each method's ROC AUC against exact patching's reference
    circuit (:func:`~circuits.discovery.evaluate.reference_circuit`), ACDC's circuit, its
    faithfulness on the loss and its KL, and wall times.
    """
    model.eval()
    prev, induction = induction_heads(model, probe)
    problem = Problem.build(model, probe, task="induction", seed=seed)
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        # CPU time too: on a shared machine the wall time measures the neighbours as well.
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        wall[name] = time.perf_counter() - start
        cpu[name] = time.process_time() - start_cpu
        return out

    exact = timed("exact", lambda: exact_patching(problem, threads=threads))
    reference = reference_circuit(exact)
    eap = timed("EAP", lambda: edge_attribution(problem, threads=threads))
    ig = timed("EAP-IG", lambda: edge_attribution(problem, ig_steps, threads=threads))
    found = timed("ACDC", lambda: acdc(problem, tau, threads=threads))
    wanted = key_edges(prev, induction)
    return {
        "previous_token_head": prev,
        "induction_heads": induction,
        "n_edges": problem.graph.n_edges,
        "key_edges": wanted,
        "key_edge_exact_ranks": {e: exact.rank(e) for e in wanted},
        "exact_top": exact.top(10),
        "reference": problem.graph.names(reference),
        "auc": {s.method: roc_auc(s, reference) for s in (eap, ig, found.scores)},
        "acdc": {
            "tau": tau,
            "edges": found.edge_names(),
            "n_edges": found.n_edges,
            "kl": found.kl,
            "faithfulness": faithfulness(problem, found.circuit),
            "contains_key_edges": all(e in found.edge_names() for e in wanted),
            "n_forward": found.n_forward,
        },
        "reference_faithfulness": faithfulness(problem, reference),
        "seconds": wall,
        "cpu_seconds": cpu,
        "torch_threads": threads if threads is not None else torch.get_num_threads(),
    }


def _naive_hook(problem: Problem, unit: int) -> tuple[str, Any]:
    """The one hook that patches ``unit`` in the model's own forward."""
    graph, model = problem.graph, problem.model
    e = graph.edges[unit]
    s = graph.sender_index[e.sender.name]
    D = problem.clean_outputs[:, :, s] - problem.source[:, :, s]  # [b, p, d]
    r = e.receiver
    if r.kind == "all":  # node: the sender's own output hook
        if e.sender.kind == "head":
            h = e.sender.head

            def head_hook(x: Tensor, hook: Any) -> Tensor:
                x = x.clone()
                x[:, :, h] = x[:, :, h] - D
                return x

            return f"blocks.{e.sender.layer}.attn.hook_result", head_hook
        name = {"embed": "hook_embed", "pos": "hook_pos_embed"}.get(
            e.sender.kind, f"blocks.{e.sender.layer}.hook_mlp_out"
        )
        return name, lambda x, hook: x - D
    if r.kind == "logits":
        return f"blocks.{model.cfg.n_layers - 1}.hook_resid_post", lambda x, hook: x - D
    if r.kind == "mlp":
        return f"blocks.{r.layer}.hook_mlp_in", lambda x, hook: x - D
    h = r.head
    if graph.shortformer and e.sender.kind == "pos":  # positions join after ln1: linear
        attn = model.blocks[r.layer].attn
        W = (attn.W_Q if r.kind == "q" else attn.W_K)[h]

        def qk_hook(x: Tensor, hook: Any) -> Tensor:
            x = x.clone()
            x[:, :, h] = x[:, :, h] - D @ W
            return x

        return f"blocks.{r.layer}.attn.hook_{r.kind}", qk_hook

    def input_hook(x: Tensor, hook: Any) -> Tensor:
        x = x.clone()
        x[:, :, h] = x[:, :, h] - D
        return x

    return f"blocks.{r.layer}.hook_{r.kind}_input", input_hook


def naive_exact_patching(
    problem: Problem,
    metric: Any = None,
    units: list[int] | None = None,
    *,
    threads: int | None = 1,
) -> torch.Tensor:
    """The baseline exact patching is measured against: one hooked forward of the whole model
    per unit (``model.run_with_hooks``, logits at every position), ``M(patched) - M(clean)``.

    Args:
        problem: The problem (its clean and source sender outputs are what edges carry).
        metric: Defaults to the problem's task metric.
        units: Unit indices to score (default: all); benchmarks time a sample per unit.
        threads: Torch threads while it runs (None: torch's setting).

    Returns:
        Scores ``[len(units)]`` in the order of ``units``.
    """
    from circuits.analysis.resources import torch_threads

    metric = metric or problem.metric
    model, graph = problem.model, problem.graph
    units = list(range(graph.n_edges)) if units is None else units
    cfg = model.cfg
    before = (cfg.use_split_qkv_input, cfg.use_attn_result, cfg.use_hook_mlp_in)
    out = []
    try:
        model.set_use_split_qkv_input(True)
        model.set_use_attn_result(True)
        if not cfg.attn_only:
            model.set_use_hook_mlp_in(True)
        with torch_threads(threads), torch.no_grad():
            clean = float(metric(model(problem.tokens)[None])[0])
            for u in units:
                logits = model.run_with_hooks(problem.tokens, fwd_hooks=[_naive_hook(problem, u)])
                out.append(float(metric(logits[None])[0]) - clean)
    finally:
        model.set_use_split_qkv_input(before[0])
        model.set_use_attn_result(before[1])
        if not cfg.attn_only:
            model.set_use_hook_mlp_in(before[2])
    return torch.tensor(out, dtype=torch.float64)
