"""Grades circuit-discovery methods on trained induction models, one per seed.

Usage: ``python scripts/discovery_bench.py [--seeds 5] [--threads 2]``. Trains the default
``induction`` preset once per seed, runs exact path patching, EAP, EAP-IG (m=5) and ACDC (its
default tau, plus a tau sweep for the KL-versus-edges curve), and writes
``bench/discovery_results.json`` and ``bench/discovery_results.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import torch

from circuits import presets, train
from circuits.discovery import Problem, acdc_sweep, faithfulness
from circuits.discovery.benchmark import grade_methods

BENCH = Path(__file__).resolve().parent.parent / "bench"
TAUS = [0.003, 0.01, 0.03, 0.1, 0.3]


def trained(seed: int):
    model, task, cfg = presets.build("induction", seed=seed)
    train(model, task, dataclasses.replace(cfg, progress=False))
    return model.eval(), task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-sweep", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for seed in range(args.seeds):
        start = time.perf_counter()
        model, task = trained(seed)
        train_s = time.perf_counter() - start
        probe = task.probe(32)
        row = {"seed": seed, "train_seconds": train_s, **grade_methods(model, probe, seed=seed)}
        if seed == 0 and not args.no_sweep:
            problem = Problem.build(model, probe, task="induction", seed=seed)
            row["acdc_sweep"] = [
                {
                    "tau": r.tau,
                    "n_edges": r.n_edges,
                    "kl": r.kl,
                    "faithfulness": faithfulness(problem, r.circuit),
                }
                for r in acdc_sweep(problem, TAUS)
            ]
        rows.append(row)
        print(
            json.dumps({k: row[k] for k in ("seed", "auc", "seconds", "cpu_seconds")}), flush=True
        )
    out = {
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": args.threads,
            "load_average_at_end": os.getloadavg(),
        },
        "seeds": rows,
    }
    BENCH.mkdir(exist_ok=True)
    (BENCH / "discovery_results.json").write_text(json.dumps(out, indent=1) + "\n")
    (BENCH / "discovery_results.md").write_text(markdown(out))


def markdown(out: dict) -> str:
    rows = out["seeds"]
    methods = list(rows[0]["auc"])
    lines = [
        "# Circuit discovery on trained induction models (default preset)",
        "",
        "ROC AUC of each method's edge scores against exact path patching's reference circuit",
        "(edges with |score| >= 2% of the largest), per seed; ACDC at its default tau: edges",
        "kept, faithfulness on the masked loss (1 = the circuit alone recovers the model), and",
        "whether it keeps previous-token head -> induction keys and induction heads -> logits.",
        f"Machine: {out['machine']['platform']}, {out['machine']['torch_threads']} torch threads,"
        f" load average at the end {out['machine']['load_average_at_end'][0]:.1f} (wall times on a"
        " shared machine include the neighbours' load; CPU seconds are this process's own).",
        "",
        "| seed | heads | "
        + " | ".join(f"AUC {m}" for m in methods)
        + " | ACDC edges | ACDC faithfulness | key edges kept | exact s (CPU s) | ACDC s (CPU s) |",
        "|" + "---|" * (7 + len(methods)),
    ]
    for r in rows:
        heads = f"{r['previous_token_head']} -> {', '.join(r['induction_heads'])}"
        lines.append(
            f"| {r['seed']} | {heads} | "
            + " | ".join(f"{r['auc'][m]:.3f}" for m in methods)
            + f" | {r['acdc']['n_edges']}/{r['n_edges']} | {r['acdc']['faithfulness']:.3f} | "
            f"{r['acdc']['contains_key_edges']} | {r['seconds']['exact']:.1f} "
            f"({r['cpu_seconds']['exact']:.1f}) | {r['seconds']['ACDC']:.1f} "
            f"({r['cpu_seconds']['ACDC']:.1f}) |"
        )
    lines += [
        "",
        "Minimum AUC over seeds: "
        + ", ".join(f"{m} {min(r['auc'][m] for r in rows):.3f}" for m in methods),
    ]
    if "acdc_sweep" in rows[0]:
        lines += ["", "ACDC sweep (seed 0): tau, edges, KL, faithfulness", ""]
        lines += ["| tau | edges | KL | faithfulness |", "|---|---|---|---|"]
        for s in rows[0]["acdc_sweep"]:
            lines.append(
                f"| {s['tau']} | {s['n_edges']} | {s['kl']:.4f} | {s['faithfulness']:.3f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
