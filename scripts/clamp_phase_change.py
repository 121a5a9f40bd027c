"""Singh et al. 2024 on our default induction model: does clamping the previous-token head to its
ideal pattern move the induction phase change earlier?

For each seed, trains the ``induction`` preset twice from the same init and data stream, once
plainly and once with layer-0 head(s) clamped to the ideal previous-token pattern
(``ClampPattern(pattern="previous")``, in training and evaluation, as Singh et al.'s
``--opto_prev_token_heads``), for a fixed number of steps without early stop, and reads each
run's phase change with :func:`circuits.analysis.phase.phase_change` (the toolkit's one
definition) and its prefix-matching cross-check. The shift is paired per seed
(unclamped step - clamped step; positive: the clamp made it earlier).

    .venv/bin/python scripts/clamp_phase_change.py --seeds 16 --out bench/clamp_phase_change.json

Writes the per-seed table and the summary (median shift, quartiles, range, how many seeds moved
earlier) as JSON, and prints the summary. A run without a phase change counts as ``None`` and
is left out of the paired statistics (the summary says how many).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from circuits.analysis.phase import phase_change
from circuits.names import parse_head_name
from circuits.presets import build
from circuits.training import train
from circuits.training.interventions import ClampPattern


def run_arm(seed: int, heads: list[str], steps: int = 400, eval_every: int = 10) -> dict[str, Any]:
    """One run of the induction preset (``heads`` clamped to previous-token; [] for none)."""
    clamps = [ClampPattern(layer=layer, head=head) for layer, head in map(parse_head_name, heads)]
    model, task, cfg = build("induction", seed=seed)
    cfg = cfg.replace(
        steps=steps,
        eval_every=eval_every,
        progress=False,
        target_accuracy=None,
        targets={},
        interventions=clamps,
    )
    start = time.perf_counter()
    result = train(model, task, cfg)
    pc = phase_change(result.history)
    return {
        "phase_step": None if pc is None else pc.step,
        "resolution": None if pc is None else pc.resolution,
        "prefix_matching_step": None if pc is None else pc.prefix_matching_step,
        "accuracy_0.9_step": next((r.step for r in result.history if r.accuracy >= 0.9), None),
        "final_loss": result.history[-1].loss,
        "seconds": time.perf_counter() - start,
    }


def paired(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """Median, quartiles and range of ``plain[key] - clamped[key]`` over seeds with both."""
    shifts = [
        r["plain"][key] - r["clamped"][key]
        for r in rows
        if r["plain"][key] is not None and r["clamped"][key] is not None
    ]
    if not shifts:
        return {"n": 0}
    q = statistics.quantiles(shifts, n=4) if len(shifts) > 1 else [shifts[0]] * 3
    plain = [r["plain"][key] for r in rows if r["plain"][key] is not None]
    clamped = [r["clamped"][key] for r in rows if r["clamped"][key] is not None]
    return {
        "n": len(shifts),
        "median_shift": statistics.median(shifts),
        "q1": q[0],
        "q3": q[2],
        "min": min(shifts),
        "max": max(shifts),
        "earlier": sum(s > 0 for s in shifts),
        "same": sum(s == 0 for s in shifts),
        "later": sum(s < 0 for s in shifts),
        "median_plain": statistics.median(plain),
        "median_clamped": statistics.median(clamped),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=16, help="seeds 0..N-1 (default 16)")
    p.add_argument("--steps", type=int, default=400, help="steps per run (default 400)")
    p.add_argument("--eval-every", type=int, default=10, help="evaluation interval (default 10)")
    p.add_argument("--clamp", nargs="+", default=["L0H0"], help="heads clamped (default L0H0)")
    p.add_argument("--out", default="bench/clamp_phase_change.json", help="result JSON")
    p.add_argument("--quiet", "-q", action="store_true")
    args = p.parse_args(argv)
    if args.seeds < 1 or args.steps < 1 or args.eval_every < 1:
        p.error("--seeds, --steps and --eval-every must be positive")
    rows = []
    for seed in tqdm(range(args.seeds), disable=args.quiet, desc="seeds"):
        rows.append(
            {
                "seed": seed,
                "plain": run_arm(seed, [], args.steps, args.eval_every),
                "clamped": run_arm(seed, args.clamp, args.steps, args.eval_every),
            }
        )
    summary = {
        key: paired(rows, key)
        for key in ("phase_step", "prefix_matching_step", "accuracy_0.9_step")
    }
    out = {
        "setup": {
            "preset": "induction",
            "clamped": args.clamp,
            "pattern": "previous",
            "steps": args.steps,
            "eval_every": args.eval_every,
            "seeds": args.seeds,
            "shift": "plain step - clamped step (positive: the clamp made it earlier)",
        },
        "summary": summary,
        "runs": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
