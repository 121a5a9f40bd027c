"""Figures fit and do not collide, at every model size: checked from the figure's own layout.

:mod:`figure_layout` turns a figure into boxes in px (panels, tick labels, axis and subplot
titles); these tests assert that no two boxes overlap, nothing leaves the figure, and no figure is
wider than the report's column. ``test_report_browser.py`` checks the same in Chromium.
"""

from __future__ import annotations

import itertools

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from figure_layout import colorbar_fits, layout_boxes, layout_problems, panel_boxes

from circuits import plots
from circuits.plots.style import MAX_WIDTH, grid_size

SIZES = [(1, 1), (2, 2), (3, 3), (4, 8)]


def causal(n_layers: int, n_heads: int, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n_layers, n_heads, n, n, generator=g)
    return scores.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), -torch.inf).softmax(-1)


def figures(n_layers: int, n_heads: int) -> dict[str, go.Figure]:
    g = torch.Generator().manual_seed(n_layers * 10 + n_heads)
    out = {
        "attention": plots.attention_grid(causal(n_layers, n_heads, 21), list(range(21))),
        "positional QK": plots.circuit_grid(
            torch.randn(n_layers, n_heads, 48, 48, generator=g),
            "Positional QK",
            "key position",
            "query position",
            causal=True,
            scale="layer",
        ),
        "OV": plots.circuit_grid(
            torch.randn(n_layers, n_heads, 32, 32, generator=g), "OV", "output token", "input"
        ),
        "head scores": plots.head_scores(torch.rand(n_layers, n_heads, generator=g)),
        "lens": plots.lens_heatmap(
            torch.rand(n_layers + 1, 21, generator=g),
            list(range(21)),
            torch.randint(0, 32, (n_layers + 1, 21), generator=g),
        ),
    }
    if n_layers > 1:
        raw = {m: torch.rand(n_layers, n_heads, n_layers, n_heads, generator=g) for m in "QKV"}
        out["composition"] = plots.composition_scores(raw, baseline=0.17)
    return out


@pytest.mark.parametrize("size", SIZES, ids=[f"{n}x{h}" for n, h in SIZES])
def test_no_figure_overlaps_itself_or_is_cut_off(size: tuple[int, int]) -> None:
    for name, fig in figures(*size).items():
        assert fig.layout.width <= MAX_WIDTH, f"{name} is {fig.layout.width} px wide"
        assert layout_problems(fig) == [], name


def test_the_layout_model_sees_a_collision() -> None:
    """Negative control: panels squeezed together make the checker report overlaps."""
    fig = plots.attention_grid(causal(2, 2, 21), list(range(21)))
    fig.update_layout(height=250)  # the same grid squashed: titles land on tick labels
    fig.update_xaxes(showticklabels=True)
    problems = layout_problems(fig)
    assert any("subplot title" in p for p in problems)
    fig = plots.composition_scores({"K": torch.rand(3, 3, 3, 3)})
    fig.update_layout(margin=dict(l=0))  # no room left for the row labels
    assert any("y ticks x leaves the figure" in p for p in layout_problems(fig))


def test_grid_panels_shrink_to_fit_the_column_but_keep_a_minimum() -> None:
    margin = dict(l=50, r=50, t=50, b=50)
    fits = grid_size(2, 8, 220, gap_x=10, gap_y=30, margin=margin)
    assert fits.width <= MAX_WIDTH and fits.panel_w < 220
    assert fits.panel_w == pytest.approx((MAX_WIDTH - 100 - 70) / 8)
    roomy = grid_size(1, 2, 220, gap_x=10, gap_y=30, margin=margin)
    assert roomy.panel_w == 220 and roomy.width == 100 + 450
    too_many = grid_size(1, 64, 220, gap_x=10, gap_y=30, margin=margin, min_panel_px=40)
    assert too_many.panel_w == 40 and too_many.width > MAX_WIDTH  # scrolls in the report
    with pytest.raises(ValueError, match="at least one row"):
        grid_size(0, 2, 100, gap_x=0, gap_y=0, margin=margin)


def test_grid_tick_labels_only_on_the_outer_panels() -> None:
    fig = plots.attention_grid(causal(3, 3, 8))
    shown = {
        name: (xa.get("showticklabels", True), ya.get("showticklabels", True))
        for name, _, xa, ya, _ in panel_boxes(fig)
    }
    # Panels are numbered row-major: x1..x3 is the top row, x7..x9 the bottom one.
    assert shown["x7"] == (True, True) and shown["x9"] == (True, False)
    assert shown["x"] == (False, True) and shown["x5"] == (False, False)


