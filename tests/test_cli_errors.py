"""The CLI answers bad arguments and missing or damaged files with one clear line, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import perturbed_model

from circuits.cli import main


def one_error_line(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"circuits {argv[0]}: error: "), err[0]
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--heads", "3"], "--d-model 32 (the default) is not divisible by --heads 3"),
        (["--d-model", "-8"], "--d-model must be positive, got -8"),
        (["--steps", "0"], "--steps must be positive, got 0"),
        (["--batch-size", "-1"], "--batch-size must be positive, got -1"),
        (["--lr", "nan"], "--lr must be a positive number"),
        (["--lr", "-1"], "--lr must be a positive number"),
        (["--threads", "0"], "--threads must be positive, got 0"),
        (["--checkpoint-every", "5"], "--checkpoint-every needs --out"),
        (["--resume", "/nonexistent/run"], "no checkpoint at /nonexistent/run"),
    ],
)
def test_bad_values(capsys: pytest.CaptureFixture[str], args: list[str], needle: str) -> None:
    one_error_line(capsys, ["train", "-q", *args], needle)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A real (tiny) training checkpoint."""
    assert (
        main(["train", "--task", "shift", "--steps", "3", "-q", "--out", str(tmp_path / "r")]) == 0
    )
    return tmp_path / "r"


def test_out_exists(capsys: pytest.CaptureFixture[str], run_dir: Path) -> None:
    capsys.readouterr()
    one_error_line(capsys, ["train", "-q", "--out", str(run_dir)], "already exists", "--force")


def test_force_never_deletes_other_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    argv = ["train", "-q", "--force", "--out", str(tmp_path)]
    one_error_line(capsys, argv, "not a circuits checkpoint")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_resume_with_conflicting_flags(capsys: pytest.CaptureFixture[str], run_dir: Path) -> None:
    capsys.readouterr()
    argv = ["train", "-q", "--resume", str(run_dir), "--seed", "2", "--lr", "0.1"]
    one_error_line(capsys, argv, "drop --seed, --lr")
    one_error_line(capsys, ["train", "-q", "--resume", str(run_dir), "--threads", "2"], "--threads")


def test_resume_a_model_without_training_state(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    perturbed_model().save(tmp_path / "m")
    one_error_line(capsys, ["train", "-q", "--resume", str(tmp_path / "m")], "no training state")


def test_resume_a_corrupted_checkpoint(capsys: pytest.CaptureFixture[str], run_dir: Path) -> None:
    capsys.readouterr()
    weights = run_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    one_error_line(capsys, ["train", "-q", "--resume", str(run_dir)], "content hash mismatch")


def test_divergence_is_one_line_and_keeps_the_checkpoint(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "r"
    argv = ["train", "-q", "--task", "shift", "--lr", "1e30", "--out", str(out)]
    line = one_error_line(capsys, [*argv, "--checkpoint-every", "1"], "training diverged")
    assert "is intact" in line
    from circuits import checkpoint

    checkpoint.load_training(out)  # the last good checkpoint loads


def test_the_real_console_script_prints_no_traceback(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metadata.json").write_text("{trunc")
    for argv, needle in (
        (["train", "--resume", str(tmp_path / "missing")], "no checkpoint at"),
        (["train", "--resume", str(tmp_path / "bad")], "not valid JSON"),
        (["train", "--task", "bogus"], "invalid choice: 'bogus'"),
        (["train", "--steps", "many"], "invalid int value: 'many'"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "circuits.cli", *argv], capture_output=True, text=True
        )
        assert proc.returncode == 2, proc
        assert "Traceback" not in proc.stderr, proc.stderr
        assert needle in proc.stderr.strip().splitlines()[-1], proc.stderr


def test_a_reader_that_goes_away_is_no_traceback(tmp_path: Path) -> None:
    """``circuits train --json | head -0``: the pipe is closed before the result is written."""
    argv = ["train", "--task", "shift", "--steps", "3", "-q", "--json"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "circuits.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait() == 1, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
