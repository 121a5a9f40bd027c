"""Regression tests for issue 10 items 9-11 in the analysis: mismatched caches, degenerate
weights in composition scores, and out-of-range or mistyped arguments.
"""

from __future__ import annotations

import pytest
import torch
from analysis_models import random_model

from circuits.analysis import (
    TunedLens,
    all_composition_scores,
    attention_patterns,
    copying_score_activations,
    decompose_resid,
    direct_logit_attribution,
    duplicate_token_score,
    induction_score,
    logit_lens,
    random_baseline,
)
from circuits.analysis.composition import composition_scores
from circuits.analysis.logit_lens import accumulated_resid


@pytest.fixture(scope="module")
def model():
    return random_model(n_layers=2, d_model=16, n_ctx=12, d_vocab=10, n_heads=2)


def tokens(batch: int, seed: int, n: int = 8, d_vocab: int = 10) -> torch.Tensor:
    return torch.randint(0, d_vocab, (batch, n), generator=torch.Generator().manual_seed(seed))


CACHE_USERS = {
    "logit_lens": lambda m, t, c: logit_lens(m, t, cache=c),
    "logit_lens_cached_ln": lambda m, t, c: logit_lens(m, t, ln="cached", cache=c),
    "decompose_resid": lambda m, t, c: decompose_resid(m, t, c),
    "direct_logit_attribution": lambda m, t, c: direct_logit_attribution(m, t, t, cache=c),
    "copying_score_activations": lambda m, t, c: copying_score_activations(m, t, c),
    "tuned_lens": lambda m, t, c: TunedLens.for_model(m).lens(m, t, c),
}


@pytest.mark.parametrize("name", sorted(CACHE_USERS))
def test_cache_of_other_tokens_is_refused(model, name):
    call = CACHE_USERS[name]
    t4 = tokens(4, 0)
    _, own = model.run_with_cache(t4)
    call(model, t4, own)  # its own cache is accepted
    _, other = model.run_with_cache(tokens(4, 1))  # same shape, other tokens
    with pytest.raises(ValueError, match="cache does not match tokens"):
        call(model, t4, other)
    _, one = model.run_with_cache(t4[:1])  # batch 1 must not broadcast over batch 4
    with pytest.raises(ValueError, match="batch/positions"):
        call(model, t4, one)
    _, shorter = model.run_with_cache(t4[:, :5])
    with pytest.raises(ValueError, match="batch/positions"):
        call(model, t4, shorter)
    _, filtered = model.run_with_cache(t4, names_filter=lambda n: n == "hook_embed")
    with pytest.raises(ValueError, match="cache lacks"):
        call(model, t4, filtered)
    with pytest.raises(TypeError, match="cache must be"):
        call(model, t4, "cache")


def test_cache_check_keeps_the_answer(model):
    t = tokens(3, 2)
    _, cache = model.run_with_cache(t)
    a, b = logit_lens(model, t), logit_lens(model, t, cache=cache)
    torch.testing.assert_close(a.logits, b.logits)
    da = direct_logit_attribution(model, t, t)
    db = direct_logit_attribution(model, t, t, cache=cache)
    torch.testing.assert_close(da.attributions, db.attributions)


def test_cache_of_other_weights_is_refused(model):
    t = tokens(2, 3)
    other = random_model(n_layers=2, d_model=16, n_ctx=12, d_vocab=10, n_heads=2, seed=9)
    _, cache = other.run_with_cache(t)
    with pytest.raises(ValueError, match="other weights"):
        decompose_resid(model, t, cache)


def test_accumulated_resid_checks_the_cache(model):
    _, filtered = model.run_with_cache(tokens(2, 0), names_filter=lambda n: "resid_pre" in n)
    with pytest.raises(ValueError, match=r"cache lacks 'blocks\.1\.hook_resid_post'"):
        accumulated_resid(model, filtered)


