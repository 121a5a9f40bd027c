"""TransformerLens 3.x's state-dict format: what a config implies, the buffers TL3 adds, rotary.

Our parameter names and shapes are TL3's ``HookedTransformer``'s. TL3 also saves per attention
layer the buffers ``mask``, ``IGNORE`` and (rotary models) ``rotary_sin``/``rotary_cos``; we
compute those from the config, so :func:`consume_tl3_buffers` checks and drops them on load and
:func:`to_tl3_state_dict` adds them on export. The rotary tables here are the only ones: the
attention layer rotates with :func:`rotary_tables` too.

Everything here is a function of tensors and a config; nothing imports the model.
"""

from __future__ import annotations

import re
from typing import Any

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuits.config import ModelConfig

__all__ = [
    "config_from_state_dict",
    "consume_tl3_buffers",
    "rotary_sin_cos",
    "rotary_tables",
    "to_tl3_state_dict",
]

StateDict = dict[str, Tensor]


def rotary_tables(
    ids: Int[Tensor, "... pos"], rotary_dim: int, base: float = 10000, adjacent_pairs: bool = False
) -> tuple[Float[Tensor, "... pos rotary_dim"], Float[Tensor, "... pos rotary_dim"]]:
    """``(sin, cos)`` of the rotary angles at position ``ids`` (float32, same device).

    Angle ``pos / base ** (i / (rotary_dim / 2))`` for frequency ``i < rotary_dim / 2``, each
    frequency repeated for its pair: ``(2 d)`` (halves, GPT-NeoX) or ``(d 2)`` (adjacent pairs,
    GPT-J), as TL3 lays them out. Memory: two ``[..., pos, rotary_dim]`` tensors.
    """
    dim = torch.arange(rotary_dim // 2, dtype=torch.float32, device=ids.device)
    freq = base ** (dim / (rotary_dim / 2))
    freq = einops.repeat(freq, "d -> (d 2)" if adjacent_pairs else "d -> (2 d)")
    angles = ids.to(torch.float32)[..., None] / freq
    return angles.sin(), angles.cos()


def rotary_sin_cos(
    n_ctx: int, rotary_dim: int, base: float = 10000, adjacent_pairs: bool = False
) -> tuple[Float[Tensor, "n_ctx rotary_dim"], Float[Tensor, "n_ctx rotary_dim"]]:
    """TL3's ``rotary_sin``/``rotary_cos`` buffers ``[n_ctx, rotary_dim]`` (float32)."""
    return rotary_tables(torch.arange(n_ctx), rotary_dim, base, adjacent_pairs)


def _config_rotary(cfg: Any, n_ctx: int) -> tuple[Tensor, Tensor]:
    return rotary_sin_cos(
        n_ctx,
        getattr(cfg, "rotary_dim", None) or cfg.d_head,
        getattr(cfg, "rotary_base", 10000),
        bool(getattr(cfg, "rotary_adjacent_pairs", False)),
    )


def consume_tl3_buffers(state_dict: dict[str, Any], prefix: str, cfg: ModelConfig) -> None:
    """Checks and removes one attention layer's TL3 buffers from ``state_dict`` (in place).

    ``mask`` must be causal (TL 3.9 saves it empty), ``IGNORE`` is dropped, and rotary tables
    must match the config (``rotary_dim``, ``rotary_base``, pairing).

    Raises:
        ValueError: a buffer says something the config does not.
    """
    mask = state_dict.pop(prefix + "mask", None)
    if mask is not None and mask.numel() and not torch.equal(mask.bool(), mask.bool().tril()):
        raise ValueError(f"{prefix}mask in the state dict is not a causal mask")
    state_dict.pop(prefix + "IGNORE", None)
    for i, name in enumerate(("rotary_sin", "rotary_cos")):
        table = state_dict.pop(prefix + name, None)
        if table is not None and cfg.positional_embedding_type == "rotary":
            ours = _config_rotary(cfg, table.shape[0])[i]
            if not torch.allclose(table.float().cpu(), ours, atol=1e-4):
                raise ValueError(
                    f"{prefix}{name} in the state dict does not match rotary_dim="
                    f"{cfg.rotary_dim}, rotary_base={cfg.rotary_base}"
                )


def to_tl3_state_dict(state_dict: StateDict, cfg: Any) -> StateDict:
    """Our weights as a TL3 ``HookedTransformer.state_dict()`` (a detached copy).

    Adds per attention layer the buffers TL3 holds and a strict load requires: ``mask`` (empty
    bool ``[0, 0]``, as TL 3.9 saves it), ``IGNORE`` (scalar -inf) and, for rotary models,
    ``rotary_sin``/``rotary_cos`` ``[n_ctx, rotary_dim]``, unless already present. Memory: one
    copy of the weights.
    """
    device = next(iter(state_dict.values())).device if state_dict else torch.device("cpu")
    out: StateDict = {}
    for key, value in state_dict.items():
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
            sin, cos = _config_rotary(cfg, cfg.n_ctx)
            extra[prefix + "rotary_sin"] = sin.to(device)
            extra[prefix + "rotary_cos"] = cos.to(device)
        # TL3's order: a layer's buffers follow its parameters.
        out.update({k: v for k, v in extra.items() if k not in state_dict})
    return out


def config_from_state_dict(state_dict: StateDict, **fields: Any) -> ModelConfig:
    """Infers what the weights show from a TL3 state dict; ``fields`` fill the rest.

    Inferred: sizes, attn-only, normalization (``LN``, or ``RMS`` when the norms have no bias;
    weightless ``LNPre``/``RMSPre`` leave no trace, pass them), ``solu_ln`` (the MLP's ``ln``),
    grouped-query ``n_key_value_heads`` (``_W_K``), rotary (no ``W_pos``; ``rotary_dim`` from
    ``rotary_sin`` when saved; ``n_ctx`` then comes from there or must be passed).

    Args:
        state_dict: TL3 ``HookedTransformer.state_dict()``.
        fields: ``act_fn``, ``positional_embedding_type``, ``eps`` ... (not in the weights).

    Raises:
        ValueError: not a TL3 state dict, or ``fields`` contradicting the weights.
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
