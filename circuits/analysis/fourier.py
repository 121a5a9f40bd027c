"""The Fourier mechanism of modular addition (Nanda et al. 2023, "Progress measures for grokking").

A model that groks ``(a + b) mod p`` embeds ``a`` and ``b`` as ``cos/sin(w_k a)`` for a few key
frequencies ``w_k = 2 pi k / p``, multiplies them into ``cos/sin(w_k (a + b))`` and reads out
``logit(c) ~ sum_k alpha_k cos(w_k (a + b - c))``. This module measures that:

- :func:`fourier_basis`: the orthonormal basis over Z_p (constant, then cos/sin per frequency);
- :func:`embedding_norms`, :func:`unembedding_norms`: ``W_E`` and ``W_L = W_out W_U`` in it;
- :func:`neuron_fractions`, :func:`key_frequencies`: each MLP neuron's share of variance per
  frequency on all ``p^2`` inputs, and the frequencies the neurons use (found, not assumed);
- :func:`restricted_loss`, :func:`excluded_loss`: the loss with the logits projected onto, or
  with the projection removed from, the key frequencies' ``cos/sin(w_k (a + b))`` directions;
- :func:`gini`, :func:`progress_measures`: sparsity of those norms and all measures at once;
  :func:`training_measures`: the same during training, key frequencies found at each step.

Inputs are ordered a-major (pair ``a * p + b``) as ``ModularAdditionTask.pairs("all")`` gives.
Definitions: ``/work/shared/reference/definitions.md`` ("Modular addition and grokking").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from circuits.analysis.protocol import HookedModel, check_model
from circuits.validation import check_int

__all__ = [
    "KeyFrequencies",
    "all_logits",
    "embedding_norms",
    "excluded_loss",
    "fourier_basis",
    "frequency_norms",
    "gini",
    "key_frequencies",
    "logit_projection",
    "mechanism_summary",
    "neuron_activations",
    "neuron_fractions",
    "progress_measures",
    "restricted_loss",
    "training_measures",
    "unembedding_norms",
]


def _check_p(p: Any) -> int:
    check_int(p, "p", 3)
    if p % 2 == 0:
        raise ValueError(f"p must be odd (an even modulus has a Nyquist term), got {p}")
    return int(p)


def fourier_basis(p: int) -> tuple[Float[Tensor, "p p"], list[str]]:
    """The orthonormal Fourier basis over Z_p and its row names.

    Row 0 is the constant ``1/sqrt(p)``; rows ``2k - 1`` and ``2k`` are ``cos(w_k x)`` and
    ``sin(w_k x)`` over their norm ``sqrt(p / 2)``, ``k = 1 .. (p - 1) / 2``. Float64;
    ``O(p^2)`` memory. ``F @ X`` transforms a length-``p`` axis of ``X``.
    """
    p = _check_p(p)
    x = torch.arange(p, dtype=torch.float64)
    rows, names = [torch.ones(p, dtype=torch.float64)], ["const"]
    for k in range(1, (p - 1) // 2 + 1):
        rows += [torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)]
        names += [f"cos {k}", f"sin {k}"]
    basis = torch.stack(rows)
    return basis / basis.norm(dim=1, keepdim=True), names


def frequency_norms(x: Float[Tensor, "p ..."]) -> Float[Tensor, " n_freq"]:
    """Norm per frequency ``k = 1 .. (p-1)/2`` of a tensor in the Fourier basis (first axis):
    the cos and sin rows pooled, the constant row left out; float64."""
    p = _check_p(x.shape[0])
    flat = x.double().reshape(p, -1)
    sq = flat[1:].pow(2).sum(-1).reshape(-1, 2).sum(-1)
    return sq.sqrt()


def embedding_norms(model: HookedModel, p: int) -> Float[Tensor, " n_freq"]:
    """Per-frequency norm of ``F @ W_E[:p]`` (the "=" row dropped; norm over ``d_model``)."""
    check_model(model)
    basis, _ = fourier_basis(p)
    return frequency_norms(basis @ model.W_E[:p].detach().double())


def unembedding_norms(model: HookedModel, p: int) -> Float[Tensor, " n_freq"]:
    """Per-frequency norm of ``F @ W_L^T``, ``W_L = W_out @ W_U[:, :p]`` (neuron -> logit of
    the last MLP layer; norm over ``d_mlp``)."""
    check_model(model)
    if getattr(model.cfg, "attn_only", False):
        raise ValueError("unembedding_norms needs a model with MLPs (W_L = W_out W_U)")
    basis, _ = fourier_basis(p)
    w_l = model.W_out[-1].detach()  # type: ignore[attr-defined]
    w_l = w_l.double() @ model.W_U[:, :p].detach().double()
    return frequency_norms(basis @ w_l.T)


def _inputs(p: int, device: Any) -> Int[Tensor, "pair 3"]:
    a = torch.arange(p, device=device).repeat_interleave(p)
    b = torch.arange(p, device=device).repeat(p)
    return torch.stack([a, b, torch.full_like(a, p)], dim=1)


def _check_task_model(model: HookedModel, p: int) -> None:
    check_model(model)
    _check_p(p)
    if model.cfg.d_vocab < p + 1 or model.cfg.n_ctx < 3:
        raise ValueError(
            f"model (d_vocab={model.cfg.d_vocab}, n_ctx={model.cfg.n_ctx}) cannot read the "
            f"modular-addition inputs [a, b, =] for p={p} (needs d_vocab >= p + 1, n_ctx >= 3)"
        )


@torch.no_grad()
def all_logits(model: HookedModel, p: int, chunk: int = 4096) -> Float[Tensor, "pair p"]:
    """Last-position logits on all ``p^2`` inputs (a-major), the "=" class dropped; float64.

    Memory: ``O(p^3)`` for the result, ``O(chunk)`` activations at a time.
    """
    _check_task_model(model, p)
    check_int(chunk, "chunk", 1)
    device = model.W_E.device
    tokens = _inputs(p, device)
    out = [model(tokens[i : i + chunk])[:, -1, :p].double().cpu() for i in range(0, p * p, chunk)]
    return torch.cat(out)


@torch.no_grad()
def neuron_activations(
    model: HookedModel, p: int, layer: int = -1, chunk: int = 4096
) -> Float[Tensor, "p p d_mlp"]:
    """MLP activations (``mlp.hook_post``) at the last position on all ``(a, b)``: ``O(p^2
    d_mlp)`` memory."""
    _check_task_model(model, p)
    n_layers = model.cfg.n_layers
    if getattr(model.cfg, "attn_only", False):
        raise ValueError("neuron_activations needs a model with MLPs")
    layer = layer % n_layers if -n_layers <= layer < n_layers else layer
    check_int(layer, "layer", 0, n_layers - 1)
    name = f"blocks.{layer}.mlp.hook_post"
    tokens = _inputs(p, model.W_E.device)
    acts = []
    for i in range(0, p * p, chunk):
        _, cache = model.run_with_cache(tokens[i : i + chunk], names_filter=[name])
        acts.append(cache[name][:, -1].double().cpu())
    return torch.cat(acts).reshape(p, p, -1)


def neuron_fractions(acts: Float[Tensor, "p p neuron"]) -> Float[Tensor, "n_freq neuron"]:
    """Each neuron's share of its (centred) variance over all ``(a, b)`` that lies in the 3x3
    block ``{const, cos_k, sin_k}^2`` of the 2-D Fourier transform, per frequency ``k``.

    A neuron reading ``cos(w_k a + w_k b)`` has share 1 at ``k``. Zero-variance neurons get 0.
    """
    p = _check_p(acts.shape[0])
    if acts.ndim != 3 or acts.shape[1] != p:
        raise ValueError(f"acts must be [p, p, neuron], got {tuple(acts.shape)}")
    basis, _ = fourier_basis(p)
    x = acts.double() - acts.double().mean((0, 1))
    coeffs = torch.einsum("xyn,fx,gy->fgn", x, basis, basis).pow(2)
    total = coeffs.sum((0, 1))
    n_freq = (p - 1) // 2
    out = torch.empty(n_freq, acts.shape[2], dtype=torch.float64)
    for k in range(1, n_freq + 1):
        idx = torch.tensor([0, 2 * k - 1, 2 * k])
        out[k - 1] = coeffs[idx][:, idx].sum((0, 1))
    return torch.where(total > 0, out / total.clamp(min=1e-300), torch.zeros_like(out))


@dataclass(frozen=True)
class KeyFrequencies:
    """Frequencies the MLP neurons use.

    Attributes:
        freqs: Key frequencies ``k`` (1-based), ascending.
        neuron_freq: ``[d_mlp]`` each neuron's best frequency (``-1``: below ``threshold``).
        neuron_share: ``[d_mlp]`` its variance share at that frequency.
        explained: Fraction of neurons (of those with any variance) assigned a key frequency.
    """

    freqs: tuple[int, ...]
    neuron_freq: Tensor
    neuron_share: Tensor
    explained: float


def key_frequencies(
    acts: Float[Tensor, "p p neuron"], threshold: float = 0.5, min_neurons: int = 2
) -> KeyFrequencies:
    """The key frequencies: each neuron's best frequency by :func:`neuron_fractions` when its
    share reaches ``threshold``; a frequency is key when ``min_neurons`` or more neurons have it.
    (The paper's code takes every neuron's argmax; the threshold drops dead and mixed neurons.)
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    check_int(min_neurons, "min_neurons", 1)
    frac = neuron_fractions(acts)
    share, best = frac.max(0)
    neuron_freq = torch.where(share >= threshold, best + 1, torch.full_like(best, -1))
    ks, counts = torch.unique(neuron_freq[neuron_freq > 0], return_counts=True)
    freqs = tuple(int(k) for k, c in zip(ks, counts, strict=True) if c >= min_neurons)
    alive = int((acts.double().std((0, 1)) > 0).sum())
    n_key = sum(int((neuron_freq == k).sum()) for k in freqs)
    return KeyFrequencies(freqs, neuron_freq, share, n_key / max(alive, 1))


