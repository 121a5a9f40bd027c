"""What every figure shares: colour scales, labels, array conversion, and grids that fit a page.

Public so that the report, notebooks and new figure modules use the same conventions:

- one colour scale per meaning (:data:`SEQUENTIAL`, :data:`DIVERGING`);
- head names ``L{layer}H{head}`` (:func:`head_label`) and position labels ``i:token``;
- :func:`grid_size` / :func:`subplot_grid`: a grid of panels laid out in pixels, so that a
  subplot title never meets the tick labels of the panel above and no figure is wider than
  :data:`MAX_WIDTH` (the report's content column): panels shrink as heads are added;
- :data:`FIGURE_CONFIG`: plotly's display options for every figure (report and notebooks), and
  :func:`finish`, which puts each title below the band where plotly draws its toolbar.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from circuits.names import head_name
from circuits.plots.tokens import visible

# One colour scale per meaning, so every figure reads the same way.
SEQUENTIAL = "Blues"  # attention weights, probabilities, scores in [0, 1]
DIVERGING = "RdBu_r"  # signed quantities, centred on zero (or a baseline); red is positive

# One colour per head in line plots (D3's and Dark24's distinct hues, without the greys and
# black that mark losses, and without orange, which marks the phase change).
HEAD_COLOURS = (
    "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
    "#2e91e5", "#e15f99", "#1ca71c", "#fb0d0d", "#da16ff", "#b68100", "#750d86", "#511cfb",
    "#00a08b", "#fb00d1", "#fc0080", "#6c7c32", "#862a16", "#a777f1", "#620042", "#1616a7",
    "#da60ca", "#6c4516", "#0d2a63", "#af0038",
)  # fmt: skip
PHASE_COLOUR = "#ff7f0e"  # the phase-change line

MAX_WIDTH = 1200
"""Widest figure, in px: the report's content column, so that no figure is cut off."""

SUBPLOT_TITLE_FONT = 14
TITLE_PX = 24
"""Height reserved above a panel for its subplot title (font and padding), in px."""

TITLE_FONT = 17  # plotly's default figure-title size
MODEBAR_PX = 32
"""Height of the band at the top of every figure kept free for plotly's toolbar (the modebar,
drawn over the figure's top-right corner on hover): the title starts below it."""

FIGURE_CONFIG: dict[str, Any] = {
    "displaylogo": False,
    # Box/lasso selection and spike lines do nothing useful on these figures.
    "modeBarButtonsToRemove": ["select2d", "lasso2d", "toggleSpikelines"],
    "displayModeBar": "hover",
}
"""plotly's display options for every figure: pass as ``config=`` to ``to_html`` / ``show``
(the report does), or call :func:`interactive_figures` once in a notebook."""


def to_numpy(x: Any, name: str, ndim: int | None = None) -> np.ndarray:
    """A detached float numpy array from a tensor, FactoredMatrix, array or nested list."""
    if hasattr(x, "AB") and hasattr(x, "A") and hasattr(x, "B"):  # FactoredMatrix
        x = x.AB
    if hasattr(x, "detach"):
        x = x.detach().cpu().float().numpy()
    try:
        arr = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"{name} must be a tensor or array of numbers, got {type(x).__name__}"
        ) from e
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(arr.shape)}")
    return arr


def head_label(layer: int, head: int) -> str:
    """The display name of a head: ``L{layer}H{head}`` (:func:`circuits.names.head_name`)."""
    return head_name(layer, head)


def head_labels(n_layers: int, n_heads: int, first_layer: int = 0) -> list[str]:
    """Names of every head of layers ``first_layer .. n_layers - 1``, layer-major."""
    return [head_label(lay, h) for lay in range(first_layer, n_layers) for h in range(n_heads)]


