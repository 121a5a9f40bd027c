"""The head-score registry: registration, what is derived from it, and its checks."""

from __future__ import annotations

import importlib

import pytest
import torch
from analysis_models import make_induction_model, random_model

from circuits.analysis import (
    evaluate,
    find_heads,
    get_score,
    head_scores,
    register_score,
    registered_scores,
    score_names,
    unregister_score,
)
from circuits.analysis.scores import HeadScore, stack_patterns
from circuits.records import EvalRecord
from circuits.tasks import repeated_tokens

# The module (the package's attribute of that name is the function head_scores).
hs = importlib.import_module("circuits.analysis.head_scores")


@pytest.fixture
def probe():
    return repeated_tokens(4, 8, 8, seed=0)


@pytest.fixture
def last_to_first():
    """A score defined here: attention of the last query to the first key."""
    spec = register_score("last_to_first", lambda c: c.patterns[..., -1, 0].mean(1))
    yield spec
    unregister_score("last_to_first")


def test_builtins_and_derived_names():
    assert score_names()[:2] == ("previous_token", "current_token")
    assert set(score_names(tracked=True)) == {"previous_token", "induction"}
    assert score_names() == hs.KINDS
    induction = get_score("induction")
    assert (induction.min_layer, induction.probe, induction.label) == (1, "repeated", "induction")


def test_a_registered_score_appears_everywhere(probe, last_to_first):
    model = make_induction_model()
    assert "last_to_first" in hs.KINDS and last_to_first in registered_scores()
    scores = head_scores(model, probe)
    _, cache = model.run_with_cache(probe.tokens)
    expected = cache.stack_activation("pattern")[..., -1, 0].mean(1)
    torch.testing.assert_close(scores["last_to_first"], expected)
    record = evaluate(model, probe)  # tracked by default (track=True)
    torch.testing.assert_close(record.scores["last_to_first"], expected)
    assert find_heads(model, "last_to_first", 0.0, scores=scores)  # every head >= 0
    assert set(evaluate(model, probe, ["last_to_first"]).scores) == {"last_to_first"}


def test_registration_errors(last_to_first):
    with pytest.raises(ValueError, match="already registered"):
        register_score("last_to_first", lambda c: c.patterns[..., 0, 0].mean(1))
    with pytest.raises(ValueError, match="reserved"):
        register_score("accuracy", lambda c: c.patterns[..., 0, 0].mean(1))
    with pytest.raises(ValueError, match="identifier"):
        register_score("a b", lambda c: c.patterns[..., 0, 0].mean(1))
    with pytest.raises(TypeError, match="callable"):
        register_score("nope", 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="direction"):
        register_score("nope", lambda c: c, direction="up")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown head score 'nope'"):
        get_score("nope")
    with pytest.raises(ValueError, match="no head score"):
        unregister_score("nope")


def test_a_bad_score_function_is_named(probe):
    model = make_induction_model()
    register_score("wrong_shape", lambda c: c.patterns.mean())
    register_score("nan_score", lambda c: c.patterns[..., 0, 0].mean(1) * torch.nan)
    try:
        with pytest.raises(ValueError, match="'wrong_shape' returned"):
            head_scores(model, probe, ["wrong_shape"])
        with pytest.raises(ValueError, match="'nan_score' returned NaN"):
            evaluate(model, probe, ["nan_score"])
    finally:
        unregister_score("wrong_shape")
        unregister_score("nan_score")


def test_repeated_probe_scores_skip_or_refuse_other_probes():
    model = make_induction_model()
    batch = repeated_tokens(2, 8, 8, seed=1)
    plain = type(batch)(batch.tokens, batch.targets, batch.mask, None)
    assert set(evaluate(model, plain).scores) == {"previous_token"}  # induction skipped
    with pytest.raises(ValueError, match="repeated-tokens probe"):
        evaluate(model, plain, ["induction"])
    with pytest.raises(TypeError, match="list of score names"):
        evaluate(model, plain, "induction")


def test_layers_that_count_and_direction():
    spec = get_score("induction")
    scores = torch.tensor([[0.9, 0.1], [0.3, 0.5]])
    assert spec.best(scores) == 0.5 and spec.top_head(scores) == (1, 1)  # layer 0 ignored
    assert spec.met(scores, 0.5) and not spec.met(scores, 0.6)
    assert spec.best(scores[:1]) is None and not spec.met(scores[:1], 0.0)  # one layer
    low = HeadScore("low", lambda c: c, direction="lower", bounds=None)
    assert low.best(scores) == pytest.approx(0.1) and low.top_head(scores) == (0, 1)
    assert low.met(scores, 0.2) and not low.met(scores, 0.05)
    with pytest.raises(ValueError, match=r"must be in \[0.0, 1.0\]"):
        spec.check_threshold(1.5)
    with pytest.raises(TypeError, match="number"):
        spec.check_threshold("0.4")


def test_find_heads_counts_only_layers_that_count(probe):
    model = make_induction_model()
    scores = {"induction": torch.tensor([[0.9, 0.0], [0.6, 0.1]])}
    assert find_heads(model, "induction", 0.5, scores=scores) == ["L1H0"]  # not L0H0
    assert find_heads(model, "induction", 0.5, probe) == ["L1H0"]


def test_stack_patterns_agrees_with_manual_stacking():
    model = random_model(n_layers=3)
    tokens = torch.randint(0, 20, (2, 9), generator=torch.Generator().manual_seed(0))
    _, cache = model.run_with_cache(tokens)
    manual = torch.stack([cache[f"blocks.{la}.attn.hook_pattern"] for la in range(3)])
    assert torch.equal(stack_patterns(model, cache), manual)  # TransformerLens's stacking
    _, plain = model.run_with_cache(tokens, return_cache_object=False)
    assert torch.equal(stack_patterns(model, plain), manual)
    with pytest.raises(ValueError, match="cache lacks"):
        stack_patterns(model, {})


def test_evaluate_returns_a_record(probe):
    model = make_induction_model()
    record = evaluate(model, probe, step=7)
    assert isinstance(record, EvalRecord) and record.step == 7
    assert record["accuracy"] == record.accuracy  # reads as the old dicts did
    torch.testing.assert_close(record["induction"], record.scores["induction"])
    assert record.best("induction") == pytest.approx(float(record.scores["induction"][1].max()))
