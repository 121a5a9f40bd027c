"""Bad input refused in one clear error before any work; dtype, threads and reprs (issue 20)."""

from __future__ import annotations

import pytest
import torch
from helpers import CONFIGS, perturbed_model

from circuits.discovery import (
    Problem,
    acdc,
    edge_attribution,
    exact_patching,
    faithfulness,
)
from circuits.discovery.corruption import CORRUPTIONS, DEFAULT_METRICS, register_corruption
from circuits.discovery.path_expansion import path_expansion, score_decomposition
from circuits.tasks import Batch, repeated_tokens


def _model(name: str = "full_ln"):
    return perturbed_model(**CONFIGS[name])


def test_problem_build_refuses_bad_batches() -> None:
    model = _model()
    batch = repeated_tokens(2, 6, model.cfg.d_vocab, seed=0)
    with pytest.raises(TypeError, match="Batch"):
        Problem.build(model, batch.tokens)  # type: ignore[arg-type]
    bad = batch.targets.clone()
    bad[0, 3] = model.cfg.d_vocab
    with pytest.raises(ValueError, match=r"targets contains id 20, outside"):
        Problem.build(model, Batch(batch.tokens, bad, batch.mask))
    with pytest.raises(ValueError, match="targets shape"):
        Problem.build(model, Batch(batch.tokens, batch.targets[:, :-1], batch.mask))
    with pytest.raises(ValueError, match="mask shape"):
        Problem.build(model, Batch(batch.tokens, batch.targets, batch.mask[:1]))
    # A probe longer than n_ctx, and a batch of another (larger) vocabulary.
    long = repeated_tokens(2, model.cfg.n_ctx, model.cfg.d_vocab, seed=0)
    with pytest.raises(ValueError, match="longer than n_ctx"):
        Problem.build(model, long)
    other_vocab = repeated_tokens(2, 6, 5 * model.cfg.d_vocab, seed=0)
    with pytest.raises(ValueError, match="outside \\[0, d_vocab=20\\)"):
        Problem.build(model, other_vocab)
    with pytest.raises(ValueError, match="must match"):
        Problem.build(model, batch, corrupted=batch.tokens[:, :-1])
    with pytest.raises(ValueError, match="no corruption registered"):
        Problem.build(model, batch, task="nope")
    with pytest.raises(ValueError, match="ioi_batch"):
        Problem.build(model, batch, task="ioi")
    with pytest.raises(ValueError, match="source"):
        Problem.build(model, batch, source="noise")  # type: ignore[arg-type]


def test_a_corruption_that_does_not_fit_the_model_is_refused() -> None:
    model = _model()
    batch = repeated_tokens(2, 6, model.cfg.d_vocab, seed=0)

    @register_corruption("too_wide_for_test")
    def _wide(batch: Batch, d_vocab: int, generator: torch.Generator) -> torch.Tensor:
        return batch.tokens + d_vocab  # ids the model does not have

    try:
        with pytest.raises(ValueError, match="'too_wide_for_test' corruption does not fit"):
            Problem.build(model, batch, task="too_wide_for_test")
    finally:
        del CORRUPTIONS["too_wide_for_test"], DEFAULT_METRICS["too_wide_for_test"]


def test_float64_models_run_in_float64() -> None:
    """Discovery follows the model's dtype (it used to make float32 tensors and fail)."""
    batch = repeated_tokens(2, 6, 20, seed=0)
    single = Problem.build(_model(), batch)
    double = Problem.build(_model().double(), batch)
    assert double.source.dtype == torch.float64
    for fn in (edge_attribution, exact_patching):
        a, b = fn(single), fn(double)
        assert b.scores.dtype == torch.float64
        torch.testing.assert_close(a.scores.double(), b.scores, atol=1e-4, rtol=1e-4)
    zero = Problem.build(_model().double(), batch, source="zero")
    assert edge_attribution(zero, ig_steps=2).scores.dtype == torch.float64


def test_threads_default_to_one_and_are_restored() -> None:
    model = _model()
    seen: list[int] = []
    handle = model.blocks[0].ln1.register_forward_hook(
        lambda *_: seen.append(torch.get_num_threads())
    )
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        batch = repeated_tokens(2, 6, 20, seed=0)
        problem = Problem.build(model, batch)
        edge_attribution(problem)
        acdc(problem, tau=0.5)
        faithfulness(problem, [])
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
        seen.clear()
        edge_attribution(problem, threads=None)
        assert set(seen) == {2}
        with pytest.raises(ValueError, match="threads"):
            exact_patching(problem, threads=0)
        with pytest.raises(TypeError, match="threads"):
            acdc(problem, threads="1")  # type: ignore[arg-type]
        assert torch.get_num_threads() == 2
    finally:
        handle.remove()
        torch.set_num_threads(before)


def test_reprs_name_things_instead_of_dumping_tensors() -> None:
    problem = Problem.build(_model(), repeated_tokens(2, 6, 20, seed=0))
    found = acdc(problem, tau=0.05)
    text = repr(found)
    assert "tensor(" not in text and f"of {problem.graph.n_edges} edges" in text
    assert "tensor(" not in repr(found.scores) and "tensor(" not in repr(problem)


def test_top_and_circuit_refuse_negative_counts() -> None:
    scores = exact_patching(Problem.build(_model(), repeated_tokens(2, 6, 20, seed=0)))
    n = scores.graph.n_edges
    assert len(scores.top(n)) == n and scores.top(0) == []
    with pytest.raises(ValueError, match="k=-1 out of range"):
        scores.top(-1)  # returned all but one edge
    with pytest.raises(ValueError, match="out of range"):
        scores.circuit(k=n + 1)
    with pytest.raises(TypeError, match="k must be an int"):
        scores.top(2.0)  # type: ignore[arg-type]


def test_path_expansion_refuses_an_empty_mask_and_a_future_key() -> None:
    model = _model("attn_only")
    batch = repeated_tokens(2, 6, 20, seed=0)
    with pytest.raises(ValueError, match="selects no position"):
        path_expansion(model, batch.tokens, batch.targets, torch.zeros_like(batch.mask))
    with pytest.raises(ValueError, match="targets contains id"):
        path_expansion(model, batch.tokens, batch.targets + 20)
    sd = score_decomposition(model, batch.tokens, 1, 0)
    with pytest.raises(ValueError, match="repeat_length=0 out of range"):
        sd.induction_contrast(0, batch.mask)  # measured against the next (future) key
    assert torch.isfinite(sd.induction_contrast(6, batch.mask)).all()
