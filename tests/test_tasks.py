import os
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest
import torch

from circuits.tasks import (
    TASKS,
    Batch,
    InductionTask,
    ShiftByOneTask,
    Task,
    TaskBase,
    distinct_ids,
    make_task,
    register_task,
    repeated_tokens,
    task_from_dict,
    task_names,
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
            # Predictable iff the current token occurred earlier: its successor then is known.
            # (At t = period - 1 the next token is a repeat, but the context cannot tell.)
            assert bool(mask[t]) == (tokens[t] in tokens[:t].tolist())
        assert not mask[-1]


def test_induction_rejects_impossible_settings():
    with pytest.raises(ValueError, match="max_period=40 exceeds the 31 distinct ids"):
        InductionTask(d_vocab=32, seq_len=64, max_period=40, bos=True)
    with pytest.raises(ValueError, match="leaves no predictable repeat"):
        InductionTask(d_vocab=32, seq_len=24, max_period=23)
    InductionTask(d_vocab=32, seq_len=24, max_period=22)  # period, one repeat, its successor
    with pytest.raises(ValueError, match="max_period"):
        InductionTask(min_period=10, max_period=5)
    # Accepted before, then its probe raised: refused at construction now.
    with pytest.raises(ValueError, match="no room for the probe"):
        InductionTask(d_vocab=4, seq_len=3, min_period=1, max_period=1)


@pytest.mark.parametrize(
    ("field", "value"),
    [("bos", 2), ("bos", 1), ("seed", 1.5), ("seed", True), ("d_vocab", 32.0), ("seq_len", "48")],
)
def test_task_fields_have_their_types(field, value):
    with pytest.raises(TypeError, match=field):
        InductionTask(**{field: value})
    if field != "bos":
        with pytest.raises(TypeError, match=field):
            ShiftByOneTask(**{field: value})


def test_bos_sequences_have_seq_len():
    task = InductionTask(bos=True)
    assert sample(task).tokens.shape == (16, 48)
    assert task.probe(4).tokens.shape == (4, 1 + 2 * 23)


def test_probe_is_distinct_even_when_half_the_sequence_exceeds_the_vocabulary():
    """seq_len / 2 > d_vocab: the probe repeats all d_vocab ids (not 24 drawn with replacement,
    which would make most of its targets ambiguous)."""
    task = InductionTask(d_vocab=8, seq_len=48, min_period=2, max_period=8)
    assert task.probe_length == 8
    probe = task.probe(16)
    assert probe.repeat_length == 8 and probe.tokens.shape == (16, 16)
    assert all(len(set(row[:8].tolist())) == 8 for row in probe.tokens)
    with pytest.raises(ValueError, match="length"):
        task.probe(4, length=9)


def test_make_task_names_an_unknown_parameter():
    with pytest.raises(ValueError, match=r"task 'induction' has no parameter 'colour'.*d_vocab"):
        make_task("induction", colour="red")
    with pytest.raises(ValueError, match="name='shift' given for task 'induction'"):
        make_task("induction", name="shift")
    task = make_task("induction", name="induction", d_vocab=16, seq_len=20, max_period=8)
    assert task_from_dict(task.to_dict()) == task
    with pytest.raises(ValueError, match="must be a dict with a 'name'"):
        task_from_dict({"d_vocab": 3})


def test_sampling_cost_does_not_grow_with_the_vocabulary():
    """At GPT-2's vocabulary a batch used to sort 50257 random keys per sequence (about ten
    training steps of the default model); now it draws only the ids it needs. The fastest
    of many draws is compared, so a busy machine does not make this flaky."""

    def fastest(d_vocab):
        task, gen = InductionTask(d_vocab=d_vocab), torch.Generator().manual_seed(0)
        times = []
        for _ in range(30):
            start = time.perf_counter()
            task.sample(32, gen)
            times.append(time.perf_counter() - start)
        return min(times)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        small, large = fastest(32), fastest(50257)
    finally:
        torch.set_num_threads(threads)
    assert large < 5 * small + 1e-3, (small, large)


def test_distinct_ids_are_distinct_uniform_and_deterministic():
    for n, k in [(50257, 24), (32, 24), (2, 2), (100, 5)]:
        ids = distinct_ids(256, k, n, torch.Generator().manual_seed(1))
        assert ids.shape == (256, k) and ids.min() >= 0 and ids.max() < n
        assert all(len(set(row.tolist())) == k for row in ids)
        again = distinct_ids(256, k, n, torch.Generator().manual_seed(1))
        assert torch.equal(ids, again)
    # Every id equally likely in every slot (a chi-square-free check: counts near the mean).
    ids = distinct_ids(20_000, 3, 10, torch.Generator().manual_seed(2))
    counts = torch.bincount(ids[:, 0], minlength=10).float()
    assert (counts / counts.mean() - 1).abs().max() < 0.1, counts
    ids = distinct_ids(20_000, 3, 1000, torch.Generator().manual_seed(2))  # the rejection path
    counts = torch.bincount(ids[:, 2] // 100, minlength=10).float()
    assert (counts / counts.mean() - 1).abs().max() < 0.1, counts
    with pytest.raises(ValueError, match="do not fit"):
        distinct_ids(1, 5, 4, torch.Generator())


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


@dataclass(frozen=True)
class CopyFirst(TaskBase):
    d_vocab: int = 8
    seq_len: int = 6
    seed: int = 0
    name: str = "copy_first_test"

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        tokens = torch.randint(0, self.d_vocab, (batch_size, self.seq_len), generator=generator)
        targets = tokens[:, :1].expand_as(tokens)
        mask = torch.ones_like(tokens, dtype=torch.bool)
        mask[:, 0] = False
        return Batch(tokens, targets, mask)


def test_registry_adds_a_task_in_a_few_lines():
    register_task("copy_first_test")(CopyFirst)
    try:
        task = make_task("copy_first_test", d_vocab=5)
        assert isinstance(task, Task) and task.d_vocab == 5 and "copy_first_test" in task_names()
        # TaskBase: to_dict and a seeded probe (held out from the training stream).
        assert task.to_dict() == {"d_vocab": 5, "seq_len": 6, "seed": 0, "name": "copy_first_test"}
        assert task_from_dict(task.to_dict()) == task
        assert torch.equal(task.probe(4).tokens, task.probe(4).tokens)
        assert not torch.equal(task.probe(4).tokens, task.probe(4, seed=1).tokens)
        with pytest.raises(ValueError, match="already registered"):
            register_task("copy_first_test")(CopyFirst)
    finally:
        TASKS.pop("copy_first_test")
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        make_task("nope")


def test_registry_refuses_what_is_not_a_task():
    @dataclass(frozen=True)
    class NoProbe:
        d_vocab: int = 8
        seq_len: int = 6
        seed: int = 0
        name: str = "no_probe"

        def sample(self, batch_size, generator): ...

        def to_dict(self):
            return {}

    with pytest.raises(TypeError, match=r"NoProbe has no probe\(\)"):
        register_task("no_probe")(NoProbe)
    with pytest.raises(ValueError, match="identifier"):
        register_task("no spaces")
    register_task("misnamed_test")(CopyFirst)
    try:
        with pytest.raises(ValueError, match="calls itself 'copy_first_test'"):
            make_task("misnamed_test")
    finally:
        TASKS.pop("misnamed_test")


PLUGIN = """
from dataclasses import dataclass
from circuits.tasks import TaskBase

@dataclass(frozen=True)
class Plugged(TaskBase):
    d_vocab: int = 8
    seq_len: int = 6
    seed: int = 0
    name: str = "plugged"

    def sample(self, batch_size, generator):
        raise NotImplementedError
"""


def test_an_installed_package_adds_a_task_through_an_entry_point(tmp_path):
    """A package declaring ``[project.entry-points."circuits.tasks"] plugged = "mod:Plugged"``
    shows up in ``circuits train --task`` without being imported, and loads when used."""
    (tmp_path / "plugged_mod.py").write_text(PLUGIN)
    dist = tmp_path / "plugged_mod-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: plugged-mod\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[circuits.tasks]\nplugged = plugged_mod:Plugged\n")
    code = (
        "import sys; from circuits import tasks; "
        "assert 'plugged' in tasks.task_names(); "
        "assert 'plugged_mod' not in sys.modules; "
        "task = tasks.make_task('plugged', seq_len=7); "
        "assert task.seq_len == 7 and 'plugged' in tasks.TASKS; "
        "assert tasks.task_from_dict(task.to_dict()) == task"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    help_text = subprocess.run(
        [sys.executable, "-m", "circuits.cli", "train", "--help"],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    assert "plugged" in help_text


def test_task_generation_does_not_import_transformer_lens():
    code = (
        "import sys, torch; from circuits.tasks import InductionTask; "
        "InductionTask().sample(4, torch.Generator()); "
        "assert 'transformer_lens' not in sys.modules, 'transformer_lens imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_a_registered_task_trains_and_reports_from_the_cli(tmp_path, capsys):
    """`circuits train --task NAME` and `circuits report` for a task the package never heard of:
    it gets the default model sized to the task, its own probe, and a report."""
    import json

    from circuits.cli import main

    register_task("copy_first_test")(CopyFirst)
    try:
        ckpt, page = tmp_path / "run", tmp_path / "report.html"
        argv = ["train", "--task", "copy_first_test", "--steps", "30", "-q", "--json"]
        assert main([*argv, "--out", str(ckpt)]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["task"] == "copy_first_test" and summary["steps"] == 30
        assert 0 <= summary["probe_accuracy"] <= 1
        assert main(["report", str(ckpt), "-o", str(page)]) == 0
        assert "copy_first_test" in page.read_text()
    finally:
        TASKS.pop("copy_first_test")
