"""Deprecated location: use ``circuits.model.weights``."""

import importlib
import sys
import warnings

warnings.warn(
    "circuits.model_weights moved to circuits.model.weights; the old path will be removed",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = importlib.import_module("circuits.model.weights")
