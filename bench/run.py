"""Side-by-side benchmarks: circuits vs TransformerLens 4's own model (``boot_native``).

Every case runs ours and the peer interleaved in one process (ours, peer, peer, ours, ...), so a
change in machine load hits both alike, and reports the median and min-max of each and the ratio
ours/peer. Both sides get the same config, the same initial weights (ours, converted), the same
data, the same loss code and the same optimizer settings.

Cases:
    train: training steps/s at the reference config (2L attn-only, d_model 64, 4x16 heads), on
        one thread and on all cores.
    cache: ``run_with_cache`` over all hooks and over one hook: time and peak memory.
    composition: Q, K and V composition scores at GPT-2-small shape (ours with its baseline).
    induction: wall time from model construction to formed induction heads, over seeds.

Run: ``python -m bench.run`` (or ``circuits bench``); ``--quick`` is a seconds-long smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from circuits.config import ModelConfig
from circuits.model import HookedTransformer, cross_entropy

HERE = Path(__file__).resolve().parent
CASES = ("train", "cache", "composition", "induction")
REFERENCE = dict(
    n_layers=2,
    d_model=64,
    n_heads=4,
    d_head=16,
    n_ctx=64,
    d_vocab=64,
    attn_only=True,
    normalization_type=None,
)
GPT2_SMALL_ATTN = dict(
    n_layers=12,
    d_model=768,
    n_heads=12,
    d_head=64,
    n_ctx=64,
    d_vocab=64,
    attn_only=True,
    normalization_type=None,
)
# The optimizer of `circuits train` (fused AdamW), at a learning rate that is safe for both.
OPTIMIZER = dict(lr=1e-3, betas=(0.9, 0.99), weight_decay=0.01)


# --- measurement -------------------------------------------------------------------------------
def interleaved(
    fns: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds per call of each function, alternating A B, B A, ... after ``warmup`` calls each."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return times


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def comparison(ours: Sequence[float], peer: Sequence[float], unit: str, better: str) -> dict:
    o, p = summary(ours), summary(peer)
    return {
        "unit": unit,
        "better": better,
        "ours": o,
        "peer": p,
        "ratio": o["median"] / p["median"],
    }


def peak_memory_mb(fn: Callable[[], Any]) -> float | None:
    """Peak bytes of tensors alive during ``fn()`` above those alive before, in MiB.

    Read from the profiler's memory timeline (a private torch API, so None if it is missing).
    """
    try:
        from torch.profiler import ProfilerActivity, profile
        from torch.profiler._memory_profiler import Action, MemoryProfileTimeline
    except ImportError:
        return None
    with profile(
        activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True
    ) as prof:
        result = fn()
    del result
    live = peak = 0
    for _, action, _, size in MemoryProfileTimeline(prof._memory_profile()).timeline:
        if action == Action.CREATE:
            live += size
        elif action == Action.DESTROY:
            live -= size
        peak = max(peak, live)
    return peak / 2**20


# --- models ------------------------------------------------------------------------------------
def peer_like(model: HookedTransformer) -> Any:
    """TransformerLens 4's from-scratch model with ``model``'s config and weights."""
    from transformer_lens import TransformerBridge, TransformerBridgeConfig
    from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint

    c = model.cfg
    if c.positional_embedding_type != "standard" or c.use_attn_result:
        raise ValueError("the peer supports standard positions without hook_result only")
    cfg = TransformerBridgeConfig(
        d_model=c.d_model,
        d_head=c.d_head,
        n_heads=c.n_heads,
        n_layers=c.n_layers,
        n_ctx=c.n_ctx,
        d_vocab=c.d_vocab,
        attn_only=c.attn_only,
        normalization_type=c.normalization_type,
        act_fn=c.act_fn,
        d_mlp=c.d_mlp,
        eps=c.eps,
        seed=c.seed,
        device="cpu",
    )
    peer = TransformerBridge.boot_native(cfg)
    peer.load_state_dict(convert_tl_checkpoint(model.state_dict(), peer.cfg), strict=True)
    return peer


def make_step(model: Any) -> Callable[[Any], float]:
    """One training step exactly as :func:`circuits.train` takes it, for any model."""
    from circuits.training import TrainConfig, make_optimizer

    optimizer = make_optimizer(model, TrainConfig(**OPTIMIZER))  # type: ignore[arg-type]

    def step(batch: Any) -> float:
        logits = model(batch.tokens)
        loss = cross_entropy(logits, batch.tokens, batch.targets, batch.mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss.item()

    model.train()
    return step


# --- cases -------------------------------------------------------------------------------------
def case_train(quick: bool) -> dict:
    from circuits.tasks import InductionTask

    ours = HookedTransformer(ModelConfig(**REFERENCE))
    peer = peer_like(ours)
    task = InductionTask(d_vocab=64, seq_len=64, min_period=4, max_period=32)
    gen = torch.Generator().manual_seed(0)
    steps = 5 if quick else 20
    batches = [task.sample(64, gen) for _ in range(steps)]
    step_ours, step_peer = make_step(ours), make_step(peer)
    first = (step_ours(batches[0]), step_peer(batches[0]))  # same weights, same data: same loss
    start = time.perf_counter()
    for _ in range(10):
        task.sample(64, gen)
    sample_ms = (time.perf_counter() - start) / 10 * 1e3

    def all_batches(step: Callable[[Any], float]) -> Callable[[], None]:
        def f() -> None:
            for batch in batches:
                step(batch)

        return f

    times = interleaved(
        {"ours": all_batches(step_ours), "peer": all_batches(step_peer)}, 2 if quick else 10
    )
    out = comparison(
        [steps / t for t in times["ours"]], [steps / t for t in times["peer"]], "steps/s", "higher"
    )
    out["first_loss"] = {"ours": first[0], "peer": first[1]}
    out["data_ms_per_batch"] = sample_ms
    out["setup"] = (
        "batch 64 x 64 tokens (induction task, pre-sampled; sampling costs "
        f"{sample_ms:.2f} ms/batch, not timed), forward + cross-entropy + backward + clip 1.0 + "
        f"AdamW (as `circuits train`: fused; lr {OPTIMIZER['lr']}, weight decay "
        f"{OPTIMIZER['weight_decay']}); {steps} steps per timing; same initial weights "
        f"(first-step loss ours {first[0]:.5f}, peer {first[1]:.5f}); the peer's unembed "
        "bias is a frozen buffer, ours a parameter"
    )
    return out


def case_train_threads(quick: bool) -> dict:
    """The training case on one thread (what `circuits train` uses) and on every core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    before, out = torch.get_num_threads(), {}
    try:
        for n in sorted({1, cores or 1}):
            torch.set_num_threads(n)
            out[f"train steps/s ({n} thread{'s' if n > 1 else ''})"] = case_train(quick)
    finally:
        torch.set_num_threads(before)
    return out


