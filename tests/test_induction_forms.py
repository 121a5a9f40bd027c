"""Induction heads really form, checked by mechanism, not by loss alone (the spine's acceptance).

Every model here is trained from scratch on the CPU with a fixed step budget (no early stop),
then evaluated on a held-out repeated-random-tokens probe.
"""

import pytest
import torch

from circuits.analysis.head_scores import evaluate, probe_accuracy
from circuits.presets import build
from circuits.tasks import repeated_tokens
from circuits.training import train

BUDGET = 1000  # steps; the default preset forms induction heads in ~200-300


def trained(seed, n_layers=2, task="induction", steps=BUDGET):
    model, task_obj, cfg = build(
        task,
        seed=seed,
        model={"n_layers": n_layers},
        train={
            "steps": steps,
            "progress": False,
            "target_accuracy": None,
            "targets": {},
        },
    )
    train(model, task_obj, cfg)
    return model


def held_out_probe(seed):
    # A different seed from the training probe: nothing here was seen during training.
    return repeated_tokens(64, 24, d_vocab=32, seed=10_000 + seed)


def zero_head_hook(head):
    def hook(z, hook):
        z[:, :, head] = 0.0
        return z

    return hook


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_layer_model_forms_an_induction_circuit(seed):
    model = trained(seed)
    probe = held_out_probe(seed)
    metrics = evaluate(model, probe)
    induction, previous = metrics["induction"], metrics["previous_token"]
    assert metrics["accuracy"] >= 0.9, metrics["accuracy"]
    assert induction[1].max() >= 0.4, induction
    assert previous[0].max() >= 0.4, previous
    # The mechanism: knock out the layer-0 previous-token head and induction breaks.
    prev_head = int(previous[0].argmax())
    with torch.no_grad():
        ablated = model.run_with_hooks(
            probe.tokens, fwd_hooks=[("blocks.0.attn.hook_z", zero_head_hook(prev_head))]
        )
    drop = metrics["accuracy"] - probe_accuracy(ablated, probe)
    assert drop >= 0.5, f"ablating L0H{prev_head} dropped accuracy by only {drop:.2f}"


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_one_layer_control_cannot_do_induction(seed):
    """Same task, same budget, one layer: no K-composition, so no induction."""
    two = evaluate(trained(seed), held_out_probe(seed))["accuracy"]
    one_model = trained(seed, n_layers=1)
    one = evaluate(one_model, held_out_probe(seed))
    assert one["accuracy"] < 0.6, one["accuracy"]
    assert two - one["accuracy"] >= 0.3


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_layer_model_learns_a_previous_token_head_on_shift_by_one(seed):
    model = trained(seed, n_layers=1, task="shift", steps=400)
    _, task, _ = build("shift", seed=seed)
    metrics = evaluate(model, task.probe(64, seed=10_000 + seed))
    assert metrics["previous_token"].max() >= 0.9, metrics["previous_token"]
    assert metrics["accuracy"] >= 0.95
