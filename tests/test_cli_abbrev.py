"""The console script's parsing (issue 20): no abbreviated options, and a report written without
``-o`` says where it went."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from circuits.cli import build_parser, main

DATA = Path(__file__).resolve().parent.parent / "data"


def test_abbreviated_long_options_are_refused(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:  # argparse's usage error, not --steps 10
        main(["train", "--step", "10"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --step 10" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["sweep", "spec.yaml", "--work", "1"])
    assert "unrecognized arguments: --work" in capsys.readouterr().err


def test_every_parser_and_subparser_refuses_abbreviations() -> None:
    parser = build_parser()
    assert parser.allow_abbrev is False
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    commands = subparsers[0].choices
    assert {"train", "report", "sweep", "sweep-report"} <= set(commands)
    assert all(p.allow_abbrev is False for p in commands.values())


def test_report_without_output_says_where_it_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(DATA / "shift_1l")]) == 0
    out = capsys.readouterr().out.strip()
    written = tmp_path / "report.html"
    assert written.is_file()
    assert out.startswith(f"wrote {written} (") and "no -o given" in out and "\n" not in out
    assert main(["report", str(DATA / "shift_1l"), "-o", "named.html"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"wrote {tmp_path / 'named.html'} (") and "no -o" not in out
