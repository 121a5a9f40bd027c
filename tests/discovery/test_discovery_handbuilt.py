"""Known answers: every method recovers exactly the planted edges of hand-built circuits."""

from __future__ import annotations

import functools

import pytest
import torch
from helpers import CONFIGS, perturbed_model

from circuits.analysis import all_composition_scores
from circuits.discovery import (
    Problem,
    acdc,
    completeness,
    edge_attribution,
    exact_patching,
    faithfulness,
    minimality,
    node_attribution,
    roc_auc,
    roc_curve,
)
from circuits.discovery.handbuilt import HANDBUILT
from circuits.discovery.path_expansion import path_expansion, score_decomposition
from circuits.tasks import Batch


@functools.cache
def _problem(name: str, source: str) -> tuple[Problem, frozenset[str]]:
    hb = HANDBUILT[name]()
    batch = hb.probe(16, 0)
    problem = Problem.build(hb.model, batch, task=hb.task, metric="logit_diff", source=source)
    return problem, hb.planted if source == "zero" else hb.planted_corrupted


CASES = [(name, source) for name in HANDBUILT for source in ("zero", "corrupted")]


def _found(problem: Problem, scores: torch.Tensor) -> set[str]:
    return set(problem.graph.names(scores.abs() > 1e-6 * scores.abs().max()))


@pytest.mark.parametrize(("name", "source"), CASES)
def test_every_method_recovers_exactly_the_planted_edges(name: str, source: str) -> None:
    problem, planted = _problem(name, source)
    for scores in (
        exact_patching(problem),
        edge_attribution(problem),
        edge_attribution(problem, ig_steps=5),
    ):
        assert _found(problem, scores.scores) == planted, scores.method
        assert roc_auc(scores, problem.graph.mask(planted)) == 1.0
    assert set(acdc(problem, tau=1e-4).edge_names()) == planted


@pytest.mark.parametrize(("name", "source"), CASES)
def test_the_planted_circuit_is_faithful_complete_and_minimal(name: str, source: str) -> None:
    problem, planted = _problem(name, source)
    assert faithfulness(problem, sorted(planted)) == pytest.approx(1.0, abs=1e-5)
    assert completeness(problem, sorted(planted)) == pytest.approx(1.0, abs=1e-5)
    assert min(minimality(problem, sorted(planted)).values()) > 1e-3
    # Drop one planted edge: the circuit is no longer faithful.
    assert faithfulness(problem, sorted(planted)[1:]) < 0.999


@pytest.mark.parametrize(("name", "source"), CASES)
def test_attribution_is_exact_where_the_model_is_linear_in_the_edge(name: str, source: str) -> None:
    """With a metric linear in the logits, the last layer's value inputs and the logits are
    linear in their edges (values do not move the pattern), so EAP equals exact patching there;
    edges into queries and keys go through a softmax, and EAP only approximates them."""
    problem, planted = _problem(name, source)
    exact, eap = exact_patching(problem), edge_attribution(problem)
    last = problem.graph.n_layers - 1
    linear = [
        i
        for i, e in enumerate(problem.graph.edges)
        if e.receiver.kind == "logits" or (e.receiver.kind == "v" and e.receiver.layer == last)
    ]
    torch.testing.assert_close(eap.scores[linear], exact.scores[linear], atol=1e-4, rtol=1e-4)
    nonlinear = [i for i in range(problem.graph.n_edges) if i not in linear]
    gap = (eap.scores[nonlinear] - exact.scores[nonlinear]).abs().max()
    if any(problem.graph.edges[i].name in planted for i in nonlinear):
        assert gap > 1e-2  # the softmax makes the first-order estimate visibly inexact


def test_eap_ig_with_one_step_is_eap_and_nodes_sum_their_edges() -> None:
    problem, _ = _problem("k_induction", "corrupted")
    eap = edge_attribution(problem)
    torch.testing.assert_close(edge_attribution(problem, ig_steps=1).scores, eap.scores)
    nodes = node_attribution(problem)
    by_sender = {s.name: 0.0 for s in problem.graph.senders}
    for e, s in zip(problem.graph.edges, eap.scores.tolist(), strict=True):
        by_sender[e.sender.name] += s
    assert nodes == pytest.approx(by_sender)
    with pytest.raises(ValueError, match="ig_steps"):
        edge_attribution(problem, ig_steps=0)
    with pytest.raises(ValueError, match="tau"):
        acdc(problem, tau=-1.0)
    with pytest.raises(ValueError, match="higher-is-better"):
        acdc(problem, metric=problem.metric)  # logit_diff


