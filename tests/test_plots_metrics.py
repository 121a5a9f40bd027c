"""The Markov and grokking figures draw a training history's recorded metrics."""

from __future__ import annotations

import pytest

from circuits.plots.fourier import progress_measures_figure
from circuits.plots.markov import strategy_kl_figure
from circuits.presets import build
from circuits.records import EvalRecord
from circuits.training import train


def test_strategy_kl_figure_reads_a_markov_training_history():
    model, task, cfg = build("markov_icl", seed=0, train={"steps": 30, "eval_every": 10})
    history = train(model, task, cfg.replace(progress=False)).history
    fig = strategy_kl_figure(history)
    bigram = next(t for t in fig.data if t.name == "KL(bigram || model)")
    assert list(bigram.x) == [10, 20, 30]
    assert list(bigram.y) == [r.metrics["kl_bigram"] for r in history]
    assert len(fig.layout.shapes) == 3  # one phase band per evaluation


def test_progress_measures_figure_reads_a_modular_addition_training_history():
    model, task, cfg = build(
        "modular_addition",
        seed=0,
        task={"p": 11},
        model={"d_model": 16, "d_mlp": 32},
        train={"steps": 6, "eval_every": 1, "probe_size": 121},
    )
    history = train(model, task, cfg.replace(progress=False, target_accuracy=None)).history
    fig = progress_measures_figure(history)
    test = next(t for t in fig.data if t.name == "test loss")
    with_metrics = [r for r in history if r.metrics]
    assert list(test.x) == [r.step for r in with_metrics] == [1, 5, 6]
    assert list(test.y) == [r.metrics["test_loss"] for r in with_metrics]


def test_histories_without_metrics_are_refused():
    bare = [EvalRecord(step=1, loss=1.0, accuracy=0.0)]
    with pytest.raises(ValueError, match="no Markov metrics"):
        strategy_kl_figure(bare)
    with pytest.raises(ValueError, match="no modular-addition metrics"):
        progress_measures_figure(bare)
