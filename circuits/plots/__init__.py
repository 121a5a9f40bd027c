"""Plotly figures of a model's circuits; every function returns a ``plotly.graph_objects.Figure``.

One module per figure family:

- :mod:`~circuits.plots.attention`: attention patterns, a grid over layers x heads.
- :mod:`~circuits.plots.heads`: head-score and composition-score heatmaps.
- :mod:`~circuits.plots.weights`: QK / OV circuit heatmaps and eigenvalue scatters.
- :mod:`~circuits.plots.lens`: logit-lens / tuned-lens heatmaps.
- :mod:`~circuits.plots.training`: loss and head scores over training, phase change marked.
- :mod:`~circuits.plots.context`: loss by position (in-context learning), one line per model.
- :mod:`~circuits.plots.tokens`: token strings from a tokenizer, whitespace made visible.
- :mod:`~circuits.plots.style`: what they share (colour scales, head labels, grids that fit
  the report's 1200 px column, the toolbar config); public, for new figure modules.

Figure by figure, with scales and units: ``docs/figures.md``.

Figures take tensors or result objects from :mod:`circuits.analysis`; they compute nothing that
the analysis does not already provide, so what a figure shows is what a test checked.
"""

from __future__ import annotations

from circuits.plots.attention import attention_grid, attention_patterns
from circuits.plots.context import loss_by_position
from circuits.plots.heads import composition_scores, head_scores
from circuits.plots.lens import lens_heatmap, lens_row_names
from circuits.plots.style import FIGURE_CONFIG, interactive_figures, static_figures
from circuits.plots.tokens import token_strings
from circuits.plots.training import phase_change_step, training_dynamics
from circuits.plots.weights import circuit_grid, circuit_heatmap, eigenvalues

__all__ = [
    "FIGURE_CONFIG",
    "attention_grid",
    "attention_patterns",
    "circuit_grid",
    "circuit_heatmap",
    "composition_scores",
    "eigenvalues",
    "head_scores",
    "interactive_figures",
    "lens_heatmap",
    "lens_row_names",
    "loss_by_position",
    "phase_change_step",
    "static_figures",
    "token_strings",
    "training_dynamics",
]
