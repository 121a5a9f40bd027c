"""Deprecated location: use ``circuits.model.text``."""

import importlib
import sys
import warnings

warnings.warn(
    "circuits.text moved to circuits.model.text; the old path will be removed",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = importlib.import_module("circuits.model.text")
