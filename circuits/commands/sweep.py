"""``circuits sweep SPEC`` (many seeded runs) and ``circuits sweep-report DIR -o sweep.html``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

# circuits.sweep.spec.MAX_RUNS, written out so that --help imports nothing heavy (a test checks
# that the two agree).
MAX_RUNS = 10_000
# Seeds per stacked group by default: "auto" (up to 16, at least one group per worker). Measured
# (bench/RESULTS.md, "Batched seeds"), stacked groups are a little faster on an idle machine and
# much faster on a busy one; --batch-seeds 1 trains each run on its own (rows bitwise as
# circuits.train's; stacked runs agree to float rounding).
BATCH_SEEDS = "auto"


def batch_seeds_arg(text: str) -> int | str:
    """``--batch-seeds``: a positive integer or ``auto``."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer or 'auto', got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 or 'auto', got {value}")
    return value


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a grid or random search of training runs: when do circuits form?",
        description=(
            "Run every training run of a sweep spec (YAML, TOML or JSON: a preset, fixed "
            "overrides, swept axes such as train.lr or model.d_model, and seeds) on a process "
            "pool or a Dask cluster. Each finished run appends one row to DIR/results.jsonl "
            "(when each target formed, the phase change, final scores, the circuit found) "
            "and its history to DIR/histories/."
        ),
    )
    p.add_argument("spec", help="sweep spec file (.yaml, .yml, .toml or .json)")
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        metavar="N",
        help="worker processes, one torch thread each (default 2; 0 runs in this process)",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDR",
        help="run on Dask: 'local' starts a LocalCluster of --workers processes, "
        "tcp://HOST:PORT uses a running scheduler (needs pip install 'circuits[dask]')",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue the sweep in --out, skipping finished runs"
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument(
        "--batch-seeds",
        type=batch_seeds_arg,
        default=BATCH_SEEDS,
        metavar="N|auto",
        help="train up to N runs that differ only in their seeds as one stacked group in one "
        "worker task (default auto: up to 16, at least one group per worker; 1: each run on "
        "its own, rows bitwise as circuits train's; see docs/atlas.md)",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="sweep directory (default: sweeps/NAME); must be new, empty or a sweep of ours",
    )
    p.add_argument(
        "--max-runs",
        type=int,
        default=None,
        metavar="N",
        help=f"allow a spec of up to N runs (default limit {MAX_RUNS:,}; counted before any "
        "run is built)",
    )
    p.set_defaults(run=run)

    r = sub.add_parser(
        "sweep-report",
        help="write an HTML page of a sweep's results (opens offline)",
        description=(
            "Read a sweep directory (or its results.jsonl) and write one self-contained HTML "
            "page: formation steps per setting, success rates, a phase diagram over two swept "
            "axes and every run's score trajectory aligned at its phase change."
        ),
    )
    r.add_argument("results", help="sweep directory or its results.jsonl")
    r.add_argument(
        "-o", "--output", help="HTML file to write (default: sweep.html in the current folder)"
    )
    r.add_argument("--title", help="page title (default: the sweep's name)")
    r.add_argument(
        "--force", action="store_true", help="replace an existing file that is not a report"
    )
    r.set_defaults(run=run_report)


def run(args: argparse.Namespace) -> int:
    from circuits.cli import CliError
    from circuits.sweep.driver import run_sweep
    from circuits.sweep.executors import MAX_WORKERS, check_scheduler
    from circuits.sweep.spec import SweepSpec

    if not 0 <= args.workers <= MAX_WORKERS:
        raise CliError(f"--workers must be in [0, {MAX_WORKERS}], got {args.workers}")
    if args.max_runs is not None and args.max_runs < 1:
        raise CliError(f"--max-runs must be >= 1, got {args.max_runs}")
    check_scheduler(args.scheduler)
    spec = SweepSpec.load(args.spec, max_runs=args.max_runs or MAX_RUNS)
    out = Path(args.out) if args.out else Path("sweeps") / spec.name
    summary = run_sweep(
        spec,
        out,
        workers=args.workers,
        scheduler=args.scheduler,
        resume=args.resume,
        quiet=args.quiet,
        batch_seeds=args.batch_seeds,
    )
    print(summary.line(out), file=sys.stderr)
    print(f"results: {out / 'results.jsonl'}")
    if summary.lost:
        print(
            f"{summary.lost} run(s) lost with their worker; rerun with --resume",
            file=sys.stderr,
        )
        return 1
    return 0


def run_report(args: argparse.Namespace) -> int:
    from circuits.report import check_report_path, write_report
    from circuits.sweep.report import sweep_report

    output = args.output or "sweep.html"
    check_report_path(output, force=args.force)  # before reading the results
    path = write_report(sweep_report(args.results, args.title), output, force=args.force)
    print(wrote_line(path, default=args.output is None))
    return 0


def wrote_line(path: Path, default: bool) -> str:
    """``wrote /abs/path (1.2 MB)``: where a page went, said in full when ``-o`` was not given."""
    line = f"wrote {path.absolute()} ({path.stat().st_size / 1e6:.1f} MB)"
    return line + (" (no -o given: the default name in the current folder)" if default else "")
