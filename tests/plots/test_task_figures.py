"""Figures of the issue-25 tasks: what they draw, and bad input refused."""

from __future__ import annotations

import pytest
import torch

from circuits.plots.fourier import frequency_norms_figure, progress_measures_figure
from circuits.plots.markov import kl_by_position_figure, strategy_kl_figure


def test_frequency_norms_colours_the_key_frequencies():
    fig = frequency_norms_figure(torch.tensor([0.1, 2.0, 0.1, 1.5]), [2, 4])
    colours = list(fig.data[0].marker.color)
    assert colours[1] == colours[3] != colours[0] == colours[2]
    assert "2, 4" in fig.layout.title.text
    with pytest.raises(ValueError, match="finite"):
        frequency_norms_figure([float("nan")])


def test_progress_measures_panels():
    hist = [
        {
            "step": s,
            "train_loss": 1.0 / (s + 1),
            "test_loss": 2.0,
            "restricted_loss": 1.5,
            "excluded_loss": 3.0,
            "gini_embed": 0.1 * s,
            "gini_unembed": 0.2,
            "weight_norm_sq": 9.0,
        }
        for s in range(3)
    ]
    fig = progress_measures_figure(hist)
    assert len(fig.data) == 7 and fig.layout.yaxis.type == "log"
    with pytest.raises(ValueError, match="step"):
        progress_measures_figure([{"train_loss": 1.0}])


def test_strategy_kl_shades_each_phase():
    hist = [
        {
            "step": 0,
            "uniform": 0.01,
            "unigram": 0.2,
            "bigram": 0.3,
            "true": 0.3,
            "phase": "uniform",
        },
        {
            "step": 50,
            "uniform": 0.2,
            "unigram": 0.05,
            "bigram": 0.1,
            "true": 0.2,
            "phase": "unigram",
        },
        {
            "step": 100,
            "uniform": 0.3,
            "unigram": 0.1,
            "bigram": 0.02,
            "true": 0.1,
            "phase": "bigram",
        },
    ]
    fig = strategy_kl_figure(hist)
    assert len(fig.layout.shapes) == 3 and len(fig.data) == 4
    assert fig.layout.shapes[0].fillcolor != fig.layout.shapes[2].fillcolor
    with pytest.raises(ValueError, match="phase"):
        strategy_kl_figure([{"step": 0}])
    kl = kl_by_position_figure({"unigram": torch.ones(5), "bigram": torch.ones(5) / 2})
    assert len(fig.data) == 4 and len(kl.data) == 2
