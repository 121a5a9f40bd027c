"""model.capabilities: one declarative answer to "does this config support X", equal to the
hand-written checks it replaced (spelled out here as they were)."""

from __future__ import annotations

import itertools
import math

import pytest

from circuits.config import ModelConfig
from circuits.model import capabilities as caps


def configs() -> list[ModelConfig]:
    out = []
    for norm, pos, act, gqa, attn_only, split in itertools.product(
        (None, "LN", "LNPre", "RMS", "RMSPre"),
        ("standard", "shortformer", "rotary"),
        ("gelu", "relu", "solu_ln"),
        (None, 2),
        (False, True),
        (False, True),
    ):
        out.append(
            ModelConfig(
                n_layers=2, d_model=16, n_ctx=8, d_vocab=10, n_heads=4, normalization_type=norm,
                positional_embedding_type=pos, act_fn=act, n_key_value_heads=gqa,
                attn_only=attn_only, use_split_qkv_input=split,
            )
        )  # fmt: skip
    return out


def old_fast_path(cfg: ModelConfig) -> bool:  # fast_path.supports before capabilities
    return (
        cfg.normalization_type in (None, "LN")
        and cfg.positional_embedding_type in ("standard", "shortformer")
        and cfg.act_fn in ("gelu", "gelu_new", "relu")
        and cfg.n_key_value_heads is None
        and not (cfg.use_split_qkv_input or cfg.use_attn_in or cfg.use_hook_mlp_in)
    )


def old_gpt2(cfg: ModelConfig) -> bool:  # interop.gpt2.gpt2_config's checks
    return (
        not cfg.attn_only
        and cfg.normalization_type == "LN"
        and cfg.positional_embedding_type == "standard"
        and cfg.n_heads * cfg.d_head == cfg.d_model
        and cfg.d_vocab_out == cfg.d_vocab
        and cfg.act_fn in ("gelu", "gelu_new", "relu")
        and cfg.n_key_value_heads is None
        and (math.isclose(cfg.attn_scale, math.sqrt(cfg.d_head)) or cfg.attn_scale == 1.0)
    )


def old_bridge(cfg: ModelConfig) -> bool:  # interop.bridge.bridge_config's checks
    return (
        cfg.positional_embedding_type == "standard"
        and cfg.n_key_value_heads is None
        and cfg.act_fn in ("gelu", "gelu_new", "relu")
        and cfg.normalization_type in (None, "LN")
        and not (cfg.d_head > 1 and math.isclose(cfg.attn_scale, 1.0))
    )


def old_edge_graph(cfg: ModelConfig) -> bool:  # discovery.graph.check_supported's checks
    kv, pos = cfg.n_key_value_heads, cfg.positional_embedding_type
    return pos in ("standard", "shortformer") and kv in (None, cfg.n_heads)


def test_capabilities_equal_the_checks_they_replaced() -> None:
    for cfg in configs():
        have = caps.capabilities(cfg)
        assert ("fast_path" in have) == old_fast_path(cfg), cfg
        assert ("gpt2" in have) == old_gpt2(cfg), cfg
        assert ("tl4_bridge" in have) == old_bridge(cfg), cfg
        assert ("edge_graph" in have) == old_edge_graph(cfg), cfg
        norm, pos = cfg.normalization_type, cfg.positional_embedding_type
        assert ("fold_ln" in have) == (norm in ("LN", "RMS") and pos != "shortformer")
        assert ("center_writing_weights" in have) == (cfg.normalization_type in ("LN", "LNPre"))
        assert ("refactor_factored_attn_matrices" in have) == (
            cfg.positional_embedding_type != "rotary" and cfg.n_key_value_heads is None
        )


def test_require_names_every_unmet_requirement() -> None:
    cfg = ModelConfig(
        n_layers=1, d_model=16, n_ctx=8, d_vocab=10, n_heads=4, attn_only=True,
        positional_embedding_type="rotary", n_key_value_heads=2,
    )  # fmt: skip
    with pytest.raises(ValueError) as e:
        caps.require(cfg, "gpt2", "convert to GPT-2")
    message = str(e.value)
    assert message.startswith("cannot convert to GPT-2: needs MLPs and LayerNorm")
    assert "positional_embedding_type='rotary'" in message and "n_key_value_heads=2" in message
    with pytest.raises(ValueError, match="unknown capability 'flying'"):
        caps.supports(cfg, "flying")


def test_bidirectional_attention_has_no_causal_only_capability() -> None:
    # Discovery's patched forward, the fast path and both exports mask causally.
    cfg = ModelConfig(
        n_layers=1, d_model=16, n_ctx=8, d_vocab=10, n_heads=4, attention_dir="bidirectional"
    )
    have = caps.capabilities(cfg)
    for name in ("edge_graph", "fast_path", "gpt2", "tl4_bridge"):
        assert name not in have, name