def case_cache(quick: bool) -> dict:
    ours = HookedTransformer(ModelConfig(**REFERENCE)).eval()
    peer = peer_like(ours).eval()
    tokens = torch.randint(0, 64, (64, 64), generator=torch.Generator().manual_seed(0))
    out = {}
    for label, names_filter in (("all hooks", None), ("one hook", "blocks.1.attn.hook_pattern")):

        def call(model: Any, names_filter: Any = names_filter) -> Callable[[], Any]:
            def f() -> Any:
                with torch.no_grad():
                    return model.run_with_cache(tokens, names_filter=names_filter)

            return f

        sizes = {}
        for side, model in (("ours", ours), ("peer", peer)):
            _, cache = call(model)()
            # The peer caches alias names of one tensor (hook_in and hook_resid_pre): count once.
            unique = {t.data_ptr(): t.numel() * t.element_size() for t in cache.values()}
            sizes[side] = {
                "entries": len(cache),
                "cache_mb": sum(unique.values()) / 2**20,
                "peak_mb": peak_memory_mb(call(model)),
            }
        times = interleaved({"ours": call(ours), "peer": call(peer)}, 4 if quick else 30)
        res = comparison(
            [t * 1e3 for t in times["ours"]], [t * 1e3 for t in times["peer"]], "ms/call", "lower"
        )
        res["memory"] = sizes
        res["setup"] = f"batch 64 x 64 tokens, no_grad, names_filter={names_filter!r}"
        out[f"run_with_cache ({label})"] = res
    return out


def case_composition(quick: bool) -> dict:
    from circuits.analysis.composition import all_composition_scores, random_baseline

    shape = dict(REFERENCE) if quick else dict(GPT2_SMALL_ATTN)
    ours = HookedTransformer(ModelConfig(**shape)).eval()
    peer = peer_like(ours).eval()

    last: dict[str, Any] = {}

    def run_ours() -> None:
        random_baseline.cache_clear()  # time the baseline too, not a cached copy
        last["ours"] = all_composition_scores(ours)

    def run_peer() -> None:
        with torch.no_grad():
            last["peer"] = [peer.all_composition_scores(mode).scores for mode in "QKV"]

    # One cold call each, no warm-up: a peer call takes 30-55 s at this shape on one core (a
    # second round would add a minute to the bench), and the gap is nearly tenfold.
    times = interleaved({"ours": run_ours, "peer": run_peer}, rounds=1, warmup=0)
    mine, theirs = last["ours"], last["peer"]
    max_diff = max(
        float((m - t).abs().max()) for m, t in zip((mine.q, mine.k, mine.v), theirs, strict=True)
    )
    out = comparison(times["ours"], times["peer"], "s/call", "lower")
    out["max_abs_diff_vs_peer"] = max_diff
    out["baseline"] = mine.baseline
    out["setup"] = (
        f"{shape['n_layers']}L x {shape['n_heads']} heads, d_model {shape['d_model']}, "
        f"d_head {shape['d_head']}, random weights; Q, K and V; ours includes the random "
        f"baseline ({mine.n_samples} samples), the peer has none; one cold call each"
    )
    return {"composition (Q, K, V)": out}


