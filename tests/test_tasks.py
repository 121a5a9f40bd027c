import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch

from circuits.tasks import (
    TASKS,
    Batch,
    InductionTask,
    ShiftByOneTask,
    make_task,
    register_task,
    repeated_tokens,
)


def sample(task, batch_size=16, seed=0):
    return task.sample(batch_size, torch.Generator().manual_seed(seed))


def test_induction_same_seed_same_batches():
    task = InductionTask(seed=0)
    a, b, c = sample(task, seed=1), sample(task, seed=1), sample(task, seed=2)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.mask, b.mask)
    assert not torch.equal(a.tokens, c.tokens)


@pytest.mark.parametrize("bos", [False, True])
def test_induction_sequences_are_periodic_with_random_periods(bos):
    task = InductionTask(d_vocab=32, seq_len=48, min_period=4, max_period=24, bos=bos)
    batch = sample(task, batch_size=256)
    body = batch.tokens[:, int(bos) :]
    periods = []
    for row in body:
        # The period is the first position where a token repeats (first period is distinct).
        seen: dict[int, int] = {}
        for t, tok in enumerate(row.tolist()):
            if tok in seen:
                period = t - seen[tok]
                break
            seen[tok] = t
        assert torch.equal(row[period:], row[:-period]), "sequence is not periodic"
        periods.append(period)
    assert min(periods) >= 4 and max(periods) <= 24
    # Many different periods: no single offset solves the task positionally.
    assert len(set(periods)) >= 15
    if bos:
        assert (batch.tokens[:, 0] == 0).all() and (body > 0).all()


def test_induction_mask_marks_exactly_the_predictable_positions():
    task = InductionTask(d_vocab=16, seq_len=20, min_period=3, max_period=8)
    batch = sample(task, batch_size=64)
    for tokens, targets, mask in zip(batch.tokens, batch.targets, batch.mask, strict=True):
        for t in range(len(tokens) - 1):
            assert targets[t] == tokens[t + 1]
            # Predictable iff the next token occurred earlier in the sequence.
            assert bool(mask[t]) == (tokens[t + 1] in tokens[: t + 1].tolist())
        assert not mask[-1]


def test_induction_rejects_impossible_settings():
    with pytest.raises(ValueError, match="max_period=40 exceeds the 31 distinct ids"):
        InductionTask(d_vocab=32, seq_len=64, max_period=40, bos=True)
    with pytest.raises(ValueError, match="leaves no repeat"):
        InductionTask(d_vocab=32, seq_len=24, max_period=24)
    with pytest.raises(ValueError, match="max_period"):
        InductionTask(min_period=10, max_period=5)


@pytest.mark.parametrize("bos", [False, True])
def test_repeated_tokens_probe(bos):
    probe = repeated_tokens(8, 10, d_vocab=32, bos=bos, seed=3)
    offset = int(bos)
    assert probe.tokens.shape == (8, offset + 20)
    assert torch.equal(probe.tokens[:, offset : offset + 10], probe.tokens[:, offset + 10 :])
    assert probe.repeat_length == 10
    # Second-copy positions whose next token is a repeat: S - 1 per sequence.
    assert (probe.mask.sum(1) == 9).all()
    assert probe.mask[:, offset + 10 : offset + 19].all()
    assert torch.equal(probe.tokens, repeated_tokens(8, 10, 32, bos=bos, seed=3).tokens)
    # Distinct by default when the sequence fits in the vocabulary.
    assert all(len(set(row[offset : offset + 10].tolist())) == 10 for row in probe.tokens)


def test_shift_by_one_targets_are_previous_tokens():
    batch = sample(ShiftByOneTask(d_vocab=10, seq_len=12))
    assert torch.equal(batch.targets[:, 1:], batch.tokens[:, :-1])
    assert not batch.mask[:, 0].any() and batch.mask[:, 1:].all()


def test_registry_adds_a_task_in_a_few_lines():
    @dataclass(frozen=True)
    class CopyFirst:
        d_vocab: int = 8
        seq_len: int = 6
        seed: int = 0
        name: str = "copy_first_test"

        def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
            tokens = torch.randint(0, self.d_vocab, (batch_size, self.seq_len), generator=generator)
            targets = tokens[:, :1].expand_as(tokens)
            return Batch(tokens, targets, torch.ones_like(tokens, dtype=torch.bool))

        def to_dict(self):
            return {}

    register_task("copy_first_test")(CopyFirst)
    try:
        task = make_task("copy_first_test", d_vocab=5)
        assert task.d_vocab == 5
        with pytest.raises(ValueError, match="already registered"):
            register_task("copy_first_test")(CopyFirst)
    finally:
        TASKS.pop("copy_first_test")
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        make_task("nope")


def test_task_generation_does_not_import_transformer_lens():
    code = (
        "import sys, torch; from circuits.tasks import InductionTask; "
        "InductionTask().sample(4, torch.Generator()); "
        "assert 'transformer_lens' not in sys.modules, 'transformer_lens imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
