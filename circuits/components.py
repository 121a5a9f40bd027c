"""Deprecated location: use ``circuits.model.components``."""

import importlib
import sys
import warnings

warnings.warn(
    "circuits.components moved to circuits.model.components; the old path will be removed",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = importlib.import_module("circuits.model.components")
