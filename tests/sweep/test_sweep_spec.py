"""Sweep specs: expansion, stable run ids, validation and the three file formats."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from circuits.sweep.spec import SweepSpec, read_spec_file, run_id


def test_grid_expands_every_point_with_every_seed(small_spec: dict) -> None:
    spec = SweepSpec.from_dict(small_spec)
    runs = spec.runs()
    assert len(runs) == 8
    assert {(r.axes["train.lr"], r.axes["seed"]) for r in runs} == {
        (lr, s) for lr in (0.01, 0.03) for s in range(4)
    }
    assert len({r.run_id for r in runs}) == 8
    run = runs[5]
    # The seed reaches every part; the swept value and the base reach theirs.
    assert {run.settings[p]["seed"] for p in ("model", "task", "train")} == {run.axes["seed"]}
    assert run.settings["train"]["lr"] == run.axes["train.lr"]
    assert run.settings["model"]["d_model"] == 16
    assert run.settings["train"]["progress"] is False and run.settings["train"]["threads"] == 1


def test_run_ids_hash_the_resolved_settings(small_spec: dict) -> None:
    ids = [r.run_id for r in SweepSpec.from_dict(small_spec).runs()]
    # Same spec again, axes listed in another order, a default given explicitly: same ids.
    again = dict(small_spec, grid={"train.lr": [0.03, 0.01]})
    again["base"] = {**small_spec["base"], "train": {**small_spec["base"]["train"], "lr": 0.02}}
    explicit = dict(small_spec, base={**small_spec["base"], "task": {
        **small_spec["base"]["task"], "min_period": 4,  # the task's default
    }})  # fmt: skip
    assert sorted(r.run_id for r in SweepSpec.from_dict(again).runs()) == sorted(ids)
    assert sorted(r.run_id for r in SweepSpec.from_dict(explicit).runs()) == sorted(ids)
    # A different value is a different run; bookkeeping fields are not hashed.
    settings = SweepSpec.from_dict(small_spec).runs()[0].settings
    changed = {**settings, "train": {**settings["train"], "batch_size": 9}}
    watched = {**settings, "train": {**settings["train"], "progress": True, "threads": 4}}
    assert run_id(changed) != run_id(settings)
    assert run_id(watched) == run_id(settings)


def test_random_search_is_seeded_and_in_bounds() -> None:
    data = {
        "name": "r",
        "search": "random",
        "samples": 6,
        "sample_seed": 3,
        "random": {
            "train.lr": {"log_uniform": [1e-3, 3e-2]},
            "train.batch_size": {"int": [8, 16]},
            "model.n_heads": {"choice": [1, 2, 4]},
        },
        "base": {"train": {"steps": 10}},
        "seeds": [0, 7],
    }
    a, b = SweepSpec.from_dict(data), SweepSpec.from_dict(data)
    assert [r.run_id for r in a.runs()] == [r.run_id for r in b.runs()]
    assert len(a.runs()) == 12
    points = a.points()
    assert all(1e-3 <= p["train.lr"] <= 3e-2 for p in points)
    assert all(8 <= p["train.batch_size"] <= 16 for p in points)
    assert {p["model.n_heads"] for p in points} <= {1, 2, 4}
    assert len({p["train.lr"] for p in points}) == 6
    other = SweepSpec.from_dict({**data, "sample_seed": 4})
    assert [p["train.lr"] for p in other.points()] != [p["train.lr"] for p in points]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"grid": {"train.lrr": [0.1]}}, "lrr"),
        ({"grid": {"optimizer.lr": [0.1]}}, "PART.FIELD"),
        ({"grid": {"train.lr": [-1.0]}}, "lr must be a positive float"),
        ({"grid": {"train.lr": []}}, "non-empty list"),
        ({"grid": {"task.max_period": [40]}}, "max_period"),
        ({"grid": {"task.colour": [1]}}, "colour"),
        ({"grid": {"train.lr": [0.01, 0.01]}}, "same run"),
        ({"seeds": 0}, "positive count"),
        ({"seeds": [1, 1]}, "repeat"),
        ({"preset": "nope"}, "unknown preset"),
        ({"search": "bayes"}, "search must be"),
        ({"search": "random", "random": {"train.lr": {"normal": [0, 1]}}, "samples": 2}, "normal"),
        (
            {"search": "random", "random": {"train.lr": {"log_uniform": [0, 1]}}, "samples": 2},
            "> 0",
        ),
        ({"search": "random", "random": {"train.lr": {"uniform": [0.1, 0.2]}}}, "samples > 0"),
        ({"random": {"train.lr": {"uniform": [0.1, 0.2]}}}, "search: random"),
        ({"base": {"optim": {"lr": 1}}}, "base.optim"),
        ({"name": "a/b"}, "path separators"),
        ({"checkpoint": "yes"}, "checkpoint"),
        ({"colour": 1}, "unknown sweep spec key"),
    ],
)
def test_bad_specs_are_refused_by_name(small_spec: dict, change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SweepSpec.from_dict({**small_spec, **change})


def test_spec_is_frozen_and_owns_its_values(small_spec: dict) -> None:
    spec = SweepSpec.from_dict(small_spec)
    small_spec["grid"]["train.lr"].append(0.5)
    assert spec.grid["train.lr"] == [0.01, 0.03]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]
    assert SweepSpec.from_dict(spec.to_dict()) == spec


def test_yaml_toml_and_json_files_give_the_same_spec(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(
        "name: f\nbase:\n  train: {steps: 20}\ngrid:\n  train.lr: [0.01, 0.02]\nseeds: 2\n"
    )
    (tmp_path / "s.toml").write_text(
        'name = "f"\nseeds = 2\n[base.train]\nsteps = 20\n[grid]\n"train.lr" = [0.01, 0.02]\n'
    )
    (tmp_path / "s.json").write_text(
        json.dumps(
            {
                "name": "f",
                "base": {"train": {"steps": 20}},
                "grid": {"train.lr": [0.01, 0.02]},
                "seeds": 2,
            }
        )
    )
    specs = [SweepSpec.load(tmp_path / f"s.{ext}") for ext in ("yaml", "toml", "json")]
    assert specs[0] == specs[1] == specs[2]
    assert len(specs[0].runs()) == 4


def test_bad_spec_files_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: not a valid YAML"):
        read_spec_file(bad)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match=r"bad\.json: not a valid JSON"):
        read_spec_file(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(ValueError, match="must be a mapping"):
        read_spec_file(tmp_path / "list.json")
    (tmp_path / "s.txt").write_text("{}")
    with pytest.raises(ValueError, match="unknown spec format"):
        read_spec_file(tmp_path / "s.txt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_spec_file(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="needs a name"):
        SweepSpec.from_dict({"grid": {}})


def test_a_sweep_sets_the_evaluation_interval_that_resolves_formation() -> None:
    spec = SweepSpec.from_dict({"name": "fine", "grid": {"train.eval_every": [25, 5]}})
    assert [r.settings["train"]["eval_every"] for r in spec.runs()] == [25, 5]
    assert len({r.run_id for r in spec.runs()}) == 2  # different runs, different ids
    with pytest.raises(ValueError, match="eval_every"):
        SweepSpec.from_dict({"name": "bad", "base": {"train": {"eval_every": 0}}})
