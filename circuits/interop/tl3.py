"""TransformerLens 3.x ``HookedTransformer`` state dicts, without their config.

Our parameter names and shapes are TL3's, so a TL3 state dict loads with ``strict=True`` (the
``mask``/``IGNORE`` buffers TL3 saves are checked and consumed). What a bare state dict does not
say is the activation function and whether positions are shortformer; pass those.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from circuits.config import ModelConfig
from circuits.model import HookedTransformer


def config_from_state_dict(state_dict: dict[str, Tensor], **fields: Any) -> ModelConfig:
    """Infers sizes, attn-only and LayerNorm from a TL3 state dict; ``fields`` fill the rest.

    Args:
        state_dict: TL3 ``HookedTransformer.state_dict()``.
        fields: ``act_fn``, ``positional_embedding_type``, ``eps`` ... (not in the weights).
    """
    for key in ("embed.W_E", "pos_embed.W_pos", "unembed.W_U", "blocks.0.attn.W_Q"):
        if key not in state_dict:
            raise ValueError(f"state_dict has no {key}: not a TransformerLens 3.x state dict")
    layers = {int(m[1]) for k in state_dict if (m := re.match(r"blocks\.(\d+)\.", k))}
    n_heads, d_model, d_head = state_dict["blocks.0.attn.W_Q"].shape
    attn_only = "blocks.0.mlp.W_in" not in state_dict
    inferred: dict[str, Any] = dict(
        n_layers=len(layers),
        d_model=d_model,
        n_ctx=state_dict["pos_embed.W_pos"].shape[0],
        d_vocab=state_dict["embed.W_E"].shape[0],
        d_vocab_out=state_dict["unembed.W_U"].shape[1],
        n_heads=n_heads,
        d_head=d_head,
        attn_only=attn_only,
        d_mlp=None if attn_only else state_dict["blocks.0.mlp.W_in"].shape[1],
        normalization_type="LN" if "blocks.0.ln1.w" in state_dict else None,
    )
    clash = sorted(k for k in fields if k in inferred and fields[k] != inferred[k])
    if clash:
        raise ValueError(
            "fields contradict the state dict: "
            + ", ".join(f"{k}={fields[k]!r} (weights say {inferred[k]!r})" for k in clash)
        )
    return ModelConfig(**{**inferred, **fields})


def from_tl3(state_dict: dict[str, Tensor] | str | Path, **fields: Any) -> HookedTransformer:
    """Our model (eval mode) from a TL3 state dict or a ``torch.save``-d one at a path.

    Example:
        >>> model = from_tl3("attn_only_2l.pt", positional_embedding_type="shortformer")
    """
    if isinstance(state_dict, str | Path):
        state_dict = torch.load(state_dict, map_location="cpu", weights_only=True)
    if not isinstance(state_dict, dict):
        raise TypeError(f"state_dict must be a dict of tensors, got {type(state_dict).__name__}")
    model = HookedTransformer(config_from_state_dict(state_dict, **fields))
    model.load_state_dict(dict(state_dict), strict=True)
    return model.eval()
