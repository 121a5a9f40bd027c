"""Deprecated location: use ``circuits.model.fast_path``."""

import importlib
import sys
import warnings

warnings.warn(
    "circuits.fast_path moved to circuits.model.fast_path; the old path will be removed",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = importlib.import_module("circuits.model.fast_path")
