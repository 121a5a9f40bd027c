"""The report renders in a real browser (headless Chromium): every figure drawn, no JS errors,
no text of a figure on another text, no figure cut off, at two model sizes and window widths.

The tests fail, never skip, when Chromium is missing: ``make test`` installs Debian's
``chromium`` when it can (as root with apt-get, like ``.ci/run``) or stops and says how, and
``make test-fast`` leaves this tier out (``-m "not browser"``).
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import plotly.graph_objects as go
import pytest
from plotly.subplots import make_subplots

from circuits import HookedTransformer, ModelConfig
from circuits.plots.style import MAX_WIDTH, position_ticks
from circuits.report import build_report
from circuits.tasks import InductionTask

pytestmark = pytest.mark.browser

# Collects uncaught errors and, once the page has loaded, writes what rendered into the DOM,
# where --dump-dom can read it: per figure, its width, where it ends on the page, whether its
# container scrolls to it, and the pairs of text boxes (titles, tick labels, axis titles, colour
# bar labels, legend entries) that overlap by more than 3 px both ways. Tick labels of one axis
# are one group (plotly spaces or turns them itself; boxes of turned labels overlap at corners).
COLLECTOR = """<script>
window.__errors = [];
window.addEventListener("error", function (e) { window.__errors.push(String(e.message)); });
var TEXT = ".gtitle, .annotation-text, .xtick text, .ytick text, .g-xtitle text, " +
  ".g-ytitle text, .cbaxis text, .cbtitle text, .legendtext";
var GROUPS = ".xaxislayer-above, .yaxislayer-above, .cbaxis";
function textBoxes(plot) {
  var groups = new Map();
  return Array.from(plot.querySelectorAll(TEXT)).map(function (el, i) {
    var g = el.closest(GROUPS), r = el.getBoundingClientRect();
    if (g && !groups.has(g)) groups.set(g, "axis" + groups.size);
    return {text: el.textContent, group: g ? groups.get(g) : "text" + i,
            x0: r.left, y0: r.top, x1: r.right, y1: r.bottom};
  }).filter(function (b) { return b.text && b.x1 > b.x0 && b.y1 > b.y0; });
}
function overlaps(plot) {
  var bs = textBoxes(plot), out = [];
  for (var i = 0; i < bs.length; i++) for (var j = i + 1; j < bs.length; j++) {
    var a = bs[i], b = bs[j];
    if (a.group !== b.group && Math.min(a.x1, b.x1) - Math.max(a.x0, b.x0) > 3 &&
        Math.min(a.y1, b.y1) - Math.max(a.y0, b.y0) > 3) out.push(a.text + " / " + b.text);
  }
  return out;
}
window.addEventListener("load", function () { setTimeout(function () {
  var plots = Array.from(document.querySelectorAll(".js-plotly-plot"));
  var out = document.createElement("pre");
  out.id = "render-check";
  out.textContent = JSON.stringify({
    errors: window.__errors,
    viewport: document.documentElement.clientWidth,
    plots: plots.length,
    svgs: document.querySelectorAll(".main-svg").length,
    traces: plots.map(function (d) { return (d.data || []).length; }),
    widths: plots.map(function (d) { return d._fullLayout.width; }),
    right: plots.map(function (d) { return d.getBoundingClientRect().right; }),
    scrolls: plots.map(function (d) {
      var box = d.closest(".figure");
      return box !== null && getComputedStyle(box).overflowX === "auto" &&
        box.scrollWidth >= d._fullLayout.width;
    }),
    texts: plots.map(function (d) { return textBoxes(d).length; }),
    overlaps: plots.map(overlaps)
  });
  document.body.appendChild(out);
}, 200); });
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    # A skip would hide the whole tier: say what is missing and how to get it instead.
    pytest.fail(
        "chromium is not installed: apt-get install chromium (make test does it as root), "
        'or leave the browser tier out with -m "not browser"'
    )


def run_chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp / 'profile'}",
        "--virtual-time-budget=10000",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def render(page: str, tmp: Path, window: tuple[int, int] = (1280, 1000)) -> dict:
    path = tmp / "page.html"
    path.write_text(page.replace("<head>", "<head>\n" + COLLECTOR, 1), encoding="utf-8")
    proc = run_chromium(
        [f"--window-size={window[0]},{window[1]}", "--dump-dom", path.as_uri()], tmp
    )
    match = re.search(r'<pre id="render-check">([^<]*)</pre>', proc.stdout)
    assert match, f"page did not finish loading; chromium stderr:\n{proc.stderr[-2000:]}"
    return json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def report_of(n_layers: int, n_heads: int) -> str:
    cfg = ModelConfig(
        n_layers=n_layers,
        d_model=8 * n_heads,
        d_head=8,
        n_ctx=24,
        d_vocab=12,
        n_heads=n_heads,
        attn_only=True,
        normalization_type=None,
    )
    task = InductionTask(d_vocab=12, seq_len=24, min_period=3, max_period=10)
    history = [
        {"step": s, "loss": 2 - s / 50, "accuracy": s / 50, "previous_token": [[0.1] * n_heads]}
        for s in (10, 20, 30)
    ]
    return build_report(HookedTransformer(cfg), task, history, [2.0] * 30)


