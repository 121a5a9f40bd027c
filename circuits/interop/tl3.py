"""TransformerLens 3.x ``HookedTransformer`` state dicts, without their config, both ways.

Our parameter names and shapes are TL3's, so a TL3 state dict loads with ``strict=True`` (the
``mask``/``IGNORE`` buffers TL3 saves are checked and consumed). What a bare state dict does not
say is the activation function and whether positions are shortformer; pass those.
:func:`to_tl3_state_dict` goes the other way: it adds the buffers TL3's ``HookedTransformer``
holds, so ``tl3_model.load_state_dict(to_tl3_state_dict(ours), strict=True)`` works.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from circuits.config import ModelConfig

if TYPE_CHECKING:
    from circuits.model import HookedTransformer


def config_from_state_dict(state_dict: dict[str, Tensor], **fields: Any) -> ModelConfig:
    """Infers what the weights show from a TL3 state dict; ``fields`` fill the rest.

    Inferred: sizes, attn-only, normalization (``LN``, or ``RMS`` when the norms have no bias;
    weightless ``LNPre``/``RMSPre`` leave no trace, pass them), ``solu_ln`` (the MLP's ``ln``),
    grouped-query ``n_key_value_heads`` (``_W_K``), rotary (no ``W_pos``; ``rotary_dim`` from
    ``rotary_sin`` when saved; ``n_ctx`` then comes from there or must be passed).

    Args:
        state_dict: TL3 ``HookedTransformer.state_dict()``.
        fields: ``act_fn``, ``positional_embedding_type``, ``eps`` ... (not in the weights).
    """
    for key in ("embed.W_E", "unembed.W_U", "blocks.0.attn.W_Q"):
        if key not in state_dict:
            raise ValueError(f"state_dict has no {key}: not a TransformerLens 3.x state dict")
    layers = {int(m[1]) for k in state_dict if (m := re.match(r"blocks\.(\d+)\.", k))}
    n_heads, d_model, d_head = state_dict["blocks.0.attn.W_Q"].shape
    attn_only = "blocks.0.mlp.W_in" not in state_dict
    inferred: dict[str, Any] = dict(
        n_layers=len(layers),
        d_model=d_model,
        d_vocab=state_dict["embed.W_E"].shape[0],
        d_vocab_out=state_dict["unembed.W_U"].shape[1],
        n_heads=n_heads,
        d_head=d_head,
        attn_only=attn_only,
        d_mlp=None if attn_only else state_dict["blocks.0.mlp.W_in"].shape[1],
    )
    if "blocks.0.ln1.w" in state_dict:
        inferred["normalization_type"] = "LN" if "blocks.0.ln1.b" in state_dict else "RMS"
    elif "normalization_type" not in fields:
        inferred["normalization_type"] = None
    if "blocks.0.mlp.ln.w" in state_dict:
        inferred["act_fn"] = "solu_ln"
    if "blocks.0.attn._W_K" in state_dict:
        inferred["n_key_value_heads"] = state_dict["blocks.0.attn._W_K"].shape[0]
    if "pos_embed.W_pos" in state_dict:
        inferred["n_ctx"] = state_dict["pos_embed.W_pos"].shape[0]
    else:
        inferred["positional_embedding_type"] = "rotary"
        sin = state_dict.get("blocks.0.attn.rotary_sin")
        if sin is not None:
            inferred["n_ctx"], inferred["rotary_dim"] = sin.shape
        elif "n_ctx" not in fields:
            raise ValueError("a rotary state dict without rotary_sin: pass n_ctx")
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
    from circuits.model import HookedTransformer

    model = HookedTransformer(config_from_state_dict(state_dict, **fields))
    model.load_state_dict(dict(state_dict), strict=True)
    return model.eval()


def rotary_sin_cos(
    n_ctx: int, rotary_dim: int, base: float = 10000, adjacent_pairs: bool = False
) -> tuple[Tensor, Tensor]:
    """TL3's ``rotary_sin``/``rotary_cos`` buffers ``[n_ctx, rotary_dim]`` (float32).

    Angle ``pos / base ** (i / (rotary_dim / 2))`` for frequency ``i < rotary_dim / 2``,
    repeated as ``(2 d)`` (halves, GPT-NeoX) or ``(d 2)`` (adjacent pairs, GPT-J).
    """
    pos = torch.arange(n_ctx, dtype=torch.float32)
    dim = torch.arange(rotary_dim // 2, dtype=torch.float32)
    freq = base ** (dim / (rotary_dim / 2))
    freq = freq.repeat_interleave(2) if adjacent_pairs else freq.repeat(2)
    angles = pos[:, None] / freq[None, :]
    return torch.sin(angles), torch.cos(angles)


def to_tl3_state_dict(model: HookedTransformer) -> dict[str, Tensor]:
    """Our model's weights as a TL3 ``HookedTransformer.state_dict()`` (a detached copy).

    Adds per attention layer the buffers TL3 holds and a strict load requires: ``mask`` (empty
    bool ``[0, 0]``, as TL 3.9 saves it), ``IGNORE`` (scalar -inf) and, for rotary models,
    ``rotary_sin``/``rotary_cos`` ``[n_ctx, rotary_dim]``, unless the model already has them.
    Build the TL3 model from the same config (``HookedTransformerConfig`` with our field
    values; ``default_prepend_bos`` is irrelevant to the weights).
    """
    cfg = model.cfg
    ours = model.state_dict()
    device = next(iter(ours.values())).device if ours else torch.device("cpu")
    out: dict[str, Tensor] = {}
    for key, value in ours.items():
        out[key] = value.detach().clone()
        m = re.match(r"(blocks\.\d+\.attn\.)_?b_V$", key)
        if not m:
            continue
        prefix = m[1]
        extra = {
            prefix + "mask": torch.zeros(0, 0, dtype=torch.bool, device=device),
            prefix + "IGNORE": torch.tensor(float("-inf"), device=device),
        }
        if getattr(cfg, "positional_embedding_type", None) == "rotary":
            sin, cos = rotary_sin_cos(
                cfg.n_ctx,
                getattr(cfg, "rotary_dim", None) or cfg.d_head,
                getattr(cfg, "rotary_base", 10000),
                bool(getattr(cfg, "rotary_adjacent_pairs", False)),
            )
            extra[prefix + "rotary_sin"] = sin.to(device)
            extra[prefix + "rotary_cos"] = cos.to(device)
        # TL3's order: a layer's buffers follow its parameters.
        out.update({k: v for k, v in extra.items() if k not in ours})
    return out
