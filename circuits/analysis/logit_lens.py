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

from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuits.analysis.final_ln import apply_final_ln, final_ln_bias, full_final_ln, norm_type
from circuits.analysis.protocol import HookedModel, check_model
from circuits.analysis.resources import (
    CHUNK_BYTES,
    DEFAULT_THREADS,
    check_chunk_bytes,
    row_chunks,
    torch_threads,
)
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


def final_ln(
    model: HookedModel,
    resid: Float[Tensor, "... d_model"],
    ln: LnMode = "recompute",
    cache: Any = None,
) -> Float[Tensor, "... d_model"]:
    """Residual vectors through the final LayerNorm as the lens applies it (module doc)."""
    check_model(model)
    if ln == "recompute":
        return full_final_ln(model, resid)
    if ln == "cached":
        if cache is None:
            raise ValueError("ln='cached' needs the cache of the clean run")
        normed = apply_final_ln(model, resid, cache)
        b = final_ln_bias(model)
        return normed + b if b is not None else normed
    raise ValueError(f"ln={ln!r} must be 'recompute' or 'cached'")


def unembed(
    model: HookedModel,
    resid: Float[Tensor, "... d_model"],
    ln: LnMode = "recompute",
    cache: Any = None,
) -> Float[Tensor, "... d_vocab"]:
    """Logits of residual vectors through the final LayerNorm (see module doc) and ``W_U``.

    All of them at once: O(prod(...) d_vocab) memory; :class:`LensResult` chunks instead.
    """
    check_model(model)
    W_U, b_U = model.W_U.detach(), model.b_U.detach()
    return final_ln(model, resid, ln, cache) @ W_U + b_U


