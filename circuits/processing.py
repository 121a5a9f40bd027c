"""Deprecated location: use ``circuits.model.processing``."""

import importlib
import sys
import warnings

warnings.warn(
    "circuits.processing moved to circuits.model.processing; the old path will be removed",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = importlib.import_module("circuits.model.processing")
