"""``circuits train`` shows the task's recorded metrics, and names the model's parts right."""

from __future__ import annotations

from types import SimpleNamespace

from circuits.cli import main
from circuits.commands.train import repr_config
from circuits.config import ModelConfig


def test_markov_icl_prints_its_phase_sequence(capsys) -> None:
    assert main(["train", "--task", "markov_icl", "--steps", "100", "-q"]) == 0
    out = capsys.readouterr().out
    phases = next(line for line in out.splitlines() if line.startswith("phases: "))
    assert "(step 50)" in phases
    assert "late-position KL to each strategy at step 100" in out


def test_json_holds_the_last_metrics(capsys) -> None:
    import json

    assert main(["train", "--task", "markov_icl", "--steps", "50", "-q", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert set(metrics) == {"kl_uniform", "kl_unigram", "kl_bigram", "phase"}


def test_repr_config_names_layernorm_only_when_the_model_has_it() -> None:
    def model(**kw):
        cfg = ModelConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, n_ctx=4, d_vocab=5, **kw)
        return SimpleNamespace(cfg=cfg)

    assert "LN+MLP" in repr_config(model(attn_only=False))
    no_norm = repr_config(model(attn_only=False, normalization_type=None))
    assert "LN" not in no_norm and " MLP " in no_norm
    assert "attn-only" in repr_config(model(attn_only=True, normalization_type=None))
