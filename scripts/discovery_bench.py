"""Grades circuit-discovery methods on trained induction models, one per seed.

Usage: ``python scripts/discovery_bench.py [--seeds 5] [--threads 2]``. Trains the default
``induction`` preset once per seed, runs exact path patching, EAP, EAP-IG (m=5) and ACDC (its
default tau, plus a tau sweep for the KL-versus-edges curve), and writes
``bench/discovery_results.json`` and ``bench/discovery_results.md``.

``--scale SHAPE [--methods ...]`` instead times discovery on a model of a real shape with random
weights (``attn-only-2l``, ``gelu-4l``, ``gpt2-small`` from :mod:`circuits.benchmarks.shapes`,
or ``attn-4l8h``, a 4-layer x 8-head attention-only model with a small vocabulary) on the
issue's probes, with the naive loop (one hooked forward per edge) on a sample of edges, and
prints one JSON line per method (wall and CPU seconds, peak RSS of this process so far). Run one
method per process for a per-method peak.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

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


SCALE_METHODS = ("build", "exact", "naive", "eap", "eap-ig", "acdc")


def scale_model(shape: str) -> tuple[Any, Any]:
    """A model of ``shape`` (random weights, seed 0) and the issue's probe for it."""
    from circuits.benchmarks import shapes
    from circuits.tasks import repeated_tokens

    if shape == "attn-4l8h":
        model = shapes.build(
            "attn-only-2l",
            n_layers=4,
            d_model=256,
            d_head=32,
            d_vocab=512,
            n_ctx=128,
            positional_embedding_type="standard",
        )
    else:
        model = shapes.build(shape)
    length = 16 if shape == "gpt2-small" else 32
    return model, repeated_tokens(4, length, model.cfg.d_vocab, seed=0)


def scale(shape: str, methods: list[str], threads: int, naive_edges: int) -> None:
    import resource

    from circuits.discovery import acdc, edge_attribution, exact_patching
    from circuits.discovery.benchmark import naive_exact_patching

    model, probe = scale_model(shape)
    problem = None

    def timed(name: str, fn: Any, n_units: int | None = None) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        row = {
            "shape": shape,
            "method": name,
            "seconds": round(time.perf_counter() - wall, 3),
            "cpu_seconds": round(time.process_time() - cpu, 3),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 3),
            "threads": threads,
            "load_average": os.getloadavg()[0],
        }
        if n_units:
            row["seconds_per_edge"] = row["seconds"] / n_units
            row["cpu_seconds_per_edge"] = row["cpu_seconds"] / n_units
        print(json.dumps(row), flush=True)
        return out

    problem = timed("build", lambda: Problem.build(model, probe, threads=threads))
    n = problem.graph.n_edges
    for method in methods:
        if method == "exact":
            timed("exact", lambda: exact_patching(problem, threads=threads), n)
        elif method == "naive":
            step = max(1, n // naive_edges)
            units = list(range(0, n, step))
            timed(
                "naive",
                lambda units=units: naive_exact_patching(problem, units=units, threads=threads),
                len(units),
            )
        elif method == "eap":
            timed("eap", lambda: edge_attribution(problem, threads=threads))
        elif method == "eap-ig":
            timed("eap-ig (m=5)", lambda: edge_attribution(problem, 5, threads=threads))
        elif method == "acdc":
            timed("acdc", lambda: acdc(problem, threads=threads))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--scale", help="time discovery on a model of this shape instead")
    parser.add_argument("--methods", nargs="*", default=list(SCALE_METHODS[1:]))
    parser.add_argument("--naive-edges", type=int, default=12, help="edges the naive loop times")
    args = parser.parse_args()
    if args.scale:
        unknown = set(args.methods) - set(SCALE_METHODS)
        if unknown:
            parser.error(f"unknown methods {sorted(unknown)}; choose from {SCALE_METHODS}")
        scale(args.scale, [m for m in args.methods if m != "build"], args.threads, args.naive_edges)
        return
    torch.set_num_threads(args.threads)
    rows = []
    for seed in range(args.seeds):
        start = time.perf_counter()
        model, task = trained(seed)
        train_s = time.perf_counter() - start
        probe = task.probe(32)
        graded = grade_methods(model, probe, seed=seed, threads=args.threads)
        row = {"seed": seed, "train_seconds": train_s, **graded}
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
