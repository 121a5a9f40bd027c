import dataclasses

import pytest
import torch

from circuits import HookedTransformer, ModelConfig, TrainConfig, train
from circuits.records import EvalRecord
from circuits.tasks import InductionTask, ShiftByOneTask
from circuits.training import targets_met


def tiny(seed=0, **overrides):
    kwargs = dict(n_layers=2, d_model=16, n_ctx=24, d_vocab=16, n_heads=2, attn_only=True)
    kwargs.update(overrides)
    return HookedTransformer(ModelConfig(**kwargs, normalization_type=None, seed=seed))


TASK = InductionTask(d_vocab=16, seq_len=24, min_period=3, max_period=10)


def test_same_seed_same_weights():
    cfg = TrainConfig(steps=30, batch_size=8, eval_every=10, seed=4, progress=False)
    a, b = tiny(), tiny()
    ra, rb = train(a, TASK, cfg), train(b, TASK, cfg)
    assert ra.losses == rb.losses
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
    c = tiny()
    train(c, TASK, TrainConfig(steps=30, batch_size=8, eval_every=10, seed=5, progress=False))
    assert not torch.equal(a.W_E, c.W_E)


def test_history_records_head_scores_and_warmup():
    model = tiny()
    result = train(model, TASK, TrainConfig(steps=25, eval_every=10, progress=False))
    assert [h.step for h in result.history] == [10, 20, 25]
    record = result.history[-1]
    assert isinstance(record, EvalRecord) and set(record.scores) == {"previous_token", "induction"}
    assert record.scores["induction"].shape == (2, 2)
    assert record.scores["previous_token"].shape == (2, 2)
    assert 0 <= record.accuracy <= 1 and record.train_loss == result.losses[-1]
    assert 0 < result.history[0].seconds <= record.seconds <= result.seconds
    assert len(result.losses) == 25 and result.steps == 25 and result.solved_at is None


def test_training_reduces_loss_on_shift_task():
    model = tiny(n_layers=1)
    task = ShiftByOneTask(d_vocab=16, seq_len=24)
    result = train(model, task, TrainConfig(steps=150, eval_every=50, progress=False))
    assert sum(result.losses[-10:]) / 10 < 0.5 * sum(result.losses[:10]) / 10


def test_early_stop_when_targets_met():
    model = tiny(n_layers=1)
    task = ShiftByOneTask(d_vocab=16, seq_len=24)
    cfg = TrainConfig(steps=2000, eval_every=25, target_accuracy=0.5, progress=False)
    result = train(model, task, cfg)
    assert result.solved_at is not None and result.steps == result.solved_at < 2000
    assert result.final["accuracy"] >= 0.5


def test_incompatible_task_and_bad_config():
    with pytest.raises(ValueError, match="task seq_len=48 exceeds the model's n_ctx=24"):
        train(tiny(), InductionTask(d_vocab=16, seq_len=48, max_period=10), TrainConfig())
    with pytest.raises(ValueError, match="task d_vocab=32 exceeds"):
        train(tiny(), InductionTask(d_vocab=32, seq_len=24, max_period=10), TrainConfig())
    with pytest.raises(ValueError, match="lr must be a positive"):
        TrainConfig(lr=-1.0)
    with pytest.raises(ValueError, match=r"steps=0 out of range \[1, inf\]"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="target_accuracy must be in"):
        TrainConfig(target_accuracy=1.5)


def test_stop_on_any_registered_score():
    model = tiny(n_layers=1)
    task = ShiftByOneTask(d_vocab=16, seq_len=24)
    cfg = TrainConfig(steps=2000, eval_every=25, targets={"previous_token": 0.6}, progress=False)
    result = train(model, task, cfg)
    assert result.solved_at is not None and result.steps == result.solved_at < 2000
    assert result.final is not None and result.final.best("previous_token") >= 0.6
    assert all(r.best("previous_token") < 0.6 for r in result.history[:-1])