# Two model sizes in two windows: a 1-layer, 1-head model in a wide window, where every figure
# must be in view; a 3-layer, 3-head model in a window narrower than its widest figures, which
# must scroll in their own boxes rather than be cut off.
SIZES = [((1, 1), (1400, 1000)), ((3, 3), (900, 1000))]


@pytest.mark.parametrize("size,window", SIZES, ids=["1x1-wide", "3x3-narrow"])
def test_report_figures_fit_and_no_text_overlaps(
    size: tuple[int, int], window: tuple[int, int], tmp_path: Path
) -> None:
    page = report_of(*size)
    result = render(page, tmp_path, window)
    assert result["errors"] == []
    assert result["plots"] == len(re.findall(r'<div id="fig-s\d+"', page))
    assert min(result["texts"]) >= 5, result["texts"]  # titles and tick labels were measured
    overlapping = {i: o for i, o in enumerate(result["overlaps"]) if o}
    assert overlapping == {}, "text overlaps in figures (by index): " + json.dumps(overlapping)
    assert max(result["widths"]) <= MAX_WIDTH
    for width, right, scrolls in zip(
        result["widths"], result["right"], result["scrolls"], strict=True
    ):
        assert scrolls, "a figure's box does not scroll to its whole width"
        if window[0] >= MAX_WIDTH + 100:
            assert right <= result["viewport"], f"a {width} px figure is cut off"
    if window[0] < MAX_WIDTH:
        assert max(result["right"]) > result["viewport"]  # the narrow case was exercised


@pytest.fixture(scope="module")
def report_page() -> str:
    cfg = ModelConfig(
        n_layers=2,
        d_model=16,
        n_ctx=24,
        d_vocab=12,
        n_heads=2,
        attn_only=True,
        normalization_type=None,
    )
    task = InductionTask(d_vocab=12, seq_len=24, min_period=3, max_period=10)
    history = [
        {"step": s, "loss": 2 - s / 50, "accuracy": s / 50, "previous_token": [[0.1, 0.2]] * 2}
        for s in (10, 20, 30)
    ]
    return build_report(HookedTransformer(cfg), task, history, [2.0] * 30)


def test_report_renders_every_figure_without_errors(report_page: str, tmp_path: Path) -> None:
    n_figures = len(re.findall(r'<div id="fig-s\d+"', report_page))
    # Negative control for the overlap check: one more figure, the attention grid as it was laid
    # out before (spacing in fractions, tick labels on every panel), where the lower row's
    # titles sit on the upper row's upright tick labels.
    squashed = make_subplots(rows=2, cols=2, subplot_titles=["L0H0", "L0H1", "L1H0", "L1H1"],
                             horizontal_spacing=0.04, vertical_spacing=0.12)  # fmt: skip
    for i in range(4):
        squashed.add_trace(
            go.Heatmap(z=[[0.5] * 21] * 21, coloraxis="coloraxis"), i // 2 + 1, i % 2 + 1
        )
    ticks = position_ticks([str(t % 25) for t in range(21)], max_ticks=12)
    squashed.update_xaxes(**ticks).update_yaxes(**ticks, autorange="reversed")
    squashed.update_layout(width=600, height=560, margin=dict(l=60, r=40, t=80, b=50))
    extra = squashed.to_html(full_html=False, include_plotlyjs=False, div_id="squashed")
    result = render(report_page.replace("</body>", extra + "</body>"), tmp_path)
    assert result["errors"] == []
    assert result["plots"] == n_figures + 1 and n_figures == 10
    assert result["svgs"] >= n_figures
    assert all(n > 0 for n in result["traces"])  # every figure has its data attached
    assert all(o == [] for o in result["overlaps"][:-1]), result["overlaps"]
    assert any("L1H" in pair for pair in result["overlaps"][-1]), result["overlaps"]


def test_the_error_collector_catches_a_broken_page(report_page: str, tmp_path: Path) -> None:
    # Negative control: the same page with plotly.js removed must report errors, no plots.
    broken = re.sub(
        r"<script type=\"text/javascript\">.*?</script>", "", report_page, count=1, flags=re.S
    )
    result = render(broken, tmp_path)
    assert any("Plotly" in e for e in result["errors"])
    assert result["plots"] == 0


def test_screenshot_is_a_real_image(report_page: str, tmp_path: Path) -> None:
    path = tmp_path / "page.html"
    path.write_text(report_page, encoding="utf-8")
    shot = tmp_path / "shot.png"
    run_chromium(["--window-size=1200,1600", f"--screenshot={shot}", path.as_uri()], tmp_path)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1200, 1600)
    # A blank page compresses to a few kB; figures, text and colour do not.
    assert len(data) > 50_000
