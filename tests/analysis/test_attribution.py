"""Residual-stream decomposition and direct logit attribution: exactness and TL agreement."""

from __future__ import annotations

import pytest
import torch
from analysis_models import V, random_model

from circuits.analysis.attribution import decompose_resid, direct_logit_attribution
from circuits.tasks import repeated_tokens

CONFIGS = {
    "attn_only": dict(attn_only=True, normalization_type=None),
    "ln_mlp": dict(),
    "shortformer": dict(positional_embedding_type="shortformer"),
}


def _tokens(batch: int = 3, pos: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 20, (batch, pos), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_decomposition_sums_to_final_residual(name):
    model = random_model(**CONFIGS[name])
    tokens = _tokens()
    _, cache = model.run_with_cache(tokens)
    dec = decompose_resid(model, tokens, cache)
    final = cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"]
    assert torch.allclose(dec.components.sum(0), final, atol=1e-5)
    assert len(dec.labels) == dec.components.shape[0]
    assert ("pos_embed" in dec.labels) == (name != "shortformer")


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_dla_plus_constant_is_the_logit(name):
    model = random_model(**CONFIGS[name])
    tokens, targets, other = _tokens(), _tokens(seed=1), _tokens(seed=2)
    with torch.no_grad():
        logits = model(tokens)
    dla = direct_logit_attribution(model, tokens, targets)
    expected = logits.gather(-1, targets[..., None])[..., 0]
    assert torch.allclose(dla.attributions.sum(0) + dla.constant, expected, atol=1e-4)
    diff = direct_logit_attribution(model, tokens, targets, baseline_targets=other)
    expected = expected - logits.gather(-1, other[..., None])[..., 0]
    assert torch.allclose(diff.attributions.sum(0) + diff.constant, expected, atol=1e-4)


def test_heads_match_transformer_lens_stack_head_results(bridge_of):
    model = random_model()
    bridge = bridge_of(model)
    tokens = _tokens()
    _, cache = bridge.run_with_cache(tokens)
    tl_heads, tl_labels = cache.stack_head_results(layer=-1, return_labels=True)
    dec = decompose_resid(bridge, tokens, cache)
    ours = torch.stack([dec.components[dec.labels.index(label)] for label in tl_labels])
    assert torch.allclose(ours, tl_heads, atol=1e-5)
    # The same numbers from our model.
    assert torch.allclose(decompose_resid(model, tokens).components, dec.components, atol=1e-5)


def test_dla_on_bridge_matches_tl_logit_attrs(bridge_of):
    model = random_model()
    with torch.no_grad():  # TL's logit_attrs assumes the final LN gain is folded into W_U
        model.ln_final.w.fill_(1.0)
    bridge = bridge_of(model)
    tokens, targets = _tokens(), _tokens(seed=1)
    _, cache = bridge.run_with_cache(tokens)
    dla = direct_logit_attribution(bridge, tokens, targets, cache=cache)
    tl_heads, tl_labels = cache.stack_head_results(layer=-1, return_labels=True)
    tl = cache.logit_attrs(tl_heads, tokens=targets, has_batch_dim=True)
    ours = torch.stack([dla[label] for label in tl_labels])
    assert torch.allclose(ours, tl, atol=1e-4)


def test_dla_known_answer_prev_copy_head(prev_copy_model):
    probe = repeated_tokens(4, 7, V, seed=0)
    tokens = probe.tokens
    previous = torch.cat([tokens[:, :1], tokens[:, :-1]], dim=1)
    dla = direct_logit_attribution(prev_copy_model, tokens, previous)
    # The copying head raises the previous token's logit by ~1 (one-hot copy, attention ~1).
    assert torch.allclose(dla["L0H0"][:, 1:], torch.ones(4, 13), atol=0.01)
    assert dla["L0H1"].abs().max() < 1e-6  # junk head writes outside the unembedding
    assert dla["embed"][:, 1:].abs().max() < 1e-6  # tokens are distinct: no self-logit


def test_bad_targets_raise(prev_copy_model):
    tokens = repeated_tokens(2, 4, V, seed=0).tokens
    with pytest.raises(ValueError, match="targets"):
        direct_logit_attribution(prev_copy_model, tokens, tokens[:, :3])
    with pytest.raises(ValueError, match="targets"):
        direct_logit_attribution(prev_copy_model, tokens, tokens + V)
