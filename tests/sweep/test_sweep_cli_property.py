"""Property-based sweep over ``circuits sweep`` and ``circuits sweep-report`` (issue 20), as
tests/test_cli_property.py does for train, report and bench: hostile arguments get one clear
line (exit 2, or 1 for the operating system's refusals) or succeed, never a traceback; nothing
is written outside the output directory or through a link, and no existing file changes unless
the user asked for it (``--resume`` continues our sweep, ``--force`` replaces a page).

Each example runs ``circuits.cli.main`` in-process in a fresh copy of a small world: spec files
(tiny, huge, broken), one of our sweep directories with results, one whose results.jsonl is a
link to a file outside the world, someone's folder and file, a model checkpoint and one of our
reports. Valid sweeps are one or two runs of 2 steps, in this process (``--workers 0``).
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
from circuits.report import MARKER as REPORT_MARKER

pytestmark = pytest.mark.slow  # valid examples train tiny models

SETTINGS = dict(
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TINY = {
    "model": {"d_model": 8, "n_ctx": 12, "d_vocab": 8, "n_heads": 1},
    "task": {"d_vocab": 8, "seq_len": 12, "max_period": 4},
    "train": {"steps": 2, "batch_size": 2, "eval_every": 1},
}
SPECS = st.sampled_from(
    [
        "one.json",  # 1 run
        "two.yaml",  # 2 runs
        "huge.json",  # seeds: 1,000,000,000
        "grid.json",  # a 40^5 grid
        "bad.yaml",  # not YAML
        "badkey.json",  # an unknown key
        "badvalue.json",  # a value the config refuses
        "afile",  # no known suffix
        "notes",  # a folder
        "missing.json",
    ]
)
OUTS = st.sampled_from(
    [
        "new",  # free
        "ours",  # our sweep, with results
        "linked",  # our sweep whose results.jsonl is a link to ../../outside.txt
        "notes",  # someone's folder
        "afile",  # someone's file
        "afile/sub",
        "ck",  # a checkpoint
        "ck/sweep",
        "",  # the current folder
        "/proc/circuits-x",  # cannot be written
        "x" * 300,  # name too long
    ]
)
# --max-runs values: never one that would let huge.json or grid.json be built.
COUNTS = st.sampled_from(["-1", "0", "1", "5", "x", "", "1e3"])


def write(path: Path, data: object) -> None:
    path.write_text(json.dumps(data) if path.suffix == ".json" else str(data))


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("sweepworld")
    world_dir = base / "w"
    world_dir.mkdir()
    (base / "outside.txt").write_text("outside the world: never written")
    one = {"name": "one", "base": TINY, "seeds": 1}
    write(world_dir / "one.json", one)
    (world_dir / "two.yaml").write_text(json.dumps({**one, "name": "two", "seeds": 2}))
    write(world_dir / "huge.json", {**one, "name": "huge", "seeds": 1_000_000_000})
    grid = {f"train.{k}": list(range(1, 41)) for k in ("steps", "batch_size", "eval_every")}
    grid |= {"model.d_model": list(range(8, 48)), "task.max_period": list(range(2, 42))}
    write(world_dir / "grid.json", {**one, "name": "grid", "grid": grid})
    (world_dir / "bad.yaml").write_text("name: [unclosed\n")
    write(world_dir / "badkey.json", {**one, "bogus": 1})
    write(world_dir / "badvalue.json", {**one, "base": {"train": {"lr": -1}}})
    (world_dir / "afile").write_text("precious")
    (world_dir / "notes").mkdir()
    (world_dir / "notes" / "todo.txt").write_text("mine")
    (world_dir / "ours.html").write_bytes(b"<!DOCTYPE html>" + REPORT_MARKER + b"<p>old</p>")
    from helpers import perturbed_model

    perturbed_model().save(world_dir / "ck")
    quiet = contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO())
    with quiet[0], quiet[1]:
        for out in ("ours", "linked"):
            argv = ["sweep", str(world_dir / "one.json"), "--workers", "0", "-q"]
            assert main([*argv, "--out", str(world_dir / out)]) == 0
    results = world_dir / "linked" / "results.jsonl"
    results.unlink()
    results.symlink_to(Path("..") / ".." / "outside.txt")
    return base


@contextlib.contextmanager
def world(template: Path) -> Iterator[Path]:
    """A fresh copy of the template (links kept as links), the world as the current folder."""
    root = Path(tempfile.mkdtemp(prefix="circuits-sweep-prop-"))
    shutil.copytree(template, root / "t", symlinks=True)
    cwd = os.getcwd()
    os.chdir(root / "t" / "w")
    try:
        yield root / "t"
    finally:
        os.chdir(cwd)
        shutil.rmtree(root, ignore_errors=True)


def snapshot(root: Path) -> dict[str, str]:
    """Every entry (hidden ones too): a file's hash, a link's target, a folder's mark."""
    out = {}
    for p in root.rglob("*"):
        key = str(p.relative_to(root))
        if p.is_symlink():
            out[key] = "link -> " + os.readlink(p)
        elif p.is_file():
            out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[key] = "dir"
    return out


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main(argv)
        via_argparse = False
    except SystemExit as e:  # argparse: usage and one "error:" line
        code, via_argparse = int(e.code or 0), True
    out, err = capsys.readouterr()
    event(f"exit {code}")
    assert "Traceback" not in err, err
    assert code in (0, 1, 2), (code, err)
    if code != 0:
        lines = [line for line in err.strip().splitlines() if not line.startswith("sweep: run")]
        if via_argparse:
            assert lines and ": error: " in lines[-1], err
        else:
            assert len(lines) == 1 and lines[0].startswith(f"circuits {argv[0]}: error: "), err
    return code, out, err


