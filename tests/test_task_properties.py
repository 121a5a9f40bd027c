"""Every masked target of every task, batch and probe is determined by its context.

Checked by construction over task parameters (hypothesis), with oracles written here in plain
Python, independent of the task code: for induction, the current token occurred earlier and
every earlier occurrence is followed by the same token, which is the target; for shift-by-one,
the target is the previous token. A task added to the registry needs an oracle here.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from circuits.tasks import TASKS, Batch, InductionTask, ShiftByOneTask, make_task, repeated_tokens

SETTINGS = settings(max_examples=60, deadline=None)


def induction_prediction(row: list[int], t: int) -> int | None:
    """The next token at ``t`` if the context ``row[: t + 1]`` determines it by induction."""
    earlier = [s for s in range(t) if row[s] == row[t]]
    successors = {row[s + 1] for s in earlier}
    return successors.pop() if len(successors) == 1 else None


def check_induction(batch: Batch, exact: bool = True) -> None:
    """Masked targets are the induction prediction (and the next token); with ``exact``, every
    position the context determines is masked too (the mask loses nothing)."""
    for tokens, targets, mask in zip(batch.tokens, batch.targets, batch.mask, strict=True):
        row = tokens.tolist()
        assert not mask[-1], "the last position has no next token"
        for t in range(len(row) - 1):
            predicted = induction_prediction(row, t)
            if mask[t]:
                assert predicted is not None, f"masked position {t} is ambiguous: {row}"
                assert targets[t] == predicted == row[t + 1], (t, row)
            elif exact:
                assert predicted is None, f"position {t} is determined but not masked: {row}"


def check_shift(batch: Batch) -> None:
    assert not batch.mask[:, 0].any(), "position 0 has no previous token"
    for tokens, targets, mask in zip(batch.tokens, batch.targets, batch.mask, strict=True):
        for t in mask.nonzero().flatten().tolist():
            assert targets[t] == tokens[t - 1]


def check_modular_addition(batch: Batch) -> None:
    assert batch.mask[:, -1].all() and not batch.mask[:, :-1].any(), "only '=' is a target"
    for (a, b, eq), target in zip(
        batch.tokens.tolist(), batch.targets[:, -1].tolist(), strict=True
    ):
        assert target == (a + b) % eq, (a, b, eq, target)


def check_markov_icl(batch: Batch) -> None:
    """A Markov chain's next state is never determined, only its distribution: every position
    is a target and the target is the next token of the sampled chain."""
    assert batch.mask.all()
    assert torch.equal(batch.targets[:, :-1], batch.tokens[:, 1:])


ORACLES = {
    "induction": check_induction,
    "shift": check_shift,
    "modular_addition": check_modular_addition,
    "markov_icl": check_markov_icl,
}


@st.composite
def induction_tasks(draw: st.DrawFn) -> InductionTask:
    """Any valid InductionTask: small vocabularies, and large ones (the rejection sampler)."""
    bos = draw(st.booleans())
    n_ids = draw(st.one_of(st.integers(2, 40), st.integers(1000, 60_000)))
    body = draw(st.integers(4, 60))
    max_period = draw(st.integers(1, min(n_ids, body - 2)))
    min_period = draw(st.integers(1, max_period))
    seed = draw(st.integers(0, 2**40))
    return InductionTask(n_ids + bos, body + bos, min_period, max_period, bos, seed)


@given(induction_tasks(), st.integers(1, 8), st.integers(0, 2**32))
@SETTINGS
def test_induction_batches_and_probes_are_determined(task, batch_size, seed):
    batch = task.sample(batch_size, torch.Generator().manual_seed(seed))
    assert batch.tokens.shape == batch.mask.shape == (batch_size, task.seq_len)
    check_induction(batch)
    # Every sequence has something to learn, and the BOS (if any) is never a target.
    assert batch.mask.any(dim=1).all()
    probe = task.probe(batch_size)
    assert probe.repeat_length == task.probe_length >= 2
    assert probe.tokens.shape[1] <= task.seq_len
    check_induction(probe)
    assert (probe.mask.sum(dim=1) == task.probe_length - 1).all()


@given(
    st.integers(2, 64), st.integers(2, 64), st.integers(1, 8), st.integers(0, 2**32)
)  # fmt: skip
@SETTINGS
def test_shift_batches_and_probes_are_determined(d_vocab, seq_len, batch_size, seed):
    task = ShiftByOneTask(d_vocab, seq_len, seed=seed)
    check_shift(task.sample(batch_size, torch.Generator().manual_seed(seed)))
    check_shift(task.probe(batch_size))


@given(
    st.integers(1, 6), st.integers(2, 30), st.integers(2, 12), st.booleans(), st.booleans(),
    st.integers(0, 2**32),
)  # fmt: skip
@SETTINGS
def test_repeated_tokens_masks_only_determined_positions(
    batch, length, d_vocab, bos, distinct, seed
):
    if distinct and length > d_vocab - bos:
        with pytest.raises(ValueError, match="distinct"):
            repeated_tokens(batch, length, d_vocab, bos=bos, distinct=True, seed=seed)
        return
    probe = repeated_tokens(batch, length, d_vocab, bos=bos, distinct=distinct, seed=seed)
    # With replacement a first-copy position can look determined by chance: only the second
    # copy is masked, and only where the earlier tokens agree on the next one.
    check_induction(probe, exact=distinct)
    assert not probe.mask[:, : int(bos) + length].any()


@given(
    st.integers(-3, 40), st.integers(-3, 50), st.integers(-3, 30), st.integers(-3, 30),
    st.booleans(),
)  # fmt: skip
@SETTINGS
def test_an_accepted_induction_task_samples_and_probes(d_vocab, seq_len, lo, hi, bos):
    """Construction validates everything: whatever it accepts, sample() and probe() serve."""
    try:
        task = InductionTask(d_vocab, seq_len, lo, hi, bos)
    except ValueError:
        return
    check_induction(task.sample(4, torch.Generator().manual_seed(0)))
    check_induction(task.probe(4))


def test_every_registered_task_has_an_oracle():
    # Every task the package registers; tests register their own (e.g. the registry
    # acceptance test), which are theirs to check.
    checked = set()
    for name, factory in TASKS.items():
        if not getattr(factory, "__module__", "").startswith("circuits."):
            continue
        checked.add(name)
        assert name in ORACLES, f"task {name!r}: add an oracle to tests/test_task_properties.py"
        task = make_task(name, seed=3)
        ORACLES[name](task.sample(64, torch.Generator().manual_seed(0)))
        ORACLES[name](task.probe(64))
    assert {"induction", "shift"} <= checked


def test_the_oracle_catches_the_unknowable_first_repeat():
    """Position ``period - 1`` (the old mask kept it): its next token starts the first repeat,
    which nothing in the context announces."""
    tokens = torch.tensor([[5, 6, 7, 5, 6, 7, 5]])
    old_mask = torch.tensor([[False, False, True, True, True, True, False]])
    with pytest.raises(AssertionError, match="masked position 2 is ambiguous"):
        check_induction(Batch(tokens, tokens.roll(-1, 1), old_mask))
    new_mask = torch.tensor([[False, False, False, True, True, True, False]])
    check_induction(Batch(tokens, tokens.roll(-1, 1), new_mask))
