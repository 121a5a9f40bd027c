"""Known-answer tests of circuits.analysis.fourier on hand-built logits, activations and weights."""

from __future__ import annotations

import math

import pytest
import torch

from circuits.analysis import fourier
from circuits.config import ModelConfig
from circuits.model import HookedTransformer

P = 13


def _cos_logits(p: int, alphas: dict[int, float]) -> torch.Tensor:
    """``L[(a, b), c] = sum_k alpha_k cos(w_k (a + b - c))``, a-major."""
    a = torch.arange(p).repeat_interleave(p).double()
    b = torch.arange(p).repeat(p).double()
    c = torch.arange(p).double()
    s = (a + b)[:, None] - c[None, :]
    return sum(al * torch.cos(2 * math.pi * k * s / p) for k, al in alphas.items())


def test_basis_is_orthonormal_and_named():
    basis, names = fourier.fourier_basis(P)
    assert torch.allclose(basis @ basis.T, torch.eye(P, dtype=torch.float64), atol=1e-12)
    assert names[0] == "const" and names[2 * 3 - 1] == "cos 3" and names[2 * 3] == "sin 3"


def test_directions_are_orthonormal():
    d = fourier._directions(P, (1, 4, 6))
    assert torch.allclose(d.T @ d, torch.eye(6, dtype=torch.float64), atol=1e-12)


def test_restricted_and_excluded_loss_on_a_pure_fourier_readout():
    logits = _cos_logits(P, {2: 4.0, 5: 3.0})
    full = float(torch.nn.functional.cross_entropy(logits, fourier._labels(P)))
    assert fourier.restricted_loss(logits, (2, 5)) == pytest.approx(full, abs=1e-9)
    assert fourier.excluded_loss(logits, (2, 5)) == pytest.approx(math.log(P), abs=1e-9)
    # Removing one key frequency leaves the other: the loss stays below chance.
    assert fourier.excluded_loss(logits, (2,)) < math.log(P) - 0.1
    # A frequency not used changes nothing when excluded.
    assert fourier.excluded_loss(logits, (3,)) == pytest.approx(full, abs=1e-9)


def _neuron_acts(p: int, freqs: list[int]) -> torch.Tensor:
    a = torch.arange(p).double()[:, None, None]
    b = torch.arange(p).double()[None, :, None]
    cols = []
    for k in freqs:
        for phase in (0.0, 1.0):
            w = 2 * math.pi * k / p
            cols.append(torch.relu(torch.cos(w * (a + b) + phase)))
    return torch.cat(cols, dim=-1)


def test_key_frequencies_found_from_neurons():
    acts = _neuron_acts(P, [3, 3, 5])
    key = fourier.key_frequencies(acts, threshold=0.3)
    assert key.freqs == (3, 5)
    assert key.explained == 1.0
    assert key.neuron_freq.tolist() == [3, 3, 3, 3, 5, 5]


def test_neuron_fraction_is_one_for_a_linear_cosine_neuron():
    a = torch.arange(P).double()[:, None, None]
    b = torch.arange(P).double()[None, :, None]
    acts = torch.cos(2 * math.pi * 4 * (a + b) / P)
    frac = fourier.neuron_fractions(acts)
    assert frac[3, 0] == pytest.approx(1.0)
    assert frac.sum() == pytest.approx(1.0)


def test_gini_extremes():
    assert fourier.gini(torch.ones(10)) == pytest.approx(0.0)
    assert fourier.gini(torch.tensor([0.0] * 9 + [1.0])) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="non-negative"):
        fourier.gini(torch.tensor([1.0, -1.0]))


def _fourier_model(p: int, freqs: list[int]) -> HookedTransformer:
    """A model whose embedding holds cos/sin of the given frequencies only."""
    cfg = ModelConfig(
        n_layers=1,
        d_model=16,
        n_heads=2,
        d_mlp=32,
        act_fn="relu",
        normalization_type=None,
        n_ctx=3,
        d_vocab=p + 1,
    )
    model = HookedTransformer(cfg)
    basis, _ = fourier.fourier_basis(p)
    with torch.no_grad():
        w = torch.zeros(p + 1, 16)
        for i, k in enumerate(freqs):
            w[:p, 2 * i] = basis[2 * k - 1].float()
            w[:p, 2 * i + 1] = basis[2 * k].float()
        model.embed.W_E.copy_(w)
    return model


def test_embedding_norms_find_the_built_in_frequencies():
    norms = fourier.embedding_norms(_fourier_model(P, [2, 6]), P)
    assert set((norms > 1e-6).nonzero()[:, 0].add(1).tolist()) == {2, 6}
    assert fourier.gini(norms) > 0.6


def test_all_logits_and_activations_shapes():
    model = _fourier_model(P, [1])
    assert fourier.all_logits(model, P, chunk=50).shape == (P * P, P)
    assert fourier.neuron_activations(model, P, chunk=50).shape == (P, P, 32)


@pytest.mark.parametrize("p", [4, 2, 1])
def test_bad_modulus(p):
    with pytest.raises(ValueError, match="p"):
        fourier.fourier_basis(p)


def test_bad_logits_shape():
    with pytest.raises(ValueError, match="p\\^2, p"):
        fourier.restricted_loss(torch.zeros(10, 3), (1,))
    with pytest.raises(ValueError, match="frequency"):
        fourier.restricted_loss(_cos_logits(P, {1: 1.0}), (7,))
