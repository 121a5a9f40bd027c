"""One writer per checkpoint, and crash recovery that never brings back a deleted checkpoint.

The writers here are real processes: a process killed at every file-system step of a
replacement, and two ``circuits train --resume`` runs of one checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from circuits import checkpoint, training
from circuits.files import FORMAT, CheckpointBusy, check_writable, write_files, writer_lock

# Replaces DIR with a checkpoint of step 2, dying (os._exit, as SIGKILL would) just before the
# K-th file-system call of the replacement: rename, fsync, rmtree or unlink.
DIE_AT = """
import json, os, shutil, sys
from circuits import checkpoint
from circuits.files import FORMAT, write_files
path, die_at = sys.argv[1], int(sys.argv[2])
calls = [0]
def dying(fn):
    def wrapped(*args, **kwargs):
        calls[0] += 1
        if calls[0] == die_at:
            os._exit(9)
        return fn(*args, **kwargs)
    return wrapped
os.rename, os.fsync, shutil.rmtree, os.unlink = (
    dying(os.rename), dying(os.fsync), dying(shutil.rmtree), dying(os.unlink))
files = {"model.safetensors": b"2" * 1000, "config.json": b"{}"}
meta = {"format": FORMAT, "format_version": 1, "step": 2,
        "sha256": {k: checkpoint.sha256(v) for k, v in files.items()}}
files["metadata.json"] = json.dumps(meta).encode()
write_files(path, files, overwrite=True)
"""


def write_step(path: Path, step: int) -> None:
    files = {"model.safetensors": str(step).encode() * 1000, "config.json": b"{}"}
    meta = {
        "format": FORMAT,
        "format_version": 1,
        "step": step,
        "sha256": {k: checkpoint.sha256(v) for k, v in files.items()},
    }
    files["metadata.json"] = json.dumps(meta).encode()
    write_files(path, files, overwrite=True)


def killed_replacement(path: Path, die_at: int) -> int:
    """Writes step 1 at ``path``, then lets a process replace it with step 2, dying at call
    ``die_at``; returns its exit status (0: it finished)."""
    write_step(path, 1)
    proc = subprocess.run([sys.executable, "-c", DIE_AT, str(path), str(die_at)])
    return proc.returncode


def test_a_writer_killed_at_any_step_leaves_old_or_new_and_never_resurrects(
    tmp_path: Path,
) -> None:
    seen, resurrection_checked = set(), False
    for die_at in range(1, 60):
        base, deleted = tmp_path / str(die_at), tmp_path / f"{die_at}-deleted"
        base.mkdir()
        finished = killed_replacement(base / "ck", die_at) == 0
        shutil.copytree(base, deleted)  # the same crash, for the user to delete below
        # A reader finds one whole checkpoint, old or new, and nothing else is left over (but
        # the lock file of a writer killed while releasing it).
        meta = checkpoint.read_metadata(base / "ck")
        data = checkpoint.read_file(base / "ck", "model.safetensors", meta)
        assert data == str(meta["step"]).encode() * 1000
        seen.add(meta["step"])
        assert {p.name for p in base.iterdir()} - {".ck.lock"} == {"ck"}, die_at
        # The user deletes what they see: it stays deleted. (Killed between the two renames,
        # there is nothing to delete: the interrupted write is completed, as above.)
        if (deleted / "ck").exists():
            shutil.rmtree(deleted / "ck")
            with pytest.raises(FileNotFoundError, match="no checkpoint"):
                checkpoint.read_metadata(deleted / "ck")
            check_writable(deleted / "ck", overwrite=False)  # a new save may go there
            assert not (deleted / "ck").exists(), die_at
            resurrection_checked = True
        if finished:
            break
    assert finished and seen == {1, 2} and resurrection_checked, (die_at, seen)


def test_report_does_not_resurrect_a_deleted_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's reproduction: a backup left behind, ``rm -rf ghost``, ``circuits report``."""
    from circuits.cli import main

    ghost = tmp_path / "ghost"
    write_step(ghost, 1)
    shutil.copytree(ghost, tmp_path / ".ghost.previous")  # left by a kill after the swap
    shutil.rmtree(ghost)
    assert main(["report", str(ghost), "-o", str(tmp_path / "g.html")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    assert not ghost.exists() and not (tmp_path / "g.html").exists()


def test_lock_is_exclusive_across_processes_and_reentrant_within_one(tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from circuits.files import writer_lock\n"
            "with writer_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)",
            str(ck),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(
            CheckpointBusy, match=rf"being written by another process \(pid {holder.pid}\)"
        ):
            write_step(ck, 1)
        assert not ck.exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # the kernel releases the lock of a dead process
        holder.wait()
    with writer_lock(ck), writer_lock(ck):
        write_step(ck, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # the lock file goes too


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A real (tiny) training checkpoint."""
    from circuits.cli import main

    out = tmp_path / "r"
    assert main(["train", "--task", "shift", "--steps", "3", "-q", "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_two_resumes_of_one_checkpoint(run_dir: Path) -> None:
    """Issue 10: two ``--resume`` of one directory raced (one deleted the other's temporary
    directory). The second now gets one line and exit 1; the first is undisturbed."""
    cli = [sys.executable, "-m", "circuits.cli", "train", "-q", "--resume", str(run_dir)]
    first = subprocess.Popen(
        [*cli, "--steps", "1000000", "--no-early-stop", "--checkpoint-every", "1"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lock = run_dir.parent / ".r.lock"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and first.poll() is None:
            if lock.exists() and lock.read_text().strip() == str(first.pid):
                with contextlib.suppress(OSError, ValueError):  # mid-replacement
                    if json.loads((run_dir / "metadata.json").read_text())["step"] > 3:
                        break  # holding the lock, and training
            time.sleep(0.05)
        assert first.poll() is None, first.stderr.read() if first.stderr else ""
        second = subprocess.run([*cli, "--steps", "2000000"], capture_output=True, text=True)
        assert second.returncode == 1, second
        lines = second.stderr.strip().splitlines()
        assert lines == [
            f"circuits train: error: {run_dir} is being written by another process "
            f"(pid {first.pid}); wait for it to finish or stop it"
        ], second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    _, meta, _ = training.load_training(run_dir)  # whole, and the first run's
    assert meta["step"] > 3
    assert meta["train_config"]["steps"] == 1000000
    assert [p.name for p in run_dir.parent.iterdir() if p.name.startswith(".r.tmp")] == []
    with writer_lock(run_dir):  # released by the kill
        pass


def test_lock_file_left_by_a_killed_writer_does_not_block(tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    (tmp_path / ".ck.lock").write_text(f"{os.getpid() + 10**6}\n")  # no process holds it
    write_step(ck, 1)
    assert checkpoint.read_metadata(ck)["step"] == 1