def _brute_composition(model, mode):
    """The definition, with every d_model x d_model product formed."""
    W_Q, W_K, W_V, W_O = (getattr(model, n).detach() for n in ("W_Q", "W_K", "W_V", "W_O"))
    n_layers, n_heads = W_Q.shape[:2]
    out = torch.zeros(n_layers, n_heads, n_layers, n_heads)
    for l1 in range(n_layers):
        for h1 in range(n_heads):
            ov1 = W_V[l1, h1] @ W_O[l1, h1]
            for l2 in range(l1 + 1, n_layers):
                for h2 in range(n_heads):
                    qk = W_Q[l2, h2] @ W_K[l2, h2].T
                    reader = {"Q": qk, "K": qk.T, "V": W_V[l2, h2] @ W_O[l2, h2]}[mode]
                    den = ov1.norm() * reader.norm()
                    out[l1, h1, l2, h2] = (ov1 @ reader).norm() / den if den > 0 else 0.0
    return out


def test_composition_with_d_head_larger_than_d_model():
    wide = random_model(n_layers=2, d_model=8, d_head=12, n_heads=2, n_ctx=8, d_vocab=6)
    scores = all_composition_scores(wide, n_samples=8)  # used to fail in a Cholesky
    for mode in ("Q", "K", "V"):
        torch.testing.assert_close(scores.raw(mode), _brute_composition(wide, mode))
    mean, std = random_baseline(8, 12, n_samples=8)
    assert 0 < mean < 1 and std > 0


def test_head_that_writes_nothing_scores_zero_not_nan():
    m = random_model(n_layers=2, d_model=16, n_heads=2, n_ctx=8, d_vocab=6)
    with torch.no_grad():
        m.blocks[0].attn.W_O[1].zero_()  # L0H1 writes nothing
        m.blocks[1].attn.W_Q[0].zero_()  # L1H0 reads nothing with its queries
    scores = all_composition_scores(m, n_samples=8)
    for mode in ("Q", "K", "V"):
        raw = scores.raw(mode)
        assert not raw.isnan().any(), mode
        assert (raw[0, 1] == 0).all(), mode
        torch.testing.assert_close(raw, _brute_composition(m, mode))
    assert (scores.k[0, :, 1, 0] == 0).all() and (scores.q[0, :, 1, 0] == 0).all()
    assert scores.v[0, 0, 1, 0] > 0  # V-composition does not read W_Q
    assert not composition_scores(m, "K").isnan().any()


def test_lens_targets_and_top_k_are_checked(model):
    t = tokens(2, 4)
    lens = logit_lens(model, t)
    with pytest.raises(ValueError, match=r"id 10, outside \[0, d_vocab=10\)"):
        lens.target_prob(torch.full_like(t, 10))
    with pytest.raises(ValueError, match="id -1"):
        lens.target_rank(torch.full_like(t, -1))
    with pytest.raises(ValueError, match="integer dtype"):  # 3.9 is not truncated to 3
        lens.target_prob(torch.full(t.shape, 3.9))
    with pytest.raises(ValueError, match="targets shape"):
        lens.target_prob(t[:1])
    torch.testing.assert_close(
        lens.target_prob(t), lens.log_probs().exp().gather(-1, t.expand(3, 2, 8)[..., None])[..., 0]
    )
    with pytest.raises(ValueError, match=r"k=100 out of range \[1, 10\]"):
        lens.top_k(100)
    with pytest.raises(ValueError, match="k=0"):
        lens.top_k(0)
    with pytest.raises(TypeError, match="k must be an int"):
        lens.top_k(2.0)
    assert lens.top_k(10)[1].shape[-1] == 10


def test_top_sources_past_the_last_layer(model):
    scores = all_composition_scores(model, n_samples=8)
    with pytest.raises(ValueError, match=r"layer=5 out of range \[0, 2\)"):
        scores.top_sources("K", 5, 0)
    with pytest.raises(ValueError, match="head=2"):
        scores.top_sources("K", 1, 2)
    with pytest.raises(ValueError, match="k=0"):
        scores.top_sources("K", 1, 0, k=0)
    assert len(scores.top_sources("K", 1, 0, k=5)) == 2  # only two earlier heads exist


def test_repeat_length_must_be_an_int(model):
    patterns = attention_patterns(model, tokens(2, 5, n=12))
    with pytest.raises(TypeError, match="repeat_length must be an int"):
        induction_score(patterns, 6.0)
    with pytest.raises(TypeError, match="repeat_length must be an int"):
        duplicate_token_score(patterns, True)
    with pytest.raises(TypeError, match="floating point"):
        induction_score(patterns.long(), 6)
    with pytest.raises(ValueError, match="NaN"):
        induction_score(patterns * torch.nan, 6)
    assert induction_score(patterns, 6).shape == (2, 2)