def token_labels(tokens: Any, n: int, name: str = "tokens") -> list[str]:
    """``n`` display labels for a sequence of token ids or strings (or positions if None).

    Strings are shown through :func:`circuits.plots.tokens.visible` ("␣cat", "\\n"); turn ids
    into strings with :func:`circuits.plots.tokens.token_strings` first.
    """
    if tokens is None:
        return [str(i) for i in range(n)]
    if hasattr(tokens, "tolist"):
        tokens = tokens.tolist()
    if isinstance(tokens, Sequence) and tokens and isinstance(tokens[0], list):
        if len(tokens) != 1:
            raise ValueError(f"{name} must be one sequence, got a batch of {len(tokens)}")
        tokens = tokens[0]
    if not isinstance(tokens, Sequence) or isinstance(tokens, str):
        raise TypeError(f"{name} must be a sequence of token ids or strings")
    if len(tokens) != n:
        raise ValueError(f"{name} has {len(tokens)} entries but the data has {n} positions")
    # Strings are token text: whitespace and unprintable characters made visible.
    return [visible(t) if isinstance(t, str) else str(t) for t in tokens]


def position_ticks(labels: list[str], max_ticks: int = 24) -> dict[str, Any]:
    """Axis settings that label positions ``i`` as ``i:token``, thinned to ``max_ticks``."""
    step = max(1, -(-len(labels) // max(max_ticks, 1)))
    idx = list(range(0, len(labels), step))
    return dict(tickmode="array", tickvals=idx, ticktext=[f"{i}:{labels[i]}" for i in idx])


@dataclass(frozen=True)
class GridSize:
    """Pixel geometry of a ``rows x cols`` grid of equal panels.

    ``horizontal_spacing`` / ``vertical_spacing`` are fractions of the plot area, as
    ``make_subplots`` takes them; ``gap_x`` / ``gap_y`` are the same gaps in px.
    """

    rows: int
    cols: int
    width: int
    height: int
    panel_w: float
    panel_h: float
    gap_x: float
    gap_y: float
    margin: dict[str, int]

    @property
    def horizontal_spacing(self) -> float:
        return self.gap_x / self.plot_w if self.cols > 1 else 0.0

    @property
    def vertical_spacing(self) -> float:
        return self.gap_y / self.plot_h if self.rows > 1 else 0.0

    @property
    def plot_w(self) -> float:
        return self.cols * self.panel_w + (self.cols - 1) * self.gap_x

    @property
    def plot_h(self) -> float:
        return self.rows * self.panel_h + (self.rows - 1) * self.gap_y


def grid_size(
    rows: int,
    cols: int,
    panel_px: float,
    *,
    gap_x: float,
    gap_y: float,
    margin: dict[str, int],
    aspect: float = 1.0,
    max_width: int = MAX_WIDTH,
    min_panel_px: float = 40.0,
) -> GridSize:
    """Panels of ``panel_px`` (height ``aspect * width``), shrunk so the figure fits ``max_width``.

    Panels never shrink below ``min_panel_px``; a grid too wide even then (dozens of heads) is
    wider than ``max_width`` and scrolls in the report.
    """
    if rows < 1 or cols < 1:
        raise ValueError(f"a grid needs at least one row and column, got {rows}x{cols}")
    room = max_width - margin["l"] - margin["r"] - gap_x * (cols - 1)
    panel_w = max(min(float(panel_px), room / cols), min_panel_px)
    panel_h = panel_w * aspect
    width = margin["l"] + margin["r"] + cols * panel_w + (cols - 1) * gap_x
    height = margin["t"] + margin["b"] + rows * panel_h + (rows - 1) * gap_y
    return GridSize(
        rows=rows,
        cols=cols,
        width=int(np.ceil(width)),
        height=int(np.ceil(height)),
        panel_w=panel_w,
        panel_h=panel_h,
        gap_x=gap_x,
        gap_y=gap_y,
        margin=dict(margin),
    )


def subplot_grid(size: GridSize, titles: Sequence[str] | None = None) -> go.Figure:
    """An empty ``make_subplots`` figure with ``size``'s spacing, width, height and margins."""
    fig = make_subplots(
        rows=size.rows,
        cols=size.cols,
        subplot_titles=list(titles) if titles is not None else None,
        horizontal_spacing=size.horizontal_spacing,
        vertical_spacing=size.vertical_spacing,
    )
    fig.update_annotations(font_size=SUBPLOT_TITLE_FONT)
    fig.update_layout(width=size.width, height=size.height, margin=size.margin)
    return fig


def text_px(text: str, font_px: float = 12) -> int:
    """About how wide ``text`` is in plotly's default font (0.6 em per character), in px."""
    return int(np.ceil(0.6 * font_px * len(text)))


def title_px(title: str) -> int:
    """About how wide a figure must be to show ``title`` (17 px font) in full, in px."""
    return text_px(title, 17) + 60


def title_top_px() -> int:
    """Where every figure's title starts, in px from the top: just below the toolbar band."""
    return MODEBAR_PX + 4


def finish(fig: go.Figure, title: str) -> go.Figure:
    """Sets the figure's title below the toolbar band, widening the figure if the title would
    be cut off and deepening the top margin if the title would reach the plot area."""
    width = fig.layout.width
    if width is not None and width < title_px(title):
        fig.update_layout(width=title_px(title))
    # The top margin holds the toolbar band, the title and a gap; figures that put more there
    # (subplot titles, top tick labels) set a larger margin themselves.
    need = title_top_px() + int(TITLE_FONT * 1.3) + 8
    if fig.layout.margin.t is not None and fig.layout.margin.t < need:  # None: plotly's 100
        fig.update_layout(margin_t=need)
    fig.update_layout(
        title=dict(
            text=title,
            x=0.02,
            xanchor="left",
            xref="container",
            y=1.0,
            yanchor="top",
            yref="container",
            pad=dict(t=title_top_px()),
            font_size=TITLE_FONT,
        )
    )
    return fig


def outer_tick_labels(fig: go.Figure, size: GridSize) -> None:
    """Tick labels on the bottom row's x axes and the first column's y axes only.

    Every panel of a grid shares its axes' meaning (positions, tokens), so inner tick labels
    would only crowd the gaps between panels.
    """
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    fig.update_xaxes(showticklabels=True, row=size.rows)
    fig.update_yaxes(showticklabels=True, col=1)


def grid_axis_titles(fig: go.Figure, size: GridSize, x_title: str, y_title: str) -> None:
    """Axis titles of a grid: x under the bottom row, y beside the first column.

    A title longer than a panel is written once (under the first column, beside the last
    row), since repeated it would run into its neighbours.
    """
    x_cols = None if text_px(x_title, 14) + 8 <= size.panel_w + size.gap_x else 1
    y_rows = None if text_px(y_title, 14) + 8 <= size.panel_h + size.gap_y else size.rows
    fig.update_xaxes(title_text=x_title, title_standoff=4, row=size.rows, col=x_cols)
    fig.update_yaxes(title_text=y_title, title_standoff=4, col=1, row=y_rows)


def row_colorbar(size: GridSize, row: int, title: str) -> dict[str, Any]:
    """A colour bar beside panel row ``row`` (0-based, top first), as tall as the row."""
    top = 1.0 - row * (size.panel_h + size.gap_y) / size.plot_h
    return dict(
        # Above the bar: a title at its side would overlap the tick labels.
        title=dict(text=title, side="top"),
        y=top - size.panel_h / size.plot_h / 2,
        yanchor="middle",
        len=size.panel_h / size.plot_h,
        lenmode="fraction",
        thickness=14,
    )


def interactive_figures() -> None:
    """Makes notebooks show interactive figures with :data:`FIGURE_CONFIG` (the report's)."""
    import plotly.io as pio

    for name in pio.renderers:
        renderer = pio.renderers[name]
        if hasattr(renderer, "config"):
            renderer.config = dict(FIGURE_CONFIG)


def static_figures(scale: float = 1.0) -> None:
    """Shows figures in notebooks as static PNG images, which code hosts display.

    For storing executed notebooks in a repository: an interactive figure's output is JSON that
    only a running Jupyter draws. Needs ``kaleido`` (the dev extra) and Chrome or Chromium; one
    renderer process is started and reused for every figure.
    """
    try:
        import kaleido
    except ImportError as e:
        raise ImportError("static figures need kaleido: pip install 'kaleido>=1.0'") from e
    import warnings

    import plotly.io as pio

    # plotly passes per-call options that a running server has already fixed; it says so on
    # every figure.
    warnings.filterwarnings("ignore", "The kopts argument is ignored", UserWarning)
    kaleido.start_sync_server(silence_warnings=True)
    pio.renderers.default = "png"
    pio.renderers["png"].scale = scale
