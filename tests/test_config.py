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
