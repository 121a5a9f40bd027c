"""Weight processing with TransformerLens 3.x's semantics: the same function, simpler weights.

Each function takes a TL3-format state dict and the model's config and returns a new state dict
(the input is not modified); the model's ``process_weights_`` applies them in place. Nothing here
imports or edits a model. What each one changes in an analysis:

- ``fold_layer_norm``: every LayerNorm's gain and bias move into the weights that read its
  output (``W_Q/W_K/W_V``, ``W_in``, ``W_U``, and ``W_out`` behind ``solu_ln``'s LayerNorm),
  whose input-side mean is then removed; the model's norms become parameter-free ``LNPre``
  (``RMSPre`` for RMS). Logits are unchanged. *Changes*: ``W_Q``, ``W_K``, ``W_V``, ``W_in``,
  ``W_U`` and the QK/OV circuits built from them now include the gain (a direction the gain
  scales up counts more), so composition scores, OV/QK eigenvalues and direct-logit
  attributions computed from weights differ from the unfolded model's, usually for the better:
  folded weights are what the residual stream is actually multiplied by. ``ln*.w/b`` are gone.
- ``center_writing_weights``: ``W_E``, ``W_pos``, ``W_O``, ``b_O``, ``W_out``, ``b_out`` lose
  their mean over ``d_model``. Every reader of the residual stream is a LayerNorm that removes
  that mean anyway (so it needs ``LN``/``LNPre``), hence logits are unchanged; the residual
  stream itself, its norm, and cached ``resid_*`` / ``*_out`` activations change (they are now
  mean-free). Shortformer ``W_pos`` is left alone: it reaches queries and keys after ``ln1``.
- ``center_unembed``: ``W_U`` and ``b_U`` lose their mean over the vocabulary. Logits shift by
  a constant per position, so log-probabilities and the loss are unchanged, logits are not;
  direct logit attributions to a single token become attributions relative to the mean token.
- ``fold_value_biases``: ``b_O += sum_h b_V[h] @ W_O[h]`` and ``b_V = 0`` (patterns sum to 1,
  so a value bias is a constant output of the layer). Logits unchanged; per-head outputs
  (``hook_result``, ``hook_z``) and a head's direct-logit attribution lose that constant,
  which now sits in ``b_O`` (the "bias" row of ``get_full_resid_decomposition``).
- ``refactor_factored_attn_matrices``: re-factors each head's ``W_Q W_K^T`` (biases included)
  into an SVD-balanced pair and ``W_V W_O`` as ``(U S) V^T`` (``W_O`` has orthonormal rows).
  Logits, patterns, ``W_QK``/``W_OV`` and every composition score are unchanged; ``q``, ``k``,
  ``v``, ``z`` and the individual ``W_Q/W_K/W_V/W_O`` are not.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, cast

import einops
import torch
from torch import Tensor

from circuits.model.capabilities import missing, supports

if TYPE_CHECKING:
    from circuits.config import ModelConfig

StateDict = dict[str, Tensor]
logger = logging.getLogger(__name__)


def _copy(state_dict: StateDict) -> StateDict:
    if not isinstance(state_dict, dict):
        raise TypeError(f"state_dict must be a dict of tensors, got {type(state_dict).__name__}")
    return {k: v.detach().clone() for k, v in state_dict.items()}


def _need(state_dict: StateDict, key: str, what: str) -> Tensor:
    if key not in state_dict:
        raise ValueError(f"state dict has no {key!r}: cannot {what}")
    return state_dict[key]


def _kv(cfg: Any, name: str) -> str:
    """The key/value parameter's name: TL3 stores grouped-query K/V as ``_W_K`` etc."""
    return f"_{name}" if getattr(cfg, "n_key_value_heads", None) is not None else name


def _kv_repeat(cfg: Any) -> int:
    n_kv = getattr(cfg, "n_key_value_heads", None)
    return 1 if n_kv is None else cfg.n_heads // n_kv


def _is_solu_ln(cfg: Any) -> bool:
    return not cfg.attn_only and cfg.act_fn == "solu_ln"


def _fold_ln_into(
    sd: StateDict, ln: str, weights: list[str], in_dim: int, fold_biases: bool, center: bool
) -> None:
    """Folds LayerNorm ``ln`` (``ln.w``, ``ln.b``) into the readers ``weights`` in place.

    ``in_dim`` is the axis of each weight that the normalised vector multiplies; the bias of
    weight ``.../W_X`` is ``.../b_X``.
    """
    w = sd.pop(f"{ln}.w")
    b = sd.pop(f"{ln}.b", None)
    for key in weights:
        W = sd[key]
        shape = [1] * W.dim()
        shape[in_dim] = -1
        if fold_biases and b is not None:
            bias_key = key.replace("W_", "b_")
            sd[bias_key] = sd[bias_key] + (W * b.view(shape)).sum(in_dim)
        W = W * w.view(shape)
        if center:
            W = W - W.mean(in_dim, keepdim=True)
        sd[key] = W


