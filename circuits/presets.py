"""Default configurations: what ``circuits train`` runs, tuned for induction heads in seconds.

Why these defaults (2 CPU cores, no GPU):
- 2 layers, attention-only, no LayerNorm: the smallest model where induction can form (it needs
  K-composition between a layer-0 previous-token head and a layer-1 head).
- d_model 32, 2 heads of 16, vocabulary 32, sequences of 48: at this size a step costs a few
  milliseconds, and the circuit is the same as in larger models.
- Random period in [4, 24] per sequence, first period drawn without replacement: no positional
  head can solve it, and every repeat is unambiguous.
- AdamW at lr 2e-2 (20-step warm-up, gradients clipped at 1), batch 32: induction heads form
  in 200-275 steps, median 200 (20 of 20 seeds, after the loss mask dropped the unpredictable
  first repeat): about a second or less on one core of a fast machine, a few seconds on a slow
  one (README, Speed). lr 1e-2 needs about twice the
  steps and 3e-3 several times more; 3e-2 is faster still but failed a seed once the model was
  widened to d_model 64, and 5e-2 fails most seeds. Batch 16 is noisier and no faster; batch 64
  needs fewer steps but more time.
- The probe is evaluated every 25 steps, so training stops soon after the heads form (an
  evaluation costs about two training steps).
- Sequences of 32 would halve the time again, but the held-out probes (24 tokens twice) need 48.

A registered task without a preset of its own (``circuits train --task NAME``) gets the
induction preset's model, sized to the task's vocabulary and sequence length, and a plain
training run (:data:`GENERIC_TRAIN`: no early stop, since its targets are unknown here).
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "induction": {
        "model": dict(
            n_layers=2,
            d_model=32,
            n_heads=2,
            n_ctx=48,
            d_vocab=32,
            attn_only=True,
            normalization_type=None,
        ),
        "task": dict(name="induction", d_vocab=32, seq_len=48, min_period=4, max_period=24),
        "train": dict(
            steps=3000,
            batch_size=32,
            lr=2e-2,
            eval_every=25,
            target_accuracy=0.9,
            targets={"induction": 0.4, "previous_token": 0.4},
        ),
    },
    "shift": {
        "model": dict(
            n_layers=1,
            d_model=32,
            n_heads=2,
            n_ctx=32,
            d_vocab=32,
            attn_only=True,
            normalization_type=None,
        ),
        "task": dict(name="shift", d_vocab=32, seq_len=32),
        "train": dict(
            steps=2000,
            batch_size=32,
            lr=1e-2,
            eval_every=50,
            target_accuracy=0.95,
            targets={"previous_token": 0.9},
        ),
    },
    # Grokking (Nanda et al. 2023), sized by measurement to grok on 2 CPU cores in minutes:
    # the paper's 1-layer ReLU MLP model without LayerNorm at half its width (d_model 64,
    # d_mlp 256), full batch, AdamW with strong weight decay, a 10-step warm-up. p = 113 as in
    # the paper; a larger train fraction (0.35) and lr * weight decay (3e-3 * 2) than its 0.3
    # and 1e-3 * 1 shorten the delay between memorising and generalising; it is still there:
    # training accuracy reaches 100% about halfway to 99% held-out accuracy (bench/RESULTS.md,
    # "Tasks"; 0.4 generalises together with memorising, 0.3 takes too long on 2 cores).
    # The probe is the whole held-out test set; training stops at 99% held-out accuracy.
    "modular_addition": {
        "model": dict(
            n_layers=1,
            d_model=64,
            n_heads=4,
            d_mlp=256,
            act_fn="relu",
            n_ctx=3,
            d_vocab=114,
            normalization_type=None,
        ),
        "task": dict(name="modular_addition", p=113, train_fraction=0.35, full_batch=True),
        "train": dict(
            steps=3000,
            batch_size=1,
            lr=3e-3,
            weight_decay=2.0,
            betas=(0.9, 0.98),
            warmup_steps=10,
            grad_clip=None,
            eval_every=25,
            probe_size=113 * 113,
            target_accuracy=0.99,
            scores=(),
        ),
    },
    # Statistical induction heads (Edelman et al. 2024): 2 attention-only layers with
    # LayerNorm, one head each, k = 3 states, sequences of 64, AdamW betas (0.9, 0.95) and
    # weight decay 0.1 as in the paper. Uniform -> unigram -> bigram within a few hundred steps.
    "markov_icl": {
        "model": dict(
            n_layers=2,
            d_model=32,
            n_heads=1,
            n_ctx=64,
            d_vocab=3,
            attn_only=True,
            normalization_type="LN",
        ),
        "task": dict(name="markov_icl", k=3, seq_len=64),
        "train": dict(
            steps=600,
            batch_size=64,
            lr=3e-3,
            weight_decay=0.1,
            betas=(0.9, 0.95),
            warmup_steps=20,
            eval_every=50,
            probe_size=64,
            scores=("previous_token", "statistical_induction"),
        ),
    },
}


GENERIC_TRAIN: dict[str, Any] = dict(steps=2000, batch_size=32, lr=1e-2, eval_every=50)


def preset(name: str) -> dict[str, dict[str, Any]]:
    """A deep copy of preset ``name`` ("induction", "shift", or any registered task).

    A registered task without a preset gets the default task's model with the task's
    ``d_vocab`` and ``seq_len`` (as ``n_ctx``), its default fields, and :data:`GENERIC_TRAIN`.
    """
    from circuits.tasks import make_task, task_names

    if name in PRESETS:
        return {part: dict(values) for part, values in PRESETS[name].items()}
    if name not in task_names():
        raise ValueError(
            f"unknown preset {name!r}; choose one of {', '.join(sorted({*PRESETS, *task_names()}))}"
        )
    task = make_task(name)
    model = dict(PRESETS["induction"]["model"], n_ctx=task.seq_len, d_vocab=task.d_vocab)
    return {"model": model, "task": task.to_dict(), "train": dict(GENERIC_TRAIN)}


def run_config(name: str = "induction", seed: int = 0, **overrides: dict[str, Any]) -> Any:
    """The :class:`~circuits.run.RunConfig` of a preset, seeded (nothing allocated).

    Args:
        name: Preset name, or the name of a registered task.
        seed: Seed of the model init, the task's probe and the data stream.
        overrides: Per-part field overrides, e.g. ``model={"n_layers": 1}``.
    """
    from circuits.run import PARTS, RunConfig

    parts = preset(name)
    for part, values in overrides.items():
        if part not in PARTS:
            raise ValueError(f"unknown preset part {part!r}; choose model, task or train")
        parts[part].update(values)
    return RunConfig.from_dict(parts, seed=seed)


def build(
    name: str = "induction", seed: int = 0, **overrides: dict[str, Any]
) -> tuple[Any, Any, Any]:
    """Builds ``(model, task, train_config)`` of a preset, seeded: ``run_config(...).build()``.

    Args:
        name: Preset name, or the name of a registered task.
        seed: Seed of the model init, the task's probe and the data stream.
        overrides: Per-part field overrides, e.g. ``model={"n_layers": 1}``.
    """
    return run_config(name, seed, **overrides).build()
