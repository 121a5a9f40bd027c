"""Logit lens: agreement with TL's accumulated residual, exact final point, known answers."""

from __future__ import annotations

import pytest
import torch
from analysis_models import V, random_model

from circuits.analysis.logit_lens import accumulated_resid, logit_lens
from circuits.tasks import repeated_tokens

CONFIGS = {
    "attn_only": dict(attn_only=True, normalization_type=None),
    "ln_mlp": dict(),
}


def _tokens(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 20, (3, 10), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("sublayers", [False, True])
def test_accumulated_resid_matches_transformer_lens(name, sublayers, bridge_of):
    model = random_model(**CONFIGS[name])
    tokens = _tokens()
    for m in (model, bridge_of(model)):
        _, cache = m.run_with_cache(tokens)
        ours, labels = accumulated_resid(m, cache, sublayers)
        if sublayers and m.cfg.attn_only:  # no resid_mid; TL raises KeyError here
            assert labels == [f"{la}_pre" for la in range(3)] + ["final_post"]
            continue
        tl, tl_labels = cache.accumulated_resid(incl_mid=sublayers, return_labels=True)
        assert labels == tl_labels
        assert torch.allclose(ours, tl, atol=1e-6)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_final_point_is_the_model_output(name):
    model = random_model(**CONFIGS[name])
    lens = logit_lens(model, _tokens(), sublayers=True)
    assert torch.allclose(lens.logits[-1], lens.final_logits, atol=1e-5)
    assert lens.kl_to_final()[-1].abs().max() < 1e-5
    assert (lens.kl_to_final() > -1e-6).all()
    cached = logit_lens(model, _tokens(), ln="cached")
    assert torch.allclose(cached.logits[-1], lens.final_logits, atol=1e-5)


def test_ln_modes_match_transformer_lens_apply_ln(bridge_of):
    model = random_model()
    bridge = bridge_of(model)
    tokens = _tokens()
    _, cache = bridge.run_with_cache(tokens)
    W_U, b_U = bridge.W_U.detach(), bridge.b_U.detach()
    # TL 4 recomputes the final LayerNorm per point (gain and bias included) at the unembed.
    tl = cache.accumulated_resid(apply_ln=True) @ W_U + b_U
    assert torch.allclose(logit_lens(bridge, tokens, cache=cache).logits, tl, atol=1e-4)
    # With one cached scale TL only centres and divides: compare with a unit gain, zero bias.
    with torch.no_grad():
        model.ln_final.w.fill_(1.0)
        model.ln_final.b.zero_()
    bridge = bridge_of(model)
    _, cache = bridge.run_with_cache(tokens)
    resid = cache.accumulated_resid()
    tl = cache.apply_ln_to_stack(resid, recompute_ln=False) @ W_U + b_U
    ours = logit_lens(bridge, tokens, ln="cached", cache=cache).logits
    assert torch.allclose(ours, tl, atol=1e-4)


def test_lens_statistics_against_direct_computation():
    model = random_model()
    tokens, targets = _tokens(), _tokens(seed=1)
    lens = logit_lens(model, tokens)
    probs = lens.logits.softmax(-1)
    p = lens.target_prob(targets)
    for point in range(len(lens.labels)):
        for b in range(3):
            for q in range(10):
                row = probs[point, b, q]
                t = targets[b, q]
                assert p[point, b, q] == pytest.approx(float(row[t]), abs=1e-6)
                rank = int((row.argsort(descending=True) == t).nonzero())
                assert int(lens.target_rank(targets)[point, b, q]) == rank
    values, ids = lens.top_k(3)
    assert torch.equal(ids[..., 0], lens.logits.argmax(-1))
    assert torch.allclose(values.sum(-1), probs.topk(3).values.sum(-1))
    with pytest.raises(ValueError, match="targets"):
        lens.target_prob(targets[:, :4])


def test_known_answer_prev_copy_model(prev_copy_model):
    tokens = repeated_tokens(4, 7, V, seed=0).tokens
    lens = logit_lens(prev_copy_model, tokens)
    assert lens.labels == ["0_pre", "final_post"]
    top = lens.top_k(1)[1][..., 0]
    # Before the layer only the embedding is there: the lens reads the current token...
    assert torch.equal(top[0], tokens)
    # ...afterwards the head has added the previous token, on par with the current one.
    previous = torch.cat([tokens[:, :1], tokens[:, :-1]], dim=1)
    prob = lens.target_prob(previous)
    assert (prob[1, :, 1:] > prob[0, :, 1:] + 0.1).all()
