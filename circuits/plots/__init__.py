"""Plotly figures of a model's circuits; every function returns a ``plotly.graph_objects.Figure``.

One module per figure family:

- :mod:`~circuits.plots.attention`: attention patterns, a grid over layers x heads.
- :mod:`~circuits.plots.heads`: head-score and composition-score heatmaps.
- :mod:`~circuits.plots.weights`: QK / OV circuit heatmaps and eigenvalue scatters.
- :mod:`~circuits.plots.lens`: logit-lens / tuned-lens heatmaps.
- :mod:`~circuits.plots.training`: loss and head scores over training, phase change marked.
- :mod:`~circuits.plots.context`: loss by position (in-context learning), one line per model.
- :mod:`~circuits.plots.style`: what they share (colour scales, head labels, grids that fit
  the report's 1200 px column); public, for new figure modules.

Figures take tensors or result objects from :mod:`circuits.analysis`; they compute nothing that
the analysis does not already provide, so what a figure shows is what a test checked.
"""

from __future__ import annotations

from circuits.plots.attention import attention_grid, attention_patterns
from circuits.plots.context import loss_by_position
from circuits.plots.heads import composition_scores, head_scores
from circuits.plots.lens import lens_heatmap
from circuits.plots.style import static_figures
from circuits.plots.training import phase_change_step, training_dynamics
from circuits.plots.weights import circuit_grid, circuit_heatmap, eigenvalues

__all__ = [
    "attention_grid",
    "attention_patterns",
    "circuit_grid",
    "circuit_heatmap",
    "composition_scores",
    "eigenvalues",
    "head_scores",
    "lens_heatmap",
    "loss_by_position",
    "phase_change_step",
    "static_figures",
    "training_dynamics",
]
