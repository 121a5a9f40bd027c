"""Torch thread count for discovery, as for training: 1 by default, restored afterwards.

At these sizes one thread is usually fastest, and on a busy machine several threads can be many
times slower (bench/RESULTS.md); ``threads=None`` keeps torch's setting.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from circuits.validation import check_int

DEFAULT_THREADS = 1


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Sets torch's intra-op threads to ``threads`` inside the block (None: unchanged)."""
    if threads is None:
        yield
        return
    check_int(threads, "threads", 1)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
