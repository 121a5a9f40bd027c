"""Head names: ``"L{layer}H{head}"``, the naming TransformerLens and ARENA use.

The one place names are formatted and parsed: the analysis, the plots, the report, the CLI,
circuit discovery and sweeps all go through these. Light to import (no TransformerLens).
"""

from __future__ import annotations

import re

from circuits.validation import check_int

_NAME = re.compile(r"L(\d+)H(\d+)")


def head_name(layer: int, head: int) -> str:
    """``"L{layer}H{head}"``, e.g. ``head_name(1, 0) == "L1H0"``.

    Raises:
        TypeError: ``layer`` or ``head`` is not an int.
        ValueError: Either is negative.
    """
    check_int(layer, "layer", 0)
    check_int(head, "head", 0)
    return f"L{layer}H{head}"


def layer_name(layer: int) -> str:
    """``"L{layer}"`` (row labels of per-layer figures)."""
    check_int(layer, "layer", 0)
    return f"L{layer}"


def parse_head_name(name: str) -> tuple[int, int]:
    """``(layer, head)`` of a name like ``"L1H0"`` (range is the caller's to check).

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: It is not of the form ``L{layer}H{head}``.
    """
    if not isinstance(name, str):
        raise TypeError(f"a head name must be a str like 'L1H0', got {type(name).__name__}")
    m = _NAME.fullmatch(name)
    if m is None:
        raise ValueError(f"cannot parse head name {name!r}; expected a name like 'L1H0'")
    return int(m[1]), int(m[2])
