"""The HTML report: self-contained, one plotly.js, one figure per section, from memory or disk."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from plotly.offline import get_plotlyjs

from circuits import HookedTransformer, ModelConfig
from circuits.cli import main
from circuits.report import build_report, report_from_checkpoint, sections_for
from circuits.tasks import InductionTask, ShiftByOneTask


def small_model(n_layers: int = 2) -> HookedTransformer:
    cfg = ModelConfig(
        n_layers=n_layers,
        d_model=16,
        n_ctx=24,
        d_vocab=12,
        n_heads=2,
        attn_only=True,
        normalization_type=None,
        seed=2,
    )
    return HookedTransformer(cfg)


TASK = InductionTask(d_vocab=12, seq_len=24, min_period=3, max_period=10)


def history(n_layers: int = 2) -> list[dict]:
    return [
        {
            "step": s,
            "train_loss": 2.0 - s / 100,
            "loss": 2.0 - s / 100,
            "accuracy": s / 100,
            "previous_token": [[0.1, s / 100]] * n_layers,
            "induction": [[0.0, 0.0]] * n_layers,
        }
        for s in (10, 20, 30)
    ]


def figure_ids(page: str) -> list[str]:
    return re.findall(r'<div id="(fig-s\d+)"', page)


def test_report_embeds_plotly_once_and_draws_every_section() -> None:
    page = build_report(small_model(), TASK, history(), [2.0] * 30, title="t <&>")
    assert page.count(get_plotlyjs()[:300]) == 1  # the library inline, exactly once
    assert not re.search(r"<script[^>]*\bsrc=", page)  # no script is fetched from anywhere
    sections = re.findall(r"<h2>([^<]+)</h2>", page)
    assert sections == [
        "Training dynamics",
        "Previous-token scores",
        "Induction scores",
        "Attention patterns",
        "Logit lens",
        "Composition scores",
        "OV circuits",
        "Copying: eigenvalues of the OV circuits",
        "Positional QK circuits",
        "Token QK circuits",
    ]
    ids = figure_ids(page)
    assert len(ids) == len(sections) == len(set(ids))
    for fig_id in ids:  # every div is drawn by a newPlot call
        assert re.search(rf'Plotly\.newPlot\(\s*"{fig_id}"', page)
    assert "<title>t &lt;&amp;&gt;</title>" in page  # the title is escaped


def test_sections_adapt_to_what_the_model_and_task_have() -> None:
    one_layer = [s.title for s in sections_for(small_model(1), None)]
    assert "Composition scores" not in one_layer and "Training dynamics" not in one_layer
    assert "Attention patterns" not in one_layer  # no task, no probe sequence
    shift = [s.title for s in sections_for(small_model(1), ShiftByOneTask(12, 20))]
    assert "Previous-token scores" in shift and "Induction scores" not in shift


def test_report_from_checkpoint_reads_task_and_history(tmp_path: Path) -> None:
    model = small_model()
    hist = history()
    model.save(tmp_path / "ck", task=TASK.to_dict(), history=hist, losses=[1.0] * 30)
    page = report_from_checkpoint(tmp_path / "ck")
    assert "Training dynamics" in page and "Induction scores" in page
    assert "circuits report: ck" in page
    # The summary shows the last history record's numbers.
    assert "L0H1 (0.30)" in page
    bare = tmp_path / "bare"
    model.save(bare)
    page = report_from_checkpoint(bare)
    assert "Training dynamics" not in page and "OV circuits" in page


def test_report_from_checkpoint_shows_a_saved_tuned_lens(tmp_path: Path) -> None:
    from circuits.analysis import TunedLens

    model = small_model()
    model.save(tmp_path / "ck", task=TASK.to_dict())
    assert "<h2>Tuned lens</h2>" not in report_from_checkpoint(tmp_path / "ck")
    TunedLens.for_model(model).save(tmp_path / "ck")
    page = report_from_checkpoint(tmp_path / "ck")
    assert "<h2>Logit lens</h2>" in page and "<h2>Tuned lens</h2>" in page


def test_cli_report_writes_a_page_and_fails_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small_model().save(tmp_path / "ck", task=TASK.to_dict())
    out = tmp_path / "r.html"
    assert main(["report", str(tmp_path / "ck"), "-o", str(out)]) == 0
    assert out.stat().st_size > 1_000_000 and figure_ids(out.read_text())
    assert main(["report", str(tmp_path / "missing"), "-o", str(out)]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "ck"), "-o", str(tmp_path / "no" / "r.html")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "ck"), "-o", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


@pytest.mark.slow
def test_train_report_flag_writes_the_report_of_the_trained_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "train.html"
    code = main(["train", "--steps", "20", "-q", "--json", "--report", str(out)])
    captured = capsys.readouterr()
    assert code == 0
    assert json.loads(captured.out)["steps"] == 20  # stdout stays pure JSON
    assert str(out) in captured.err
    page = out.read_text()
    assert "Training dynamics" in page and "Induction scores" in page
    # A bad path fails before any training happens.
    assert main(["train", "--steps", "20", "-q", "--report", str(tmp_path / "x" / "r")]) == 2
    assert "does not exist" in capsys.readouterr().err
