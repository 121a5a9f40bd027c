"""The stacked forward pass and its attention: the same function on every path, and as before."""

from __future__ import annotations

import pytest
import torch
from helpers import perturbed_model
from stacked_reference import reference_forward

from circuits.training import stacked
from circuits.training.stacked_attention import _FLASH, _FlashCPU, attention

CONFIGS = {
    "attn_only": dict(attn_only=True, normalization_type=None),
    "ln_mlp": dict(act_fn="gelu"),
}


def stacked_models(name: str):
    models = [perturbed_model(**CONFIGS[name], seed=s) for s in (3, 4, 5)]
    tokens = torch.randint(0, 20, (3, 4, 24), generator=torch.Generator().manual_seed(0))
    return stacked.stack(models), models[0].cfg, tokens


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("want_patterns", [False, True])
def test_forward_and_gradients_equal_the_previous_forward(name, want_patterns, threads):
    params, cfg, tokens = stacked_models(name)
    weights = torch.randn(3, 4, 24, cfg.d_vocab, generator=torch.Generator().manual_seed(1))
    patterns, old_patterns = ([], []) if want_patterns else (None, None)
    new = stacked.forward(params, cfg, tokens, patterns)
    old = reference_forward(params, cfg, tokens, old_patterns)
    torch.testing.assert_close(new, old, rtol=0, atol=1e-6)
    grads = torch.autograd.grad((new * weights).sum(), list(params.values()))
    old_grads = torch.autograd.grad((old * weights).sum(), list(params.values()))
    # float32 rounding: the separate projections' input gradients are summed in another order,
    # and the error carries into every earlier gradient at the scale of the largest one.
    scale = max(g.abs().max().item() for g in old_grads)
    for key, g, g_old in zip(params, grads, old_grads, strict=True):
        torch.testing.assert_close(g, g_old, rtol=0, atol=2e-6 * scale, msg=key)
    if want_patterns:
        assert len(patterns) == len(old_patterns) == cfg.n_layers
        for p, p_old in zip(patterns, old_patterns, strict=True):
            assert p.shape == (3, 4, cfg.n_heads, 24, 24)
            torch.testing.assert_close(p, p_old, rtol=0, atol=1e-6)


def qkv(G=2, b=3, p=5, n=2, e=4, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(G, b * p, n * e, generator=gen, dtype=dtype) for _ in range(3)]


@pytest.mark.skipif(_FLASH is None, reason="this torch has no fused CPU attention kernel")
def test_flash_backward_passes_gradcheck():
    q, k, v = (x.requires_grad_(True) for x in qkv())
    assert torch.autograd.gradcheck(lambda q, k, v: _FlashCPU.apply(q, k, v, 3, 2, 0.5), (q, k, v))


@pytest.mark.skipif(_FLASH is None, reason="this torch has no fused CPU attention kernel")
def test_flash_and_explicit_paths_agree_with_strided_inputs():
    # Layer 0 hands attention strided views of one packed tensor: the kernel must read them.
    packed = torch.randn(2, 15, 3, 8, dtype=torch.float64, requires_grad=True)
    q, k, v = packed.unbind(2)
    dz = torch.randn(2, 15, 8, dtype=torch.float64)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        fused = attention(q, k, v, 3, 2, 0.5)
        (g_fused,) = torch.autograd.grad((fused * dz).sum(), packed)
    finally:
        torch.set_num_threads(before)
    patterns: list[torch.Tensor] = []
    explicit = attention(q, k, v, 3, 2, 0.5, patterns)
    (g_explicit,) = torch.autograd.grad((explicit * dz).sum(), packed)
    torch.testing.assert_close(fused, explicit, rtol=0, atol=1e-12)
    torch.testing.assert_close(g_fused, g_explicit, rtol=0, atol=1e-12)
    # Causal: no query attends to a later key.
    assert patterns[0].triu(1).abs().max() == 0


def test_attention_is_causal_and_per_sequence():
    q, k, v = qkv(dtype=torch.float32)
    z = attention(q, k, v, 3, 2, 0.5)
    changed = v.clone()
    changed[:, 9] += 1.0  # sequence 1 (positions 5-9), its last position
    z2 = attention(q, k, changed, 3, 2, 0.5)
    differs = (z2 - z).abs().amax(dim=(0, 2)) > 0
    assert differs.nonzero().flatten().tolist() == [9]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (lambda t, cfg: t.clone().index_fill_(2, torch.tensor([3]), cfg.d_vocab), "token ids"),
        (lambda t, cfg: t.clone().index_fill_(2, torch.tensor([0]), -1), "token ids"),
        (lambda t, cfg: torch.zeros(3, 1, cfg.n_ctx + 1, dtype=torch.long), "n_ctx"),
    ],
    ids=["id-past-vocab", "negative-id", "too-long"],
)
def test_bad_tokens_are_refused_before_any_lookup(bad, message):
    # An id past the vocabulary would read the next instance's rows of the stacked tables
    # (or, in the compiled kernel, past the last instance's): refused, naming the problem.
    params, cfg, tokens = stacked_models("attn_only")
    with pytest.raises(ValueError, match=message):
        stacked.forward(params, cfg, bad(tokens, cfg))
