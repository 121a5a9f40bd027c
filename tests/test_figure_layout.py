"""Figures fit and do not collide, at every model size: checked from the figure's own layout.

:mod:`figure_layout` turns a figure into boxes in px (panels, tick labels, axis and subplot
titles); these tests assert that no two boxes overlap, nothing leaves the figure, and no figure is
wider than the report's column. ``test_report_browser.py`` checks the same in Chromium.
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from figure_layout import (
    colorbar_fits,
    layout_boxes,
    layout_problems,
    panel_boxes,
    text_label_boxes,
    title_boxes,
)

from circuits import plots
from circuits.plots import discovery as dplots
from circuits.plots.style import FIGURE_CONFIG, MAX_WIDTH, MODEBAR_PX, SEQUENTIAL, grid_size

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
    value = "attention score (pre-softmax)"
    fig = plots.circuit_grid(qk, causal=True, scale="layer", value=value)
    assert fig.layout.title.text.endswith("(colour scale per layer)")
    lower = torch.ones(6, 6, dtype=torch.bool).tril()
    bars = []
    for layer, axis in enumerate(["coloraxis", "coloraxis2", "coloraxis3"]):
        span = float(qk[layer][:, lower].abs().max())
        ca = fig.layout[axis]
        assert ca.cmax == pytest.approx(span, rel=1e-5) and ca.cmin == pytest.approx(-span)
        assert ca.colorbar.title.text.replace("<br>", " ") == f"L{layer}: {value}"
        bars.append((ca.colorbar.y - ca.colorbar.len / 2, ca.colorbar.y + ca.colorbar.len / 2))
        for trace in fig.data[2 * layer : 2 * layer + 2]:
            assert trace.coloraxis == ("coloraxis" if layer == 0 else f"coloraxis{layer + 1}")
    # One bar per row, top to bottom, none overlapping the next; each beside its own row.
    assert all(a[0] >= b[1] - 1e-9 for a, b in itertools.pairwise(bars))
    for (lo, hi), (_, _, _, ya, _) in zip(bars, panel_boxes(fig)[::2], strict=True):
        assert ya["domain"][0] == pytest.approx(lo) and ya["domain"][1] == pytest.approx(hi)
    shared = plots.circuit_grid(qk, causal=True)
    assert shared.layout.title.text.endswith("(one colour scale)")
    assert shared.layout.coloraxis.cmax == pytest.approx(float(qk[..., lower].abs().max()))
    assert "coloraxis2" not in shared.layout.to_plotly_json()  # one scale for all
    assert {t.coloraxis for t in shared.data} == {"coloraxis"}
    with pytest.raises(ValueError, match="scale="):
        plots.circuit_grid(qk, scale="row")


def test_circuit_grids_name_their_axes() -> None:
    fig = plots.circuit_grid(torch.randn(2, 2, 5, 5), "OV", "output token", "input token")
    titles = {b.what for b in layout_boxes(fig) if b.what.startswith(("x title", "y title"))}
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
    assert {s.x0 for s in fig.layout.shapes} == {30} and len(fig.layout.shapes) == 3
    assert np.isclose(labels[0].x, 30)


def history(n_layers: int = 2, n_heads: int = 2) -> list[dict]:
    losses = [3.0, 2.9, 2.8, 2.7, 1.2, 1.0, 0.9]
    g = torch.Generator().manual_seed(0)
    return [
        {
            "step": 25 * (i + 1),
            "loss": loss,
            "accuracy": 1 - loss / 3,
            "previous_token": torch.rand(n_layers, n_heads, generator=g).tolist(),
            "induction": torch.rand(n_layers, n_heads, generator=g).tolist(),
        }
        for i, loss in enumerate(losses)
    ]


class Acdc(SimpleNamespace):
    pass


def acdc_results() -> list[Acdc]:
    # As in notebook 5: the smallest tau keeps the most edges, its label at the right edge.
    return [Acdc(tau=t, n_edges=n, kl=k) for t, n, k in [(0.003, 21, 0.007), (0.03, 10, 0.11),
                                                          (0.3, 9, 0.23)]]  # fmt: skip


def more_figures() -> dict[str, go.Figure]:
    return {
        "training": plots.training_dynamics({"history": history(), "losses": [3.0] * 175}),
        "eigenvalues": plots.eigenvalues(torch.randn(2, 2, 6, 6)),
        "loss by position": plots.loss_by_position({"2L": torch.rand(12)}, early=2, late=10),
        "circuit": plots.circuit_heatmap(torch.randn(8, 8), value="logit contribution"),
        "acdc": dplots.acdc_curve(acdc_results()),
    }


@pytest.mark.parametrize("size", SIZES[:3], ids=[f"{n}x{h}" for n, h in SIZES[:3]])
def test_every_title_sits_below_the_toolbar_band(size: tuple[int, int]) -> None:
    """The toolbar (modebar) covers the top-right corner on hover: titles start below it."""
    for name, fig in {**figures(*size), **more_figures()}.items():
        modebar, title = title_boxes(fig)
        assert title.y0 >= MODEBAR_PX, f"{name}: title at {title}"
        assert not title.overlaps(modebar), name
        assert layout_problems(fig) == [], name


def test_the_layout_model_sees_a_title_under_the_toolbar() -> None:
    """Negative control: the old head-score title, at the very top, meets the toolbar."""
    fig = plots.head_scores(torch.rand(2, 2), "Induction scores")
    fig.update_layout(title=dict(y=0.98, yanchor="top", pad=dict(t=0)))
    assert any("modebar overlaps title" in p for p in layout_problems(fig))


def test_the_report_and_notebooks_show_figures_with_the_shared_config() -> None:
    import plotly.io as pio

    from circuits.report import Section, render

    assert FIGURE_CONFIG["displaylogo"] is False
    page = render([Section("t", "c", plots.head_scores(torch.rand(1, 1)))], "page")
    assert '"displaylogo": false' in page and '"modeBarButtonsToRemove"' in page
    before = pio.renderers["notebook"].config
    try:
        plots.interactive_figures()
        assert pio.renderers["notebook"].config == FIGURE_CONFIG
    finally:
        pio.renderers["notebook"].config = before


def test_training_dynamics_gives_each_trace_its_own_style_and_accuracy_its_own_axis() -> None:
    fig = plots.training_dynamics({"history": history(3, 3), "losses": [3.0] * 175})
    styles = [(t.line.color, t.line.dash or "solid") for t in fig.data]
    assert len(set(styles)) == len(styles)  # no two legend entries look alike
    heads = [t for t in fig.data if t.name[:1] == "L"]
    colour_of: dict[str, set[str]] = {}
    for t in heads:
        colour_of.setdefault(t.name.split()[0], set()).add(t.line.color)
    assert all(len(c) == 1 for c in colour_of.values())  # one colour per head
    assert len({next(iter(c)) for c in colour_of.values()}) == 9  # nine heads, nine colours
    dashes = {t.name.split(" ", 1)[1]: set() for t in heads}
    for t in heads:
        dashes[t.name.split(" ", 1)[1]].add(t.line.dash)
    assert all(len(d) == 1 for d in dashes.values()) and len(dashes) == 2  # one dash per score
    other = {t.line.color for t in fig.data if t not in heads}
    assert not other & {next(iter(c)) for c in colour_of.values()}
    accuracy = next(t for t in fig.data if t.name == "probe accuracy")
    assert {t.yaxis for t in heads} == {"y3"} and accuracy.yaxis == "y2"
    assert tuple(fig.layout.yaxis2.range) == (0, 1.02) and fig.layout.yaxis2.tickformat == ".0%"
    assert "nats" in fig.layout.yaxis.title.text


def test_probabilities_get_a_sequential_unit_scale_and_signed_values_a_diverging_one() -> None:
    attn = causal(1, 1, 6)[0, 0]
    fig = plots.circuit_heatmap(attn, causal=True, value="attention weight", kind="probability")
    heat = fig.data[0]
    assert heat.colorscale == go.Heatmap(colorscale=SEQUENTIAL).colorscale
    assert (heat.zmin, heat.zmax, heat.zmid) == (0.0, 1.0, None)
    assert heat.colorbar.title.text.replace("<br>", " ") == "attention weight"
    signed = plots.circuit_heatmap(torch.tensor([[1.0, -3.0], [0.5, 2.0]]))
    assert signed.data[0].zmid == 0 and signed.data[0].zmin == -3.0
    with pytest.raises(ValueError, match="outside \\[0, 1\\]"):
        plots.circuit_heatmap(torch.tensor([[1.0, -3.0], [0.5, 2.0]]), kind="probability")
    with pytest.raises(ValueError, match="kind="):
        plots.circuit_heatmap(attn, kind="unsigned")
    grid = plots.circuit_grid(causal(2, 2, 5), causal=True, kind="probability")
    assert (grid.layout.coloraxis.cmin, grid.layout.coloraxis.cmax) == (0, 1)


def test_the_models_positional_attention_draws_as_a_probability() -> None:
    from circuits import HookedTransformer, ModelConfig
    from circuits.analysis import circuits as circ

    cfg = ModelConfig(n_layers=1, d_model=16, n_ctx=8, d_vocab=10, n_heads=2, attn_only=True)
    attn = circ.positional_attention(HookedTransformer(cfg), 0, 1)
    fig = plots.circuit_heatmap(attn, causal=True, kind="probability")
    assert fig.data[0].zmin == 0 and fig.data[0].zmax == 1


def test_circuit_colour_bars_say_what_the_value_is_and_fit() -> None:
    value = "logit contribution"
    for fig in (
        plots.circuit_grid(torch.randn(2, 2, 8, 8), value=value),
        plots.circuit_heatmap(torch.randn(8, 8), value=value),
    ):
        bar = fig.layout.coloraxis.colorbar if fig.layout.coloraxis.colorscale else None
        title = (bar or fig.data[0].colorbar).title.text
        assert title.replace("<br>", " ") == value
        assert all(value in t.hovertemplate for t in fig.data)
    grid = plots.circuit_grid(torch.randn(2, 2, 8, 8), value=value)
    assert colorbar_fits(grid, grid.layout.coloraxis)
    layered = plots.circuit_grid(torch.randn(3, 2, 8, 8), value=value, scale="layer")
    assert all(colorbar_fits(layered, layered.layout[a]) for a in ("coloraxis", "coloraxis3"))


def test_the_report_draws_ov_per_layer_and_labels_its_circuits() -> None:
    from circuits import HookedTransformer, ModelConfig
    from circuits.report import sections_for

    cfg = ModelConfig(n_layers=2, d_model=16, n_ctx=24, d_vocab=12, n_heads=2, attn_only=True)
    figs = {s.title: s.figure for s in sections_for(HookedTransformer(cfg).eval())}
    ov = figs["OV circuits"]
    assert "colour scale per head" in ov.layout.title.text
    assert "logit contribution" in ov.layout.coloraxis.colorbar.title.text.replace("<br>", " ")
    for name in ("Positional QK circuits", "Token QK circuits"):
        title = figs[name].layout.coloraxis.colorbar.title.text.replace("<br>", " ")
        assert "attention score (pre-softmax)" in title, name


def test_acdc_labels_stay_inside_the_plot() -> None:
    fig = dplots.acdc_curve(acdc_results())
    labels = text_label_boxes(fig)
    assert len(labels) == 3 and layout_problems(fig) == []
    # Negative control: the old figure (labels right of every point, data-tight axes).
    fig.update_traces(textposition="top right", cliponaxis=True)
    fig.update_xaxes(range=None)
    assert any("τ=0.003 is cut off" in p for p in layout_problems(fig))


@pytest.fixture(scope="module")
def k_induction_scores():
    from circuits.discovery import Problem, exact_patching
    from circuits.discovery.handbuilt import HANDBUILT

    hb = HANDBUILT["k_induction"]()
    problem = Problem.build(hb.model, hb.probe(8, 0), task="induction", metric="logit_diff")
    return exact_patching(problem)


def test_circuit_graph_edges_into_heads_end_at_labelled_ports(k_induction_scores) -> None:
    exact = k_induction_scores
    fig = dplots.circuit_graph(exact, min_fraction=0.0)
    ports = next(t for t in fig.data if list(t.text or [])[:3] == ["q", "k", "v"])
    where = {h: (x, y) for h, x, y in zip(ports.hovertext, ports.x, ports.y, strict=True)}
    heads = [s.name for s in exact.graph.senders if s.kind == "head"]
    assert set(where) == {f"{h}.{k}" for h in heads for k in "qkv"}
    edges = [t for t in fig.data if t.hovertemplate and "->" in t.hovertemplate]
    assert len(edges) == exact.graph.n_edges
    for t in edges:
        receiver = t.hovertemplate.split("->")[1].split("<br>")[0]
        if receiver in where:  # a q/k/v input: the edge ends on its port
            assert (t.x[-1], t.y[-1]) == pytest.approx(where[receiver])
    # Within a head, q below k below v, all on the box's left side.
    for h in heads:
        (xq, yq), (xk, yk), (xv, yv) = (where[f"{h}.{k}"] for k in "qkv")
        assert xq == xk == xv and yq < yk < yv


def test_circuit_graph_has_a_legend_for_colour_and_width_and_greys_idle_nodes(
    k_induction_scores,
) -> None:
    exact = k_induction_scores
    fig = dplots.circuit_graph(exact)
    legend = {t.name: t for t in fig.data if t.showlegend is not False and t.name}
    assert legend["positive score"].line.color == dplots.POSITIVE
    assert legend["negative score"].line.color == dplots.NEGATIVE
    widths = sorted(t.line.width for n, t in legend.items() if n.startswith("|score|"))
    assert widths == pytest.approx([dplots._width(f, 1.0) for f in (0.1, 0.5, 1.0)])
    # pos sits beside embed in the embeddings column; with no edge drawn it is grey, and says so.
    nodes = next(t for t in fig.data if t.mode == "markers+text")
    at = {n: (x, y) for n, x, y in zip(nodes.text, nodes.x, nodes.y, strict=True)}
    assert at["pos"][0] == at["embed"][0] and abs(at["pos"][1] - at["embed"][1]) <= 1
    drawn = {t.hovertemplate.split("->")[0] for t in fig.data if t.hovertemplate}
    colour = dict(zip(nodes.text, nodes.marker.color, strict=True))
    for name in ("embed", "pos"):
        assert (colour[name] == dplots.IDLE) == (name not in drawn)
    if "pos" not in drawn:
        assert any("grey" in n for n in legend)
    assert layout_problems(fig) == []


def test_lens_rows_have_one_naming_whoever_passes_the_labels() -> None:
    from circuits import HookedTransformer, ModelConfig
    from circuits.analysis import logit_lens

    cfg = ModelConfig(n_layers=2, d_model=16, n_ctx=8, d_vocab=10, n_heads=2, attn_only=True)
    tokens = torch.arange(6)[None] % 10
    lens = logit_lens(HookedTransformer(cfg), tokens)
    probs = lens.target_prob(tokens)[:, 0]
    with_labels = plots.lens_heatmap(probs, layer_labels=lens.labels)  # notebook 4
    without = plots.lens_heatmap(probs)  # notebook 6
    assert list(with_labels.data[0].y) == list(without.data[0].y) == ["embed", "after L0",
                                                                        "output"]  # fmt: skip
    mid = plots.lens_row_names(["0_pre", "0_mid", "1_pre", "final_post"], 4)
    assert mid == ["embed", "after L0 attn", "after L0", "output"]
    with pytest.raises(ValueError, match="3 names for 2 rows"):
        plots.lens_heatmap(probs[:2], layer_labels=lens.labels)


def test_per_head_colour_scales_show_a_quiet_head_and_name_its_maximum() -> None:
    g = torch.Generator().manual_seed(0)
    ov = torch.randn(2, 2, 6, 6, generator=g)
    ov[0, 1] *= 1e-3  # a quiet head: blank on a shared or per-layer scale
    fig = plots.circuit_grid(ov, value="logit contribution", scale="head")
    for i, trace in enumerate(fig.data):
        layer, head = divmod(i, 2)
        span = float(ov[layer, head].abs().max())
        np.testing.assert_allclose(np.array(trace.z), ov[layer, head].numpy() / span, rtol=1e-5)
        np.testing.assert_allclose(np.array(trace.customdata), ov[layer, head].numpy())
        assert "%{customdata" in trace.hovertemplate  # hover shows the raw value
        assert fig.layout.annotations[i].text == f"L{layer}H{head} ±{span:.3g}"
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (-1, 1)
    assert "per head" in fig.layout.title.text
    assert layout_problems(fig) == []
    with pytest.raises(ValueError, match="signed circuits"):
        plots.circuit_grid(causal(2, 2, 5), kind="probability", scale="head")
