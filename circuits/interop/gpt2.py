"""To and from Hugging Face ``GPT2LMHeadModel``: token ids in, identical logits out.

GPT-2 is our full model with LayerNorm, GELU MLPs and standard positional embeddings; the
differences are layout only. Hugging Face stores ``Conv1D`` weights as ``[in, out]`` and fuses
Q, K and V into one ``c_attn`` matrix; we store per-head ``W_Q [n_heads, d_model, d_head]``.
Two things GPT-2 cannot express are refused rather than approximated: an unembedding bias
(``lm_head`` has none) and models without LayerNorm or MLPs.
"""

from __future__ import annotations

from typing import Any

import einops
import torch
from torch import Tensor

from circuits.config import ActFn, ModelConfig
from circuits.model import HookedTransformer

# Our activation names -> Hugging Face's (same functions: exact erf GELU, tanh GELU, ReLU).
ACT_TO_HF: dict[ActFn, str] = {"gelu": "gelu", "gelu_new": "gelu_new", "relu": "relu"}
ACT_FROM_HF: dict[str, ActFn] = {v: k for k, v in ACT_TO_HF.items()}


def gpt2_config(cfg: ModelConfig) -> Any:
    """The ``GPT2Config`` of ``cfg``; ValueError naming whatever GPT-2 cannot express."""
    from transformers import GPT2Config

    problems = []
    if cfg.attn_only or cfg.normalization_type != "LN":
        problems.append("GPT-2 needs MLPs and LayerNorm (attn_only=False, normalization_type='LN')")
    if cfg.positional_embedding_type != "standard":
        problems.append(f"positional_embedding_type={cfg.positional_embedding_type!r}")
    if cfg.n_heads * cfg.d_head != cfg.d_model:
        problems.append(f"n_heads * d_head = {cfg.n_heads * cfg.d_head} != d_model={cfg.d_model}")
    if cfg.d_vocab_out != cfg.d_vocab:
        problems.append(f"d_vocab_out={cfg.d_vocab_out} != d_vocab={cfg.d_vocab}")
    if problems:
        raise ValueError("cannot convert to GPT-2: " + "; ".join(problems))
    return GPT2Config(
        vocab_size=cfg.d_vocab,
        n_positions=cfg.n_ctx,
        n_embd=cfg.d_model,
        n_layer=cfg.n_layers,
        n_head=cfg.n_heads,
        n_inner=cfg.d_mlp,
        activation_function=ACT_TO_HF[cfg.act_fn],
        layer_norm_epsilon=cfg.eps,
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
        ValueError: ``model`` has a non-zero ``b_U``, no LayerNorm or MLPs, shortformer
            positions, ``n_heads * d_head != d_model`` or ``d_vocab_out != d_vocab``.
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


def _config_from_gpt2(c: Any) -> ModelConfig:
    problems = []
    if c.activation_function not in ACT_FROM_HF:
        problems.append(f"activation_function={c.activation_function!r}")
    for name, supported in (
        ("scale_attn_weights", True),
        ("scale_attn_by_inverse_layer_idx", False),
        ("reorder_and_upcast_attn", False),
        ("add_cross_attention", False),
    ):
        if getattr(c, name, supported) != supported:
            problems.append(f"{name}={getattr(c, name)!r}")
    if problems:
        raise ValueError("cannot convert this GPT-2: " + "; ".join(problems))
    return ModelConfig(
        n_layers=c.n_layer,
        d_model=c.n_embd,
        n_ctx=c.n_positions,
        d_vocab=c.vocab_size,
        n_heads=c.n_head,
        d_mlp=c.n_inner if c.n_inner is not None else 4 * c.n_embd,
        act_fn=ACT_FROM_HF[c.activation_function],
        normalization_type="LN",
        eps=float(c.layer_norm_epsilon),
    )


def from_gpt2(hf: Any) -> HookedTransformer:
    """Our model (eval mode) with the weights of a ``GPT2LMHeadModel``; ``b_U`` is zero."""
    cfg = _config_from_gpt2(hf.config)
    sd: dict[str, Tensor] = {k: v.detach() for k, v in hf.state_dict().items()}
    d, h = cfg.d_model, cfg.n_heads
    out = {
        "embed.W_E": sd["transformer.wte.weight"],
        "pos_embed.W_pos": sd["transformer.wpe.weight"],
        "ln_final.w": sd["transformer.ln_f.weight"],
        "ln_final.b": sd["transformer.ln_f.bias"],
        "unembed.W_U": sd["lm_head.weight"].T,
        "unembed.b_U": torch.zeros(cfg.d_vocab_out),
    }
    for layer in range(cfg.n_layers):
        b, p = f"blocks.{layer}.", f"transformer.h.{layer}."
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
    model = HookedTransformer(cfg)
    model.load_state_dict({k: v.clone().contiguous() for k, v in out.items()}, strict=True)
    return model.eval()
