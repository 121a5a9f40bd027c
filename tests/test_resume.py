"""Training checkpoints: resume bit for bit after a real SIGKILL; divergence stops cleanly.

"Bit for bit" is checked with ``torch.equal`` on every weight, against a run that was never
interrupted, and the loss curves are compared exactly too.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from circuits import checkpoint, training
from circuits.presets import build
from circuits.training import TrainingDiverged, resume, train

CLI = [sys.executable, "-m", "circuits.cli", "train"]


def quick(**train_overrides: Any) -> dict[str, Any]:
    """Overrides for a short shift-task run with no early stopping."""
    base = dict(
        steps=60,
        eval_every=10,
        progress=False,
        target_accuracy=None,
        targets={},
    )
    return {"train": {**base, **train_overrides}}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs"


class Interrupt(Exception):
    pass


def test_resume_in_process_is_bit_identical(tmp_path: Path) -> None:
    model, task, cfg = build("shift", seed=3, **quick())
    full = train(model, task, cfg)

    model2, task2, cfg2 = build(
        "shift", seed=3, **quick(checkpoint_dir=str(tmp_path / "ck"), checkpoint_every=20)
    )

    def stop_at_50(step: int, record: dict[str, Any]) -> None:
        if step == 50:  # past the checkpoint at 40: steps 41-50 must be redone
            raise Interrupt

    with pytest.raises(Interrupt):
        train(model2, task2, cfg2, callback=stop_at_50)
    assert checkpoint.read_metadata(tmp_path / "ck")["step"] == 40
    resumed, _, _, result = resume(tmp_path / "ck")
    assert_same_weights(resumed.state_dict(), model.state_dict())
    assert result.losses == full.losses
    assert result.history == full.history
    assert result.steps == full.steps == 60
    assert checkpoint.read_metadata(tmp_path / "ck")["step"] == 60


def test_resume_refuses_a_different_run(tmp_path: Path) -> None:
    model, task, cfg = build("shift", **quick(steps=20, checkpoint_dir=str(tmp_path / "ck")))
    train(model, task, cfg)
    other_model, other_task, other_cfg = build("shift", **quick(steps=40, lr=3e-3))
    with pytest.raises(ValueError, match="train config differs in lr"):
        train(other_model, other_task, other_cfg, resume=tmp_path / "ck")
    wider, task3, cfg3 = build("shift", model={"d_model": 64}, **quick(steps=40))
    with pytest.raises(ValueError, match="model config differs"):
        train(wider, task3, cfg3, resume=tmp_path / "ck")
    with pytest.raises(ValueError, match="cannot change lr"):
        resume(tmp_path / "ck", lr=1.0)


def test_plain_model_checkpoint_cannot_be_resumed(tmp_path: Path) -> None:
    model, _, _ = build("shift")
    model.save(tmp_path / "m")
    with pytest.raises(ValueError, match="no training state"):
        resume(tmp_path / "m")


def test_fresh_run_will_not_clobber_a_checkpoint(tmp_path: Path) -> None:
    model, task, cfg = build("shift", **quick(steps=10, checkpoint_dir=str(tmp_path / "ck")))
    train(model, task, cfg)
    before = load_file(tmp_path / "ck" / "model.safetensors")
    model2, task2, cfg2 = build(
        "shift", seed=1, **quick(steps=10, checkpoint_dir=cfg.checkpoint_dir)
    )
    with pytest.raises(FileExistsError, match="already exists"):
        train(model2, task2, cfg2)
    assert_same_weights(load_file(tmp_path / "ck" / "model.safetensors"), before)
    train(model2, task2, cfg2, overwrite=True)
    assert_same_weights(load_file(tmp_path / "ck" / "model.safetensors"), model2.state_dict())


# --- divergence ---
def test_nan_loss_stops_with_the_last_good_checkpoint_intact(tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    model, task, cfg = build(
        "shift", **quick(eval_every=5, checkpoint_dir=str(ck), checkpoint_every=10)
    )
    at_10: dict[str, torch.Tensor] = {}

    def poison(step: int, record: dict[str, Any]) -> None:
        if step == 10:
            at_10.update({k: v.clone() for k, v in model.state_dict().items()})
        if step == 15:  # not a checkpoint step: the next loss is the first to see it
            with torch.no_grad():
                model.embed.W_E[0, 0] = float("nan")

    with pytest.raises(TrainingDiverged, match=r"step 16: loss is nan.*\(step 10\), is intact"):
        train(model, task, cfg, callback=poison)
    saved, meta, state = training.load_training(ck)
    assert meta["step"] == state["step"] == 10
    assert_same_weights(saved.state_dict(), at_10)


def test_non_finite_weights_are_never_checkpointed(tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    model, task, cfg = build("shift", **quick(checkpoint_dir=str(ck), checkpoint_every=10))

    def poison(step: int, record: dict[str, Any]) -> None:
        if step == 20:  # a checkpoint step: caught by the weight check, before saving
            with torch.no_grad():
                model.unembed.W_U[1, 2] = float("inf")

    with pytest.raises(TrainingDiverged, match=r"step 20: weights are not finite.*\(step 10\)"):
        train(model, task, cfg, callback=poison)
    saved, meta, _ = training.load_training(ck)
    assert meta["step"] == 10 and checkpoint.all_finite(saved)


def test_real_divergence_is_caught(tmp_path: Path) -> None:
    """An absurd learning rate without clipping overflows float32 within a couple of steps."""
    model, task, cfg = build(
        "shift", **quick(lr=1e30, grad_clip=None, warmup_steps=0, checkpoint_dir=str(tmp_path))
    )
    with pytest.raises(TrainingDiverged, match="loss is nan"):
        train(model, task, cfg, overwrite=True)


# --- real SIGKILLs ---
def read_step(path: Path) -> int:
    try:
        return json.loads((path / "metadata.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return -1


@pytest.mark.slow
def test_cli_resume_after_sigkill_is_bit_identical(tmp_path: Path) -> None:
    args = ["--task", "shift", "--steps", "150", "--no-early-stop", "-q", "--checkpoint-every"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run([*CLI, *args, "5", "--out", str(whole)], check=True, capture_output=True)

    proc = subprocess.Popen([*CLI, *args, "5", "--out", str(killed)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while read_step(killed) < 20 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    step = read_step(killed)
    assert 20 <= step < 150
    training.load_training(killed)  # whole and valid, whatever the kill interrupted

    done = subprocess.run(
        [*CLI, "--resume", str(killed), "-q"], capture_output=True, text=True, check=True
    )
    assert "checkpoint:" in done.stderr and "(step 150)" in done.stderr
    assert_same_weights(
        load_file(killed / "model.safetensors"), load_file(whole / "model.safetensors")
    )
    _, _, resumed_state = training.load_training(killed)
    _, _, whole_state = training.load_training(whole)
    assert resumed_state["losses"] == whole_state["losses"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["killed", "whole"]


WRITER = """
import json, sys
from circuits import checkpoint
from circuits.files import FORMAT, write_files
path = sys.argv[1]
for i in range(10**9):
    payload = bytes([i % 251]) * 2_000_000
    files = {"model.safetensors": payload, "config.json": json.dumps({"i": i}).encode()}
    meta = {"format": FORMAT, "format_version": 1, "step": i,
            "sha256": {k: checkpoint.sha256(v) for k, v in files.items()}}
    files["metadata.json"] = json.dumps(meta).encode()
    write_files(path, files, overwrite=True)
