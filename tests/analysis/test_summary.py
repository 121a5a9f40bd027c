"""analysis.summary: the one induction-circuit summary (CLI and sweeps), ranked as the score
registry ranks heads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from circuits.analysis.composition import all_composition_scores
from circuits.analysis.head_scores import evaluate
from circuits.analysis.scores import get_score
from circuits.analysis.summary import induction_circuit, ranked_heads, top_head
from circuits.model import HookedTransformer
from circuits.names import head_name

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.mark.parametrize("name", ["previous_token", "induction"])
def test_ranking_agrees_with_the_score_registry(name: str) -> None:
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        table = torch.rand(3, 4, generator=gen)
        table[1, 2] = table[2, 0] = table.max() + 1  # a tie: the lower layer wins
        best = get_score(name).top_head(table)
        assert ranked_heads(name, table)[0][1:] == best
        assert top_head(name, table) == {"head": head_name(*best), "score": float(table[best])}
    first_layer = get_score(name).min_layer
    assert all(layer >= first_layer for _, layer, _ in ranked_heads(name, torch.rand(3, 4)))


def test_no_counted_head_gives_no_circuit() -> None:
    assert ranked_heads("induction", [[0.9, 0.8]]) == []  # one layer: induction needs two
    model = HookedTransformer.load(DATA / "induction_1l")
    out = induction_circuit(model, {"induction": torch.rand(1, 2)})
    assert out["k_composition"] is None and out["induction_heads"] == []


def test_the_shipped_two_layer_model_has_the_textbook_circuit() -> None:
    from circuits import checkpoint
    from circuits.tasks import task_from_dict

    model = HookedTransformer.load(DATA / "induction_2l")
    task = task_from_dict(checkpoint.read_metadata(DATA / "induction_2l")["task"])
    probe = task.probe(64)
    scores = evaluate(model, probe).scores
    out = induction_circuit(model, scores, probe=probe)
    k = out["k_composition"]
    # Independently: the strongest excess K-composition into the top induction head.
    top = get_score("induction").top_head(scores["induction"])
    comp = all_composition_scores(model)
    excess = comp.excess("K")[: top[0], :, top[0], top[1]]
    src = divmod(int(excess.argmax()), excess.shape[1])
    assert (k["source"], k["target"]) == (head_name(*src), head_name(*top))
    assert k["score"] == float(comp.k[src[0], src[1], top[0], top[1]])
    assert k["source_is_previous_token_head"]  # the induction circuit of Elhage et al.
    ab = out["ablate_source"]
    assert ab["head"] == k["source"] and ab["accuracy_after"] < ab["accuracy_before"]
