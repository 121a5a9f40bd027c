"""QK and OV circuits of attention heads as ``FactoredMatrix`` objects, and their statistics.

Row-vector convention (TransformerLens): ``W_OV = W_V W_O`` maps what a head reads to what it
writes, ``W_QK = W_Q W_K^T`` scores (query residual, key residual). Circuits over the vocabulary
(``d_vocab x d_vocab``) stay factored through ``d_head``; nothing of that size is materialised
except, in row chunks, by :func:`diagonal_accuracy`. Asking for every head at once holds
factors of ``[n_layers, n_heads, d_vocab, d_head]`` (1.9 GB each at GPT-2 small's shape): pass
``layer`` (and ``head``) to hold less. Eigenvalues and copying scores go through the small
``B A`` product, or through :func:`full_ov_spectrum` / :func:`full_qk_spectrum`, which have the
same nonzero eigenvalues and never touch ``d_vocab`` beyond one ``W_U W_E`` product.

All circuits use the raw weights unless ``fold_ln=True`` (see
:func:`circuits.analysis.weights.get_weights`: LayerNorm centring and gains are folded into the
reading weights; the per-token scale and biases are not). Biases are never included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.FactoredMatrix import FactoredMatrix

from circuits.analysis.protocol import HookedModel, check_model
from circuits.analysis.resources import (
    CHUNK_BYTES,
    DEFAULT_THREADS,
    check_chunk_bytes,
    rows_per_chunk,
    torch_threads,
)
from circuits.analysis.weights import Weights, check_head, get_weights
from circuits.validation import check_int


def _select(w: Weights, model: HookedModel, layer: int | None, head: int | None) -> tuple[Any, ...]:
    """Index into ``[n_layers, n_heads, ...]``: all heads, one layer, or one head."""
    if layer is None:
        if head is not None:
            raise ValueError(f"head={head} given without a layer")
        return ()
    check_head(model, layer, head)
    return (layer,) if head is None else (layer, head)


Index = Tensor | range | slice | None


def _index(index: Index, name: str) -> Any:
    """Rows or columns to keep: None (all), a range, a slice or a 1-d tensor of ids."""
    if index is None:
        return slice(None)
    if isinstance(index, slice):
        return index
    if isinstance(index, range):
        return slice(index.start, index.stop, index.step)
    if isinstance(index, Tensor) and index.ndim == 1 and not index.is_floating_point():
        return index.long()
    raise TypeError(f"{name} must be None, a range, a slice or a 1-d tensor of ids, got {index!r}")


def _weights(model: HookedModel, fold_ln: bool) -> Weights:
    return get_weights(model, fold_ln=fold_ln)


def ov_circuit(
    model: HookedModel, layer: int | None = None, head: int | None = None, fold_ln: bool = False
) -> FactoredMatrix:
    """``W_V W_O`` per head: ``[n_layers, n_heads, d_model, d_model]``, fewer dims when indexed.

    Memory: the factors, O(n_layers n_heads d_model d_head).
    """
    check_model(model)
    w = _weights(model, fold_ln)
    idx = _select(w, model, layer, head)
    return FactoredMatrix(w.W_V[idx], w.W_O[idx])


def qk_circuit(
    model: HookedModel, layer: int | None = None, head: int | None = None, fold_ln: bool = False
) -> FactoredMatrix:
    """``W_Q W_K^T`` per head (rows: query residual, columns: key residual).

    Memory: the factors, O(n_layers n_heads d_model d_head).
    """
    check_model(model)
    w = _weights(model, fold_ln)
    idx = _select(w, model, layer, head)
    return FactoredMatrix(w.W_Q[idx], w.W_K[idx].transpose(-2, -1))


def full_ov_circuit(
    model: HookedModel,
    layer: int | None = None,
    head: int | None = None,
    fold_ln: bool = False,
    rows: Index = None,
    cols: Index = None,
) -> FactoredMatrix:
    """``W_E W_V W_O W_U``: logits written when the head attends to token (row), ``[.., V, V]``.

    ``rows``/``cols`` (token ids, a range or a slice) keep a block: a figure's 64 x 64 corner.
    Memory O(n_layers n_heads (rows + cols) d_head) for the selected heads; never ``V x V``.
    """
    check_model(model)
    w = _weights(model, fold_ln)
    idx = _select(w, model, layer, head)
    r, c = _index(rows, "rows"), _index(cols, "cols")
    return FactoredMatrix(w.W_E[r] @ w.W_V[idx], w.W_O[idx] @ w.W_U[:, c])


def full_qk_circuit(
    model: HookedModel,
    layer: int | None = None,
    head: int | None = None,
    fold_ln: bool = False,
    rows: Index = None,
    cols: Index = None,
) -> FactoredMatrix:
    """``W_E W_Q W_K^T W_E^T``: attention score of query token (row) on key token (column).

    Unscaled (divide by ``sqrt(d_head)`` for the scores the model uses).

    ``rows``/``cols`` (token ids, a range or a slice) keep a block: a figure's 64 x 64 corner.
    Memory O(n_layers n_heads (rows + cols) d_head) for the selected heads; never ``V x V``.
    """
    check_model(model)
    w = _weights(model, fold_ln)
    idx = _select(w, model, layer, head)
    r, c = _index(rows, "rows"), _index(cols, "cols")
    return FactoredMatrix(w.W_E[r] @ w.W_Q[idx], w.W_K[idx].transpose(-2, -1) @ w.W_E[c].T)


def positional_qk_circuit(
    model: HookedModel,
    layer: int | None = None,
    head: int | None = None,
    fold_ln: bool = False,
    rows: Index = None,
    cols: Index = None,
) -> FactoredMatrix:
    """``W_pos W_Q W_K^T W_pos^T``: score of query position (row) on key position, unscaled.

    ``rows``/``cols`` (positions, a range or a slice) keep a block: a figure's 64 x 64 corner.
    Memory O(n_layers n_heads (rows + cols) d_head) for the selected heads; never ``V x V``.
    """
    check_model(model)
    w = _weights(model, fold_ln)
    idx = _select(w, model, layer, head)
    r, c = _index(rows, "rows"), _index(cols, "cols")
    return FactoredMatrix(w.W_pos[r] @ w.W_Q[idx], w.W_K[idx].transpose(-2, -1) @ w.W_pos[c].T)


def positional_attention(
    model: HookedModel, layer: int, head: int, fold_ln: bool = False
) -> Float[Tensor, "n_ctx n_ctx"]:
    """The positional QK circuit read as attention: scaled by ``1/sqrt(d_head)``, causal, softmax.

    The attention a head would pay from position to position if only positions mattered.
    Memory O(n_ctx^2) (the object returned; 16 MB at n_ctx 2048).
    """
    check_model(model)
    scores = positional_qk_circuit(model, layer, head, fold_ln).AB / model.cfg.d_head**0.5
    n = scores.shape[-1]
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    return scores.masked_fill(~causal, float("-inf")).softmax(-1)


def k_composition_circuit(
    model: HookedModel, layer1: int, head1: int, layer2: int, head2: int, fold_ln: bool = False
) -> FactoredMatrix:
    """Token-level K-composition of head ``(layer1, head1)`` into the keys of ``(layer2, head2)``.

    ``W_E W_Q^{h2} (W_E W_OV^{h1} W_K^{h2})^T``, ``[d_vocab, d_vocab]``: the score head 2 gives
    from query token (row) to a key position whose ``h1`` output came from attending to token
    (column). For an induction head fed by a previous-token head this is close to diagonal.
    Memory O(d_vocab d_head): two factors, never ``V x V``.
    """
    check_model(model)
    check_head(model, layer1, head1)
    check_head(model, layer2, head2)
    if layer1 >= layer2:
        raise ValueError(f"layer1={layer1} must be earlier than layer2={layer2}")
    w = _weights(model, fold_ln)
    left = w.W_E @ w.W_Q[layer2, head2]  # [V, d_head]
    # Small factors first: never a [V, d_model] intermediate beyond W_E itself.
    keys = w.W_E @ (w.W_V[layer1, head1] @ w.W_O[layer1, head1] @ w.W_K[layer2, head2])
    return FactoredMatrix(left, keys.T)


def full_ov_spectrum(
    model: HookedModel, layer: int | None = None, head: int | None = None, fold_ln: bool = False
) -> FactoredMatrix:
    """``W_V W_O W_U W_E``, ``[.., d_model, d_model]``: the full OV circuit turned around.

    ``AB`` and ``BA`` have the same nonzero eigenvalues, so this small circuit has exactly the
    nonzero eigenvalues (and :func:`copying_score`) of :func:`full_ov_circuit`, at any
    vocabulary size. Memory O(n_layers n_heads d_model d_head + d_model^2); time one
    ``d_model x d_vocab x d_model`` product (``W_U W_E``), never anything vocabulary-squared.
    """
    check_model(model)
    w = _weights(model, fold_ln)
    idx = _select(w, model, layer, head)
    return FactoredMatrix(w.W_V[idx], w.W_O[idx] @ (w.W_U @ w.W_E))


def full_qk_spectrum(
    model: HookedModel, layer: int | None = None, head: int | None = None, fold_ln: bool = False
) -> FactoredMatrix:
    """``W_Q W_K^T W_E^T W_E``, ``[.., d_model, d_model]``: the full QK circuit turned around.

    Same nonzero eigenvalues as :func:`full_qk_circuit` (see :func:`full_ov_spectrum`).
    """
    check_model(model)
    w = _weights(model, fold_ln)
    idx = _select(w, model, layer, head)
    return FactoredMatrix(w.W_Q[idx], w.W_K[idx].transpose(-2, -1) @ (w.W_E.T @ w.W_E))


def _check_square(circuit: object) -> None:
    if not isinstance(circuit, FactoredMatrix):
        raise TypeError(f"circuit must be a FactoredMatrix, got {type(circuit).__name__}")
    if circuit.ldim != circuit.rdim:
        raise ValueError(f"circuit must be square, got {circuit.ldim} x {circuit.rdim}")


def copying_score(circuit: FactoredMatrix) -> Float[Tensor, "..."]:
    """``sum(eig) / sum(|eig|)`` of a square circuit, in ``[-1, 1]``; about 0 for random.

    Positive eigenvalues mean the circuit maps a token to (a boost of) itself. Uses the
    eigenvalues of ``B A`` (``d_head x d_head``), which are those of ``A B`` minus zeros.
    Memory O(... mdim^2) beyond the factors.
    """
    _check_square(circuit)
    eig = eigenvalues(circuit)
    return eig.sum(-1).real / eig.abs().sum(-1).clamp_min(1e-12)


def eigenvalues(circuit: FactoredMatrix) -> Tensor:
    """Eigenvalues of a square circuit through the small ``B A`` (``[..., mdim]``, complex).

    Raises:
        ValueError: The circuit has NaN or infinite entries (weights with a NaN), which the
            eigen-solver would otherwise fail on.
    """
    _check_square(circuit)
    BA = circuit.B @ circuit.A
    # A meta tensor has no values to check (shape-only runs must not copy back).
    if BA.device.type != "meta" and not bool(torch.isfinite(BA).all()):
        raise ValueError(
            "the circuit has NaN or infinite entries: the model's weights are not all finite"
        )
    return torch.linalg.eigvals(BA)


def diagonal_accuracy(
    circuit: FactoredMatrix,
    k: int = 1,
    chunk: int = 1024,
    *,
    sample: int | None = None,
    seed: int = 0,
    chunk_bytes: int = CHUNK_BYTES,
) -> Float[Tensor, "..."]:
    """Fraction of rows whose diagonal entry is among the row's top ``k`` (ties count as hits).

    For a full OV circuit: how often attending to token ``t`` raises ``t``'s logit the most. For
    a full QK circuit: how often a query token prefers a key of the same token.

    Args:
        chunk: At most this many rows per block.
        sample: Estimate from this many rows drawn without replacement (seeded by ``seed``)
            when the circuit has more; None: every row. A 48k-token circuit costs
            ``d_vocab^2 d_head`` per head in full.
        chunk_bytes: Blocks of rows (all leading dims together) stay under this.

    Memory O(chunk_bytes) beyond the factors: blocks of ``A[rows] @ B``, never the
    ``d_vocab x d_vocab`` matrix.
    """
    _check_square(circuit)
    check_int(k, "k", 1)
    check_int(chunk, "chunk", 1)
    check_chunk_bytes(chunk_bytes)
    A, B = circuit.A, circuit.B
    n = circuit.ldim
    rows_all = torch.arange(n)
    if sample is not None:
        check_int(sample, "sample", 1)
        if sample < n:
            gen = torch.Generator().manual_seed(check_int(seed, "seed", 0))
            rows_all = torch.randperm(n, generator=gen)[:sample].sort().values
    lead = max(1, int(torch.tensor(A.shape[:-2]).prod())) if A.ndim > 2 else 1
    step = min(chunk, rows_per_chunk(lead * circuit.rdim, chunk_bytes, copies=2))
    hits = []
    for start in range(0, len(rows_all), step):
        rows = rows_all[start : start + step]
        block = A[..., rows, :] @ B  # [..., c, V]
        diag = block[..., torch.arange(len(rows)), rows]  # [..., c]
        rank = (block > diag.unsqueeze(-1)).sum(-1)
        hits.append(rank < k)
    return torch.cat(hits, dim=-1).float().mean(-1)


@dataclass(frozen=True)
class CircuitStats:
    """Per-head statistics of the full OV and full QK circuits, each ``[n_layers, n_heads]``."""

    ov_copying: Tensor
    ov_top1: Tensor
    ov_top5: Tensor
    qk_copying: Tensor
    qk_top1: Tensor
    qk_top5: Tensor


def circuit_stats(
    model: HookedModel,
    fold_ln: bool = False,
    *,
    sample: int | None = 4096,
    threads: int | None = DEFAULT_THREADS,
    chunk_bytes: int = CHUNK_BYTES,
) -> CircuitStats:
    """Copying scores and diagonal top-1/top-5 accuracies of each head's full OV and QK circuits.

    Copying scores are exact (through :func:`full_ov_spectrum` / :func:`full_qk_spectrum`);
    the accuracies read ``sample`` rows of each circuit when the vocabulary is larger (every
    row of a small model's; None: always every row). One layer at a time: memory
    O(n_heads d_vocab d_head + chunk_bytes).
    """
    check_model(model)
    ov_top1, ov_top5, qk_top1, qk_top5 = [], [], [], []
    acc = dict(sample=sample, chunk_bytes=chunk_bytes)
    with torch_threads(threads), torch.no_grad():
        for layer in range(model.cfg.n_layers):
            ov = full_ov_circuit(model, layer, fold_ln=fold_ln)
            ov_top1.append(diagonal_accuracy(ov, 1, **acc))  # type: ignore[arg-type]
            ov_top5.append(diagonal_accuracy(ov, 5, **acc))  # type: ignore[arg-type]
            del ov
            qk = full_qk_circuit(model, layer, fold_ln=fold_ln)
            qk_top1.append(diagonal_accuracy(qk, 1, **acc))  # type: ignore[arg-type]
            qk_top5.append(diagonal_accuracy(qk, 5, **acc))  # type: ignore[arg-type]
            del qk
        return CircuitStats(
            ov_copying=copying_score(full_ov_spectrum(model, fold_ln=fold_ln)),
            ov_top1=torch.stack(ov_top1),
            ov_top5=torch.stack(ov_top5),
            qk_copying=copying_score(full_qk_spectrum(model, fold_ln=fold_ln)),
            qk_top1=torch.stack(qk_top1),
            qk_top5=torch.stack(qk_top5),
        )
