"""Discovery on every architecture the zoo and GPT-2 use: the patched forward against the
model's own hooks, and fast exact patching against one hooked forward per unit."""

from __future__ import annotations

import pytest
import torch
from helpers import perturbed_model

from circuits.discovery import Graph, Problem, edge_attribution, exact_patching, run, source_outputs
from circuits.discovery.benchmark import naive_exact_patching
from circuits.tasks import repeated_tokens

# One small model per family: attention-only (no norm / LN + shortformer, the zoo's attn-only
# layout), gelu with LN, gelu_new (GPT-2), solu_ln, folded LNPre, shortformer with MLPs, and
# 1- and 3-layer depths.
VARIANTS = {
    "attn_only": dict(attn_only=True, normalization_type=None),
    "attn_only_shortformer": dict(attn_only=True, positional_embedding_type="shortformer"),
    "gelu": dict(act_fn="gelu"),
    "gelu_new": dict(act_fn="gelu_new"),
    "solu_ln": dict(act_fn="solu_ln", d_mlp=48),
    "lnpre": dict(normalization_type="LNPre", act_fn="gelu"),
    "shortformer_mlp": dict(positional_embedding_type="shortformer", act_fn="gelu_new"),
    "one_layer": dict(n_layers=1, attn_only=True, positional_embedding_type="shortformer"),
    "three_layer": dict(n_layers=3, n_heads=2, act_fn="relu"),
}


def _tokens(model, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.cfg.d_vocab, (3, 16), generator=gen)


@pytest.mark.parametrize("name", VARIANTS)
def test_unpatched_and_fully_patched_runs_are_the_models(name: str) -> None:
    model = perturbed_model(**VARIANTS[name])
    g = Graph(model)
    clean, other = _tokens(model, 0), _tokens(model, 1)
    with torch.no_grad():
        torch.testing.assert_close(run(model, g, clean).logits[0], model(clean), atol=2e-5, rtol=0)
        src = source_outputs(model, g, "corrupted", clean, other)
        everything = run(model, g, clean, torch.ones(1, g.n_edges), src).logits[0]
        torch.testing.assert_close(everything, model(other), atol=2e-5, rtol=0)


