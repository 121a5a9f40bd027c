"""``HookedTransformerConfig``: TL3 3.5.1's fields, defaults and derivations (from its
docstring and ``__post_init__``), and ``HookedTransformer(cfg | dict, tokenizer=...)``."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from circuits import HookedTransformer, HookedTransformerConfig, ModelConfig

BASE = dict(n_layers=2, d_vocab=100, d_model=16, n_ctx=12, d_head=4)


def test_tl3_defaults_and_derivations() -> None:
    cfg = HookedTransformerConfig(**BASE)
    assert cfg.n_heads == 16 // 4  # from d_head
    assert cfg.d_mlp == 4 * 16
    assert cfg.act_fn == "relu" and cfg.normalization_type == "LN"
    assert math.isclose(cfg.initializer_range, 0.8 / math.sqrt(16))
    assert cfg.dtype == torch.float32 and cfg.seed is None and cfg.init_mode == "gpt2"
    assert cfg.device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert cfg.attention_dir == "causal" and cfg.positional_embedding_type == "standard"
    assert cfg.d_vocab_out == 100 and math.isclose(cfg.attn_scale, 2.0)
    assert cfg.default_prepend_bos is True and cfg.model_name == "custom"
    assert cfg.n_params == 2 * (16 * 4 * 4 * 4) + 2 * (16 * 64 * 2)
    rotary = HookedTransformerConfig(**BASE, positional_embedding_type="rotary")
    assert rotary.rotary_dim == 4
    xavier = HookedTransformerConfig(**BASE, init_mode="xavier_uniform")
    assert xavier.initializer_range == 1.0  # a gain for the other init modes
    assert HookedTransformerConfig(**BASE, use_attn_scale=False).attn_scale == -1.0


def test_unwrap_from_dict_and_layer_norm_activation() -> None:  # TL3's own unit tests
    cfg = HookedTransformerConfig(**BASE, attn_only=True)
    assert HookedTransformerConfig.unwrap(cfg) is cfg
    assert isinstance(
        HookedTransformerConfig.unwrap(dict(BASE, attn_only=True)), HookedTransformerConfig
    )
    assert HookedTransformerConfig.unwrap(dict(BASE, act_fn="solu_ln")).is_layer_norm_activation()
    assert not HookedTransformerConfig.unwrap(dict(BASE, act_fn="relu")).is_layer_norm_activation()
    assert "HookedTransformerConfig" in repr(cfg) and cfg.to_dict()["d_model"] == 16


def test_seed_seeds_everything_as_tl3() -> None:
    HookedTransformerConfig(**BASE, seed=5)
    a = (torch.rand(1).item(), random.random(), np.random.rand())
    HookedTransformerConfig(**BASE, seed=5)
    assert (torch.rand(1).item(), random.random(), np.random.rand()) == a


def test_converts_to_model_config() -> None:
    ours = HookedTransformerConfig(**BASE, seed=1, use_attn_result=True).to_model_config()
    assert isinstance(ours, ModelConfig)
    assert (ours.n_heads, ours.d_head, ours.d_mlp, ours.act_fn) == (4, 4, 64, "relu")
    assert ours.use_attn_result and ours.seed == 1 and math.isclose(ours.init_range, 0.2)
    attn_only = HookedTransformerConfig(**BASE, attn_only=True).to_model_config()
    assert attn_only.attn_only and attn_only.d_mlp is None
    assert HookedTransformerConfig(**BASE, use_attn_scale=False).to_model_config().attn_scale == 1


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("num_experts", 4, "mixture of experts"),
        ("use_local_attn", True, "local attention"),
        ("attn_scores_soft_cap", 50.0, "soft caps"),
        ("output_logits_soft_cap", 30.0, "soft caps"),
        ("gated_mlp", True, "gated"),
        ("parallel_attn_mlp", True, "parallel"),
        ("final_rms", True, "RMSNorm"),
        ("use_yarn_rope", True, "YaRN"),
        ("trust_remote_code", True, "own code"),
    ],
)
def test_a_feature_we_lack_is_refused_by_name(field: str, value: object, words: str) -> None:
    kwargs = dict(BASE, **{field: value})
    if field == "num_experts":
        kwargs["experts_per_token"] = 2
    if field == "use_local_attn":
        kwargs.update(window_size=4, attn_types=["local", "global"])
    with pytest.raises(ValueError, match=field) as err:
        HookedTransformerConfig(**kwargs)
    assert words in str(err.value)


@pytest.mark.parametrize(
    "kwargs",
    [dict(act_fn="silu"), dict(positional_embedding_type="alibi"), dict(init_mode="nope"),
     dict(attention_dir="sideways"), dict(dtype="int8"), dict(seed="abc")],
)  # fmt: skip
def test_bad_values_raise_value_error(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        HookedTransformerConfig(**dict(BASE, **kwargs))


def test_hooked_transformer_takes_a_tl3_config_or_dict() -> None:
    torch.manual_seed(0)
    a = HookedTransformer(HookedTransformerConfig(**BASE, device="cpu"))
    torch.manual_seed(0)
    b = HookedTransformer(dict(BASE, device="cpu"))  # seed=None: torch's global generator
    assert isinstance(a.cfg, ModelConfig) and a.cfg.act_fn == "relu"
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert a.tokenizer is None
    c = HookedTransformer(dict(BASE, device="cpu", seed=3))
    d = HookedTransformer(dict(BASE, device="cpu", seed=3))
    assert torch.equal(c.W_Q, d.W_Q) and not torch.equal(a.W_Q, c.W_Q)
    # GPT-2 init: weight matrices N(0, initializer_range), biases zero.
    big = HookedTransformer(dict(BASE, d_model=64, d_head=16, n_layers=4, device="cpu", seed=0))
    assert abs(big.W_in.std().item() - 0.8 / math.sqrt(64)) < 0.01
    assert torch.count_nonzero(big.b_in) == 0
    with pytest.raises(ValueError, match="from_pretrained"):
        HookedTransformer("gpt2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="d_vocab"):
        HookedTransformer(dict(BASE, d_vocab=-1, device="cpu"))


def test_dtype_init_mode_and_move_to_device() -> None:
    model = HookedTransformer(dict(BASE, device="cpu", dtype=torch.float64, seed=0))
    assert model.W_E.dtype == torch.float64
    xavier = HookedTransformer(dict(BASE, device="cpu", init_mode="xavier_normal", seed=0))
    fan_in, fan_out = 16, 64  # W_in [d_model, d_mlp]: std = gain * sqrt(2 / (in + out))
    assert abs(xavier.W_in.std().item() - math.sqrt(2 / (fan_in + fan_out))) < 0.02
    meta = HookedTransformer(dict(BASE, device="meta"), move_to_device=False)
    assert meta.W_E.device.type == "cpu"


def test_tokenizer_sets_d_vocab_and_padding_side(standin_hub) -> None:
    from circuits.pretrained import load_tokenizer

    tok = load_tokenizer("NeelNanda/gpt-neox-tokenizer-digits")
    model = HookedTransformer(
        dict(BASE, d_vocab=-1, device="cpu"), tokenizer=tok, default_padding_side="left"
    )
    assert model.cfg.d_vocab == max(tok.get_vocab().values()) + 1
    assert model.tokenizer.padding_side == "left"
    assert model.to_tokens("hello")[0, 0].item() == tok.bos_token_id
    named = HookedTransformer(
        dict(BASE, d_vocab=-1, device="cpu", tokenizer_name="NeelNanda/gpt-neox-tokenizer-digits")
    )
    assert named.cfg.d_vocab == model.cfg.d_vocab and named.tokenizer is not None
