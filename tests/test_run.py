"""RunConfig: the one reading of a run's {model, task, train}; equal to the pre-refactor preset
code (rebuilt here by hand, as ``presets.build`` did it before RunConfig existed)."""

from __future__ import annotations

import json

import pytest
import torch

from circuits import presets
from circuits.config import ModelConfig
from circuits.model import HookedTransformer
from circuits.run import RunConfig
from circuits.tasks import make_task
from circuits.training import TrainConfig, train


def old_build(name: str, seed: int, **overrides: dict) -> tuple:
    """``presets.build`` as it was before RunConfig (commit 7b75e42)."""
    parts = presets.preset(name)
    for part, values in overrides.items():
        parts[part].update(values)
    model = HookedTransformer(ModelConfig(**parts["model"], seed=seed))
    task_kwargs = {**parts["task"], "seed": seed}
    task = make_task(task_kwargs.pop("name"), **task_kwargs)
    return model, task, TrainConfig(**parts["train"], seed=seed)


@pytest.mark.parametrize("name", ["induction", "shift"])
def test_round_trip_builds_what_the_old_preset_code_built(name: str) -> None:
    overrides = {"model": {"d_model": 16}, "train": {"steps": 1, "progress": False}}
    run = presets.run_config(name, seed=5, **overrides)
    again = RunConfig.from_dict(json.loads(json.dumps(run.to_dict())))
    assert again == run and again.to_dict() == run.to_dict()
    old_model, old_task, old_cfg = old_build(name, 5, **overrides)
    model, task, cfg = again.build()
    assert (model.cfg, task, cfg) == (old_model.cfg, old_task, old_cfg)
    for a, b in zip(model.state_dict().values(), old_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    first = train(model, task, cfg).losses
    assert first == train(old_model, old_task, old_cfg).losses and len(first) == 1


def test_from_dict_refuses_bad_parts_by_name() -> None:
    good = presets.run_config("shift").to_dict()
    with pytest.raises(ValueError, match=r"unknown run config field.*colour"):
        RunConfig.from_dict({**good, "colour": {}})
    with pytest.raises(ValueError, match="lacks train"):
        RunConfig.from_dict({"model": good["model"], "task": good["task"]})
    with pytest.raises(ValueError, match=r"unknown model config field.*colour"):
        RunConfig.from_dict({**good, "model": {**good["model"], "colour": 1}})
    with pytest.raises(ValueError, match=r"unknown train config field.*colour"):
        RunConfig.from_dict({**good, "train": {"colour": 1}})
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        RunConfig.from_dict({**good, "task": {"name": "nope"}})
    with pytest.raises(ValueError, match="part 'train' must be a mapping"):
        RunConfig.from_dict({**good, "train": 3})
    with pytest.raises(TypeError, match="seed must be an int"):
        RunConfig.from_dict(good, seed=1.5)  # type: ignore[arg-type]


def test_seed_reaches_every_part() -> None:
    run = presets.run_config("induction", seed=7)
    assert run.model.seed == run.task.seed == run.train.seed == 7


def test_from_checkpoint_reads_the_recorded_run(tmp_path) -> None:
    run = presets.run_config(
        "shift", seed=2, model={"d_model": 16}, train={"steps": 3, "progress": False}
    )
    model, task, cfg = run.build()
    train(model, task, cfg.replace(checkpoint_dir=str(tmp_path / "ck")))
    back = RunConfig.from_checkpoint(tmp_path / "ck", checkpoint_dir=None)
    assert back == run
