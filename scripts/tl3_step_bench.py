"""One training step in train mode (the fused fast path, as `circuits train` runs it) against the
same step in eval mode (the hooked path, which ``model(x)`` runs for analysis so that it equals
``run_with_cache(x)[0]`` bit for bit). Re-run: ``.venv/bin/python scripts/tl3_step_bench.py``.

The shape and step are `circuits bench`'s training case (REFERENCE model, batch 64 x 64, AdamW),
on one thread; the best of three rounds of ten steps.
"""

from __future__ import annotations

import time

import torch

from circuits import HookedTransformer, ModelConfig
from circuits.benchmarks.cases import REFERENCE, make_step
from circuits.tasks import InductionTask


def main() -> None:
    torch.set_num_threads(1)
    task = InductionTask(d_vocab=64, seq_len=64, min_period=4, max_period=32)
    gen = torch.Generator().manual_seed(0)
    batches = [task.sample(64, gen) for _ in range(10)]
    for label in ("train mode (fast path)", "eval mode (hooked path)", "train mode (fast path)"):
        model = HookedTransformer(ModelConfig(**REFERENCE))
        step = make_step(model)  # puts the model in train mode, as circuits.train does
        if "eval" in label:
            model.eval()
        step(batches[0])
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for batch in batches:
                step(batch)
            best = min(best, (time.perf_counter() - start) / len(batches))
        print(f"{label}: {best * 1e3:.1f} ms/step")


if __name__ == "__main__":
    main()
