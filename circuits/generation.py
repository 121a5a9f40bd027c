"""Deprecated location: use ``circuits.model.generation``."""

import importlib
import sys
import warnings

warnings.warn(
    "circuits.generation moved to circuits.model.generation; the old path will be removed",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = importlib.import_module("circuits.model.generation")
