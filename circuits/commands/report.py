"""``circuits report CHECKPOINT -o report.html``: one self-contained page of figures."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="write an HTML page of a checkpoint's circuits (opens offline)",
        description=(
            "Load a checkpoint directory (from `circuits train --out DIR` or model.save) and "
            "write one self-contained HTML page: training dynamics, head scores, attention "
            "patterns, composition scores, QK/OV circuits and copying eigenvalues."
        ),
    )
    p.add_argument(
        "checkpoint",
        help="checkpoint directory, or a pretrained model: a zoo name (attn-only-2l, gelu-1l, "
        "...) or a directory in the zoo's or Hugging Face GPT-2's layout",
    )
    p.add_argument(
        "-o",
        "--output",
        help="HTML file to write, not in a checkpoint (default: report.html in the current "
        "folder; the path written is printed)",
    )
    p.add_argument("--title", help="page title (default: from the checkpoint name)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for the analysis (default: 1, as training; 0: torch's default)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing file at --output that is not a circuits report",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from circuits.commands.sweep import wrote_line
    from circuits.report import check_report_path, report_from_checkpoint, write_report

    # Before the work: never inside a checkpoint directory, never over a file we did not
    # write (without --force), only where a file can be written.
    output = args.output or "report.html"
    if args.threads < 0:
        raise ValueError(f"--threads must be >= 0 (0: torch's default), got {args.threads}")
    threads = args.threads or None
    check_report_path(output, force=args.force)
    if _is_checkpoint(args.checkpoint):
        page = report_from_checkpoint(args.checkpoint, args.title, threads=threads)
    else:
        page = _pretrained_report(args.checkpoint, args.title, threads)
    path = write_report(page, output, force=args.force)
    print(wrote_line(path, default=args.output is None))
    return 0


def _is_checkpoint(name: str) -> bool:
    from pathlib import Path

    from circuits.pretrained.gpt2 import gpt2_repository
    from circuits.pretrained.zoo import repository

    path = Path(name)
    # A name that is no directory here is a checkpoint unless it is a zoo or GPT-2 name (so a
    # mistyped path still gets the checkpoint loader's "no such directory" error).
    if not path.is_dir():
        return repository(name) is None and gpt2_repository(name) is None
    return (path / "metadata.json").is_file()


def _pretrained_report(name: str, title: str | None, threads: int | None = 1) -> str:
    from circuits.pretrained import from_pretrained
    from circuits.report import build_report

    model = from_pretrained(name)
    return build_report(
        model, None, None, None, title=title or f"circuits report: {name}", threads=threads
    )
