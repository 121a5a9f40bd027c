"""Acceptance: reverse-engineer the induction circuit of a 2-layer attention-only model trained
in the test, from the Python API only, and check the bridge twin gives the same numbers."""

from __future__ import annotations

import pytest
import torch

from circuits.analysis.ablation import ablation_effects, masked_loss
from circuits.analysis.circuits import circuit_stats
from circuits.analysis.composition import MODES, all_composition_scores
from circuits.analysis.head_scores import find_heads, head_scores

pytestmark = pytest.mark.slow


def _top(scores: torch.Tensor) -> tuple[int, int]:
    layer, head = divmod(int(scores.argmax()), scores.shape[1])
    return layer, head


def test_trained_model_induction_circuit(trained_induction):
    model, task = trained_induction
    probe = task.probe(64)
    scores = head_scores(model, probe)
    ind_layer, ind_head = _top(scores["induction"])
    assert ind_layer == 1, scores["induction"]
    assert find_heads(model, "induction", 0.4, scores=scores)[0] == f"L1H{ind_head}"

    prev_head = int(scores["previous_token"][0].argmax())
    comp = all_composition_scores(model)
    k_in = comp.excess("K")[0, :, 1, ind_head]  # from each layer-0 head into the induction head
    assert int(k_in.argmax()) == prev_head
    assert comp.top_sources("K", 1, ind_head, k=1)[0][0] == f"L0H{prev_head}"
    assert k_in[prev_head] > 5 * comp.baseline_std  # composes well above chance
    # Q and V composition stay at (or below) chance everywhere.
    for mode in ("Q", "V"):
        assert comp.excess(mode)[comp.valid].max() < k_in[prev_head] / 2, mode

    stats = circuit_stats(model)
    assert stats.ov_copying[1, ind_head] > 0.7
    # On activations: where the repeat is predictable, the token the induction head attends to
    # is the one its direct path pushes up most.
    assert scores["copying_top1"][1, ind_head] > 0.8, scores["copying_top1"]

    # Ablating the induction head or its previous-token source hurts the repeat more than
    # ablating the other layer-0 head; with patterns frozen the source's effect vanishes
    # except for its (small) direct and V-composition paths.
    metric = masked_loss(probe.targets, probe.mask)
    effects = ablation_effects(model, probe.tokens, metric)
    assert effects[1, ind_head] > 0.2, effects  # the other layer-1 head is partly redundant
    assert effects[0, prev_head] > effects[0, 1 - prev_head]
    frozen = ablation_effects(model, probe.tokens, metric, freeze_patterns=True)
    assert frozen[0, prev_head] < effects[0, prev_head] / 2, (frozen, effects)

    print(
        f"\ninduction L1H{ind_head} ({scores['induction'][1, ind_head]:.2f}), prev-token "
        f"L0H{prev_head} ({scores['previous_token'][0, prev_head]:.2f}); K raw "
        f"{comp.k[0, prev_head, 1, ind_head]:.3f} vs baseline {comp.baseline:.3f} "
        f"+- {comp.baseline_std:.3f}; OV copying {stats.ov_copying[1, ind_head]:.3f}; "
        f"ablation {effects.tolist()} frozen {frozen.tolist()}"
    )


def test_trained_model_same_numbers_on_bridge(trained_induction, bridge_of):
    model, task = trained_induction
    bridge = bridge_of(model)
    probe = task.probe(16)
    ours, theirs = all_composition_scores(model), all_composition_scores(bridge)
    for mode in MODES:
        assert torch.allclose(ours.raw(mode), theirs.raw(mode), atol=1e-5)
        tl = bridge.all_composition_scores(mode).scores.detach()
        assert torch.allclose(ours.raw(mode), tl, atol=1e-5)
    a, b = head_scores(model, probe), head_scores(bridge, probe)
    for kind in a:
        assert torch.allclose(a[kind], b[kind], atol=1e-4), kind
    sa, sb = circuit_stats(model), circuit_stats(bridge)
    assert torch.allclose(sa.ov_copying, sb.ov_copying, atol=1e-4)