def test_targets_and_their_deprecated_aliases():
    with pytest.warns(DeprecationWarning, match="target_induction"):
        cfg = TrainConfig(target_induction=0.4, target_previous_token=0.3)
    assert cfg.targets == {"induction": 0.4, "previous_token": 0.3}
    # The aliases are write-only init arguments: not fields, so not in to_dict or replace.
    assert "target_induction" not in {f.name for f in dataclasses.fields(TrainConfig)}
    assert dataclasses.replace(cfg, targets={}).targets == {}
    with pytest.warns(DeprecationWarning):
        assert TrainConfig(targets={"induction": 0.4}) == TrainConfig(target_induction=0.4)
    data = cfg.to_dict()
    assert data["targets"] == {"induction": 0.4, "previous_token": 0.3}
    assert "target_induction" not in data and TrainConfig.from_dict(data) == cfg
    old = {**data, "target_induction": 0.4, "target_previous_token": 0.3}  # earlier versions
    del old["targets"], old["scores"]
    assert TrainConfig.from_dict(old) == cfg
    with pytest.raises(ValueError, match="contradicts"):
        TrainConfig.from_dict({"targets": {"induction": 0.5}, "target_induction": 0.4})
    with pytest.raises(ValueError, match="contradicts"), pytest.warns(DeprecationWarning):
        TrainConfig(targets={"induction": 0.5}, target_induction=0.4)
    with pytest.raises(ValueError, match="unknown head score 'colour'"):
        TrainConfig(targets={"colour": 0.5})
    with pytest.raises(ValueError, match=r"must be in \[0.0, 1.0\]"):
        TrainConfig(targets={"induction": 1.5})
    with pytest.raises(TypeError, match="must be a number"):
        TrainConfig(targets={"induction": "high"})
    with pytest.raises(TypeError, match="mapping"):
        TrainConfig(targets=[("induction", 0.4)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="list of score names"):
        TrainConfig(scores="induction")  # type: ignore[arg-type]


def test_targets_met_uses_the_layers_that_count():
    cfg = TrainConfig(targets={"induction": 0.5}, target_accuracy=0.5)
    scores = {"induction": [[0.9, 0.9], [0.4, 0.2]], "previous_token": [[0.0, 0.0], [0.0, 0.0]]}
    record = EvalRecord(10, 1.0, 0.6, scores)
    assert not targets_met(record, cfg)  # layer 0 does not count for induction
    assert targets_met(EvalRecord(10, 1.0, 0.6, {**scores, "induction": [[0, 0], [0.5, 0]]}), cfg)
    assert not targets_met(EvalRecord(10, 1.0, 0.4, {"induction": [[0, 0], [0.5, 0]]}), cfg)
    assert not targets_met(EvalRecord(10, 1.0, 0.6, {}), cfg)  # a missing score is not met
    assert not targets_met(record, TrainConfig())  # no targets: never "met"


def test_a_target_the_probe_cannot_measure_is_refused_before_training():
    task = ShiftByOneTask(d_vocab=16, seq_len=24)  # its probe is no repeated sequence
    with pytest.raises(ValueError, match="need a repeated-tokens probe"):
        train(tiny(), task, TrainConfig(targets={"induction": 0.4}, progress=False))


def test_recorded_scores_can_be_chosen():
    cfg = TrainConfig(steps=10, eval_every=10, scores=("current_token",), progress=False)
    result = train(tiny(), TASK, cfg)
    assert set(result.history[-1].scores) == {"current_token"}
    cfg = TrainConfig(steps=10, eval_every=10, scores=(), targets={"induction": 0.99},
                      progress=False)  # fmt: skip
    assert set(train(tiny(), TASK, cfg).history[-1].scores) == {"induction"}


def test_old_history_in_a_training_checkpoint_is_migrated_on_resume(tmp_path):
    """A checkpoint whose train_state holds the flat dict records of earlier versions resumes,
    its history read as typed records equal to those an uninterrupted run records."""
    from types import SimpleNamespace

    from circuits import checkpoint, training
    from circuits.training import resume

    cfg = TrainConfig(steps=20, eval_every=10, progress=False, checkpoint_dir=str(tmp_path / "c"))
    first = train(tiny(), TASK, cfg)
    _, meta, state = training.load_training(tmp_path / "c")
    flat = [
        {"step": r.step, "train_loss": r.train_loss, "loss": r.loss, "accuracy": r.accuracy,
         **{k: v.tolist() for k, v in r.scores.items()}}
        for r in first.history
    ]  # fmt: skip
    model = checkpoint.load(tmp_path / "c", HookedTransformer)
    training.save_training(
        tmp_path / "c",
        model,
        step=state["step"],
        optimizer=SimpleNamespace(state_dict=lambda: state["optimizer"]),
        schedule=SimpleNamespace(state_dict=lambda: state["schedule"]),
        generator=SimpleNamespace(get_state=lambda: state["generator"]),
        result=SimpleNamespace(losses=state["losses"], history=flat, solved_at=None, seconds=1.0),
        task=TASK,
        train_config={**meta["train_config"]},
    )
    _, _, _, resumed = resume(tmp_path / "c", steps=30)
    full = train(tiny(), TASK, TrainConfig(steps=30, eval_every=10, progress=False))
    assert [r.step for r in resumed.history] == [10, 20, 30]
    assert all(isinstance(r, EvalRecord) for r in resumed.history)
    assert resumed.history == full.history
