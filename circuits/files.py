"""Safe file output: atomic writes, crash recovery, one writer per checkpoint, checked outputs.

Replacing a directory ``DIR`` (a checkpoint) takes these steps, each one durable (fsync):

1. the new contents go into ``.DIR.tmp-PID``;
2. a journal ``.DIR.replacing`` names that temporary directory;
3. ``DIR`` is renamed to ``.DIR.previous`` and the temporary directory to ``DIR``;
4. ``.DIR.previous`` is deleted, then the journal.

A process killed anywhere leaves the journal behind, and the next reader or writer finishes the
job: while the temporary directory exists the replacement never happened (the old checkpoint
is put back if it was moved aside); once it is gone the new checkpoint is in place and only the
backup is left to delete. A backup is never restored without its journal and its temporary
directory, so a checkpoint the user deleted stays deleted.

Writers hold an exclusive lock (``flock`` on ``.DIR.lock`` next to the directory; the kernel
releases it when the process dies): a second writer is refused with :class:`CheckpointBusy`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; writers are not serialised there
    fcntl = None  # type: ignore[assignment]

FORMAT = "circuits-checkpoint"
METADATA_FILE = "metadata.json"


class CheckpointBusy(BlockingIOError):
    """Another process is writing this checkpoint (it holds the writer lock)."""


# --- names next to a directory ---
def backup_of(path: Path) -> Path:
    return path.parent / f".{path.name}.previous"


def journal_of(path: Path) -> Path:
    return path.parent / f".{path.name}.replacing"


def lock_file_of(path: Path) -> Path:
    return path.parent / f".{path.name}.lock"


def _tmp_of(path: Path) -> Path:
    return path.parent / f".{path.name}.tmp-{os.getpid()}"


def is_checkpoint_dir(path: Path) -> bool:
    try:
        return json.loads((path / METADATA_FILE).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def checkpoint_around(path: Path) -> Path | None:
    """The checkpoint directory that ``path`` is, or lies inside (None if there is none)."""
    for candidate in (path, *path.parents):
        if candidate.is_dir() and is_checkpoint_dir(candidate):
            return candidate
    return None


# --- the writer lock ---
_held: dict[str, list[int]] = {}  # lock file -> [fd, depth]: re-entrant within a process
_held_guard = threading.Lock()


def _acquire(lock: Path, target: Path) -> int:
    assert fcntl is not None
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise CheckpointBusy(
                f"{target} is being written by another process (pid {holder}); wait for it to "
                "finish or stop it"
            ) from None
        # The previous holder unlinks the file on release: if it did so after we opened it,
        # our lock is on a dead inode and the next writer could lock a new file. Retry.
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)


@contextlib.contextmanager
def writer_lock(path: str | Path) -> Iterator[None]:
    """Holds the exclusive writer lock of the checkpoint at ``path`` (its parent must exist).

    Re-entrant within a process. Raises :class:`CheckpointBusy` at once if another process
    holds it.
    """
    path = Path(path)
    if fcntl is None:
        yield
        return
    lock = lock_file_of(path.absolute())
    key = str(lock)
    with _held_guard:
        entry = _held.get(key)
        if entry is not None:
            entry[1] += 1
        else:
            _held[key] = [_acquire(lock, path), 1]
    try:
        yield
    finally:
        with _held_guard:
            entry = _held[key]
            entry[1] -= 1
            if entry[1] == 0:
                del _held[key]
                with contextlib.suppress(OSError):
                    os.unlink(lock)  # while still locked: see _acquire
                os.close(entry[0])


def holds_lock(path: str | Path) -> bool:
    return str(lock_file_of(Path(path).absolute())) in _held


# --- recovery ---
def _finish(path: Path) -> None:
    """Completes or undoes the replacement recorded in the journal (the lock is held)."""
    journal = journal_of(path)
    try:
        tmp = path.parent / json.loads(journal.read_text())["tmp"]
    except (OSError, ValueError, KeyError, TypeError):
        tmp = None  # unreadable: the journal was being written, nothing was moved yet
    backup = backup_of(path)
    if tmp is not None and tmp.is_dir():
        # The new checkpoint never reached its place: keep (or put back) the old one.
        if not path.exists() and backup.is_dir():
            os.rename(backup, path)
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        # The new checkpoint is in place (or was deleted since): the backup is garbage.
        shutil.rmtree(backup, ignore_errors=True)
    _fsync_dir(path.parent)
    journal.unlink(missing_ok=True)


def recover(path: str | Path) -> None:
    """Finishes a replacement of ``path`` that a killed writer left half done, if any.

    Never brings back a checkpoint the user removed: without a journal nothing is touched.
    """
    path = Path(path)
    journal = journal_of(path)
    stale = list(path.parent.glob(f".{path.name}.tmp-*")) if path.parent.is_dir() else []
    if not (journal.exists() or stale):
        return
    try:
        with writer_lock(path):
            if journal.exists():
                _finish(path)
            for tmp in path.parent.glob(f".{path.name}.tmp-*"):  # a writer killed while writing
                shutil.rmtree(tmp, ignore_errors=True)
        return
    except CheckpointBusy:
        pass
    except OSError:  # e.g. a read-only directory: read what is there
        return
    # A live writer is between its renames: that takes moments.
    deadline = time.monotonic() + 30
    while journal.exists() and not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


# --- atomic writes ---
def _fsync_dir(path: Path) -> None:
    if os.name == "nt":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Never follow a symbolic link where we create a file: a link planted at a name we write would
# send our bytes to a file elsewhere (0 where the platform has no O_NOFOLLOW).
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _write_synced(path: Path, data: bytes) -> None:
    """Creates ``path`` (which must not exist, not even as a link) holding ``data``, fsynced."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags, 0o644)
    with open(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def own_dir(path: str | Path) -> Path:
    """``path`` as a directory we may write in: created if missing, refused if it is a link.

    Raises:
        FileExistsError: ``path`` is a symbolic link (we never write through one) or a file.
    """
    path = Path(path)
    if not path.is_symlink() and not path.exists():
        with contextlib.suppress(FileExistsError):
            path.mkdir(parents=True)
    if path.is_symlink():
        raise FileExistsError(
            f"{path} is a symbolic link; circuits never writes through a link (remove it)"
        )
    if not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a directory; not writing into it")
    return path


def check_not_link(path: str | Path) -> Path:
    """Raises FileExistsError if ``path`` is a symbolic link (we never write through one)."""
    path = Path(path)
    if path.is_symlink():
        raise FileExistsError(
            f"{path} is a symbolic link; circuits never writes through a link (remove it)"
        )
    return path


def append_synced(
    path: str | Path, data: bytes, before: Callable[[int], None] | None = None
) -> None:
    """Appends ``data`` to the file at ``path`` in one write, fsynced; never through a link.

    ``before(fd)`` runs on the open file first (e.g. to cut a torn last line).

    Raises:
        FileExistsError: ``path`` is a symbolic link.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | NOFOLLOW, 0o644)
    except OSError as e:
        if path.is_symlink():
            raise FileExistsError(
                f"{path} is a symbolic link; circuits never writes through a link (remove it)"
            ) from None
        raise e
    try:
        if before is not None:
            before(fd)
        if os.write(fd, data) != len(data):
            raise OSError(f"short write to {path}")
        os.fsync(fd)
    finally:
        os.close(fd)


def check_writable(path: str | Path, overwrite: bool) -> None:
    """Raises unless a checkpoint directory may be written at ``path``, before any work.

    Only an existing checkpoint (or an empty directory) is ever replaced, and only with
    ``overwrite``: a directory of other files is never deleted, whatever ``overwrite`` says.

    Raises:
        FileExistsError: ``path`` exists (and ``overwrite`` is False, or it is not a checkpoint).
        NotADirectoryError, PermissionError: ``path`` cannot be created (a file on the way, a
            read-only or virtual file system, no permission).
        ValueError: ``path`` lies inside another checkpoint.
    """
    path = Path(path)
    check_names(path)
    recover(path)
    if path.exists() or path.is_symlink():
        if not path.is_dir() or not (is_checkpoint_dir(path) or not any(path.iterdir())):
            raise FileExistsError(
                f"{path} exists and is not a circuits checkpoint; not replacing it"
            )
        if not overwrite:
            raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    outer = checkpoint_around(path.parent)
    if outer is not None:
        raise ValueError(f"{path} would be inside the checkpoint {outer}; choose another place")
    check_creatable(path.parent)


def check_names(path: Path) -> None:
    """Raises ValueError if ``path`` or the hidden siblings we write next to it (``.NAME.tmp-PID``,
    ``.NAME.replacing``...) have a name component the file system cannot hold."""
    name_max = 255
    with contextlib.suppress(OSError, ValueError, AttributeError):
        name_max = os.pathconf("/", "PC_NAME_MAX")
    longest = f".{path.name}.tmp-{os.getpid()}-probe"
    for part in (*path.absolute().parts, longest):
        if len(part.encode(errors="surrogateescape")) > name_max:
            raise ValueError(
                f"file name too long: {part[:40]}... ({len(part)} characters; the file system "
                f"takes {name_max} bytes, including the suffix of our temporary files)"
            )


def check_creatable(folder: Path) -> None:
    """Raises unless ``folder`` exists as a writable directory or can be created as one."""
    existing = folder.absolute()
    while not (existing.exists() or existing.is_symlink()):
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"cannot create {folder}: {existing} is a file, not a directory")
    try:  # os.access says yes to root even on read-only or virtual file systems: try it
        os.rmdir(tempfile.mkdtemp(prefix=".circuits-probe-", dir=existing))
    except OSError as e:
        raise PermissionError(
            f"cannot write in {existing} ({e.strerror or e}); choose another place"
        ) from None


def write_files(path: str | Path, files: dict[str, bytes], overwrite: bool = False) -> Path:
    """Atomically makes ``path`` a directory holding exactly ``files`` (name -> contents).

    Holds the writer lock while writing (see :func:`writer_lock`).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False, or it exists and is not
            a checkpoint (never deleted, whatever ``overwrite`` says).
        CheckpointBusy: another process is writing ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with writer_lock(path):
        check_writable(path, overwrite)  # recovers first: no stale temporary directory is left
        tmp, journal, backup = _tmp_of(path), journal_of(path), backup_of(path)
        tmp.mkdir()
        try:
            for name, data in files.items():
                _write_synced(tmp / name, data)
            _fsync_dir(tmp)
            shutil.rmtree(backup, ignore_errors=True)
            _write_synced(journal, json.dumps({"tmp": tmp.name}).encode())
            _fsync_dir(path.parent)
            if path.exists():
                os.rename(path, backup)
            os.rename(tmp, path)
            _fsync_dir(path.parent)
        except BaseException:
            if journal.exists():
                _finish(path)  # puts the old checkpoint back, removes tmp
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _finish(path)  # deletes the backup, then the journal
    return path


def write_file(path: str | Path, data: bytes) -> Path:
    """Atomically writes one file (temporary sibling, fsync, rename): old or new, never half.

    Never writes through a symbolic link: the temporary file is created with ``O_NOFOLLOW`` and
    ``O_EXCL``, and the rename replaces a link at ``path`` instead of following it.
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    if tmp.is_symlink() or tmp.is_file():  # planted, or left by a killed writer of this pid
        tmp.unlink()
    try:
        _write_synced(tmp, data)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# --- single output files (reports) ---
def check_output_file(
    path: str | Path, force: bool, ours: Callable[[Path], bool], what: str = "file"
) -> Path:
    """Raises unless ``what`` may be written at ``path``; call before the work starts.

    Never inside a checkpoint directory (whatever ``force`` says); an existing file is replaced
    only if ``ours(path)`` recognises it as one we wrote, or with ``force``.

    Raises:
        IsADirectoryError, FileNotFoundError, PermissionError: not a writable file location.
        FileExistsError: an existing file that is not ours, without ``force``.
        ValueError: ``path`` is inside a checkpoint directory.
    """
    path = Path(path)
    check_names(path)
    outer = checkpoint_around(path.parent)
    if outer is not None:
        raise ValueError(f"{path} is inside the checkpoint {outer}; write the {what} elsewhere")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; give a file name such as report.html")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"directory {path.parent} does not exist")
    if path.exists() or path.is_symlink():
        if not path.is_file():
            raise FileExistsError(f"{path} exists and is not a regular file; not replacing it")
        if not force and not ours(path):
            raise FileExistsError(
                f"{path} exists and is not a circuits {what}; pass --force (force=True) to "
                "replace it"
            )
    try:
        fd, probe = tempfile.mkstemp(prefix=".circuits-probe-", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise PermissionError(f"cannot write in {path.parent} ({e.strerror or e})") from None
    return path


def starts_with_marker(path: Path, marker: bytes, size: int = 4096) -> bool:
    """Whether ``marker`` occurs in the first ``size`` bytes of the file at ``path``."""
    try:
        with open(path, "rb") as f:
            return marker in f.read(size)
    except OSError:
        return False
