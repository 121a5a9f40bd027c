"""TransformerLens 3.x ``HookedTransformer`` state dicts, without their config, both ways.

Our parameter names and shapes are TL3's, so a TL3 state dict loads with ``strict=True`` (the
``mask``/``IGNORE`` buffers TL3 saves are checked and consumed). What a bare state dict does not
say is the activation function and whether positions are shortformer; pass those. The format
itself (what a config implies, the buffers, rotary tables) is :mod:`circuits.model.state_dict`.
:func:`to_tl3_state_dict` goes the other way: it adds the buffers TL3's ``HookedTransformer``
holds, so ``tl3_model.load_state_dict(to_tl3_state_dict(ours), strict=True)`` works.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from circuits.model import HookedTransformer
from circuits.model.state_dict import config_from_state_dict, rotary_sin_cos

__all__ = ["config_from_state_dict", "from_tl3", "rotary_sin_cos", "to_tl3_state_dict"]


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


def to_tl3_state_dict(model: HookedTransformer) -> dict[str, Tensor]:
    """Our model's weights as a TL3 ``HookedTransformer.state_dict()`` (a detached copy, with
    the buffers TL3 holds: see :func:`circuits.model.state_dict.to_tl3_state_dict`). Build the
    TL3 model from the same config (``HookedTransformerConfig`` with our field values)."""
    return model.to_tl3_state_dict()
