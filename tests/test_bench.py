"""circuits.benchmarks and ``circuits bench``: unit tests and a smoke run."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from circuits.benchmarks import cases, measure, runner
from circuits.cli import main
from circuits.commands.bench import results_folder

ROOT = Path(__file__).resolve().parents[1]


def test_interleaved_alternates_and_times_every_call() -> None:
    order: list[str] = []
    times = measure.interleaved(
        {"a": lambda: order.append("a"), "b": lambda: order.append("b")}, rounds=4, warmup=1
    )
    warmup, rounds = order[:2], order[2:]
    assert warmup == ["a", "b"] and rounds == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert [len(t) for t in times.values()] == [4, 4]
    assert all(t >= 0 for ts in times.values() for t in ts)


def test_comparison_ratio_is_of_medians() -> None:
    result = measure.comparison([1.0, 3.0, 2.0], [4.0, 8.0, 6.0], "s", "lower")
    assert result["ours"] == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert result["ratio"] == pytest.approx(2.0 / 6.0)


def test_peer_has_our_weights() -> None:
    import torch

    from circuits import HookedTransformer, ModelConfig

    ours = HookedTransformer(ModelConfig(**cases.REFERENCE)).eval()
    peer = cases.peer_like(ours).eval()
    tokens = torch.randint(0, 64, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(peer(tokens), ours(tokens), atol=1e-5, rtol=1e-5)


def test_unknown_case_is_a_clean_cli_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--cases", "train,nope"]) == 2
    assert "nope" in capsys.readouterr().err


def copy_of_the_package(tmp_path: Path) -> dict[str, str]:
    """An environment whose ``circuits`` is a copy of the package alone (no checkout around
    it, as when installed from a wheel), run from a folder without ``bench/``."""
    site = tmp_path / "site"
    shutil.copytree(
        ROOT / "circuits", site / "circuits", ignore=shutil.ignore_patterns("__pycache__")
    )
    return {**os.environ, "PYTHONPATH": str(site)}


def test_the_benchmark_ships_in_the_package(tmp_path: Path) -> None:
    """Issue 11/10: ``circuits bench`` edited sys.path to import the checkout's bench/run.py."""
    code = (
        "import circuits, circuits.commands.bench as b, circuits.benchmarks.runner as r; "
        "print(circuits.__file__); assert 'bench' not in __import__('sys').modules"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=copy_of_the_package(tmp_path),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(str(tmp_path / "site")), proc.stdout
    assert "sys.path" not in (ROOT / "circuits" / "commands" / "bench.py").read_text()


def test_python_m_bench_run_is_circuits_bench(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.run import main as shim

    assert shim(["--cases", "nope"]) == 2
    assert "--cases: unknown nope" in capsys.readouterr().err


def test_failed_runs_give_no_ratio() -> None:
    """Issue 10: a time-to-induction ratio was printed although nothing formed (0/5)."""
    runs = {
        side: [{"seed": s, "seconds": 1.0 + s, "steps": 20, "solved": False} for s in range(5)]
        for side in ("ours", "peer")
    }
    r = cases.induction_comparison(runs)
    assert r["ratio"] is None and r["ours"] is None and r["peer"] is None
    assert r["solved"] == {"ours": 0, "peer": 0}
    assert runner.ratio_text(r) == "n/a (formed: ours 0/5, peer 0/5)"
    runs["peer"] = [{**x, "solved": True} for x in runs["peer"]]
    r = cases.induction_comparison(runs)  # one side formed: still no ratio
    assert r["ratio"] is None and r["ours"] is None and r["peer"]["n"] == 5
    runs["ours"] = [{**x, "solved": True, "seconds": 2.0} for x in runs["ours"]]
    r = cases.induction_comparison(runs)
    assert r["ratio"] == pytest.approx(2.0 / 3.0)  # medians 2 and 1+2
    assert runner.ratio_text(r) == "0.67"


def test_markdown_prints_n_a_for_a_case_without_result() -> None:
    runs = {
        side: [{"seed": 0, "seconds": 1.0, "steps": 20, "solved": False}]
        for side in ("ours", "peer")
    }
    r = {**cases.induction_comparison(runs), "setup": "tiny"}
    results = {
        "machine": {
            "cpu": "x", "cores": 1, "torch_threads": 1, "torch": "t", "transformer_lens": "t",
            "python": "3", "load_average": {"before": None, "after": None},
        },
        "quick": True,
        "cases": {"time to induction": r},
    }  # fmt: skip
    table = runner.markdown(results)
    assert "| n/a | n/a | n/a (formed: ours 0/1, peer 0/1) |" in table
    assert "not a measurement" in table


def test_quick_run_never_replaces_full_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 10: ``circuits bench --quick`` overwrote the committed bench/RESULTS.md."""
    (tmp_path / "results.json").write_text(json.dumps({"quick": False, "cases": {}}))
    (tmp_path / "RESULTS.md").write_text("the README's table")
    assert main(["bench", "--quick", "--out", str(tmp_path)]) == 2
    assert "holds the results of a full run" in capsys.readouterr().err
    assert (tmp_path / "RESULTS.md").read_text() == "the README's table"
    # Without --out a quick run goes to a new temporary folder, never ./bench.
    folder = results_folder(None, quick=True, force=False)
    try:
        assert folder.parent == Path(tempfile.gettempdir()) and not any(folder.iterdir())
    finally:
        folder.rmdir()
    assert results_folder(None, quick=False, force=False) == Path("bench")
    assert results_folder(str(tmp_path), quick=True, force=True) == tmp_path


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--threads", "0"], "--threads must be between 1 and"),
        (["--threads", "100000"], "--threads must be between 1 and"),
        (["--cases", ","], "--cases: unknown (none)"),
    ],
)
def test_bad_bench_arguments(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


def test_bench_output_that_cannot_be_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "afile").write_text("x")
    assert main(["bench", "--quick", "--out", str(tmp_path / "afile" / "sub")]) == 1
    assert "afile is a file, not a directory" in capsys.readouterr().err
    assert main(["bench", "--quick", "--out", "/proc/circuits-bench"]) == 1
    assert "cannot write in /proc" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_run_writes_results_and_table(tmp_path) -> None:
    """A smoke run of ``circuits bench`` from a copy of the package, outside any checkout."""
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "circuits.cli",
            "bench",
            "--quick",
            "--seeds",
            "1",
            "--out",
            str(out),
        ],
        cwd=tmp_path,
        env=copy_of_the_package(tmp_path),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    tmp_path = out
    results = json.loads((tmp_path / "results.json").read_text())
    table = (tmp_path / "RESULTS.md").read_text()
    assert results["quick"] is True
    assert {"cpu", "cores", "torch", "transformer_lens", "torch_threads", "gemm_gflops"} <= set(
        results["machine"]
    )
    assert results["machine"]["gemm_gflops"] > 0
    names = set(results["cases"])
    assert {"train steps/s (1 thread)", "time to induction", "composition (Q, K, V)"} <= names
    assert {"run_with_cache (all hooks)", "run_with_cache (one hook)"} <= names
    for name, case in results["cases"].items():
        assert f"| {name} |" in table
        if case["ratio"] is None:
            # Only time to induction can lack a ratio: some run of a side did not form its
            # heads in the quick budget, and the table says so instead of a number.
            assert name == "time to induction", name
            assert any(case["solved"][s] < case["n_runs"][s] for s in ("ours", "peer")), case
            assert "n/a (formed:" in table
            continue
        assert math.isfinite(case["ratio"]) and case["ratio"] > 0, name
        assert case["ours"]["min"] <= case["ours"]["median"] <= case["ours"]["max"], name
    # Same weights and data on both sides: the first training loss is the same number.
    first = results["cases"]["train steps/s (1 thread)"]["first_loss"]
    assert first["ours"] == pytest.approx(first["peer"], abs=1e-4)
    assert results["cases"]["composition (Q, K, V)"]["max_abs_diff_vs_peer"] < 1e-4
    memory = results["cases"]["run_with_cache (one hook)"]["memory"]
    assert memory["ours"]["entries"] == memory["peer"]["entries"] == 1


def test_scale_case_writes_its_own_files_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--cases scale`` writes scale_results.json/.md and leaves results.json/RESULTS.md alone."""
    from circuits.benchmarks import scale

    (tmp_path / "RESULTS.md").write_text("the side-by-side table")
    row = scale.Row("head_scores", "gpt2-small", 8, 32)
    fake = {
        "threads": 2,
        "quick": False,
        "overrides": {},
        "cores": 2,
        "rows": [
            {
                **scale.asdict(row),
                "label": row.label,
                "seconds": 1.5,
                "peak_mb": 900.0,
                "above_mb": 80.0,
            },
            {
                **scale.asdict(scale.Row("acdc", "attn-only-2l", 4, 32)),
                "label": "acdc",
                "error": "NotImplementedError: not yet",
            },
        ],
    }
    monkeypatch.setattr(scale, "case_scale", lambda quick, threads, log: fake)
    assert main(["bench", "--cases", "scale", "--out", str(tmp_path), "--threads", "1"]) == 0
    assert (tmp_path / "RESULTS.md").read_text() == "the side-by-side table"
    assert not (tmp_path / "results.json").exists()
    saved = json.loads((tmp_path / "scale_results.json").read_text())
    assert saved["rows"] == fake["rows"] and "cpu" in saved["machine"]
    table = (tmp_path / "scale_results.md").read_text()
    assert "| head_scores | gpt2-small | 8 x 2x32 | 1.50 s, peak 900 MB (+80) |" in table
    assert "error: NotImplementedError: not yet" in table
    assert "wrote" in capsys.readouterr().out


def test_scale_rows_cover_the_issue_targets() -> None:
    from circuits.benchmarks.scale import rows

    full = {(r.what, r.shape, r.side) for r in rows(quick=False)}
    for shape in ("attn-only-2l", "gelu-4l", "gpt2-small"):
        for what in ("head_scores", "all_composition_scores", "logit_lens", "report"):
            assert (what, shape, "ours") in full
    for what in ("Problem.build", "exact_patching", "naive loop", "edge_attribution", "acdc"):
        assert (what, "attn-only-2l", "ours") in full
    assert ("edge_attribution", "gpt2-small", "ours") in full
    assert ("head_scores", "gpt2-small", "peer") in full
    peers = [r for r in rows(quick=False) if r.side == "peer" and r.what == "head_scores"]
    ours = {(r.shape, tuple(r.options.items())) for r in rows(quick=False) if r.side == "ours"}
    assert all((r.shape, tuple(r.options.items())) in ours for r in peers)  # like for like
    assert len(rows(quick=True)) < len(rows(quick=False))


@pytest.mark.slow
def test_a_scale_row_runs_in_a_child_process() -> None:
    from circuits.benchmarks.scale import Row, measure

    result = measure(Row("all_composition_scores", "attn-only-2l", 0, 0), threads=1, quick=True)
    assert "error" not in result, result
    assert result["seconds"] > 0 and result["peak_mb"] >= result["rss_before_mb"] > 0
