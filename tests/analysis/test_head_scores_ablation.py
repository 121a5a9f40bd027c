"""Head scores, find_heads, ablation and activation patching: hand-built heads and TL agreement."""

from __future__ import annotations

import pytest
import torch
from analysis_models import V, random_model
from transformer_lens import patching

from circuits.analysis.ablation import (
    ablation_effects,
    masked_loss,
    parse_heads,
    patch_heads,
    run_with_ablation,
)
from circuits.analysis.head_scores import (
    KINDS,
    copying_score_activations,
    find_heads,
    head_scores,
)
from circuits.tasks import repeated_tokens


def _probe(length: int = 7, batch: int = 16):
    return repeated_tokens(batch, length, V, seed=0)


def test_prev_copy_head_scores(prev_copy_model):
    scores = head_scores(prev_copy_model, _probe())
    assert set(scores) == set(KINDS)
    assert scores["previous_token"][0, 0] > 0.99
    assert scores["copying"][0, 0] > 0.99
    assert scores["copying"][0, 1] < 0.5  # the junk head writes nothing the unembedding reads
    assert scores["copying_top1"][0, 0] > 0.99
    assert find_heads(prev_copy_model, "previous_token", 0.5, scores=scores) == ["L0H0"]
    assert find_heads(prev_copy_model, "copying", 0.9, scores=scores) == ["L0H0"]
    assert find_heads(prev_copy_model, "induction", 0.5, scores=scores) == []


def test_handbuilt_induction_head_found(induction_model):
    scores = head_scores(induction_model, _probe())
    assert scores["induction"][1, 0] > 0.9
    assert find_heads(induction_model, "induction", 0.5, _probe()) == ["L1H0"]
    assert find_heads(induction_model, "previous_token", 0.5, scores=scores) == ["L0H0"]


def test_find_heads_sorted_and_validated(induction_model):
    scores = {k: torch.zeros(2, 2) for k in KINDS}
    scores["current_token"] = torch.tensor([[0.5, 0.9], [0.7, 0.1]])
    assert find_heads(induction_model, "current_token", 0.5, scores=scores) == [
        "L0H1",
        "L1H0",
        "L0H0",
    ]
    with pytest.raises(ValueError, match="kind"):
        find_heads(induction_model, "bogus", scores=scores)


