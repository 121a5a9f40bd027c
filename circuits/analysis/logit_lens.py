"""The logit lens: read every layer's residual stream through the final LayerNorm and unembedding.

LayerNorm, two options (``ln=``):

- ``"recompute"`` (default, nostalgebraist's lens): apply the final LayerNorm to each
  intermediate residual with its *own* scale, gain and bias. The last point equals the model's
  logits exactly. TransformerLens 4's ``accumulated_resid(apply_ln=True)`` does the same.
- ``"cached"``: use the scale the final LayerNorm computed on the *final* residual (from
  ``ln_final.hook_scale``) for every point, as TransformerLens's
  ``apply_ln_to_stack(recompute_ln=False)`` does (then gain and bias); keeps each point a
  linear function of the residual, which is what attribution needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuits.analysis.final_ln import apply_final_ln, final_ln_bias, full_final_ln, norm_type
from circuits.analysis.protocol import HookedModel, check_model
from circuits.losses import kl_divergence
from circuits.validation import check_cache, check_int, check_tokens

LnMode = Literal["recompute", "cached"]


def resid_names(model: HookedModel, sublayers: bool = False) -> list[str]:
    """Hook names of the residual points :func:`accumulated_resid` stacks."""
    check_model(model)
    n_layers = model.cfg.n_layers
    names = []
    for layer in range(n_layers):
        names.append(f"blocks.{layer}.hook_resid_pre")
        if sublayers and not model.cfg.attn_only:
            names.append(f"blocks.{layer}.hook_resid_mid")
    return [*names, f"blocks.{n_layers - 1}.hook_resid_post"]


def accumulated_resid(
    model: HookedModel, cache: Any, sublayers: bool = False
) -> tuple[Float[Tensor, "point batch pos d_model"], list[str]]:
    """The residual stream before each layer (and mid-layer, with ``sublayers``) and at the end.

    Labels follow TransformerLens: ``"{l}_pre"``, ``"{l}_mid"``, ``"final_post"``. Matches
    ``ActivationCache.accumulated_resid(incl_mid=sublayers, return_labels=True)``.
    """
    check_model(model)
    check_cache(model, None, cache, resid_names(model, sublayers))
    n_layers = model.cfg.n_layers
    points, labels = [], []
    for layer in range(n_layers):
        points.append(cache[f"blocks.{layer}.hook_resid_pre"])
        labels.append(f"{layer}_pre")
        if sublayers and not model.cfg.attn_only:
            points.append(cache[f"blocks.{layer}.hook_resid_mid"])
            labels.append(f"{layer}_mid")
    points.append(cache[f"blocks.{n_layers - 1}.hook_resid_post"])
    labels.append("final_post")
    return torch.stack(points), labels


def unembed(
    model: HookedModel,
    resid: Float[Tensor, "... d_model"],
    ln: LnMode = "recompute",
    cache: Any = None,
) -> Float[Tensor, "... d_vocab"]:
    """Logits of residual vectors through the final LayerNorm (see module doc) and ``W_U``."""
    check_model(model)
    W_U, b_U = model.W_U.detach(), model.b_U.detach()
    if ln == "recompute":
        normed = full_final_ln(model, resid)
    elif ln == "cached":
        if cache is None:
            raise ValueError("ln='cached' needs the cache of the clean run")
        normed = apply_final_ln(model, resid, cache)
        b = final_ln_bias(model)
        if b is not None:
            normed = normed + b
    else:
        raise ValueError(f"ln={ln!r} must be 'recompute' or 'cached'")
    return normed @ W_U + b_U


@dataclass(frozen=True)
class LensResult:
    """Logits of a lens at every point of the residual stream.

    Attributes:
        logits: ``[point, batch, pos, d_vocab]``.
        labels: Name of each point (``"0_pre"``, ..., ``"final_post"``).
        final_logits: The model's own output ``[batch, pos, d_vocab]``.
    """

    logits: Float[Tensor, "point batch pos d_vocab"]
    labels: list[str]
    final_logits: Float[Tensor, "batch pos d_vocab"]

    def log_probs(self) -> Float[Tensor, "point batch pos d_vocab"]:
        return self.logits.log_softmax(-1)

    def top_k(
        self, k: int = 5
    ) -> tuple[Float[Tensor, "point batch pos k"], Int[Tensor, "point batch pos k"]]:
        """Probabilities and ids of the ``k`` most likely tokens at every point and position."""
        check_int(k, "k", 1, self.logits.shape[-1])
        return self.log_probs().exp().topk(k, dim=-1)

    def _check_targets(self, targets: Tensor) -> Tensor:
        batch, pos, d_vocab = self.logits.shape[1:]
        # Integer ids in range only: a float 3.9 is refused, not truncated to 3.
        targets = check_tokens(targets, d_vocab, pos, name="targets")
        if targets.shape != (batch, pos):
            raise ValueError(
                f"targets shape {tuple(targets.shape)} must be [batch, pos] = {(batch, pos)}"
            )
        return targets

    def target_prob(self, targets: Int[Tensor, "batch pos"]) -> Float[Tensor, "point batch pos"]:
        """Probability of ``targets`` at every point."""
        targets = self._check_targets(targets)
        index = targets.expand(len(self.labels), *targets.shape).unsqueeze(-1)
        return self.log_probs().gather(-1, index).squeeze(-1).exp()

    def target_rank(self, targets: Int[Tensor, "batch pos"]) -> Int[Tensor, "point batch pos"]:
        """Rank of ``targets`` (0: the top prediction; ties resolved in its favour)."""
        targets = self._check_targets(targets)
        index = targets.expand(len(self.labels), *targets.shape).unsqueeze(-1)
        target_logit = self.logits.gather(-1, index)
        return (self.logits > target_logit).sum(-1)

    def kl_to_final(self) -> Float[Tensor, "point batch pos"]:
        """``KL(final || lens)`` in nats at every point and position."""
        return kl_divergence(self.final_logits, self.logits)


def logit_lens(
    model: HookedModel,
    tokens: Int[Tensor, "batch pos"],
    sublayers: bool = False,
    ln: LnMode = "recompute",
    cache: Any = None,
) -> LensResult:
    """The logit lens of ``model`` on ``tokens`` at every layer (and sub-layer, optionally).

    Args:
        sublayers: Add a point between attention and MLP (models with MLPs).
        ln: How the final LayerNorm is applied (module doc).
        cache: A cache of ``tokens`` (computed if None).
    """
    check_model(model)
    tokens = check_tokens(tokens, model.cfg.d_vocab, model.cfg.n_ctx)
    if ln not in ("recompute", "cached"):
        raise ValueError(f"ln={ln!r} must be 'recompute' or 'cached'")
    if not isinstance(sublayers, bool):
        raise TypeError(f"sublayers must be a bool, got {sublayers!r}")
    with torch.no_grad():
        if cache is None:
            final, cache = model.run_with_cache(tokens)
        else:
            names = resid_names(model, sublayers)
            if ln == "cached" and norm_type(model) is not None:
                names.append("ln_final.hook_scale")
            check_cache(model, tokens, cache, names)
            final = model(tokens)
        resid, labels = accumulated_resid(model, cache, sublayers)
        return LensResult(unembed(model, resid, ln, cache), labels, final.detach())
