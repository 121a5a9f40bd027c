"""The in-context Markov-chain task: Dirichlet rows, stationary start, seeding, bad input."""

from __future__ import annotations

import pytest
import torch

from circuits.tasks import MarkovICLTask, make_task, task_from_dict
from circuits.tasks.markov_icl import stationary_distribution


def test_batches_follow_their_chains():
    task = MarkovICLTask(k=3, seq_len=40)
    batch, P = task.sample_chains(4000, torch.Generator().manual_seed(0))
    assert batch.tokens.shape == (4000, 40) and P.shape == (4000, 3, 3)
    assert torch.equal(batch.tokens[:, 1:], batch.targets[:, :-1]) and batch.mask.all()
    assert torch.allclose(P.sum(-1), torch.ones(4000, 3))
    # Transitions counted over all sequences match the mean transition rows.
    x, y = batch.tokens[:, :-1].flatten(), batch.tokens[:, 1:].flatten()
    rows = P[torch.arange(4000).repeat_interleave(39), x]
    assert (rows[torch.arange(len(y)), y]).mean() > (1 / 3) + 0.05  # chains are followed
    # The first state follows the stationary distribution, not the uniform one.
    pi = stationary_distribution(P)
    first = torch.nn.functional.one_hot(batch.tokens[:, 0], 3).double()
    assert (first - pi).mean(0).abs().max() < 0.02


def test_stationary_distribution_known_answer():
    P = torch.tensor([[[0.9, 0.1], [0.5, 0.5]]])
    assert torch.allclose(stationary_distribution(P), torch.tensor([[5 / 6, 1 / 6]]).double())


def test_first_state_uses_pi_on_a_skewed_chain():
    task = MarkovICLTask(k=2, seq_len=4)
    g = torch.Generator().manual_seed(1)
    batch, P = task.sample_chains(20000, g)
    pi = stationary_distribution(P)
    skewed = (pi[:, 0] - 0.5).abs() > 0.3
    observed = (batch.tokens[skewed, 0] == 0).double().mean()
    assert observed == pytest.approx(float(pi[skewed, 0].mean()), abs=0.02)


def test_seeded_and_round_trip():
    task = make_task("markov_icl", k=4, seq_len=16, alpha=0.5, seed=2)
    assert task_from_dict(task.to_dict()) == task and task.d_vocab == 4
    a = task.sample(8, torch.Generator().manual_seed(3)).tokens
    assert torch.equal(a, task.sample(8, torch.Generator().manual_seed(3)).tokens)
    assert torch.equal(task.probe(8).tokens, task.probe_chains(8)[0].tokens)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [(dict(k=1), "k"), (dict(k=5, seq_len=9), "too short"), (dict(alpha=0.0), "alpha")],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MarkovICLTask(**kwargs)
