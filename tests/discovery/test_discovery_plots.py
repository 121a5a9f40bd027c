"""The discovery figures draw what the results say."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest

from circuits.discovery import Problem, acdc_sweep, exact_patching, roc_curve
from circuits.discovery.handbuilt import HANDBUILT
from circuits.discovery.path_expansion import path_expansion
from circuits.plots import discovery as dplots


@pytest.fixture(scope="module")
def k_induction():
    hb = HANDBUILT["k_induction"]()
    batch = hb.probe(8, 0)
    problem = Problem.build(hb.model, batch, task="induction", metric="logit_diff")
    return hb, batch, problem, exact_patching(problem)


def test_circuit_graph_draws_the_scored_edges_and_marks_the_reference(k_induction) -> None:
    hb, _, problem, exact = k_induction
    fig = dplots.circuit_graph(exact, reference=sorted(hb.planted_corrupted))
    assert isinstance(fig, go.Figure)
    hovers = [t.hovertemplate for t in fig.data if t.hovertemplate]
    drawn = {h.split("<br>")[0] for h in hovers}
    assert drawn == hb.planted_corrupted  # the other edges score exactly zero
    underlays = [t for t in fig.data if t.line.color == dplots.REFERENCE and t.x[0] is not None]
    assert len(underlays) == len(hb.planted_corrupted)
    nodes = next(t for t in fig.data if t.mode == "markers+text")
    assert list(nodes.text) == [s.name for s in problem.graph.senders] + ["logits"]


def test_roc_acdc_and_path_expansion_figures(k_induction) -> None:
    hb, batch, problem, exact = k_induction
    ref = problem.graph.mask(hb.planted_corrupted)
    fig = dplots.roc_curves({"exact": roc_curve(exact, ref)}, {"exact": 1.0})
    assert fig.data[0].name == "exact (AUC 1.000)" and fig.data[-1].name == "chance"
    sweep = acdc_sweep(problem, [1e-4, 10.0])
    fig = dplots.acdc_curve(sweep)
    assert list(fig.data[0].x) == [r.n_edges for r in sweep]
    pe = path_expansion(hb.model, batch.tokens, batch.targets, batch.mask)
    fig = dplots.path_expansion_bars(pe)
    assert list(fig.data[0].x) == pe.labels and len(fig.data) == 2
    with pytest.raises(ValueError, match="empty"):
        dplots.roc_curves({})
    with pytest.raises(ValueError, match="empty"):
        dplots.acdc_curve([])