def _directions(p: int, freqs: tuple[int, ...] | list[int]) -> Float[Tensor, "pair dir"]:
    """Unit vectors ``u_k, v_k`` in R^{p^2}: normalised ``cos/sin(w_k (a + b))`` (a-major)."""
    basis, _ = fourier_basis(p)
    n_freq = (p - 1) // 2
    cols = []
    for k in freqs:
        check_int(k, "frequency", 1, n_freq)
        c, s = basis[2 * k - 1], basis[2 * k]
        cols.append((torch.outer(c, c) - torch.outer(s, s)).flatten() / math.sqrt(2))
        cols.append((torch.outer(s, c) + torch.outer(c, s)).flatten() / math.sqrt(2))
    if not cols:
        return torch.zeros(p * p, 0, dtype=torch.float64)
    return torch.stack(cols, dim=1)


def logit_projection(
    logits: Float[Tensor, "pair p"], freqs: tuple[int, ...] | list[int]
) -> Float[Tensor, "pair p"]:
    """``P_K(L)``: the logits projected, per output class, onto ``cos/sin(w_k (a + b))``."""
    p = _check_logits(logits)
    d = _directions(p, tuple(freqs))
    return d @ (d.T @ logits.double())


def _check_logits(logits: Tensor) -> int:
    if logits.ndim != 2 or logits.shape[0] != logits.shape[1] ** 2:
        raise ValueError(f"logits must be [p^2, p] (all pairs, a-major), got {tuple(logits.shape)}")
    return _check_p(logits.shape[1])


