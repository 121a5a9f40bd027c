"""head_scores.py split (issue 21: modules under ~400 lines): the attention-pattern scores are in
circuits.analysis.attention_scores, the copying score in circuits.analysis.copying; the old
import path gives the same objects and the built-in scores register in the same order."""

from __future__ import annotations

import importlib

import pytest

import circuits.analysis as analysis
from circuits.analysis import attention_scores, copying
from circuits.analysis.scores import score_names

# The module, not circuits.analysis.head_scores (the package exports the function of that name).
head_scores = importlib.import_module("circuits.analysis.head_scores")

MOVED = {
    attention_scores: (
        "attention_patterns",
        "current_token_score",
        "diagonal_score",
        "duplicate_token_score",
        "first_token_score",
        "induction_score",
        "previous_token_score",
    ),
    copying: ("COPYING_HOOKS", "copying_score_activations"),
}


@pytest.mark.parametrize("module", list(MOVED), ids=lambda m: m.__name__)
def test_old_import_path_gives_the_same_objects(module: object) -> None:
    for name in MOVED[module]:  # type: ignore[index]
        assert getattr(head_scores, name) is getattr(module, name), name
        if hasattr(analysis, name):
            assert getattr(analysis, name) is getattr(module, name), name


BUILTIN = (
    "previous_token",
    "current_token",
    "first_token",
    "duplicate_token",
    "induction",
    "copying",
    "copying_top1",
)


def test_builtin_scores_register_in_the_same_order() -> None:
    # The order records, the CLI and reports list scores in (as before the split).
    assert [n for n in score_names() if n in BUILTIN] == list(BUILTIN)
