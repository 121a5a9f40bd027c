"""The report renders in a real browser (headless Chromium): every figure drawn, no JS errors.

Locally the test skips when Chromium is missing; in CI (``CI=true``) it fails instead, since
``.ci/run`` installs Debian's ``chromium``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from circuits import HookedTransformer, ModelConfig
from circuits.report import build_report
from circuits.tasks import InductionTask

pytestmark = pytest.mark.browser

# Collects uncaught errors and, once the page has loaded, writes what rendered into the DOM,
# where --dump-dom can read it.
COLLECTOR = """<script>
window.__errors = [];
window.addEventListener("error", function (e) { window.__errors.push(String(e.message)); });
window.addEventListener("load", function () { setTimeout(function () {
  var out = document.createElement("pre");
  out.id = "render-check";
  out.textContent = JSON.stringify({
    errors: window.__errors,
    plots: document.querySelectorAll(".js-plotly-plot").length,
    svgs: document.querySelectorAll(".main-svg").length,
    traces: Array.from(document.querySelectorAll(".js-plotly-plot"))
      .map(function (d) { return (d.data || []).length; })
  });
  document.body.appendChild(out);
}, 200); });
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(
            "chromium is not installed (CI installs it in .ci/run: apt-get install chromium)"
        )
    pytest.skip("chromium is not installed (apt-get install chromium)")


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


def render(page: str, tmp: Path) -> dict:
    path = tmp / "page.html"
    path.write_text(page.replace("<head>", "<head>\n" + COLLECTOR, 1), encoding="utf-8")
    proc = run_chromium(["--dump-dom", path.as_uri()], tmp)
    match = re.search(r'<pre id="render-check">([^<]*)</pre>', proc.stdout)
    assert match, f"page did not finish loading; chromium stderr:\n{proc.stderr[-2000:]}"
    return json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))


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
    result = render(report_page, tmp_path)
    assert result["errors"] == []
    assert result["plots"] == n_figures == 10
    assert result["svgs"] >= n_figures
    assert all(n > 0 for n in result["traces"])  # every figure has its data attached


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
