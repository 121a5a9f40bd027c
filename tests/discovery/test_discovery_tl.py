"""Our attribution patching agrees with TransformerLens 4.3's on the same model."""

from __future__ import annotations

import pytest
import torch
from helpers import CONFIGS, perturbed_model
from transformer_lens.tools.analysis.attribution_patching import (
    EdgeAttributionConfig,
    attribution_patch,
)

from circuits.discovery import Problem, edge_attribution, node_attribution
from circuits.discovery.metrics import masked_loss
from circuits.tasks import Batch, repeated_tokens

N = 3


def _setup(name: str):
    model = perturbed_model(**CONFIGS[name])
    clean = repeated_tokens(N, 8, model.cfg.d_vocab, seed=0)
    gen = torch.Generator().manual_seed(1)
    corrupt = clean.tokens.clone()
    corrupt[:, :8] = torch.randint(0, model.cfg.d_vocab, (N, 8), generator=gen)
    # TransformerLens takes the gradient on the corrupted run and scores (clean - corrupt) . g
    # ("denoising"): the same as ours run on the corrupted tokens with the clean run patched in.
    swapped = Batch(corrupt, clean.targets, clean.mask)
    problem = Problem.build(model, swapped, corrupted=clean.tokens)
    return model, clean, corrupt, problem


def _tl(model, clean, corrupt, granularity):
    """TransformerLens's scores per example (its metric takes one example's logits), averaged."""
    results = []
    for i in range(N):
        metric = masked_loss(clean.targets[i : i + 1], clean.mask[i : i + 1])
        results.append(
            attribution_patch(
                model,
                clean.tokens[i : i + 1],
                corrupt[i : i + 1],
                lambda logits, metric=metric: metric(logits[None])[0],
                EdgeAttributionConfig(granularity=granularity),
            )
        )
    return results


def _node(node) -> str:
    if node.kind == "embed":
        return "embed"
    if node.kind == "attn_head_out":
        return f"L{node.layer}H{node.head}"
    if node.kind == "mlp_out":
        return f"MLP{node.layer}"
    if node.kind == "logits":
        return "logits"
    if node.kind == "mlp_in":
        return f"MLP{node.layer}"
    return f"L{node.layer}H{node.head}.{node.kind[0]}"


@pytest.mark.parametrize("name", ["full_ln", "gelu_new_result"])
def test_node_attribution_matches_transformer_lens(name: str) -> None:
    model, clean, corrupt, problem = _setup(name)
    ours = node_attribution(problem)
    theirs: dict[str, float] = {}
    for result in _tl(model, clean, corrupt, "node"):
        for node, score in result.node_scores.items():
            key = _node(node)
            theirs[key] = theirs.get(key, 0.0) + score / N
    assert set(theirs) == set(ours) - {"pos"}
    assert abs(ours["pos"]) == 0.0  # positions are the same in both runs
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, rel=1e-3, abs=1e-5), key


def test_edge_attribution_matches_transformer_lens() -> None:
    model, clean, corrupt, problem = _setup("full_ln")
    ours = edge_attribution(problem).as_dict()
    theirs: dict[str, float] = {}
    for result in _tl(model, clean, corrupt, "edge"):
        for (writer, reader), score in result.edge_scores.items():
            key = f"{_node(writer)}->{_node(reader)}"
            theirs[key] = theirs.get(key, 0.0) + score / N
    assert set(theirs) == {k for k in ours if not k.startswith("pos->")}
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, rel=1e-3, abs=1e-5), key
