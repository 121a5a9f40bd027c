"""Some rows of the ``scale`` case (:mod:`circuits.benchmarks.scale`), e.g. only GPT-2 small's:
``python -m circuits.benchmarks.scale_rows --rows gpt2-small [--rows ...] --threads 2
[--json FILE]``.
Each row runs in a fresh process as in the full case; the table is printed, never written to
``bench/``."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path

from circuits.benchmarks.scale import Row, case_scale, markdown, rows


def select(candidates: list[Row], patterns: Sequence[str]) -> list[Row]:
    """The rows whose ``"{side} {label}"`` (as the case prints it, e.g. ``"ours head_scores
    (gpt2-small, 8 x 2x32)"``) contains one of ``patterns``, case-insensitively, in order. A
    pattern that matches no row is refused: a typo would otherwise measure nothing."""
    patterns = [p.strip().lower() for p in patterns if p.strip()]
    if not patterns:
        raise ValueError("no row pattern given")
    names = [f"{r.side} {r.label}".lower() for r in candidates]
    unmatched = [p for p in patterns if not any(p in name for name in names)]
    if unmatched:
        raise ValueError(f"no row of the scale case matches {unmatched}; rows: {names}")
    return [
        r for r, name in zip(candidates, names, strict=True) if any(p in name for p in patterns)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m circuits.benchmarks.scale_rows --rows PART [--rows PART]``: some rows, printed
    as its table (never written to ``bench/``; ``--json FILE`` keeps the measurements)."""
    from circuits.benchmarks.measure import machine

    p = argparse.ArgumentParser(
        prog="python -m circuits.benchmarks.scale_rows",
        description="Measure some rows of the scale case, each in a fresh process.",
    )
    p.add_argument(
        "--rows",
        action="append",
        required=True,
        metavar="PART",
        help="part of a row's name as the case prints it (labels hold commas, so repeat the "
        "flag for several), e.g. --rows gpt2-small or --rows 'ours head_scores (gpt2-small, "
        "8 x 2x32)' --rows 'edge_attribution (gpt2'",
    )
    p.add_argument("--threads", type=int, default=2, help="torch threads per row (default 2)")
    p.add_argument("--quick", action="store_true", help="the shrunk shapes of --quick")
    p.add_argument("--json", help="also write the measurements to this file")
    args = p.parse_args(argv)
    cores = os.cpu_count() or 1
    if not 1 <= args.threads <= cores:
        p.error(f"--threads must be between 1 and this machine's {cores} cores")
    patterns = args.rows
    try:
        chosen = select(rows(args.quick), patterns)  # refused before anything runs
    except ValueError as e:
        p.error(str(e))
    info = machine()
    result = case_scale(args.quick, args.threads, chosen=chosen)
    info["load_average"] = {"before": info.get("load_average"), "after": machine()["load_average"]}
    print(markdown(result, info))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, **result}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
