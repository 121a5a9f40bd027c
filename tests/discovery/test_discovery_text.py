"""Discovery on text, offline: repeated natural text and IOI from a tokenizer, and the shipped
trained stand-in's induction circuit found by exact patching and ACDC."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from circuits.discovery import (
    Problem,
    acdc,
    edge_attribution,
    exact_patching,
    faithfulness,
    ioi_batch,
    reference_circuit,
    repeated_text,
)
from circuits.discovery.benchmark import induction_heads, naive_exact_patching
from circuits.discovery.text import vocabulary_ids
from circuits.pretrained import from_pretrained
from circuits.tasks import repeated_tokens

DATA = Path(__file__).resolve().parents[2] / "data" / "standin_hub"
TEXT = [
    "The quick brown fox jumps over the lazy dog. In the beginning the model knew nothing.",
    "A head that attends to the previous token copies where it came from; that is induction.",
]
# Words the stand-in's tiny tokenizer has as single tokens (it knows no names).
STANDIN_NAMES = [" he", " that", " text", " re", " co", " la"]


@pytest.fixture(scope="module")
def standin():
    import huggingface_hub.constants

    old = huggingface_hub.constants.HF_HUB_OFFLINE
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        return from_pretrained("attn-only-2l", cache_dir=DATA, local_files_only=True)
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE = old


def test_repeated_text_redraws_the_first_copy_from_the_vocabulary(standin) -> None:
    batch = repeated_text(standin, TEXT, 12)
    bos = standin.tokenizer.bos_token_id
    assert (batch.tokens[:, 0] == bos).all() and batch.tokens.shape == (2, 25)
    assert torch.equal(batch.tokens[:, 1:13], batch.tokens[:, 13:])
    assert batch.mask[:, 13:24].all() and batch.mask.sum() == 2 * 11
    problem = Problem.build(standin, batch, task="repeated_text")
    bad = problem.corrupted
    assert bad is not None and torch.equal(bad[:, 13:], batch.tokens[:, 13:])
    assert (bad[:, 0] == bos).all() and (bad[:, 1:13] != batch.tokens[:, 1:13]).any()
    allowed = set(vocabulary_ids(standin).tolist())
    assert bos not in allowed and set(bad[:, 1:13].flatten().tolist()) <= allowed
    # The stand-in does induction on text: patching the first copy costs loss.
    assert problem.value(torch.zeros(problem.graph.n_edges, dtype=torch.bool)) > problem.value() + 1
    with pytest.raises(ValueError, match="fewer than"):
        repeated_text(standin, ["too short"], 30)
    with pytest.raises(ValueError, match="n_ctx"):
        repeated_text(standin, TEXT, 40)


def test_ioi_prompts_metric_and_corruption(standin) -> None:
    with pytest.raises(ValueError, match="single tokens for this tokenizer"):
        ioi_batch(standin, 4)  # the shipped names are not tokens of the tiny stand-in
    batch = ioi_batch(standin, 6, names=STANDIN_NAMES, places=[" it"], objects=[" it"])
    tok = standin.tokenizer
    for i, row in enumerate(batch.tokens):
        io, s1, s2 = batch.name_positions[i].tolist()
        assert row[s1] == row[s2] != row[io]
        assert batch.targets[i, -1] == row[io] and batch.wrong[i, -1] == row[s1]
        assert tok.decode(row[1:].tolist()).endswith("gave a it to")
    assert {i % 2 for i in range(6) if batch.name_positions[i, 0] < batch.name_positions[i, 1]}
    problem = Problem.build(standin, batch, task="ioi")
    assert problem.metric.name == "logit_diff" and problem.metric.wrong is not None
    with torch.no_grad():
        logits = standin(batch.tokens)[:, -1]
    expected = (
        logits.gather(-1, batch.targets[:, -1:]) - logits.gather(-1, batch.wrong[:, -1:])
    ).mean()
    assert problem.value() == pytest.approx(float(expected), abs=1e-4)
    bad = problem.corrupted
    assert bad is not None
    for i in range(6):  # ABC: three distinct names where the names were, the rest untouched
        pos = batch.name_positions[i]
        assert len(set(bad[i, pos].tolist())) == 3
        keep = torch.ones(batch.tokens.shape[1], dtype=torch.bool)
        keep[pos] = False
        assert torch.equal(bad[i, keep], batch.tokens[i, keep])


def test_ioi_end_to_end_on_the_gpt2_standin(tmp_path: Path, monkeypatch) -> None:
    """PRETRAINED's GPT-2 stand-in (a toy GPT2LMHeadModel saved by transformers, loaded with
    from_pretrained("gpt2") offline: gelu_new MLPs, LN folded): every method runs on the IOI
    task at edge and node level, and exact patching equals one hooked forward per unit."""
    import huggingface_hub.constants

    from circuits.pretrained import standin as standins

    standins.build_gpt2(tmp_path, "gpt2", seed=0)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model = from_pretrained("gpt2", cache_dir=tmp_path, local_files_only=True)
    assert model.cfg.act_fn == "gelu_new" and not model.cfg.attn_only
    batch = ioi_batch(model, 4, names=STANDIN_NAMES, places=[" it"], objects=[" it"])
    for level in ("edge", "node"):
        problem = Problem.build(model, batch, task="ioi", level=level)
        exact = exact_patching(problem)
        torch.testing.assert_close(
            exact.scores.double(), naive_exact_patching(problem), atol=1e-5, rtol=0
        )
        assert torch.isfinite(edge_attribution(problem, ig_steps=2).scores).all()
        found = acdc(problem, tau=0.0)  # a random model: the names barely move its output
        assert 0 < found.n_edges <= problem.graph.n_edges
        assert isinstance(faithfulness(problem, found.circuit), float)


def test_the_trained_standin_has_its_induction_circuit_found(standin) -> None:
    """The shipped stand-in (attn-only-2l layout, trained on repeated random tokens): exact
    patching and ACDC find the previous-token head -> induction head key edges."""
    probe = repeated_tokens(8, 16, standin.cfg.d_vocab, bos=True, seed=0)
    prev, induction = induction_heads(standin, probe)
    assert induction
    problem = Problem.build(standin, probe)
    exact = exact_patching(problem)
    keys = [f"{prev}->{h}.k" for h in induction]
    strongest = max(keys, key=lambda e: abs(exact[e]))
    assert strongest in problem.graph.names(reference_circuit(exact))
    assert exact.rank(strongest) < 5
    found = acdc(problem)
    assert set(keys) <= set(found.edge_names())
    assert faithfulness(problem, found.circuit) > 0.9
    assert found.n_edges < problem.graph.n_edges / 4
    # The same circuit at node level: the previous-token and induction heads matter most.
    nodes = exact_patching(Problem.build(standin, probe, level="node"))
    top = {name for name, _ in nodes.top(3)}
    assert prev in top and any(h in top for h in induction)
