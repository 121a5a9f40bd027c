"""Analysis at the zoo's and GPT-2 small's shapes (issue 22): chunked equals unchunked, memory
stays bounded, and the issue-20 regressions of the same surfaces.

Unit tier: the chunked code paths (forced with a tiny ``chunk_bytes``) against independent
full-logit computations on small models, in the shapes' structure. Slow tier: the real shapes
in a child process (:func:`circuits.benchmarks.scale.measure`), whose peak memory must stay
under the issue's budgets; the materialising code this replaced needed several GB there.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from analysis_models import full_copying

from circuits.analysis import (
    LensResult,
    circuit_stats,
    copying_score,
    diagonal_accuracy,
    full_ov_circuit,
    full_ov_spectrum,
    full_qk_circuit,
    full_qk_spectrum,
    logit_lens,
    torch_threads,
)
from circuits.analysis.logit_lens import unembed
from circuits.benchmarks.shapes import SHAPES, build
from circuits.losses import cross_entropy, kl_divergence
from circuits.tasks import repeated_tokens

hs = importlib.import_module("circuits.analysis.head_scores")
TINY = 4096  # bytes: a few rows per chunk, so every chunked loop runs many times
SMALL = dict(d_vocab=300, n_ctx=64, d_model=64, n_heads=4, d_head=16)


def small(shape: str, **overrides: object) -> torch.nn.Module:
    """``shape``'s structure (norm, positions, MLPs, activation) at a unit-test size."""
    extra = {"d_mlp": 128} if not SHAPES[shape].get("attn_only") else {}
    return build(shape, **{**SMALL, **extra, "n_layers": 2, **overrides})


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_head_scores_chunked_equal_full_logits(shape: str) -> None:
    model = small(shape)
    probe = repeated_tokens(3, 12, model.cfg.d_vocab, seed=1)
    chunked = hs.head_scores(model, probe, chunk_bytes=TINY)
    default = hs.head_scores(model, probe)
    share, top, _ = full_copying(model, probe.tokens, probe.mask)
    torch.testing.assert_close(chunked["copying"], share, atol=1e-5, rtol=0)
    torch.testing.assert_close(chunked["copying_top1"], top, atol=1e-5, rtol=0)
    for name, value in default.items():
        torch.testing.assert_close(chunked[name], value, atol=1e-5, rtol=0)


def test_copying_ties_across_vocabulary_chunks_pick_the_first_maximum() -> None:
    """The layer-at-a-time copying pass keeps a running maximum over vocabulary chunks: on a tie
    (duplicate unembedding columns, split across chunks) it must pick the first column, as an
    argmax over the whole row does, and a tiny chunk must give the default's answer."""
    model = small("attn-only-2l")
    with torch.no_grad():
        W_U = model.W_U
        W_U[:, 150:] = W_U[:, :150]  # every token's column repeated 150 columns later
    probe = repeated_tokens(3, 12, 150, seed=2)  # attended tokens among the first copies
    share, top, _ = full_copying(model, probe.tokens, probe.mask)
    for chunk_bytes in (TINY, hs.CHUNK_BYTES):
        got = hs.head_scores(model, probe, ["copying", "copying_top1"], chunk_bytes=chunk_bytes)
        torch.testing.assert_close(got["copying"], share, atol=1e-5, rtol=0)
        torch.testing.assert_close(got["copying_top1"], top, atol=1e-5, rtol=0)
    assert float(top.max()) > 0  # some head ranks a tied token first: the tie rule is exercised


def test_copying_smaller_output_vocabulary_chunked_equals_full() -> None:
    """Queries attending to a token the model cannot output do not count, per head."""
    model = small("gelu-4l", d_vocab_out=200)
    probe = repeated_tokens(3, 12, 300, seed=3)
    mask = probe.mask.clone()
    share, top, _ = full_copying(model, probe.tokens, mask)
    assert bool((probe.tokens >= 200).any())  # some queries attend to a token it cannot output
    for chunk_bytes in (TINY, hs.CHUNK_BYTES):
        for statistic, expected in (("share", share), ("top1", top)):
            got = hs.copying_score_activations(
                model, probe.tokens, None, mask, statistic, chunk_bytes=chunk_bytes
            )
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_evaluate_chunked_loss_and_accuracy_equal_full_logits() -> None:
    model = small("gpt2-small")
    probe = repeated_tokens(4, 16, model.cfg.d_vocab, seed=2)
    full = hs.evaluate(model, probe)  # 4 x 32 x 300 logits fit one chunk: the full path
    chunked = hs.evaluate(model, probe, chunk_bytes=TINY)
    with torch.no_grad():
        logits = model(probe.tokens)
    expected = float(cross_entropy(logits, probe.tokens, probe.targets, probe.mask))
    assert chunked.loss == pytest.approx(expected, abs=1e-5)
    assert full.loss == pytest.approx(expected, abs=1e-5)
    assert chunked.accuracy == full.accuracy
    for name in full.scores:
        torch.testing.assert_close(chunked.scores[name], full.scores[name], atol=1e-6, rtol=0)


