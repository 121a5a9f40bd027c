"""The final norm and the unembedding, applied only at the rows a metric reads, in chunks.

A metric reads a few positions (the repeated half of an induction probe, the last token of an
IOI prompt), and the unembedding is the largest matrix of a real model (``d_model x 48,262`` in
the zoo, ``x 50,257`` in GPT-2): computing logits at every position of every patched variant is
most of a naive patching loop's time and memory. :func:`metric_values` computes them for the
metric's rows only, ``_CHUNK`` logits at a time (working memory ``O(_CHUNK)`` floats, plus the
metric's rows of the residual stream), and reduces each chunk to the metric at once.

:class:`LowRank` is the same when the patched residual stream differs from a base one by
``u @ W`` with ``W`` of rank ``e`` (one head's ``W_O``, ``e = d_head``): with the final norm a
LayerNorm (or none), the logits are ``(centred(base) W_U' + u (centred(W) W_U')) / scale + b'``
(``W_U' = diag(w) W_U``, ``b' = b W_U + b_U``), so each patched row costs ``d_head x d_vocab``
instead of ``d_model x d_vocab``. Exact up to float rounding (tested against the full path).
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.discovery.metrics import Metric

# Logits per chunk (4 bytes each in float32: 32 MB).
_CHUNK = 8_000_000


def final_norm(model: Any, x: Tensor) -> Tensor:
    """The model's final norm (identity without one)."""
    return model.ln_final(x) if model.cfg.normalization_type is not None else x


def row_values(
    model: Any, metric: Metric, x: Float[Tensor, "k d_model"], rows: Tensor
) -> Float[Tensor, " k"]:
    """The metric's per-row values of residual rows ``x`` (before the final norm) that sit at
    the metric's rows ``rows [k]``; chunked, differentiable."""
    W_U, b_U = model.W_U, model.b_U
    per = max(1, _CHUNK // W_U.shape[1])
    out = []
    for i in range(0, x.shape[0], per):
        logits = torch.addmm(b_U, final_norm(model, x[i : i + per]), W_U)
        out.append(metric.row_values(logits[None], rows[i : i + per])[0])
    return torch.cat(out) if out else x.new_zeros(0)


def metric_values(
    model: Any, metric: Metric, x: Float[Tensor, "configs rows d_model"]
) -> Float[Tensor, " configs"]:
    """The metric of each config from its residual stream at the metric's rows (before the
    final norm). Differentiable; memory ``O(_CHUNK)`` floats beyond ``x``."""
    c, n, d = x.shape
    rows = torch.arange(n, device=x.device).repeat(c)
    return row_values(model, metric, x.reshape(c * n, d), rows).reshape(c, n).mean(-1)


def sparse_metric_values(
    model: Any,
    metric: Metric,
    x: Float[Tensor, "configs rows d_model"],
    clean: Float[Tensor, "rows d_model"],
    clean_values: Float[Tensor, " rows"],
) -> Float[Tensor, " configs"]:
    """:func:`metric_values` computing logits only at the rows where ``x`` differs from the
    clean rows (the others keep ``clean_values``): a patch that changes no row the metric
    reads costs no unembedding at all."""
    changed = (x != clean[None]).any(-1)  # [c, n]
    values = clean_values[None].expand(x.shape[0], -1).clone()
    ci, ni = changed.nonzero(as_tuple=True)
    values[ci, ni] = row_values(model, metric, x[ci, ni], ni)
    return values.mean(-1)


def supports_lowrank(model: Any) -> bool:
    """Whether :class:`LowRank` applies (final norm LN, LNPre or none)."""
    return model.cfg.normalization_type in (None, "LN", "LNPre")


class LowRank:
    """The metric of configs whose residual stream at the metric's rows is ``base + u @ W``.

    With the final norm a LayerNorm (or none), the logits are ``(centred(base) W_U' +
    u (centred(W) W_U')) / scale + b'``; ``A = centred(base) W_U'`` ``[rows, d_vocab]`` is
    computed once here, ``B = centred(W) W_U'`` ``[e, d_vocab]`` once per ``W`` (the last
    ``keep`` cached by key).
    Memory: ``A`` plus ``keep`` cached ``B`` s plus ``O(_CHUNK)`` floats.
    """

    def __init__(
        self, model: Any, metric: Metric, base: Float[Tensor, "rows d_model"], keep: int = 1
    ):
        cfg = model.cfg
        self.model, self.metric = model, metric
        W_U, b_U = model.W_U, model.b_U
        if cfg.normalization_type == "LN":
            ln = model.ln_final
            W_U, b_U = ln.w[:, None] * W_U, ln.b @ W_U + b_U
        self.W_U, self.b_U = W_U, b_U
        self.centre = cfg.normalization_type is not None
        self.eps = cfg.eps
        self.base = base - base.mean(-1, keepdim=True) if self.centre else base
        self.A = self.base @ W_U  # [n, V]
        self._B: dict[object, tuple[Tensor, Tensor]] = {}
        self.keep = keep

    def _factor(self, key: object, W: Tensor) -> tuple[Tensor, Tensor]:
        if key not in self._B:
            if len(self._B) >= self.keep:  # bounded: callers group configs by W
                self._B.pop(next(iter(self._B)))
            Wc = W - W.mean(-1, keepdim=True) if self.centre else W
            self._B[key] = (Wc, Wc @ self.W_U)
        return self._B[key]

    def shift(self, key: object, W: Float[Tensor, "e d_model"], u: Float[Tensor, "rows e"]) -> None:
        """Moves the base to ``base + u @ W`` (``A`` updated at rank ``e``)."""
        Wc, B = self._factor(key, W)
        self.base = self.base + u @ Wc
        self.A.addmm_(u, B)  # in place: A is this object's own

    def values(
        self, key: object, W: Float[Tensor, "e d_model"], u: Float[Tensor, "configs rows e"]
    ) -> Float[Tensor, " configs"]:
        Wc, B = self._factor(key, W)
        c, n, _ = u.shape
        if self.centre:
            x = self.base[None] + u @ Wc  # [c, n, d]: only for the scale
            inv = (x.pow(2).mean(-1) + self.eps).rsqrt()
        else:
            inv = u.new_ones(c, n)
        V = self.W_U.shape[1]
        # Row blocks across every config: A's rows broadcast, no gathered copy of them.
        per = max(1, _CHUNK // (V * c))
        cs = max(1, _CHUNK // V)  # configs per chunk when even one row is too many
        out = torch.empty(c, n, dtype=u.dtype, device=u.device)
        for r0 in range(0, n, per):
            rows = slice(r0, min(r0 + per, n))
            for c0 in range(0, c, cs):
                cc = slice(c0, c0 + cs)
                ub = u[cc, rows]  # [c', r, e]
                logits = torch.baddbmm(self.A[rows][None], ub, B.expand(ub.shape[0], -1, -1))
                logits = torch.addcmul(self.b_U, logits, inv[cc, rows, None])
                ids = torch.arange(rows.start, rows.stop, device=u.device)
                out[cc, rows] = self.metric.row_values(logits, ids)
        return out.mean(-1)
