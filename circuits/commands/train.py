"""``circuits train``: train a preset model from scratch and print the heads it formed."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from circuits.commands.train_flags import FLAGS, INTERVENTION_FLAGS, check_flags, overrides_from
from circuits.commands.train_flags import flag_default as _d


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train a small model on a synthetic task and report its heads",
        description=(
            "Train a model from scratch on the CPU (default: a 2-layer attention-only model on "
            "the induction task) and print the previous-token and induction heads it formed."
        ),
    )
    from circuits.tasks import TaskChoices  # torch-free: the registry and packages' entry points

    p.add_argument(
        "--task",
        choices=TaskChoices(),
        metavar="TASK",
        help="a registered task, with its preset if it has one: %(choices)s (default: induction; "
        "installed packages add tasks through the 'circuits.tasks' entry-point group)",
    )
    p.add_argument("--seed", type=int, help="seed of init, data and probe (default: 0)")
    p.add_argument(
        "--layers", type=int, help=f"number of layers (transformer blocks){_d('--layers')}"
    )
    p.add_argument("--d-model", type=int, help=f"width of the residual stream{_d('--d-model')}")
    p.add_argument(
        "--heads",
        type=int,
        help=f"attention heads per layer (must divide --d-model){_d('--heads')}",
    )
    p.add_argument(
        "--steps",
        type=int,
        help="maximum training steps; a run with targets stops once they are met, usually far "
        f"earlier (--resume: train up to here){_d('--steps')}",
    )
    p.add_argument("--lr", type=float, help=f"peak learning rate{_d('--lr')}")
    p.add_argument("--batch-size", type=int, help=f"sequences per step{_d('--batch-size')}")
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch threads while training (default 1: robust when the machine is busy; 2 can "
        "be faster on an idle one)",
    )
    p.add_argument(
        "--no-early-stop",
        action="store_true",
        help="train all steps even once heads formed (with --resume: continue a run that met "
        "its targets)",
    )
    p.add_argument(
        "--target",
        action="append",
        metavar="SCORE=VALUE",
        help="stop once the best head of a registered head score (previous_token, induction, "
        "or any score registered with circuits.analysis.scores.register_score) reaches VALUE; "
        "repeatable; replaces the preset's score targets",
    )
    for flag, _, metavar, what in INTERVENTION_FLAGS:
        p.add_argument(flag, action="append", metavar=metavar, help=what)
    p.add_argument("--out", metavar="DIR", help="save a resumable checkpoint directory here")
    p.add_argument(
        "--checkpoint-every", type=int, metavar="N", help="also checkpoint every N steps"
    )
    p.add_argument(
        "--resume", metavar="DIR", help="continue the run checkpointed in DIR (and save there)"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing checkpoint at --out, or a file at --report that is not a report",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--report", metavar="PATH", help="also write an HTML report of the model here")
    p.set_defaults(run=run)


def _fresh_parts(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The preset's parts with the flags applied (plain data: nothing allocated)."""
    from circuits.cli import CliError
    from circuits.presets import preset

    parts = preset(args.task or "induction")
    for part, values in overrides_from(args).items():
        parts[part].update(values)
    m = parts["model"]
    if m["d_model"] % m["n_heads"]:
        given = {f: getattr(args, FLAGS[f][0]) is not None for f in ("--d-model", "--heads")}
        d = f"--d-model {m['d_model']}" + ("" if given["--d-model"] else " (the default)")
        h = f"--heads {m['n_heads']}" + ("" if given["--heads"] else " (the default)")
        raise CliError(f"{d} is not divisible by {h}")
    return parts


def check_size(parts: dict[str, dict[str, Any]]) -> None:
    """Refuses, before allocating, a model and batch whose training cannot fit in memory
    (:meth:`~circuits.config.ModelConfig.check_fits`), naming the flags that shrink it."""
    from circuits.cli import CliError
    from circuits.config import ModelConfig

    cfg = ModelConfig(**parts["model"])
    try:
        cfg.check_fits(batch_size=parts["train"].get("batch_size", 32), training=True)
    except ValueError as e:
        raise CliError(f"{e}; choose a smaller --d-model, --layers, --heads or --batch-size") from e


