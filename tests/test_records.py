"""Typed evaluation records: JSON round trip, the old flat format, and the shipped checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from circuits.records import EvalRecord, history_from_json, history_to_json

DATA = Path(__file__).resolve().parents[1] / "data"

# A record as checkpoints written before the registry stored it (data/induction_2l, step 25).
OLD = {
    "step": 25,
    "train_loss": 3.45,
    "accuracy": 0.03,
    "loss": 3.44,
    "previous_token": [[0.05, 0.07], [0.06, 0.04]],
    "induction": [[0.02, 0.03], [0.04, 0.05]],
}


def record() -> EvalRecord:
    return EvalRecord(
        step=50,
        loss=1.25,
        accuracy=0.5,
        scores={"induction": torch.tensor([[0.1, 0.2], [0.7, 0.3]])},
        train_loss=1.5,
        seconds=2.0,
    )


def test_json_round_trip():
    r = record()
    text = json.dumps(r.to_dict())
    back = EvalRecord.from_dict(json.loads(text))
    assert back == r and back is not r
    assert back != EvalRecord(50, 1.25, 0.5, {"induction": torch.zeros(2, 2)})
    assert history_from_json(json.loads(json.dumps(history_to_json([r, r])))) == [r, r]


def test_old_flat_records_migrate():
    r = EvalRecord.from_dict(OLD)
    assert (r.step, r.loss, r.accuracy, r.train_loss, r.seconds) == (25, 3.44, 0.03, 3.45, None)
    assert set(r.scores) == {"previous_token", "induction"}
    torch.testing.assert_close(r.scores["induction"], torch.tensor(OLD["induction"]))
    back = torch.tensor(r.to_dict()["scores"]["previous_token"])
    torch.testing.assert_close(back, torch.tensor(OLD["previous_token"]))
    assert r.best("induction") == pytest.approx(0.05)  # layer 1 only: induction's rule
    assert r["previous_token"].shape == (2, 2) and "induction" in r and "seconds" not in r


def test_bad_records_are_refused():
    with pytest.raises(ValueError, match="not an evaluation record"):
        EvalRecord.from_dict({"loss": 1.0})
    with pytest.raises(ValueError, match="lacks 'accuracy'"):
        EvalRecord.from_dict({"step": 1, "loss": 1.0})
    with pytest.raises(ValueError, match="unknown field"):
        EvalRecord.from_dict({**record().to_dict(), "colour": 1})
    with pytest.raises(ValueError, match=r"n_layers, n_heads"):
        EvalRecord.from_dict({**OLD, "induction": [0.1, 0.2]})
    with pytest.raises(ValueError, match="must be a number"):
        EvalRecord.from_dict({**OLD, "loss": "low"})
    with pytest.raises(TypeError, match="step"):
        EvalRecord(step=-1, loss=1.0, accuracy=0.0)
    with pytest.raises(ValueError, match="list of records"):
        history_from_json({"step": 1})
    with pytest.raises(KeyError):
        record()["nope"]


@pytest.mark.parametrize("name", ["induction_1l", "induction_2l", "induction_2l_mlp", "shift_1l"])
def test_shipped_checkpoints_histories_load(name):
    """The checkpoints in data/ (whatever version wrote them) load as typed records, and the
    training-dynamics figure and the report summary read them."""
    from circuits import plots
    from circuits.report import summary_of

    meta = json.loads((DATA / name / "metadata.json").read_text())
    records = history_from_json(meta["history"])
    assert records and [r.step for r in records] == sorted(r.step for r in records)
    n_layers = json.loads((DATA / name / "config.json").read_text())["n_layers"]
    for r in records:
        assert {"previous_token"} <= set(r.scores)
        assert all(v.shape[0] == n_layers for v in r.scores.values())
    fig = plots.training_dynamics({"history": meta["history"], "losses": meta["losses"]})
    assert any("previous-token" in (t.name or "") for t in fig.data)

    class Model:
        cfg = type("Cfg", (), dict(n_layers=n_layers, attn_only=True, d_model=32, n_heads=2,
                                   d_head=16, normalization_type=None, d_vocab=32))  # fmt: skip

    summary = summary_of(Model(), None, meta["history"])
    assert summary["steps"] == records[-1].step
    if n_layers == 1:  # a layer-0 head is never reported as an induction head
        assert "top induction head" not in summary


def test_metrics_round_trip_and_read_like_fields():
    r = EvalRecord(step=5, loss=1.0, accuracy=0.5, metrics={"kl_bigram": 0.25, "phase": 2})
    back = EvalRecord.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back == r and back.metrics == {"kl_bigram": 0.25, "phase": 2.0}
    assert r["kl_bigram"] == 0.25 and "phase" in r and r.get("nope") is None
    assert back != EvalRecord(step=5, loss=1.0, accuracy=0.5, metrics={"kl_bigram": 0.5})
    # A record without metrics writes what earlier versions wrote (no "metrics" key) ...
    assert "metrics" not in record().to_dict()
    # ... and records of earlier versions (flat or with scores) load with no metrics.
    assert EvalRecord.from_dict(OLD).metrics == {}
    assert EvalRecord.from_dict(record().to_dict()).metrics == {}


def test_bad_metrics_are_refused():
    with pytest.raises(ValueError, match="must be a number"):
        EvalRecord.from_dict({**record().to_dict(), "metrics": {"kl": "low"}})
    with pytest.raises(TypeError, match="mapping"):
        EvalRecord(step=1, loss=1.0, accuracy=0.0, metrics=[("kl", 1.0)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="metric names"):
        EvalRecord(step=1, loss=1.0, accuracy=0.0, metrics={1: 1.0})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="shadow"):
        EvalRecord(step=1, loss=1.0, accuracy=0.0, metrics={"loss": 1.0})
