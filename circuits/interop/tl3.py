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

from torch import Tensor

from circuits.model import HookedTransformer
from circuits.model.state_dict import config_from_state_dict, rotary_sin_cos

__all__ = ["config_from_state_dict", "from_tl3", "rotary_sin_cos", "to_tl3_state_dict"]


def from_tl3(state_dict: dict[str, Tensor] | str | Path, **fields: Any) -> HookedTransformer:
    """Our model (eval mode) from a TL3 state dict or a ``torch.save``-d one at a path.

    Example:
        >>> model = from_tl3("attn_only_2l.pt", positional_embedding_type="shortformer")

    Raises:
        TypeError: ``state_dict`` is neither a dict nor a path.
        ValueError: the file is missing, truncated, not a state dict or refused as unsafe (a
            pickle holding more than tensors: nothing in it runs); tensors are missing,
            unexpected, misshapen or not finite; ``fields`` contradict the weights.
    """
    from circuits.pretrained.tensors import check_finite, load_torch

    source = "state_dict"
    if isinstance(state_dict, str | Path):
        source = str(state_dict)
        if not Path(state_dict).is_file():
            raise ValueError(f"from_tl3: no file {source}")
        state_dict = load_torch(Path(state_dict), source)
    if not isinstance(state_dict, dict):
        raise TypeError(f"state_dict must be a dict of tensors, got {type(state_dict).__name__}")
    bad = [k for k, v in state_dict.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"{source} is not a state dict of tensors: {bad[0]!r} is not a tensor")
    try:
        cfg = config_from_state_dict(state_dict, **fields)
    except (KeyError, IndexError, AttributeError, TypeError, ValueError) as e:
        raise ValueError(
            f"{source} is not a complete TransformerLens 3.x state dict: {e}"
        ) from None
    # TL3's IGNORE buffer is -inf by design; the weights themselves must be finite.
    check_finite({k: v for k, v in state_dict.items() if not k.endswith("IGNORE")}, source)
    model = HookedTransformer(cfg)
    try:
        model.load_state_dict(dict(state_dict), strict=True)
    except (RuntimeError, ValueError) as e:
        detail = "; ".join(line.strip() for line in str(e).splitlines()[1:] if line.strip())
        raise ValueError(f"{source} does not fit the config it implies: {detail or e}") from None
    return model.eval()


def to_tl3_state_dict(model: HookedTransformer) -> dict[str, Tensor]:
    """Our model's weights as a TL3 ``HookedTransformer.state_dict()`` (a detached copy, with
    the buffers TL3 holds: see :func:`circuits.model.state_dict.to_tl3_state_dict`). Build the
    TL3 model from the same config (``HookedTransformerConfig`` with our field values)."""
    if not isinstance(model, HookedTransformer):
        raise TypeError(f"model must be a circuits HookedTransformer, got {type(model).__name__}")
    return model.to_tl3_state_dict()