def check_outputs(args: argparse.Namespace) -> None:
    """Checks every output location (--out, --resume, --report) before any work starts."""
    from pathlib import Path

    from circuits.cli import CliError
    from circuits.files import check_writable
    from circuits.report import check_report_path

    if args.out:
        try:
            check_writable(args.out, overwrite=args.force)
        except FileExistsError as e:
            if "already exists" not in str(e):
                raise
            raise CliError(
                f"{args.out} already exists; pass --force to replace it, or --resume {args.out} "
                "to continue its run"
            ) from e
    if args.report:
        check_report_path(args.report, force=args.force)
        run_dir = args.out or args.resume
        if run_dir:
            report, ck = Path(args.report).absolute(), Path(run_dir).absolute()
            if ck == report or ck in report.parents:
                raise CliError(
                    f"--report {args.report} is inside the checkpoint directory {run_dir}; "
                    "write it elsewhere"
                )


def resume_changes(args: argparse.Namespace) -> tuple[dict[str, Any], str | None]:
    """The train-config changes of a ``--resume`` and what to tell the user about them (the
    policy is :func:`circuits.training.resume_plan`'s; this maps flags onto it)."""
    from circuits.cli import CliError
    from circuits.training import read_training_metadata, resume_plan

    fixed: tuple[str, ...] = ("task", "seed", "layers", "d_model", "heads", "lr", "batch_size")
    fixed += (
        "threads",
        *(f[2:].replace("-", "_") for f, *_ in INTERVENTION_FLAGS),
    )  # recorded in the run
    given = [f"--{f.replace('_', '-')}" for f in fixed if getattr(args, f) is not None]
    if given:
        raise CliError(f"--resume continues a run as it was configured; drop {', '.join(given)}")
    changes: dict[str, Any] = {"progress": not args.quiet}
    if args.checkpoint_every is not None:
        changes["checkpoint_every"] = args.checkpoint_every
    meta = read_training_metadata(args.resume)
    try:
        return resume_plan(meta, steps=args.steps, no_early_stop=args.no_early_stop, **changes)
    except ValueError as e:
        raise CliError(str(e).replace("steps=", "--steps ", 1)) from e


