"""Interventions during training: clamps, ablations and freezes act exactly as specified, on
exactly their steps, are recorded and re-applied on resume, and bad ones fail before training."""

import copy
import importlib.util
import json
import statistics
from pathlib import Path

import pytest
import torch

from circuits.cli import main
from circuits.model import fast_path
from circuits.presets import build
from circuits.training import TrainConfig, read_training_metadata, resume, train
from circuits.training.intervention_plan import InterventionPlan
from circuits.training.interventions import (
    Ablate,
    ClampOutput,
    ClampPattern,
    Freeze,
    intervention_from_dict,
    parse_flag,
    previous_token_pattern,
)

ROOT = Path(__file__).resolve().parents[2]


def small_run(steps=12, eval_every=4, interventions=(), seed=0, **train):
    model, task, cfg = build("induction", seed=seed)
    cfg = cfg.replace(
        steps=steps,
        eval_every=eval_every,
        progress=False,
        target_accuracy=None,
        targets={},
        interventions=list(interventions),
        **train,
    )
    return model, task, cfg


def causal_uniform(n):
    return [[1 / (i + 1) if j <= i else 0.0 for j in range(n)] for i in range(n)]


EVERY_KIND = [
    ClampPattern(layer=0, head=0),
    ClampPattern(layer=0, head=1, pattern=causal_uniform(48), start=2, stop=9),
    ClampOutput(layer=1, head=0, value=[0.5] * 16),
    Ablate(component="L1H1", start=3),
    Freeze(pattern="blocks.0.*", stop=5),
]


def test_every_kind_round_trips_through_json_and_the_train_config():
    cfg = TrainConfig(interventions=EVERY_KIND)
    data = json.loads(json.dumps(cfg.to_dict()))
    assert [d["kind"] for d in data["interventions"]] == [i.kind for i in EVERY_KIND]
    assert TrainConfig.from_dict(data) == cfg
    assert TrainConfig.from_dict(data).interventions == tuple(EVERY_KIND)


@pytest.mark.parametrize(
    "data, match",
    [
        ({"kind": "clamp", "layer": 0}, "unknown intervention 'clamp'"),
        ({"kind": "freeze", "pattern": "x", "colour": 1}, "unknown freeze intervention field"),
        ({"kind": "ablate", "component": "L0H1", "start": 5, "stop": 5}, "empty step range"),
        ({"kind": "ablate", "component": "head0"}, "like 'L0H1'"),
        ({"kind": "clamp_pattern", "layer": 0, "head": 0, "pattern": "next"}, "'previous'"),
        ({"kind": "clamp_pattern", "layer": 0, "head": 0, "pattern": [[0, 1], [0, 1]]}, "later"),
        ({"kind": "clamp_pattern", "layer": 0, "head": 0, "pattern": [[1, 0], [1, 1]]}, "sums"),
        ({"kind": "clamp_output", "layer": 0, "head": 0, "value": [float("nan")]}, "finite"),
    ],
)
def test_bad_intervention_is_one_clear_error(data, match):
    with pytest.raises(ValueError, match=match):
        intervention_from_dict(data)


@pytest.mark.parametrize(
    "intervention, match",
    [
        (ClampPattern(layer=2, head=0), "L2H0, not in the model"),
        (ClampPattern(layer=0, head=2), "L0H2, not in the model"),
        (ClampPattern(layer=0, head=0, pattern=causal_uniform(8)), "covers 8 positions"),
        (ClampOutput(layer=0, head=0, value=[1.0]), "d_head is 16"),
        (Ablate(component="L5H0"), "L5H0, not in the model"),
        (Ablate(component="L0MLP"), "attention-only"),
        (Freeze(pattern="blocks.7.*"), "matches no parameter"),
        (Freeze(pattern="*"), "every parameter"),
        (Ablate(component="L0H0", start=12), "starts at step 12; the run has 12 steps"),
    ],
)
def test_intervention_the_model_cannot_take_fails_before_training(intervention, match):
    model, task, cfg = small_run(interventions=[intervention])
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=match):
        train(model, task, cfg)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model._hooked_parts() and all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("pattern", ["previous", "fixed"])
def test_clamped_pattern_is_exactly_the_oracle_during_training(pattern):
    oracle = (
        previous_token_pattern(48) if pattern == "previous" else torch.tensor(causal_uniform(48))
    )
    given = "previous" if pattern == "previous" else causal_uniform(48)
    model, task, cfg = small_run(interventions=[ClampPattern(layer=0, head=1, pattern=given)])
    tokens = task.probe(4).tokens
    seen = []

    def check(step, record):
        for mode in (model.train, model.eval):  # the trainer's forward and the evaluation's
            mode()
            _, cache = model.run_with_cache(tokens)
            got = cache["blocks.0.attn.hook_pattern"]
            assert torch.equal(got[:, 1], oracle.expand_as(got[:, 1]))
            assert not torch.equal(got[:, 0], oracle.expand_as(got[:, 0]))  # the other head free
        model.train()
        seen.append(step)

    train(model, task, cfg, callback=check)
    assert seen == [4, 8, 12]
    _, cache = model.run_with_cache(tokens)  # removed when training ends
    assert not torch.equal(cache["blocks.0.attn.hook_pattern"][:, 1], oracle.expand(4, 48, 48))


