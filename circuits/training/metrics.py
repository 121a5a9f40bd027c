"""Model-level evaluation metrics: what a task measures at each evaluation besides the loss,
accuracy and head scores, recorded in :attr:`EvalRecord.metrics <circuits.records.EvalRecord>`.

A task supplies them either by a method ``evaluation_metrics(model, probe) -> dict[str, float]``
(any task, the user's own included) or, for the tasks shipped here, through
:data:`TASK_METRICS` (the tasks sit below the analysis in the layer contract, so their metrics
live here):

- ``markov_icl``: ``kl_uniform``, ``kl_unigram``, ``kl_bigram`` (mean ``KL(strategy || model)``
  over the probe's last quarter of positions, nats) and ``phase`` (index in
  :data:`~circuits.analysis.markov.STRATEGIES`: 0 uniform, 1 unigram, 2 bigram); one extra
  forward of the probe.
- ``modular_addition``: :func:`~circuits.analysis.fourier.training_measures` (loss on the
  whole training set, ``train_set_loss``, and on the test set, restricted and excluded loss
  with the key frequencies found at that step, their number, the Gini of the embedding's and
  unembedding's frequency norms, the total squared weight norm); one forward of all ``p^2``
  inputs and the key-frequency search, about three times the cost of a full-batch training
  step of the preset, so only every :data:`METRICS_EVERY`-th evaluation (and the last one)
  records them.

A task's own ``metrics_every`` attribute (an int) sets how often its method's metrics are
recorded; default every evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from circuits.analysis import fourier, markov
from circuits.records import EvalRecord, metric_series
from circuits.tasks import Batch

__all__ = ["METRICS_EVERY", "TASK_METRICS", "describe_metrics", "evaluation_metrics", "metrics_due"]


def _markov(task: Any, model: Any, probe: Batch) -> dict[str, float]:
    return markov.late_kls(model, probe.tokens, task.k)


def _modular(task: Any, model: Any, probe: Batch) -> dict[str, float]:
    train = task.pairs("train")
    measures = fourier.training_measures(model, task.p, train[:, 0] * task.p + train[:, 1])
    # The record's train_loss is the step's batch loss (before the update): this one is after.
    measures["train_set_loss"] = measures.pop("train_loss")
    return measures


TASK_METRICS: dict[str, Callable[[Any, Any, Batch], dict[str, float]]] = {
    "markov_icl": _markov,
    "modular_addition": _modular,
}

# Evaluations between two recordings of a shipped task's metrics (1: every evaluation).
METRICS_EVERY: dict[str, int] = {"markov_icl": 1, "modular_addition": 4}


def metrics_due(task: Any, n_evaluations: int, last: bool) -> bool:
    """Whether the evaluation after ``n_evaluations`` earlier ones records the task's metrics:
    every ``metrics_every``-th one, the first, and the ``last`` of a run."""
    every = getattr(task, "metrics_every", None) or METRICS_EVERY.get(getattr(task, "name", ""), 1)
    return last or n_evaluations % int(every) == 0


def evaluation_metrics(task: Any, model: Any, probe: Batch) -> dict[str, float]:
    """The task's metrics of ``model`` on ``probe`` (``{}`` for a task without any). Run with
    gradients off and the model in eval mode (the caller's job, as for the head scores)."""
    method = getattr(task, "evaluation_metrics", None)
    if callable(method):
        out = method(model, probe)
    elif getattr(task, "name", None) in TASK_METRICS:
        out = TASK_METRICS[task.name](task, model, probe)
    else:
        return {}
    if not isinstance(out, dict):
        raise TypeError(f"task {task.name!r}: evaluation_metrics must return a dict, got {out!r}")
    return out


def describe_metrics(task: Any, history: Sequence[EvalRecord]) -> list[str]:
    """Lines for the end of a training run: the Markov phases with the step each began, or
    the grokking measures of the last evaluation; ``[]`` when the history holds no metrics."""
    history = [r for r in history if r.metrics]
    if not history:
        return []
    name = getattr(task, "name", None)
    if name == "markov_icl":
        seq = markov.phase_sequence(history)
        last = history[-1].metrics
        kls = ", ".join(f"{s} {last[f'kl_{s}']:.4f}" for s in markov.STRATEGIES)
        return [
            "phases: " + " -> ".join(f"{p} (step {s})" for s, p in seq),
            f"late-position KL to each strategy at step {history[-1].step}: {kls} nats",
        ]
    if name == "modular_addition":
        last = history[-1].metrics
        keys = [
            "test_loss",
            "restricted_loss",
            "excluded_loss",
            "gini_embed",
            "weight_norm_sq",
            "n_key_frequencies",
        ]
        lines = [f"grokking measures at step {history[-1].step}:"]
        lines += [f"  {k}: {last[k]:.4g}" for k in keys if k in last]
        first = next((s for s, v in metric_series(history, "test_loss") if v < 0.1), None)
        if first is not None:
            lines.append(f"  test loss first below 0.1 at step {first}")
        return lines
    last = history[-1].metrics
    return [
        f"metrics at step {history[-1].step}: " + ", ".join(f"{k} {v:.4g}" for k, v in last.items())
    ]