@pytest.mark.parametrize("name", VARIANTS)
def test_fast_exact_patching_equals_one_hooked_forward_per_edge(name: str) -> None:
    """The fast engine (clean run reused upstream, one head recomputed, low-rank readout)
    against ``model.run_with_hooks`` once per edge, on every edge; zero ablation so that
    shortformer's ``pos`` edges carry something."""
    model = perturbed_model(**VARIANTS[name])
    batch = repeated_tokens(3, 6, model.cfg.d_vocab, seed=0)
    for source in ("corrupted", "zero"):
        problem = Problem.build(model, batch, source=source)
        fast = exact_patching(problem).scores.double()
        naive = naive_exact_patching(problem)
        torch.testing.assert_close(fast, naive, atol=1e-5, rtol=0)
        assert fast.abs().max() > 1e-3  # something was patched
    # KL too, and the general engine agrees.
    general = problem.evaluate(torch.eye(problem.graph.n_edges), problem.kl) - problem.value(
        metric=problem.kl
    )
    torch.testing.assert_close(
        exact_patching(problem, problem.kl).scores, general, atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("name", ["attn_only_shortformer", "gelu_new", "solu_ln", "lnpre"])
def test_node_level_equals_patching_every_outgoing_edge(name: str) -> None:
    model = perturbed_model(**VARIANTS[name])
    batch = repeated_tokens(3, 6, model.cfg.d_vocab, seed=0)
    edges = Problem.build(model, batch, source="zero")
    nodes = Problem.build(model, batch, source="zero", level="node")
    assert nodes.graph.n_edges == nodes.graph.n_senders and nodes.graph.edges[2].name == "L0H0"
    fast = exact_patching(nodes).scores.double()
    torch.testing.assert_close(fast, naive_exact_patching(nodes), atol=1e-5, rtol=0)
    for i, sender in enumerate(nodes.graph.senders):
        outgoing = [e.name for e in edges.graph.edges if e.sender.name == sender.name]
        value = edges.value(~edges.graph.mask(outgoing)) - edges.value()
        assert fast[i] == pytest.approx(value, abs=1e-5), sender.name
    # Node attribution is the sum of its edges' attribution.
    by_edge = edge_attribution(edges).as_dict()
    for name_, score in edge_attribution(nodes).as_dict().items():
        total = sum(v for k, v in by_edge.items() if k.split("->")[0] == name_)
        assert score == pytest.approx(total, abs=1e-5)


def test_shortformer_positions_are_senders_into_queries_and_keys_only() -> None:
    model = perturbed_model(**VARIANTS["shortformer_mlp"])
    g = Graph(model)
    pos_edges = [e.name for e in g.edges if e.sender.name == "pos"]
    assert pos_edges and all(n.endswith((".q", ".k")) for n in pos_edges)
    standard = Graph(perturbed_model(**VARIANTS["gelu"]))
    assert g.n_edges == standard.n_edges - sum(
        1
        for e in standard.edges
        if e.sender.name == "pos" and e.receiver.kind in ("v", "mlp", "logits")
    )


@pytest.mark.parametrize("name", ["attn_only_shortformer", "solu_ln", "lnpre"])
def test_one_edge_patch_matches_the_models_split_input_hooks(name: str) -> None:
    """An independent check through the model's own ``use_split_qkv_input`` path: patching
    ``L0H1 -> L1H2.k`` adds the corrupted-minus-clean head output to that key's input hook."""
    model = perturbed_model(**VARIANTS[name])
    g = Graph(model)
    clean, other = _tokens(model, 0), _tokens(model, 1)
    model.set_use_attn_result(True)
    model.set_use_split_qkv_input(True)
    try:
        names = lambda n: n == "blocks.0.attn.hook_result"
        with torch.no_grad():
            _, c_clean = model.run_with_cache(clean, names_filter=names)
            _, c_other = model.run_with_cache(other, names_filter=names)
            head = (
                c_other["blocks.0.attn.hook_result"][:, :, 1]
                - c_clean["blocks.0.attn.hook_result"][:, :, 1]
            )

            def k_hook(x, hook):
                x[:, :, 2] = x[:, :, 2] + head
                return x

            expected = model.run_with_hooks(clean, fwd_hooks=[("blocks.1.hook_k_input", k_hook)])
    finally:
        model.set_use_attn_result(False)
        model.set_use_split_qkv_input(False)
    src = source_outputs(model, g, "corrupted", clean, other)
    with torch.no_grad():
        got = run(model, g, clean, g.mask(["L0H1->L1H2.k"]).float()[None], src).logits[0]
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=0)


@pytest.mark.parametrize("name", ["attn_only", "attn_only_shortformer", "one_layer"])
def test_acdc_low_rank_path_makes_the_general_engines_decisions(name: str, monkeypatch) -> None:
    """ACDC tests edges into the logits and an attention-only model's last layer through the
    low-rank readout; with it switched off (every test a general-engine forward) the circuit,
    the scores and the KL are the same."""
    import sys

    from circuits.discovery import acdc

    module = sys.modules["circuits.discovery.acdc"]
    model = perturbed_model(**VARIANTS[name])
    for source in ("corrupted", "zero"):
        problem = Problem.build(model, repeated_tokens(3, 6, 20, seed=0), source=source)
        # tau > 0: at tau = 0, edges with no effect are decided by float noise either way.
        for tau in (0.003, 0.01):
            fast = acdc(problem, tau=tau)
            with monkeypatch.context() as m:
                m.setattr(module.LastLayer, "applies", staticmethod(lambda problem: False))
                slow = acdc(problem, tau=tau)
            assert torch.equal(fast.circuit, slow.circuit)
            torch.testing.assert_close(fast.scores.scores, slow.scores.scores, atol=1e-6, rtol=0)
            assert fast.kl == pytest.approx(slow.kl, abs=1e-6)