def test_per_layer_colour_scales_follow_each_layers_range() -> None:
    g = torch.Generator().manual_seed(0)
    qk = torch.randn(3, 2, 6, 6, generator=g)
    qk[1] *= 0.01  # a later layer ten times quieter: blank on a shared scale
    qk[2] *= 5.0
    fig = plots.circuit_grid(qk, causal=True, scale="layer")
    lower = torch.ones(6, 6, dtype=torch.bool).tril()
    bars = []
    for layer, axis in enumerate(["coloraxis", "coloraxis2", "coloraxis3"]):
        span = float(qk[layer][:, lower].abs().max())
        ca = fig.layout[axis]
        assert ca.cmax == pytest.approx(span, rel=1e-5) and ca.cmin == pytest.approx(-span)
        assert ca.colorbar.title.text == f"layer {layer}"
        bars.append((ca.colorbar.y - ca.colorbar.len / 2, ca.colorbar.y + ca.colorbar.len / 2))
        for trace in fig.data[2 * layer : 2 * layer + 2]:
            assert trace.coloraxis == ("coloraxis" if layer == 0 else f"coloraxis{layer + 1}")
    # One bar per row, top to bottom, none overlapping the next; each beside its own row.
    assert all(a[0] >= b[1] - 1e-9 for a, b in itertools.pairwise(bars))
    for (lo, hi), (_, _, _, ya, _) in zip(bars, panel_boxes(fig)[::2], strict=True):
        assert ya["domain"][0] == pytest.approx(lo) and ya["domain"][1] == pytest.approx(hi)
    shared = plots.circuit_grid(qk, causal=True)
    assert shared.layout.coloraxis.cmax == pytest.approx(float(qk[..., lower].abs().max()))
    assert "coloraxis2" not in shared.layout.to_plotly_json()  # one scale for all
    assert {t.coloraxis for t in shared.data} == {"coloraxis"}
    with pytest.raises(ValueError, match="scale="):
        plots.circuit_grid(qk, scale="head")


def test_circuit_grids_name_their_axes() -> None:
    fig = plots.circuit_grid(torch.randn(2, 2, 5, 5), "OV", "output token", "input token")
    titles = {b.what for b in layout_boxes(fig) if "title" in b.what and "subplot" not in b.what}
    # x titles under the bottom row (panels x3, x4), y titles beside the first column (x, x3).
    assert titles == {"x title x3", "x title x4", "y title x", "y title x3"}
    assert fig.layout.xaxis3.title.text == "output token"
    assert fig.layout.yaxis.title.text == "input token"


def test_colour_bars_fit_in_the_right_margin() -> None:
    for size in SIZES[1:]:
        figs = figures(*size)
        assert colorbar_fits(figs["composition"], figs["composition"].layout.coloraxis)
        assert colorbar_fits(figs["attention"], figs["attention"].layout.coloraxis)


def test_cell_values_are_written_only_where_they_fit() -> None:
    small = plots.composition_scores({"K": torch.rand(2, 2, 2, 2)})
    big = plots.composition_scores({m: torch.rand(4, 8, 4, 8) for m in "QKV"})
    assert small.data[0].texttemplate and big.data[0].texttemplate is None
    many = plots.head_scores(torch.rand(2, 40))
    assert (
        many.data[0].texttemplate is None
        and plots.head_scores(torch.rand(2, 2)).data[0].texttemplate
    )


def test_long_titles_widen_small_figures() -> None:
    title = "A long title that a one-head figure would otherwise cut off at its right edge"
    fig = plots.head_scores(torch.rand(1, 1), title, threshold=None)
    assert fig.layout.width >= 10 * len(title)


def test_the_phase_change_is_labelled_once_inside_the_loss_panel() -> None:
    points = ((10, 3.0), (20, 2.9), (30, 1.0), (40, 0.9))
    history = [{"step": s, "loss": v, "accuracy": 1 - v / 3} for s, v in points]
    fig = plots.training_dynamics(history)
    labels = [a for a in fig.layout.annotations if "phase change" in a.text]
    assert len(labels) == 1 and labels[0].yref == "y domain"
    assert {s.x0 for s in fig.layout.shapes} == {30} and len(fig.layout.shapes) == 2
    assert np.isclose(labels[0].x, 30)
