"""The atlas benchmark: many seeds of the default preset trained one at a time vs stacked.

``step_profile`` times one training step per model, alternating the single-model step of
:func:`circuits.train` (fast path, fused AdamW) and the stacked step of
:mod:`circuits.training.batched` for groups of ``G`` seeds, on 1 and 2 threads, in one
process (so a loaded machine slows both alike). ``eval_cost`` measures an evaluation in
training steps (stacked and single); ``sweep_side_by_side`` runs ``circuits sweep`` of many
seeds per ``--batch-seeds`` value, alternating.

    python -m circuits.benchmarks.atlas [--quick]          # the step profile
    python -m circuits.benchmarks.atlas --eval-cost        # an evaluation, in steps
    python -m circuits.benchmarks.atlas --kernel           # one layer's attention kernel
    python -m circuits.benchmarks.atlas --sweep 128 --batch-seeds 1 16
    python -m circuits.benchmarks.atlas --sweep 128 --cli --rounds 2   # the command, timed
    circuits bench --cases atlas                            # the step profile, recorded
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from circuits.losses import cross_entropy
from circuits.presets import build, run_config

__all__ = [
    "attention_path",
    "case_atlas",
    "cli_wall",
    "eval_cost",
    "kernel_profile",
    "step_flops",
    "step_profile",
    "sweep_side_by_side",
]


def _single_step(seed: int) -> Callable[[], None]:
    from circuits.training import make_optimizer

    model, task, cfg = build("induction", seed)
    model.train()
    optimizer = make_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(seed)

    def step() -> None:
        batch = task.sample(cfg.batch_size, gen)
        loss = cross_entropy(model(batch.tokens), batch.tokens, batch.targets, batch.mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()

    return step


def _stacked_step(seeds: Sequence[int]) -> Callable[[], None]:
    from circuits.training.batched import BatchedRun

    runs = [build("induction", s) for s in seeds]
    group = BatchedRun([m for m, _, _ in runs], [t for _, t, _ in runs], [c for _, _, c in runs])
    return group.step


def step_flops(instances: int = 1) -> float:
    """FLOPs of one training step of the default preset (forward matmuls x 3 for the backward)."""
    cfg = run_config("induction")
    m, t, tr = cfg.model, cfg.task, cfg.train
    tokens = tr.batch_size * t.seq_len
    he = m.n_heads * m.d_head
    per_layer = 2 * tokens * (4 * m.d_model * he) + 2 * 2 * tr.batch_size * m.n_heads * (
        t.seq_len**2 * m.d_head
    )
    unembed = 2 * tokens * m.d_model * m.d_vocab
    return 3.0 * instances * (m.n_layers * per_layer + unembed)


def step_profile(
    groups: Sequence[int] = (4, 8, 16, 32),
    threads: Sequence[int] = (1, 2),
    steps: int = 20,
    rounds: int = 5,
) -> list[dict[str, Any]]:
    """Milliseconds per model-step, single vs stacked, alternating, per thread count and group.

    Returns one row per (threads, G): medians over ``rounds`` of ``steps`` steps each.
    """
    rows = []
    saved = torch.get_num_threads()
    try:
        for n_threads in threads:
            torch.set_num_threads(n_threads)
            single = _single_step(0)
            for G in groups:
                stacked = _stacked_step(range(G))
                for _ in range(3):  # warm-up
                    single(), stacked()
                t_single: list[float] = []
                t_stacked: list[float] = []
                for r in range(rounds):
                    order = [(single, t_single, 1), (stacked, t_stacked, G)]
                    for fn, out, per in order if r % 2 == 0 else order[::-1]:
                        start = time.perf_counter()
                        for _ in range(steps):
                            fn()
                        out.append((time.perf_counter() - start) / steps / per * 1e3)
                s, b = statistics.median(t_single), statistics.median(t_stacked)
                rows.append(
                    {
                        "threads": n_threads,
                        "G": G,
                        "single_ms": s,
                        "stacked_ms": b,
                        "speedup": s / b,
                        "stacked_gflops": step_flops() / (b * 1e-3) / 1e9,
                    }
                )
    finally:
        torch.set_num_threads(saved)
    return rows


def eval_cost(G: int = 32, rounds: int = 6) -> dict[str, float]:
    """An evaluation's cost in training steps, stacked (``G`` seeds) and single, alternating:
    the medians of one step and one evaluation (probe loss, accuracy, the tracked head scores)
    on one thread. ``eval_every = k`` then costs ``ratio / k`` of the training time."""
    from circuits.analysis.head_scores import evaluate
    from circuits.training.batched import BatchedRun

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = [build("induction", s) for s in range(G)]
        group = BatchedRun(
            [m for m, _, _ in runs], [t for _, t, _ in runs], [c for _, _, c in runs]
        )
        group.step()
        single = _single_step(0)
        model, task, cfg = build("induction", 0)
        probe = task.probe(cfg.probe_size)
        names = cfg.recorded_scores(probe)
        times: dict[str, list[float]] = {
            k: [] for k in ("step", "eval", "single_step", "single_eval")
        }
        fns = {
            "step": group.step,
            "eval": group._evaluate,
            "single_step": single,
            "single_eval": lambda: evaluate(model.eval(), probe, names),
        }
        for r in range(rounds):
            for name in fns if r % 2 == 0 else list(fns)[::-1]:
                start = time.perf_counter()
                fns[name]()
                times[name].append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(saved)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "G": G,
        "stacked_step_ms": med["step"] * 1e3,
        "stacked_eval_ms": med["eval"] * 1e3,
        "stacked_ratio": med["eval"] / med["step"],
        "single_step_ms": med["single_step"] * 1e3,
        "single_eval_ms": med["single_eval"] * 1e3,
        "single_ratio": med["single_eval"] / med["single_step"],
    }


def sweep_side_by_side(
    seeds: int = 128,
    batch_seeds: Sequence[int] = (1, 32),
    workers: int | Sequence[int] = 2,
    checkpoint: bool = True,
    rounds: int = 1,
) -> list[dict[str, Any]]:
    """``circuits sweep`` of ``seeds`` seeds of the default preset with its defaults (a
    ``workers``-process pool, 2 by default) and ``checkpoint: true``, per ``--batch-seeds``
    value and worker count, alternating, each from a fresh directory. Wall time includes the
    pool's start-up (workers import torch and the run modules once each), every run and every
    row written."""
    import shutil
    import tempfile
    from pathlib import Path

    from circuits.sweep import ResultsStore, SweepSpec, run_sweep

    spec = SweepSpec.from_dict(
        {"name": "atlas", "preset": "induction", "seeds": seeds, "checkpoint": checkpoint}
    )
    flops = step_flops()
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="atlas-bench-"))
    try:
        pools = [workers] if isinstance(workers, int) else list(workers)
        setups = [(w, size) for w in pools for size in batch_seeds]
        for r in range(rounds):
            for w, size in setups if r % 2 == 0 else setups[::-1]:
                out = tmp / f"{w}-{size}-{r}"
                start = time.perf_counter()
                summary = run_sweep(spec, out, workers=w, quiet=True, batch_seeds=size)
                wall = time.perf_counter() - start
                runs = ResultsStore(out).rows()
                steps = sum(row.get("steps") or 0 for row in runs)
                rows.append(
                    {
                        "batch_seeds": size,
                        "workers": w,
                        "seeds": seeds,
                        "wall_s": wall,
                        "ok": summary.ok,
                        "success": sum(bool(row.get("success")) for row in runs)
                        / max(len(runs), 1),
                        "seeds_per_min": 60 * seeds / wall,
                        "gflops": steps * flops / wall / 1e9,
                    }
                )
                shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def cli_wall(seeds: int = 128, rounds: int = 2) -> list[float]:
    """Wall seconds of the command the floor names, ``circuits sweep SPEC --out DIR -q`` with
    the default preset, ``seeds`` seeds and ``checkpoint: true`` (defaults otherwise), run as a
    fresh process each round: its own imports, the pool's start-up, every run and row."""
    import json
    import shutil
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    tmp = Path(tempfile.mkdtemp(prefix="atlas-cli-"))
    walls = []
    try:
        spec = tmp / "spec.json"
        spec.write_text(
            json.dumps({"name": "atlas", "preset": "induction", "seeds": seeds, "checkpoint": True})
        )
        for r in range(rounds):
            out = tmp / f"out-{r}"
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "circuits.cli", "sweep", str(spec), "--out", str(out), "-q"],
                check=True,
                capture_output=True,
            )
            walls.append(time.perf_counter() - start)
            shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return walls


