"""Tuned lens: starts as the logit lens, saves and loads, beats the logit lens when trained."""

from __future__ import annotations

import pytest
import torch
from analysis_models import random_model

from circuits import HookedTransformer, ModelConfig, TrainConfig, train
from circuits.analysis.logit_lens import logit_lens
from circuits.analysis.tuned_lens import META, WEIGHTS, TunedLens
from circuits.tasks import InductionTask


def _task(seed: int = 0) -> InductionTask:
    return InductionTask(d_vocab=20, seq_len=24, min_period=4, max_period=10, seed=seed)


def test_untrained_tuned_lens_is_the_logit_lens():
    model = random_model()
    tokens = _task().sample(4, torch.Generator().manual_seed(0)).tokens
    tuned = TunedLens.for_model(model).lens(model, tokens)
    plain = logit_lens(model, tokens)
    assert tuned.labels == plain.labels
    assert torch.allclose(tuned.logits, plain.logits, atol=1e-5)


def test_save_load_round_trip(tmp_path):
    model = random_model()
    lens = TunedLens.for_model(model)
    losses = lens.fit(model, _task(), steps=5, batch_size=4)
    assert len(losses) == 5
    lens.save(tmp_path)
    assert (tmp_path / WEIGHTS).is_file() and (tmp_path / META).is_file()
    loaded = TunedLens.load(tmp_path, model)
    tokens = _task().sample(2, torch.Generator().manual_seed(1)).tokens
    assert torch.equal(loaded.lens(model, tokens).logits, lens.lens(model, tokens).logits)
    assert not torch.allclose(
        loaded.lens(model, tokens).logits, logit_lens(model, tokens).logits, atol=1e-4
    )


def test_load_rejects_wrong_model_and_missing_files(tmp_path):
    model = random_model()
    TunedLens.for_model(model).save(tmp_path)
    with pytest.raises(ValueError, match="n_layers"):
        TunedLens.load(tmp_path, random_model(n_layers=2))
    with pytest.raises(ValueError, match="no tuned_lens"):
        TunedLens.load(tmp_path / "elsewhere", model)
    (tmp_path / META).write_text("{not json")
    with pytest.raises(ValueError, match="JSON"):
        TunedLens.load(tmp_path, model)


@pytest.mark.slow
def test_tuned_lens_beats_logit_lens_on_trained_ln_mlp_model():
    model = HookedTransformer(
        ModelConfig(n_layers=2, d_model=32, n_ctx=24, d_vocab=20, n_heads=2, seed=0)
    )
    assert not model.cfg.attn_only and model.cfg.normalization_type == "LN"
    task = _task()
    train(model, task, TrainConfig(steps=300, progress=False, seed=0))
    lens = TunedLens.for_model(model)
    losses = lens.fit(model, task, steps=200, seed=1)
    assert losses[-1] < losses[0]
    held_out = task.sample(128, torch.Generator().manual_seed(999)).tokens  # not seen in fit
    tuned = lens.lens(model, held_out).kl_to_final().mean(dim=(1, 2))
    plain = logit_lens(model, held_out).kl_to_final().mean(dim=(1, 2))
    print(f"\nKL to final by layer: logit lens {plain.tolist()}, tuned lens {tuned.tolist()}")
    assert (tuned[:-1] < plain[:-1]).all()  # every layer before the output


def test_public_names_resolve():
    import circuits.analysis as analysis

    for name in analysis.__all__:
        assert getattr(analysis, name) is not None, name
    with pytest.raises(AttributeError):
        _ = analysis.no_such_name
