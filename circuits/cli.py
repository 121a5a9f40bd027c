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

COMMANDS = ("train", "bench", "report", "sweep")


class CliError(ValueError):
    """A user error: printed as one line, exit status 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="circuits",
        description="Train small transformers on synthetic tasks and read their circuits.",
        allow_abbrev=False,
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
    # No prefixes of long options (`--step 10` is not `--steps 10`): a typo is an error, and
    # adding an option later never changes what an old command line means. Set here for every
    # subcommand, so a new command cannot forget it.
    for command in sub.choices.values():
        command.allow_abbrev = False
    return parser


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]  # type: ignore[no-any-return]
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the console script; returns the exit status.

    User errors (bad values, missing or existing files, unusable outputs) print one line and
    return 2; other failures of the operating system (permissions, a full disk, a checkpoint
    another process is writing) print one line and return 1. Neither prints a traceback.
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        parser.print_help()
        return 2
    if extra:  # the subcommand's usage, not the top-level one
        _subparser(parser, args.command).error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.run(args) or 0)
    except (CliError, ValueError, FileNotFoundError, FileExistsError, IsADirectoryError) as e:
        print(f"circuits {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`circuits train --json | head`): not our error to report.
        # Point stdout at devnull so the interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except (OSError, MemoryError) as e:  # PermissionError, a full disk, CheckpointBusy...
        print(f"circuits {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"circuits {args.command}: interrupted", file=sys.stderr)
        return 130


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        text = f"{e.filename}: {e.strerror}"  # "[Errno 13] ..." says less than this
    else:
        text = str(e) or type(e).__name__
    return " ".join(text.split())


if __name__ == "__main__":
    # `python -m circuits.cli` runs this file as __main__: use the importable module's main,
    # so that the commands' `from circuits.cli import CliError` is the class caught there.
    from circuits.cli import main as _main

    sys.exit(_main())