def inside(name: str, folder: str) -> bool:
    return folder not in ("", ".") and (name == folder or name.startswith(folder + "/"))


@st.composite
def sweep_argv(draw: st.DrawFn) -> list[str]:
    hostile = draw(st.booleans())  # or a valid spec and workers, so that the paths are reached
    argv = ["sweep", draw(SPECS if hostile else st.sampled_from(["one.json", "two.yaml"])), "-q"]
    workers = ["0", "-1", "x", "1000000000"] if hostile else ["0"]
    argv += ["--workers", draw(st.sampled_from(workers))]
    if draw(st.integers(1, 3)) > 1:
        argv += ["--out", draw(OUTS | st.just("new"))]
    if draw(st.integers(1, 3)) == 1:
        argv += ["--max-runs", draw(COUNTS)]
    if draw(st.integers(1, 6)) == 1:
        argv += ["--scheduler", draw(st.sampled_from(["nowhere", "tcp://127.0.0.1:1", "tcp://"]))]
    if draw(st.booleans()):
        argv.append("--resume")
    return argv


@settings(max_examples=60, **SETTINGS)  # type: ignore[arg-type]
@given(argv=sweep_argv())
def test_sweep_arguments(
    template: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with world(template) as root:
        before = snapshot(root)
        code, _, _ = run(argv, capsys)
        after = snapshot(root)
    if "--out" in argv:
        out = argv[argv.index("--out") + 1]
    else:
        spec = argv[1]
        out = f"sweeps/{Path(spec).stem}"  # each valid spec's name is its file's stem
    out = f"w/{out}"
    assert after["outside.txt"] == before["outside.txt"], argv  # never through the link
    for name in set(before) | set(after):
        if before.get(name) == after.get(name):
            continue
        assert code == 0, (argv, name)
        assert inside(name, out) or inside(out, name), (argv, name)  # the output or its parents
        if name in before and before[name] != "dir":  # an existing file of the output changed
            assert "--resume" in argv or name.endswith(("spec.json", ".circuits-sweep")), (
                argv,
                name,
            )
        assert not name.startswith("w/ck/"), (argv, name)
        assert name in after, (argv, name)  # nothing deleted


@st.composite
def report_argv(draw: st.DrawFn) -> list[str]:
    results = ["ours", "ours/results.jsonl", "linked", "notes", "afile", "missing", "ck", ""]
    argv = ["sweep-report", draw(st.sampled_from(results))]
    targets = ["new.html", "ours.html", "afile", "notes", "ours/results.jsonl", "ck/x.html"]
    targets += ["ours/page.html", "/proc/circuits-x.html", "x" * 300 + ".html", ""]
    if draw(st.booleans()):
        argv += ["-o", draw(st.sampled_from(targets))]
    if draw(st.integers(1, 3)) == 1:
        argv += ["--title", draw(st.sampled_from(["t", "", "<script>", "x" * 1000]))]
    if draw(st.booleans()):
        argv.append("--force")
    return argv


@settings(max_examples=25, **SETTINGS)  # type: ignore[arg-type]
@given(argv=report_argv())
def test_sweep_report_arguments(
    template: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with world(template) as root:
        before = snapshot(root)
        code, _, _ = run(argv, capsys)
        after = snapshot(root)
    target = "w/" + (argv[argv.index("-o") + 1] if "-o" in argv else "sweep.html")
    for name in set(before) | set(after):
        if before.get(name) == after.get(name):
            continue
        assert code == 0 and name == target, (argv, name)
        assert name not in before or "--force" in argv or name == "w/ours.html", (argv, name)
        assert not name.startswith("w/ck/"), (argv, name)  # never inside a checkpoint
