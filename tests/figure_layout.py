"""Where a figure's parts land, in px, computed from the figure alone (no browser).

A conservative model of plotly's layout: panels from the axis domains and margins; subplot titles,
tick labels and axis titles as boxes sized from their text (0.6 em per character; x tick labels
counted as turned upright when they would not fit side by side). :func:`layout_problems` lists
the boxes that overlap or leave the figure. ``tests/test_report_browser.py`` checks the same in
Chromium, with the sizes the browser measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go

from circuits.plots.style import MODEBAR_PX, text_px

TICK_FONT = 12
MODEBAR_W = 300  # plotly's toolbar, drawn over the top-right corner on hover (7-9 buttons)
AXIS_TITLE_FONT = 14
LINE = 1.3  # line height per px of font size


@dataclass(frozen=True)
class Box:
    what: str
    x0: float
    y0: float
    x1: float
    y1: float

    def overlaps(self, other: Box, tol: float = 0.5) -> bool:
        return (
            min(self.x1, other.x1) - max(self.x0, other.x0) > tol
            and min(self.y1, other.y1) - max(self.y0, other.y0) > tol
        )


def margins(fig: go.Figure) -> dict[str, float]:
    m = fig.layout.margin
    default = dict(l=80, r=80, t=100, b=80)  # plotly.js defaults
    return {k: float(getattr(m, k)) if getattr(m, k) is not None else v for k, v in default.items()}


def plot_area(fig: go.Figure) -> tuple[float, float, float, float]:
    """(left, top, width, height) of the plot area in px."""
    m = margins(fig)
    return m["l"], m["t"], fig.layout.width - m["l"] - m["r"], fig.layout.height - m["t"] - m["b"]


def _axes(fig: go.Figure, letter: str) -> dict[str, Any]:
    layout = fig.layout.to_plotly_json()
    return {k: v for k, v in layout.items() if k.startswith(f"{letter}axis")}


def _ref(key: str) -> str:  # "xaxis2" -> "x2"
    return key[0] + key[5:]


def tick_labels(fig: go.Figure, axis_key: str, axis: dict[str, Any]) -> list[str]:
    """The tick labels an axis can show: its ticktext, category names, or index numbers."""
    if axis.get("ticktext") is not None:
        return [str(t) for t in axis["ticktext"]]
    letter, ref = axis_key[0], _ref(axis_key)
    for trace in fig.data:
        if (getattr(trace, f"{letter}axis", None) or letter) != ref:
            continue
        values = getattr(trace, letter, None)
        if values is not None and len(values):
            if all(isinstance(v, str) for v in values):
                return list(values)  # categories: every name may be shown
            numbers = [float(v) for v in values if v is not None]  # None: a gap
            if not numbers:
                continue
            # plotly picks round ticks in this range
            return [f"{v:.3g}" for v in (min(numbers), max(numbers))]
        z = getattr(trace, "z", None)
        if z is not None:
            n = len(z[0]) if letter == "x" else len(z)
            return [str(n - 1)]
    return ["0.00"]


def panel_boxes(fig: go.Figure) -> list[tuple[str, Box, dict[str, Any], dict[str, Any], str]]:
    """(name, box, x axis, y axis, x axis key) for every subplot."""
    left, top, w, h = plot_area(fig)
    xs, ys = _axes(fig, "x"), _axes(fig, "y")
    out = []
    for xkey, xa in sorted(xs.items()):
        ykey = "yaxis" + xa.get("anchor", "y")[1:]
        ya = ys.get(ykey, {})
        x0, x1 = xa.get("domain", [0, 1])
        y0, y1 = ya.get("domain", [0, 1])
        box = Box(f"panel {_ref(xkey)}", left + x0 * w, top + (1 - y1) * h, left + x1 * w,
                  top + (1 - y0) * h)  # fmt: skip
        out.append((_ref(xkey), box, xa, ya, xkey))
    return out


def layout_boxes(fig: go.Figure) -> list[Box]:
    """Every panel, tick-label band, axis title, subplot title and the figure title as boxes."""
    boxes: list[Box] = []
    ykeys = _axes(fig, "y")
    for name, p, xa, ya, xkey in panel_boxes(fig):
        boxes.append(p)
        below = p.y1
        if xa.get("showticklabels", True):
            labels = tick_labels(fig, xkey, xa)
            widest = max(text_px(t, TICK_FONT) for t in labels)
            side_by_side = len(labels) * (widest + 4) <= p.x1 - p.x0
            band = TICK_FONT * LINE + 4 if side_by_side else widest + 6
            if xa.get("side") == "top":
                boxes.append(Box(f"x ticks {name}", p.x0, p.y0 - band, p.x1, p.y0))
            else:
                boxes.append(Box(f"x ticks {name}", p.x0, below, p.x1, below + band))
                below += band
        title = (xa.get("title") or {}).get("text")
        if title and xa.get("side") != "top":
            cx, tw = (p.x0 + p.x1) / 2, text_px(title, AXIS_TITLE_FONT)
            boxes.append(Box(f"x title {name}", cx - tw / 2, below, cx + tw / 2,
                             below + AXIS_TITLE_FONT * LINE))  # fmt: skip
        ykey = "yaxis" + xa.get("anchor", "y")[1:]
        side = p.x0
        if ya.get("showticklabels", True):
            labels = tick_labels(fig, ykey, ykeys.get(ykey, {}))
            band = max(text_px(t, TICK_FONT) for t in labels) + 6
            boxes.append(Box(f"y ticks {name}", side - band, p.y0, side, p.y1))
            side -= band
        title = (ya.get("title") or {}).get("text")
        if title:
            cy, th = (p.y0 + p.y1) / 2, text_px(title, AXIS_TITLE_FONT)
            boxes.append(Box(f"y title {name}", side - AXIS_TITLE_FONT * LINE, cy - th / 2, side,
                             cy + th / 2))  # fmt: skip
    boxes += title_boxes(fig)
    left, top, w, h = plot_area(fig)
    for a in fig.layout.annotations:
        if a.xref == "paper" and a.yref == "paper" and a.yanchor == "bottom":  # subplot titles
            size = (a.font.size if a.font and a.font.size else 16) * LINE
            cx, tw = left + a.x * w, text_px(a.text, a.font.size or 16)
            y = top + (1 - a.y) * h
            boxes.append(Box(f"subplot title {a.text}", cx - tw / 2, y - size, cx + tw / 2, y))
    return boxes


def title_boxes(fig: go.Figure) -> list[Box]:
    """The figure title's box, and the toolbar's band at the top-right corner.

    The title's place follows plotly: ``x``/``y`` in container fractions (``y`` unset: centred
    in the top margin), moved by ``pad`` on its anchored side.
    """
    width, height = float(fig.layout.width), float(fig.layout.height)
    boxes = [Box("modebar", width - MODEBAR_W, 0.0, width, float(MODEBAR_PX))]
    title = fig.layout.title
    if not title or not title.text:
        return boxes
    font = title.font.size if title.font and title.font.size else 17
    tw, th = text_px(title.text, font), font * LINE
    x = title.x if title.x is not None else 0.05  # plotly's default template
    x_px = x * width
    pad_l = (title.pad.l or 0) if title.pad else 0
    pad_t = (title.pad.t or 0) if title.pad else 0
    if title.xanchor == "center":
        x0 = x_px - tw / 2
    elif title.xanchor == "right":
        x0 = x_px - tw
    else:
        x0 = x_px + pad_l
    if title.y is None or title.y == "auto":
        y0 = margins(fig)["t"] / 2 - th / 2
    elif title.yanchor == "top":
        y0 = (1 - title.y) * height + pad_t
    elif title.yanchor == "bottom":
        y0 = (1 - title.y) * height - th
    else:
        y0 = (1 - title.y) * height - th / 2
    boxes.append(Box("title", x0, y0, x0 + tw, y0 + th))
    return boxes


def text_label_boxes(fig: go.Figure) -> list[tuple[Box, bool]]:
    """(box, clipped to the plot area) of every text label of a scatter on the first axes.

    Positions follow the axis range (linear or log); an unset range is taken as the data's,
    as plotly's autorange gives it (a few px of padding for markers, ignored here).
    """
    import math

    left, top, w, h = plot_area(fig)
    out = []
    for trace in fig.data:
        if trace.type != "scatter" or not trace.text or "text" not in (trace.mode or ""):
            continue
        xa, ya = fig.layout.xaxis, fig.layout.yaxis
        xs, ys = [float(v) for v in trace.x], [float(v) for v in trace.y]
        if ya.type == "log":
            ys = [math.log10(v) for v in ys]
        x0, x1 = xa.range if xa.range else (min(xs), max(xs))
        y0, y1 = ya.range if ya.range else (min(ys), max(ys))
        positions = trace.textposition
        for i, (x, y, text) in enumerate(zip(xs, ys, trace.text, strict=True)):
            px = left + (x - x0) / ((x1 - x0) or 1) * w
            py = top + (1 - (y - y0) / ((y1 - y0) or 1)) * h
            where = positions[i] if isinstance(positions, tuple | list) else positions or ""
            tw, th = text_px(str(text), TICK_FONT), TICK_FONT * LINE
            bx = px + 4 if "right" in where else px - 4 - tw if "left" in where else px - tw / 2
            by = py - 4 - th if "top" in where else py + 4 if "bottom" in where else py - th / 2
            clip = trace.cliponaxis is not False
            out.append((Box(f"label {text}", bx, by, bx + tw, by + th), clip))
    return out


def layout_problems(fig: go.Figure) -> list[str]:
    """Pairs of boxes that overlap, and boxes outside the figure (cut off)."""
    boxes = layout_boxes(fig)
    problems = []
    left, top, w, h = plot_area(fig)
    for label, clip in text_label_boxes(fig):
        x0, y0, x1, y1 = (left, top, left + w, top + h) if clip else (0, 0, *_size(fig))
        if label.x0 < x0 - 0.5 or label.x1 > x1 + 0.5 or label.y0 < y0 - 0.5 or label.y1 > y1:
            problems.append(f"{label.what} is cut off: {label}")
    for i, a in enumerate(boxes):
        if a.x0 < -0.5 or a.y0 < -0.5 or a.x1 > fig.layout.width + 0.5:
            problems.append(f"{a.what} leaves the figure: {a}")
        if a.y1 > fig.layout.height + 0.5:
            problems.append(f"{a.what} leaves the figure: {a}")
        for b in boxes[i + 1 :]:
            if a.overlaps(b):
                problems.append(f"{a.what} overlaps {b.what}")
    return problems


def _size(fig: go.Figure) -> tuple[float, float]:
    return float(fig.layout.width), float(fig.layout.height)


def colorbar_fits(fig: go.Figure, coloraxis: Any) -> bool:
    """Whether a colour bar at plotly's default x (1.02), with its tick labels and its title
    (above the bar, one line per ``<br>``), fits in the right margin."""
    left, _, w, _ = plot_area(fig)
    bar = coloraxis.colorbar
    labels = [str(t) for t in (bar.ticktext or ["-0.00"])]
    need = 0.02 * w + (bar.thickness or 30) + 8 + max(text_px(t, TICK_FONT) for t in labels)
    title = bar.title.text if bar.title and bar.title.text else ""
    lines = title.split("<br>") if title else [""]
    need_title = 0.02 * w + max(text_px(line, TICK_FONT) for line in lines)
    return left + w + max(need, need_title) <= fig.layout.width
