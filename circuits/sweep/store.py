"""A sweep's results on disk: one JSON line per finished run, appended atomically.

Layout of a sweep directory::

    .circuits-sweep     the marker: this directory is a circuits sweep (see below)
    spec.json           the spec the sweep was started with
    results.jsonl       one row per finished run (ok or failed), in the order runs ended
    results.jsonl.lock  taken (flock) by every append
    histories/ID.json   each run's evaluation history and loss curve, written before its row
    checkpoints/ID/     each run's trained model, when the spec asks for checkpoints

A row is written with one ``write()`` of the whole line, then flushed and fsynced, under the
lock: a reader sees whole rows, and a kill can at worst leave a torn last line with no newline.
:func:`read_rows` ignores such a line and :meth:`ResultsStore.append` cuts it off before
writing, so the run it belonged to counts as not done and ``--resume`` runs it again. A row's
history file is in place (renamed into place, fsynced) before the row is written, so a row never
points at a missing history.

Only our own directories are written: a new one, an empty one, or one holding the marker (or,
from before the marker, only the names above with a readable spec). A directory of other files
is refused before anything is written, and so is any of the names above that is a symbolic link:
nothing is ever written through a link (``O_NOFOLLOW``, and :func:`circuits.files.write_file`'s
rename replaces a link rather than following it).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from circuits.files import NOFOLLOW, append_synced, check_not_link, own_dir, write_file

MARKER = ".circuits-sweep"
MARKER_FORMAT = "circuits-sweep"
RESULTS = "results.jsonl"
LOCK = RESULTS + ".lock"
SPEC = "spec.json"
HISTORIES = "histories"
CHECKPOINTS = "checkpoints"
OUR_NAMES = (MARKER, RESULTS, LOCK, SPEC, HISTORIES, CHECKPOINTS)
# Row fields that differ between two runs of the same settings: left out of comparisons.
TIMING_FIELDS = ("seconds",)


def read_rows(path: str | Path) -> tuple[list[dict[str, Any]], bool]:
    """The complete rows of a results file, and whether a torn last line was ignored.

    Raises:
        ValueError: A line other than the last is not a JSON object (the file was edited or
            damaged by something other than a killed writer).
    """
    path = Path(path)
    if not path.exists():
        return [], False
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: line {number} is not valid JSON ({e})") from e
        if not isinstance(row, dict) or "run_id" not in row:
            raise ValueError(f"{path}: line {number} is not a result row (no run_id)")
        rows.append(row)
    return rows, bool(tail)


def canonical(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with timings removed, sorted by run id: equal for two sweeps of the same runs.

    Removes every ``seconds`` field at any depth (a run's wall time, when each target
    formed in seconds) and nothing else, so the steps, scores, heads and errors must match.
    """

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in TIMING_FIELDS}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return sorted((strip(r) for r in rows), key=lambda r: r["run_id"])


def write_json_atomic(path: Path, data: Any) -> None:
    """Writes ``data`` as JSON to ``path`` atomically (:func:`circuits.files.write_file`)."""
    write_file(path, json.dumps(data, separators=(",", ":"), allow_nan=False).encode())


