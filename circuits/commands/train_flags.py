"""The flags of ``circuits train``: which preset field each overrides, the interventions'
flags, and their checks in the user's terms (flag names) before anything is built."""

from __future__ import annotations

import argparse
from typing import Any


def flag_default(flag: str) -> str:
    """`` (default: V)``: the induction preset's value of a flag's field (``circuits train``
    without --task), or TrainConfig's default; other tasks' presets may differ."""
    from circuits.presets import PRESETS

    _, part, field = FLAGS[flag]
    value = PRESETS["induction"][part].get(field)
    return "" if value is None else f" (default: {value:g})"


# Flag -> (attribute, field of the preset part it overrides).
FLAGS = {
    "--layers": ("layers", "model", "n_layers"),
    "--d-model": ("d_model", "model", "d_model"),
    "--heads": ("heads", "model", "n_heads"),
    "--steps": ("steps", "train", "steps"),
    "--lr": ("lr", "train", "lr"),
    "--batch-size": ("batch_size", "train", "batch_size"),
    "--threads": ("threads", "train", "threads"),
}
# Interventions during training (circuits.training.interventions): each flag is repeatable and
# takes an optional step range @START:STOP (steps already taken; STOP may be left empty).
_RANGE = "; optional @START:STOP step range; repeatable"
INTERVENTION_FLAGS = (
    ("--clamp-pattern", "clamp_pattern", "HEAD=previous|FILE.json",
     "clamp a head's attention pattern to the previous-token oracle or a [pos, pos] JSON "
     "pattern, e.g. L0H0=previous" + _RANGE),
    ("--zero-head", "ablate", "HEAD", "zero a head's output, e.g. L1H0" + _RANGE),
    ("--ablate", "ablate", "COMPONENT", "zero-ablate a head or MLP, e.g. L0H1@0:100" + _RANGE),
    ("--freeze", "freeze", "PATTERN",
     "do not update parameters whose names match, e.g. 'blocks.0.*'" + _RANGE),
)  # fmt: skip
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a 64-bit int


def overrides_from(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    parts: dict[str, dict[str, Any]] = {"model": {}, "train": {"progress": not args.quiet}}
    for attr, part, field in FLAGS.values():
        value = getattr(args, attr)
        if value is not None:
            parts[part][field] = value
    if args.no_early_stop:
        parts["train"].update(target_accuracy=None, targets={})
    if getattr(args, "target", None):
        parts["train"]["targets"] = parse_targets(args.target)
    if any(getattr(args, flag[2:].replace("-", "_"), None) for flag, *_ in INTERVENTION_FLAGS):
        from circuits.training.interventions import parse_flag

        parts["train"]["interventions"] = [
            parse_flag(kind, value).to_dict()
            for flag, kind, *_ in INTERVENTION_FLAGS
            for value in getattr(args, flag[2:].replace("-", "_")) or ()
        ]
    return parts


def parse_targets(items: list[str]) -> dict[str, float]:
    """``["induction=0.4", ...]`` as ``{"induction": 0.4}`` (names are checked by TrainConfig)."""
    from circuits.cli import CliError

    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise CliError(f"--target {item!r}: expected SCORE=VALUE, e.g. induction=0.4")
    return out


def check_flags(args: argparse.Namespace) -> None:
    """Refuses bad flag values in the user's terms (flag names), before anything is built."""
    import math
    import os

    from circuits.cli import CliError

    for flag in ("--layers", "--d-model", "--heads", "--steps", "--batch-size", "--threads"):
        value = getattr(args, FLAGS[flag][0])
        if value is not None and value <= 0:
            raise CliError(f"{flag} must be positive, got {value}")
    if args.checkpoint_every is not None and args.checkpoint_every <= 0:
        raise CliError(f"--checkpoint-every must be positive, got {args.checkpoint_every}")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise CliError(f"--lr must be a positive number, got {args.lr}")
    if args.seed is not None and not 0 <= args.seed <= MAX_SEED:
        raise CliError(f"--seed must be between 0 and 2**63-1, got {args.seed}")
    cores = os.cpu_count() or 1
    if args.threads is not None and args.threads > cores:
        raise CliError(f"--threads {args.threads} is more than this machine's {cores} cores")
    if args.checkpoint_every is not None and not (args.out or args.resume):
        raise CliError("--checkpoint-every needs --out DIR (or --resume DIR)")
    if args.out and args.resume:
        raise CliError("--resume saves into its own directory; drop --out")