def test_copying_score_activations_independent_computation():
    """Recompute the score for one head with plain loops over a TL3-layout LN model."""
    model = random_model(n_layers=2, d_vocab=20)
    tokens = torch.randint(0, 20, (2, 9), generator=torch.Generator().manual_seed(0))
    _, cache = model.run_with_cache(tokens)
    got = copying_score_activations(model, tokens)
    layer, head = 1, 2
    z = cache[f"blocks.{layer}.attn.hook_z"][:, :, head]
    out = z @ model.W_O[layer, head]
    x = out - out.mean(-1, keepdim=True)
    x = x / cache["ln_final.hook_scale"] * model.ln_final.w
    logits = x @ model.W_U
    pattern = cache[f"blocks.{layer}.attn.hook_pattern"][:, head]
    shares, tops = [], []
    for b in range(2):
        for q in range(1, 9):
            gain = (logits[b, q] - logits[b, q].mean()).relu()
            tok = tokens[b, pattern[b, q].argmax()]
            shares.append(gain[tok] / gain.sum())
            tops.append(float(logits[b, q].argmax() == tok))
    expected = float(torch.stack(shares).mean().detach())
    assert got[layer, head] == pytest.approx(expected, abs=1e-5)
    top1 = copying_score_activations(model, tokens, cache, statistic="top1")
    assert top1[layer, head] == pytest.approx(sum(tops) / len(tops), abs=1e-6)
    with pytest.raises(ValueError, match="statistic"):
        copying_score_activations(model, tokens, cache, statistic="mean")
    # A query mask averages over the chosen queries only.
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[0, 3], mask[1, 7] = True, True
    masked = copying_score_activations(model, tokens, cache, query_mask=mask)
    chosen = float((shares[2] + shares[8 + 6]).detach()) / 2  # (b=0, q=3), (b=1, q=7)
    assert masked[layer, head] == pytest.approx(chosen, abs=1e-5)
    ones = torch.ones(2, 9)  # a float mask, weighting position 0 too: it is left untouched
    assert torch.allclose(copying_score_activations(model, tokens, cache, ones), got)
    assert bool((ones == 1).all())
    with pytest.raises(ValueError, match=r"query_mask shape \(2, 8\)"):
        copying_score_activations(model, tokens, cache, torch.ones(2, 8, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"query_mask must be a torch\.Tensor"):
        copying_score_activations(model, tokens, cache, [[True] * 9] * 2)  # type: ignore[arg-type]
    only_first = torch.zeros(2, 9, dtype=torch.bool)
    only_first[:, 0] = True
    with pytest.raises(ValueError, match="query_mask selects no query"):
        copying_score_activations(model, tokens, cache, query_mask=only_first)


def test_head_scores_same_on_bridge(bridge_of):
    model = random_model(n_layers=2, normalization_type="LN")
    probe = repeated_tokens(4, 10, 20, seed=1)
    ours, theirs = head_scores(model, probe), head_scores(bridge_of(model), probe)
    for kind in KINDS:
        assert torch.allclose(ours[kind], theirs[kind], atol=1e-5), kind


# --- ablation ---


def _induction_metric():
    probe = _probe()
    return probe, masked_loss(probe.targets, probe.mask)


def test_ablating_induction_circuit(induction_model):
    probe, metric = _induction_metric()
    effects = ablation_effects(induction_model, probe.tokens, metric)
    # Both heads of the circuit matter; the junk heads do not.
    assert effects[1, 0] > 0.5 and effects[0, 0] > 0.5
    assert effects[0, 1].abs() < 1e-4 and effects[1, 1].abs() < 1e-4
    frozen = ablation_effects(induction_model, probe.tokens, metric, freeze_patterns=True)
    # With patterns frozen, the previous-token head acts only through L1H0's keys: no effect.
    assert frozen[0, 0].abs() < 1e-5
    assert frozen[1, 0] > 0.5  # the induction head's own output still carries the answer


def test_mean_ablation_on_single_sequence_is_identity(induction_model):
    probe, _ = _induction_metric()
    tokens = probe.tokens[:1]
    clean = induction_model(tokens)
    ablated = run_with_ablation(induction_model, tokens, ["L1H0", (0, 0)], method="mean")
    assert torch.allclose(clean, ablated.logits, atol=1e-5)
    zeroed = run_with_ablation(induction_model, tokens, ["L1H0"], method="zero")
    assert not torch.allclose(clean, zeroed.logits, atol=1e-3)


def test_run_with_ablation_names_its_output(induction_model):
    # Issue 20: it returned bare logits, with nothing saying what they were or what was ablated.
    tokens = _probe().tokens[:2]
    run = run_with_ablation(induction_model, tokens, ["L1H0", (0, 1)], method="zero")
    assert run.heads == ("L1H0", "L0H1") and run.method == "zero" and not run.freeze_patterns
    assert run.logits.shape == (*tokens.shape, induction_model.cfg.d_vocab_out)
    text = repr(run)
    assert "L1H0" in text and "tensor(" not in text and len(text) < 200


def test_parse_heads_and_bad_input(induction_model):
    assert parse_heads(induction_model, ["L1H0", (0, 1)]) == [(1, 0), (0, 1)]
    with pytest.raises(ValueError, match="layer"):
        parse_heads(induction_model, ["L2H0"])
    with pytest.raises(ValueError, match="head"):
        parse_heads(induction_model, [(0, 5)])
    with pytest.raises(ValueError, match="heads"):
        parse_heads(induction_model, ["head 1"])
    with pytest.raises(ValueError, match="method"):
        run_with_ablation(induction_model, _probe().tokens, ["L0H0"], method="resample")  # type: ignore[arg-type]


def test_patching_matches_transformer_lens():
    model = random_model(n_layers=2, normalization_type="LN")
    gen = torch.Generator().manual_seed(4)
    clean = torch.randint(0, 20, (3, 8), generator=gen)
    corrupted = torch.randint(0, 20, (3, 8), generator=gen)
    target = clean[:, -1]

    def metric(logits):
        return logits[torch.arange(3), -1, target].mean()

    _, clean_cache = model.run_with_cache(clean)
    tl = patching.get_act_patch_attn_head_out_all_pos(model, corrupted, clean_cache, metric)
    ours = patch_heads(model, clean, corrupted, metric, direction="denoising")
    with torch.no_grad():
        base = float(metric(model(corrupted)))
    assert torch.allclose(ours + base, tl.detach(), atol=1e-5)
    # Noising with an identical "corrupted" run changes nothing.
    assert patch_heads(model, clean, clean, metric).abs().max() < 1e-5


def test_ablation_same_on_bridge(bridge_of, induction_model):
    probe, metric = _induction_metric()
    bridge = bridge_of(induction_model)
    for freeze in (False, True):
        ours = ablation_effects(induction_model, probe.tokens, metric, freeze_patterns=freeze)
        theirs = ablation_effects(bridge, probe.tokens, metric, freeze_patterns=freeze)
        assert torch.allclose(ours, theirs, atol=1e-4)
