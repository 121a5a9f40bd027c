"""The modular-addition task: split, batches, probe, registry round trip and bad input."""

from __future__ import annotations

import pytest
import torch

from circuits.tasks import ModularAdditionTask, make_task, task_from_dict


def test_split_is_a_seeded_partition_of_all_pairs():
    task = ModularAdditionTask(p=7, train_fraction=0.4, seed=3)
    train, test = task.pairs("train"), task.pairs("test")
    assert train.shape == (int(0.4 * 49), 2) and test.shape == (49 - int(0.4 * 49), 2)
    keys = torch.cat([train, test]) @ torch.tensor([7, 1])
    assert sorted(keys.tolist()) == list(range(49))
    assert torch.equal(ModularAdditionTask(p=7, train_fraction=0.4, seed=3).pairs("test"), test)
    assert not torch.equal(ModularAdditionTask(p=7, train_fraction=0.4, seed=4).pairs("test"), test)


def test_batches_and_probe():
    task = ModularAdditionTask(p=11, train_fraction=0.5)
    full = task.sample(3, torch.Generator().manual_seed(0))
    assert full.tokens.shape == (task.n_train, 3)  # full batch whatever batch_size
    assert torch.all(full.tokens[:, 2] == 11)
    a, b = full.tokens[:, 0], full.tokens[:, 1]
    assert torch.equal(full.targets[:, 2], (a + b) % 11)
    assert full.mask[:, 2].all() and not full.mask[:, :2].any()
    mini = ModularAdditionTask(p=11, train_fraction=0.5, full_batch=False)
    assert mini.sample(5, torch.Generator().manual_seed(0)).tokens.shape == (5, 3)
    probe = task.probe(10**6)
    train_keys = set((task.pairs("train") @ torch.tensor([11, 1])).tolist())
    probe_keys = set((probe.tokens[:, :2] @ torch.tensor([11, 1])).tolist())
    assert len(probe_keys) == 121 - task.n_train and not probe_keys & train_keys


def test_round_trip_holds_p_and_split_seed():
    task = make_task("modular_addition", p=13, train_fraction=0.3, seed=5)
    d = task.to_dict()
    assert d == {
        "p": 13,
        "train_fraction": 0.3,
        "full_batch": True,
        "seed": 5,
        "name": "modular_addition",
    }
    assert task_from_dict(d) == task and task.d_vocab == 14 and task.seq_len == 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(p=15), "prime"),
        (dict(p=2), "p"),
        (dict(p=3, train_fraction=0.05), "too small"),
        (dict(train_fraction=1.0), "train_fraction"),
        (dict(train_fraction="0.3"), "train_fraction"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModularAdditionTask(**kwargs)


def test_full_batch_must_be_bool():
    with pytest.raises(TypeError, match="full_batch"):
        ModularAdditionTask(full_batch=1)