def fold_layer_norm(
    state_dict: StateDict, cfg: ModelConfig, fold_biases: bool = True, center_weights: bool = True
) -> StateDict:
    """Folds every LayerNorm's ``w`` (and ``b``) into the weights reading its output.

    Args:
        state_dict: TL3-format weights of a model with ``normalization_type`` "LN" or "RMS".
        cfg: Its config.
        fold_biases: Fold ``ln.b`` into the readers' biases (always off for RMS: no bias).
        center_weights: Remove the readers' input-side mean (valid only for LayerNorm, whose
            output has zero mean; always off for RMS, where it would change the output).

    Returns:
        A new state dict for the same model with ``normalization_type`` "LNPre" ("RMSPre").

    Raises:
        ValueError: No LayerNorm weights to fold, or a shortformer model (its positions are
            added to the query/key input after ``ln1``, so ``ln1``'s gain cannot move into
            ``W_Q``/``W_K`` without changing what positions contribute). TL 3.9 folds such a
            model anyway, and its log-probabilities then change; here ``process_weights_``
            skips the fold with a warning.
    """
    if cfg.normalization_type not in ("LN", "RMS"):
        raise ValueError(
            f"fold_layer_norm needs normalization_type 'LN' or 'RMS', got "
            f"{cfg.normalization_type!r} (already folded, or no LayerNorm)"
        )
    if cfg.positional_embedding_type == "shortformer":
        raise ValueError(
            "cannot fold LayerNorm of a shortformer model exactly: positions join the query/key "
            "input after ln1, so folding ln1's gain into W_Q/W_K would rescale them too"
        )
    if cfg.normalization_type == "RMS" and (fold_biases or center_weights):
        # RMSNorm has no bias and does not remove the mean: neither step would be exact.
        fold_biases, center_weights = False, False
    sd = _copy(state_dict)
    _need(sd, "ln_final.w", "fold LayerNorm (already folded?)")
    for layer in range(cfg.n_layers):
        p = f"blocks.{layer}."
        attn_keys = [p + "attn.W_Q", p + "attn." + _kv(cfg, "W_K"), p + "attn." + _kv(cfg, "W_V")]
        for key in attn_keys:
            _need(sd, key, "fold LayerNorm")
        # W_Q [heads, d_model, d_head]: the normalised vector multiplies axis 1.
        _fold_ln_into(sd, p + "ln1", attn_keys, 1, fold_biases, center_weights)
        if not cfg.attn_only:
            _fold_ln_into(sd, p + "ln2", [p + "mlp.W_in"], 0, fold_biases, center_weights)
            if _is_solu_ln(cfg):
                # SoLU's LayerNorm over d_mlp feeds W_out (its rows are the d_mlp axis).
                _fold_ln_into(sd, p + "mlp.ln", [p + "mlp.W_out"], 0, fold_biases, center_weights)
    _fold_ln_into(sd, "ln_final", ["unembed.W_U"], 0, fold_biases, center_weights)
    return sd


def folded_normalization_type(cfg: ModelConfig) -> str:
    """The ``normalization_type`` a model has after :func:`fold_layer_norm`."""
    return {"LN": "LNPre", "RMS": "RMSPre"}[cast(str, cfg.normalization_type)]


def center_writing_weights(state_dict: StateDict, cfg: ModelConfig) -> StateDict:
    """Removes the ``d_model`` mean of everything written to the residual stream.

    ``W_E``, ``W_pos`` (standard positions only), and per layer ``W_O``, ``b_O``, ``W_out``,
    ``b_out``. Exact because every reader of the residual stream is a LayerNorm.

    Raises:
        ValueError: ``normalization_type`` is not "LN"/"LNPre" (then it would change the
            model's output).
    """
    if cfg.normalization_type not in ("LN", "LNPre"):
        raise ValueError(
            "center_writing_weights needs normalization_type 'LN' or 'LNPre' (a reader that "
            f"removes the mean), got {cfg.normalization_type!r}"
        )
    sd = _copy(state_dict)

    def center(key: str) -> None:
        sd[key] = sd[key] - sd[key].mean(-1, keepdim=True)

    center("embed.W_E")
    if cfg.positional_embedding_type == "standard":
        center("pos_embed.W_pos")
    for layer in range(cfg.n_layers):
        p = f"blocks.{layer}."
        center(p + "attn.W_O")
        center(p + "attn.b_O")
        if not cfg.attn_only:
            center(p + "mlp.W_out")
            center(p + "mlp.b_out")
    return sd


def center_unembed(state_dict: StateDict) -> StateDict:
    """Removes the vocabulary mean of ``W_U`` and ``b_U``: log-probs kept, logits shifted."""
    sd = _copy(state_dict)
    sd["unembed.W_U"] = sd["unembed.W_U"] - sd["unembed.W_U"].mean(-1, keepdim=True)
    sd["unembed.b_U"] = sd["unembed.b_U"] - sd["unembed.b_U"].mean()
    return sd


