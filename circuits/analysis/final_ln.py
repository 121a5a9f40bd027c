"""The final normalisation (``ln_final``) as the analysis applies it: the one home of that logic.

Two ways (see :mod:`circuits.analysis.logit_lens`):

- :func:`apply_final_ln`: the *linear* part with the clean run's cached scale
  (``ln_final.hook_scale``): centre (LayerNorm only), divide by the cached scale, multiply by
  the gain. Sums of components go through it term by term, which is what attribution needs.
  The bias (:func:`final_ln_bias`) is left out: it belongs to no component.
- :func:`full_final_ln`: recomputed on its input with its own scale, bias included (the
  logit lens).

Normalisation types: ``None`` (identity), ``"LN"`` (centre, scale, gain, bias), ``"LNPre"``
(centre, scale), ``"RMS"`` (scale, gain), ``"RMSPre"`` (scale).
"""

from __future__ import annotations

from typing import Any

from jaxtyping import Float
from torch import Tensor

from circuits.analysis.protocol import HookedModel, check_model
from circuits.validation import check_cache

CENTRED = ("LN", "LNPre")
WITH_GAIN = ("LN", "RMS")
SUPPORTED = ("LN", "LNPre", "RMS", "RMSPre")


def _check_resid(model: HookedModel, x: object) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a float tensor of residual vectors, got {type(x).__name__}")
    if x.ndim == 0 or x.shape[-1] != model.cfg.d_model:
        raise ValueError(f"x {tuple(x.shape)} must end in d_model={model.cfg.d_model}")


def norm_type(model: HookedModel) -> str | None:
    """``model.cfg.normalization_type`` (None if the model has none)."""
    norm = getattr(model.cfg, "normalization_type", None)
    if norm is not None and norm not in SUPPORTED:
        raise ValueError(f"unsupported normalization_type {norm!r}; supported: {SUPPORTED}")
    return norm


def ln_param(ln: Any, name: str) -> Tensor | None:
    """Gain (``"w"``) or bias (``"b"``) of a norm module, detached; None if it has none.

    Reads TransformerLens's names (``w``, ``b``) and ``nn.LayerNorm``'s (``weight``, ``bias``),
    which a ``TransformerBridge`` exposes.
    """
    if name not in ("w", "b"):
        raise ValueError(f"name={name!r} must be 'w' or 'b'")
    if ln is None:
        return None
    p = getattr(ln, name, None)
    if p is None:
        p = getattr(ln, {"w": "weight", "b": "bias"}[name], None)
    return p.detach() if isinstance(p, Tensor) else None


def final_ln_param(model: HookedModel, name: str) -> Tensor | None:
    """Gain or bias of ``model.ln_final`` where its type has one (else None)."""
    norm = norm_type(model)
    if norm is None or (name == "w" and norm not in WITH_GAIN) or (name == "b" and norm != "LN"):
        return None
    return ln_param(getattr(model, "ln_final", None), name)


def final_ln_bias(model: HookedModel) -> Tensor | None:
    """The final LayerNorm's bias (``"LN"`` only), or None."""
    return final_ln_param(model, "b")


def apply_final_ln(
    model: HookedModel, x: Float[Tensor, "... batch pos d_model"], cache: Any
) -> Float[Tensor, "... batch pos d_model"]:
    """The final norm's linear part with the clean run's scale: ``(x - mean) / scale * w``.

    No bias. Identity for models without normalisation.

    Raises:
        ValueError: ``x`` does not end in the cached run's ``[batch, pos, d_model]``.
    """
    check_model(model)
    _check_resid(model, x)
    norm = norm_type(model)
    if norm is None:
        return x
    check_cache(model, None, cache, ["ln_final.hook_scale"])
    scale = cache["ln_final.hook_scale"]
    if x.ndim < 3 or x.shape[-3:-1] != scale.shape[-3:-1]:
        raise ValueError(
            f"x {tuple(x.shape)} must end in [batch, pos, d_model] with the cached run's "
            f"[batch, pos] = {tuple(scale.shape[-3:-1])}"
        )
    if norm in CENTRED:
        x = x - x.mean(-1, keepdim=True)
    x = x / scale
    w = final_ln_param(model, "w")
    return x * w if w is not None else x


def full_final_ln(
    model: HookedModel, x: Float[Tensor, "... d_model"]
) -> Float[Tensor, "... d_model"]:
    """The final norm recomputed on ``x`` (its own scale), bias included."""
    check_model(model)
    _check_resid(model, x)
    norm = norm_type(model)
    if norm is None:
        return x
    eps = float(getattr(model.cfg, "eps", 1e-5))
    if norm in CENTRED:
        x = x - x.mean(-1, keepdim=True)
    x = x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    w, b = final_ln_param(model, "w"), final_ln_param(model, "b")
    if w is not None:
        x = x * w
    return x + b if b is not None else x
