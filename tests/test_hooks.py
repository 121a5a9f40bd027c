"""TransformerLens 3.x's input switches and hooks, and no hook or cache aliasing a parameter.

Reference semantics: TransformerLens 3.x ``TransformerBlock.forward``: ``hook_q_input`` etc.
are per-head copies of ``resid_pre`` taken *before* ``ln1``; ``hook_attn_in`` one copy per head
shared by Q, K and V; ``hook_mlp_in`` a copy of ``resid_mid`` before ``ln2`` (the skip
connection keeps the unpatched ``resid_mid``).
"""

from __future__ import annotations

import pytest
import torch
from helpers import perturbed_model

from circuits import HookedTransformer
from circuits.model import fast_path

TOKENS = torch.randint(0, 20, (3, 9), generator=torch.Generator().manual_seed(0))
SWITCHES = ["set_use_split_qkv_input", "set_use_attn_in", "set_use_hook_mlp_in"]


def model_with(**overrides: object) -> HookedTransformer:
    return perturbed_model(**overrides)


@pytest.mark.parametrize("switch", [*SWITCHES, "set_use_attn_result"])
@pytest.mark.parametrize("pos", ["standard", "shortformer"])
def test_switches_leave_the_logits_unchanged(switch: str, pos: str) -> None:
    model = model_with(positional_embedding_type=pos)
    with torch.no_grad():
        before = model(TOKENS)
        getattr(model, switch)(True)
        after = model(TOKENS)
        _, cache = model.run_with_cache(TOKENS)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    assert getattr(model.cfg, switch.removeprefix("set_")) is True
    assert all(getattr(m, "cfg", model.cfg) is model.cfg for m in model.modules())
    getattr(model, switch)(False)
    assert getattr(model.cfg, switch.removeprefix("set_")) is False
    assert len(cache) > 0


def test_split_qkv_hooks_are_per_head_copies_of_resid_pre() -> None:
    model = model_with()
    model.set_use_split_qkv_input(True)
    _, cache = model.run_with_cache(TOKENS)
    for layer in range(2):
        resid = cache[f"blocks.{layer}.hook_resid_pre"]
        for name in ("q", "k", "v"):
            x = cache[f"blocks.{layer}.hook_{name}_input"]
            assert x.shape == (3, 9, 4, 32)
            torch.testing.assert_close(x, resid.unsqueeze(2).expand_as(x))
    assert "blocks.0.hook_attn_in" not in cache and "blocks.0.hook_mlp_in" not in cache


def test_patching_one_heads_query_input_changes_that_head_only() -> None:
    model = model_with()
    model.set_use_split_qkv_input(True)
    _, clean = model.run_with_cache(TOKENS)

    def zero_head_2(x: torch.Tensor, hook: object) -> torch.Tensor:
        x = x.clone()
        x[:, :, 2] = 0.0
        return x

    with model.hooks(fwd_hooks=[("blocks.1.hook_q_input", zero_head_2)]):
        _, patched = model.run_with_cache(TOKENS)
    q_clean, q_patched = clean["blocks.1.attn.hook_q"], patched["blocks.1.attn.hook_q"]
    others = [0, 1, 3]
    torch.testing.assert_close(q_patched[:, :, others], q_clean[:, :, others])
    assert not torch.allclose(q_patched[:, :, 2], q_clean[:, :, 2])
    # ln1 of a zero vector is its bias: the query is computed from LayerNorm(0) = b
    ln_b = model.blocks[1].ln1.b
    expected = ln_b @ model.blocks[1].attn.W_Q[2] + model.blocks[1].attn.b_Q[2]
    torch.testing.assert_close(q_patched[:, :, 2], expected.expand(3, 9, -1))
    torch.testing.assert_close(patched["blocks.1.attn.hook_k"], clean["blocks.1.attn.hook_k"])


