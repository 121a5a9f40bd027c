"""``make data`` reproduces the shipped checkpoints byte for byte, as data/README promises.

The cheapest checkpoint is rebuilt by the real script, in a fresh process (the numerics are
pinned before torch loads), and compared with ``data/``: tensors exactly, then every file's
bytes. The metadata carries no time stamp, so a rebuild leaves the tracked files unchanged.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from circuits.checkpoint import package_versions

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
CHEAPEST = "shift_1l"


def make_data_module():
    spec = importlib.util.spec_from_file_location("make_data", ROOT / "scripts" / "make_data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_metadata_has_no_time_stamp_or_wall_time():
    for name in make_data_module().CHECKPOINTS:
        meta = json.loads((DATA / name / "metadata.json").read_text())
        assert meta["created"] is None, name
        assert meta["versions"]["torch"], name
        assert all("seconds" not in record for record in meta["history"]), name


def test_make_data_refuses_to_run_with_unpinned_numerics(monkeypatch):
    """In a process where torch already loaded, the pins would come too late."""
    module = make_data_module()
    monkeypatch.delenv("MKL_CBWR", raising=False)
    assert "torch" in sys.modules
    with pytest.raises(RuntimeError, match="torch was imported before the numerics were pinned"):
        module.pin_numerics()


@pytest.mark.slow
def test_make_data_rebuilds_a_shipped_checkpoint_byte_for_byte(tmp_path):
    shipped, rebuilt = DATA / CHEAPEST, tmp_path / CHEAPEST
    subprocess.run(
        [sys.executable, "scripts/make_data.py", "--only", CHEAPEST, "--out", str(tmp_path), "-q"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    versions = json.loads((shipped / "metadata.json").read_text())["versions"]
    hint = (
        f"data/ was built with {versions}, this environment has {package_versions()}"
        if versions != package_versions()
        else "same package versions: the training run is not deterministic"
    )
    assert sorted(p.name for p in rebuilt.iterdir()) == sorted(p.name for p in shipped.iterdir())
    want, got = load_file(shipped / "model.safetensors"), load_file(rebuilt / "model.safetensors")
    assert want.keys() == got.keys()
    for name, tensor in want.items():
        diff = (tensor - got[name]).abs().max().item()
        assert torch.equal(tensor, got[name]), f"{name} differs by up to {diff:.3g} ({hint})"
    for file in sorted(shipped.iterdir()):
        assert file.read_bytes() == (rebuilt / file.name).read_bytes(), f"{file.name} ({hint})"
