"""Checkpoints: exact round trips, atomic writes, and a clear error for every kind of damage."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import perturbed_model
from safetensors.torch import load_file, save

from circuits import HookedTransformer, checkpoint
from circuits.checkpoint import CheckpointError
from circuits.files import FORMAT, write_files


def test_round_trip_is_exact(any_model: HookedTransformer, tmp_path: Path) -> None:
    path = any_model.save(tmp_path / "ckpt", step=7, task={"name": "induction"})
    loaded = HookedTransformer.load(path)
    assert loaded.cfg == any_model.cfg
    assert not loaded.training
    for name, tensor in any_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    tokens = torch.randint(0, any_model.cfg.d_vocab, (3, any_model.cfg.n_ctx))
    with torch.no_grad():
        assert torch.equal(loaded(tokens), any_model(tokens))
    meta = checkpoint.read_metadata(path)
    assert meta["step"] == 7 and meta["task"] == {"name": "induction"}
    assert meta["seed"] == any_model.cfg.seed
    assert meta["versions"]["torch"] == torch.__version__
    assert meta["format_version"] == checkpoint.FORMAT_VERSION


def test_files_and_hashes(tmp_path: Path) -> None:
    model = perturbed_model(attn_only=True, normalization_type=None)
    path = model.save(tmp_path / "ckpt")
    assert sorted(os.listdir(path)) == ["config.json", "metadata.json", "model.safetensors"]
    meta = json.loads((path / "metadata.json").read_text())
    for name, digest in meta["sha256"].items():
        assert checkpoint.sha256((path / name).read_bytes()) == digest
    # The weights are plain safetensors under TL3 names: readable without circuits.
    tensors = load_file(path / "model.safetensors")
    assert set(tensors) == set(model.state_dict())
    assert json.loads((path / "config.json").read_text()) == model.cfg.to_dict()
    # A tiny model stays tiny on disk: float32 weights plus a little JSON.
    n_bytes = sum(p.numel() * 4 for p in model.parameters())
    assert (path / "model.safetensors").stat().st_size < n_bytes + 4096


def test_existing_checkpoint_is_not_overwritten(tmp_path: Path) -> None:
    first, second = perturbed_model(seed=1), perturbed_model(seed=2)
    path = first.save(tmp_path / "ckpt")
    with pytest.raises(FileExistsError, match="overwrite"):
        second.save(path)
    assert torch.equal(HookedTransformer.load(path).W_E, first.W_E)
    second.save(path, overwrite=True)
    assert torch.equal(HookedTransformer.load(path).W_E, second.W_E)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporaries left


def test_never_replaces_a_directory_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    precious = tmp_path / "data"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a circuits checkpoint"):
        perturbed_model().save(precious, overwrite=True)
    assert (precious / "notes.txt").read_text() == "keep me"


def test_refuses_to_save_non_finite_weights(tmp_path: Path) -> None:
    model = perturbed_model()
    with torch.no_grad():
        model.blocks[0].attn.W_Q[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.W_Q.*NaN"):
        model.save(tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()


def test_reserved_metadata_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="format_version"):
        perturbed_model().save(tmp_path / "ckpt", format_version=99)


# --- damage: each kind gets an error that names it ---
def forge(
    path: Path, tensors: dict[str, torch.Tensor], config: dict[str, Any], **meta: Any
) -> Path:
    """Writes a checkpoint with consistent hashes but arbitrary contents."""
    files = {"model.safetensors": save(tensors), "config.json": json.dumps(config).encode()}
    metadata = {
        "format": FORMAT,
        "format_version": checkpoint.FORMAT_VERSION,
        "sha256": {name: checkpoint.sha256(data) for name, data in files.items()},
        **meta,
    }
    files["metadata.json"] = json.dumps(metadata).encode()
    return write_files(path, files)


@pytest.fixture
def parts() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    model = perturbed_model()
    return dict(model.state_dict()), model.cfg.to_dict()


def test_valid_forgery_loads(parts: tuple[dict, dict], tmp_path: Path) -> None:
    """The forging helper itself makes loadable checkpoints, so the failures below are real."""
    tensors, config = parts
    loaded = checkpoint.load(forge(tmp_path / "c", tensors, config), HookedTransformer)
    assert torch.equal(loaded.W_E, tensors["embed.W_E"])


def test_missing_tensor(parts: tuple[dict, dict], tmp_path: Path) -> None:
    tensors, config = parts
    del tensors["blocks.1.attn.b_V"]
    with pytest.raises(CheckpointError, match=r"missing tensor\(s\): blocks\.1\.attn\.b_V"):
        checkpoint.load(forge(tmp_path / "c", tensors, config), HookedTransformer)


def test_extra_tensor(parts: tuple[dict, dict], tmp_path: Path) -> None:
    tensors, config = parts
    tensors["blocks.2.attn.W_Q"] = torch.zeros(4, 32, 8)
    with pytest.raises(CheckpointError, match=r"unexpected tensor\(s\): blocks\.2\.attn\.W_Q"):
        checkpoint.load(forge(tmp_path / "c", tensors, config), HookedTransformer)


def test_shape_does_not_fit_config(parts: tuple[dict, dict], tmp_path: Path) -> None:
    tensors, config = parts
    config["d_vocab"] += 1
    with pytest.raises(CheckpointError, match=r"embed\.W_E has shape \(20, 32\).*\(21, 32\)"):
        checkpoint.load(forge(tmp_path / "c", tensors, config), HookedTransformer)


def test_wrong_dtype(parts: tuple[dict, dict], tmp_path: Path) -> None:
    tensors, config = parts
    tensors["unembed.W_U"] = tensors["unembed.W_U"].double()
    with pytest.raises(CheckpointError, match=r"unembed\.W_U has dtype torch\.float64"):
        checkpoint.load(forge(tmp_path / "c", tensors, config), HookedTransformer)


def test_non_finite_weights(parts: tuple[dict, dict], tmp_path: Path) -> None:
    tensors, config = parts
    tensors["pos_embed.W_pos"] = tensors["pos_embed.W_pos"].clone()
    tensors["pos_embed.W_pos"][3, 1] = float("inf")
    with pytest.raises(CheckpointError, match=r"pos_embed\.W_pos contains NaN or inf"):
        checkpoint.load(forge(tmp_path / "c", tensors, config), HookedTransformer)


def test_unknown_config_field(parts: tuple[dict, dict], tmp_path: Path) -> None:
    tensors, config = parts
    config["not_a_field"] = 8
    with pytest.raises(CheckpointError, match=r"unknown model config field.*not_a_field"):
        checkpoint.load(forge(tmp_path / "c", tensors, config), HookedTransformer)


def test_invalid_config_value(parts: tuple[dict, dict], tmp_path: Path) -> None:
    tensors, config = parts
    config["n_heads"] = 0
    with pytest.raises(CheckpointError, match="n_heads must be positive"):
        checkpoint.load(forge(tmp_path / "c", tensors, config), HookedTransformer)


def test_newer_format_version(parts: tuple[dict, dict], tmp_path: Path) -> None:
    path = forge(tmp_path / "c", *parts)
    meta = json.loads((path / "metadata.json").read_text())
    meta["format_version"] = checkpoint.FORMAT_VERSION + 1
    (path / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"format version 2 is newer.*upgrade"):
        checkpoint.load(path, HookedTransformer)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    return perturbed_model().save(tmp_path / "ckpt")


def test_truncated_weights(saved: Path) -> None:
    data = (saved / "model.safetensors").read_bytes()
    (saved / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: content hash mismatch"):
        checkpoint.load(saved, HookedTransformer)


def test_one_flipped_bit(saved: Path) -> None:
    data = bytearray((saved / "model.safetensors").read_bytes())
    data[-5] ^= 0x01  # the low bit of some weight: a silently different model
    (saved / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="content hash mismatch"):
        checkpoint.load(saved, HookedTransformer)


def test_edited_config(saved: Path) -> None:
    config = json.loads((saved / "config.json").read_text())
    config["eps"] = 1e-3
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config\.json: content hash mismatch"):
        checkpoint.load(saved, HookedTransformer)


def test_truncated_metadata(saved: Path) -> None:
    text = (saved / "metadata.json").read_text()
    (saved / "metadata.json").write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError, match=r"metadata\.json is not valid JSON"):
        checkpoint.load(saved, HookedTransformer)


def test_missing_weights_file(saved: Path) -> None:
    (saved / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors is missing"):
        checkpoint.load(saved, HookedTransformer)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        checkpoint.load(tmp_path / "nowhere", HookedTransformer)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"metadata\.json"):
        checkpoint.load(tmp_path / "empty", HookedTransformer)
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        checkpoint.load(tmp_path / "file", HookedTransformer)


# --- crashes while writing ---
def test_crash_mid_write_keeps_the_old_checkpoint(
    saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = checkpoint.load(saved, HookedTransformer).state_dict()
    calls = {"n": 0}
    real_fsync = os.fsync

    def dying_fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # after the first file of the new checkpoint
            raise OSError("disk full")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", dying_fsync)
    with pytest.raises(OSError, match="disk full"):
        perturbed_model(seed=9).save(saved, overwrite=True)
    monkeypatch.undo()
    after = checkpoint.load(saved, HookedTransformer).state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert sorted(p.name for p in saved.parent.iterdir()) == ["ckpt"]


def test_killed_between_renames_is_recovered(saved: Path) -> None:
    """A writer killed after moving the old checkpoint aside, before moving the new one in
    (the state its journal describes): the old checkpoint is put back."""
    before = checkpoint.load(saved, HookedTransformer).W_E
    os.rename(saved, saved.parent / ".ckpt.previous")
    (saved.parent / ".ckpt.tmp-999999").mkdir()  # the new one, not yet in place
    (saved.parent / ".ckpt.tmp-999999" / "model.safetensors").write_bytes(b"\x00" * 10)
    (saved.parent / ".ckpt.replacing").write_text(json.dumps({"tmp": ".ckpt.tmp-999999"}))
    assert torch.equal(checkpoint.load(saved, HookedTransformer).W_E, before)
    assert sorted(p.name for p in saved.parent.iterdir()) == ["ckpt"]
    perturbed_model(seed=4).save(saved, overwrite=True)
    assert sorted(p.name for p in saved.parent.iterdir()) == ["ckpt"]


def test_a_backup_without_its_write_in_progress_is_never_restored(saved: Path) -> None:
    """Issue 10: a stale ``.ckpt.previous`` brought back a checkpoint the user had deleted."""
    import shutil

    shutil.copytree(saved, saved.parent / ".ckpt.previous")
    shutil.rmtree(saved)  # the user deletes the checkpoint
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        checkpoint.load(saved, HookedTransformer)
    assert not saved.exists()
    perturbed_model(seed=4).save(saved)  # a fresh save is not refused, and is what loads
    assert torch.equal(checkpoint.load(saved, HookedTransformer).W_E, perturbed_model(seed=4).W_E)


def test_write_file_is_all_or_nothing(tmp_path, monkeypatch):
    from circuits.files import write_file

    target = tmp_path / "lens.bin"
    write_file(target, b"old")

    def fail(*args):
        raise OSError("disk gone")

    monkeypatch.setattr("circuits.files.os.replace", fail)
    with pytest.raises(OSError, match="disk gone"):
        write_file(target, b"new contents")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lens.bin"]
