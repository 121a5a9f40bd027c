"""Issue 21's refactor changed no behaviour: the checkpoints in data/ load unchanged and give the
logits of a plain-torch forward that shares no code with circuits.model; every old import path
still works (with a DeprecationWarning) and names the same objects; the split packages
re-export the same names. (Resume bit-identity: tests/test_resume.py; TL3 fixtures:
tests/test_tl3_compat.py and tests/test_tl3_variants.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_tl3_compat import reference_forward

from circuits import HookedTransformer, checkpoint

DATA = Path(__file__).resolve().parents[1] / "data"
CHECKPOINTS = sorted(p.parent for p in DATA.glob("*/metadata.json"))


def test_data_has_checkpoints() -> None:
    assert {p.name for p in CHECKPOINTS} >= {"induction_1l", "induction_2l", "shift_1l"}


@pytest.mark.parametrize("path", CHECKPOINTS, ids=[p.name for p in CHECKPOINTS])
def test_data_checkpoint_loads_unchanged_with_the_reference_logits(path: Path) -> None:
    model = HookedTransformer.load(path)
    raw = load_file(path / "model.safetensors")  # the bytes on disk, read without circuits
    ours = model.state_dict()
    assert ours.keys() == raw.keys()
    assert all(torch.equal(ours[k], raw[k]) for k in raw)
    cfg = json.loads((path / "config.json").read_text())
    assert {k: model.cfg.to_dict()[k] for k in cfg} == cfg  # fields added since keep defaults
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, cfg["d_vocab"], (4, cfg["n_ctx"]), generator=gen)
    expected, patterns = reference_forward(raw, cfg, tokens)
    with torch.no_grad():
        fast = model(tokens)  # the fused path
        logits, cache = model.run_with_cache(tokens)  # the hooked path
    # float32, another order of operations: agreement to ~1e-5 of logits of size ~10
    torch.testing.assert_close(fast, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    for layer, pattern in enumerate(patterns):
        torch.testing.assert_close(cache["pattern", layer], pattern, atol=1e-6, rtol=1e-5)
    assert checkpoint.load(path, HookedTransformer).cfg == model.cfg


# Module paths of earlier versions -> where they live now.
MOVED = {
    "circuits.components": "circuits.model.components",
    "circuits.fast_path": "circuits.model.fast_path",
    "circuits.generation": "circuits.model.generation",
    "circuits.hook_aliases": "circuits.model.hook_aliases",
    "circuits.model_weights": "circuits.model.weights",
    "circuits.processing": "circuits.model.processing",
    "circuits.text": "circuits.model.text",
}

CHECK_OLD_PATHS = """
import importlib, json, sys, warnings
moved = json.loads(sys.argv[1])
out = {}
for old, new in moved.items():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    out[old] = {
        "same": module is importlib.import_module(new),
        "warned": [str(w.message) for w in caught if w.category is DeprecationWarning],
    }
print(json.dumps(out))
"""


def test_old_import_paths_work_and_warn() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHECK_OLD_PATHS, json.dumps(MOVED)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    out = json.loads(result.stdout)
    for old, new in MOVED.items():
        assert out[old]["same"], old
        assert any(old in m and new in m for m in out[old]["warned"]), (old, out[old])


def test_split_packages_reexport_the_same_objects() -> None:
    import circuits.tasks as tasks
    import circuits.training as training
    from circuits.tasks import base, induction, probes, registry, shift
    from circuits.training import config, loop, state

    for name, module in {
        "Batch": base, "Task": base, "TaskBase": base, "InductionTask": induction,
        "ShiftByOneTask": shift, "repeated_tokens": probes, "make_task": registry,
        "register_task": registry, "task_from_dict": registry, "TASKS": registry,
    }.items():  # fmt: skip
        assert getattr(tasks, name) is getattr(module, name), name
    for name, module in {
        "TrainConfig": config, "targets_met": config, "train": loop, "resume": loop,
        "TrainingDiverged": loop, "TrainResult": state, "save_training": state,
        "load_training": state, "training_run": state,
    }.items():  # fmt: skip
        assert getattr(training, name) is getattr(module, name), name
    from circuits import TrainConfig, TrainResult, train

    assert (TrainConfig, TrainResult, train) == (config.TrainConfig, state.TrainResult, loop.train)


def test_one_rotary_table() -> None:
    """The attention layer and the TL3 export read the same table (circuits.model.state_dict)."""
    from circuits.interop import tl3
    from circuits.model import components, state_dict

    assert tl3.rotary_sin_cos is state_dict.rotary_sin_cos
    assert components.rotary_tables is state_dict.rotary_tables
    ids = torch.arange(7)
    sin, cos = state_dict.rotary_tables(ids, 6, 100.0)
    freq = 100.0 ** (torch.arange(3) / 3)
    angles = ids[:, None] / torch.cat([freq, freq])  # halves (GPT-NeoX), written out
    torch.testing.assert_close(sin, angles.sin())
    torch.testing.assert_close(cos, angles.cos())


def test_names_checkpoint_used_to_export() -> None:
    """Atomic-write helpers still resolve (with a warning); the training state's functions,
    now in circuits.training (a layer above), are refused naming where they went."""
    from circuits import files, training

    with pytest.warns(DeprecationWarning, match=r"moved to circuits\.files\.writer_lock"):
        assert checkpoint.writer_lock is files.writer_lock
    with pytest.raises(AttributeError, match=r"moved to circuits\.training\.load_training"):
        checkpoint.load_training  # noqa: B018
    assert callable(training.load_training)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        checkpoint.nope  # noqa: B018
