"""Shared settings of the sweep tests: a small model so that a run takes well under a second."""

from __future__ import annotations

from typing import Any

import pytest

# The default preset shrunk: d_model 16, sequences of 24, 60 steps evaluated every 10.
SMALL: dict[str, dict[str, Any]] = {
    "model": {"d_model": 16, "n_ctx": 24, "d_vocab": 16},
    "task": {"d_vocab": 16, "seq_len": 24, "max_period": 10},
    "train": {"steps": 60, "batch_size": 8, "eval_every": 10},
}


@pytest.fixture
def small_spec() -> dict[str, Any]:
    """2 learning rates x 4 seeds of the shrunk default preset (8 runs)."""
    return {"name": "small", "base": SMALL, "grid": {"train.lr": [0.01, 0.03]}, "seeds": 4}
