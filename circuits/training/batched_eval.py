"""Evaluation of a stacked group: probe loss, accuracy and head scores of every instance at once.

One stacked forward pass (:func:`circuits.training.stacked.forward`) over all instances' probes
gives every instance's logits and attention patterns; the registered head scores then read each
instance's patterns from a plain dict cache, exactly as :func:`circuits.analysis.evaluate`
feeds them from ``run_with_cache``. A ``layerwise`` score (each layer's row from that layer's
patterns alone: the built-in attention scores) is computed once for the whole group, the
instances' layers stacked along the layer axis, so its cost does not grow with Python calls per
instance. A score that reads a hook other than the pattern is computed by
:func:`~circuits.analysis.evaluate` on the instance itself (correct, one forward each).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from circuits.analysis.head_scores import evaluate
from circuits.analysis.scores import PATTERN_HOOK, ScoreContext, compute_scores, get_score
from circuits.model import HookedTransformer
from circuits.records import EvalRecord
from circuits.tasks import Batch
from circuits.training import stacked

__all__ = ["EVAL_CHUNK_BYTES", "evaluate_stacked"]

# Instances evaluated per forward pass: as many as keep one layer's attention patterns within
# this many bytes. Larger stacks leave the cache: a stacked evaluation of 32 models ran slower
# per model than 32 single evaluations (bench/RESULTS.md, the atlas section).
EVAL_CHUNK_BYTES = 2**21


def evaluate_stacked(
    params: stacked.Params,
    shell: HookedTransformer,
    tokens: Int[Tensor, "G batch pos"],
    targets: Int[Tensor, "G batch pos"],
    mask: Bool[Tensor, "G batch pos"],
    repeat_length: int | None,
    scores: Sequence[str],
    step: int,
    chunk_bytes: int | None = None,
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
        chunk_bytes: Instances per forward pass: as many as keep one layer's patterns within
            this many bytes (at least one); default :data:`EVAL_CHUNK_BYTES`.

    Memory: a chunk's forward pass without gradients, and its attention patterns
    ``[chunk, batch, n_heads, pos, pos]`` per layer.
    """
    budget = EVAL_CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    G, b, p = tokens.shape
    per_instance = b * shell.cfg.n_heads * p * p * 4
    size = max(1, budget // per_instance)
    records: list[EvalRecord] = []
    for start in range(0, G, size):
        part = slice(start, start + size)
        chunk = {name: value[part] for name, value in params.items()}
        records += _evaluate_chunk(
            chunk, shell, tokens[part], targets[part], mask[part], repeat_length, scores, step
        )
    return records


def _evaluate_chunk(
    params: stacked.Params,
    shell: HookedTransformer,
    tokens: Tensor,
    targets: Tensor,
    mask: Tensor,
    repeat_length: int | None,
    scores: Sequence[str],
    step: int,
) -> list[EvalRecord]:
    cfg = shell.cfg
    patterns: list[Tensor] = []
    with torch.no_grad():
        logits = stacked.forward(params, cfg, tokens, patterns)
        losses = stacked.instance_losses(logits, targets, mask).tolist()
        correct = ((logits.argmax(-1) == targets) & mask).flatten(1).sum(1)
        # Integer counts divided in Python: the same float as the one-run path's probe_accuracy
        # (a float32 division differs in the last digits, so resumed groups would not match).
        counts = mask.flatten(1).sum(1).tolist()
        accuracy = [c / max(n, 1) for c, n in zip(correct.tolist(), counts, strict=True)]
    specs = [get_score(n) for n in scores]
    pattern_only = all(spec.hooks == (PATTERN_HOOK,) for spec in specs)
    G = tokens.shape[0]
    grouped: dict[str, Tensor] = {}
    if pattern_only:
        probe = Batch(tokens[0], targets[0], mask[0], repeat_length)
        grouped = _layerwise_scores(shell, patterns, probe, specs)
    names = [f"blocks.{layer}.{PATTERN_HOOK}" for layer in range(cfg.n_layers)]
    rest = [n for n in scores if n not in grouped]
    records = []
    for g in range(G):
        probe = Batch(tokens[g], targets[g], mask[g], repeat_length)
        values: dict[str, Tensor] = {}
        if rest:
            stacked.unstack_into(params, g, shell)  # the other scores may read weights
            if pattern_only:
                cache = {name: patterns[layer][g] for layer, name in enumerate(names)}
                values = compute_scores(shell, probe, rest, cache=cache, logits=logits[g])
            else:
                values = dict(evaluate(shell, probe, rest, step=step).scores)
        merged = {n: grouped[n][g] if n in grouped else values[n] for n in scores}
        records.append(EvalRecord(step, losses[g], accuracy[g], merged))
    return records


def _layerwise_scores(
    shell: HookedTransformer, patterns: list[Tensor], probe: Batch, specs: Sequence
) -> dict[str, Tensor]:
    """``{name: [G, n_layers, n_heads]}`` of the ``layerwise`` scores among ``specs``, each
    computed in one call on the group's patterns stacked as ``[G * n_layers, batch, n_heads,
    query, key]`` (checked as :func:`~circuits.analysis.compute_scores` checks one run's)."""
    cfg = shell.cfg
    G = patterns[0].shape[0]
    wanted = [s for s in specs if s.layerwise]
    if not wanted:
        return {}
    folded = torch.stack(patterns, dim=1).flatten(0, 1)  # [G * n_layers, batch, heads, q, k]
    # Layerwise scores read the patterns and the probe's repeat length (the group's shared one).
    ctx = ScoreContext(shell, probe, cache=None, given_patterns=folded)
    out = {}
    for spec in wanted:
        with torch.no_grad():
            value = spec.fn(ctx)
        if not isinstance(value, Tensor) or tuple(value.shape) != (G * cfg.n_layers, cfg.n_heads):
            got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(
                f"layerwise score {spec.name!r} returned {got} for {G} models' stacked layers, "
                f"not [{G} * n_layers, n_heads]"
            )
        value = value.detach().float().cpu().view(G, cfg.n_layers, cfg.n_heads)
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"score {spec.name!r} returned NaN or inf")
        out[spec.name] = value
    return out