def is_sweep_dir(path: str | Path) -> bool:
    """Whether ``path`` is a sweep directory we wrote: it holds our marker, or (a sweep from
    before the marker) nothing but our names and a spec.json that reads as a spec."""
    path = Path(path)
    if not path.is_dir():  # is_dir follows a link: a linked --out directory is the user's choice
        return False
    try:
        marker = json.loads((path / MARKER).read_text(encoding="utf-8"))
        return isinstance(marker, dict) and marker.get("format") == MARKER_FORMAT
    except (OSError, ValueError):
        pass
    try:
        names = {p.name for p in path.iterdir()}
        spec = json.loads((path / SPEC).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    legacy = names <= set(OUR_NAMES) and RESULTS in names
    return legacy and isinstance(spec, dict) and {"name", "preset", "seeds"} <= set(spec)


class ResultsStore:
    """The results of one sweep directory (see the module docstring).

    Args:
        root: The sweep directory (created if missing).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise NotADirectoryError(f"{self.root} exists and is not a directory")
        from circuits.files import checkpoint_around

        checkpoint = checkpoint_around(self.root.absolute())
        if checkpoint is not None:
            raise ValueError(
                f"{self.root} is inside the checkpoint {checkpoint}: a sweep writes its results "
                "elsewhere (a checkpoint directory holds one model)"
            )
        self.results = self.root / RESULTS
        self.histories = self.root / HISTORIES

    def check(self, resume: bool) -> None:
        """Raises unless a sweep may write here; writes nothing (call it before any work).

        Raises:
            FileExistsError: The directory holds other files (not a sweep of ours), results
                without ``resume``, or one of our names is a symbolic link.
            NotADirectoryError: The path is a file.
        """
        root = self.root
        if root.exists() and not root.is_dir():
            raise NotADirectoryError(f"{root} exists and is not a directory")
        for name in OUR_NAMES:
            check_not_link(root / name)
        if root.is_dir() and any(root.iterdir()) and not is_sweep_dir(root):
            raise FileExistsError(
                f"{root} holds files that are not a circuits sweep (no {MARKER} marker); "
                "not writing into it: choose a new or empty --out"
            )
        has_results = self.results.exists() and self.results.stat().st_size > 0
        if has_results and not resume:
            raise FileExistsError(
                f"{root} already holds sweep results; pass --resume to continue that "
                "sweep, or choose another --out"
            )

    def start(self, spec: dict[str, Any], resume: bool) -> None:
        """Prepares the directory for a sweep of ``spec`` (after :meth:`check`).

        A directory that already holds results is only continued with ``resume``; a fresh
        start there raises FileExistsError rather than mixing two sweeps' rows.
        """
        self.check(resume)
        own_dir(self.root)
        write_json_atomic(self.root / MARKER, {"format": MARKER_FORMAT, "format_version": 1})
        own_dir(self.histories)
        write_json_atomic(self.root / SPEC, spec)

    def rows(self) -> list[dict[str, Any]]:
        """Every complete row (a torn last line is ignored)."""
        return read_rows(self.results)[0]

    def done(self) -> set[str]:
        """Ids of the runs with a row: finished, ok or failed."""
        return {r["run_id"] for r in self.rows()}

    @contextmanager
    def _locked(self) -> Any:
        own_dir(self.root)
        try:
            fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT | NOFOLLOW, 0o644)
        except OSError:
            check_not_link(self.root / LOCK)  # the one-line reason, if it is a link
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def append(self, row: dict[str, Any], history: dict[str, Any] | None = None) -> None:
        """Writes a run's history (if given) and then its row, each atomically."""
        if "run_id" not in row:
            raise ValueError("a result row needs a run_id")
        # Insertion order kept: the axes stay in the order of the spec (the report reads it).
        line = json.dumps(row, separators=(",", ":"), allow_nan=False) + "\n"
        if history is not None:
            own_dir(self.histories)
            write_json_atomic(self.histories / f"{row['run_id']}.json", history)
        with self._locked():
            append_synced(self.results, line.encode(), before=_cut_torn_tail)

    def history(self, run_id: str) -> dict[str, Any]:
        """The stored history of a run."""
        path = self.histories / f"{run_id}.json"
        if not path.is_file():
            raise FileNotFoundError(f"no history for run {run_id} in {self.histories}")
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return data


def _cut_torn_tail(fd: int) -> None:
    """Truncates a last line that has no newline (left by a writer killed mid-line)."""
    size = os.lseek(fd, 0, os.SEEK_END)
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    # Read backwards to the last newline; rows are a few kB.
    pos, chunk = size, 4096
    while pos > 0:
        start = max(0, pos - chunk)
        block = os.pread(fd, pos - start, start)
        cut = block.rfind(b"\n")
        if cut >= 0:
            os.ftruncate(fd, start + cut + 1)
            return
        pos = start
    os.ftruncate(fd, 0)