def test_clamped_pattern_gets_no_gradient_and_the_fast_path_steps_aside_only_there(monkeypatch):
    model, task, cfg = small_run(interventions=[ClampPattern(layer=0, head=0)])
    fast_blocks = []
    original = fast_path.block_forward

    def spy(block, *args, **kwargs):
        fast_blocks.append(next(i for i, b in enumerate(model.blocks) if b is block))
        return original(block, *args, **kwargs)

    monkeypatch.setattr(fast_path, "block_forward", spy)
    w_q = model.blocks[0].attn.W_Q.detach().clone()
    train(model, task, cfg.replace(weight_decay=0.0))
    assert set(fast_blocks) == {1} and len(fast_blocks) == cfg.steps  # block 0 hooked, 1 fast
    assert torch.equal(model.blocks[0].attn.W_Q[0], w_q[0])  # the clamped head's query: no grad
    assert not torch.equal(model.blocks[0].attn.W_Q[1], w_q[1])


def test_frozen_parameters_are_bit_identical_while_the_others_move():
    model, task, cfg = small_run(interventions=[Freeze(pattern="blocks.0.attn.W_[QK]")])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train(model, task, cfg.replace(weight_decay=0.1))  # decay would move them if not skipped
    for name, p in model.named_parameters():
        frozen = name in ("blocks.0.attn.W_Q", "blocks.0.attn.W_K")
        assert torch.equal(p, before[name]) == frozen, name
        assert p.requires_grad  # restored


def test_a_zeroed_head_contributes_nothing():
    model, task, cfg = small_run(interventions=[Ablate(component="L1H0")])
    tokens = task.probe(4).tokens
    checked = []

    def check(step, record):
        model.eval()  # the hooked path in both models: the same arithmetic
        free = copy.deepcopy(model)
        for hook in free.hook_dict.values():
            hook._forward_hooks.clear()  # the copy runs without the intervention
        zeroed = copy.deepcopy(free)
        with torch.no_grad():
            zeroed.blocks[1].attn.W_O[0] = 0
            assert torch.equal(model(tokens), zeroed(tokens))
            assert not torch.allclose(model(tokens), free(tokens))  # the head did contribute
        model.train()
        checked.append(step)

    train(model, task, cfg, callback=check)
    assert checked == [4, 8, 12]


def test_ablation_acts_only_inside_its_step_range():
    model, task, cfg = small_run(
        steps=9, eval_every=1, interventions=[Ablate(component="L1H1", start=3, stop=6)]
    )
    tokens = task.probe(2).tokens
    zeroed = {}

    def check(step, record):
        _, cache = model.run_with_cache(tokens)
        zeroed[step] = bool((cache["blocks.1.attn.hook_z"][:, :, 1] == 0).all())

    train(model, task, cfg, callback=check)
    # An evaluation after step s sees step s's interventions: steps 3, 4, 5 (0-based) are 4..6.
    assert [s for s, z in zeroed.items() if z] == [4, 5, 6]


def test_resume_reapplies_the_recorded_interventions_bit_for_bit(tmp_path):
    interventions = [
        ClampPattern(layer=0, head=0, start=2),
        Ablate(component="L1H1", start=4, stop=9),
        Freeze(pattern="blocks.1.attn.W_V"),
    ]
    model, task, cfg = small_run(steps=12, interventions=interventions)
    train(model, task, cfg)
    part, task2, cfg2 = small_run(steps=6, interventions=interventions)
    train(part, task2, cfg2.replace(checkpoint_dir=str(tmp_path / "run")))
    meta = read_training_metadata(tmp_path / "run")
    assert meta["train_config"]["interventions"] == [i.to_dict() for i in interventions]
    resumed, _, resumed_cfg, _ = resume(tmp_path / "run", steps=12)
    assert resumed_cfg.interventions == tuple(interventions)
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    plain, task3, cfg3 = small_run(steps=12)
    train(plain, task3, cfg3)
    assert not torch.equal(plain.blocks[1].attn.W_V, resumed.blocks[1].attn.W_V)


def test_plan_close_restores_the_model():
    model, _, _ = small_run()
    model.blocks[0].attn.b_O.requires_grad_(False)  # the user's own choice survives
    plan = InterventionPlan(
        [ClampPattern(layer=0, head=0), Freeze(pattern="unembed.*")], model, 48, 5
    )
    plan.apply(0)
    model.reset_hooks()  # TransformerLens's reset leaves the training hooks alone
    assert model._hooked_parts() == {"blocks.0"} and not model.unembed.W_U.requires_grad
    plan.close()
    assert not model._hooked_parts() and model.unembed.W_U.requires_grad
    assert not model.blocks[0].attn.b_O.requires_grad


