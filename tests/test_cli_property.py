"""Property-based sweep over the console script (issue 10): hostile arguments to ``train``,
``report`` and ``bench`` get one clear line (exit 2, or 1 for the operating system's refusals)
or succeed, never a traceback, and no existing file changes unless the user asked for it.

Each example runs ``circuits.cli.main`` in-process in a fresh copy of a small world: a training
checkpoint, a model checkpoint, a plain file, a folder of someone's notes, one of our reports
and a full benchmark result. Valid training runs are tiny (at most 2 steps).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from circuits.cli import main
from circuits.report import MARKER

pytestmark = pytest.mark.slow  # valid examples train tiny models

SETTINGS = dict(
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
NUMBERS = st.sampled_from(["-1000000000000000000000", "-1", "0", "1", "2", "1000000000", "1e3"])
NUMBERS |= st.sampled_from(["", "abc", str(10**30), "nan"])
PATHS = st.sampled_from(
    [
        "ck",  # a training checkpoint
        "m",  # a model checkpoint
        "afile",  # someone's plain file
        "afile/sub",  # below a plain file
        "notes",  # a folder of someone's files
        "ours.html",  # one of our reports
        "ck/model.safetensors",  # inside a checkpoint
        "ck/new.html",
        "new/run",  # free
        "new.html",
        "/proc/circuits-x",  # cannot be written
        "",  # the current folder
        "x" * 300,  # name too long
        "bench",  # a folder with a full benchmark result
    ]
)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("world")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        argv = ["train", "-q", "--task", "shift", "--steps", "2", "--out", str(base / "ck")]
        assert main(argv) == 0
    from helpers import perturbed_model

    perturbed_model().save(base / "m")
    (base / "afile").write_text("precious")
    (base / "notes").mkdir()
    (base / "notes" / "todo.txt").write_text("mine")
    (base / "ours.html").write_bytes(b"<!DOCTYPE html>" + MARKER + b"<p>old</p>")
    (base / "bench").mkdir()
    (base / "bench" / "results.json").write_text(json.dumps({"quick": False, "cases": {}}))
    (base / "bench" / "RESULTS.md").write_text("the README's table")
    return base


@contextlib.contextmanager
def world(template: Path) -> Iterator[Path]:
    """A fresh copy of the template, as the current directory."""
    root = Path(tempfile.mkdtemp(prefix="circuits-prop-"))
    shutil.copytree(template, root / "w")
    cwd = os.getcwd()
    os.chdir(root / "w")
    try:
        yield root / "w"
    finally:
        os.chdir(cwd)
        shutil.rmtree(root, ignore_errors=True)


def snapshot(root: Path) -> dict[str, str]:
    out = {}
    for p in root.rglob("*"):
        if p.is_file() and not p.name.startswith("."):
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main(argv)
        via_argparse = False
    except SystemExit as e:  # argparse: usage and one "error:" line
        code, via_argparse = int(e.code or 0), True
    out, err = capsys.readouterr()
    event(f"exit {code}")  # --hypothesis-show-statistics: how many examples ran to success
    assert "Traceback" not in err, err
    assert code in (0, 1, 2), (code, err)
    if code != 0:
        lines = err.strip().splitlines()
        if via_argparse:
            assert lines and ": error: " in lines[-1], err
        else:
            assert len(lines) == 1 and lines[0].startswith(f"circuits {argv[0]}: error: "), err
    return code, out, err


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {k for k in before if after.get(k) != before[k]}


def inside(name: str, folder: str | None) -> bool:
    return folder is not None and folder != "" and (name == folder or name.startswith(folder + "/"))


def flag(draw: st.DrawFn, name: str, values: st.SearchStrategy[str], p: int = 2) -> list[str]:
    """``[name, value]`` one time in ``p``."""
    return [name, draw(values)] if draw(st.integers(1, p)) == 1 else []


SMALL = st.sampled_from(["1", "2"])


@st.composite
def train_argv(draw: st.DrawFn) -> list[str]:
    hostile = draw(st.booleans())  # hostile numbers, or valid ones (so that paths are reached)
    numbers = NUMBERS if hostile else SMALL
    steps = ["1", "2", "0", "-3", "x"] if hostile else ["1", "2"]
    argv = ["train", "-q", "--steps", draw(st.sampled_from(steps))]
    argv += [
        "--task",
        draw(st.sampled_from(["shift", "induction", "bogus"] if hostile else ["shift"])),
    ]
    for name in ("--layers", "--d-model", "--heads", "--batch-size", "--seed", "--threads"):
        argv += flag(draw, name, numbers, p=3)
    lr = ["0.01", "-1", "inf", "nan", "1e30", "x"] if hostile else ["0.01"]
    argv += flag(draw, "--lr", st.sampled_from(lr), p=3)
    argv += flag(draw, "--checkpoint-every", numbers, p=3)
    where = draw(st.sampled_from(["--out", "--resume", None]))
    if where:
        argv += [where, draw(PATHS | st.just("new/run"))]
    argv += flag(draw, "--report", PATHS | st.just("new.html"), p=3)
    for extra in ("--force", "--no-early-stop", "--json"):
        if draw(st.booleans()):
            argv.append(extra)
    return argv


@settings(max_examples=30, **SETTINGS)  # type: ignore[arg-type]
@given(argv=train_argv())
def test_train_arguments(
    template: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with world(template) as w:
        before = snapshot(w)
        code, _, _ = run(argv, capsys)
        after = snapshot(w)
    diff = changed(before, after)
    resumed = argv[argv.index("--resume") + 1] if "--resume" in argv else None
    out = argv[argv.index("--out") + 1] if "--out" in argv else None
    report = argv[argv.index("--report") + 1] if "--report" in argv else None
    for name in diff:
        assert code == 0, (argv, name)
        asked = (
            inside(name, resumed)
            or ("--force" in argv and (inside(name, out) or name == report))
            or (name == report == "ours.html")
        )
        assert asked, (argv, name)
    assert set(before) - set(after) == set() or (code == 0 and "--force" in argv), argv


@st.composite
def report_argv(draw: st.DrawFn) -> list[str]:
    argv = ["report", draw(PATHS | st.just("missing"))]
    argv += flag(draw, "-o", PATHS)
    argv += flag(draw, "--title", st.sampled_from(["t", "", "<script>", "x" * 1000]))
    if draw(st.booleans()):
        argv.append("--force")
    return argv


@settings(max_examples=12, **SETTINGS)  # type: ignore[arg-type]
@given(argv=report_argv())
def test_report_arguments(
    template: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with world(template) as w:
        before = snapshot(w)
        code, _, _ = run(argv, capsys)
        after = snapshot(w)
    target = argv[argv.index("-o") + 1] if "-o" in argv else "report.html"
    for name in changed(before, after) | (set(before) - set(after)):
        assert code == 0 and name == target, (argv, name)
        assert "--force" in argv or name == "ours.html", (argv, name)
        assert not name.startswith(("ck/", "m/")), (argv, name)  # never inside a checkpoint


@st.composite
def bench_argv(draw: st.DrawFn) -> list[str]:
    argv = ["bench"]
    argv += flag(draw, "--cases", st.sampled_from(["train", "induction,cache", ",", "nope", ""]))
    argv += flag(draw, "--seeds", NUMBERS)
    argv += flag(draw, "--threads", NUMBERS)
    argv += flag(draw, "--out", PATHS)
    for extra in ("--quick", "--force"):
        if draw(st.booleans()):
            argv.append(extra)
    return argv


@pytest.fixture
def stub_cases(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The cases replaced by one instant fake: this sweep is about arguments and files."""
    import torch

    from circuits.benchmarks import cases, runner
    from circuits.benchmarks.measure import comparison

    def fake(*args: object) -> dict:
        return {"stub": {**comparison([1.0], [2.0], "s", "lower"), "setup": "stub"}}

    for name in ("case_train_threads", "case_cache", "case_composition", "case_induction"):
        monkeypatch.setattr(cases, name, fake)
    machine = dict(cpu="x", cores=1, torch_threads=1, torch="t", transformer_lens="t", python="3")
    monkeypatch.setattr(runner, "machine", lambda: {**machine, "load_average": [0.0, 0.0, 0.0]})
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@settings(max_examples=25, **SETTINGS)  # type: ignore[arg-type]
@given(argv=bench_argv())
def test_bench_arguments(
    template: Path, capsys: pytest.CaptureFixture[str], stub_cases: None, argv: list[str]
) -> None:
    with world(template) as w:
        before = snapshot(w)
        code, out, _ = run(argv, capsys)
        after = snapshot(w)
    for line in out.splitlines():  # a quick run's temporary folder
        if line.startswith("wrote ") and "circuits-bench-quick-" in line:
            shutil.rmtree(Path(line.split()[1]).parent, ignore_errors=True)
    folder = argv[argv.index("--out") + 1] if "--out" in argv else None
    if folder is None and "--quick" not in argv:
        folder = "bench"
    for name in changed(before, after) | (set(before) - set(after)):
        assert code == 0, (argv, name)
        assert name in (f"{folder}/results.json", f"{folder}/RESULTS.md"), (argv, name)
        assert "--quick" not in argv or "--force" in argv, (argv, name)  # never over a full run
