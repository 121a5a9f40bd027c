"""The ``circuits`` console script.

Each subcommand lives in ``circuits/commands/<name>.py`` with ``add_parser(subparsers)`` and
``run(args) -> int``. Nothing heavy is imported until a command runs, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

COMMANDS = ("train", "bench", "report")


class CliError(Exception):
    """A user error: printed as one line, exit status 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="circuits",
        description="Train small transformers on synthetic tasks and read their circuits.",
    )
    parser.add_argument("--version", action="version", version="circuits 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"circuits.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"circuits.commands.{name}":
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except (CliError, ValueError, FileNotFoundError, FileExistsError, IsADirectoryError) as e:
        print(f"circuits {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"circuits {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`circuits train --json | head`): not our error to report.
        # Point stdout at devnull so the interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
