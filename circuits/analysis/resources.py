"""What analysis may spend: torch threads, and the working-memory budget of chunked loops.

Threads: :func:`torch_threads` sets torch's intra-op threads for a block and restores them
afterwards; every heavy analysis function takes ``threads=`` (default :data:`DEFAULT_THREADS`,
the default of training: one thread is robust on a busy machine, where two threads on two busy
cores can be several times slower; None keeps torch's setting).

Memory: vocabulary-sized work (logits, rows of a ``d_vocab x d_vocab`` circuit) goes through
:func:`row_chunks`, which cuts ``n_rows`` rows of ``width`` float32 numbers into chunks of at
most :data:`CHUNK_BYTES` (64 MiB) each, so a loop's working set is a few chunks whatever the
model's size. ``chunk_bytes=`` on the functions overrides it (tests force tiny chunks to check
that chunked and unchunked results agree).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from circuits.validation import check_int

DEFAULT_THREADS: int | None = 1
CHUNK_BYTES = 64 * 2**20


def check_threads(threads: object) -> int | None:
    """``threads`` checked: a positive int or None."""
    if threads is None:
        return None
    return check_int(threads, "threads", 1)


@contextlib.contextmanager
def torch_threads(threads: int | None = DEFAULT_THREADS) -> Iterator[None]:
    """Runs the block with ``threads`` torch intra-op threads (None: unchanged), then restores."""
    threads = check_threads(threads)
    before = torch.get_num_threads()
    if threads is not None and threads != before:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def check_chunk_bytes(chunk_bytes: object) -> int:
    """``chunk_bytes`` checked: a positive int (bytes of one chunk's working set)."""
    return check_int(chunk_bytes, "chunk_bytes", 1)


def rows_per_chunk(width: int, chunk_bytes: int = CHUNK_BYTES, copies: int = 1) -> int:
    """How many rows of ``width`` float32 numbers fit ``chunk_bytes`` (``copies`` held at once)."""
    check_int(width, "width", 1)
    return max(1, check_chunk_bytes(chunk_bytes) // (4 * width * max(copies, 1)))


def row_chunks(
    n_rows: int, width: int, chunk_bytes: int = CHUNK_BYTES, copies: int = 1
) -> Iterator[slice]:
    """Slices covering ``range(n_rows)`` whose rows of ``width`` fit ``chunk_bytes``."""
    step = rows_per_chunk(width, chunk_bytes, copies)
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))
