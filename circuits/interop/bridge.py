"""To and from TransformerLens 4's ``TransformerBridge`` native model, with identical numerics.

``to_bridge(model)`` boots a native bridge (``TransformerBridge.boot_native``; no Hugging Face
download) and loads our weights through TransformerLens's own ``convert_tl_checkpoint``, so any
TransformerLens 4 tool can take a model trained here. ``from_bridge(bridge)`` goes back.

Logits agree to float32 rounding, and so does every hook the two models share, except one:
the bridge's ``attn.hook_attn_scores`` holds the post-softmax pattern (TransformerLens 4.3),
where ours holds the masked pre-softmax scores, as in TransformerLens 3.
"""

from __future__ import annotations

import math
from typing import Any

import einops
import torch
from torch import Tensor

from circuits.config import ModelConfig
from circuits.model import HookedTransformer, capabilities

# Hooks whose meaning differs between the two models (see the module docstring).
DIFFERENT_HOOKS = ("hook_attn_scores",)
# What the native bridge computes as we do (activations: gelu, gelu_new, relu) is the
# "tl4_bridge" capability of circuits.model.capabilities (checked by tests/test_interop_bridge.py).


def bridge_config(cfg: ModelConfig) -> Any:
    """The ``TransformerBridgeConfig`` of a native bridge with the architecture of ``cfg``."""
    from transformer_lens import TransformerBridgeConfig

    if not isinstance(cfg, ModelConfig):
        raise TypeError(f"cfg must be a circuits ModelConfig, got {type(cfg).__name__}")
    capabilities.require(cfg, "tl4_bridge", "convert to a TransformerBridge")
    return TransformerBridgeConfig(
        d_model=cfg.d_model,
        d_head=cfg.d_head,
        n_heads=cfg.n_heads,
        n_layers=cfg.n_layers,
        n_ctx=cfg.n_ctx,
        d_vocab=cfg.d_vocab,
        d_vocab_out=cfg.d_vocab_out,
        d_mlp=cfg.d_mlp,
        attn_only=cfg.attn_only,
        act_fn=cfg.act_fn,
        normalization_type=cfg.normalization_type,
        positional_embedding_type="standard",
        eps=cfg.eps,
        use_attn_scale=True,
        attn_scale=cfg.attn_scale,  # carried over: a default bridge divides by sqrt(d_head)
        seed=cfg.seed,
        device="cpu",
        default_prepend_bos=False,
    )


def to_bridge(model: HookedTransformer) -> Any:
    """A TransformerLens 4 ``TransformerBridge`` (native) computing what ``model`` computes
    (its ``attn_scale`` included).

    Raises:
        TypeError: ``model`` is not our ``HookedTransformer``.
        ValueError: ``model`` uses what the native bridge lacks: shortformer or rotary
            positions, grouped-query attention, ``solu_ln`` or other activations, RMSNorm or
            folded (``LNPre``) norms; named.
    """
    from transformer_lens import TransformerBridge
    from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint

    if not isinstance(model, HookedTransformer):
        raise TypeError(f"model must be a circuits HookedTransformer, got {type(model).__name__}")
    bridge = TransformerBridge.boot_native(bridge_config(model.cfg))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    bridge.load_state_dict(convert_tl_checkpoint(state, bridge.cfg), strict=True)
    return bridge.eval()


