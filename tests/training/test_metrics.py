"""Model-level evaluation metrics in the training history (circuits.training.metrics)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from circuits.analysis import fourier
from circuits.presets import build
from circuits.records import history_from_json, history_to_json
from circuits.training import train
from circuits.training.metrics import describe_metrics, evaluation_metrics, metrics_due
from circuits.training.state import TrainingCheckpoint

MARKOV_KEYS = {"kl_uniform", "kl_unigram", "kl_bigram", "phase"}


def test_markov_history_holds_the_metrics_and_they_survive_a_checkpoint(tmp_path):
    model, task, cfg = build("markov_icl", seed=0, train={"steps": 20, "eval_every": 10})
    run = cfg.replace(progress=False, checkpoint_dir=str(tmp_path / "run"))
    result = train(model, task, run)
    assert [r.step for r in result.history] == [10, 20]
    assert all(set(r.metrics) == MARKOV_KEYS for r in result.history)
    model.eval()
    with torch.no_grad():
        again = evaluation_metrics(task, model, task.probe(cfg.probe_size))
    assert again == result.history[-1].metrics  # what was recorded is the final model's
    saved = TrainingCheckpoint.read(tmp_path / "run")
    assert history_from_json(saved.state["history"]) == result.history
    assert history_from_json(history_to_json(result.history)) == result.history
    lines = describe_metrics(task, result.history)
    assert lines[0].startswith("phases: ") and "(step 10)" in lines[0]


def test_modular_addition_records_its_measures_every_fourth_evaluation_and_the_last():
    model, task, cfg = build(
        "modular_addition",
        seed=0,
        task={"p": 11},
        model={"d_model": 16, "d_mlp": 32},
        train={"steps": 6, "eval_every": 1, "probe_size": 121},
    )
    result = train(model, task, cfg.replace(progress=False, target_accuracy=None))
    has = [bool(r.metrics) for r in result.history]
    assert has == [True, False, False, False, True, True]
    model.eval()
    train_pairs = task.pairs("train")
    rows = train_pairs[:, 0] * task.p + train_pairs[:, 1]
    measures = fourier.training_measures(model, task.p, rows)
    measures["train_set_loss"] = measures.pop("train_loss")
    assert result.history[-1].metrics == measures
    freqs = fourier.key_frequencies(fourier.neuron_activations(model, task.p)).freqs
    expected = fourier.progress_measures(model, task.p, freqs, rows)
    expected["train_set_loss"] = expected.pop("train_loss")
    for name, value in expected.items():  # the one-pass version agrees with the reference
        assert measures[name] == pytest.approx(value, rel=1e-9)
    assert measures["n_key_frequencies"] == len(freqs)
    lines = describe_metrics(task, result.history)
    assert lines[0] == "grokking measures at step 6:" and any("test_loss" in x for x in lines)


def test_a_run_stopped_by_its_targets_records_metrics_on_its_last_evaluation():
    class Task:
        name, metrics_every = "custom", 100

        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, attr):
            return getattr(self.inner, attr)

        def evaluation_metrics(self, model, probe):
            return {"n_probe": float(probe.tokens.shape[0])}

    model, task, cfg = build("markov_icl", seed=0, train={"steps": 30, "eval_every": 10})
    cfg = dataclasses.replace(cfg, progress=False, target_accuracy=0.0)
    result = train(model, Task(task), cfg)  # met at the first evaluation
    assert result.solved_at == 10
    assert result.history[-1].metrics == {"n_probe": float(cfg.probe_size)}
    assert metrics_due(Task(task), 3, last=False) is False
    assert metrics_due(Task(task), 100, last=False) is True


def test_a_task_without_metrics_records_none():
    model, task, cfg = build("induction", seed=0, train={"steps": 2, "eval_every": 1})
    result = train(model, task, cfg.replace(progress=False))
    assert all(r.metrics == {} for r in result.history)
    assert describe_metrics(task, result.history) == []


def test_a_resumed_run_records_the_same_metrics_as_an_uninterrupted_one(tmp_path):
    from circuits.training import resume

    def run(steps: int, out=None):
        model, task, cfg = build("markov_icl", seed=0, train={"steps": steps, "eval_every": 10})
        return train(model, task, cfg.replace(progress=False, checkpoint_dir=out))

    whole = run(20)
    run(10, str(tmp_path / "run"))
    resumed = resume(tmp_path / "run", steps=20, progress=False)[3]
    assert resumed.history == whole.history and resumed.history[-1].metrics
