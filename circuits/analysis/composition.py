"""Q-, K- and V-composition scores between heads, with the random-matrix baseline.

For an earlier head ``h1`` and a later head ``h2`` (row-vector convention; Elhage et al. 2021):

- Q: ``||W_OV^{h1} W_QK^{h2}||_F / (||W_OV^{h1}||_F ||W_QK^{h2}||_F)``
- K: the same with ``(W_QK^{h2})^T``;  V: with ``W_OV^{h2}``.

Raw scores equal TransformerLens's ``all_composition_scores`` (same zero for pairs that are not
strictly earlier-to-later). They are computed from factored forms: ``W_V = Q R`` (QR) gives
``||W_V W_O X||_F = ||R W_O X||_F``, so each head collapses to a ``d_head x d_model`` (or
``d_model x d_head``) matrix without an SVD, and all pairs into one later layer are scored by a
single matrix product. Nothing ``d_model x d_model`` is formed per pair.

A head that writes nothing (``W_O = 0``) or reads nothing has a zero norm in the denominator;
its scores are defined as 0 (it composes with nothing), never NaN. ``d_head > d_model`` works
(the factored forms are then ``d_model`` wide).

LayerNorm: scores use the raw weights by default (as TransformerLens does on a model whose
weights were not processed). ``fold_ln=True`` folds each ``ln1``'s centring and gain into the
reading weights ``W_Q/W_K/W_V`` first; the per-token scale and the biases are not folded.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from circuits.analysis.protocol import HookedModel, check_model
from circuits.analysis.resources import DEFAULT_THREADS, torch_threads
from circuits.analysis.weights import get_weights, head_name
from circuits.validation import check_int, check_layer_head

Mode = Literal["Q", "K", "V"]
MODES: tuple[Mode, ...] = ("Q", "K", "V")
Scores = Float[Tensor, "n_layers n_heads n_layers n_heads"]


def _r(x: Tensor) -> Tensor:
    """The R of a reduced QR, ``[..., d_head, d_head]``: ``x = Q R`` with orthonormal Q."""
    return torch.linalg.qr(x, mode="r").R


@dataclass(frozen=True)
class _Collapsed:
    """Per-head collapsed forms: OV as a writer, and the three reading matrices."""

    left: Tensor  # [..., d_head, d_model]: ||W_V W_O X||_F = ||left X||_F
    right: dict[str, Tensor]  # mode -> [..., d_model, d_head]: ||X M||_F = ||X right||_F

    @classmethod
    def of(
        cls, W_Q: Tensor, W_K: Tensor, W_V: Tensor, W_O: Tensor, chol: bool = False
    ) -> _Collapsed:
        # Any R with R^T R = W^T W works. QR is robust to rank-deficient (hand-built) heads;
        # Cholesky of the Gram is ~20x faster and fine for well-conditioned random factors.
        r = _chol_r if chol else _r
        R_Q, R_K, R_V = r(W_Q), r(W_K), r(W_V)
        R_O = r(W_O.transpose(-2, -1))
        right = {
            "Q": W_Q @ R_K.transpose(-2, -1),  # M = W_Q W_K^T
            "K": W_K @ R_Q.transpose(-2, -1),  # M = W_K W_Q^T
            "V": W_V @ R_O.transpose(-2, -1),  # M = W_V W_O
        }
        return cls(R_V @ W_O, right)


def _chol_r(x: Tensor) -> Tensor:
    # The Gram is singular when d_head > d_model (or a factor is rank-deficient): QR then.
    L, info = torch.linalg.cholesky_ex(x.transpose(-2, -1) @ x)
    if bool((info != 0).any()):
        return _r(x)
    return L.transpose(-2, -1)


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    """``num / den``, 0 where ``den`` is 0: a head that writes or reads nothing composes with
    nothing (its score is defined as 0, not NaN)."""
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), 0.0)


def _pair_scores(left: Tensor, right: Tensor) -> Scores:
    """Scores for stacked collapsed forms ``left [L, H, e, d]``, ``right [L, H, d, e]``."""
    n_layers, n_heads = left.shape[:2]
    out = left.new_zeros(n_layers, n_heads, n_layers, n_heads)
    l_norm = left.flatten(-2).norm(dim=-1)  # [L, H]
    r_norm = right.flatten(-2).norm(dim=-1)
    for l2 in range(1, n_layers):
        # Every earlier head against every head of layer l2 in one GEMM.
        lhs = einops.rearrange(left[:l2], "l h e d -> (l h e) d")
        rhs = einops.rearrange(right[l2], "h d e -> d (h e)")
        prod = einops.rearrange(
            lhs @ rhs,
            "(l h1 e1) (h2 e2) -> l h1 h2 (e1 e2)",
            l=l2,
            h1=n_heads,
            h2=n_heads,
        )
        den = l_norm[:l2, :, None] * r_norm[l2][None, None, :]
        out[:l2, :, l2] = _ratio(prod.norm(dim=-1), den)
    return out


def composition_scores(model: HookedModel, mode: Mode, fold_ln: bool = False) -> Scores:
    """Raw ``mode``-composition scores ``[layer1, head1, layer2, head2]``.

    Entry ``[l1, h1, l2, h2]`` is how much head ``(l1, h1)`` writes into what ``(l2, h2)``
    reads with its queries (Q), keys (K) or values (V). Zero unless ``l1 < l2``. Matches
    ``TransformerBridge.all_composition_scores(mode)``.

    Memory O(n_layers n_heads d_model d_head) collapsed factors plus one layer's pair products
    O(n_layers n_heads^2 d_head^2); nothing ``d_model x d_model`` per pair.
    """
    check_model(model)
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} must be one of {MODES}")
    with torch.no_grad():
        w = get_weights(model, fold_ln=fold_ln)
        c = _Collapsed.of(w.W_Q, w.W_K, w.W_V, w.W_O)
        return _pair_scores(c.left, c.right[mode])


@functools.lru_cache(maxsize=64)
def random_baseline(
    d_model: int, d_head: int, n_samples: int = 64, seed: int = 0
) -> tuple[float, float]:
    """Mean and std of the composition score of two random rank-``d_head`` matrices.

    Each matrix is a product of Gaussian factors with a head's shapes (``[d_model, d_head]``
    times ``[d_head, d_model]``); Gaussian factors are rotation invariant, so one baseline
    serves Q, K and V. About ``1/sqrt(d_model)``. Seeded and cached: it depends only on shapes.
    """
    check_int(d_model, "d_model", 1)
    check_int(d_head, "d_head", 1)
    check_int(n_samples, "n_samples", 2)
    check_int(seed, "seed")
    gen = torch.Generator().manual_seed(seed)

    def factors() -> tuple[Tensor, Tensor]:
        a = torch.randn(n_samples, d_model, d_head, generator=gen)
        return a, torch.randn(n_samples, d_head, d_model, generator=gen)

    (a1, b1), (a2, b2) = factors(), factors()
    left = _Collapsed.of(a1, a1, a1, b1, chol=True).left  # [N, e, d]
    right = _Collapsed.of(a2, a2, a2, b2, chol=True).right["V"]  # [N, d, e]
    scores = _ratio(
        (left @ right).flatten(-2).norm(dim=-1),
        left.flatten(-2).norm(dim=-1) * right.flatten(-2).norm(dim=-1),
    )
    return float(scores.mean()), float(scores.std())


@dataclass(frozen=True)
class CompositionScores:
    """Q, K and V composition scores of a model, with the random baseline.

    Attributes:
        q, k, v: Raw scores ``[layer1, head1, layer2, head2]``, zero unless ``layer1 < layer2``.
        baseline: Estimated mean score of random matrices of the heads' shapes.
        baseline_std: Std of that score across samples (spread, not the error of the mean).
        n_samples: Samples behind the estimate.
    """

    q: Scores
    k: Scores
    v: Scores
    baseline: float
    baseline_std: float
    n_samples: int

    @property
    def valid(self) -> Tensor:
        """Bool ``[L, H, L, H]``: pairs with ``layer1 < layer2``."""
        n_layers, n_heads = self.q.shape[:2]
        layers = torch.arange(n_layers)
        ok = layers[:, None] < layers[None, :]
        return ok[:, None, :, None].expand(n_layers, n_heads, n_layers, n_heads)

    def raw(self, mode: Mode) -> Scores:
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} must be one of {MODES}")
        return {"Q": self.q, "K": self.k, "V": self.v}[mode]

    def excess(self, mode: Mode) -> Scores:
        """Raw minus the baseline on valid pairs (zero elsewhere): > 0 means above chance."""
        return torch.where(self.valid, self.raw(mode) - self.baseline, 0.0)

    def top_sources(self, mode: Mode, layer: int, head: int, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` earlier heads composing most into ``(layer, head)``, as ``(name, excess)``."""
        n_layers, n_heads = self.q.shape[:2]
        check_layer_head(layer, head, n_layers, n_heads)
        check_int(k, "k", 1)
        ex = self.excess(mode)[:layer, :, layer, head]
        if ex.numel() == 0:
            return []
        values, flat = ex.flatten().topk(min(k, ex.numel()))
        return [
            (head_name(int(i) // n_heads, int(i) % n_heads), float(v))
            for v, i in zip(values, flat, strict=True)
        ]


def all_composition_scores(
    model: HookedModel,
    n_samples: int = 64,
    seed: int = 0,
    fold_ln: bool = False,
    *,
    threads: int | None = DEFAULT_THREADS,
) -> CompositionScores:
    """Q, K and V composition for every (earlier head, later head) pair, plus the baseline.

    Args:
        model: Any model with TransformerLens weight properties.
        n_samples: Random matrix pairs for the baseline (cached per shape and seed).
        seed: Seed of the baseline.
        fold_ln: Fold ``ln1`` centring and gains into the reading weights (see module doc).
        threads: Torch threads while it runs (restored after; None: torch's setting).

    Memory: as :func:`composition_scores`, three times over; the baseline O(n_samples d_model
    d_head).
    """
    check_model(model)
    with torch_threads(threads), torch.no_grad():
        w = get_weights(model, fold_ln=fold_ln)
        c = _Collapsed.of(w.W_Q, w.W_K, w.W_V, w.W_O)
        q, k, v = (_pair_scores(c.left, c.right[mode]) for mode in MODES)
        d_model, d_head = w.W_Q.shape[-2:]
        mean, std = random_baseline(int(d_model), int(d_head), n_samples, seed)
    return CompositionScores(q, k, v, mean, std, n_samples)


def expected_random_score(d_model: int) -> float:
    """The large-``d`` approximation ``1/sqrt(d_model)`` (for reports; estimates are better)."""
    return 1.0 / math.sqrt(d_model)
