"""Logits only where a metric reads them, in chunks: the unembedding without ``[batch, pos, V]``.

A model's output ``[batch, pos, d_vocab_out]`` is 0.2 GB for 8 x 128 tokens of a 48k vocabulary
and 25 GB for 64 x 2048. The functions here take the final residual stream after the final
LayerNorm (``[batch, pos, d_model]``, what :func:`final_normed` returns), pick the positions a
metric reads and unembed them :data:`~circuits.analysis.resources.CHUNK_BYTES` at a time. Peak
working memory: O(chunk) = O(min(rows, CHUNK_BYTES / (4 d_vocab_out)) d_vocab_out), plus the
``[batch, pos, d_model]`` input.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from circuits.analysis.final_ln import full_final_ln
from circuits.analysis.protocol import HookedModel, check_model
from circuits.analysis.resources import CHUNK_BYTES, row_chunks


def final_resid_name(model: HookedModel) -> str:
    """The hook holding the residual stream the final LayerNorm reads."""
    return f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"


def final_normed(
    model: HookedModel, tokens: Int[Tensor, "batch pos"], cache: Any = None
) -> Float[Tensor, "batch pos d_model"]:
    """The final residual stream through the final LayerNorm (recomputed), no logits formed.

    Runs ``model`` with ``return_type=None`` (caching one hook) unless ``cache`` has it.
    Peak: the forward pass's activations, O(batch pos d_model) kept.
    """
    check_model(model)
    name = final_resid_name(model)
    if cache is None:
        with torch.no_grad():
            _, cache = model.run_with_cache(
                tokens, names_filter=lambda n: n == name, return_type=None
            )
    with torch.no_grad():
        return full_final_ln(model, cache[name])


def unembed_rows(model: HookedModel, normed: Float[Tensor, "n d_model"]) -> Tensor:
    """``normed @ W_U + b_U`` for a few rows: ``[n, d_vocab_out]``."""
    return normed @ model.W_U.detach() + model.b_U.detach()


def token_losses(
    model: HookedModel,
    normed: Float[Tensor, "batch pos d_model"],
    targets: Int[Tensor, "batch pos"],
    mask: Bool[Tensor, "batch pos"] | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> tuple[Float[Tensor, "batch pos"], Bool[Tensor, "batch pos"]]:
    """Cross-entropy of ``targets`` and whether each is the top-1 prediction, where ``mask``.

    Both are 0 / False where ``mask`` is False (no logits are formed there). The loss equals
    :func:`circuits.losses.cross_entropy` on the full logits (``per_token=True``) to float
    rounding. Peak: O(chunk) (module doc).
    """
    check_model(model)
    batch, pos = targets.shape
    if mask is None:
        mask = torch.ones(batch, pos, dtype=torch.bool)
    rows = mask.flatten().nonzero().flatten()
    flat_normed = normed.reshape(batch * pos, -1)
    flat_targets = targets.flatten()
    loss = torch.zeros(batch * pos, dtype=normed.dtype)
    correct = torch.zeros(batch * pos, dtype=torch.bool)
    with torch.no_grad():
        for part in row_chunks(len(rows), model.W_U.shape[-1], chunk_bytes, copies=2):
            index = rows[part]
            logits = unembed_rows(model, flat_normed[index])
            target = flat_targets[index]
            picked = logits.gather(-1, target[:, None]).squeeze(-1)
            loss[index] = logits.logsumexp(-1) - picked
            correct[index] = logits.argmax(-1) == target
    return loss.view(batch, pos), correct.view(batch, pos)
