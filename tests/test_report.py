"""The HTML report: self-contained, one plotly.js, one figure per section, from memory or disk."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from plotly.offline import get_plotlyjs

from circuits import HookedTransformer, ModelConfig
from circuits.cli import main
from circuits.report import (
    build_report,
    probes_for,
    report_from_checkpoint,
    sections_for,
    short_example,
)
from circuits.tasks import Batch, InductionTask, ShiftByOneTask, repeated_tokens


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
    # No task: the default repeated-random-tokens probe gives head scores and patterns.
    assert {"Previous-token scores", "Induction scores", "Attention patterns"} <= set(one_layer)
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
    # Saved without a task: head scores and patterns from the default probe all the same.
    assert "<h2>Previous-token scores</h2>" in page and "<h2>Induction scores</h2>" in page
    assert "<h2>Attention patterns</h2>" in page


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


@dataclass(frozen=True)
class EchoTask:
    """A task the report has never heard of, whose probe is a repeated sequence after a BOS."""

    d_vocab: int = 12
    seq_len: int = 24
    seed: int = 0
    name: str = "echo"

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        return self.probe(batch_size)

    def probe(self, batch_size: int = 32) -> Batch:
        return repeated_tokens(batch_size, 11, self.d_vocab, bos=True, seed=3)

    def to_dict(self) -> dict:
        return {"name": self.name}


def test_the_report_reads_any_tasks_probe_by_what_it_is_not_by_name() -> None:
    titles = [s.title for s in sections_for(small_model(), EchoTask())]
    assert "Induction scores" in titles and "Attention patterns" in titles
    probe, example = probes_for(small_model(), EchoTask())
    assert probe.tokens.shape == (64, 23) and torch.equal(probe.tokens, EchoTask().probe(64).tokens)
    # The drawn example is still a repeat: BOS, 10 tokens, the same 10 tokens.
    assert example.repeat_length == 10 and example.tokens.shape == (1, 21)
    t = example.tokens[0]
    assert (
        t[0] == 0 and torch.equal(t[1:11], t[11:21]) and torch.equal(t[1:11], probe.tokens[0, 1:11])
    )
    # Its mask marks second-copy positions whose next token repeats, and the targets are those.
    pos = example.mask[0].nonzero().flatten()
    assert pos.tolist() == list(range(11, 20))
    assert torch.equal(example.targets[0, pos], t[pos + 1]) and torch.equal(t[pos + 1], t[pos - 9])


def test_short_example_of_a_probe_without_repeats_keeps_its_first_positions() -> None:
    probe = ShiftByOneTask(12, 30).probe(4)
    example = short_example(probe)
    assert example.tokens.shape == (1, 20) and example.repeat_length is None
    assert torch.equal(example.targets, probe.targets[:1, :20])


def test_report_figures_fit_and_do_not_collide_for_a_3_layer_3_head_model() -> None:
    from figure_layout import layout_problems

    from circuits.plots.style import MAX_WIDTH

    cfg = ModelConfig(
        n_layers=3, d_model=24, n_ctx=24, d_vocab=12, n_heads=3, attn_only=True, seed=0
    )
    sections = {s.title: s.figure for s in sections_for(HookedTransformer(cfg), TASK)}
    for title, fig in sections.items():
        assert fig.layout.width <= MAX_WIDTH, title
        assert layout_problems(fig) == [], title
    assert len(sections["Composition scores"].data) == 3  # the V panel is there, and fits
    for title in ("OV circuits", "Positional QK circuits", "Token QK circuits"):
        # One colour scale per head (one head can dwarf the rest of its layer): said in the
        # figure's title and each panel's (its largest |value|).
        fig = sections[title]
        assert "colour scale per head" in fig.layout.title.text, title
        panels = [a.text for a in fig.layout.annotations if a.text.startswith("L")]
        assert len(panels) == 9 and all("±" in t for t in panels), title
    for title in ("OV circuits", "Positional QK circuits", "Token QK circuits"):
        fig = sections[title]
        assert fig.layout.xaxis7.title.text and fig.layout.yaxis.title.text, title


def test_the_default_probe_shrinks_for_large_models() -> None:
    """Issue 22: the report probed every model with 64 x n_ctx tokens (64 x 2048 at
    attn-only-2l's shape: tens of GB of patterns and logits, OOM-killed at 23 GB)."""
    from circuits.benchmarks.shapes import build
    from circuits.report import PATTERN_BYTES, probe_batch, probes_for

    small = HookedTransformer(
        ModelConfig(n_layers=2, d_model=32, n_ctx=48, d_vocab=32, n_heads=2, attn_only=True)
    )
    assert probes_for(small)[0].tokens.shape == (64, 48)
    model = build("attn-only-2l", d_vocab=48262, n_ctx=2048)
    probe, _ = probes_for(model)
    batch, pos = probe.tokens.shape
    assert pos == 128 and batch == probe_batch(model, 64) < 64
    patterns = 4 * model.cfg.n_layers * model.cfg.n_heads * batch * pos * pos
    assert 2 * patterns <= PATTERN_BYTES


@pytest.mark.slow
def test_report_at_the_attn_only_2l_shape_has_every_section_of_a_small_model() -> None:
    from circuits.benchmarks.shapes import build

    small = HookedTransformer(
        ModelConfig(
            n_layers=2,
            d_model=32,
            n_ctx=48,
            d_vocab=32,
            n_heads=2,
            attn_only=True,
            positional_embedding_type="shortformer",
        )
    )
    want = [s.title for s in sections_for(small)]
    got = [s.title for s in sections_for(build("attn-only-2l"))]
    assert got == want and "Composition scores" in got and "OV circuits" in got
