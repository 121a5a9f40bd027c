"""``circuits bench``: the side-by-side benchmark against TransformerLens (``bench/run.py``).

The benchmark lives in the source checkout's ``bench/`` folder (it is not part of the installed
package), so this command finds it next to the ``circuits`` package.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

CASES = ("train", "cache", "composition", "induction")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark against TransformerLens 4 (steps/s, caching, composition, induction)",
        description=(
            "Run each case for circuits and for TransformerLens's boot_native model, "
            "interleaved in one process, and write results.json and RESULTS.md."
        ),
    )
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    p.add_argument(
        "--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}"
    )
    p.add_argument("--out", help="folder for results.json and RESULTS.md (default: bench/)")
    p.add_argument("--seeds", type=int, default=5, help="seeds of the time-to-induction case")
    p.add_argument("--threads", type=int, default=1, help="torch threads for both sides")
    p.set_defaults(run=run)


def load_bench() -> Any:
    """Imports ``bench.run`` from the checkout that holds this ``circuits`` package."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "bench" / "run.py").is_file():
        raise FileNotFoundError(
            f"no bench/run.py next to the circuits package ({root}); the benchmark runs from a "
            "source checkout"
        )
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module("bench.run")


def run(args: argparse.Namespace) -> int:
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown or not cases:
        raise ValueError(f"--cases: unknown {', '.join(unknown) or '(none)'}; choose from {CASES}")
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    bench = load_bench()
    out = Path(args.out) if args.out else None
    results = bench.run(
        cases, quick=args.quick, out=out or bench.HERE, seeds=args.seeds, threads=args.threads
    )
    print(bench.markdown(results))
    return 0
