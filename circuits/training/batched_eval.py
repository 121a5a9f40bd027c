"""Evaluation of a stacked group: probe loss, accuracy and head scores of every instance at once.

One stacked forward pass (:func:`circuits.training.stacked.forward`) over all instances' probes
gives every instance's logits and attention patterns; the registered head scores then read each
instance's patterns from a plain dict cache, exactly as :func:`circuits.analysis.evaluate`
feeds them from ``run_with_cache``. A score that reads a hook other than the pattern is computed
by :func:`~circuits.analysis.evaluate` on the instance itself (correct, one forward each).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from circuits.analysis.head_scores import evaluate
from circuits.analysis.scores import PATTERN_HOOK, compute_scores, get_score
from circuits.model import HookedTransformer
from circuits.records import EvalRecord
from circuits.tasks import Batch
from circuits.training import stacked

__all__ = ["evaluate_stacked"]


def evaluate_stacked(
    params: stacked.Params,
    shell: HookedTransformer,
    tokens: Int[Tensor, "G batch pos"],
    targets: Int[Tensor, "G batch pos"],
    mask: Bool[Tensor, "G batch pos"],
    repeat_length: int | None,
    scores: Sequence[str],
    step: int,
) -> list[EvalRecord]:
    """One :class:`~circuits.records.EvalRecord` per instance of ``params`` on its own probe.

    Args:
        params: The group's stacked parameters (``G`` instances).
        shell: A model of the group's architecture; each instance's weights are copied into it
            before its scores are computed (scores may read weights or call the model).
        tokens, targets, mask: The instances' probes, stacked.
        repeat_length: The probes' repeat length (the same task for every instance).
        scores: Registered score names to record.
        step: The training step recorded.

    Memory: one stacked forward pass's activations without gradients, and the attention
    patterns ``[G, batch, n_heads, pos, pos]`` per layer.
    """
    cfg = shell.cfg
    patterns: list[Tensor] = []
    with torch.no_grad():
        logits = stacked.forward(params, cfg, tokens, patterns)
        losses = stacked.instance_losses(logits, targets, mask).tolist()
        correct = ((logits.argmax(-1) == targets) & mask).flatten(1).sum(1)
        # Integer counts divided in Python: the same float as the one-run path's probe_accuracy
        # (a float32 division differs in the last digits, so resumed groups would not match).
        counts = mask.flatten(1).sum(1).tolist()
        accuracy = [c / max(n, 1) for c, n in zip(correct.tolist(), counts)]
    pattern_only = all(get_score(n).hooks == (PATTERN_HOOK,) for n in scores)
    names = [f"blocks.{layer}.{PATTERN_HOOK}" for layer in range(cfg.n_layers)]
    records = []
    for g in range(tokens.shape[0]):
        stacked.unstack_into(params, g, shell)
        probe = Batch(tokens[g], targets[g], mask[g], repeat_length)
        values: Mapping[str, Tensor]
        if pattern_only:
            cache = {name: patterns[layer][g] for layer, name in enumerate(names)}
            values = compute_scores(shell, probe, scores, cache=cache, logits=logits[g])
        else:
            values = evaluate(shell, probe, scores, step=step).scores
        records.append(EvalRecord(step, losses[g], accuracy[g], values))
    return records
