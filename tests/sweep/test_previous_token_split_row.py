"""A sweep row records whether the previous-token work is split (by ablation), the same on the
per-run and the batched path for the same trained weights."""

from __future__ import annotations

from circuits.analysis.split import previous_token_split
from circuits.run import RunConfig
from circuits.sweep import SweepSpec
from circuits.sweep.groups import execute_group
from circuits.sweep.runner import circuit_of, execute, record_of
from circuits.training import train


def test_the_row_records_the_split_of_the_trained_weights_on_the_runs_probe(
    small_spec: dict,
) -> None:
    run = SweepSpec.from_dict({**small_spec, "grid": {"train.lr": [0.03]}, "seeds": [2]}).runs()[0]
    model, task, cfg = RunConfig.from_dict(run.settings).build()
    result = train(model, task, cfg.replace(progress=False))
    seconds: dict[int, float] = {}
    row, _ = record_of(run, model, cfg, result, seconds, task)
    # The batched path passes no task: the probe is rebuilt from the run's settings.
    again, _ = record_of(run, model, cfg, result, seconds)
    assert again["circuit"] == row["circuit"]
    circuit = row["circuit"]
    top, induction = circuit["previous_token_head"]["head"], circuit["induction_heads"][0]["head"]
    expected = previous_token_split(model, task.probe(cfg.probe_size), top, induction)
    assert circuit["previous_token_split"] == expected
    assert expected["top"] == top


def test_circuit_of_without_a_probe_or_a_previous_token_head(small_spec: dict) -> None:
    run = SweepSpec.from_dict({**small_spec, "seeds": [0]}).runs()[0]
    model, task, _ = RunConfig.from_dict(run.settings).build()
    assert "previous_token_split" not in circuit_of(model, {"induction": [[0.1, 0.2], [0.3, 0.5]]})
    no_head = circuit_of(model, {"induction": [[0.1, 0.2], [0.3, 0.5]]}, task.probe(4))
    assert no_head["previous_token_split"] is None  # no previous-token score: nothing to ablate


def test_per_run_and_batched_rows_both_carry_the_split(small_spec: dict) -> None:
    runs = SweepSpec.from_dict({**small_spec, "grid": {"train.lr": [0.03]}, "seeds": 2}).runs()
    for result, run in zip(execute_group(runs), runs, strict=True):
        single = execute(run)["row"]["circuit"]["previous_token_split"]
        batched = result["row"]["circuit"]["previous_token_split"]
        assert set(batched) == set(single)
        assert batched["top"] == result["row"]["circuit"]["previous_token_head"]["head"]
        assert batched["method"] == single["method"] == "mean"
