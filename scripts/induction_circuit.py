"""Prints the induction-circuit numbers the README quotes, for the default model (seed 0).

Usage: ``.venv/bin/python scripts/induction_circuit.py [--seed N]``.
"""

from __future__ import annotations

import argparse

from circuits.analysis import (
    ablation_effects,
    all_composition_scores,
    circuit_stats,
    find_heads,
    head_scores,
    masked_loss,
)
from circuits.presets import build
from circuits.training import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    seed = parser.parse_args().seed
    model, task, cfg = build("induction", seed=seed, train={"progress": False})
    result = train(model, task, cfg)
    probe = task.probe(64)
    scores = head_scores(model, probe)
    print(f"formed at step {result.solved_at}")
    for kind in ("previous_token", "induction"):
        heads = find_heads(model, kind, scores=scores)
        print(f"{kind} scores:\n{scores[kind]}\n  heads >= 0.4: {heads}")
    comp = all_composition_scores(model)
    print(f"random baseline {comp.baseline:.3f} ± {comp.baseline_std:.3f}")
    for mode in ("Q", "K", "V"):
        print(f"{mode}-composition, layer-0 heads (rows) into layer-1 heads (columns):")
        print(getattr(comp, mode.lower())[0, :, 1, :])
    print(f"OV copying scores:\n{circuit_stats(model).ov_copying}")
    metric = masked_loss(probe.targets, probe.mask)
    effects = ablation_effects(model, probe.tokens, metric)
    print(f"loss change when zero-ablating each head:\n{effects}")
    frozen = ablation_effects(model, probe.tokens, metric, freeze_patterns=True)
    print(f"... with attention patterns frozen:\n{frozen}")


if __name__ == "__main__":
    main()
