"""The batched trainer against the single-model reference, ``circuits.train``."""

from __future__ import annotations

import statistics

import pytest
import torch

from circuits.presets import build
from circuits.training import TrainResult, stacked, train
from circuits.training.batched import BatchedRun, train_batched


def runs(seeds, **train_changes):
    changes = {"progress": False, **train_changes}
    return [build("induction", s, train=changes) for s in seeds]


def group(items):
    return [m for m, _, _ in items], [t for _, t, _ in items], [c for _, _, c in items]


def test_stacked_forward_is_each_models_forward():
    items = runs([0, 1, 2])
    models = [m.train() for m, _, _ in items]
    tokens = torch.stack(
        [t.sample(4, torch.Generator().manual_seed(9)).tokens for _, t, _ in items]
    )
    out = stacked.forward(stacked.stack(models), models[0].cfg, tokens)
    for g, model in enumerate(models):
        torch.testing.assert_close(out[g], model(tokens[g]), rtol=0, atol=1e-6)


def test_first_step_losses_equal_train():
    batched = runs([0, 1, 2, 3], steps=2)
    results = train_batched(*group(batched))
    for (model, task, cfg), result in zip(runs([0, 1, 2, 3], steps=2), results, strict=True):
        assert isinstance(result, TrainResult)
        reference = train(model, task, cfg)
        # Same init, same batch: only the summation order of the stacked matmuls differs.
        assert result.losses[0] == pytest.approx(reference.losses[0], abs=1e-6)


def assert_weights_close(model, reference):
    """Every parameter to 1e-5, except the key biases: their exact gradient is zero (a
    constant added to every key's score of a query cancels in the softmax), so what AdamW
    makes of them is rounding noise normalised to the learning rate, in both runs. That they
    change nothing is checked on the function: the logits agree to 1e-5."""
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        if not name.endswith("b_K"):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-5, msg=name)
    tokens = torch.randint(
        0, model.cfg.d_vocab, (8, model.cfg.n_ctx), generator=torch.Generator().manual_seed(1)
    )
    torch.testing.assert_close(model(tokens), reference(tokens), rtol=0, atol=1e-5)


def test_short_run_weights_and_history_equal_train():
    seeds = [0, 1, 2]
    batched = runs(seeds, steps=12, eval_every=4)
    results = train_batched(*group(batched))
    for (model, _, _), (ref, task, cfg), result in zip(
        batched, runs(seeds, steps=12, eval_every=4), results, strict=True
    ):
        reference = train(ref, task, cfg)
        assert isinstance(result, TrainResult)
        assert result.steps == reference.steps == 12
        assert [r.step for r in result.history] == [r.step for r in reference.history]
        for r, s in zip(result.history, reference.history, strict=True):
            assert r.loss == pytest.approx(s.loss, abs=1e-5)
            assert r.accuracy == s.accuracy  # exactly: resumed sweeps compare rows by equality
            for name in s.scores:
                torch.testing.assert_close(r.scores[name], s.scores[name], rtol=0, atol=1e-5)
        assert_weights_close(model, ref)


def test_a_solved_instance_stops_and_the_rest_go_on():
    seeds = [0, 1, 2]
    batched = runs(seeds, steps=8)
    g = BatchedRun(*group(batched))
    g.step(), g.step()
    g._drop([1], write_back=True)  # instance 1 leaves after 2 steps, as a solved one does
    while g.active:
        g.step()
    for i, steps in ((0, 8), (1, 2), (2, 8)):
        ref, task, cfg = runs([seeds[i]], steps=steps)[0]
        train(ref, task, cfg)
        assert_weights_close(batched[i][0], ref)


def test_targets_stop_each_run_where_train_stops():
    batched = runs([0, 1], steps=50, eval_every=5, target_accuracy=0.0, targets={})
    results = train_batched(*group(batched))
    for result in results:
        assert isinstance(result, TrainResult)
        assert result.solved_at == result.steps == 5


def test_a_group_larger_than_memory_is_refused_before_allocation(monkeypatch):
    def no_stack(models):
        raise AssertionError("allocated before the memory check")

    monkeypatch.setattr(stacked, "stack", no_stack)
    with pytest.raises(ValueError, match=r"batched group of 3 models needs about .* at most 0 fit"):
        BatchedRun(*group(runs([0, 1, 2])), memory_budget=1000)


def test_estimate_grows_with_the_group():
    cfg = runs([0])[0][0].cfg
    one = stacked.estimate_bytes(cfg, 1, 32, 48)
    assert stacked.estimate_bytes(cfg, 8, 32, 48) == 8 * one
    assert one > 4 * sum(p.numel() for p in runs([0])[0][0].parameters())


def test_runs_that_differ_beyond_seeds_are_refused():
    items = [*runs([0]), build("induction", 1, train={"progress": False, "lr": 0.001})]
    with pytest.raises(ValueError, match=r"differ in their train config.*lr"):
        train_batched(*group(items))
    rotary = [build("induction", s, model={"positional_embedding_type": "rotary"}) for s in (0, 1)]
    with pytest.raises(ValueError, match="positional_embedding_type='rotary'"):
        train_batched(*group(rotary))
    with pytest.raises(ValueError, match="as many models, tasks and configs"):
        train_batched([], [], [])


@pytest.mark.slow
def test_formation_statistics_agree_with_single_runs():
    """Over 24 seeds the formation step's median agrees with single-model runs within the
    seed-to-seed spread (the inter-quartile range of the single runs)."""
    seeds = list(range(24))
    results = train_batched(*group(runs(seeds, steps=800)))
    single = [train(*r).solved_at for r in runs(seeds, steps=800)]
    batched = [r.solved_at for r in results if isinstance(r, TrainResult)]
    assert None not in single and None not in batched and len(batched) == len(seeds)
    q1, _, q3 = statistics.quantiles(single, n=4)
    assert abs(statistics.median(batched) - statistics.median(single)) <= max(q3 - q1, 25)
    same = sum(a == b for a, b in zip(batched, single, strict=True))
    assert same >= len(seeds) // 2  # most runs are the same run, to rounding


def test_interventions_are_refused_not_ignored():
    clamp = [{"kind": "clamp_pattern", "layer": 0, "head": 0}]
    items = runs([0, 1], interventions=clamp)
    with pytest.raises(ValueError, match="does not implement interventions"):
        train_batched(*group(items))
