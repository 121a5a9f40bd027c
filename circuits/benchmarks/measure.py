"""Measurement: interleaved timings, medians and ratios, peak memory, the machine."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch


def interleaved(
    fns: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds per call of each function, alternating A B, B A, ... after ``warmup`` calls each."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return times


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def comparison(ours: Sequence[float], peer: Sequence[float], unit: str, better: str) -> dict:
    o, p = summary(ours), summary(peer)
    return {
        "unit": unit,
        "better": better,
        "ours": o,
        "peer": p,
        "ratio": o["median"] / p["median"],
    }


def peak_memory_mb(fn: Callable[[], Any]) -> float | None:
    """Peak bytes of tensors alive during ``fn()`` above those alive before, in MiB.

    Read from the profiler's memory timeline (a private torch API, so None if it is missing).
    """
    try:
        from torch.profiler import ProfilerActivity, profile
        from torch.profiler._memory_profiler import Action, MemoryProfileTimeline
    except ImportError:
        return None
    with profile(
        activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True
    ) as prof:
        result = fn()
    del result
    live = peak = 0
    for _, action, _, size in MemoryProfileTimeline(prof._memory_profile()).timeline:
        if action == Action.CREATE:
            live += size
        elif action == Action.DESTROY:
            live -= size
        peak = max(peak, live)
    return peak / 2**20


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    cpu = platform.processor() or platform.machine()
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    cpu = info.get("model name", cpu)
    if "cpu family" in info:
        # Machines sold under one name differ several-fold in speed ("AMD EPYC" of family 23
        # and 25): the family/model and a GEMM calibration tell two tables apart.
        cpu += f" (family {info['cpu family']}, model {info.get('model', '?')})"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "cores": cores,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformer_lens": version("transformer-lens"),
        "load_average": [round(x, 2) for x in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gemm_gflops": gemm_gflops(),
    }


def gemm_gflops() -> float:
    """Single-thread float32 GEMM throughput at the training case's largest matmul shape."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.randn(4096, 64), torch.randn(64, 192)
        for _ in range(5):
            a @ b
        n, start = 50, time.perf_counter()
        for _ in range(n):
            a @ b
        return round(2 * 4096 * 64 * 192 * n / (time.perf_counter() - start) / 1e9, 1)
    finally:
        torch.set_num_threads(threads)
