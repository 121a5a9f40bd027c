"""Our full (LN + MLP) model to and from Hugging Face ``GPT2LMHeadModel``: identical logits.

Hugging Face's GPT-2 is an implementation independent of ours, so agreement in both directions
checks the layout conversion and our forward pass at once.
"""

from __future__ import annotations

import pytest
import torch
from helpers import perturbed_model
from transformers import GPT2Config, GPT2LMHeadModel

from circuits import HookedTransformer
from circuits.interop.gpt2 import from_gpt2, to_gpt2

ATOL = 1e-5


def gpt2_ready(**overrides: object) -> HookedTransformer:
    """A perturbed full model with ``b_U = 0`` (GPT-2's lm_head has no bias)."""
    model = perturbed_model(**overrides)
    with torch.no_grad():
        model.unembed.b_U.zero_()
    return model


def random_ids(model: HookedTransformer, batch: int = 3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, model.cfg.d_vocab, (batch, model.cfg.n_ctx), generator=gen)


def assert_same_outputs(ours: HookedTransformer, hf: GPT2LMHeadModel) -> None:
    ids = random_ids(ours)
    with torch.no_grad():
        out = hf(input_ids=ids, output_hidden_states=True)
        logits, cache = ours.run_with_cache(ids)
        fast = ours(ids)
    torch.testing.assert_close(out.logits, logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.logits, fast, atol=ATOL, rtol=0)
    # Hugging Face's hidden_states[l] is the input of block l (then ln_f's output).
    for layer in range(ours.cfg.n_layers):
        torch.testing.assert_close(
            out.hidden_states[layer], cache[f"blocks.{layer}.hook_resid_pre"], atol=ATOL, rtol=0
        )


@pytest.mark.parametrize("act_fn", ["gelu_new", "gelu", "relu"])
def test_to_gpt2_gives_identical_logits(act_fn: str) -> None:
    ours = gpt2_ready(act_fn=act_fn, n_layers=3, d_mlp=48)
    hf = to_gpt2(ours)
    assert isinstance(hf, GPT2LMHeadModel) and not hf.training
    assert_same_outputs(ours, hf)


def random_gpt2(activation_function: str = "gelu_new") -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=40,
        n_positions=16,
        n_embd=48,
        n_layer=2,
        n_head=3,
        n_inner=None,
        activation_function=activation_function,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=None,
        eos_token_id=None,
    )
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(config).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # GPT-2 inits biases to 0 and LN gains to 1: perturb them
        for p in hf.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return hf


@pytest.mark.parametrize("act", ["gelu_new", "gelu", "relu"])
def test_from_gpt2_gives_identical_logits(act: str) -> None:
    hf = random_gpt2(act)
    ours = from_gpt2(hf)
    c = ours.cfg
    assert (c.n_layers, c.d_model, c.n_heads, c.d_head, c.d_mlp, c.n_ctx, c.d_vocab) == (
        2,
        48,
        3,
        16,
        192,
        16,
        40,
    )
    # Tied embeddings (GPT-2's default) come across as two equal matrices.
    assert torch.equal(ours.W_U, ours.W_E.T)
    assert_same_outputs(ours, hf)


def test_round_trips_are_exact() -> None:
    ours = gpt2_ready()
    back = from_gpt2(to_gpt2(ours))
    assert back.cfg == ours.cfg.replace(seed=0)  # the init seed does not travel
    for name, tensor in ours.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name
    hf = random_gpt2()
    again = to_gpt2(from_gpt2(hf))
    for name, tensor in hf.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor), name


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (dict(attn_only=True), "needs MLPs and LayerNorm"),
        (dict(normalization_type=None), "needs MLPs and LayerNorm"),
        (dict(positional_embedding_type="shortformer"), "shortformer"),
        (dict(d_head=4), r"n_heads \* d_head = 16 != d_model=32"),
        (dict(d_vocab_out=30), "d_vocab_out=30 != d_vocab=20"),
        (dict(act_fn="solu_ln"), "act_fn='solu_ln'"),
        (dict(n_key_value_heads=2), "grouped-query"),
        (dict(positional_embedding_type="rotary"), "rotary"),
        (dict(attn_scale=2.0), "attn_scale=2.0"),
    ],
)
def test_what_gpt2_cannot_express_is_refused(overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        to_gpt2(gpt2_ready(**overrides))


def test_unembedding_bias_is_refused_not_dropped() -> None:
    with pytest.raises(ValueError, match="b_U is non-zero"):
        to_gpt2(perturbed_model())


def test_unsupported_gpt2_variants_are_refused() -> None:
    hf = random_gpt2()
    hf.config.scale_attn_by_inverse_layer_idx = True
    with pytest.raises(ValueError, match="scale_attn_by_inverse_layer_idx=True"):
        from_gpt2(hf)
    with pytest.raises(ValueError, match="activation_function='silu'"):
        from_gpt2(random_gpt2("silu"))


def test_an_unscaled_model_converts_with_scale_attn_weights_off() -> None:
    """Issue 20 (silent 9): attn_scale was dropped; GPT-2 can say "divide by 1"."""
    ours = gpt2_ready(attn_scale=1.0)
    hf = to_gpt2(ours)
    assert hf.config.scale_attn_weights is False
    assert_same_outputs(ours, hf)  # Hugging Face's own forward, unscaled
    back = from_gpt2(hf)
    assert back.cfg.attn_scale == 1.0
    torch.testing.assert_close(back(random_ids(ours)), ours(random_ids(ours)), atol=ATOL, rtol=0)


def test_from_gpt2_takes_only_a_gpt2_model() -> None:
    with pytest.raises(TypeError, match=r"from_pretrained\('gpt2'\)"):
        from_gpt2("gpt2")
    with pytest.raises(TypeError, match="got HookedTransformer"):
        from_gpt2(gpt2_ready())
