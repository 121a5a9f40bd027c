"""Regenerates the small checkpoints in ``data/`` that the notebooks and the README load.

Usage: ``python scripts/make_data.py [--out data]`` (or ``make data``); a minute or two on a
2-core CPU. Each checkpoint records its task, training config, loss curve and evaluation
history in ``metadata.json``, so a report or a notebook can show how it was trained.

The build is reproducible: with the same code and package versions it writes the same bytes
(weights, config and metadata; ``tests/test_data_reproducible.py`` rebuilds one and compares).
Training is seeded; the numerics are pinned before torch loads (:data:`PINNED_ENV`: one
thread, MKL's reproducible code path and ATen's AVX2 kernels, so another CPU takes the same
arithmetic path); and the metadata has no time stamp.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

# Read by torch, MKL and oneDNN once, when they load: set before importing torch. MKL's
# COMPATIBLE path gives the same results on every x86 CPU (Intel or AMD) at some cost in
# speed; ATen and oneDNN would otherwise pick AVX-512 kernels where the CPU has them.
PINNED_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "MKL_CBWR": "COMPATIBLE",
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}

# name: (preset, overrides, why)
CHECKPOINTS: dict[str, tuple[str, dict[str, dict[str, Any]], str]] = {
    "induction_2l": ("induction", {}, "2-layer attention-only: previous-token + induction heads"),
    "induction_1l": (
        "induction",
        {
            "model": {"n_layers": 1},
            "train": {
                "steps": 400,
                "target_accuracy": None,
                "targets": {},
            },
        },
        "1-layer attention-only on the same task: no induction head can form",
    ),
    "shift_1l": ("shift", {}, "1-layer attention-only on shift-by-one: a previous-token head"),
    "induction_2l_mlp": (
        "induction",
        {
            "model": {"attn_only": False, "normalization_type": "LN", "d_mlp": 64},
            # lr 5e-3: at the attention-only preset's 2e-2 (or 1e-2) this model reaches high
            # accuracy without clean previous-token/induction attention patterns.
            "train": {
                "steps": 1500,
                "lr": 5e-3,
                "target_accuracy": None,
                "targets": {},
            },
        },
        "2-layer LayerNorm + MLP model on the induction task (for the logit and tuned lens)",
    ),
}


def pin_numerics() -> None:
    """Applies :data:`PINNED_ENV`; refuses if torch was imported before (too late for it)."""
    unpinned = {k: v for k, v in PINNED_ENV.items() if os.environ.get(k) != v}
    if unpinned and "torch" in sys.modules:
        raise RuntimeError(
            f"torch was imported before the numerics were pinned ({', '.join(unpinned)}): run "
            "scripts/make_data.py as a script, or set these variables before importing torch"
        )
    os.environ.update(PINNED_ENV)
    import torch

    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = False


def _without_wall_time(record: Any) -> dict[str, Any]:
    """An evaluation record as JSON data, less its wall time (different on every run)."""
    data = dict(record.to_dict() if hasattr(record, "to_dict") else record)
    data.pop("seconds", None)
    return data


def make(name: str, out: Path, seed: int = 0, quiet: bool = False) -> Path:
    from circuits.presets import build
    from circuits.training import train

    pin_numerics()
    preset, overrides, why = CHECKPOINTS[name]
    model, task, cfg = build(preset, seed=seed, **overrides)
    cfg = type(cfg).from_dict({**cfg.to_dict(), "progress": not quiet})
    result = train(model, task, cfg)
    train_config = {k: v for k, v in cfg.to_dict().items() if k != "progress"}
    path = model.save(
        out / name,
        overwrite=True,
        created=None,  # no time stamp: a rebuild is byte-identical
        description=why,
        task=task.to_dict(),
        train_config=train_config,
        solved_at=result.solved_at,
        step=result.steps,
        history=[_without_wall_time(record) for record in result.history],
        losses=[round(x, 4) for x in result.losses],
    )
    if not model.cfg.attn_only:
        # A tuned lens next to the checkpoint (saved after it: saving the model replaces the
        # directory); `circuits report` and notebook 4 pick it up.
        from circuits.analysis import TunedLens

        lens = TunedLens.for_model(model)
        lens.fit(model, task, steps=300, seed=seed, progress=not quiet)
        lens.save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data", help="output directory")
    parser.add_argument("--only", nargs="*", choices=sorted(CHECKPOINTS), help="subset")
    parser.add_argument("--quiet", "-q", action="store_true")
    args = parser.parse_args()
    pin_numerics()
    for name in args.only or CHECKPOINTS:
        start = time.perf_counter()
        path = make(name, Path(args.out), quiet=args.quiet)
        size = sum(f.stat().st_size for f in path.iterdir())
        print(f"{path}: {size / 1e3:.0f} kB in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
