"""Metrics of a (patched) run: masked loss, logit difference, KL to the clean run.

A metric maps logits ``[configs, batch, pos, d_vocab]`` (one row per patched variant) to one
number per config ``[configs]``, averaged over the positions a mask selects (for induction,
the repeated positions: only there does the circuit do anything).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from jaxtyping import Bool, Float, Int
from torch import Tensor

MetricName = Literal["loss", "logit_diff", "kl"]


def _check(logits: Tensor, mask: Tensor) -> Tensor:
    if logits.ndim != 4:
        raise ValueError(
            f"logits must have shape [configs, batch, pos, d_vocab], got {tuple(logits.shape)}"
        )
    if tuple(mask.shape) != tuple(logits.shape[1:3]):
        raise ValueError(f"mask {tuple(mask.shape)} does not match logits {tuple(logits.shape)}")
    if not mask.any():
        raise ValueError("the metric mask selects no position")
    return mask.to(logits.dtype)


def _masked_mean(per_pos: Tensor, weights: Tensor) -> Tensor:
    return (per_pos * weights).sum((-2, -1)) / weights.sum()


@dataclass(frozen=True)
class Metric:
    """A metric on patched runs; call it on logits ``[configs, batch, pos, d_vocab]``.

    Attributes:
        name: ``"loss"`` (cross-entropy of ``targets``), ``"logit_diff"`` (logit of the target
            minus the mean logit: linear in the logits) or ``"kl"`` (KL(clean || patched)).
        mask: Bool ``[batch, pos]``, the positions averaged over.
        targets: Target ids ``[batch, pos]`` (loss, logit_diff).
        clean_logits: The clean run's logits ``[batch, pos, d_vocab]`` (kl).
    """

    name: MetricName
    mask: Bool[Tensor, "batch pos"]
    targets: Int[Tensor, "batch pos"] | None = None
    clean_logits: Float[Tensor, "batch pos d_vocab"] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.name not in ("loss", "logit_diff", "kl"):
            raise ValueError(f"unknown metric {self.name!r}; choose loss, logit_diff or kl")
        if self.name == "kl" and self.clean_logits is None:
            raise ValueError("the kl metric needs the clean logits")
        if self.name != "kl" and self.targets is None:
            raise ValueError(f"the {self.name} metric needs targets")

    @property
    def higher_is_better(self) -> bool:
        """Whether the clean model scores higher than a broken one (logit_diff only)."""
        return self.name == "logit_diff"

    def __call__(self, logits: Float[Tensor, "configs batch pos d_vocab"]) -> Tensor:
        weights = _check(logits, self.mask)
        if self.name == "kl":
            assert self.clean_logits is not None
            clean = self.clean_logits.log_softmax(-1)
            per_pos = (clean.exp() * (clean - logits.log_softmax(-1))).sum(-1)
            return _masked_mean(per_pos, weights)
        assert self.targets is not None
        index = self.targets.expand(logits.shape[0], *self.targets.shape).unsqueeze(-1)
        if self.name == "loss":
            per_pos = -logits.log_softmax(-1).gather(-1, index).squeeze(-1)
        else:
            per_pos = logits.gather(-1, index).squeeze(-1) - logits.mean(-1)
        return _masked_mean(per_pos, weights)


def masked_loss(targets: Tensor, mask: Tensor) -> Metric:
    """Cross-entropy of ``targets`` averaged over ``mask`` positions."""
    return Metric("loss", mask.bool(), targets=targets)


def logit_diff(targets: Tensor, mask: Tensor) -> Metric:
    """Target logit minus the mean logit, averaged over ``mask`` positions (linear in logits)."""
    return Metric("logit_diff", mask.bool(), targets=targets)


def kl_to_clean(clean_logits: Tensor, mask: Tensor) -> Metric:
    """KL(clean || patched) of the next-token distributions, averaged over ``mask`` positions."""
    return Metric("kl", mask.bool(), clean_logits=clean_logits.detach())
