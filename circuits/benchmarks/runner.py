"""Runs the cases and writes ``results.json`` and ``RESULTS.md``."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from circuits.benchmarks import cases as c
from circuits.benchmarks.measure import machine

CASES = ("train", "cache", "composition", "induction", "scale", "atlas")
# Cases compared side by side in results.json / RESULTS.md; "scale" writes scale_results.*.
SIDE_BY_SIDE = ("train", "cache", "composition", "induction")


def fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


def _side(s: dict | None) -> str:
    return "n/a" if s is None else f"{fmt(s['median'])} ({fmt(s['min'])}-{fmt(s['max'])})"


def _formed(r: dict) -> str:
    n = r.get("n_runs") or {side: r[side]["n"] for side in ("ours", "peer")}
    return f"formed: ours {r['solved']['ours']}/{n['ours']}, peer {r['solved']['peer']}/{n['peer']}"


def ratio_text(r: dict) -> str:
    """The ratio ours/peer, or why there is none (a case whose runs failed has no result)."""
    if r["ratio"] is None:
        return f"n/a ({_formed(r)})"
    return f"{r['ratio']:.2f}"


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        "| case | unit | ours: median (min-max) | peer: median (min-max) | ours/peer |",
        "|---|---|---|---|---|",
    ]
    for name, r in results["cases"].items():
        lines.append(
            f"| {name} | {r['unit']} ({r['better']} is better) "
            f"| {_side(r['ours'])} | {_side(r['peer'])} | {ratio_text(r)} |"
        )
    lines += [
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} "
        f"({m['torch_threads']} thread(s) unless the row says otherwise; `circuits.train`, and so "
        f"the time-to-induction row, uses 1), TransformerLens {m['transformer_lens']}, "
        f"Python {m['python']}; single-thread GEMM {m.get('gemm_gflops', 'n/a')} GFLOP/s "
        f"(4096x64 @ 64x192); load average (1, 5, 15 min) before {m['load_average']['before']}"
        f", after {m['load_average']['after']}. Peer: TransformerLens's "
        "`TransformerBridge.boot_native` with the same config and weights.",
    ]
    if results.get("quick"):
        lines.append("A --quick smoke run: tiny sizes and few repeats; not a measurement.")
    for name, r in results["cases"].items():
        extra = ""
        if "memory" in r:
            mem = r["memory"]
            extra = "; peak MiB ours {} / peer {}; cache MiB ours {:.1f} / peer {:.1f}".format(
                *(fmt(mem[s]["peak_mb"]) if mem[s]["peak_mb"] is not None else "n/a" for s in mem),
                mem["ours"]["cache_mb"],
                mem["peer"]["cache_mb"],
            )
        if "solved" in r:
            extra = f"; {_formed(r)}"
        lines.append(f"- **{name}**: {r['setup']}{extra}.")
    return "\n".join(lines) + "\n"


def run(
    cases: Sequence[str] = CASES,
    quick: bool = False,
    out: Path | None = None,
    seeds: int = 5,
    threads: int | None = 1,
    log: Callable[[str], None] = print,
) -> dict:
    """Runs ``cases`` and writes ``results.json`` and ``RESULTS.md`` into ``out`` (if given).

    Only ``circuits bench`` picks a folder for you (and keeps smoke runs away from full
    results); here ``out=None`` writes nothing.
    """
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        raise ValueError(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    if threads is not None:
        torch.set_num_threads(threads)
    results: dict[str, Any] = {"machine": machine(), "quick": quick, "cases": {}}
    load_before = results["machine"].pop("load_average")
    runners: dict[str, Callable[[], dict]] = {
        "train": lambda: c.case_train_threads(quick),
        "cache": lambda: c.case_cache(quick),
        "composition": lambda: c.case_composition(quick),
        "induction": lambda: c.case_induction(quick, seeds),
    }
    scale = None
    if "scale" in cases:
        from circuits.benchmarks.scale import case_scale

        start = time.perf_counter()
        scale = case_scale(quick, threads or torch.get_num_threads(), log)
        log(f"  [scale: {time.perf_counter() - start:.1f}s]")
    atlas = None
    if "atlas" in cases:  # issue 24: stacked seeds vs one model at a time
        from circuits.benchmarks.atlas import case_atlas

        start = time.perf_counter()
        atlas = case_atlas(quick)
        log(atlas["markdown"])
        log(f"  [atlas: {time.perf_counter() - start:.1f}s]")
    for case in (name for name in cases if name not in ("scale", "atlas")):
        start = time.perf_counter()
        for name, r in runners[case]().items():
            results["cases"][name] = r
            log(f"{name}: ours/peer {ratio_text(r)} ({r['unit']}, {r['better']} is better)")
        log(f"  [{case}: {time.perf_counter() - start:.1f}s]")
    # Other processes on the machine slow both sides alike (interleaving), but say how busy it was.
    load_after = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    results["machine"]["load_average"] = {"before": load_before, "after": load_after}
    if scale is not None:
        results["scale"] = scale
    if out is not None:
        from circuits.files import write_file

        out.mkdir(parents=True, exist_ok=True)
        if results["cases"]:
            write_file(out / "results.json", (json.dumps(results, indent=2) + "\n").encode())
            write_file(out / "RESULTS.md", markdown(results).encode())
        if atlas is not None:
            payload = {"machine": results["machine"], "rows": atlas["rows"]}
            write_file(out / "atlas_results.json", (json.dumps(payload, indent=2) + "\n").encode())
            write_file(out / "atlas_results.md", (atlas["markdown"] + "\n").encode())
        if scale is not None:
            from circuits.benchmarks.scale import markdown as scale_markdown

            payload = {"machine": results["machine"], **scale}
            write_file(out / "scale_results.json", (json.dumps(payload, indent=2) + "\n").encode())
            write_file(out / "scale_results.md", scale_markdown(scale, results["machine"]).encode())
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.run ARGS`` is ``circuits bench ARGS``."""
    from circuits.cli import main as cli_main

    return cli_main(["bench", *(sys.argv[1:] if argv is None else argv)])
