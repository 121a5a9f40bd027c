"""The ``scale`` case: analysis, the report and discovery at the zoo's and GPT-2 small's shapes.

Every row runs in a fresh child process (``spawn``): the child builds the model
(:mod:`circuits.benchmarks.shapes`, random weights, seed 0) and whatever the row needs untimed,
then resets the kernel's peak-RSS counter (``/proc/self/clear_refs``), runs the one call
timed, and reports its wall time, its resident memory before the call and its peak during it
(``VmHWM``). "Above" is peak minus before: what the call itself needed beyond the model. A
row that fails (an error, the OOM killer, the time limit) is recorded with why, and the case
goes on.

Peers (TransformerLens 4, through :func:`circuits.interop.bridge.to_bridge` on the same
weights) run where they compute the same thing: attention-pattern head scores and the logit
lens from ``run_with_cache``, composition scores from ``all_composition_scores``. The bridge
has no shortformer positions, so attn-only-2l rows have no peer. The "naive loop" row times
:func:`circuits.discovery.benchmark.naive_exact_patching` (one hooked forward per edge) on a
sample of edges, per edge, beside exact patching's per-edge time.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

# Seconds a row may take before its child is stopped.
ROW_TIMEOUT = 600
QUICK_OVERRIDES: dict[str, Any] = dict(d_vocab=2000, n_ctx=256)
PATTERN_SCORES = "previous_token,induction"


@dataclass(frozen=True)
class Row:
    """One measurement: ``what`` on shape ``shape`` with a probe of ``batch`` x 2x``length``."""

    what: str
    shape: str
    batch: int = 8
    length: int = 64
    side: str = "ours"  # or "peer"
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        probe = f"{self.batch} x 2x{self.length}" if self.batch else ""
        extra = "".join(f", {k}={v}" for k, v in self.options.items())
        return f"{self.what} ({self.shape}{', ' + probe if probe else ''}{extra})"


def rows(quick: bool) -> list[Row]:
    """The rows of the case (the issue's targets), fewer with ``quick``."""
    out = []
    for shape, length in (("attn-only-2l", 64), ("gelu-4l", 64), ("gpt2-small", 32)):
        out.append(Row("head_scores", shape, 8, length))
        if shape != "attn-only-2l":
            # The peer computes the attention-pattern scores only: so does this pair.
            out.append(Row("head_scores", shape, 8, length, options={"scores": PATTERN_SCORES}))
            out.append(Row("head_scores", shape, 8, length, "peer", {"scores": PATTERN_SCORES}))
        out.append(Row("all_composition_scores", shape, 0, 0))
        if shape == "gelu-4l" or (shape == "gpt2-small" and not quick):
            out.append(Row("all_composition_scores", shape, 0, 0, "peer"))
        out.append(Row("logit_lens", shape, 8, length))
        if shape != "attn-only-2l":
            out.append(Row("logit_lens", shape, 8, length, "peer"))
        out.append(Row("report", shape, 0, 0))
    out += [
        Row("Problem.build", "attn-only-2l", 4, 32),
        Row("exact_patching", "attn-only-2l", 4, 32),
        Row("naive loop", "attn-only-2l", 4, 32, options={"edges": 8 if quick else 24}),
        Row("edge_attribution", "attn-only-2l", 4, 32, options={"ig_steps": 5}),
        Row("acdc", "attn-only-2l", 4, 32),
        Row("edge_attribution", "gelu-4l", 4, 32, options={"ig_steps": 5}),
        Row("Problem.build", "gpt2-small", 4, 16),
        Row("edge_attribution", "gpt2-small", 4, 16, options={"ig_steps": 5}),
    ]
    if quick:
        keep = {"head_scores", "all_composition_scores", "logit_lens", "report"}
        out = [r for r in out if r.what in keep or r.shape == "attn-only-2l"]
    return out


# --- memory of this process -------------------------------------------------------------------
def _status_mb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Resets VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# --- what each row runs: setup (untimed) returns the timed call ------------------------------
def _probe(model: Any, row: Row) -> Any:
    from circuits.tasks import repeated_tokens

    n = min(model.cfg.d_vocab, model.W_U.shape[-1])
    return repeated_tokens(row.batch, row.length, n, seed=0)


def _problem(model: Any, row: Row, threads: int) -> Any:
    from circuits.discovery.problem import Problem

    return Problem.build(model, _probe(model, row), task="induction", seed=0, threads=threads)


def _setup(row: Row, model: Any, threads: int, workdir: Path, info: dict) -> Callable[[], Any]:
    from circuits.interop.bridge import to_bridge

    if row.side == "peer":
        return _peer_setup(row, to_bridge(model), model, threads)
    if row.what == "head_scores":
        from circuits.analysis.head_scores import head_scores

        probe = _probe(model, row)
        names = row.options["scores"].split(",") if "scores" in row.options else None
        return lambda: head_scores(model, probe, names, threads=threads)
    if row.what == "all_composition_scores":
        from circuits.analysis.composition import all_composition_scores, random_baseline

        random_baseline.cache_clear()
        return lambda: all_composition_scores(model)
    if row.what == "logit_lens":
        from circuits.analysis.logit_lens import logit_lens

        probe = _probe(model, row)

        def lens() -> Any:
            return logit_lens(model, probe.tokens, threads=threads).read(probe.targets, 1)

        return lens
    if row.what == "report":
        from circuits import checkpoint
        from circuits.report import report_from_checkpoint

        path = workdir / "ckpt"
        checkpoint.save(model, path)
        return lambda: report_from_checkpoint(path, threads=threads)
    if row.what == "Problem.build":
        probe = _probe(model, row)
        from circuits.discovery.problem import Problem

        return lambda: Problem.build(model, probe, task="induction", seed=0, threads=threads)
    problem = _problem(model, row, threads)
    info["n_edges"] = problem.graph.n_edges
    if row.what == "exact_patching":
        from circuits.discovery.exact import exact_patching

        return lambda: exact_patching(problem, threads=threads)
    if row.what == "edge_attribution":
        from circuits.discovery.attribution import edge_attribution

        return lambda: edge_attribution(problem, row.options["ig_steps"], threads=threads)
    if row.what == "acdc":
        from circuits.discovery.acdc import acdc

        return lambda: acdc(problem, threads=threads)
    if row.what == "naive loop":
        from circuits.discovery import benchmark

        naive = getattr(benchmark, "naive_exact_patching", None)
        if naive is None:
            raise NotImplementedError("circuits.discovery.benchmark has no naive_exact_patching")
        n = problem.graph.n_edges
        units = torch.linspace(0, n - 1, min(row.options["edges"], n)).long().tolist()
        info["n_timed"] = len(units)
        return lambda: naive(problem, units=units, threads=threads)
    raise ValueError(f"unknown row {row.what!r}")


def _peer_setup(row: Row, bridge: Any, model: Any, threads: int) -> Callable[[], Any]:
    if row.what == "all_composition_scores":

        def composition() -> Any:
            with torch.no_grad():
                return [bridge.all_composition_scores(mode).scores for mode in "QKV"]

        return composition
    probe = _probe(model, row)

    def run() -> Any:
        with torch.no_grad():
            return bridge.run_with_cache(probe.tokens)

    if row.what == "head_scores":
        from circuits.analysis.head_scores import induction_score, previous_token_score

        def scores() -> Any:
            _, cache = run()
            n = model.cfg.n_layers
            patterns = torch.stack([cache[f"blocks.{la}.attn.hook_pattern"] for la in range(n)])
            return previous_token_score(patterns), induction_score(patterns, probe.repeat_length)

        return scores
    if row.what == "logit_lens":

        def lens() -> Any:
            _, cache = run()
            with torch.no_grad():
                resid = cache.accumulated_resid(apply_ln=True)
                logits = resid @ bridge.W_U + bridge.b_U
                log_probs = logits.log_softmax(-1)
                index = probe.targets.expand(len(resid), *probe.targets.shape)[..., None]
                return log_probs.gather(-1, index).exp(), log_probs.topk(1, dim=-1)

        return lens
    raise ValueError(f"row {row.what!r} has no peer")


def _child(row: dict, threads: int, quick: bool, conn: Any) -> None:
    """Runs one row in this (fresh) process and sends back its measurement."""
    try:
        torch.set_num_threads(threads)
        from circuits.benchmarks.shapes import build

        r = Row(**row)
        model = build(r.shape, **(QUICK_OVERRIDES if quick else {}))
        with tempfile.TemporaryDirectory(prefix="circuits-scale-") as tmp:
            info: dict[str, Any] = {}
            call = _setup(r, model, threads, Path(tmp), info)
            if r.what == "report":
                del model  # the report loads its own copy from the checkpoint
            gc.collect()
            setup_peak = _status_mb("VmHWM")
            reset = _reset_peak()
            before = _status_mb("VmRSS")
            start = time.perf_counter()
            call()
            seconds = time.perf_counter() - start
            peak = _status_mb("VmHWM")
        conn.send(
            {
                "seconds": seconds,
                "rss_before_mb": before,
                "peak_mb": peak if reset else None,
                "above_mb": (peak - before) if reset and peak and before else None,
                "setup_peak_mb": setup_peak,
                **info,
            }
        )
    except BaseException as e:  # reported as the row's error; the case goes on
        conn.send({"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]})
    finally:
        conn.close()


def measure(row: Row, threads: int, quick: bool, timeout: float = ROW_TIMEOUT) -> dict:
    """One row in a child process: its measurement, or ``{"error": why}``."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(asdict(row), threads, quick, child))
    start = time.perf_counter()
    proc.start()
    child.close()
    out: dict = {}
    if parent.poll(timeout):
        try:
            out = parent.recv()
        except EOFError:
            proc.join(5)
            code = proc.exitcode
            why: Any = code
            if code is not None and code < 0:
                why = f"signal {-code}" + (": the OOM killer?" if code == -9 else "")
            out = {"error": f"the child process died ({why})"}
    else:
        out = {"error": f"stopped after {timeout:.0f} s"}
    proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join()
    if proc.exitcode is not None and proc.exitcode < 0 and not out:
        out = {"error": f"the child process was killed (signal {-proc.exitcode})"}
    out["wall_with_startup"] = time.perf_counter() - start
    return {**asdict(row), "label": row.label, **out}


def case_scale(
    quick: bool,
    threads: int,
    log: Callable[[str], None] = print,
    chosen: Sequence[Row] | None = None,
) -> dict:
    """The rows of :func:`rows` (or ``chosen`` of them: see
    :mod:`circuits.benchmarks.scale_rows`), each in its own process: ``{"rows": [...], ...}``."""
    out = []
    for row in rows(quick) if chosen is None else chosen:
        r = measure(row, threads, quick)
        out.append(r)
        log(f"  {row.side:4} {row.label}: {_cell(r)}")
    return {
        "threads": threads,
        "quick": quick,
        "overrides": QUICK_OVERRIDES if quick else {},
        "rows": out,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }


def _mb(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f}"


def _cell(r: dict | None) -> str:
    if r is None:
        return "—"
    if "error" in r:
        return f"error: {r['error'][:120]}"
    return f"{r['seconds']:.2f} s, peak {_mb(r['peak_mb'])} MB (+{_mb(r['above_mb'])})"


def _speedup(rows: list[dict]) -> str:
    """Exact patching against the naive loop, per edge, where both rows ran."""
    out = []
    for shape in dict.fromkeys(r["shape"] for r in rows):
        found = {
            r["what"]: r
            for r in rows
            if r["shape"] == shape and r["what"] in ("exact_patching", "naive loop")
        }
        exact, naive = found.get("exact_patching"), found.get("naive loop")
        if not exact or not naive or "error" in exact or "error" in naive:
            continue
        if not exact.get("n_edges") or not naive.get("n_timed"):
            continue
        per_exact = exact["seconds"] / exact["n_edges"]
        per_naive = naive["seconds"] / naive["n_timed"]
        out.append(
            f"Exact patching at the {shape} shape: {per_exact * 1e3:.2f} ms per edge over "
            f"{exact['n_edges']} edges, the naive loop {per_naive * 1e3:.1f} ms per edge over "
            f"{naive['n_timed']} sampled edges: {per_naive / per_exact:.1f}x faster per edge."
        )
    return " ".join(out)


def markdown(result: dict, machine: dict) -> str:
    """The case as a table: one line per (what, shape), ours beside the peer."""
    by_key: dict[tuple, dict[str, dict]] = {}
    for r in result["rows"]:
        key = (r["what"], r["shape"], r["batch"], r["length"], tuple(r["options"].items()))
        by_key.setdefault(key, {})[r["side"]] = r
    lines = [
        "| what | shape | probe | ours: wall, peak RSS (+ above before) | peer (TL4) | per edge |",
        "|---|---|---|---|---|---|",
    ]
    for (what, shape, batch, length, opts), sides in by_key.items():
        probe = f"{batch} x 2x{length}" if batch else ""
        name = what + "".join(f" {k}={v}" for k, v in opts)
        ours = sides.get("ours")
        per_edge = ""
        if ours and "error" not in ours:
            n = ours.get("n_timed") if what == "naive loop" else None
            n = ours.get("n_edges") if what == "exact_patching" else n
            if n:
                per_edge = f"{ours['seconds'] / n * 1e3:.1f} ms"
        lines.append(
            f"| {name} | {shape} | {probe} | {_cell(ours)} | {_cell(sides.get('peer'))} "
            f"| {per_edge} |"
        )
    quick = f" A --quick smoke run, shapes shrunk to {result['overrides']}: not a measurement."
    load = machine.get("load_average")
    if isinstance(load, dict):
        load = f"{load.get('before')} before, {load.get('after')} after"
    speedup = _speedup(result["rows"])
    lines += [
        "",
        f"Machine: {machine.get('cpu')}, {result['cores']} cores, torch {machine.get('torch')}, "
        f"{result['threads']} torch thread(s) per row; load average (1, 5, 15 min) {load}. "
        "Each row in a fresh process (model built untimed); peak RSS is the process's VmHWM "
        "during the call, + the rise above its RSS before the call."
        f"{quick if result['quick'] else ''}",
    ]
    if speedup:
        lines += ["", speedup]
    return "\n".join(lines) + "\n"