class LensResult:
    """Logits of a lens at every point of the residual stream, formed only where read.

    Built from the residual stream after the final LayerNorm at each point (``normed``,
    ``[point, batch, pos, d_model]``) and the unembedding, or from logits computed elsewhere
    (``LensResult(logits, labels, final_logits)``, the earlier form). The statistics
    (:meth:`target_prob`, :meth:`target_rank`, :meth:`top_k`, :meth:`kl_to_final`) unembed
    ``chunk_bytes`` of rows at a time: peak O(chunk_bytes) beyond the ``[point, batch, pos,
    d_model]`` input, never ``[point, batch, pos, d_vocab]``. :attr:`logits`,
    :attr:`final_logits` and :meth:`log_probs` build that whole object when asked for it.

    Attributes:
        labels: Name of each point (``"0_pre"``, ..., ``"final_post"``).
    """

    def __init__(
        self,
        logits: Float[Tensor, "point batch pos d_vocab"] | None = None,
        labels: list[str] | None = None,
        final_logits: Float[Tensor, "batch pos d_vocab"] | None = None,
        *,
        normed: Float[Tensor, "point batch pos d_model"] | None = None,
        final_normed: Float[Tensor, "batch pos d_model"] | None = None,
        unembed: tuple[Tensor, Tensor] | None = None,
        chunk_bytes: int = CHUNK_BYTES,
    ):
        if labels is None:
            raise TypeError("LensResult needs labels")
        if (logits is None) == (normed is None):
            raise TypeError("LensResult needs either logits or normed residuals (not both)")
        if normed is not None and (final_normed is None or unembed is None):
            raise TypeError("normed residuals need final_normed and unembed=(W_U, b_U)")
        if logits is not None and final_logits is None:
            raise TypeError("logits need final_logits")
        self.labels = list(labels)
        self.chunk_bytes = check_chunk_bytes(chunk_bytes)
        self._logits, self._final_logits = logits, final_logits
        self._normed, self._final_normed, self._unembed = normed, final_normed, unembed
        source = logits if logits is not None else normed
        assert source is not None
        self.n_points, self.batch, self.pos = source.shape[:3]
        self.d_vocab = (
            logits.shape[-1] if logits is not None else unembed[0].shape[-1]  # type: ignore[index]
        )
        if len(self.labels) != self.n_points:
            raise ValueError(f"{len(self.labels)} labels for {self.n_points} points")

    def __repr__(self) -> str:
        kind = "logits" if self._logits is not None else "lazy"
        return (
            f"LensResult({kind}, points={self.labels}, batch={self.batch}, pos={self.pos}, "
            f"d_vocab={self.d_vocab})"
        )

    # --- rows of logits: row r of point p is position r of the flattened [batch, pos] ---
    def _rows(self, point: int, rows: slice) -> Tensor:
        if self._logits is not None:
            return self._logits[point].reshape(-1, self.d_vocab)[rows]
        assert self._normed is not None and self._unembed is not None
        W_U, b_U = self._unembed
        return self._normed[point].reshape(-1, W_U.shape[0])[rows] @ W_U + b_U

    def _final_rows(self, rows: slice) -> Tensor:
        if self._final_logits is not None:
            return self._final_logits.reshape(-1, self.d_vocab)[rows]
        assert self._final_normed is not None and self._unembed is not None
        W_U, b_U = self._unembed
        return self._final_normed.reshape(-1, W_U.shape[0])[rows] @ W_U + b_U

    def _map(self, fn: Any, copies: int = 2) -> Tensor:
        """``fn(point, rows, logits_chunk) -> [n, ...]`` over the chunks: ``[point, b, p, ...]``."""
        out = []
        with torch.no_grad():
            for point in range(self.n_points):
                parts = [
                    fn(point, rows, self._rows(point, rows))
                    for rows in row_chunks(
                        self.batch * self.pos, self.d_vocab, self.chunk_bytes, copies
                    )
                ]
                out.append(torch.cat(parts))
        stacked = torch.stack(out)
        return stacked.view(self.n_points, self.batch, self.pos, *stacked.shape[2:])

    @property
    def logits(self) -> Float[Tensor, "point batch pos d_vocab"]:
        """Every point's logits: O(point batch pos d_vocab) memory (built on each access)."""
        if self._logits is not None:
            return self._logits
        return self._map(lambda p, r, chunk: chunk, copies=1)

    @property
    def final_logits(self) -> Float[Tensor, "batch pos d_vocab"]:
        """The model's own output ``[batch, pos, d_vocab]`` (built on each access if lazy)."""
        if self._final_logits is not None:
            return self._final_logits
        with torch.no_grad():
            return self._final_rows(slice(None)).view(self.batch, self.pos, self.d_vocab)

    def log_probs(self) -> Float[Tensor, "point batch pos d_vocab"]:
        """Log-probabilities at every point: the whole O(point batch pos d_vocab) object."""
        return self.logits.log_softmax(-1)

    def top_k(
        self, k: int = 5
    ) -> tuple[Float[Tensor, "point batch pos k"], Int[Tensor, "point batch pos k"]]:
        """Probabilities and ids of the ``k`` most likely tokens at every point and position."""
        check_int(k, "k", 1, self.d_vocab)

        def fn(point: int, rows: slice, logits: Tensor) -> Tensor:
            values, ids = logits.topk(k, dim=-1)
            probs = (values - logits.logsumexp(-1, keepdim=True)).exp()
            return torch.stack([probs, ids.to(probs.dtype)], dim=-1)

        both = self._map(fn)
        return both[..., 0], both[..., 1].long()

    def _check_targets(self, targets: Tensor) -> Tensor:
        # Integer ids in range only: a float 3.9 is refused, not truncated to 3.
        targets = check_tokens(targets, self.d_vocab, self.pos, name="targets")
        if targets.shape != (self.batch, self.pos):
            raise ValueError(
                f"targets shape {tuple(targets.shape)} must be [batch, pos] = "
                f"{(self.batch, self.pos)}"
            )
        return targets

    def target_prob(self, targets: Int[Tensor, "batch pos"]) -> Float[Tensor, "point batch pos"]:
        """Probability of ``targets`` at every point."""
        flat = self._check_targets(targets).flatten()

        def fn(point: int, rows: slice, logits: Tensor) -> Tensor:
            picked = logits.gather(-1, flat[rows, None]).squeeze(-1)
            return (picked - logits.logsumexp(-1)).exp()

        return self._map(fn)

    def target_rank(self, targets: Int[Tensor, "batch pos"]) -> Int[Tensor, "point batch pos"]:
        """Rank of ``targets`` (0: the top prediction; ties resolved in its favour)."""
        flat = self._check_targets(targets).flatten()

        def fn(point: int, rows: slice, logits: Tensor) -> Tensor:
            picked = logits.gather(-1, flat[rows, None])
            return (logits > picked).sum(-1)

        return self._map(fn)

    def read(
        self, targets: Int[Tensor, "batch pos"], k: int = 1
    ) -> tuple[
        Float[Tensor, "point batch pos"],
        Float[Tensor, "point batch pos k"],
        Int[Tensor, "point batch pos k"],
    ]:
        """:meth:`target_prob` and :meth:`top_k` from one pass over the logits (half the cost
        of calling both): the target's probability, and the top ``k`` probabilities and ids."""
        flat = self._check_targets(targets).flatten()
        check_int(k, "k", 1, self.d_vocab)

        def fn(point: int, rows: slice, logits: Tensor) -> Tensor:
            lse = logits.logsumexp(-1, keepdim=True)
            picked = logits.gather(-1, flat[rows, None])
            values, ids = logits.topk(k, dim=-1)
            probs = (torch.cat([picked, values], -1) - lse).exp()
            return torch.cat([probs, ids.to(probs.dtype)], -1)

        both = self._map(fn)
        return both[..., 0], both[..., 1 : k + 1], both[..., k + 1 :].long()

    def kl_to_final(self) -> Float[Tensor, "point batch pos"]:
        """``KL(final || lens)`` in nats at every point and position."""

        def fn(point: int, rows: slice, logits: Tensor) -> Tensor:
            return kl_divergence(self._final_rows(rows), logits)

        return self._map(fn, copies=4)