def case_induction(quick: bool, seeds: int) -> dict:
    from circuits.presets import build
    from circuits.training import train

    overrides: dict[str, Any] = {"progress": False}
    if quick:
        overrides.update(steps=20, eval_every=10)

    def run(seed: int, side: str) -> dict:
        if side == "peer":
            # Our init, converted (not timed): both start from the same weights.
            init, _, _ = build("induction", seed=seed, train=overrides)
        start = time.perf_counter()
        model, task, cfg = build("induction", seed=seed, train=overrides)
        if side == "peer":
            model = peer_like(init)
        result = train(model, task, cfg)
        seconds = time.perf_counter() - start
        return {
            "seed": seed,
            "seconds": seconds,
            "steps": result.steps,
            "solved": bool(result.solved_at),
        }

    runs: dict[str, list[dict]] = {"ours": [], "peer": []}
    for seed in range(seeds):
        for side in ("ours", "peer") if seed % 2 == 0 else ("peer", "ours"):
            runs[side].append(run(seed, side))
    out = comparison(
        [r["seconds"] for r in runs["ours"]], [r["seconds"] for r in runs["peer"]], "s", "lower"
    )
    out["runs"] = runs
    out["solved"] = {side: sum(r["solved"] for r in rs) for side, rs in runs.items()}
    out["setup"] = (
        "`circuits train` defaults (preset 'induction'), same loop for both; criteria: probe "
        "accuracy >= 0.9, a layer-1 induction score >= 0.4, a previous-token score >= 0.4"
    )
    return {"time to induction": out}


# --- report ------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    from importlib.metadata import version

    cpu = platform.processor() or platform.machine()
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    cpu = info.get("model name", cpu)
    if "cpu family" in info:
        # Machines sold under one name differ several-fold in speed ("AMD EPYC" of family 23
        # and 25): the family/model and a GEMM calibration tell two tables apart.
        cpu += f" (family {info['cpu family']}, model {info.get('model', '?')})"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "cores": cores,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformer_lens": version("transformer-lens"),
        "load_average": [round(x, 2) for x in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gemm_gflops": gemm_gflops(),
    }


def gemm_gflops() -> float:
    """Single-thread float32 GEMM throughput at the training case's largest matmul shape."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.randn(4096, 64), torch.randn(64, 192)
        for _ in range(5):
            a @ b
        n, start = 50, time.perf_counter()
        for _ in range(n):
            a @ b
        return round(2 * 4096 * 64 * 192 * n / (time.perf_counter() - start) / 1e9, 1)
    finally:
        torch.set_num_threads(threads)


def fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        "| case | unit | ours: median (min-max) | peer: median (min-max) | ours/peer |",
        "|---|---|---|---|---|",
    ]
    for name, r in results["cases"].items():
        o, p = r["ours"], r["peer"]
        lines.append(
            f"| {name} | {r['unit']} ({r['better']} is better) "
            f"| {fmt(o['median'])} ({fmt(o['min'])}-{fmt(o['max'])}) "
            f"| {fmt(p['median'])} ({fmt(p['min'])}-{fmt(p['max'])}) | {r['ratio']:.2f} |"
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
            extra = f"; formed: ours {r['solved']['ours']}/{r['ours']['n']}, peer "
            extra += f"{r['solved']['peer']}/{r['peer']['n']}"
        lines.append(f"- **{name}**: {r['setup']}{extra}.")
    return "\n".join(lines) + "\n"


def run(
    cases: Sequence[str] = CASES,
    quick: bool = False,
    out: Path | None = HERE,
    seeds: int = 5,
    threads: int | None = 1,
    log: Callable[[str], None] = print,
) -> dict:
    """Runs ``cases`` and writes ``results.json`` and ``RESULTS.md`` into ``out`` (if given)."""
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        raise ValueError(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    if threads is not None:
        torch.set_num_threads(threads)
    results: dict[str, Any] = {"machine": machine(), "quick": quick, "cases": {}}
    load_before = results["machine"].pop("load_average")
    runners: dict[str, Callable[[], dict]] = {
        "train": lambda: case_train_threads(quick),
        "cache": lambda: case_cache(quick),
        "composition": lambda: case_composition(quick),
        "induction": lambda: case_induction(quick, seeds),
    }
    for case in cases:
        start = time.perf_counter()
        for name, r in runners[case]().items():
            results["cases"][name] = r
            log(f"{name}: ours/peer {r['ratio']:.2f} ({r['unit']}, {r['better']} is better)")
        log(f"  [{case}: {time.perf_counter() - start:.1f}s]")
    # Other processes on the machine slow both sides alike (interleaving), but say how busy it was.
    load_after = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    results["machine"]["load_average"] = {"before": load_before, "after": load_after}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        (out / "RESULTS.md").write_text(markdown(results))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny smoke run (seconds)")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma list of {', '.join(CASES)}")
    p.add_argument("--out", type=Path, default=HERE, help="folder for results.json/RESULTS.md")
    p.add_argument("--seeds", type=int, default=5, help="seeds of the induction case")
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads for both sides (default 1, as train)"
    )
    args = p.parse_args(argv)
    results = run(args.cases.split(","), args.quick, args.out, args.seeds, args.threads)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
