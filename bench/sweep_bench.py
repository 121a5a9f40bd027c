"""Sweep throughput: runs per minute on the process pool (2 workers) vs one process.

    .venv/bin/python bench/sweep_bench.py [--seeds 8] [--rounds 1]

Both sides run the same sweep (``--seeds`` seeds of the default preset, ``circuits train``'s
model, task and targets), each from a fresh directory, alternating pool and serial per round.
Wall time includes everything a user waits for: the pool's worker start-up (spawn, importing
torch and circuits) and every run to its targets. Writes ``bench/sweep_results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", default=str(HERE / "sweep_results.json"))
    args = parser.parse_args()

    import torch

    from circuits.sweep import ResultsStore, SweepSpec, canonical, run_sweep

    spec = SweepSpec.from_dict({"name": "bench", "preset": "induction", "seeds": args.seeds})
    load_before = os.getloadavg()
    sides: dict[str, list[dict]] = {"process pool, 2 workers": [], "one process": []}
    rows: dict[str, list] = {}
    tmp = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    try:
        for round_ in range(args.rounds):
            order = [("process pool, 2 workers", 2), ("one process", 0)]
            for name, workers in order if round_ % 2 == 0 else order[::-1]:
                out = tmp / f"{workers}-{round_}"
                start = time.perf_counter()
                summary = run_sweep(spec, out, workers=workers, quiet=True)
                wall = time.perf_counter() - start
                runs = ResultsStore(out).rows()
                sides[name].append(
                    {
                        "wall_s": round(wall, 2),
                        "runs": summary.ok + summary.failed,
                        "runs_per_min": round(60 * len(runs) / wall, 2),
                        "run_seconds_sum": round(sum(r["seconds"] for r in runs), 2),
                        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
                    }
                )
                rows[name] = canonical(runs)
                print(name, sides[name][-1], flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    pool, serial = (statistics.median(r["runs_per_min"] for r in sides[k]) for k in sides)
    result = {
        "what": f"{args.seeds} seeds of the default preset (runs to their targets), "
        f"{args.rounds} round(s), pool first in even rounds, one process first in odd ones",
        "identical_results": rows["process pool, 2 workers"] == rows["one process"],
        "runs_per_min": {"process pool, 2 workers": pool, "one process": serial},
        "speedup": round(pool / serial, 2),
        "sides": sides,
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "load_avg_before": [round(x, 2) for x in load_before],
        },
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("runs_per_min", "speedup", "identical_results")}))


if __name__ == "__main__":
    main()
