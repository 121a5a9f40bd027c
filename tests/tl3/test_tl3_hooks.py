"""TL3's hook contracts: one forward, one answer (``model(x)``, ``run_with_cache(x)[0]`` and
``run_with_hooks`` with identity hooks are bit-identical, as in TransformerLens 3, on every
variant), and ``check_hooks_to_add``: a hook at a hook point that a switch leaves silent is
refused with the switch named (TL3 asserts ``Cannot add hook ... if use_attn_result is False``).
"""

from __future__ import annotations

import pytest
import torch
from helpers import perturbed_model

from circuits import HookedTransformer, HookedTransformerConfig, utils

VARIANTS = {
    "standard_ln": dict(),
    "attn_only_no_norm": dict(attn_only=True, normalization_type=None),
    "shortformer": dict(positional_embedding_type="shortformer"),
    "rotary_rms": dict(positional_embedding_type="rotary", normalization_type="RMS"),
    "lnpre_gelu_new": dict(normalization_type="LNPre", act_fn="gelu_new"),
    "rmspre_relu": dict(normalization_type="RMSPre", act_fn="relu"),
    "solu_ln": dict(act_fn="solu_ln"),
    "grouped_query": dict(n_key_value_heads=2),
    "attn_result": dict(use_attn_result=True),
    "split_qkv": dict(use_split_qkv_input=True),
    "attn_in_mlp_in": dict(use_attn_in=True, use_hook_mlp_in=True),
    "hook_tokens": dict(use_hook_tokens=True),
    "bidirectional": dict(attention_dir="bidirectional"),
    "d_vocab_out": dict(d_vocab_out=11),
    "attn_scale": dict(attn_scale=2.5),
}
TOKENS = torch.randint(0, 20, (3, 9), generator=torch.Generator().manual_seed(0))


def identity(x: torch.Tensor, hook: object) -> torch.Tensor:
    return x


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_one_forward_one_answer(variant: str, grad: bool) -> None:
    model = perturbed_model(**VARIANTS[variant])
    with torch.set_grad_enabled(grad):
        plain = model(TOKENS)
        cached, cache = model.run_with_cache(TOKENS)
        one_hook = model.run_with_hooks(
            TOKENS, fwd_hooks=[(utils.get_act_name("resid_pre", 1), identity)]
        )
        all_hooks = model.run_with_hooks(TOKENS, fwd_hooks=[(lambda name: True, identity)])
    for other in (cached, one_hook, all_hooks):
        assert torch.equal(plain, other)
    assert len(cache) > 10


def test_a_tl3_config_model_also_gives_one_answer() -> None:
    cfg = HookedTransformerConfig(
        n_layers=2, d_model=32, d_head=8, n_ctx=16, d_vocab=20, act_fn="gelu", device="cpu"
    )
    model = HookedTransformer(cfg)
    tokens = TOKENS
    logits = model(tokens)
    assert torch.equal(logits, model.run_with_cache(tokens)[0])
    assert torch.equal(logits, model.run_with_hooks(tokens, fwd_hooks=[("hook_embed", identity)]))
    # With a padding mask too.
    mask = torch.ones_like(tokens)
    mask[0, :4] = 0
    masked = model(tokens, attention_mask=mask)
    assert torch.equal(masked, model.run_with_cache(tokens, attention_mask=mask)[0])


def test_train_mode_runs_the_fast_path_to_float_rounding() -> None:
    model = perturbed_model().train()
    fast = model(TOKENS)
    hooked = model.run_with_cache(TOKENS)[0]
    torch.testing.assert_close(fast, hooked, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "name, switch",
    [
        ("blocks.0.attn.hook_result", "use_attn_result"),
        ("blocks.1.hook_q_input", "use_split_qkv_input"),
        ("blocks.0.hook_k_input", "use_split_qkv_input"),
        ("blocks.0.hook_v_input", "use_split_qkv_input"),
        ("blocks.0.hook_attn_in", "use_attn_in"),
        ("blocks.1.hook_mlp_in", "use_hook_mlp_in"),
        ("hook_tokens", "use_hook_tokens"),
    ],
)
def test_a_hook_at_a_switched_off_point_is_refused(name: str, switch: str) -> None:
    model = perturbed_model()
    with pytest.raises(ValueError, match=switch):
        model.add_hook(name, identity)
    with pytest.raises(ValueError, match=switch):
        model.run_with_hooks(TOKENS, fwd_hooks=[(name, identity)])
    with pytest.raises(ValueError, match=switch):
        model.run_with_cache(TOKENS, names_filter=[name])
    assert not model._hooked_parts()  # nothing was left attached
    # Switched on, the same hook is accepted and fires.
    on = perturbed_model(**{switch: True})
    seen: list[str] = []
    on.run_with_hooks(TOKENS, fwd_hooks=[(name, lambda x, hook: seen.append(hook.name))])
    assert seen == [name]


def test_filters_skip_silent_points_and_unknown_names_are_refused() -> None:
    model = perturbed_model()
    seen: list[str] = []
    model.add_hook(
        lambda n: n.endswith(("hook_result", "hook_z")), lambda x, hook: seen.append(hook.name)
    )
    model(TOKENS)
    model.reset_hooks()
    assert seen == ["blocks.0.attn.hook_z", "blocks.1.attn.hook_z"]
    _, cache = model.run_with_cache(TOKENS)  # every live point, none of the silent ones
    assert "blocks.0.attn.hook_z" in cache and "blocks.0.attn.hook_result" not in cache
    with pytest.raises(ValueError, match="no hook point"):
        model.add_hook("blocks.0.attn.hook_nothing", identity)