def logit_lens(
    model: HookedModel,
    tokens: Int[Tensor, "batch pos"],
    sublayers: bool = False,
    ln: LnMode = "recompute",
    cache: Any = None,
    *,
    threads: int | None = DEFAULT_THREADS,
    chunk_bytes: int = CHUNK_BYTES,
) -> LensResult:
    """The logit lens of ``model`` on ``tokens`` at every layer (and sub-layer, optionally).

    Args:
        sublayers: Add a point between attention and MLP (models with MLPs).
        ln: How the final LayerNorm is applied (module doc).
        cache: A cache of ``tokens`` (computed if None).
        threads: Torch threads while it runs (restored after; None: torch's setting).
        chunk_bytes: Working-set budget of the result's statistics (see :class:`LensResult`).

    Memory: one forward pass without its output and the residual stream at every point,
    O(point batch pos d_model); no logits until a statistic of the result asks for them
    (then ``chunk_bytes`` at a time). The final point's logits equal the model's output to
    float rounding.
    """
    check_model(model)
    tokens = check_tokens(tokens, model.cfg.d_vocab, model.cfg.n_ctx)
    if ln not in ("recompute", "cached"):
        raise ValueError(f"ln={ln!r} must be 'recompute' or 'cached'")
    if not isinstance(sublayers, bool):
        raise TypeError(f"sublayers must be a bool, got {sublayers!r}")
    check_chunk_bytes(chunk_bytes)
    names = resid_names(model, sublayers)
    if ln == "cached" and norm_type(model) is not None:
        names.append("ln_final.hook_scale")
    with torch_threads(threads), torch.no_grad():
        if cache is None:
            _, cache = model.run_with_cache(
                tokens, names_filter=lambda n: n in set(names), return_type=None
            )
        else:
            check_cache(model, tokens, cache, names)
        resid, labels = accumulated_resid(model, cache, sublayers)
        normed = final_ln(model, resid, ln, cache)
        final = full_final_ln(model, resid[-1])
    W_U, b_U = model.W_U.detach(), model.b_U.detach()
    return LensResult(
        None,
        labels,
        normed=normed,
        final_normed=final,
        unembed=(W_U, b_U),
        chunk_bytes=chunk_bytes,
    )
