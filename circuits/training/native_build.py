"""Building the attention kernel (``native_attention.c``) for this machine, and its cache.

:func:`build` compiles the C source with the system's C compiler (``$CC``, else ``cc``) for
this CPU (``-march=native``, dropped if the compiler refuses it) into the user cache
(``$CIRCUITS_CACHE``, else ``$XDG_CACHE_HOME/circuits``, else ``~/.cache/circuits``; a
``kernels`` folder), named by a hash of the source, the compiler, the flags and the CPU, or
finds it there. Builds land under a temporary name and are renamed, so processes building at
once each end with a whole file. We load code from this cache, so it is created private
(0700), each library is read-only to others, and a cached file that is a link, another user's
or writable by others is never used; nor is a cache under a plain file or inside a model
checkpoint. :mod:`circuits.training.native_attention` loads and checks what this builds.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from circuits.files import checkpoint_around, own_dir

__all__ = ["SOURCE", "build"]

SOURCE = Path(__file__).with_name("native_attention.c")
FLAGS = ("-O3", "-fno-math-errno", "-fPIC", "-shared")
TUNE = ("-march=native",)  # dropped if the compiler refuses it


def _cache_dir() -> Path:
    base = os.environ.get("CIRCUITS_CACHE")
    if base:
        return Path(base) / "kernels"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "circuits" / "kernels"


def _cpu() -> str:
    """What ``-march=native`` depends on: the CPU's model and flags (Linux) or its name."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    wanted = [ln for ln in lines if ln.startswith(("model name", "flags", "Features"))]
    return "\n".join(dict.fromkeys(wanted))


def _compile(cc: str, flags: tuple[str, ...], target: Path) -> str | None:
    """Builds the library at ``target`` (atomically: a temporary file renamed into place, so
    two processes building at once both end with a whole file); an error message or None."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".build-", suffix=".so")
    os.close(fd)
    try:
        done = subprocess.run(
            [cc, *flags, "-o", tmp, str(SOURCE)], capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            return (done.stderr.strip().splitlines() or ["failed"])[-1]
        os.chmod(tmp, 0o755)  # whatever the umask: nobody else may write code we load
        os.replace(tmp, target)
        return None
    except (OSError, subprocess.SubprocessError) as e:
        return str(e)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _untrusted(path: Path) -> str | None:
    """Why a file or folder of the cache must not be trusted (we load code from it), or None:
    a link, another user's, or writable by others. Windows: not checked."""
    if not hasattr(os, "getuid"):
        return None
    if path.is_symlink():
        return f"{path} is a symbolic link"
    st = path.stat()
    if st.st_uid != os.getuid():
        return f"{path} belongs to another user"
    if st.st_mode & 0o022:
        return f"{path} is writable by other users"
    return None


def _misplaced(folder: Path) -> str | None:
    """Why the kernel cache may not go in ``folder`` (checked before anything is created),
    or None: under a plain file, or inside a model checkpoint."""
    for above in (folder, *folder.parents):
        if above.exists() and not above.is_dir():
            return f"the kernel cache {folder} lies under {above}, which is not a folder"
    around = checkpoint_around(folder.parent)
    if around is not None:
        return f"the kernel cache {folder} would lie inside the checkpoint {around}"
    return None


def build() -> tuple[Path | None, str]:
    """``(path, how)``: the library built for this machine (or found in the cache), and a
    phrase saying which; ``(None, why)`` when there is no compiler, the build fails, or the
    cache may not be used (see the module doc)."""
    cc = os.environ.get("CC") or "cc"
    if shutil.which(cc) is None:
        return None, f"no C compiler ({cc!r} not found)"
    try:
        version = subprocess.run(
            [cc, "--version"], capture_output=True, text=True, timeout=30
        ).stdout
        folder = _cache_dir()
        misplaced = _misplaced(folder)
        if misplaced is not None:
            return None, misplaced
        if not folder.exists() and not folder.is_symlink():  # private whatever the umask
            folder.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                folder.mkdir(mode=0o700)
        folder = own_dir(folder)
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"cannot prepare the build ({e})"
    refused = _untrusted(folder)
    if refused is not None:
        return None, f"refusing the kernel cache: {refused}"
    source = SOURCE.read_bytes()
    error = "not built"
    for flags in (FLAGS + TUNE, FLAGS):
        key = hashlib.sha256(
            b"\0".join([source, version.encode(), " ".join(flags).encode(), _cpu().encode()])
        ).hexdigest()[:20]
        target = folder / f"attention-{key}.so"
        if target.is_symlink() or target.exists():
            refused = _untrusted(target)
            if refused is not None:
                return None, f"refusing the cached kernel: {refused}"
            return target, f"cached {target}"
        failed = _compile(cc, flags, target)
        if failed is None:
            return target, f"built {target}"
        error = f"{cc} failed: {failed}"
    return None, error
