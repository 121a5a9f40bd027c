"""Weights of any TransformerLens-style model, read once, detached, optionally with LN folded.

Analysis code reads ``model.W_Q`` etc. (TransformerLens's stacked properties) and
``model.cfg.n_layers/n_heads/d_model/d_head`` only, so it works on our
:class:`~circuits.HookedTransformer`, a TransformerLens ``HookedTransformer`` and a
``TransformerBridge`` alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.analysis.final_ln import ln_param
from circuits.analysis.names import head_name
from circuits.analysis.protocol import HookedModel, check_model
from circuits.validation import check_layer_head


@dataclass(frozen=True)
class Weights:
    """Detached weight tensors with TransformerLens shapes.

    Attributes:
        W_Q, W_K, W_V: ``[n_layers, n_heads, d_model, d_head]``.
        W_O: ``[n_layers, n_heads, d_head, d_model]``.
        W_E: ``[d_vocab, d_model]``; W_pos: ``[n_ctx, d_model]``; W_U: ``[d_model, d_vocab_out]``.
        folded_ln: Whether LayerNorm centering and gains are folded into the reading weights.
    """

    W_Q: Float[Tensor, "n_layers n_heads d_model d_head"]
    W_K: Float[Tensor, "n_layers n_heads d_model d_head"]
    W_V: Float[Tensor, "n_layers n_heads d_model d_head"]
    W_O: Float[Tensor, "n_layers n_heads d_head d_model"]
    W_E: Float[Tensor, "d_vocab d_model"]
    W_pos: Float[Tensor, "n_ctx d_model"]
    W_U: Float[Tensor, "d_model d_vocab_out"]
    folded_ln: bool = False

    @property
    def n_layers(self) -> int:
        return self.W_Q.shape[0]

    @property
    def n_heads(self) -> int:
        return self.W_Q.shape[1]


def _ln_reader(ln: Any, d_model: int, norm: str | None) -> Tensor | None:
    """The linear part of a LayerNorm as a matrix ``P diag(w)`` (P centres), or None if none."""
    if norm is None:
        return None
    if norm not in ("LN", "LNPre"):
        raise ValueError(f"fold_ln supports normalization_type LN or LNPre, not {norm!r}")
    eye = torch.eye(d_model)
    centre = eye - torch.full((d_model, d_model), 1.0 / d_model)
    if norm == "LNPre":
        return centre
    w = ln_param(ln, "w")
    return centre if w is None else centre * w.to(centre.dtype)[None, :]


def get_weights(model: HookedModel, fold_ln: bool = False) -> Weights:
    """Reads the weights of ``model`` (any model with TransformerLens's weight properties).

    Args:
        model: Exposes ``W_Q, W_K, W_V, W_O, W_E, W_pos, W_U`` and ``cfg``.
        fold_ln: Fold each LayerNorm's centring and gain into the weights that read from it
            (``W_Q/W_K/W_V`` after ``ln1``, ``W_U`` after ``ln_final``). The per-token
            ``1/scale`` and the LayerNorm biases are nonlinear or input-independent and are
            *not* folded. Without ``fold_ln`` (the default) the raw weights are used, as
            TransformerLens's ``all_composition_scores`` does on an unprocessed model.
    """
    check_model(model)
    with torch.no_grad():
        w = {name: getattr(model, name).detach().float() for name in _NAMES}
    norm = getattr(model.cfg, "normalization_type", None)
    if fold_ln and norm is not None:
        d = w["W_E"].shape[-1]
        for layer in range(w["W_Q"].shape[0]):
            reader = _ln_reader(model.blocks[layer].ln1, d, norm)
            if reader is not None:
                for name in ("W_Q", "W_K", "W_V"):
                    w[name][layer] = reader @ w[name][layer]
        ln_final = getattr(model, "ln_final", None)
        reader = _ln_reader(ln_final, d, norm) if ln_final is not None else None
        if reader is not None:
            w["W_U"] = reader @ w["W_U"]
    return Weights(**w, folded_ln=fold_ln)


_NAMES = ("W_Q", "W_K", "W_V", "W_O", "W_E", "W_pos", "W_U")

__all__ = [
    "Weights",
    "check_finite_weights",
    "check_head",
    "get_weights",
    "head_name",
]  # head_name: from .names


def check_head(model: HookedModel, layer: int, head: int | None) -> None:
    """Raises ValueError naming ``layer`` or ``head`` if out of range for ``model``."""
    check_model(model)
    check_layer_head(layer, head, model.cfg.n_layers, model.cfg.n_heads)


def check_finite_weights(model: HookedModel) -> None:
    """Raises ValueError naming the first parameter of ``model`` with a NaN or an infinity.

    Analysis of such weights gives NaN everywhere (or an eigen-solver's error): refuse first.
    One pass over the parameters, no copies.
    """
    check_model(model)
    named = getattr(model, "named_parameters", None)
    if named is None:
        return
    with torch.no_grad():
        for name, p in named():
            if p.is_floating_point() and not bool(torch.isfinite(p).all()):
                bad = int((~torch.isfinite(p)).sum())
                raise ValueError(
                    f"the model's weights are not all finite: {name} has {bad} NaN or infinite "
                    "value(s)"
                )
