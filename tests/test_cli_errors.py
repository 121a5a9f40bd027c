"""The CLI answers bad arguments and missing or damaged files with one clear line, exit 2."""

from __future__ import annotations

import json
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
    from circuits import training

    training.load_training(out)  # the last good checkpoint loads


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


# --- issue 10: outputs checked first, never written over what is not ours ---
def test_report_never_writes_into_a_checkpoint(
    capsys: pytest.CaptureFixture[str], run_dir: Path
) -> None:
    """Item 1: ``report CK -o CK/model.safetensors`` overwrote the weights (exit 0)."""
    from circuits import training

    capsys.readouterr()
    weights = (run_dir / "model.safetensors").read_bytes()
    for target in (run_dir / "model.safetensors", run_dir / "report.html"):
        for force in ([], ["--force"]):
            argv = ["report", str(run_dir), "-o", str(target), *force]
            one_error_line(capsys, argv, "inside the checkpoint", str(run_dir))
    assert (run_dir / "model.safetensors").read_bytes() == weights
    assert not (run_dir / "report.html").exists()
    training.load_training(run_dir)
    argv = ["train", "-q", "--resume", str(run_dir), "--report", str(run_dir / "r.html")]
    one_error_line(capsys, argv, "inside the checkpoint")


@pytest.mark.slow  # writes three reports
def test_report_replaces_only_its_own_pages_without_force(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    perturbed_model().save(tmp_path / "m")
    notes = tmp_path / "notes.html"
    notes.write_text("<html>my notes</html>")
    one_error_line(
        capsys,
        ["report", str(tmp_path / "m"), "-o", str(notes)],
        "not a circuits report",
        "--force",
    )
    assert notes.read_text() == "<html>my notes</html>"
    page = tmp_path / "page.html"
    assert main(["report", str(tmp_path / "m"), "-o", str(page)]) == 0
    first = page.stat().st_mtime_ns
    assert main(["report", str(tmp_path / "m"), "-o", str(page), "--title", "again"]) == 0
    assert page.stat().st_mtime_ns != first and "again" in page.read_text()  # ours: replaced
    assert main(["report", str(tmp_path / "m"), "-o", str(notes), "--force"]) == 0
    assert "my notes" not in notes.read_text()


def test_train_checks_its_outputs_before_training(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Item 2: ``--out afile/ckpt`` and ``--out /proc/ckpt`` trained the whole run, then failed."""
    (tmp_path / "afile").write_text("keep")
    cases = [
        (["--out", str(tmp_path / "afile" / "ckpt")], "afile is a file, not a directory"),
        (["--out", "/proc/circuits-ckpt"], "cannot write in /proc"),
        (["--report", str(tmp_path / "afile" / "r.html")], "does not exist"),
        (["--report", str(tmp_path / "afile")], "not a circuits report"),
        (["--out", str(tmp_path / ("x" * 250))], "file name too long"),
    ]
    for args, needle in cases:
        code = main(["train", "-q", "--task", "shift", "--steps", "2", *args])
        captured = capsys.readouterr()
        assert code in (1, 2) and captured.out == "", (args, captured)  # nothing trained
        err = captured.err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], (args, err)
    assert (tmp_path / "afile").read_text() == "keep"


def test_os_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import circuits.commands.train as train_command

    def denied(args: object) -> int:
        raise PermissionError(13, "Permission denied", "/srv/runs/ckpt")

    monkeypatch.setattr(train_command, "run", denied)
    assert main(["train", "-q"]) == 1
    assert capsys.readouterr().err == "circuits train: error: /srv/runs/ckpt: Permission denied\n"


def test_an_unwritable_directory_is_refused_before_training(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 2: a directory the user cannot write (read-only for a normal user; root can write
    anywhere, so for root the file system's refusal is simulated where the check meets it)."""
    import errno
    import os
    import tempfile

    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    if os.geteuid() == 0:
        real = tempfile.mkdtemp

        def mkdtemp(*args: object, dir: object = None, **kwargs: object) -> str:
            if dir is not None and Path(str(dir)) == ro:
                raise PermissionError(errno.EACCES, "Permission denied", str(dir))
            return real(*args, dir=dir, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    argv = ["train", "-q", "--task", "shift", "--steps", "2", "--out", str(ro / "ck")]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # refused before training
    assert captured.err.strip().splitlines() == [
        f"circuits train: error: cannot write in {ro} (Permission denied); choose another place"
    ]
    ro.chmod(0o755)


def test_size_that_cannot_fit_is_refused_before_allocating(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Item 11: ``--d-model 1000000`` died in the allocator."""
    line = one_error_line(capsys, ["train", "-q", "--d-model", "1000000"], "GiB to train")
    assert "8,000,120,000,032 parameters" in line and "--d-model" in line
    one_error_line(capsys, ["train", "-q", "--batch-size", str(10**9)], "--batch-size")


# --- issue 10 item 14: the user's words ---
def test_unknown_flag_prints_the_subcommands_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--bogus"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: circuits train") and "unrecognized arguments: --bogus" in err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--layers", "0"], "--layers must be positive, got 0"),
        (["--heads", "-2"], "--heads must be positive, got -2"),
        (["--d-model", "30", "--heads", "4"], "--d-model 30 is not divisible by --heads 4"),
        (["--seed", "-1"], "--seed must be between 0 and 2**63-1"),
        (["--seed", str(10**30)], "--seed must be between"),
        (["--threads", "100000"], "--threads 100000 is more than"),
        (["--checkpoint-every", "0", "--out", "x"], "--checkpoint-every must be positive"),
        (["--lr", "inf"], "--lr must be a positive number"),
    ],
)
def test_messages_name_flags(
    capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    line = one_error_line(capsys, ["train", "-q", *args], needle)
    for internal in ("n_layers", "n_heads", "d_head", "batch_size", "d_model="):
        assert internal not in line, line


def test_out_exists_suggests_force_and_resume(
    capsys: pytest.CaptureFixture[str], run_dir: Path
) -> None:
    capsys.readouterr()
    one_error_line(capsys, ["train", "-q", "--out", str(run_dir)], "--force", f"--resume {run_dir}")


def test_one_layer_model_reports_no_induction_head(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "-q", "--layers", "1", "--steps", "2"]
    assert main([*argv, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["top_induction_head"] is None and "k_composition" not in summary
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "top induction head: n/a" in out and "top induction head: L0" not in out


def test_baseline_is_rounded_once() -> None:
    """The same baseline printed 0.179 in the CLI and 0.178 in the figures (rounded twice)."""
    from circuits.commands.train import circuit_lines, rounded

    summary = {
        "k_composition": {
            "source": "L0H1", "target": "L1H0", "score": 0.31249, "baseline": 0.17849,
            "baseline_std": 0.02049,
        },
        "ablate_source": {"head": "L0H1", "accuracy_before": 0.9, "accuracy_after": 0.1},
    }  # fmt: skip
    assert "(random baseline 0.178 ± 0.020)" in circuit_lines(summary)[0]
    assert f"{summary['k_composition']['baseline']:.3f}" == "0.178"  # as the figure title
    assert rounded(summary)["k_composition"]["baseline"] == 0.1785
