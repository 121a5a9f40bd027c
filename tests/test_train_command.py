"""Newcomer items of ``circuits train`` (issue 20): defaults in --help, the progress bar's goal,
the resume policy in training (not the CLI), one memory check."""

from __future__ import annotations

import subprocess
import sys

from circuits.presets import PRESETS
from circuits.tasks import InductionTask
from circuits.training import TrainConfig, resume_plan
from circuits.training.loop import progress_bar


def test_help_shows_the_defaults() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "circuits.cli", "train", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    flat = " ".join(out.split())
    preset = PRESETS["induction"]
    for flag, value in (
        ("--layers", preset["model"]["n_layers"]),
        ("--d-model", preset["model"]["d_model"]),
        ("--steps", preset["train"]["steps"]),
        ("--lr", preset["train"]["lr"]),
        ("--batch-size", preset["train"]["batch_size"]),
    ):
        help_text = flat.split(f" {flag} ", 1)[1].split(" --", 1)[0]
        assert f"(default: {value:g})" in help_text, (flag, help_text)


def test_progress_bar_has_the_targets_as_goal_not_the_step_budget() -> None:
    task = InductionTask()
    bar = progress_bar(TrainConfig(steps=3000, targets={"induction": 0.4}), task, 0)
    try:
        assert bar.total is None and "induction>=0.4" in bar.desc and "3000" in bar.desc
    finally:
        bar.close()
    bar = progress_bar(TrainConfig(steps=300), task, 0)
    try:
        assert bar.total == 300
    finally:
        bar.close()


def test_resume_plan_is_training_policy() -> None:
    meta = {"step": 200, "solved_at": 200, "train_config": {"steps": 3000}}
    changes, message = resume_plan(meta, steps=400)
    assert changes == {"steps": 400, "target_accuracy": None, "targets": {}}
    assert message is not None and "continued to step 400" in message
    changes, message = resume_plan(meta)
    assert changes == {} and message is not None and "nothing to train" in message
    try:
        resume_plan(meta, steps=100)
    except ValueError as e:
        assert "does not go past the checkpoint's step 200" in str(e)
    else:
        raise AssertionError("steps before the checkpoint must be refused")
    try:
        resume_plan(meta, lr=0.1)
    except ValueError as e:
        assert "cannot change lr" in str(e)
    else:
        raise AssertionError("a change of the run must be refused")


def test_too_big_a_model_is_refused_by_model_config_check_fits(capsys) -> None:
    """The CLI's own memory estimate went: ModelConfig.check_fits decides, the CLI adds the
    flags that shrink the model."""
    from circuits.cli import main

    argv = ["train", "-q", "--d-model", "65536", "--layers", "64", "--heads", "1"]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "this model does not fit" in err and "--d-model" in err and "Traceback" not in err
