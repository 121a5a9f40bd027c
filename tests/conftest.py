"""Shared fixtures (plain helpers live in ``helpers.py``, importable from any test)."""

from __future__ import annotations

import pytest
from helpers import CONFIGS, perturbed_model

from circuits import HookedTransformer


@pytest.fixture(params=sorted(CONFIGS))
def any_model(request: pytest.FixtureRequest) -> HookedTransformer:
    return perturbed_model(**CONFIGS[request.param])
