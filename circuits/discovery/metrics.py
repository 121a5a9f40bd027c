"""Metrics of a (patched) run: masked loss, logit difference, KL to the clean run.

A metric maps logits ``[configs, batch, pos, d_vocab]`` (one row per patched variant) to one
number per config ``[configs]``, averaged over the positions a mask selects (for induction,
the repeated positions: only there does the circuit do anything). Internally it works on the
**rows** it reads, ``[configs, n_rows, d_vocab]`` with ``n_rows = mask.sum()``, so that the
unembedding is only ever applied at those positions (:mod:`circuits.discovery.readout`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

MetricName = Literal["loss", "logit_diff", "kl"]


@dataclass(frozen=True)
class Metric:
    """A metric on patched runs; call it on logits ``[configs, batch, pos, d_vocab]``.

    Attributes:
        name: ``"loss"`` (cross-entropy of ``targets``), ``"logit_diff"`` (logit of the target
            minus the mean logit, or minus the logit of ``wrong`` when given: linear in the
            logits either way) or ``"kl"`` (KL(clean || patched)).
        mask: Bool ``[batch, pos]``, the positions averaged over.
        targets: Target ids ``[batch, pos]`` (loss, logit_diff).
        clean_logits: The clean run's logits ``[batch, pos, d_vocab]`` (kl), or only its rows
            at the mask ``[n_rows, d_vocab]`` (what :class:`~circuits.discovery.Problem` keeps).
        wrong: Ids ``[batch, pos]`` whose logit is subtracted (logit_diff; e.g. IOI's subject).
    """

    name: MetricName
    mask: Bool[Tensor, "batch pos"]
    targets: Int[Tensor, "batch pos"] | None = None
    clean_logits: Float[Tensor, "..."] | None = field(default=None, repr=False)
    wrong: Int[Tensor, "batch pos"] | None = None

    def __post_init__(self) -> None:
        if self.name not in ("loss", "logit_diff", "kl"):
            raise ValueError(f"unknown metric {self.name!r}; choose loss, logit_diff or kl")
        if self.name == "kl" and self.clean_logits is None:
            raise ValueError("the kl metric needs the clean logits")
        if self.name != "kl" and self.targets is None:
            raise ValueError(f"the {self.name} metric needs targets")
        if not bool(self.mask.any()):
            raise ValueError("the metric mask selects no position")
        for name in ("targets", "wrong"):
            t = getattr(self, name)
            if t is not None and tuple(t.shape) != tuple(self.mask.shape):
                raise ValueError(
                    f"{name} {tuple(t.shape)} do not match the mask {tuple(self.mask.shape)}"
                )

    @property
    def higher_is_better(self) -> bool:
        """Whether the clean model scores higher than a broken one (logit_diff only)."""
        return self.name == "logit_diff"

    @property
    def n_rows(self) -> int:
        return int(self.mask.sum())

    def rows(self, x: Tensor) -> Tensor:
        """``x [..., batch, pos, *rest]`` at the mask's positions: ``[..., n_rows, *rest]``."""
        bi, pi = self.mask.nonzero(as_tuple=True)
        lead = _lead(x, self.mask)
        index = (slice(None),) * lead + (bi.to(x.device), pi.to(x.device))
        return x[index]

    def _kl_terms(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """Clean probabilities ``[n_rows, d_vocab]`` and ``sum p log p`` ``[n_rows]`` (cached)."""
        cache = self.__dict__.setdefault("_kl_cache", {})
        if device not in cache:
            assert self.clean_logits is not None
            c = self.clean_logits
            logp = (c if c.ndim == 2 else self.rows(c)).to(device).log_softmax(-1)
            p = logp.exp()
            cache[device] = (p, (p * logp).sum(-1))
        return cache[device]

    def row_values(
        self, logits: Float[Tensor, "configs rows d_vocab"], rows: slice | Tensor = slice(None)
    ) -> Float[Tensor, "configs rows"]:
        """The metric's per-row value for logits at rows ``rows`` (a slice or an index tensor)
        of the mask's positions."""
        if self.name == "kl":
            # KL(p || q) = sum p log p - sum p * logits + logsumexp(logits): three passes.
            p, plogp = self._kl_terms(logits.device)
            p, plogp = p[rows], plogp[rows]
            return plogp - (logits * p).sum(-1) + logits.logsumexp(-1)
        assert self.targets is not None
        target = self.rows(self.targets).to(logits.device)[rows]
        index = target.expand(logits.shape[0], -1).unsqueeze(-1)
        picked = logits.gather(-1, index).squeeze(-1)
        if self.name == "loss":
            return logits.logsumexp(-1) - picked
        if self.wrong is None:
            return picked - logits.mean(-1)
        other = self.rows(self.wrong).to(logits.device)[rows]
        return picked - logits.gather(-1, other.expand(logits.shape[0], -1).unsqueeze(-1))[..., 0]

    def __call__(self, logits: Float[Tensor, "configs batch pos d_vocab"]) -> Tensor:
        if logits.ndim != 4:
            raise ValueError(
                f"logits must have shape [configs, batch, pos, d_vocab], got {tuple(logits.shape)}"
            )
        if tuple(self.mask.shape) != tuple(logits.shape[1:3]):
            raise ValueError(
                f"mask {tuple(self.mask.shape)} does not match logits {tuple(logits.shape)}"
            )
        return self.row_values(self.rows(logits)).mean(-1)


def _lead(x: Tensor, mask: Tensor) -> int:
    """Leading dims of ``x`` before its ``[batch, pos]`` (x is ``[..., batch, pos]`` or
    ``[..., batch, pos, last]``: activations and logits have one trailing dim)."""
    return x.ndim - mask.ndim - 1 if x.ndim > mask.ndim else 0


def masked_loss(targets: Tensor, mask: Tensor) -> Metric:
    """Cross-entropy of ``targets`` (ids ``[batch, pos]``) averaged over the positions where the
    bool ``mask`` ``[batch, pos]`` is set."""
    return Metric("loss", mask.bool(), targets=targets)


def logit_diff(targets: Tensor, mask: Tensor, wrong: Tensor | None = None) -> Metric:
    """Target logit minus the mean logit (or minus the ``wrong`` id's logit), averaged over
    ``mask`` positions (linear in the logits). ``targets``, ``mask`` and ``wrong`` are
    ``[batch, pos]`` (ids, bools, ids)."""
    return Metric("logit_diff", mask.bool(), targets=targets, wrong=wrong)


def kl_to_clean(clean_logits: Tensor, mask: Tensor) -> Metric:
    """KL(clean || patched) of the next-token distributions, averaged over ``mask`` positions
    (``clean_logits`` ``[batch, pos, d_vocab]`` or its rows at the mask ``[n_rows, d_vocab]``)."""
    return Metric("kl", mask.bool(), clean_logits=clean_logits.detach())
