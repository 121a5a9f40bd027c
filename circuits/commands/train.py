"""``circuits train``: train a preset model from scratch and print the heads it formed."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train a small model on a synthetic task and report its heads",
        description=(
            "Train a model from scratch on the CPU (default: a 2-layer attention-only model on "
            "the induction task) and print the previous-token and induction heads it formed."
        ),
    )
    p.add_argument("--task", default="induction", choices=["induction", "shift"], help="preset")
    p.add_argument("--seed", type=int, default=0, help="seed of init, data and probe")
    p.add_argument("--layers", type=int, help="override n_layers")
    p.add_argument("--d-model", type=int, help="override d_model")
    p.add_argument("--heads", type=int, help="override n_heads")
    p.add_argument("--steps", type=int, help="maximum training steps")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--batch-size", type=int, help="sequences per step")
    p.add_argument(
        "--no-early-stop", action="store_true", help="train all steps even once heads formed"
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=run)


def overrides_from(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    model: dict[str, Any] = {}
    train: dict[str, Any] = {"progress": not args.quiet}
    for flag, field, part in (
        ("layers", "n_layers", model),
        ("d_model", "d_model", model),
        ("heads", "n_heads", model),
        ("steps", "steps", train),
        ("lr", "lr", train),
        ("batch_size", "batch_size", train),
    ):
        value = getattr(args, flag)
        if value is not None:
            part[field] = value
    if args.no_early_stop:
        train.update(target_accuracy=None, target_induction=None, target_previous_token=None)
    return {"model": model, "train": train}


def summarize(model: Any, result: Any) -> dict[str, Any]:
    """The heads a run formed, as plain data."""
    import torch

    final = result.final
    out: dict[str, Any] = {
        "steps": result.steps,
        "seconds": round(result.seconds, 3),
        "solved_at": result.solved_at,
        "probe_accuracy": round(final["accuracy"], 4),
        "probe_loss": round(final["loss"], 4),
    }
    for kind in ("previous_token", "induction"):
        if kind not in final:
            continue
        scores = torch.tensor(final[kind])
        layer, head = divmod(int(scores.argmax()), scores.shape[1])
        out[f"top_{kind}_head"] = {
            "head": f"L{layer}H{head}",
            "score": round(float(scores.max()), 4),
        }
    return out


def run(args: argparse.Namespace) -> int:
    from circuits.presets import build
    from circuits.training import train

    model, task, train_cfg = build(args.task, seed=args.seed, **overrides_from(args))
    result = train(model, task, train_cfg)
    summary = {"task": task.name, "model": repr_config(model), **summarize(model, result)}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"trained {summary['model']} on {task.name}: {result.steps} steps, {result.seconds:.1f}s")
    print(f"probe accuracy {summary['probe_accuracy']:.3f}  probe loss {summary['probe_loss']:.3f}")
    for kind in ("previous_token", "induction"):
        top = summary.get(f"top_{kind}_head")
        if top:
            print(f"top {kind.replace('_', '-')} head: {top['head']} (score {top['score']:.3f})")
    if train_cfg.has_targets:
        verdict = f"formed at step {result.solved_at}" if result.solved_at else "NOT formed"
        print(f"targets ({task.name}): {verdict}")
    return 0


def repr_config(model: Any) -> str:
    c = model.cfg
    kind = "attn-only" if c.attn_only else "LN+MLP"
    return f"{c.n_layers}L {kind} d_model={c.d_model} heads={c.n_heads}x{c.d_head}"