def kernel_profile(G: int = 16, rounds: int = 30) -> dict[str, float]:
    """Milliseconds of one layer's attention, forward and backward, for ``G`` models of the
    default preset (``[G, batch * pos, heads * d_head]`` inputs, one thread): the compiled
    kernel (:mod:`circuits.training.native_attention`) against PyTorch's fused CPU kernel on
    the same strided views (medians, alternating)."""
    from circuits.training import native_attention as na
    from circuits.training.stacked_attention import _FlashCPU

    lib = na.load()
    if lib is None:
        raise RuntimeError(f"no compiled kernel here: {na.status()}")
    cfg = run_config("induction")
    batch, pos = cfg.train.batch_size, cfg.task.seq_len
    ne, n = cfg.model.n_heads * cfg.model.d_head, cfg.model.n_heads
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gen = torch.Generator().manual_seed(0)
        leaves = [torch.randn(G, batch * pos, ne, generator=gen) for _ in "qkv"]
        dz = torch.randn(G, batch * pos, ne, generator=gen)
        scale = 1 / cfg.model.attn_scale
        times: dict[str, list[float]] = {}

        def run(name: str, fn: Callable[..., torch.Tensor]) -> None:
            xs = [x.clone().requires_grad_(True) for x in leaves]
            start = time.perf_counter()
            z = fn(*xs)
            mid = time.perf_counter()
            z.backward(dz)
            end = time.perf_counter()
            times.setdefault(f"{name}_forward_ms", []).append(1e3 * (mid - start))
            times.setdefault(f"{name}_backward_ms", []).append(1e3 * (end - mid))

        for _ in range(rounds):
            run("native", lambda q, k, v: na.NativeAttention.apply(lib, q, k, v, batch, n, scale))
            run("pytorch", lambda q, k, v: _FlashCPU.apply(q, k, v, batch, n, scale))
    finally:
        torch.set_num_threads(threads)
    return {k: statistics.median(v) for k, v in times.items()}