@pytest.mark.parametrize("ln", ["recompute", "cached"])
def test_lazy_lens_statistics_equal_the_full_logits(ln: str) -> None:
    model = small("gelu-4l")
    tokens = repeated_tokens(2, 10, model.cfg.d_vocab, seed=3).tokens
    targets = torch.roll(tokens, -1, 1)
    lazy = logit_lens(model, tokens, sublayers=True, ln=ln, chunk_bytes=TINY)
    _, cache = model.run_with_cache(tokens)
    from circuits.analysis.logit_lens import accumulated_resid

    resid, labels = accumulated_resid(model, cache, sublayers=True)
    eager = LensResult(unembed(model, resid, ln, cache), labels, model(tokens))
    assert lazy.labels == eager.labels
    torch.testing.assert_close(lazy.logits, eager.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lazy.final_logits, model(tokens), atol=1e-5, rtol=1e-5)
    for stat in ("target_prob", "target_rank"):
        torch.testing.assert_close(
            getattr(lazy, stat)(targets), getattr(eager, stat)(targets), atol=1e-5, rtol=0
        )
    probs, ids = lazy.top_k(3)
    ref_probs, ref_ids = eager.logits.log_softmax(-1).exp().topk(3, dim=-1)
    torch.testing.assert_close(probs, ref_probs, atol=1e-6, rtol=0)
    assert torch.equal(ids, ref_ids)
    prob, top_probs, top_ids = lazy.read(targets, 3)
    torch.testing.assert_close(prob, eager.target_prob(targets), atol=1e-6, rtol=0)
    torch.testing.assert_close(top_probs, ref_probs, atol=1e-6, rtol=0)
    assert torch.equal(top_ids, ref_ids)
    ref_kl = kl_divergence(model(tokens), eager.logits)
    torch.testing.assert_close(lazy.kl_to_final(), ref_kl, atol=1e-5, rtol=0)


def test_spectrum_forms_have_the_full_circuits_eigenvalues() -> None:
    model = small("attn-only-2l", d_vocab=80)
    for full, spectrum in (
        (full_ov_circuit, full_ov_spectrum),
        (full_qk_circuit, full_qk_spectrum),
    ):
        big, compact = full(model), spectrum(model)
        assert compact.ldim == model.cfg.d_model  # never d_vocab-sized
        dense = torch.linalg.eigvals(big.AB.double())  # [L, H, V], all but d_head of them ~0
        expected = dense.sum(-1).real / dense.abs().sum(-1)
        torch.testing.assert_close(copying_score(compact).double(), expected, atol=1e-4, rtol=0)
        torch.testing.assert_close(copying_score(big), copying_score(compact), atol=1e-4, rtol=0)


def test_diagonal_accuracy_in_tiny_chunks_and_samples() -> None:
    model = small("attn-only-2l", d_vocab=120)
    circuit = full_ov_circuit(model)
    dense = circuit.AB
    diag = dense.diagonal(dim1=-2, dim2=-1)
    expected = ((dense > diag[..., None]).sum(-1) < 5).float().mean(-1)
    torch.testing.assert_close(diagonal_accuracy(circuit, 5, chunk_bytes=TINY), expected)
    rows = torch.randperm(120, generator=torch.Generator().manual_seed(7))[:40].sort().values
    sampled = ((dense[..., rows, :] > diag[..., rows, None]).sum(-1) < 5).float().mean(-1)
    torch.testing.assert_close(diagonal_accuracy(circuit, 5, sample=40, seed=7), sampled)
    # A block for a figure: rows and columns of the circuit, from small factors.
    block = full_ov_circuit(model, rows=range(8), cols=torch.tensor([3, 5]))
    torch.testing.assert_close(block.AB, dense[..., :8, :][..., [3, 5]], atol=1e-5, rtol=1e-5)
    stats = circuit_stats(model, chunk_bytes=TINY)
    torch.testing.assert_close(stats.ov_top5, expected)


