"""Formation steps and the phase change: one definition, in :mod:`circuits.analysis.phase`.

Kept so that ``circuits.sweep.phase`` imports keep working; everything here is that module's.
"""

from __future__ import annotations

from circuits.analysis.phase import (
    PHASE_RULE,
    PhaseChange,
    first_crossing,
    formation,
    phase_change,
    prefix_matching_step,
    steepest_fall,
)

__all__ = [
    "PHASE_RULE",
    "PhaseChange",
    "first_crossing",
    "formation",
    "phase_change",
    "prefix_matching_step",
    "steepest_fall",
]
