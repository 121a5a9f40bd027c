"""What a sweep refuses (issue 20): writing through a symbolic link, into someone's directory,
after an unreachable scheduler, or a spec of more runs than the limit; and the one line a
resumed sweep with nothing to do prints."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

from circuits.cli import main
from circuits.sweep import ResultsStore, SweepSpec, run_sweep
from circuits.sweep.spec import MAX_RUNS
from circuits.sweep.store import MARKER, is_sweep_dir


def tree(path: Path) -> dict[str, bytes | None]:
    """Every entry under ``path`` with its bytes (None for directories and links)."""
    out: dict[str, bytes | None] = {}
    for p in sorted(path.rglob("*")):
        out[str(p.relative_to(path))] = (
            p.read_bytes() if p.is_file() and not p.is_symlink() else None
        )
    return out


def one_run(small_spec: dict) -> SweepSpec:
    base = {**small_spec["base"], "train": {**small_spec["base"]["train"], "steps": 10}}
    return SweepSpec.from_dict({**small_spec, "base": base, "grid": {}, "seeds": 1})


# --- symbolic links (security item 1) ---


@pytest.mark.parametrize("name", ["results.jsonl", "results.jsonl.lock", "spec.json", MARKER])
def test_a_linked_file_in_the_sweep_directory_is_never_written_through(
    tmp_path: Path, small_spec: dict, name: str
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "sweep"
    out.mkdir()
    (out / MARKER).write_text(json.dumps({"format": "circuits-sweep"}))  # one of ours
    (out / name).unlink(missing_ok=True)
    (out / name).symlink_to(victim)
    before = tree(out)
    for resume in (False, True):
        with pytest.raises(FileExistsError, match="symbolic link"):
            run_sweep(one_run(small_spec), out, workers=0, quiet=True, resume=resume)
    assert victim.read_text() == "precious\n"
    assert tree(out) == before  # nothing else written either


def test_a_linked_histories_or_checkpoints_directory_is_refused(
    tmp_path: Path, small_spec: dict
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("histories", "checkpoints"):
        out = tmp_path / f"sweep-{name}"
        out.mkdir()
        (out / MARKER).write_text(json.dumps({"format": "circuits-sweep"}))
        (out / name).symlink_to(elsewhere, target_is_directory=True)
        with pytest.raises(FileExistsError, match="symbolic link"):
            run_sweep(one_run(small_spec), out, workers=0, quiet=True)
        assert list(elsewhere.iterdir()) == []


def test_a_link_planted_during_a_sweep_is_not_followed(tmp_path: Path) -> None:
    """Between rows, results.jsonl or histories/ replaced by a link: the append refuses."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    store = ResultsStore(tmp_path / "s")
    store.start({"name": "s"}, resume=False)
    store.append({"run_id": "a"})
    results = tmp_path / "s" / "results.jsonl"
    results.unlink()
    results.symlink_to(victim)
    with pytest.raises(FileExistsError, match="symbolic link"):
        store.append({"run_id": "b"})
    assert victim.read_text() == "precious\n"
    results.unlink()
    histories = tmp_path / "s" / "histories"
    histories.rmdir()
    (tmp_path / "other").mkdir()
    histories.symlink_to(tmp_path / "other", target_is_directory=True)
    with pytest.raises(FileExistsError, match="symbolic link"):
        store.append({"run_id": "c"}, history={"series": {}})
    assert list((tmp_path / "other").iterdir()) == []


def test_write_file_replaces_a_link_and_never_follows_one(tmp_path: Path) -> None:
    from circuits.files import write_file

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "out.json"
    link.symlink_to(victim)
    write_file(link, b"ours")
    assert victim.read_text() == "precious" and not link.is_symlink()
    assert link.read_bytes() == b"ours"
    # A link planted at our temporary name is not followed either.
    tmp = tmp_path / f".again.json.tmp-{os.getpid()}"
    tmp.symlink_to(victim)
    write_file(tmp_path / "again.json", b"x")
    assert victim.read_text() == "precious"


# --- someone's directory, an unreachable scheduler (data loss item 4) ---


def test_a_directory_of_the_users_files_is_refused(tmp_path: Path, small_spec: dict) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "spec.json").write_text('{"my": "own file"}')
    (out / "notes.txt").write_text("mine")
    before = tree(out)
    for resume in (False, True):
        with pytest.raises(FileExistsError, match="not a circuits sweep"):
            run_sweep(one_run(small_spec), out, workers=0, quiet=True, resume=resume)
    assert tree(out) == before