def test_threads_are_set_while_running_and_restored() -> None:
    before = torch.get_num_threads()
    seen = []
    model = small("attn-only-2l")
    probe = repeated_tokens(2, 8, model.cfg.d_vocab)
    with torch_threads(1):
        seen.append(torch.get_num_threads())
    hs.head_scores(model, probe, threads=1)
    assert seen == [1] and torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"):
        hs.head_scores(model, probe, threads=0)
    with pytest.raises(TypeError, match="threads"):
        logit_lens(model, probe.tokens, threads=1.5)  # type: ignore[arg-type]


# --- issue 20 regressions ---------------------------------------------------------------------
def test_head_scores_on_a_model_with_fewer_outputs_than_inputs() -> None:
    # d_vocab_out < d_vocab: the default probe drew input ids the model cannot output and the
    # copying score indexed its logits with them (IndexError inside torch).
    model = small("gelu-4l", d_vocab=40, d_vocab_out=25)
    scores = hs.head_scores(model)
    assert all(bool(torch.isfinite(v).all()) for v in scores.values())
    # A probe whose tokens include ids >= d_vocab_out: those attended tokens cannot be copied
    # and do not count; the rest are scored as before.
    tokens = torch.randint(0, 40, (3, 12), generator=torch.Generator().manual_seed(0))
    tokens = torch.cat([tokens, tokens], 1)
    from circuits.tasks import Batch

    probe = Batch(tokens, tokens % 25, torch.ones_like(tokens, dtype=torch.bool), 12)
    values = hs.head_scores(model, probe, ["copying", "copying_top1"])
    assert all(bool(((v >= 0) & (v <= 1)).all()) for v in values.values())


def test_report_refuses_weights_with_a_nan() -> None:
    # Today: an uncaught torch.linalg.eig error from the eigenvalue figure.
    from circuits.report import build_report

    model = small("attn-only-2l")
    with torch.no_grad():
        model.unembed.W_U[3, 7] = float("nan")
    with pytest.raises(ValueError, match=r"not all finite: unembed\.W_U"):
        build_report(model)
    with pytest.raises(ValueError, match="not all finite"):
        copying_score(full_ov_spectrum(model))


# --- the real shapes, slow tier ---------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_shapes_have_the_real_sizes(shape: str) -> None:
    cfg = build(shape).cfg
    want = SHAPES[shape]
    assert all(getattr(cfg, k) == v for k, v in want.items())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("what", "batch", "length", "budget_mb"),
    [("head_scores", 8, 64, 1024), ("logit_lens", 8, 64, 1536), ("report", 0, 0, 3072)],
)
def test_peak_memory_at_the_attn_only_2l_shape(what, batch, length, budget_mb) -> None:
    """Peak RSS of a child process: the copying score held [heads, batch, pos, 48262] logits
    (+6 GB), the lens [point, batch, pos, V] and the report's probe 64 x 2048 tokens of
    patterns and logits (OOM-killed at 23 GB)."""
    from circuits.benchmarks.scale import Row, measure

    row = Row(what, "attn-only-2l", batch, length)
    result = measure(row, threads=2, quick=False, timeout=900)
    assert "error" not in result, result.get("trace", result.get("error"))
    # The report's budget is the process's peak; the others' what the call adds to the model.
    used = result["peak_mb"] if what == "report" else result["above_mb"]
    assert used is not None and used < budget_mb, result


def test_loss_by_position_chunked_equals_full_logits() -> None:
    model = small("gelu-4l")
    tokens = repeated_tokens(3, 10, model.cfg.d_vocab, seed=4).tokens
    mask = torch.rand(tokens.shape, generator=torch.Generator().manual_seed(1)) > 0.3
    with torch.no_grad():
        logits = model(tokens)
    from circuits.analysis import loss_by_position

    for targets in (None, torch.roll(tokens, 1, 1)):
        per = cross_entropy(logits, tokens, targets, mask, per_token=True)
        counted = mask[:, :-1] if targets is None else mask
        expected = torch.where(
            counted.sum(0) > 0, per.sum(0) / counted.sum(0).clamp(min=1), torch.nan
        )
        got = loss_by_position(model, tokens, targets, mask, chunk_bytes=TINY)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0, equal_nan=True)
