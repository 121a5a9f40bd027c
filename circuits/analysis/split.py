"""Is the previous-token work done by one head or split across several? Read by ablation.

A final previous-token *score* says where heads attend, not what the model needs: two heads can
both attend to the previous token while only one is read, or share the work so that either
alone suffices. :func:`previous_token_split` asks the probe instead: the accuracy on the
positions the task scores, clean (``a``), with the top previous-token head mean-ablated
(``a1``), and with every candidate head mean-ablated (``a2``). The top head's share of the
dependence is ``(a - a1) / (a - a2)``: about 1 when it does the work alone, about 0.5 when two
heads each carry half, about 0 when another head can stand in for it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from circuits.analysis.ablation import parse_heads, run_with_ablation
from circuits.analysis.head_scores import probe_accuracy
from circuits.analysis.names import head_name
from circuits.analysis.protocol import HookedModel, check_model
from circuits.analysis.resources import DEFAULT_THREADS, torch_threads
from circuits.validation import check_batch

__all__ = ["MIN_DEPENDENCE", "SPLIT_SHARE", "previous_token_split"]

MIN_DEPENDENCE = 0.05
"""Accuracy the candidate heads must carry (``a - a2``) for a share to mean anything; below it
the model does not depend on previous-token work (an untrained model, or one that solves its
task otherwise) and ``split`` is None."""

SPLIT_SHARE = 0.75
"""A run splits the work when the top head alone accounts for less than this share of the
accuracy all candidate heads carry."""

_DIGITS = 4  # accuracies of a 64-sequence probe are multiples of ~1e-3: 4 digits keep them


def previous_token_split(
    model: HookedModel,
    probe: Any,
    top: str | tuple[int, int],
    induction: str | tuple[int, int] | None = None,
    *,
    threads: int | None = DEFAULT_THREADS,
) -> dict[str, Any]:
    """How much of the model's previous-token dependence its top previous-token head carries.

    "All of them" are the candidate heads: every head of the layers below the top induction
    head (``induction``). A previous-token head serves an induction head only through that
    head's keys, which read the layers below it, so those are the heads that can share the
    work: layer 0 alone in the default two-layer preset. Without an induction head (one layer,
    or none given), or when ``top`` is not below it, the candidates are every head up to and
    including ``top``'s layer. In deeper models the candidates include heads that do other
    work for the induction head (their loss counts in ``a - a2``, lowering the share).

    Ablation is by the *mean* over the probe, per position (not zero): it removes what the
    heads say about each sequence and keeps their average output, so the drop measures lost
    information rather than a residual stream pushed off its distribution.

    Args:
        model: Any model with TransformerLens's hook names (``hook_z``).
        probe: A task batch (``tokens``, ``targets``, ``mask`` ``[batch, pos]``); accuracy is
            top-1 on its masked positions. Moved to the model's device.
        top: The top previous-token head, ``"L0H1"`` or ``(0, 1)``.
        induction: The top induction head (``"L1H0"``), or None.
        threads: Torch threads while it runs (restored after; None: torch's setting).

    Returns:
        ``{"top", "heads" (the candidates), "method": "mean", "accuracy" (a), "top_ablated"
        (a1), "all_ablated" (a2), "share", "split"}``; ``share`` is None and ``split`` None
        when ``a - a2 < MIN_DEPENDENCE`` (nothing to split), else ``split`` is
        ``share < SPLIT_SHARE``. Accuracies and share rounded to 4 digits.

    Memory and time: five forward passes over the probe (clean; per ablation, one caching the
    means and one ablated), one at a time; O(batch pos d_vocab_out) for the logits.
    """
    check_model(model)
    cfg = model.cfg
    probe = check_batch(probe, cfg.d_vocab, model.W_U.shape[-1], cfg.n_ctx)
    ((top_layer, top_head),) = parse_heads(model, [top])
    layers = top_layer + 1
    if induction is not None:
        ((induction_layer, _),) = parse_heads(model, [induction])
        layers = max(layers, induction_layer)
    device = model.W_U.device
    probe = dataclasses.replace(
        probe,
        tokens=probe.tokens.to(device),
        targets=probe.targets.to(device),
        mask=probe.mask.to(device),
    )
    candidates = [(layer, head) for layer in range(layers) for head in range(cfg.n_heads)]
    with torch_threads(threads):
        with torch.no_grad():
            a = probe_accuracy(model(probe.tokens), probe)
        a1 = probe_accuracy(
            run_with_ablation(model, probe.tokens, [(top_layer, top_head)], "mean").logits, probe
        )
        a2 = probe_accuracy(
            run_with_ablation(model, probe.tokens, candidates, "mean").logits, probe
        )
    share = None if a - a2 < MIN_DEPENDENCE else (a - a1) / (a - a2)
    return {
        "top": head_name(top_layer, top_head),
        "heads": [head_name(layer, head) for layer, head in candidates],
        "method": "mean",
        "accuracy": round(a, _DIGITS),
        "top_ablated": round(a1, _DIGITS),
        "all_ablated": round(a2, _DIGITS),
        "share": None if share is None else round(share, _DIGITS),
        "split": None if share is None else share < SPLIT_SHARE,
    }