def _labels(p: int) -> Tensor:
    return (torch.arange(p).repeat_interleave(p) + torch.arange(p).repeat(p)) % p


def _ce(logits: Tensor, labels: Tensor, rows: Tensor | None) -> float:
    if rows is not None:
        logits, labels = logits[rows], labels[rows]
    return float(F.cross_entropy(logits.double(), labels))


def restricted_loss(
    logits: Float[Tensor, "pair p"],
    freqs: tuple[int, ...] | list[int],
    rows: Tensor | None = None,
) -> float:
    """Cross-entropy of ``P_K(L) + mean_pairs(L)`` (the key frequencies and the constant kept):
    low once the key frequencies alone compute the answer. ``rows``: the pairs to average over
    (default all, as in the paper's code)."""
    p = _check_logits(logits)
    kept = logit_projection(logits, freqs) + logits.double().mean(0, keepdim=True)
    return _ce(kept, _labels(p), rows)


def excluded_loss(
    logits: Float[Tensor, "pair p"],
    freqs: tuple[int, ...] | list[int],
    rows: Tensor | None = None,
) -> float:
    """Cross-entropy of ``L - P_K(L)`` (every key frequency removed at once); the paper
    measures it on the training pairs (``rows``): it rises as the Fourier circuit forms."""
    p = _check_logits(logits)
    return _ce(logits.double() - logit_projection(logits, freqs), _labels(p), rows)


