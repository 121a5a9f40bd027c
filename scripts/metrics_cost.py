"""Cost of the task metrics that training records (circuits.training.metrics) against an
evaluation and a training step, for the markov_icl and modular_addition presets.

    .venv/bin/python scripts/metrics_cost.py [--threads 2] [--repeats 7]

Prints median seconds of: one training step (forward + backward + AdamW), one evaluation
(loss, accuracy, head scores on the probe) and the task's metrics, and the metrics' share of
the training time between two recordings (eval_every x metrics_every steps).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from circuits.analysis.head_scores import evaluate
from circuits.losses import cross_entropy
from circuits.presets import build
from circuits.training.loop import make_optimizer
from circuits.training.metrics import METRICS_EVERY, evaluation_metrics


def _median(fn, repeats: int) -> float:
    fn()  # warm-up (caches, allocator)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(name: str, repeats: int) -> str:
    """One line: the preset's step, evaluation and metrics medians and the metrics' share."""
    model, task, cfg = build(name, seed=0)
    probe = task.probe(cfg.probe_size)
    optimizer = make_optimizer(model, cfg)
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        model.train()
        batch = task.sample(cfg.batch_size, generator)
        loss = cross_entropy(model(batch.tokens), batch.tokens, batch.targets, batch.mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def evaluation() -> None:
        model.eval()
        evaluate(model, probe, cfg.recorded_scores(probe), threads=None)

    def metrics() -> None:
        model.eval()
        with torch.no_grad():
            evaluation_metrics(task, model, probe)

    s, e, m = (_median(f, repeats) for f in (step, evaluation, metrics))
    every = METRICS_EVERY[name]
    share = m / (cfg.eval_every * every * s + every * e + m)
    return (
        f"{name}: step {s:.3f} s, evaluation {e:.3f} s, metrics {m:.3f} s "
        f"(every {every} evaluation(s) of every {cfg.eval_every} steps: "
        f"{100 * share:.1f}% of the run)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in ("markov_icl", "modular_addition"):
        print(measure(name, args.repeats))


if __name__ == "__main__":
    main()
