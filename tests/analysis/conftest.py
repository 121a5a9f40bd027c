"""Fixtures for analysis tests (builders live in ``analysis_models.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from analysis_models import make_induction_model, make_prev_copy_model, to_bridge

from circuits import HookedTransformer, ModelConfig, TrainConfig, train
from circuits.tasks import InductionTask


@pytest.fixture
def prev_copy_model() -> HookedTransformer:
    return make_prev_copy_model()


@pytest.fixture
def induction_model() -> HookedTransformer:
    return make_induction_model()


@pytest.fixture
def bridge_of() -> Callable[[HookedTransformer], Any]:
    return to_bridge


TRAIN_SEED = 0


@pytest.fixture(scope="session")
def trained_induction() -> tuple[HookedTransformer, InductionTask]:
    """The default 2-layer attention-only model trained on random-period induction (~2 s)."""
    s = TRAIN_SEED
    model = HookedTransformer(
        ModelConfig(
            n_layers=2, d_model=32, n_ctx=48, d_vocab=32, n_heads=2, attn_only=True,
            normalization_type=None, seed=s,
        )
    )  # fmt: skip
    task = InductionTask(d_vocab=32, seq_len=48, min_period=4, max_period=24, seed=s)
    result = train(
        model, task,
        TrainConfig(
            steps=2000, batch_size=32, lr=1e-2, seed=s, eval_every=50, progress=False,
            target_accuracy=0.9, targets={"induction": 0.4, "previous_token": 0.4},
        ),
    )  # fmt: skip
    assert result.solved_at is not None, "the induction model did not train"
    return model.eval(), task