def _config_from_bridge(bcfg: Any) -> ModelConfig:
    unsupported = {
        "positional_embedding_type": "standard",
        "gated_mlp": False,
        "final_rms": False,
        "n_key_value_heads": None,
        "attention_dir": "causal",
        "parallel_attn_mlp": False,
        "use_qk_norm": False,
        "use_normalization_before_and_after": False,
    }
    for name, supported in unsupported.items():
        value = getattr(bcfg, name, supported)
        if value != supported:
            raise ValueError(f"cannot convert a bridge with {name}={value!r} (needs {supported!r})")
    for name in ("attn_scores_soft_cap", "output_logits_soft_cap"):
        if getattr(bcfg, name, -1.0) > 0:
            raise ValueError(f"cannot convert a bridge with {name}={getattr(bcfg, name)}")
    # The native attention divides by attn_scale when it is set and use_attn_scale is on,
    # else by sqrt(d_head) (use_attn_scale=False does not mean "unscaled" there).
    scale = getattr(bcfg, "attn_scale", -1.0)
    if not (getattr(bcfg, "use_attn_scale", True) and scale > 0):
        scale = math.sqrt(bcfg.d_head)
    if bcfg.normalization_type not in (None, "LN"):
        raise ValueError(
            f"cannot convert a bridge with normalization_type={bcfg.normalization_type!r} "
            "(needs None or 'LN')"
        )
    return ModelConfig(
        n_layers=bcfg.n_layers,
        d_model=bcfg.d_model,
        n_ctx=bcfg.n_ctx,
        d_vocab=bcfg.d_vocab,
        n_heads=bcfg.n_heads,
        d_head=bcfg.d_head,
        attn_only=bool(bcfg.attn_only),
        d_mlp=None if bcfg.attn_only else bcfg.d_mlp,
        act_fn=bcfg.act_fn,
        normalization_type=bcfg.normalization_type,
        eps=float(bcfg.eps),
        seed=bcfg.seed if isinstance(bcfg.seed, int) else 0,
        d_vocab_out=bcfg.d_vocab_out if bcfg.d_vocab_out > 0 else bcfg.d_vocab,
        attn_scale=float(scale),
    )


def bridge_to_tl3_state_dict(
    bridge_state: dict[str, Tensor], cfg: ModelConfig
) -> dict[str, Tensor]:
    """Renames and reshapes a native bridge state dict into TransformerLens 3.x layout."""
    h = cfg.n_heads
    sd = bridge_state
    out = {
        "embed.W_E": sd["embed.weight"],
        "pos_embed.W_pos": sd["pos_embed.weight"],
        "unembed.W_U": sd["unembed.weight"].T,
        "unembed.b_U": sd.get("unembed.bias", torch.zeros(cfg.d_vocab_out)),
    }
    for layer in range(cfg.n_layers):
        b = f"blocks.{layer}."
        for x in "qkv":
            out[f"{b}attn.W_{x.upper()}"] = einops.rearrange(
                sd[f"{b}attn.{x}.weight"], "(h e) d -> h d e", h=h
            )
            out[f"{b}attn.b_{x.upper()}"] = einops.rearrange(
                sd[f"{b}attn.{x}.bias"], "(h e) -> h e", h=h
            )
        out[b + "attn.W_O"] = einops.rearrange(sd[b + "attn.o.weight"], "d (h e) -> h e d", h=h)
        out[b + "attn.b_O"] = sd[b + "attn.o.bias"]
        norms = ["ln1"] if cfg.attn_only else ["ln1", "ln2"]
        if not cfg.attn_only:
            out[b + "mlp.W_in"] = sd[b + "mlp.in.weight"].T
            out[b + "mlp.b_in"] = sd[b + "mlp.in.bias"]
            out[b + "mlp.W_out"] = sd[b + "mlp.out.weight"].T
            out[b + "mlp.b_out"] = sd[b + "mlp.out.bias"]
        if cfg.normalization_type == "LN":
            for ln in norms:
                out[f"{b}{ln}.w"] = sd[f"{b}{ln}.weight"]
                out[f"{b}{ln}.b"] = sd[f"{b}{ln}.bias"]
    if cfg.normalization_type == "LN":
        out["ln_final.w"] = sd["ln_final.weight"]
        out["ln_final.b"] = sd["ln_final.bias"]
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def from_bridge(bridge: Any) -> HookedTransformer:
    """Our model with the weights of a native ``TransformerBridge`` (e.g. one trained in TL4).

    Raises:
        ValueError: The bridge uses something our model lacks (rotary, RMSNorm, gated MLPs,
            grouped-query attention, soft caps, a non-standard attention scale, ...), named.
    """
    from transformer_lens import TransformerBridge

    if isinstance(bridge, HookedTransformer):
        raise TypeError("from_bridge takes a TransformerBridge; this is already a circuits model")
    if not isinstance(bridge, TransformerBridge):
        raise TypeError(f"from_bridge takes a TransformerBridge, got {type(bridge).__name__}")
    cfg = _config_from_bridge(bridge.cfg)
    model = HookedTransformer(cfg)
    state = bridge_to_tl3_state_dict(dict(bridge.state_dict()), cfg)
    model.load_state_dict(state, strict=True)
    return model.eval()
