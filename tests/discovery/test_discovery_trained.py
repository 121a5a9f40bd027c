"""Discovery on trained induction models (the default preset, 5 seeds trained here)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from circuits import presets, train
from circuits.discovery.benchmark import grade_methods

SEEDS = range(5)
# Floors measured with scripts/discovery_bench.py over these seeds (bench/discovery_results.md),
# rounded down: plain attribution patching ranks edges worst; integrated gradients and ACDC
# rank the reference circuit first.
AUC_FLOOR = {"EAP": 0.85, "EAP-IG (m=5)": 0.95, "ACDC": 0.95}


@pytest.fixture(scope="module")
def graded() -> list[dict[str, Any]]:
    rows = []
    for seed in SEEDS:
        model, task, cfg = presets.build("induction", seed=seed)
        train(model, task, dataclasses.replace(cfg, progress=False))
        rows.append(grade_methods(model.eval(), task.probe(32), seed=seed))
    return rows


@pytest.mark.slow
def test_exact_patching_puts_the_induction_circuit_on_top(graded: list[dict[str, Any]]) -> None:
    for seed, row in zip(SEEDS, graded, strict=True):
        prev, heads = row["previous_token_head"], row["induction_heads"]
        assert heads, row  # training stops once induction heads have formed
        top = [name for name, _ in row["exact_top"]]
        # The previous-token head reads the token with its values: the largest edge.
        assert top[0] == f"embed->{prev}.v", (seed, top)
        # Previous-token head -> induction keys and induction heads -> logits: in the top 10 of
        # the 42 edges (with the value inputs; a second, weaker previous-token head's edges can
        # come between them) and in exact patching's reference circuit.
        for edge in row["key_edges"]:
            assert row["key_edge_exact_ranks"][edge] < 10, (seed, edge, top)
            assert edge in row["reference"], (seed, edge, row["reference"])


@pytest.mark.slow
def test_acdc_keeps_the_key_edges_and_recovers_the_metric(graded: list[dict[str, Any]]) -> None:
    for seed, row in zip(SEEDS, graded, strict=True):
        assert row["acdc"]["contains_key_edges"], (seed, row["acdc"]["edges"])
        assert row["acdc"]["faithfulness"] >= 0.9, row["acdc"]
        assert row["acdc"]["n_edges"] < row["n_edges"] / 2


@pytest.mark.slow
def test_roc_auc_against_exact_patching_meets_the_measured_floor(
    graded: list[dict[str, Any]],
) -> None:
    for seed, row in zip(SEEDS, graded, strict=True):
        for method, floor in AUC_FLOOR.items():
            assert row["auc"][method] >= floor, (seed, method, row["auc"])