def train_or_resume(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """Runs a fresh training run or resumes one: ``(model, task, train_cfg, result)``."""
    from circuits.cli import CliError
    from circuits.training import TrainingDiverged, resume

    try:
        if args.resume:
            changes, message = resume_changes(args)
            model, task, train_cfg, result = resume(args.resume, **changes)
            if message:
                print(f"circuits train: {message}", file=sys.stderr)
        else:
            model, task, train_cfg, result = _train_fresh(args)
    except TrainingDiverged as e:
        raise CliError(str(e)) from e
    if train_cfg.checkpoint_dir:
        print(f"checkpoint: {train_cfg.checkpoint_dir} (step {result.steps})", file=sys.stderr)
    return model, task, train_cfg, result


def _train_fresh(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    from circuits.presets import build
    from circuits.training import train

    parts = _fresh_parts(args)
    check_size(parts)
    overrides = overrides_from(args)
    if args.out:
        overrides["train"].update(checkpoint_dir=args.out, checkpoint_every=args.checkpoint_every)
    model, task, train_cfg = build(args.task or "induction", seed=args.seed or 0, **overrides)
    return model, task, train_cfg, train(model, task, train_cfg, overwrite=args.force)


def summarize(model: Any, result: Any) -> dict[str, Any]:
    """The heads a run formed, as plain data."""
    from circuits.analysis.summary import top_head

    final = result.final
    out: dict[str, Any] = {
        "steps": result.steps,
        "seconds": round(result.seconds, 3),
        "solved_at": result.solved_at,
        "probe_accuracy": round(final["accuracy"], 4),
        "probe_loss": round(final["loss"], 4),
    }
    if final.metrics:  # the task's model-level measures (circuits.training.metrics)
        out["metrics"] = dict(final.metrics)
    for kind, scores in final.scores.items():  # every score recorded, from the registry
        top = top_head(kind, scores)  # among the layers that count (induction: >= 1)
        out[f"top_{kind}_head"] = top and {**top, "score": round(top["score"], 4)}
    return out


def circuit_summary(model: Any, task: Any, result: Any) -> dict[str, Any]:
    """The induction circuit's mechanism (:func:`circuits.analysis.summary.induction_circuit`):
    K-composition into the top induction head from its strongest source, and what
    zero-ablating that source does to the probe accuracy."""
    from circuits.analysis.summary import induction_circuit

    circuit = induction_circuit(model, result.final.scores, probe=task.probe(64))
    k = circuit["k_composition"]
    if k is None:
        return {}
    # Unrounded: the text prints them once at 3 decimals, as the figures do (rounding twice
    # printed 0.179 for a baseline the figures show as 0.178).
    keys = ("source", "target", "score", "baseline", "baseline_std")
    return {
        "k_composition": {key: k[key] for key in keys},
        "ablate_source": circuit["ablate_source"],
    }


def run(args: argparse.Namespace) -> int:
    import contextlib
    from pathlib import Path

    from circuits.files import writer_lock

    check_flags(args)
    check_outputs(args)  # fail before training, not after
    run_dir = args.out or args.resume
    with contextlib.ExitStack() as stack:
        if run_dir:  # one writer per checkpoint, for the whole run, before reading it
            parent = Path(run_dir).absolute().parent
            if args.out:
                parent.mkdir(parents=True, exist_ok=True)
            if parent.is_dir():  # else --resume fails below with "no checkpoint at"
                stack.enter_context(writer_lock(run_dir))
        model, task, train_cfg, result = train_or_resume(args)
    if args.report:
        from circuits.report import build_report, write_report

        page = build_report(model, task, result.history, result.losses, title="circuits train")
        print(f"wrote {write_report(page, args.report, force=args.force)}", file=sys.stderr)
    summary = {"task": task.name, "model": repr_config(model), **summarize(model, result)}
    summary.update(circuit_summary(model, task, result))
    if args.json:
        print(json.dumps(rounded(summary), indent=2))
        return 0
    print(f"trained {summary['model']} on {task.name}: {result.steps} steps, {result.seconds:.1f}s")
    print(f"probe accuracy {summary['probe_accuracy']:.3f}  probe loss {summary['probe_loss']:.3f}")
    from circuits.analysis.scores import get_score

    for kind in result.final.scores:
        label, top = get_score(kind).label, summary[f"top_{kind}_head"]
        if top:
            print(f"top {label} head: {top['head']} (score {top['score']:.3f})")
        else:
            print(f"top {label} head: n/a (no layer of this model counts for it)")
    for line in circuit_lines(summary):
        print(line)
    from circuits.training.metrics import describe_metrics

    for line in describe_metrics(task, result.history):  # Markov phases, grokking measures
        print(line)
    if train_cfg.has_targets:
        verdict = f"formed at step {result.solved_at}" if result.solved_at else "NOT formed"
        print(f"targets ({task.name}): {verdict}")
    return 0


def circuit_lines(summary: dict[str, Any]) -> list[str]:
    """The text of :func:`circuit_summary`: every number rounded once, to 3 decimals (the
    figures print the composition baseline the same way)."""
    if "k_composition" not in summary:
        return []
    k, ab = summary["k_composition"], summary["ablate_source"]
    return [
        f"K-composition {k['source']} -> {k['target']}: {k['score']:.3f} "
        f"(random baseline {k['baseline']:.3f} ± {k['baseline_std']:.3f})",
        f"zero-ablating {ab['head']}: probe accuracy {ab['accuracy_before']:.3f} -> "
        f"{ab['accuracy_after']:.3f}",
    ]


def rounded(value: Any, digits: int = 4) -> Any:
    """``value`` with every float rounded to ``digits`` (for the JSON output)."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v, digits) for v in value]
    return value


def repr_config(model: Any) -> str:
    c = model.cfg
    norm = c.normalization_type  # a model with MLPs need not have LayerNorm (modular_addition)
    kind = "attn-only" if c.attn_only else (f"{norm}+MLP" if norm else "MLP")
    return f"{c.n_layers}L {kind} d_model={c.d_model} heads={c.n_heads}x{c.d_head}"
