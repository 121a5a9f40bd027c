"""Corrupted inputs per task: what a patched edge carries instead of the clean signal.

A corruption keeps everything a circuit does not need and removes what it does: for induction,
the same sequence with its first copy re-drawn, so the repeat has nothing to copy from; for
shift-by-one, every token re-drawn, so the previous token says nothing about the target. Add a
task's corruption with :func:`register_corruption`, which also names the task's default metric.
Text tasks (:mod:`circuits.discovery.text`) register corruptions that need the model (its
tokenizer's vocabulary).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from circuits.registry import Registry
from circuits.tasks import Batch

Corruption = Callable[[Batch, Any, torch.Generator], Tensor]
CORRUPTIONS: Registry[Corruption] = Registry("corruption for task")
# The metric Problem.build uses for a task when none is given.
DEFAULT_METRICS: dict[str, str] = {}
# Tasks whose corruption takes the model (for its tokenizer) instead of d_vocab.
_TAKES_MODEL: set[str] = set()


def register_corruption(
    task_name: str, *, metric: str = "loss", takes_model: bool = False
) -> Callable[[Corruption], Corruption]:
    """Decorator registering ``fn(batch, d_vocab, generator) -> corrupted tokens`` for a task
    (``fn(batch, model, generator)`` with ``takes_model``), with the task's default metric
    (``"loss"`` or ``"logit_diff"``)."""
    if metric not in ("loss", "logit_diff"):
        raise ValueError(f"metric must be 'loss' or 'logit_diff', got {metric!r}")

    def decorator(fn: Corruption) -> Corruption:
        CORRUPTIONS.add(task_name, fn)
        DEFAULT_METRICS[task_name] = metric
        if takes_model:
            _TAKES_MODEL.add(task_name)
        return fn

    return decorator


def first_copy_length(tokens: Int[Tensor, "batch pos"], start: int = 0) -> Int[Tensor, " batch"]:
    """Per sequence, the length of the first copy: the position of the first repeated token.

    Sequences of :class:`~circuits.tasks.InductionTask` and its probe draw their first copy
    without replacement, so the first token seen twice starts the second copy.
    """
    body = tokens[:, start:]
    n = body.shape[1]
    seen_before = (body[:, :, None] == body[:, None, :]).tril(-1).any(-1)  # [b, p]
    # Sequences with no repeat are one long first copy.
    first = torch.where(
        seen_before.any(1),
        seen_before.float().argmax(1),
        torch.full_like(seen_before[:, 0], n, dtype=torch.long),
    )
    return first


@register_corruption("induction")
def corrupt_induction(batch: Batch, d_vocab: int, generator: torch.Generator) -> Tensor:
    """The same sequences with the first copy re-drawn (distinct ids, BOS kept).

    For a probe (``batch.repeat_length`` set) the first copy is the first ``repeat_length``
    tokens after BOS; for periodic sequences it is the first period. Later repeats of a
    periodic sequence still have an earlier copy (the second): use the probe, whose two copies
    leave the repeat nothing to copy.
    """
    tokens = batch.tokens
    if tokens.ndim != 2:
        raise ValueError(f"batch.tokens must be [batch, pos], got {tuple(tokens.shape)}")
    # A BOS (id 0 at position 0 of every sequence, never repeated after) is kept.
    bos = int(bool((tokens[:, 0] == 0).all() and not (tokens[:, 1:] == 0).any()))
    n_ids = d_vocab - bos
    if batch.repeat_length is not None:
        lengths = torch.full((tokens.shape[0],), batch.repeat_length, dtype=torch.long)
    else:
        lengths = first_copy_length(tokens, bos)
    out = tokens.clone()
    for i, length in enumerate(lengths.tolist()):
        length = min(length, tokens.shape[1] - bos)
        if length > n_ids:
            new = torch.randint(bos, d_vocab, (length,), generator=generator)
        else:
            new = torch.randperm(n_ids, generator=generator)[:length] + bos
        out[i, bos : bos + length] = new
    return out


@register_corruption("shift")
def corrupt_shift(batch: Batch, d_vocab: int, generator: torch.Generator) -> Tensor:
    """Every token re-drawn uniformly: the previous token no longer predicts the target."""
    return torch.randint(0, d_vocab, tuple(batch.tokens.shape), generator=generator)


def corrupt(
    task: str, batch: Batch, d_vocab: int, seed: int = 0, model: Any = None
) -> Int[Tensor, "batch pos"]:
    """Corrupted tokens of ``batch`` for the task named ``task`` (seeded; ``model`` for the
    corruptions that need its tokenizer)."""
    if not isinstance(task, str) or task not in CORRUPTIONS:
        raise ValueError(
            f"no corruption registered for task {task!r}; registered: {', '.join(CORRUPTIONS)}"
        )
    gen = torch.Generator().manual_seed(seed)
    if task in _TAKES_MODEL:
        if model is None:
            raise ValueError(f"the {task!r} corruption needs the model (its tokenizer)")
        return CORRUPTIONS[task](batch, model, gen)
    return CORRUPTIONS[task](batch, d_vocab, gen)
