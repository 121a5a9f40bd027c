"""The new tasks' presets form their mechanisms (slow: minutes on 2 loaded cores).

Modular addition groks by the Fourier mechanism (key frequencies found from the neurons hold
most of the embedding's norm; the loss with only them kept is low, with them removed far above
chance); Markov chains reach the bigram phase after the unigram one, with a statistical
induction head in layer 1.
"""

from __future__ import annotations

import math

import pytest
import torch

from circuits.analysis import fourier
from circuits.analysis.markov import STRATEGIES, PhaseTracker, phase_sequence
from circuits.presets import build
from circuits.training import train

pytestmark = pytest.mark.slow


def test_modular_addition_groks_by_mechanism():
    model, task, cfg = build("modular_addition", seed=0)
    result = train(model, task, cfg.replace(progress=False))
    assert result.solved_at is not None and result.final.accuracy >= 0.99
    train_rows = task.pairs("train") @ torch.tensor([task.p, 1])
    m = fourier.mechanism_summary(model, task.p, train_rows)
    assert 1 <= len(m["key_frequencies"]) <= 10
    assert m["embedding_share"] > 0.5
    assert m["neurons_explained"] > 0.5
    assert m["restricted_loss"] < 0.5
    assert m["excluded_loss"] > math.log(task.p)


def test_markov_icl_reaches_the_bigram_phase_with_a_statistical_induction_head():
    # Evaluating every 10 steps (not the preset's 50) catches the uniform phase; evaluation
    # draws nothing from the training stream, so the run is the preset's.
    model, task, cfg = build("markov_icl", seed=0, train={"eval_every": 10})
    tracker = PhaseTracker(model, task)
    result = train(model, task, cfg.replace(progress=False), callback=tracker)
    # The history itself records the phases (EvalRecord.metrics), in order.
    assert all({"kl_uniform", "kl_unigram", "kl_bigram"} <= set(r.metrics) for r in result.history)
    seq = [name for _, name in phase_sequence(result.history)]
    assert seq[0] == "uniform" and seq[-1] == "bigram" and "unigram" in seq
    assert seq == sorted(seq, key=STRATEGIES.index)  # uniform -> unigram -> bigram, no return
    late = result.history[-1].metrics
    assert late["kl_bigram"] < 0.5 * late["kl_unigram"]
    last = tracker.history[-1]
    assert last["phase"] == "bigram"
    assert last["bigram"] < 0.5 * last["unigram"]
    phases = [h["phase"] for h in tracker.history]
    assert "unigram" in phases[: phases.index("bigram")]
    assert float(result.final.scores["statistical_induction"][1].max()) > 0.6
