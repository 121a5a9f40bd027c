"""Issue 25's targets, measured: the ``modular_addition`` preset groks and the ``markov_icl``
preset reaches the bigram phase, each by mechanism, with wall times.

    .venv/bin/python scripts/tasks_bench.py --out bench/tasks_results.json
    .venv/bin/python scripts/tasks_bench.py --only markov_icl --seed 1

For modular addition: the first evaluation with 100% training accuracy and the first with >= 99%
held-out accuracy (the delay between them is the grokking), then the Fourier mechanism
(``circuits.analysis.fourier.mechanism_summary``). For Markov chains: the phase at every
evaluation (``circuits.analysis.markov.PhaseTracker``), the late-position KLs at the end, and the
best statistical-induction and previous-token heads. Prints JSON; writes it with ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from circuits.analysis import fourier
from circuits.analysis.markov import PhaseTracker
from circuits.presets import build
from circuits.training import train


def modular_addition(
    seed: int,
    task_changes: dict[str, Any] | None = None,
    train_changes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    model, task, cfg = build(
        "modular_addition", seed=seed, task=task_changes or {}, train=train_changes or {}
    )
    cfg = cfg.replace(progress=False)
    train_batch = task.batch(task.pairs("train"))
    rows: list[dict[str, Any]] = []

    def track(step: int, record: Any) -> None:
        with torch.no_grad():
            logits = model(train_batch.tokens)[:, -1]
        train_acc = float((logits.argmax(-1) == train_batch.targets[:, -1]).float().mean())
        rows.append(
            {
                "step": step,
                "train_accuracy": train_acc,
                "test_accuracy": record.accuracy,
                "test_loss": record.loss,
                "seconds": record.seconds,
            }
        )

    start = time.perf_counter()
    result = train(model, task, cfg, callback=track)
    seconds = time.perf_counter() - start
    train_rows = task.pairs("train") @ torch.tensor([task.p, 1])
    first = lambda key, v: next((r["step"] for r in rows if r[key] >= v), None)
    return {
        "task": task.to_dict(),
        "steps": result.steps,
        "seconds": seconds,
        "train_accuracy_1.0_step": first("train_accuracy", 1.0),
        "test_accuracy_0.99_step": first("test_accuracy", 0.99),
        "final_test_accuracy": rows[-1]["test_accuracy"],
        "mechanism": fourier.mechanism_summary(model, task.p, train_rows),
        "history": rows,
    }


def markov_icl(seed: int) -> dict[str, Any]:
    model, task, cfg = build("markov_icl", seed=seed)
    cfg = cfg.replace(progress=False)
    tracker = PhaseTracker(model, task)
    start = time.perf_counter()
    result = train(model, task, cfg, callback=tracker)
    seconds = time.perf_counter() - start
    scores = result.history[-1].scores
    phases = [h["phase"] for h in tracker.history]
    return {
        "task": task.to_dict(),
        "steps": result.steps,
        "seconds": seconds,
        "phases": [p for i, p in enumerate(phases) if i == 0 or p != phases[i - 1]],
        "bigram_from_step": next(
            (h["step"] for h in tracker.history if h["phase"] == "bigram"), None
        ),
        "final": {k: v for k, v in tracker.history[-1].items() if k != "step"},
        "statistical_induction_L1": float(scores["statistical_induction"][1].max()),
        "previous_token_L0": float(scores["previous_token"][0].max()),
        "history": tracker.history,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=["modular_addition", "markov_icl"])
    p.add_argument("--out", help="write the JSON here")
    p.add_argument("--train-fraction", type=float, help="modular_addition: instead of the preset's")
    p.add_argument("--lr", type=float, help="modular_addition: instead of the preset's")
    p.add_argument("--weight-decay", type=float, help="modular_addition: instead of the preset's")
    p.add_argument("--eval-every", type=int, help="modular_addition: instead of the preset's")
    p.add_argument("--steps", type=int, help="modular_addition: instead of the preset's")
    args = p.parse_args(argv)
    task_changes = {} if args.train_fraction is None else {"train_fraction": args.train_fraction}
    train_changes = {
        k: getattr(args, k)
        for k in ("lr", "weight_decay", "eval_every", "steps")
        if getattr(args, k) is not None
    }
    out: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu_count": __import__("os").cpu_count(),
            "load_average": list(__import__("os").getloadavg()),
        },
        "seed": args.seed,
    }
    if args.only in (None, "modular_addition"):
        out["modular_addition"] = modular_addition(args.seed, task_changes, train_changes)
        out["modular_addition"]["train_changes"] = train_changes
    if args.only in (None, "markov_icl"):
        out["markov_icl"] = markov_icl(args.seed)
    out["machine"]["load_average_after"] = list(__import__("os").getloadavg())
    text = json.dumps(out, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    summary = {
        k: {kk: vv for kk, vv in v.items() if kk != "history"} if isinstance(v, dict) else v
        for k, v in out.items()
    }
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