def gini(x: Float[Tensor, " n"]) -> float:
    """Gini coefficient of non-negative ``x`` (Hurley and Rickard 2009): 0 when all entries are
    equal, ``1 - 1/n`` when one entry holds everything."""
    x = torch.as_tensor(x, dtype=torch.float64).flatten()
    if x.numel() == 0 or bool((x < 0).any()) or not bool(torch.isfinite(x).all()):
        raise ValueError("gini needs a non-empty tensor of finite non-negative values")
    if float(x.sum()) == 0:
        return 0.0
    n = x.numel()
    s = x.sort().values
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(2 * (i * s).sum() / (n * s.sum()) - (n + 1) / n)


def progress_measures(
    model: HookedModel,
    p: int,
    freqs: tuple[int, ...] | list[int],
    train_rows: Tensor,
) -> dict[str, float]:
    """Nanda et al.'s progress measures of ``model`` with key frequencies ``freqs`` (fix them
    from the final model to compare checkpoints): train/test loss, restricted loss (all pairs),
    excluded loss (training pairs), Gini of the embedding and unembedding frequency norms, and
    the total squared weight norm. ``train_rows``: indices (a-major) of the training pairs."""
    return _measures(model, p, all_logits(model, p), freqs, train_rows)


def _measures(
    model: HookedModel,
    p: int,
    logits: Tensor,
    freqs: tuple[int, ...] | list[int],
    train_rows: Tensor,
) -> dict[str, float]:
    labels = _labels(p)
    test = torch.ones(p * p, dtype=torch.bool)
    test[train_rows] = False
    out = {
        "train_loss": _ce(logits, labels, train_rows),
        "test_loss": _ce(logits, labels, test.nonzero()[:, 0]),
        "restricted_loss": restricted_loss(logits, freqs),
        "excluded_loss": excluded_loss(logits, freqs, train_rows),
        "gini_embed": gini(embedding_norms(model, p)),
    }
    if not getattr(model.cfg, "attn_only", False):
        out["gini_unembed"] = gini(unembedding_norms(model, p))
    params = model.parameters()  # type: ignore[attr-defined]
    out["weight_norm_sq"] = float(sum(t.detach().double().pow(2).sum() for t in params))
    return out


@torch.no_grad()
def training_measures(
    model: HookedModel, p: int, train_rows: Tensor, chunk: int = 4096
) -> dict[str, float]:
    """:func:`progress_measures` for a model in training: the key frequencies are the ones its
    neurons use *now* (no final model needed; ``n_key_frequencies`` says how many), so early
    on, with none, the restricted loss is the constant's and the excluded loss the full loss.
    One forward of all ``p^2`` inputs; memory ``O(p^2 (p + d_mlp))``. A model without MLPs
    has no neurons to find frequencies from: its restricted and excluded losses are left out.
    """
    _check_task_model(model, p)
    check_int(chunk, "chunk", 1)
    mlp = not getattr(model.cfg, "attn_only", False)
    name = f"blocks.{model.cfg.n_layers - 1}.mlp.hook_post"
    tokens = _inputs(p, model.W_E.device)
    logits, acts = [], []
    for i in range(0, p * p, chunk):
        out, cache = model.run_with_cache(tokens[i : i + chunk], names_filter=[name] if mlp else [])
        logits.append(out[:, -1, :p].double().cpu())
        if mlp:
            acts.append(cache[name][:, -1].double().cpu())
    if not mlp:
        measures = _measures(model, p, torch.cat(logits), (), train_rows)
        return {k: v for k, v in measures.items() if k not in ("restricted_loss", "excluded_loss")}
    freqs = key_frequencies(torch.cat(acts).reshape(p, p, -1)).freqs
    return {
        **_measures(model, p, torch.cat(logits), freqs, train_rows),
        "n_key_frequencies": float(len(freqs)),
    }


def mechanism_summary(
    model: HookedModel, p: int, train_rows: Tensor, threshold: float = 0.5
) -> dict[str, Any]:
    """Whether ``model`` adds mod ``p`` by the Fourier mechanism, in numbers: the key
    frequencies found from its neurons, the share of the embedding's squared frequency norm
    they hold, the share of neurons they explain, and the progress measures with them.

    Memory: ``O(p^2 d_mlp)`` (every neuron on every input) and ``O(p^3)`` (all logits).
    """
    key = key_frequencies(neuron_activations(model, p), threshold=threshold)
    norms = embedding_norms(model, p).pow(2)
    idx = torch.tensor([k - 1 for k in key.freqs], dtype=torch.long)
    share = float(norms[idx].sum() / norms.sum()) if key.freqs else 0.0
    return {
        "key_frequencies": list(key.freqs),
        "embedding_share": share,
        "neurons_explained": key.explained,
        **progress_measures(model, p, key.freqs, train_rows),
    }
