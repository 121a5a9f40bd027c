"""QK/OV circuits, copying statistics and composition scores: known answers and TL agreement."""

from __future__ import annotations

import pytest
import torch
from analysis_models import J, N, V, random_model
from hypothesis import given, settings
from hypothesis import strategies as st
from transformer_lens.FactoredMatrix import FactoredMatrix
from transformer_lens.utilities import composition_scores as tl_composition_scores

from circuits.analysis import circuits as C
from circuits.analysis.composition import (
    MODES,
    all_composition_scores,
    composition_scores,
    random_baseline,
)


def test_prev_copy_head_full_ov_is_copying(prev_copy_model):
    stats = C.circuit_stats(prev_copy_model)
    assert stats.ov_copying[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert stats.ov_top1[0, 0] == 1.0 and stats.ov_top5[0, 0] == 1.0
    # The full OV circuit is exactly the identity on tokens.
    full = C.full_ov_circuit(prev_copy_model, 0, 0)
    assert torch.allclose(full.AB, torch.eye(V))


def test_prev_copy_head_positional_attention(prev_copy_model):
    pattern = C.positional_attention(prev_copy_model, 0, 0)
    assert pattern.shape == (N, N)
    assert pattern.diagonal(-1).min() > 0.99  # every position attends to the previous one


def test_copying_score_matches_dense_eigenvalues():
    gen = torch.Generator().manual_seed(0)
    A, B = torch.randn(3, 12, 4, generator=gen), torch.randn(3, 4, 12, generator=gen)
    eig = torch.linalg.eigvals((A @ B).double())
    expected = eig.sum(-1).real / eig.abs().sum(-1)
    assert torch.allclose(C.copying_score(FactoredMatrix(A, B)).double(), expected, atol=1e-5)
    assert torch.allclose(C.copying_score(FactoredMatrix(A, -A.mT)), torch.full((3,), -1.0))


def test_diagonal_accuracy_chunked_equals_dense():
    gen = torch.Generator().manual_seed(1)
    A, B = torch.randn(2, 50, 6, generator=gen), torch.randn(2, 6, 50, generator=gen)
    M = A @ B
    for k in (1, 5):
        rank = (M.diagonal(dim1=-2, dim2=-1).unsqueeze(-1) < M).sum(-1)
        expected = (rank < k).float().mean(-1)
        got = C.diagonal_accuracy(FactoredMatrix(A, B), k=k, chunk=7)
        assert torch.equal(got, expected)


def test_circuits_match_transformer_lens_factored_matrix():
    model = random_model()
    assert torch.allclose(C.ov_circuit(model).AB, model.OV.AB, atol=1e-6)
    assert torch.allclose(C.qk_circuit(model).AB, model.QK.AB, atol=1e-6)
    W_E, W_U, W_pos = model.W_E, model.W_U, model.W_pos
    assert torch.allclose(
        C.full_ov_circuit(model, 1, 2).AB, (W_E @ model.OV[1, 2] @ W_U).AB, atol=1e-5
    )
    assert torch.allclose(C.full_qk_circuit(model, 2).AB, (W_E @ model.QK[2] @ W_E.T).AB, atol=1e-5)
    assert torch.allclose(
        C.positional_qk_circuit(model, 0, 3).AB, (W_pos @ model.QK[0, 3] @ W_pos.T).AB, atol=1e-5
    )
    # K-composition circuit, written out densely.
    W_Q, W_K = model.W_Q[2, 1], model.W_K[2, 1]
    dense = (W_E @ W_Q) @ (W_E @ model.OV[0, 3].AB @ W_K).T
    assert torch.allclose(C.k_composition_circuit(model, 0, 3, 2, 1).AB, dense, atol=1e-5)


def test_circuits_same_on_bridge(bridge_of):
    model = random_model(n_layers=2, attn_only=True, normalization_type=None)
    bridge = bridge_of(model)
    for fn in (C.ov_circuit, C.qk_circuit, C.full_ov_circuit, C.full_qk_circuit):
        assert torch.allclose(fn(model).AB, fn(bridge).AB, atol=1e-5), fn.__name__
    ours, theirs = C.circuit_stats(model), C.circuit_stats(bridge)
    assert torch.allclose(ours.ov_copying, theirs.ov_copying, atol=1e-5)
    assert torch.equal(ours.qk_top5, theirs.qk_top5)


def test_bad_layer_head_raise(prev_copy_model):
    with pytest.raises(ValueError, match="layer"):
        C.ov_circuit(prev_copy_model, 1, 0)
    with pytest.raises(ValueError, match="head"):
        C.qk_circuit(prev_copy_model, 0, 2)
    with pytest.raises(ValueError, match="head"):
        C.full_ov_circuit(prev_copy_model, None, 0)
    with pytest.raises(ValueError, match="layer1"):
        C.k_composition_circuit(prev_copy_model, 0, 0, 0, 1)


# --- composition ---


def _tl_raw(model, mode):
    left = FactoredMatrix(model.W_V, model.W_O)
    right = {"Q": model.QK, "K": model.QK.T, "V": model.OV}[mode]
    scores = tl_composition_scores(left, right, broadcast_dims=True).detach()
    layers = torch.arange(model.cfg.n_layers)
    return torch.where((layers[:, None] < layers[None, :])[:, None, :, None], scores, 0.0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("norm", [None, "LN"])
def test_raw_composition_matches_transformer_lens(mode, norm):
    model = random_model(normalization_type=norm)
    ours = composition_scores(model, mode)
    assert ours.shape == (3, 4, 3, 4)
    assert torch.allclose(ours, _tl_raw(model, mode), atol=1e-5)


def test_composition_matches_bridge_all_composition_scores(bridge_of):
    model = random_model(n_layers=3, attn_only=True, normalization_type=None)
    bridge = bridge_of(model)
    scores = all_composition_scores(model)
    on_bridge = all_composition_scores(bridge)
    for mode in MODES:
        tl = bridge.all_composition_scores(mode).scores.detach()
        assert torch.allclose(scores.raw(mode), tl, atol=1e-5), mode
        assert torch.allclose(on_bridge.raw(mode), tl, atol=1e-5), mode


def test_random_baseline_is_what_random_heads_score():
    d_model, d_head = 48, 8
    mean, std = random_baseline(d_model, d_head, n_samples=256, seed=0)
    assert 0 < std < mean < 1
    # An independent estimate: random models' composition scores (different seeds, TL code).
    scores = []
    for seed in range(4):
        model = random_model(n_layers=2, d_model=d_model, n_heads=6, d_head=d_head, seed=seed)
        scores.append(_tl_raw(model, "K")[0, :, 1, :].flatten())
    empirical = torch.cat(scores)
    assert abs(empirical.mean().item() - mean) < 3 * std / len(empirical) ** 0.5 + 0.01
    assert random_baseline(d_model, d_head, n_samples=256, seed=0) == (mean, std)  # seeded


def test_handbuilt_induction_k_composition_only_between_its_heads(induction_model):
    scores = all_composition_scores(induction_model)
    # Perfectly aligned rank-V maps: ||AB|| = ||A||_op ||B|| = ||A|| ||B|| / sqrt(V), the
    # largest score two rank-V isometries can reach.
    assert scores.k[0, 0, 1, 0] == pytest.approx(V**-0.5, abs=1e-5)
    assert scores.excess("K")[0, 0, 1, 0] > 10 * scores.baseline_std  # well above chance
    others = scores.valid.clone()
    others[0, 0, 1, 0] = False
    for mode in MODES:
        # Every other pair lives in orthogonal subspaces: exactly no composition.
        assert scores.raw(mode)[others].abs().max() < 1e-5, mode
    assert scores.q[0, 0, 1, 0] < 1e-5 and scores.v[0, 0, 1, 0] < 1e-5
    assert scores.top_sources("K", 1, 0, k=1)[0][0] == "L0H0"
    # The token-level K-composition circuit matches each query token to itself.
    circuit = induction_model and C.k_composition_circuit(induction_model, 0, 0, 1, 0)
    assert C.diagonal_accuracy(circuit, 1) == 1.0


def test_fold_ln_changes_nothing_without_ln_and_folds_gain():
    model = random_model(normalization_type=None)
    a = all_composition_scores(model)
    b = all_composition_scores(model, fold_ln=True)
    assert torch.equal(a.k, b.k)
    ln_model = random_model()
    folded = composition_scores(ln_model, "K", fold_ln=True)
    with torch.no_grad():  # fold by hand: centre then scale the rows the heads read
        d = ln_model.cfg.d_model
        centre = torch.eye(d) - 1.0 / d
        for block in ln_model.blocks:
            for name in ("W_Q", "W_K", "W_V"):
                w = getattr(block.attn, name)
                w.copy_(centre @ (block.ln1.w[:, None] * w))
    assert torch.allclose(folded, composition_scores(ln_model, "K"), atol=1e-5)


def test_bad_mode_raises():
    with pytest.raises(ValueError, match="mode"):
        composition_scores(random_model(), "X")  # type: ignore[arg-type]


_ = J  # the junk subspaces are part of the hand-built layout


@settings(max_examples=15, deadline=None)
@given(
    n_layers=st.integers(2, 3),
    n_heads=st.integers(1, 3),
    d_model=st.integers(4, 24),
    d_head=st.integers(1, 12),
    seed=st.integers(0, 10_000),
    rank_deficient=st.booleans(),
)
def test_composition_matches_tl_on_random_shapes(
    n_layers, n_heads, d_model, d_head, seed, rank_deficient
):
    model = random_model(
        n_layers=n_layers, n_heads=n_heads, d_model=d_model, d_head=d_head, seed=seed,
        attn_only=True, normalization_type=None,
    )  # fmt: skip
    if rank_deficient:  # repeated columns: a head that uses fewer dims than d_head
        with torch.no_grad():
            for block in model.blocks:
                block.attn.W_V[..., -1] = block.attn.W_V[..., 0]
    for mode in MODES:
        ours = composition_scores(model, mode)
        assert torch.allclose(ours, _tl_raw(model, mode), atol=1e-5), mode
        assert ((ours >= 0) & (ours <= 1 + 1e-6)).all()
    # Scores do not depend on how a head's weights are scaled.
    with torch.no_grad():
        model.blocks[0].attn.W_O.mul_(7.0)
    assert torch.allclose(composition_scores(model, "K"), _tl_raw(model, "K"), atol=1e-5)