def test_our_own_sweep_directory_is_recognised_and_extended(
    tmp_path: Path, small_spec: dict
) -> None:
    out = tmp_path / "sweep"
    spec = one_run(small_spec)
    assert run_sweep(spec, out, workers=0, quiet=True).ok == 1
    assert is_sweep_dir(out) and json.loads((out / MARKER).read_text())["format"]
    bigger = SweepSpec.from_dict({**spec.to_dict(), "seeds": 2})
    summary = run_sweep(bigger, out, workers=0, quiet=True, resume=True)
    assert (summary.skipped, summary.ok) == (1, 1)
    # A sweep from before the marker: only our names, a spec that reads as one.
    (out / MARKER).unlink()
    assert is_sweep_dir(out)
    (out / "notes.txt").write_text("mine")
    assert not is_sweep_dir(out)


def test_an_unreachable_scheduler_fails_in_seconds_before_anything_is_written(
    tmp_path: Path, small_spec: dict
) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "sweep"
    start = time.monotonic()
    with pytest.raises(ValueError, match="cannot reach the Dask scheduler"):
        run_sweep(one_run(small_spec), out, scheduler=f"tcp://127.0.0.1:{port}", quiet=True)
    # Not a timing assertion of our speed: Dask's own timeout was 20 s, this refusal takes
    # one refused connection.
    assert time.monotonic() - start < 15
    assert not out.exists()
    with pytest.raises(ValueError, match="host and a port"):
        run_sweep(one_run(small_spec), out, scheduler="tcp://nowhere", quiet=True)
    assert not out.exists()


# --- the run count (resource item 6) ---


def test_a_huge_spec_is_counted_and_refused_before_anything_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from circuits.sweep import spec as spec_module

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("a run was built")

    monkeypatch.setattr(spec_module, "resolve", never)
    with pytest.raises(ValueError, match=r"1,000,000,000 runs .* --max-runs 1000000000"):
        SweepSpec.from_dict({"name": "s", "seeds": 1_000_000_000})
    grid = {f"train.{k}": list(range(1, 41)) for k in ("steps", "batch_size", "eval_every")}
    grid |= {"model.d_model": list(range(8, 48)), "task.max_period": list(range(2, 42))}
    with pytest.raises(ValueError, match=r"102,400,000 runs \(102,400,000 points x 1 seeds\)"):
        SweepSpec.from_dict({"name": "s", "grid": grid})
    big_random = {"name": "s", "search": "random", "samples": 10**6, "seeds": 3}
    with pytest.raises(ValueError, match="3,000,000 runs"):
        SweepSpec.from_dict({**big_random, "random": {"train.lr": {"uniform": [0.01, 0.02]}}})
    with pytest.raises(ValueError, match="max_runs"):
        SweepSpec.from_dict({"name": "s"}, max_runs=0)
    with pytest.raises(ValueError, match="unknown sweep spec key"):
        SweepSpec.from_dict({"name": "s", "max_runs": 10**9})  # the caller confirms, not the file


def test_the_limit_is_raised_by_the_caller(small_spec: dict, tmp_path: Path, capsys) -> None:
    spec = {**small_spec, "seeds": 3}  # 2 x 3 = 6 runs
    assert SweepSpec.from_dict(spec).count() == 6 == len(SweepSpec.from_dict(spec).runs())
    with pytest.raises(ValueError, match="6 runs"):
        SweepSpec.from_dict(spec, max_runs=5)
    assert SweepSpec.from_dict(spec, max_runs=6).count() == 6
    path = tmp_path / "s.json"
    path.write_text(json.dumps(spec))
    assert main(["sweep", str(path), "--max-runs", "5", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--max-runs 6" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
    assert main(["sweep", str(path), "--max-runs", "0"]) == 2
    from circuits.commands import sweep as command

    assert command.MAX_RUNS == MAX_RUNS  # the --help text's number


# --- the one line of a resumed sweep with nothing to do (newcomer item) ---


def test_a_resumed_sweep_with_nothing_to_do_says_so(
    small_spec: dict, tmp_path: Path, capsys
) -> None:
    spec = one_run(small_spec)
    path = tmp_path / "s.json"
    path.write_text(json.dumps(spec.to_dict()))
    out = tmp_path / "sweep"
    argv = ["sweep", str(path), "--workers", "0", "-q", "--out", str(out)]
    assert main(argv) == 0
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 0
    err = capsys.readouterr().err
    assert f"nothing to do: all 1 runs already have results in {out}" in err
    assert "nothing to run" not in err


def test_a_pool_of_a_billion_workers_is_refused(tmp_path: Path, capsys) -> None:
    from circuits.sweep.executors import MAX_WORKERS, engine

    with pytest.raises(ValueError, match="more than 256"), engine(MAX_WORKERS + 1):
        pass
    spec = tmp_path / "s.json"
    spec.write_text('{"name": "s"}')
    out = tmp_path / "o"
    assert main(["sweep", str(spec), "--workers", "1000000000", "--out", str(out)]) == 2
    assert "--workers must be in [0, 256]" in capsys.readouterr().err
    assert not out.exists()