def test_attn_in_is_one_copy_per_head_shared_by_q_k_v() -> None:
    model = model_with(attn_only=True, normalization_type=None)
    model.set_use_attn_in(True)
    _, clean = model.run_with_cache(TOKENS)
    assert clean["blocks.0.hook_attn_in"].shape == (3, 9, 4, 32)

    def zero_head_0(x: torch.Tensor, hook: object) -> torch.Tensor:
        x = x.clone()
        x[:, :, 0] = 0.0
        return x

    with model.hooks(fwd_hooks=[("blocks.0.hook_attn_in", zero_head_0)]):
        _, patched = model.run_with_cache(TOKENS)
    for name in ("q", "k", "v"):
        clean_x, patched_x = (
            clean[f"blocks.0.attn.hook_{name}"],
            patched[f"blocks.0.attn.hook_{name}"],
        )
        torch.testing.assert_close(patched_x[:, :, 1:], clean_x[:, :, 1:])
        bias = getattr(model.blocks[0].attn, f"b_{name.upper()}")[0]
        torch.testing.assert_close(patched_x[:, :, 0], bias.expand(3, 9, -1))


def test_mlp_in_patch_reaches_the_mlp_but_not_the_skip_connection() -> None:
    model = model_with()
    model.set_use_hook_mlp_in(True)
    _, clean = model.run_with_cache(TOKENS)
    torch.testing.assert_close(clean["blocks.0.hook_mlp_in"], clean["blocks.0.hook_resid_mid"])
    with model.hooks(fwd_hooks=[("blocks.0.hook_mlp_in", lambda x, hook: x * 0.0)]):
        _, patched = model.run_with_cache(TOKENS)
    torch.testing.assert_close(patched["blocks.0.hook_resid_mid"], clean["blocks.0.hook_resid_mid"])
    mlp = model.blocks[0].mlp
    ln2_of_zero = model.blocks[0].ln2.b  # LayerNorm of a zero vector
    expected_out = mlp(ln2_of_zero.expand(3, 9, -1))
    torch.testing.assert_close(patched["blocks.0.hook_mlp_out"], expected_out)
    torch.testing.assert_close(
        patched["blocks.0.hook_resid_post"],
        clean["blocks.0.hook_resid_mid"] + expected_out,
    )


def test_hook_mlp_in_is_refused_on_attention_only_models() -> None:
    model = model_with(attn_only=True)
    with pytest.raises(ValueError, match="use_hook_mlp_in needs an MLP"):
        model.set_use_hook_mlp_in(True)
    with pytest.raises(TypeError, match="must be a bool"):
        model.set_use_split_qkv_input(1)  # type: ignore[arg-type]


def test_unembed_hooks_and_hook_tokens() -> None:
    model = model_with(use_hook_tokens=True)
    logits, cache = model.run_with_cache(TOKENS)
    torch.testing.assert_close(cache["unembed.hook_out"], logits)
    torch.testing.assert_close(
        cache["unembed.hook_in"],
        cache["ln_final.hook_normalized"] * model.ln_final.w + model.ln_final.b,
    )
    assert torch.equal(cache["hook_tokens"], TOKENS)
    replaced = (TOKENS + 1) % 20
    with torch.no_grad():
        patched = model.run_with_hooks(
            TOKENS, fwd_hooks=[("hook_tokens", lambda t, hook: replaced)]
        )
        torch.testing.assert_close(patched, model(replaced))
    with pytest.raises(ValueError, match="hook_tokens output"):
        model.run_with_hooks(TOKENS, fwd_hooks=[("hook_tokens", lambda t, hook: t + 100)])
    assert "hook_tokens" not in dict(model_with().hook_dict)


