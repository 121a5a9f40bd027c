"""circuits.registry.Registry: the one registry type of tasks, head scores and corruptions."""

from __future__ import annotations

import pytest

from circuits.registry import Registry


def test_registry_adds_refuses_a_second_entry_looks_up_and_removes() -> None:
    reg: Registry[int] = Registry("widget")
    assert reg.register("a")(1) == 1 and reg.add("b", 2) == 2
    assert list(reg) == ["a", "b"] and reg["a"] == 1 and reg.lookup("b") == 2
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        reg.add("a", 3)
    assert reg.add("a", 3, replace=True) == 3 and reg["a"] == 3
    with pytest.raises(ValueError, match="unknown widget 'c'; registered: a, b"):
        reg.lookup("c")
    with pytest.raises(ValueError, match="unknown widget 5"):
        reg.lookup(5)
    reg.remove("a")
    assert list(reg) == ["b"]
    with pytest.raises(ValueError, match="no widget 'a' is registered"):
        reg.remove("a")


def test_tasks_scores_and_corruptions_share_it() -> None:
    from circuits.analysis import scores
    from circuits.discovery.corruption import CORRUPTIONS
    from circuits.tasks import TASKS

    for registry in (TASKS, scores._REGISTRY, CORRUPTIONS):
        assert isinstance(registry, Registry)
    assert {"induction", "shift"} <= set(TASKS) and "induction" in CORRUPTIONS
    with pytest.raises(ValueError, match="head score 'induction' is already registered"):
        scores.register_score("induction", lambda ctx: None)
