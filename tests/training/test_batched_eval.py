"""The stacked evaluation: every instance's record equals its own ``evaluate``."""

from __future__ import annotations

import pytest
import torch

from circuits.analysis.head_scores import evaluate
from circuits.analysis.scores import register_score, unregister_score
from circuits.presets import build
from circuits.training import stacked
from circuits.training.batched_eval import evaluate_stacked


def _group(seeds, scores, chunk_bytes=None):
    items = [build("induction", s, train={"progress": False}) for s in seeds]
    models = [m.eval() for m, _, _ in items]
    probes = [t.probe(16) for _, t, _ in items]
    params = stacked.stack(models)
    tokens, targets, mask = (torch.stack([getattr(p, f) for p in probes]) for f in
                             ("tokens", "targets", "mask"))  # fmt: skip
    shell = build("induction", 99)[0].eval()
    records = evaluate_stacked(
        params, shell, tokens, targets, mask, probes[0].repeat_length, scores, step=3,
        chunk_bytes=chunk_bytes,
    )  # fmt: skip
    return models, probes, records


@pytest.fixture
def token_score():
    """A pattern score that also reads the probe's tokens: not layerwise, so it must be
    computed per instance on that instance's own probe and weights."""

    def fn(ctx):
        same = (ctx.tokens[:, :, None] == ctx.tokens[:, None, :]).float()  # [batch, q, k]
        return (ctx.patterns * same[None, :, None]).sum(-1).mean(dim=(1, 3))

    register_score("same_token_mass", fn, track=False)
    yield "same_token_mass"
    unregister_score("same_token_mass")


@pytest.mark.parametrize("chunk_bytes", [None, 1])  # the whole group at once; one by one
def test_every_record_is_its_instances_evaluate(token_score, chunk_bytes):
    names = ("previous_token", "induction", "duplicate_token", token_score)
    models, probes, records = _group([0, 1, 2], names, chunk_bytes)
    for model, probe, record in zip(models, probes, records, strict=True):
        reference = evaluate(model, probe, names, step=3)
        assert record.accuracy == reference.accuracy
        assert record.loss == pytest.approx(reference.loss, abs=1e-6)
        for name in names:
            torch.testing.assert_close(record.scores[name], reference.scores[name], atol=1e-6,
                                       rtol=0)  # fmt: skip


def test_a_layerwise_score_of_the_wrong_shape_is_refused():
    register_score("bad_layerwise", lambda ctx: ctx.patterns.mean(dim=(0, 1, 3, 4)),
                   track=False, layerwise=True)  # fmt: skip
    try:
        with pytest.raises(ValueError, match="layerwise score 'bad_layerwise' returned"):
            _group([0, 1], ("previous_token", "bad_layerwise"))
    finally:
        unregister_score("bad_layerwise")
