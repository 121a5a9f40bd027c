"""The benchmark cases: each runs ours and the peer (TransformerLens 4's ``boot_native``)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import torch

from circuits.benchmarks.measure import comparison, interleaved, peak_memory_mb, summary
from circuits.config import ModelConfig
from circuits.losses import cross_entropy
from circuits.model import HookedTransformer

REFERENCE: dict[str, Any] = dict(
    n_layers=2,
    d_model=64,
    n_heads=4,
    d_head=16,
    n_ctx=64,
    d_vocab=64,
    attn_only=True,
    normalization_type=None,
)
GPT2_SMALL_ATTN: dict[str, Any] = dict(
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
    out = induction_comparison(runs)
    out["setup"] = (
        "`circuits train` defaults (preset 'induction'), same loop for both; criteria: probe "
        "accuracy >= 0.9, a layer-1 induction score >= 0.4, a previous-token score >= 0.4"
    )
    return {"time to induction": out}


def induction_comparison(runs: dict[str, list[dict]]) -> dict:
    """Times to induction compared only when every run of both sides formed its heads.

    A run that did not form them measures the step budget, not a time to induction: with any
    such run the ratio is None (printed n/a) and each side's summary covers its formed runs
    only (None if none formed).
    """
    formed = {side: [r["seconds"] for r in rs if r["solved"]] for side, rs in runs.items()}
    everyone = all(len(formed[side]) == len(runs[side]) > 0 for side in ("ours", "peer"))
    if everyone:
        out = comparison(formed["ours"], formed["peer"], "s", "lower")
    else:
        out = {
            "unit": "s",
            "better": "lower",
            "ours": summary(formed["ours"]) if formed["ours"] else None,
            "peer": summary(formed["peer"]) if formed["peer"] else None,
            "ratio": None,
        }
    out["runs"] = runs
    out["solved"] = {side: len(formed[side]) for side in runs}
    out["n_runs"] = {side: len(rs) for side, rs in runs.items()}
    return out
