"""Issue 21: a sweep's run settings go through circuits.run.RunConfig (the run triple is read in
one place), and every run id is what the pre-refactor resolve gave, so an existing sweep
directory keeps its resume."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from circuits.presets import PRESETS
from circuits.sweep import spec as spec_module
from circuits.sweep.spec import PARTS, SweepSpec, resolve, run_id

SPECS = sorted((Path(__file__).parents[2] / "bench" / "sweep_specs").glob("*.yaml"))


def old_resolve(
    preset: str, base: Mapping[str, Mapping[str, Any]], axes: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """``resolve`` as it was before it went through RunConfig (commit 5caaabe), verbatim but
    for the error wrapping."""
    from circuits.config import ModelConfig
    from circuits.presets import preset as preset_parts
    from circuits.tasks import make_task
    from circuits.training import TrainConfig

    parts = preset_parts(preset)
    for part, values in base.items():
        parts[part].update(values)
    seed = axes.get("seed", 0)
    for part in PARTS:
        parts[part]["seed"] = seed
    for name, value in axes.items():
        if name != "seed":
            part, _, fld = name.partition(".")
            parts[part][fld] = value
    parts["train"].update(progress=False, threads=1)
    model = ModelConfig.from_dict(parts["model"]).to_dict()
    model.pop("model_name", None)
    task_kwargs = dict(parts["task"])
    task = make_task(task_kwargs.pop("name"), **task_kwargs).to_dict()
    train = TrainConfig.from_dict(parts["train"]).to_dict()
    return {"model": model, "task": task, "train": train}


def test_the_bench_specs_exist() -> None:
    assert {p.name for p in SPECS} >= {"lr_width.yaml", "seeds32.yaml"}


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_run_ids_of_the_bench_specs_are_unchanged(path: Path) -> None:
    spec = SweepSpec.load(path)
    runs = spec.runs()
    assert runs
    for run in runs:
        old = old_resolve(spec.preset, spec.base, run.axes)
        assert run.settings == old
        assert run.run_id == run_id(old)


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("axes", [{}, {"seed": 3}, {"seed": 1, "train.lr": 0.02}])
def test_every_preset_resolves_as_before(preset: str, axes: dict[str, Any]) -> None:
    base = {"train": {"steps": 10}}
    assert resolve(preset, base, axes) == old_resolve(preset, base, axes)


def test_resolve_goes_through_run_config(monkeypatch: pytest.MonkeyPatch) -> None:
    import circuits.run

    calls: list[Mapping[str, Any]] = []
    original = circuits.run.RunConfig.from_dict

    def spy(data: Mapping[str, Any], seed: int | None = None) -> Any:
        calls.append(data)
        return original(data, seed)

    monkeypatch.setattr(circuits.run.RunConfig, "from_dict", spy)
    resolve("induction", {}, {"seed": 2})
    assert len(calls) == 1 and calls[0]["model"]["seed"] == 2
    assert spec_module.resolve is resolve


def test_a_bad_task_keyword_is_one_value_error_naming_the_run() -> None:
    with pytest.raises(ValueError, match=r"run \{'seed': 0\}"):
        resolve("induction", {"task": {"no_such_field": 1}}, {"seed": 0})