"""


def test_sigkill_during_writes_never_leaves_a_broken_checkpoint(tmp_path: Path) -> None:
    """A writer that does nothing but replace a 2 MB checkpoint, killed at random moments."""
    ck = tmp_path / "ck"
    rng = random.Random(0)
    steps = []
    for _ in range(8):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(ck)])
        deadline = time.monotonic() + 60
        start = read_step(ck)
        while read_step(ck) <= start + 1 and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.05))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        meta = checkpoint.read_metadata(ck)  # recovers a checkpoint moved aside, if any
        data = checkpoint.read_file(ck, "model.safetensors", meta)  # hash-checked
        assert data[:1] == bytes([meta["step"] % 251])
        assert json.loads(checkpoint.read_file(ck, "config.json", meta)) == {"i": meta["step"]}
        steps.append(meta["step"])
    assert steps == sorted(steps)  # never went back to an older checkpoint


# --- issue 10: metadata.json validated; a solved run can be continued ---
def cli_train(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    from circuits.cli import main

    capsys.readouterr()
    code = main(["train", "-q", *argv])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda m: m.pop("train_config"), "missing 'train_config'"),
        (lambda m: m.pop("task"), "missing 'task'"),
        (lambda m: m["task"].update(colour="red"), "bad task"),
        (lambda m: m.update(task={"name": 5}), "'task' must be an object with a string 'name'"),
        (lambda m: m.update(train_config=[1]), "'train_config' must be an object"),
        (lambda m: m["train_config"].update(steps="many"), "bad train_config: steps"),
        (lambda m: m["train_config"].update(betas=5), "bad train_config"),
        (lambda m: m["train_config"].update(colour=1), "unknown train config field"),
        (lambda m: m.update(step="3"), "'step' must be a non-negative int"),
    ],
)
def test_resume_validates_metadata(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: Any, needle: str
) -> None:
    """Item 12: resume trusted metadata.json (KeyError / TypeError tracebacks)."""
    ck = tmp_path / "ck"
    model, task, cfg = build("shift", **quick(steps=2, checkpoint_dir=str(ck)))
    train(model, task, cfg)
    meta = json.loads((ck / "metadata.json").read_text())
    edit(meta)
    (ck / "metadata.json").write_text(json.dumps(meta))
    code, err = cli_train(capsys, "--resume", str(ck))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "metadata.json" in lines[0] or "resumable" in lines[0], lines
    assert needle in lines[0], lines
    with pytest.raises(checkpoint.CheckpointError, match=r"metadata\.json"):
        resume(ck)


def test_a_run_that_met_its_targets_can_be_continued(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 13: ``--resume DIR --steps N`` on a solved run did nothing and said nothing."""
    import shutil

    ck = tmp_path / "ck"
    model, task, cfg = build(
        "shift", **quick(steps=8, eval_every=2, target_accuracy=0.0, checkpoint_dir=str(ck))
    )
    assert train(model, task, cfg).solved_at == 2  # stopped early, at step 2 of 8
    shutil.copytree(ck, tmp_path / "copy")

    code, err = cli_train(capsys, "--resume", str(ck))
    assert code == 0 and "met its targets at step 2" in err and "pass --steps N" in err, err
    assert checkpoint.read_metadata(ck)["step"] == 2
    code, err = cli_train(capsys, "--resume", str(ck), "--steps", "1")
    assert code == 2 and "--steps 1 does not go past the checkpoint's step 2" in err, err

    code, err = cli_train(capsys, "--resume", str(ck), "--steps", "6")
    assert code == 0 and "met its targets at step 2; continued to step 6" in err, err
    meta = checkpoint.read_metadata(ck)
    assert meta["step"] == 6 and meta["solved_at"] == 2
    # The same weights as a run that never stopped early.
    whole, task2, cfg2 = build("shift", **quick(steps=6, eval_every=2))
    train(whole, task2, cfg2)
    assert_same_weights(load_file(ck / "model.safetensors"), whole.state_dict())

    code, err = cli_train(capsys, "--resume", str(tmp_path / "copy"), "--no-early-stop")
    assert code == 0 and "continued to step 8" in err, err
    assert checkpoint.read_metadata(tmp_path / "copy")["step"] == 8