def fold_value_biases(state_dict: StateDict, cfg: ModelConfig) -> StateDict:
    """``b_O += sum_h b_V[h] @ W_O[h]``, ``b_V = 0``: the value bias is a constant per layer."""
    sd = _copy(state_dict)
    for layer in range(cfg.n_layers):
        p = f"blocks.{layer}.attn."
        b_V = sd[p + _kv(cfg, "b_V")]
        # Grouped-query attention: each K/V head serves n_heads // n_key_value_heads heads.
        per_head = b_V.repeat_interleave(_kv_repeat(cfg), dim=0)
        sd[p + "b_O"] = sd[p + "b_O"] + einops.einsum(
            per_head, sd[p + "W_O"], "head d_head, head d_head d_model -> d_model"
        )
        sd[p + _kv(cfg, "b_V")] = torch.zeros_like(b_V)
    return sd


def refactor_factored_attn_matrices(state_dict: StateDict, cfg: ModelConfig) -> StateDict:
    """Re-factors each head's QK and OV circuits into SVD-balanced factors (TL3's method).

    ``[W_Q; b_Q] [W_K; b_K]^T`` (biases as an extra input row for a constant 1) becomes
    ``(U sqrt(S)) (V sqrt(S))^T``; the value bias is folded into ``b_O``; ``W_V W_O = U S V^T``
    becomes ``W_V = U S``, ``W_O = V^T``.

    Raises:
        ValueError: Rotary positions (QK then depends on the positions) or grouped-query
            attention (keys are shared between heads, so no per-head refactoring exists).
    """
    from transformer_lens.FactoredMatrix import FactoredMatrix

    if cfg.positional_embedding_type == "rotary":
        raise ValueError(
            "cannot refactor QK with rotary positions: W_QK depends on the query and key positions"
        )
    if getattr(cfg, "n_key_value_heads", None) is not None:
        raise ValueError("cannot refactor grouped-query attention: heads share keys and values")
    sd = fold_value_biases(state_dict, cfg)
    for layer in range(cfg.n_layers):
        p = f"blocks.{layer}.attn."
        W_Q_eff = torch.cat([sd[p + "W_Q"], sd[p + "b_Q"][:, None, :]], dim=1)
        W_K_eff = torch.cat([sd[p + "W_K"], sd[p + "b_K"][:, None, :]], dim=1)
        Q_even, K_even_T = FactoredMatrix(W_Q_eff, W_K_eff.transpose(-1, -2)).make_even().pair
        K_even = K_even_T.transpose(-1, -2)
        sd[p + "W_Q"], sd[p + "b_Q"] = Q_even[:, :-1, :].contiguous(), Q_even[:, -1, :]
        sd[p + "W_K"], sd[p + "b_K"] = K_even[:, :-1, :].contiguous(), K_even[:, -1, :]
        U, S, V = FactoredMatrix(sd[p + "W_V"], sd[p + "W_O"]).svd()
        sd[p + "W_V"] = (U * S[..., None, :]).contiguous()
        sd[p + "W_O"] = V.transpose(-1, -2).contiguous()
    return sd


# Aliases: process_state_dict's flags (TL3's names) shadow the functions.
_fold_layer_norm = fold_layer_norm
_center_writing_weights = center_writing_weights
_center_unembed = center_unembed
_fold_value_biases = fold_value_biases
_refactor_factored_attn_matrices = refactor_factored_attn_matrices


def process_state_dict(
    state_dict: StateDict,
    cfg: ModelConfig,
    fold_ln: bool = True,
    center_writing_weights: bool = True,
    center_unembed: bool = True,
    fold_value_biases: bool = True,
    refactor_factored_attn_matrices: bool = False,
) -> tuple[StateDict, ModelConfig]:
    """All steps in TL3's order; a step the model cannot take is skipped with a warning.

    Returns:
        ``(state_dict, cfg)``: the new weights and the config they belong to (``LNPre`` /
        ``RMSPre`` after folding).
    """
    sd = _copy(state_dict)
    if fold_ln:
        if supports(cfg, "fold_ln"):
            sd = _fold_layer_norm(sd, cfg)
            cfg = cfg.replace(normalization_type=folded_normalization_type(cfg))
        else:
            logger.warning("fold_ln skipped: %s", "; ".join(missing(cfg, "fold_ln")))
    if center_writing_weights:
        if supports(cfg, "center_writing_weights"):
            sd = _center_writing_weights(sd, cfg)
        else:
            reason = "; ".join(missing(cfg, "center_writing_weights"))
            logger.warning("center_writing_weights skipped: %s", reason)
    if center_unembed:
        sd = _center_unembed(sd)
    if fold_value_biases:
        sd = _fold_value_biases(sd, cfg)
    if refactor_factored_attn_matrices:
        sd = _refactor_factored_attn_matrices(sd, cfg)
    return sd, cfg