def test_q_and_k_composition_are_told_apart() -> None:
    """Same behaviour, different mechanism: composition scores and every discovery method put
    the layer-0 head into the layer-1 head's keys in one model and its queries in the other."""
    k_model, q_model = HANDBUILT["k_induction"](), HANDBUILT["q_induction"]()
    ks, qs = all_composition_scores(k_model.model), all_composition_scores(q_model.model)
    assert ks.excess("K")[0, 0, 1, 0] > 0.1 and ks.raw("Q")[0, 0, 1, 0] < 1e-6
    assert qs.excess("Q")[0, 0, 1, 0] > 0.1 and qs.raw("K")[0, 0, 1, 0] < 1e-6
    for hb, wanted, absent in (
        (k_model, "L0H0->L1H0.k", "L0H0->L1H0.q"),
        (q_model, "L0H0->L1H0.q", "L0H0->L1H0.k"),
    ):
        problem, _ = _problem(hb.name, "corrupted")
        for scores in (exact_patching(problem), edge_attribution(problem, ig_steps=5)):
            assert scores.rank(wanted) < 4 and scores[absent] == 0.0, scores.method
        assert wanted in acdc(problem, tau=1e-4).edge_names()
    # The attention-score decomposition names the component each layer-1 head keys on.
    batch = k_model.probe(8, 0)
    for hb, pair in ((k_model, ("embed", "L0H0")), (q_model, ("L0H0", "pos"))):
        sd = score_decomposition(hb.model, batch.tokens, 1, 0)
        contrast = sd.induction_contrast(batch.repeat_length or 0, batch.mask)
        best = divmod(int(contrast.argmax()), len(sd.labels))
        assert (sd.labels[best[0]], sd.labels[best[1]]) == pair
        assert contrast[best] > 3.0


def test_path_expansion_sums_to_the_logits_and_finds_the_induction_term() -> None:
    model = perturbed_model(**CONFIGS["attn_only"])
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, model.cfg.d_vocab, (3, 12), generator=gen)
    pe = path_expansion(model, tokens, tokens.roll(-1, 1))
    with torch.no_grad():
        torch.testing.assert_close(pe.logits.sum(0), model(tokens), atol=1e-5, rtol=0)
    H = model.cfg.n_heads
    assert len(pe.labels) == 2 + 2 * H + H * H and pe.labels[-1] == "biases"
    assert pe.importance is not None and pe.sizes.shape == (len(pe.labels),)
    hb = HANDBUILT["k_induction"]()
    batch = hb.probe(8, 0)
    pe = path_expansion(hb.model, batch.tokens, batch.targets, batch.mask)
    assert pe.labels[int(pe.sizes.argmax())] == "L1H0"
    assert pe.importance is not None and pe.labels[int(pe.importance.argmax())] == "L1H0"
    # The previous-token head writes where no value reads: its virtual term is exactly zero.
    assert float(pe.sizes[pe.labels.index("L0H0>L1H0")]) == 0.0
    with pytest.raises(ValueError, match="attention-only"):
        path_expansion(perturbed_model(**CONFIGS["full_ln"]), tokens)


def test_roc_auc_is_the_mann_whitney_statistic() -> None:
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(40, generator=gen).round(decimals=1)  # with ties
    ref = torch.rand(40, generator=gen) < 0.3
    mag = scores.abs()
    pos, neg = mag[ref], mag[~ref]
    pairs = (pos[:, None] > neg[None, :]).float() + 0.5 * (pos[:, None] == neg[None, :]).float()
    assert roc_auc(scores, ref) == pytest.approx(float(pairs.mean()), abs=1e-6)
    fpr, tpr = roc_curve(scores, ref)
    assert fpr[0] == 0 and tpr[-1] == 1 and fpr[-1] == 1
    assert roc_auc(ref.float(), ref) == 1.0 and roc_auc((~ref).float(), ref) == 0.0
    with pytest.raises(ValueError, match="reference"):
        roc_auc(scores, torch.zeros(40, dtype=torch.bool))


def test_faithfulness_is_undefined_when_the_corruption_changes_nothing() -> None:
    hb = HANDBUILT["shift"]()
    batch = hb.probe(4, 0)
    same = Batch(batch.tokens, batch.targets, batch.mask)
    problem = Problem.build(hb.model, same, task="shift", corrupted=batch.tokens)
    with pytest.raises(ValueError, match="undefined"):
        faithfulness(problem, ["L0H0->logits"])
