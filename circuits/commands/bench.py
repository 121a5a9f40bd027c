"""``circuits bench``: the benchmark against TransformerLens (:mod:`circuits.benchmarks`).

Where results go: ``--out DIR`` if given; otherwise a full run writes ``bench/`` under the
current directory (in a source checkout, the results the README quotes), and a ``--quick``
smoke run a new temporary folder. A smoke run never replaces the results of a full run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

CASES = ("train", "cache", "composition", "induction", "scale", "atlas")
DEFAULT_CASES = ("train", "cache", "composition", "induction")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark against TransformerLens 4 (steps/s, caching, composition, induction)",
        description=(
            "Run each case for circuits and for TransformerLens's boot_native model, "
            "interleaved in one process, and write results.json and RESULTS.md."
        ),
    )
    p.add_argument(
        "--quick", action="store_true", help="a seconds-long smoke run (written to a temp folder)"
    )
    p.add_argument(
        "--cases",
        default=",".join(DEFAULT_CASES),
        help=f"comma-separated subset of {','.join(CASES)} (default: all but scale and atlas; "
        "scale, the zoo and GPT-2 shapes, writes scale_results.json/.md and takes minutes; atlas, "
        "stacked seeds vs one model per step, writes atlas_results.json/.md)",
    )
    p.add_argument(
        "--out",
        help="folder for results.json and RESULTS.md (default: ./bench, or a temporary folder "
        "with --quick)",
    )
    p.add_argument("--seeds", type=int, default=5, help="seeds of the time-to-induction case")
    p.add_argument("--threads", type=int, default=1, help="torch threads for both sides")
    p.add_argument(
        "--force", action="store_true", help="let a --quick run replace a full run's results"
    )
    p.set_defaults(run=run)


def results_folder(out: str | None, quick: bool, force: bool) -> Path:
    """Where to write, checked before anything runs (see the module docstring)."""
    from circuits.cli import CliError
    from circuits.files import check_creatable, check_names, checkpoint_around

    if out is None:
        if quick:
            return Path(tempfile.mkdtemp(prefix="circuits-bench-quick-"))
        folder = Path("bench")
    else:
        folder = Path(out)
    check_names(folder / "results.json")
    outer = checkpoint_around(folder.absolute())
    if outer is not None:
        raise CliError(f"--out {folder} is inside the checkpoint {outer}; choose another folder")
    if folder.exists() and not folder.is_dir():
        raise CliError(f"--out {folder} is a file, not a folder")
    check_creatable(folder)
    for name in ("results.json", "RESULTS.md", "scale_results.json", "scale_results.md"):
        if (folder / name).is_dir():
            raise CliError(f"{folder / name} is a directory; not replacing it")
    for previous in (folder / "results.json", folder / "scale_results.json"):
        if not (quick and not force and previous.is_file()):
            continue
        try:
            full = json.loads(previous.read_text()).get("quick") is False
        except (OSError, ValueError, AttributeError):
            full = True  # not ours to judge: keep it
        if full:
            raise CliError(
                f"{folder} holds the results of a full run; a --quick smoke run does not replace "
                "them (leave out --out, or pass --force)"
            )
    return folder


def run(args: argparse.Namespace) -> int:
    from circuits.cli import CliError

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown or not cases:
        raise CliError(f"--cases: unknown {', '.join(unknown) or '(none)'}; choose from {CASES}")
    if args.seeds < 1:
        raise CliError(f"--seeds must be >= 1, got {args.seeds}")
    if args.seeds > 1000:
        raise CliError(f"--seeds {args.seeds} is more runs than a benchmark needs (at most 1000)")
    import os

    cores = os.cpu_count() or 1
    if not 1 <= args.threads <= cores:
        raise CliError(f"--threads must be between 1 and this machine's {cores} cores")
    folder = results_folder(args.out, args.quick, args.force)

    from circuits.benchmarks import markdown
    from circuits.benchmarks import run as run_bench

    results = run_bench(cases, quick=args.quick, out=folder, seeds=args.seeds, threads=args.threads)
    if results["cases"]:
        print(markdown(results))
        print(f"wrote {folder / 'results.json'} and {folder / 'RESULTS.md'}")
    if "scale" in results:
        from circuits.benchmarks.scale import markdown as scale_markdown

        print(scale_markdown(results["scale"], results["machine"]))
        print(f"wrote {folder / 'scale_results.json'} and {folder / 'scale_results.md'}")
    return 0
