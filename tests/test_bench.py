"""bench/run.py and ``circuits bench``: unit checks and a smoke run, so the code can't rot."""

from __future__ import annotations

import json
import math

import pytest

from circuits.cli import main
from circuits.commands.bench import load_bench

bench = load_bench()


def test_interleaved_alternates_and_times_every_call() -> None:
    order: list[str] = []
    times = bench.interleaved(
        {"a": lambda: order.append("a"), "b": lambda: order.append("b")}, rounds=4, warmup=1
    )
    warmup, rounds = order[:2], order[2:]
    assert warmup == ["a", "b"] and rounds == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert [len(t) for t in times.values()] == [4, 4]
    assert all(t >= 0 for ts in times.values() for t in ts)


def test_comparison_ratio_is_of_medians() -> None:
    result = bench.comparison([1.0, 3.0, 2.0], [4.0, 8.0, 6.0], "s", "lower")
    assert result["ours"] == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert result["ratio"] == pytest.approx(2.0 / 6.0)


def test_peer_has_our_weights() -> None:
    import torch

    from circuits import HookedTransformer, ModelConfig

    ours = HookedTransformer(ModelConfig(**bench.REFERENCE)).eval()
    peer = bench.peer_like(ours).eval()
    tokens = torch.randint(0, 64, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(peer(tokens), ours(tokens), atol=1e-5, rtol=1e-5)


def test_unknown_case_is_a_clean_cli_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--cases", "train,nope"]) == 2
    assert "nope" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_run_writes_results_and_table(tmp_path) -> None:
    assert main(["bench", "--quick", "--seeds", "1", "--out", str(tmp_path)]) == 0
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
        assert math.isfinite(case["ratio"]) and case["ratio"] > 0, name
        assert case["ours"]["min"] <= case["ours"]["median"] <= case["ours"]["max"], name
        assert f"| {name} |" in table
    # Same weights and data on both sides: the first training loss is the same number.
    first = results["cases"]["train steps/s (1 thread)"]["first_loss"]
    assert first["ours"] == pytest.approx(first["peer"], abs=1e-4)
    assert results["cases"]["composition (Q, K, V)"]["max_abs_diff_vs_peer"] < 1e-4
    memory = results["cases"]["run_with_cache (one hook)"]["memory"]
    assert memory["ours"]["entries"] == memory["peer"]["entries"] == 1
