import pytest
import torch

from circuits import HookedTransformer, ModelConfig, TrainConfig, train
from circuits.tasks import InductionTask, ShiftByOneTask


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
    assert [h["step"] for h in result.history] == [10, 20, 25]
    record = result.history[-1]
    assert torch.tensor(record["induction"]).shape == (2, 2)
    assert torch.tensor(record["previous_token"]).shape == (2, 2)
    assert 0 <= record["accuracy"] <= 1
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
    with pytest.raises(ValueError, match="steps must be a positive int"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="target_accuracy must be in"):
        TrainConfig(target_accuracy=1.5)
