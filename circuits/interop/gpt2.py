"""To and from Hugging Face ``GPT2LMHeadModel``: token ids in, identical logits out.

GPT-2 is our full model with LayerNorm, GELU MLPs and standard positional embeddings; the
differences are layout only. Hugging Face stores ``Conv1D`` weights as ``[in, out]`` and fuses
Q, K and V into one ``c_attn`` matrix; we store per-head ``W_Q [n_heads, d_model, d_head]``.
What GPT-2 cannot express is refused rather than approximated: an unembedding bias
(``lm_head`` has none), models without LayerNorm or MLPs, other activations (``solu_ln``...),
grouped-query or rotary attention, and an attention scale other than ``sqrt(d_head)`` (GPT-2's
``scale_attn_weights=True``) or 1 (``False``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import einops
import torch
from torch import Tensor

from circuits.config import ActFn, ModelConfig
from circuits.model import HookedTransformer, capabilities

# Our activation names -> Hugging Face's (same functions: exact erf GELU, tanh GELU, ReLU).
ACT_TO_HF: dict[ActFn, str] = {"gelu": "gelu", "gelu_new": "gelu_new", "relu": "relu"}
ACT_FROM_HF: dict[str, ActFn] = {v: k for k, v in ACT_TO_HF.items()}


def gpt2_config(cfg: ModelConfig) -> Any:
    """The ``GPT2Config`` of ``cfg``; ValueError naming whatever GPT-2 cannot express."""
    from transformers import GPT2Config

    if not isinstance(cfg, ModelConfig):
        raise TypeError(f"cfg must be a circuits ModelConfig, got {type(cfg).__name__}")
    capabilities.require(cfg, "gpt2", "convert to GPT-2")
    scaled = math.isclose(cfg.attn_scale, math.sqrt(cfg.d_head))  # else 1: unscaled
    return GPT2Config(
        vocab_size=cfg.d_vocab,
        n_positions=cfg.n_ctx,
        n_embd=cfg.d_model,
        n_layer=cfg.n_layers,
        n_head=cfg.n_heads,
        n_inner=cfg.d_mlp,
        activation_function=ACT_TO_HF[cfg.act_fn],
        layer_norm_epsilon=cfg.eps,
        scale_attn_weights=scaled,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=False,  # our W_U is its own matrix
        bos_token_id=None,
        eos_token_id=None,
    )


def to_gpt2(model: HookedTransformer) -> Any:
    """A ``transformers.GPT2LMHeadModel`` (eval mode) with ``model``'s weights.

    Raises:
        ValueError: ``model`` has a non-zero ``b_U``, no LayerNorm or MLPs, shortformer or
            rotary positions, grouped-query attention, an activation or attention scale GPT-2
            lacks, ``n_heads * d_head != d_model`` or ``d_vocab_out != d_vocab``.
    """
    from transformers import GPT2LMHeadModel

    if not isinstance(model, HookedTransformer):
        raise TypeError(f"model must be a circuits HookedTransformer, got {type(model).__name__}")
    cfg = model.cfg
    hf_cfg = gpt2_config(cfg)
    if bool(model.b_U.detach().abs().max() > 0):
        raise ValueError(
            "cannot convert to GPT-2: unembed.b_U is non-zero and GPT-2's lm_head has no bias"
        )
    hf = GPT2LMHeadModel(hf_cfg)
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    out = {
        "transformer.wte.weight": sd["embed.W_E"],
        "transformer.wpe.weight": sd["pos_embed.W_pos"],
        "transformer.ln_f.weight": sd["ln_final.w"],
        "transformer.ln_f.bias": sd["ln_final.b"],
        "lm_head.weight": sd["unembed.W_U"].T,
    }
    for layer in range(cfg.n_layers):
        b, h = f"blocks.{layer}.", f"transformer.h.{layer}."
        out[h + "attn.c_attn.weight"] = torch.cat(
            [einops.rearrange(sd[f"{b}attn.W_{x}"], "h d e -> d (h e)") for x in "QKV"], dim=1
        )
        out[h + "attn.c_attn.bias"] = torch.cat(
            [einops.rearrange(sd[f"{b}attn.b_{x}"], "h e -> (h e)") for x in "QKV"]
        )
        out[h + "attn.c_proj.weight"] = einops.rearrange(sd[b + "attn.W_O"], "h e d -> (h e) d")
        out[h + "attn.c_proj.bias"] = sd[b + "attn.b_O"]
        out[h + "mlp.c_fc.weight"] = sd[b + "mlp.W_in"]
        out[h + "mlp.c_fc.bias"] = sd[b + "mlp.b_in"]
        out[h + "mlp.c_proj.weight"] = sd[b + "mlp.W_out"]
        out[h + "mlp.c_proj.bias"] = sd[b + "mlp.b_out"]
        for ours, theirs in (("ln1", "ln_1"), ("ln2", "ln_2")):
            out[f"{h}{theirs}.weight"] = sd[f"{b}{ours}.w"]
            out[f"{h}{theirs}.bias"] = sd[f"{b}{ours}.b"]
    hf.load_state_dict({k: v.clone().contiguous() for k, v in out.items()}, strict=True)
    return hf.eval()


# GPT2Config's defaults, for a config.json that leaves a field out.
GPT2_DEFAULTS: dict[str, Any] = {
    "vocab_size": 50257,
    "n_positions": 1024,
    "n_embd": 768,
    "n_layer": 12,
    "n_head": 12,
    "n_inner": None,
    "activation_function": "gelu_new",
    "layer_norm_epsilon": 1e-5,
    "scale_attn_weights": True,
    "scale_attn_by_inverse_layer_idx": False,
    "reorder_and_upcast_attn": False,
    "add_cross_attention": False,
}


def config_from_gpt2(c: Any) -> ModelConfig:
    """Our config of a ``GPT2Config`` or of its ``config.json`` as a dict.

    Raises:
        ValueError: a field our model cannot reproduce (named), or sizes it refuses.
    """

    def get(name: str) -> Any:
        value = c.get(name) if isinstance(c, Mapping) else getattr(c, name, None)
        if value is None and name == "n_positions":  # older configs call it n_ctx
            value = c.get("n_ctx") if isinstance(c, Mapping) else getattr(c, "n_ctx", None)
        return GPT2_DEFAULTS[name] if value is None else value

    problems = []
    if get("activation_function") not in ACT_FROM_HF:
        problems.append(f"activation_function={get('activation_function')!r}")
    for name, supported in (
        ("scale_attn_by_inverse_layer_idx", False),
        ("reorder_and_upcast_attn", False),
        ("add_cross_attention", False),
    ):
        if get(name) != supported:
            problems.append(f"{name}={get(name)!r}")
    if problems:
        raise ValueError("cannot convert this GPT-2: " + "; ".join(problems))
    n_embd, n_head = get("n_embd"), get("n_head")
    kw: dict[str, Any] = {}
    if not get("scale_attn_weights"):
        kw["attn_scale"] = 1.0
    try:
        eps = float(get("layer_norm_epsilon"))
    except (TypeError, ValueError):
        raise ValueError(
            f"layer_norm_epsilon={get('layer_norm_epsilon')!r} is not a number"
        ) from None
    return ModelConfig(
        n_layers=get("n_layer"),
        d_model=n_embd,
        n_ctx=get("n_positions"),
        d_vocab=get("vocab_size"),
        n_heads=n_head,
        d_mlp=get("n_inner") if get("n_inner") is not None else None,
        act_fn=ACT_FROM_HF[get("activation_function")],
        normalization_type="LN",
        eps=eps,
        **kw,
    )


# GPT-2's causal-mask buffers, saved in older files.
_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")


def gpt2_names(state_dict_keys: Any) -> dict[str, str]:
    """``{canonical name: name in the file}``: ``transformer.`` stripped, mask buffers dropped.

    ``GPT2LMHeadModel`` saves ``transformer.h.0...`` and ``lm_head.weight`` (unless tied);
    the hub's ``gpt2`` files hold ``GPT2Model``'s names (``h.0...``, ``wte.weight``).
    """
    out = {}
    for key in state_dict_keys:
        name = key.removeprefix("transformer.")
        if not _BUFFER.fullmatch(name):
            out[name] = key
    return out


def gpt2_shapes(cfg: ModelConfig, lm_head: bool = False) -> dict[str, tuple[int, ...]]:
    """The shape of every GPT-2 tensor ``cfg`` implies (canonical names, see :func:`gpt2_names`)."""
    d, v, m = cfg.d_model, cfg.d_vocab, cfg.d_mlp
    assert m is not None
    shapes: dict[str, tuple[int, ...]] = {
        "wte.weight": (v, d),
        "wpe.weight": (cfg.n_ctx, d),
        "ln_f.weight": (d,),
        "ln_f.bias": (d,),
    }
    for layer in range(cfg.n_layers):
        h = f"h.{layer}."
        shapes |= {
            h + "ln_1.weight": (d,),
            h + "ln_1.bias": (d,),
            h + "attn.c_attn.weight": (d, 3 * d),
            h + "attn.c_attn.bias": (3 * d,),
            h + "attn.c_proj.weight": (d, d),
            h + "attn.c_proj.bias": (d,),
            h + "ln_2.weight": (d,),
            h + "ln_2.bias": (d,),
            h + "mlp.c_fc.weight": (d, m),
            h + "mlp.c_fc.bias": (m,),
            h + "mlp.c_proj.weight": (m, d),
            h + "mlp.c_proj.bias": (d,),
        }
    if lm_head:
        shapes["lm_head.weight"] = (v, d)
    return shapes


def state_dict_from_gpt2(sd: dict[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    """A GPT-2 state dict (canonical names) in our layout; ``lm_head`` is ``wte`` when tied."""
    d, h = cfg.d_model, cfg.n_heads
    out = {
        "embed.W_E": sd["wte.weight"],
        "pos_embed.W_pos": sd["wpe.weight"],
        "ln_final.w": sd["ln_f.weight"],
        "ln_final.b": sd["ln_f.bias"],
        "unembed.W_U": sd.get("lm_head.weight", sd["wte.weight"]).T,
        "unembed.b_U": torch.zeros(cfg.d_vocab_out, dtype=sd["wte.weight"].dtype),
    }
    for layer in range(cfg.n_layers):
        b, p = f"blocks.{layer}.", f"h.{layer}."
        weights = sd[p + "attn.c_attn.weight"].split(d, dim=1)
        biases = sd[p + "attn.c_attn.bias"].split(d)
        for x, w, bias in zip("QKV", weights, biases, strict=True):
            out[f"{b}attn.W_{x}"] = einops.rearrange(w, "d (h e) -> h d e", h=h)
            out[f"{b}attn.b_{x}"] = einops.rearrange(bias, "(h e) -> h e", h=h)
        out[b + "attn.W_O"] = einops.rearrange(
            sd[p + "attn.c_proj.weight"], "(h e) d -> h e d", h=h
        )
        out[b + "attn.b_O"] = sd[p + "attn.c_proj.bias"]
        out[b + "mlp.W_in"] = sd[p + "mlp.c_fc.weight"]
        out[b + "mlp.b_in"] = sd[p + "mlp.c_fc.bias"]
        out[b + "mlp.W_out"] = sd[p + "mlp.c_proj.weight"]
        out[b + "mlp.b_out"] = sd[p + "mlp.c_proj.bias"]
        for ours, theirs in (("ln1", "ln_1"), ("ln2", "ln_2")):
            out[f"{b}{ours}.w"] = sd[f"{p}{theirs}.weight"]
            out[f"{b}{ours}.b"] = sd[f"{p}{theirs}.bias"]
    return {k: v.clone().contiguous() for k, v in out.items()}


def from_gpt2(hf: Any) -> HookedTransformer:
    """Our model (eval mode) with the weights of a ``GPT2LMHeadModel``; ``b_U`` is zero.

    Raises:
        TypeError: ``hf`` is not a ``GPT2LMHeadModel`` (a name: use
            ``circuits.pretrained.from_pretrained``).
        ValueError: a config field our model cannot reproduce, named.
    """
    from transformers import GPT2LMHeadModel

    if not isinstance(hf, GPT2LMHeadModel):
        hint = (
            f"; to load {hf!r} by name use circuits.pretrained.from_pretrained({hf!r})"
            if isinstance(hf, str)
            else ""
        )
        raise TypeError(
            f"from_gpt2 takes a transformers GPT2LMHeadModel, got {type(hf).__name__}{hint}"
        )
    cfg = config_from_gpt2(hf.config)
    names = gpt2_names(hf.state_dict())
    full = hf.state_dict()
    sd: dict[str, Tensor] = {k: full[v].detach() for k, v in names.items()}
    model = HookedTransformer(cfg)
    model.load_state_dict(state_dict_from_gpt2(sd, cfg), strict=True)
    return model.eval()
