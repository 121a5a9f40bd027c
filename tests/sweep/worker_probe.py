"""Functions sent to sweep workers by the tests: this module imports nothing of circuits, so
what a worker has imported is what its initializer imported."""

from __future__ import annotations

import sys

RUN_MODULES = ("circuits.training", "circuits.model", "circuits.tasks", "torch._dynamo")


def modules_loaded() -> dict[str, bool]:
    return {m: m in sys.modules for m in RUN_MODULES}
