"""Our model to and from a TransformerLens 4 ``TransformerBridge`` with identical numerics."""

from __future__ import annotations

import pytest
import torch
from helpers import perturbed_model
from transformer_lens import TransformerBridge, TransformerBridgeConfig
from transformer_lens.utilities import composition_scores

from circuits import HookedTransformer
from circuits.interop.bridge import DIFFERENT_HOOKS, from_bridge, to_bridge

ATOL = 1e-5
CONFIGS = {
    "attn_only": dict(attn_only=True, normalization_type=None),
    "full_gelu": dict(act_fn="gelu"),
    "full_gelu_new": dict(act_fn="gelu_new", n_layers=3),
    "full_relu_no_ln": dict(act_fn="relu", normalization_type=None, d_mlp=48),
    "attn_result": dict(use_attn_result=True),
}


@pytest.fixture(params=sorted(CONFIGS))
def model(request: pytest.FixtureRequest) -> HookedTransformer:
    return perturbed_model(**CONFIGS[request.param])


def tokens_for(model: HookedTransformer) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, model.cfg.d_vocab, (3, model.cfg.n_ctx), generator=gen)


def assert_same_activations(ours: HookedTransformer, bridge: object) -> None:
    tokens = tokens_for(ours)
    with torch.no_grad():
        (logits, loss), cache = ours.run_with_cache(tokens, return_type="both")
        (b_logits, b_loss), b_cache = bridge.run_with_cache(tokens, return_type="both")  # type: ignore[attr-defined]
        fast = ours(tokens)
    torch.testing.assert_close(b_logits, logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(b_logits, fast, atol=ATOL, rtol=0)
    torch.testing.assert_close(b_loss, loss, atol=ATOL, rtol=0)
    shared = set(cache.keys()) & set(b_cache.keys())
    # hook_result: the bridge has the hook point but never fires it (TL 4.3).
    expected = {k for k in cache if not k.endswith("hook_result")}
    assert shared == expected, sorted(expected - shared)
    for name in sorted(shared):
        if name.rsplit(".", 1)[-1] in DIFFERENT_HOOKS:
            continue
        torch.testing.assert_close(b_cache[name], cache[name], atol=ATOL, rtol=0, msg=name)


def test_to_bridge_matches_logits_and_every_shared_hook(model: HookedTransformer) -> None:
    bridge = to_bridge(model)
    assert isinstance(bridge, TransformerBridge)
    assert_same_activations(model, bridge)


def test_bridge_attn_scores_hook_is_the_pattern(model: HookedTransformer) -> None:
    """Why hook_attn_scores is left out above: TL 4.3's native bridge stores the pattern there."""
    tokens = tokens_for(model)
    _, b_cache = to_bridge(model).run_with_cache(tokens)
    _, cache = model.run_with_cache(tokens)
    torch.testing.assert_close(
        b_cache["blocks.0.attn.hook_attn_scores"], cache["blocks.0.attn.hook_pattern"]
    )


def test_round_trip_is_exact(model: HookedTransformer) -> None:
    back = from_bridge(to_bridge(model))
    assert back.cfg == model.cfg.replace(use_attn_result=False)
    for name, tensor in model.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name


def test_from_natively_initialised_bridge() -> None:
    """A bridge with TL4's own init (not ours) converts with the same numbers."""
    cfg = TransformerBridgeConfig(
        d_model=32,
        d_head=8,
        n_heads=4,
        n_layers=2,
        n_ctx=16,
        d_vocab=24,
        act_fn="gelu_new",
        d_mlp=64,
        normalization_type="LN",
        seed=5,
        device="cpu",
    )
    bridge = TransformerBridge.boot_native(cfg).eval()
    with torch.no_grad():  # non-trivial biases and gains, so a missed one shows
        gen = torch.Generator().manual_seed(1)
        for p in bridge.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    ours = from_bridge(bridge)
    assert (ours.cfg.d_mlp, ours.cfg.act_fn, ours.cfg.d_vocab) == (64, "gelu_new", 24)
    assert_same_activations(ours, bridge)


def test_tl4_tools_see_the_same_model(model: HookedTransformer) -> None:
    """Composition scores from the bridge equal TL's function applied to our weights."""
    assert model.cfg.n_layers >= 2  # composition needs two layers
    bridge = to_bridge(model)
    theirs = bridge.all_composition_scores("K").scores.detach()
    ours = composition_scores(model.OV, model.QK.T, broadcast_dims=True)
    earlier = torch.arange(model.cfg.n_layers)
    mask = (earlier[:, None, None, None] < earlier[None, None, :, None]).float()
    torch.testing.assert_close(theirs, ours * mask, atol=ATOL, rtol=0)


def test_shortformer_is_refused_clearly() -> None:
    model = perturbed_model(attn_only=True, positional_embedding_type="shortformer")
    with pytest.raises(ValueError, match="shortformer"):
        to_bridge(model)


def test_unsupported_bridges_are_refused_by_name() -> None:
    rms = TransformerBridge.boot_native(
        TransformerBridgeConfig(
            d_model=16,
            d_head=4,
            n_heads=4,
            n_layers=1,
            n_ctx=8,
            d_vocab=10,
            device="cpu",
            normalization_type="RMS",
        )
    )
    with pytest.raises(ValueError, match="normalization_type='RMS'"):
        from_bridge(rms)
    rotary = TransformerBridge.boot_native(
        TransformerBridgeConfig(
            d_model=16,
            d_head=4,
            n_heads=4,
            n_layers=1,
            n_ctx=8,
            d_vocab=10,
            device="cpu",
            positional_embedding_type="rotary",
            rotary_dim=4,
        )
    )
    with pytest.raises(ValueError, match="positional_embedding_type='rotary'"):
        from_bridge(rotary)


def test_to_bridge_rejects_other_objects() -> None:
    with pytest.raises(TypeError, match="HookedTransformer"):
        to_bridge(torch.nn.Linear(2, 2))  # type: ignore[arg-type]


@pytest.mark.parametrize("scale", [2.0, 5.5])
def test_a_non_default_attn_scale_is_carried_over(scale: float) -> None:
    """Issue 20 (silent 9): the bridge divided by sqrt(d_head) whatever the model's scale."""
    ours = perturbed_model(attn_scale=scale)
    bridge = to_bridge(ours)
    tokens = tokens_for(ours)
    with torch.no_grad():
        torch.testing.assert_close(bridge(tokens), ours(tokens), atol=ATOL, rtol=0)
    back = from_bridge(bridge)
    assert back.cfg.attn_scale == scale
    # The independent check: our own model with the default scale computes something else.
    default = perturbed_model()
    assert not torch.allclose(default(tokens), ours(tokens), atol=1e-2)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (dict(positional_embedding_type="rotary"), "rotary"),
        (dict(positional_embedding_type="shortformer"), "shortformer"),
        (dict(n_key_value_heads=2), "grouped-query"),
        (dict(act_fn="solu_ln"), "solu_ln"),
        (dict(normalization_type="RMS"), "RMS"),
        (dict(attn_scale=1.0), "unscaled"),
    ],
)
def test_what_the_bridge_lacks_is_refused_by_name(overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        to_bridge(perturbed_model(**overrides))


def test_from_bridge_takes_only_a_bridge() -> None:
    with pytest.raises(TypeError, match="already a circuits model"):
        from_bridge(perturbed_model())
    with pytest.raises(TypeError, match="got str"):
        from_bridge("gpt2")
