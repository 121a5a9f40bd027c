"""``circuits train``: train a preset model from scratch and print the heads it formed."""

from __future__ import annotations

import argparse
import json
import sys
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
    from circuits.tasks import task_names  # torch-free: the registry and packages' entry points

    p.add_argument(
        "--task",
        choices=task_names(),
        help="a registered task, with its preset if it has one (default: induction); installed "
        "packages add tasks through the 'circuits.tasks' entry-point group",
    )
    p.add_argument("--seed", type=int, help="seed of init, data and probe (default: 0)")
    p.add_argument("--layers", type=int, help="override n_layers")
    p.add_argument("--d-model", type=int, help="override d_model")
    p.add_argument("--heads", type=int, help="override n_heads")
    p.add_argument("--steps", type=int, help="maximum training steps")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--batch-size", type=int, help="sequences per step")
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch threads while training (default 1: robust when the machine is busy; 2 can "
        "be faster on an idle one)",
    )
    p.add_argument(
        "--no-early-stop", action="store_true", help="train all steps even once heads formed"
    )
    p.add_argument("--out", metavar="DIR", help="save a resumable checkpoint directory here")
    p.add_argument(
        "--checkpoint-every", type=int, metavar="N", help="also checkpoint every N steps"
    )
    p.add_argument(
        "--resume", metavar="DIR", help="continue the run checkpointed in DIR (and save there)"
    )
    p.add_argument("--force", action="store_true", help="replace an existing checkpoint at --out")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--report", metavar="PATH", help="also write an HTML report of the model here")
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
        ("threads", "threads", train),
    ):
        value = getattr(args, flag)
        if value is not None:
            part[field] = value
    if args.no_early_stop:
        train.update(target_accuracy=None, target_induction=None, target_previous_token=None)
    return {"model": model, "train": train}


def train_or_resume(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """Runs a fresh training run or resumes one: ``(model, task, train_cfg, result)``."""
    from circuits.cli import CliError
    from circuits.training import TrainingDiverged, resume

    if args.checkpoint_every is not None and not (args.out or args.resume):
        raise CliError("--checkpoint-every needs --out DIR (or --resume DIR)")
    try:
        if args.resume:
            fixed = (
                "task", "seed", "layers", "d_model", "heads", "lr", "batch_size", "threads", "out",
            )  # fmt: skip
            given = [f"--{f.replace('_', '-')}" for f in fixed if getattr(args, f) is not None]
            if args.no_early_stop:
                given.append("--no-early-stop")
            if given:
                raise CliError(
                    f"--resume continues a run as it was configured; drop {', '.join(given)}"
                )
            changes: dict[str, Any] = {"progress": not args.quiet}
            if args.steps is not None:
                changes["steps"] = args.steps
            if args.checkpoint_every is not None:
                changes["checkpoint_every"] = args.checkpoint_every
            model, task, train_cfg, result = resume(args.resume, **changes)
        else:
            model, task, train_cfg, result = _train_fresh(args)
    except TrainingDiverged as e:
        raise CliError(str(e)) from e
    if train_cfg.checkpoint_dir:
        print(f"checkpoint: {train_cfg.checkpoint_dir} (step {result.steps})", file=sys.stderr)
    return model, task, train_cfg, result


def _train_fresh(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    from circuits.checkpoint import check_writable
    from circuits.cli import CliError
    from circuits.presets import build
    from circuits.training import train

    overrides = overrides_from(args)
    if args.out:
        try:  # before training, not after
            check_writable(args.out, overwrite=args.force)
        except FileExistsError as e:
            raise CliError(str(e).replace("overwrite=True", "--force")) from e
        overrides["train"].update(checkpoint_dir=args.out, checkpoint_every=args.checkpoint_every)
    model, task, train_cfg = build(args.task or "induction", seed=args.seed or 0, **overrides)
    return model, task, train_cfg, train(model, task, train_cfg, overwrite=args.force)


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


def circuit_summary(model: Any, task: Any, summary: dict[str, Any]) -> dict[str, Any]:
    """The induction circuit's mechanism: K-composition into the top induction head from its
    strongest source, and what zero-ablating that source does to the probe accuracy."""
    from circuits.analysis import all_composition_scores, evaluate, run_with_ablation
    from circuits.analysis.head_scores import probe_accuracy

    top = summary.get("top_induction_head")
    if model.cfg.n_layers < 2 or top is None or top["head"].startswith("L0"):
        return {}
    layer, head = (int(x) for x in top["head"][1:].split("H"))
    comp = all_composition_scores(model)
    excess = comp.excess("K")[:layer, :, layer, head]  # earlier heads -> the induction head
    src_layer, src_head = divmod(int(excess.argmax()), excess.shape[1])
    source = f"L{src_layer}H{src_head}"
    probe = task.probe(64)
    ablated = probe_accuracy(run_with_ablation(model, probe.tokens, [source]), probe)
    return {
        "k_composition": {
            "source": source,
            "target": top["head"],
            "score": round(float(comp.k[src_layer, src_head, layer, head]), 4),
            "baseline": round(float(comp.baseline), 4),
            "baseline_std": round(float(comp.baseline_std), 4),
        },
        "ablate_source": {
            "head": source,
            "accuracy_before": round(evaluate(model, probe)["accuracy"], 4),
            "accuracy_after": round(ablated, 4),
        },
    }


def run(args: argparse.Namespace) -> int:
    if args.report:
        from circuits.report import check_report_path

        check_report_path(args.report)  # fail before training, not after
    model, task, train_cfg, result = train_or_resume(args)
    if args.report:
        from circuits.report import build_report, write_report

        page = build_report(model, task, result.history, result.losses, title="circuits train")
        print(f"wrote {write_report(page, args.report)}", file=sys.stderr)
    summary = {"task": task.name, "model": repr_config(model), **summarize(model, result)}
    summary.update(circuit_summary(model, task, summary))
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"trained {summary['model']} on {task.name}: {result.steps} steps, {result.seconds:.1f}s")
    print(f"probe accuracy {summary['probe_accuracy']:.3f}  probe loss {summary['probe_loss']:.3f}")
    for kind in ("previous_token", "induction"):
        top = summary.get(f"top_{kind}_head")
        if top:
            print(f"top {kind.replace('_', '-')} head: {top['head']} (score {top['score']:.3f})")
    if "k_composition" in summary:
        k, ab = summary["k_composition"], summary["ablate_source"]
        print(
            f"K-composition {k['source']} -> {k['target']}: {k['score']:.3f} "
            f"(random baseline {k['baseline']:.3f} ± {k['baseline_std']:.3f})"
        )
        print(
            f"zero-ablating {ab['head']}: probe accuracy {ab['accuracy_before']:.3f} -> "
            f"{ab['accuracy_after']:.3f}"
        )
    if train_cfg.has_targets:
        verdict = f"formed at step {result.solved_at}" if result.solved_at else "NOT formed"
        print(f"targets ({task.name}): {verdict}")
    return 0


def repr_config(model: Any) -> str:
    c = model.cfg
    kind = "attn-only" if c.attn_only else "LN+MLP"
    return f"{c.n_layers}L {kind} d_model={c.d_model} heads={c.n_heads}x{c.d_head}"
