"""Deprecated location: use ``circuits.model.hook_aliases``."""

import importlib
import sys
import warnings

warnings.warn(
    "circuits.hook_aliases moved to circuits.model.hook_aliases; the old path will be removed",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = importlib.import_module("circuits.model.hook_aliases")
