"""Decomposition of the final residual stream and direct logit attribution (DLA).

The final residual stream is exactly the sum of: token embedding, positional embedding (unless
the model uses shortformer positions, which never enter the stream), one term per head
(``z_h W_O^h``, from ``hook_z``), the attention output biases, and one term per MLP
(``hook_mlp_out``, its bias included). Each term reaches the logits through the final LayerNorm,
which is linear once its per-token scale is fixed: we centre, divide by the *cached*
``ln_final.hook_scale`` of the clean run and multiply by the gain. The LayerNorm bias and
``b_U`` do not depend on any component; DLA reports them separately as ``constant``, so the
attributions plus the constant equal the model's logit exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuits.analysis.final_ln import apply_final_ln, final_ln_bias, norm_type
from circuits.analysis.protocol import HookedModel, check_model
from circuits.analysis.weights import head_name
from circuits.validation import check_cache, check_int, check_tokens


def decomposition_names(model: HookedModel, final_ln: bool = False) -> list[str]:
    """Hook names :func:`decompose_resid` reads (and, with ``final_ln``, the final LN scale)."""
    check_model(model)
    cfg = model.cfg
    names = ["hook_embed"]
    if getattr(cfg, "positional_embedding_type", "standard") != "shortformer":
        names.append("hook_pos_embed")
    for layer in range(cfg.n_layers):
        names.append(f"blocks.{layer}.attn.hook_z")
        if not cfg.attn_only:
            names.append(f"blocks.{layer}.hook_mlp_out")
    if final_ln and norm_type(model) is not None:
        names.append("ln_final.hook_scale")
    return names


def _run(
    model: HookedModel, tokens: Tensor, cache: Any, final_ln: bool = False
) -> tuple[Tensor, Any]:
    tokens = check_tokens(tokens, model.cfg.d_vocab, model.cfg.n_ctx)
    if cache is None:
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens)
    else:
        check_cache(model, tokens, cache, decomposition_names(model, final_ln))
    return tokens, cache


@dataclass(frozen=True)
class Decomposition:
    """Components of the final residual stream: ``components.sum(0)`` is ``resid_post``.

    Attributes:
        components: ``[component, batch, pos, d_model]``.
        labels: One per component: ``embed``, ``pos_embed``, ``L{l}H{h}``, ``attn_bias``,
            ``L{l}MLP``.
    """

    components: Float[Tensor, "component batch pos d_model"]
    labels: list[str]


def decompose_resid(
    model: HookedModel, tokens: Int[Tensor, "batch pos"], cache: Any = None
) -> Decomposition:
    """Splits the final residual stream into embedding, positions, heads, biases and MLPs.

    Memory: the object returned, O((n_layers (n_heads + 1) + 3) batch pos d_model), and a cache
    when none is given; nothing vocabulary-sized.
    """
    check_model(model)
    tokens, cache = _run(model, tokens, cache)
    cfg = model.cfg
    parts, labels = [cache["hook_embed"]], ["embed"]
    if getattr(cfg, "positional_embedding_type", "standard") != "shortformer":
        parts.append(cache["hook_pos_embed"])
        labels.append("pos_embed")
    W_O = model.W_O.detach()
    bias = torch.zeros_like(parts[0])
    for layer in range(cfg.n_layers):
        z = cache[f"blocks.{layer}.attn.hook_z"]
        heads = einops.einsum(z, W_O[layer], "b p h e, h e d -> h b p d")
        parts.extend(heads)
        labels.extend(head_name(layer, h) for h in range(cfg.n_heads))
        bias = bias + model.b_O.detach()[layer]
        if not cfg.attn_only:
            parts.append(cache[f"blocks.{layer}.hook_mlp_out"])
            labels.append(f"L{layer}MLP")
    parts.append(bias)
    labels.append("attn_bias")
    return Decomposition(torch.stack(parts), labels)


@dataclass(frozen=True)
class LogitAttribution:
    """Direct logit attribution of each residual component to target tokens.

    Attributes:
        attributions: ``[component, batch, pos]``: each component's direct effect on the
            target's logit (minus the baseline target's, when one was given).
        labels: Component labels (see :class:`Decomposition`).
        constant: ``[batch, pos]``: final-LN bias and ``b_U`` terms; ``attributions.sum(0) +
            constant`` is the model's logit (difference) exactly.
    """

    attributions: Float[Tensor, "component batch pos"]
    labels: list[str]
    constant: Float[Tensor, "batch pos"]

    def __getitem__(self, label: str) -> Tensor:
        """Attribution ``[batch, pos]`` of the component named ``label``."""
        if not isinstance(label, str):
            raise TypeError(f"component label must be a str, got {label!r}")
        if label not in self.labels:
            raise ValueError(f"unknown component {label!r}")
        return self.attributions[self.labels.index(label)]

    def per_head(self, n_layers: int, n_heads: int) -> Float[Tensor, "n_layers n_heads"]:
        """Mean over batch and positions of each head's attribution, ``[n_layers, n_heads]``."""
        check_int(n_layers, "n_layers", 1)
        check_int(n_heads, "n_heads", 1)
        return torch.stack(
            [
                torch.stack([self[head_name(la, h)].mean() for h in range(n_heads)])
                for la in range(n_layers)
            ]
        )


def direct_logit_attribution(
    model: HookedModel,
    tokens: Int[Tensor, "batch pos"],
    targets: Int[Tensor, "batch pos"],
    baseline_targets: Int[Tensor, "batch pos"] | None = None,
    cache: Any = None,
) -> LogitAttribution:
    """Each component's direct contribution to the logit of ``targets`` at every position.

    Args:
        tokens: Input ids ``[batch, pos]``.
        targets: Token whose logit to explain at each position ``[batch, pos]``.
        baseline_targets: Explain the logit difference ``targets - baseline_targets`` instead.
        cache: A cache of ``tokens`` from ``run_with_cache`` (computed if None).

    Memory: :func:`decompose_resid`'s components and the target directions
    ``[batch, pos, d_model]`` (rows of ``W_U``); never ``[batch, pos, d_vocab]``.
    """
    check_model(model)
    tokens, cache = _run(model, tokens, cache, final_ln=True)
    d_vocab_out = model.W_U.shape[-1]
    targets = check_tokens(targets, d_vocab_out, model.cfg.n_ctx, name="targets")
    if targets.shape != tokens.shape:
        raise ValueError(f"targets shape {tuple(targets.shape)} != tokens {tuple(tokens.shape)}")
    W_U, b_U = model.W_U.detach(), model.b_U.detach()
    directions = W_U.T[targets]  # [b, p, d]
    bias_logit = b_U[targets]
    if baseline_targets is not None:
        baseline_targets = check_tokens(
            baseline_targets, d_vocab_out, model.cfg.n_ctx, name="baseline_targets"
        )
        if baseline_targets.shape != tokens.shape:
            raise ValueError("baseline_targets must have the shape of tokens")
        directions = directions - W_U.T[baseline_targets]
        bias_logit = bias_logit - b_U[baseline_targets]
    dec = decompose_resid(model, tokens, cache)
    normed = apply_final_ln(model, dec.components, cache)
    attributions = einops.einsum(normed, directions, "n b p d, b p d -> n b p")
    ln_b = final_ln_bias(model)
    constant = bias_logit + (directions @ ln_b if ln_b is not None else 0.0)
    return LogitAttribution(attributions, dec.labels, constant)
