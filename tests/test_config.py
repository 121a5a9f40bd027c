import pytest

from circuits import ModelConfig


def test_derived_fields():
    cfg = ModelConfig(n_layers=2, d_model=64, n_ctx=32, d_vocab=10, n_heads=4)
    assert cfg.d_head == 16
    assert cfg.d_mlp == 256
    assert cfg.d_vocab_out == 10
    assert cfg.init_range == pytest.approx(0.8 / 8)
    assert cfg.n_params == 2 * (4 * 4 * 64 * 16 + 2 * 64 * 256)


def test_attn_only_has_no_mlp():
    cfg = ModelConfig(n_layers=1, d_model=8, n_ctx=4, d_vocab=5, n_heads=2, attn_only=True)
    assert cfg.d_mlp is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(d_mlp=32, attn_only=True), "d_mlp=32 contradicts attn_only"),
        (dict(n_heads=3), "not divisible by n_heads"),
        (dict(act_fn="swish"), "unknown act_fn"),
        (dict(normalization_type="RMSNorm"), "unknown normalization_type"),
        (dict(positional_embedding_type="alibi"), "unknown positional_embedding_type"),
        (dict(n_layers=0), "n_layers must be positive"),
        (dict(d_model=-4), "d_model must be positive"),
        (dict(n_ctx=2.5), "n_ctx must be an int"),
        (dict(d_head=0), "d_head must be positive"),
        (dict(eps=0.0), "eps must be a positive"),
        (dict(attn_only="yes"), "attn_only must be a bool"),
    ],
)
def test_contradictions_fail_at_construction(kwargs, message):
    base = dict(n_layers=2, d_model=16, n_ctx=8, d_vocab=10, n_heads=4)
    base.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ModelConfig(**base)


def test_round_trip_and_unknown_fields(tmp_path):
    cfg = ModelConfig(n_layers=2, d_model=16, n_ctx=8, d_vocab=10, n_heads=4, seed=5)
    path = tmp_path / "config.json"
    cfg.save(path)
    assert ModelConfig.load(path) == cfg
    with pytest.raises(ValueError, match=r"unknown model config field.*n_expert"):
        ModelConfig.from_dict({**cfg.to_dict(), "n_expert": 2})


def test_frozen():
    cfg = ModelConfig(n_layers=1, d_model=8, n_ctx=4, d_vocab=5, n_heads=2)
    with pytest.raises(AttributeError):
        cfg.d_model = 16  # type: ignore[misc]


BASE = dict(n_layers=2, d_model=32, n_ctx=8, d_vocab=32, n_heads=4)


def test_replace_derives_again_what_was_derived():
    cfg = ModelConfig(**BASE)
    wider = cfg.replace(d_vocab=64, d_model=64)
    assert (wider.d_vocab_out, wider.d_head, wider.d_mlp) == (64, 16, 256)
    assert wider.init_range == pytest.approx(0.8 / 8)
    assert wider.attn_scale == pytest.approx(4.0)
    assert wider == ModelConfig(**{**BASE, "d_vocab": 64, "d_model": 64})
    assert cfg.replace(attn_only=True).d_mlp is None
    assert cfg.replace(attn_only=True).replace(attn_only=False).d_mlp == 128


def test_replace_keeps_what_was_given():
    cfg = ModelConfig(**BASE, d_head=4, d_mlp=10, init_range=0.5, d_vocab_out=7, attn_scale=3.0)
    wider = cfg.replace(d_model=64, d_vocab=64)
    assert (wider.d_head, wider.d_mlp, wider.init_range) == (4, 10, 0.5)
    assert (wider.d_vocab_out, wider.attn_scale) == (7, 3.0)
    with pytest.raises(ValueError, match="unknown model config field"):
        cfg.replace(d_modle=3)


def test_a_loaded_config_keeps_its_values(tmp_path):
    cfg = ModelConfig(**BASE)
    cfg.save(tmp_path / "c.json")
    assert ModelConfig.load(tmp_path / "c.json") == cfg
    assert "device" not in cfg.to_dict()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(init_range=float("inf")), "init_range must be a positive finite"),
        (dict(init_range=float("nan")), "init_range must be a positive finite"),
        (dict(eps=float("inf")), "eps must be a positive finite"),
        (dict(attn_scale=0.0), "attn_scale must be a positive finite"),
        (dict(n_key_value_heads=3), "not a multiple of n_key_value_heads"),
        (dict(n_key_value_heads=2, use_attn_in=True), "use_attn_in does not apply"),
        (dict(positional_embedding_type="rotary", rotary_dim=3), "rotary_dim=3 must be even"),
        (dict(rotary_dim=16), "at most d_head"),
        (dict(attn_only=True, use_hook_mlp_in=True), "use_hook_mlp_in needs an MLP"),
    ],
)
def test_more_contradictions_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**{**BASE, **kwargs})


def test_literal_types_are_the_accepted_values():
    import typing

    from circuits.config import ACT_FNS, NORM_TYPES, POS_EMBED_TYPES

    hints = typing.get_type_hints(ModelConfig)
    assert set(typing.get_args(hints["act_fn"])) == set(ACT_FNS)
    assert set(typing.get_args(hints["positional_embedding_type"])) == set(POS_EMBED_TYPES)
    flat = set()
    for arg in typing.get_args(hints["normalization_type"]):
        flat |= set(typing.get_args(arg)) or {None}
    assert flat == set(NORM_TYPES)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        dict(attn_only=True, normalization_type=None),
        dict(normalization_type="RMS", positional_embedding_type="rotary", n_key_value_heads=2),
        dict(act_fn="solu_ln", d_vocab_out=7, positional_embedding_type="shortformer"),
        dict(normalization_type="LNPre", act_fn="solu_ln"),
    ],
)
def test_parameter_estimate_is_exact(kwargs):
    from circuits import HookedTransformer

    cfg = ModelConfig(**{**BASE, **kwargs})
    assert HookedTransformer(cfg).n_params_total == cfg.n_params_estimate()
    assert cfg.memory_estimate(training=True) > cfg.memory_estimate(training=False)
    assert cfg.memory_estimate(training=False) >= 4 * cfg.n_params_estimate()


def test_sizes_that_cannot_fit_are_refused_before_allocation():
    from circuits import HookedTransformer

    huge = ModelConfig(**{**BASE, "d_model": 1_000_000})
    with pytest.raises(ValueError, match=r"does not fit: 24,000,\d{3},\d{3},\d{3} parameters"):
        huge.check_fits()
    with pytest.raises(ValueError, match="does not fit"):
        HookedTransformer(huge)
    small = ModelConfig(**BASE)
    small.check_fits(available_bytes=small.memory_estimate(training=False))
    with pytest.raises(ValueError, match="to train"):
        small.check_fits(available_bytes=small.memory_estimate(training=False), training=True)


def test_gpt2_small_shape_fits_a_24_gb_machine_for_inference():
    # The logits are the only vocabulary-wide activation; counting them once per layer
    # estimated 21 GiB and refused GPT-2 small outright.
    cfg = ModelConfig(n_layers=12, d_model=768, n_heads=12, d_vocab=50257, n_ctx=1024, d_mlp=3072)
    assert cfg.memory_estimate(training=False) < 6 * 2**30
    cfg.check_fits(24 * 2**30)
