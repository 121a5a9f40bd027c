"""Issue 11 acceptance: a head score and a task defined here, in a few lines each, with no edit to
the package, are trained on, stop training, and show up in the history, the training-dynamics
figure and the report (from the result and from a checkpoint)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from circuits import HookedTransformer, ModelConfig, TrainConfig, plots, train
from circuits.analysis.scores import register_score, unregister_score
from circuits.records import EvalRecord
from circuits.report import build_report, report_from_checkpoint
from circuits.tasks import Batch, TaskBase, register_task


# --- the new task: predict the sequence's first token at every position ---
@register_task("first_token_copy")
@dataclass(frozen=True)
class FirstTokenCopy(TaskBase):
    d_vocab: int = 8
    seq_len: int = 8
    seed: int = 0
    name: str = "first_token_copy"

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        tokens = torch.randint(0, self.d_vocab, (batch_size, self.seq_len), generator=generator)
        mask = torch.ones_like(tokens, dtype=torch.bool)
        return Batch(tokens, tokens[:, :1].expand_as(tokens).clone(), mask)


@pytest.fixture
def last_to_first():
    # --- the new score: attention from the last position to the first ---
    register_score(
        "last_to_first",
        lambda ctx: ctx.patterns[..., -1, 0].mean(1),
        label="last-to-first",
        description="attention from the last position to the first",
    )
    yield
    unregister_score("last_to_first")


@pytest.mark.slow
def test_new_score_and_task_train_stop_plot_and_report(last_to_first, tmp_path):
    task = FirstTokenCopy()
    cfg = ModelConfig(
        n_layers=1, d_model=16, n_heads=2, n_ctx=8, d_vocab=8, attn_only=True,
        normalization_type=None, seed=0,
    )  # fmt: skip
    model = HookedTransformer(cfg)
    train_cfg = TrainConfig(
        steps=600, lr=1e-2, eval_every=10, progress=False, targets={"last_to_first": 0.8},
        checkpoint_dir=str(tmp_path / "ckpt"),
    )  # fmt: skip
    result = train(model, task, train_cfg)

    # Stopped on the new score, and only then.
    assert result.solved_at is not None and result.steps == result.solved_at < 600
    history = result.history
    assert all(isinstance(r, EvalRecord) and "last_to_first" in r.scores for r in history)
    assert history[-1].best("last_to_first") >= 0.8
    assert all(r.best("last_to_first") < 0.8 for r in history[:-1])

    # The training-dynamics figure draws it, labelled from the registry.
    fig = plots.training_dynamics(result)
    drawn = [t for t in fig.data if (t.name or "").endswith("last-to-first")]
    assert len(drawn) == 2  # one line per head
    assert list(drawn[0].x) == [r.step for r in history]

    # The report has its section and its top head, from the result and from the checkpoint.
    page = build_report(model, task, history, result.losses, title="t")
    assert "Last-to-first scores" in page and "top last-to-first head" in page
    saved = report_from_checkpoint(tmp_path / "ckpt")
    assert "Last-to-first scores" in saved and "top last-to-first head" in saved


@pytest.mark.slow
def test_cli_trains_a_registered_task_to_a_registered_score(last_to_first, capsys):
    from circuits.cli import main

    args = ["train", "--task", "first_token_copy", "--target", "last_to_first=0.8", "--quiet"]
    assert main([*args, "--steps", "600"]) == 0
    out = capsys.readouterr().out
    assert "top last-to-first head: L" in out and "formed at step" in out
