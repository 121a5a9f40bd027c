"""What recording the previous-token split (circuits.analysis.split) adds to a sweep run of the
default preset, and the split itself per seed.

    .venv/bin/python scripts/split_cost.py [--seeds 8] [--repeats 5] [--batched]

For each seed: trains the default preset (one thread, as a sweep worker does), then times
``record_of`` with the run's probe (what a sweep row costs now) and the split alone (median of
``--repeats``). Prints one line per seed (training seconds, split seconds, its share of the
run, the split record) and the medians. ``--batched`` trains the seeds as one stacked group
(``circuits sweep --batch-seeds``), each run's training time being the group's over its size.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from circuits.analysis.split import previous_token_split
from circuits.presets import build
from circuits.sweep.runner import circuit_of
from circuits.training import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batched", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = [build("induction", seed, train={"progress": False}) for seed in range(args.seeds)]
    if args.batched:
        from circuits.training.batched import train_batched

        models, tasks, cfgs = zip(*runs, strict=True)
        start = time.perf_counter()
        results = train_batched(list(models), list(tasks), list(cfgs))
        each = (time.perf_counter() - start) / len(runs)
    trains, splits = [], []
    for seed, (model, task, cfg) in enumerate(runs):
        if args.batched:
            result, trained = results[seed], each
        else:
            start = time.perf_counter()
            result = train(model, task, cfg)
            trained = time.perf_counter() - start
        probe = task.probe(cfg.probe_size)
        circuit = circuit_of(model, result.final, probe)
        record = circuit["previous_token_split"]
        top, induction = record["top"], circuit["induction_heads"][0]["head"]
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            previous_token_split(model, probe, top, induction)
            times.append(time.perf_counter() - start)
        split = statistics.median(times)
        trains.append(trained)
        splits.append(split)
        print(
            f"seed {seed}: trained {result.steps} steps in {trained:.3f} s; split {split:.4f} s "
            f"({split / trained:.1%} of training); top {top} share {record['share']} "
            f"split {record['split']} (a {record['accuracy']}, top ablated "
            f"{record['top_ablated']}, all ablated {record['all_ablated']})"
        )
    t, s = statistics.median(trains), statistics.median(splits)
    print(f"median: training {t:.3f} s, split {s:.4f} s per run (+{s / t:.1%})")


if __name__ == "__main__":
    main()