def attention_path() -> str:
    """How the stacked trainer's attention runs on this machine (the compiled kernel, or why
    PyTorch's), for the record next to the figures."""
    from circuits.training import native_attention

    native_attention.load()
    return native_attention.status()


def sweep_markdown(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| --batch-seeds | workers | seeds | wall s | seeds/min | targets met | GFLOP/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['batch_seeds']} | {r['workers']} | {r['seeds']} | {r['wall_s']:.1f} | "
            f"{r['seeds_per_min']:.0f} | {r['success']:.0%} | {r['gflops']:.1f} |"
        )
    return "\n".join(lines)


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| threads | G | single ms/model-step | stacked ms/model-step | single/stacked | "
        "stacked GFLOP/s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['threads']} | {r['G']} | {r['single_ms']:.2f} | {r['stacked_ms']:.2f} | "
            f"{r['speedup']:.2f}x | {r['stacked_gflops']:.1f} |"
        )
    return "\n".join(lines)


def case_atlas(quick: bool) -> dict[str, Any]:
    """The step profile (``circuits bench --cases atlas``)."""
    rows = step_profile(groups=(4, 16) if quick else (4, 8, 16, 32), rounds=2 if quick else 5)
    return {"rows": rows, "markdown": markdown(rows)}


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="atlas benchmarks (issue 24)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sweep", type=int, metavar="SEEDS", help="sweep side by side instead")
    parser.add_argument("--batch-seeds", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--workers", type=int, nargs="+", default=[2], help="pool sizes")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--eval-cost", action="store_true", help="an evaluation in steps")
    parser.add_argument(
        "--kernel", action="store_true", help="one layer's attention: compiled vs PyTorch's"
    )
    parser.add_argument(
        "--cli", action="store_true", help="with --sweep: time the circuits sweep command itself"
    )
    args = parser.parse_args()
    print(f"attention: {attention_path()}")
    if args.kernel:
        print({k: round(v, 2) for k, v in kernel_profile().items()})
    elif args.cli and args.sweep:
        walls = cli_wall(args.sweep, args.rounds)
        print(f"circuits sweep, {args.sweep} seeds: " + ", ".join(f"{w:.1f} s" for w in walls))
    elif args.eval_cost:
        print(eval_cost())
    elif args.sweep:
        rows = sweep_side_by_side(args.sweep, args.batch_seeds, args.workers, rounds=args.rounds)
        print(sweep_markdown(rows))
    else:
        print(case_atlas(args.quick)["markdown"])