@pytest.mark.parametrize(
    "kind, text, want",
    [
        ("clamp_pattern", "L0H1=previous", ClampPattern(layer=0, head=1)),
        ("ablate", "L0H1@0:100", Ablate(component="L0H1", start=0, stop=100)),
        ("ablate", "L1MLP@50:", Ablate(component="L1MLP", start=50)),
        ("freeze", "blocks.0.*", Freeze(pattern="blocks.0.*")),
    ],
)
def test_parse_flag(kind, text, want):
    assert parse_flag(kind, text) == want


def test_parse_flag_reads_a_pattern_file(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(causal_uniform(3)))
    got = parse_flag("clamp_pattern", f"L0H0={path}@1:4")
    assert got == ClampPattern(layer=0, head=0, pattern=causal_uniform(3), start=1, stop=4)
    with pytest.raises(ValueError, match="cannot read the pattern file"):
        parse_flag("clamp_pattern", f"L0H0={tmp_path / 'missing.json'}")
    with pytest.raises(ValueError, match="@START:STOP"):
        parse_flag("ablate", "L0H1@x:3")


def test_cli_flags_train_with_interventions_and_record_them(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--steps", "6", "--no-early-stop", "-q", "--out", str(out)]
    flags = ["--clamp-pattern", "L0H0=previous", "--zero-head", "L1H1@2:4", "--freeze", "embed.*"]
    assert main(args + flags) == 0
    recorded = read_training_metadata(out)["train_config"]["interventions"]
    assert [(d["kind"], d["start"], d["stop"]) for d in recorded] == [
        ("clamp_pattern", 0, None),
        ("ablate", 2, 4),
        ("freeze", 0, None),
    ]
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--steps", "8", "--ablate", "L0H0"]) == 2
    assert "drop --ablate" in capsys.readouterr().err


def test_cli_bad_head_is_one_clean_line(capsys):
    assert main(["train", "--steps", "5", "-q", "--zero-head", "L4H0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "L4H0, not in the model" in err[0]


def _clamp_script():
    spec = importlib.util.spec_from_file_location(
        "clamp_phase_change", ROOT / "scripts" / "clamp_phase_change.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_clamping_the_previous_token_head_forms_induction_no_later():
    """Singh et al. 2024's qualitative finding on the default model, on a few seeds (the full
    16-seed measurement is scripts/clamp_phase_change.py, bench/RESULTS.md)."""
    script = _clamp_script()
    rows = [
        {"plain": script.run_arm(seed, [], 300), "clamped": script.run_arm(seed, ["L0H0"], 300)}
        for seed in range(3)
    ]
    summary = script.paired(rows, "phase_step")
    assert summary["n"] == 3, rows
    assert summary["median_clamped"] <= summary["median_plain"], rows
    assert statistics.median(r["clamped"]["final_loss"] for r in rows) < 1.0, rows


def test_a_run_without_interventions_keeps_its_train_config_dict():
    # Sweep run ids and checkpoints' train_config of runs without interventions stay as before.
    assert "interventions" not in TrainConfig().to_dict()
    assert TrainConfig.from_dict(TrainConfig().to_dict()) == TrainConfig()


@pytest.mark.parametrize(
    "saved, given", [([], [Ablate(component="L1H0")]), ([Ablate(component="L1H0")], [])]
)
def test_resume_refuses_added_or_dropped_interventions(tmp_path, saved, given):
    model, task, cfg = small_run(steps=4, interventions=saved)
    train(model, task, cfg.replace(checkpoint_dir=str(tmp_path / "run")))
    fresh, task2, cfg2 = small_run(steps=8, interventions=given)
    with pytest.raises(ValueError, match="train config differs in interventions"):
        train(
            fresh,
            task2,
            cfg2.replace(checkpoint_dir=str(tmp_path / "run")),
            resume=tmp_path / "run",
        )


def test_an_ablated_mlp_outputs_zero_inside_its_range_only():
    model, task, cfg = build("induction", seed=0, model={"attn_only": False})
    cfg = cfg.replace(
        steps=4,
        eval_every=2,
        progress=False,
        target_accuracy=None,
        targets={},
        interventions=[Ablate(component="L1MLP", stop=2)],
    )
    tokens = task.probe(2).tokens
    seen = {}

    def check(step, record):
        _, cache = model.run_with_cache(tokens)
        seen[step] = [bool((cache[f"blocks.{i}.hook_mlp_out"] == 0).all()) for i in (0, 1)]

    train(model, task, cfg, callback=check)
    assert seen == {2: [False, True], 4: [False, False]}