def test_switches_send_every_block_down_the_hooked_path(monkeypatch: pytest.MonkeyPatch) -> None:
    model = model_with().train()  # the fast path runs in train mode only
    calls = []
    original = fast_path.block_forward
    monkeypatch.setattr(
        fast_path, "block_forward", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    with torch.no_grad():
        model(TOKENS)
        assert len(calls) == 2
        for switch in SWITCHES:
            getattr(model, switch)(True)
            model(TOKENS)
            getattr(model, switch)(False)
    assert len(calls) == 2


# --- aliasing: no hook sees our storage, no cache changes after the run ---
ALL_SWITCHES = dict(use_split_qkv_input=True, use_hook_mlp_in=True, use_attn_result=True)
ALIAS_CONFIGS = {
    "standard": dict(ALL_SWITCHES, use_hook_tokens=True),
    "shortformer": dict(ALL_SWITCHES, positional_embedding_type="shortformer"),
    "attn_in_no_ln": dict(attn_only=True, normalization_type=None, use_attn_in=True),
}


def float_hook_names(model: HookedTransformer) -> list[str]:
    _, cache = model.run_with_cache(TOKENS)
    return [name for name, x in cache.items() if x.is_floating_point()]


@pytest.mark.parametrize("name", sorted(ALIAS_CONFIGS))
def test_a_cache_never_changes_after_the_run(name: str) -> None:
    model = model_with(**ALIAS_CONFIGS[name])
    _, cache = model.run_with_cache(TOKENS)
    frozen = {k: v.clone() for k, v in cache.items()}
    with torch.no_grad():  # what an optimizer step does
        for p in model.parameters():
            p.add_(1.0)
    model(TOKENS)
    for key, value in frozen.items():
        assert torch.equal(cache[key], value), f"{key} changed after the run"


@pytest.mark.parametrize("name", sorted(ALIAS_CONFIGS))
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_an_in_place_hook_edit_never_reaches_a_parameter(name: str, grad: bool) -> None:
    """Every float hook edits its tensor in place (and returns nothing, so TransformerLens keeps
    the edited tensor); no parameter may change. One run edits at every hook at once; if that
    changes a weight, each hook is tried alone to name the culprit."""
    model = model_with(**ALIAS_CONFIGS[name])
    names = float_hook_names(model)
    assert "hook_embed" in names and "blocks.1.attn.hook_pattern" in names
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    tokens = TOKENS.clone()

    def edit(x: torch.Tensor, hook: object) -> None:
        x.add_(1.0)

    def changed() -> list[str]:
        return [k for k, v in model.state_dict().items() if not torch.equal(v, weights[k])]

    with torch.set_grad_enabled(grad):
        model.run_with_hooks(tokens, fwd_hooks=[(n, edit) for n in names])
    if changed():
        culprits = []
        for hook_name in names:
            with torch.no_grad():
                for k, v in model.state_dict().items():
                    v.copy_(weights[k])
                model.run_with_hooks(tokens, fwd_hooks=[(hook_name, edit)])
            if changed():
                culprits.append(f"{hook_name} -> {changed()}")
        pytest.fail(f"in-place hook edits reached parameters: {culprits}")
    assert torch.equal(tokens, TOKENS)


def test_an_in_place_edit_of_the_positions_stays_in_its_batch_element() -> None:
    model = model_with()

    def edit_first(x: torch.Tensor, hook: object) -> None:
        x[0].add_(5.0)

    _, clean = model.run_with_cache(TOKENS)
    with model.hooks(fwd_hooks=[("hook_pos_embed", edit_first)]):
        _, edited = model.run_with_cache(TOKENS)
    torch.testing.assert_close(edited["hook_pos_embed"][1:], clean["hook_pos_embed"][1:])
    torch.testing.assert_close(edited["hook_pos_embed"][0], clean["hook_pos_embed"][0] + 5.0)


def test_hook_tokens_edit_never_reaches_the_callers_tokens() -> None:
    model = model_with(use_hook_tokens=True)
    tokens = TOKENS.clone()
    model.run_with_hooks(tokens, fwd_hooks=[("hook_tokens", lambda t, hook: t.zero_())])
    assert torch.equal(tokens, TOKENS)
