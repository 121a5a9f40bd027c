"""``circuits bench --cases atlas``: the stacked-seeds step profile, in its own files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from circuits.cli import main


def test_atlas_case_writes_its_own_files_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from circuits.benchmarks import atlas

    (tmp_path / "RESULTS.md").write_text("the side-by-side table")
    row = {"threads": 1, "G": 4, "single_ms": 2.0, "stacked_ms": 1.0, "speedup": 2.0}
    rows = [{**row, "stacked_gflops": atlas.step_flops() / 1e-3 / 1e9}]
    monkeypatch.setattr(
        atlas, "case_atlas", lambda quick: {"rows": rows, "markdown": atlas.markdown(rows)}
    )
    assert main(["bench", "--cases", "atlas", "--out", str(tmp_path), "--threads", "1"]) == 0
    assert (tmp_path / "RESULTS.md").read_text() == "the side-by-side table"
    assert json.loads((tmp_path / "atlas_results.json").read_text())["rows"] == rows
    assert "| 1 | 4 | 2.00 | 1.00 | 2.00x |" in (tmp_path / "atlas_results.md").read_text()


def test_step_flops_counts_every_matmul_of_the_default_step() -> None:
    from circuits.benchmarks.atlas import step_flops

    # 2 layers x (Q, K, V, O projections + scores + pattern @ V) + unembedding, x3 for backward.
    tokens, d, he, p, h, e, v = 32 * 48, 32, 32, 48, 2, 16, 32
    per_layer = 2 * tokens * 4 * d * he + 2 * 2 * 32 * h * p * p * e
    assert step_flops() == 3 * (2 * per_layer + 2 * tokens * d * v)
    assert step_flops(8) == 8 * step_flops()


def test_kernel_profile_times_both_kernels_on_the_default_shapes() -> None:
    from circuits.benchmarks.atlas import attention_path, kernel_profile

    assert attention_path().startswith("native kernel")  # CI has a compiler: it must build
    times = kernel_profile(G=2, rounds=2)
    assert set(times) == {
        f"{k}_{d}_ms" for k in ("native", "pytorch") for d in ("forward", "backward")
    }
    assert all(v > 0 for v in times.values())


@pytest.mark.slow
def test_cli_wall_times_the_sweep_command() -> None:
    from circuits.benchmarks.atlas import cli_wall

    (wall,) = cli_wall(seeds=2, rounds=1)
    assert 0 < wall < 300
