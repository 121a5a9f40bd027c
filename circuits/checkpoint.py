"""Checkpoints: a directory that is either complete and verified, or refused with a clear error.

Layout of ``DIR/``::

    model.safetensors   the weights, under TransformerLens 3.x parameter names
    config.json         the ModelConfig
    metadata.json       format version, sha256 of every other file, package versions and
                        whatever the writer adds (task, training config, step, seed)
    train_state.pt      training checkpoints only: optimizer, LR schedule, data RNG, history

Writes are atomic and journaled (see :mod:`circuits.files`): the files go into a hidden sibling
directory, each one fsynced, and the directory is renamed into place; a write killed halfway
is finished or undone by the next reader or writer, and a checkpoint the user deleted is never
brought back. A reader therefore finds the old checkpoint or the new one, whole, never a mix.
One writer per checkpoint at a time: writers hold a lock, a second one gets
:class:`~circuits.files.CheckpointBusy`.

Loading checks everything before a tensor reaches a model: format version, file hashes
(truncation, corruption), config fields, tensor names, shapes, dtypes and finiteness.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from circuits.files import FORMAT, METADATA_FILE, recover, write_files
from circuits.validation import is_int

if TYPE_CHECKING:
    from torch import Tensor, nn

    from circuits.config import ModelConfig

__all__ = [
    "CONFIG_FILE",
    "FORMAT_VERSION",
    "MODEL_FILE",
    "TRAIN_STATE_FILE",
    "CheckpointError",
    "all_finite",
    "check_state_dict",
    "load",
    "pack",
    "package_versions",
    "read_config",
    "read_file",
    "read_metadata",
    "read_model",
    "save",
    "sha256",
    "unpack",
]

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TRAIN_STATE_FILE = "train_state.pt"


class CheckpointError(ValueError):
    """A checkpoint is corrupted, incomplete, too new, or does not fit its own config."""


# --- metadata and hashes ---
def sha256(data: bytes) -> str:
    """The SHA-256 hex digest of ``data`` (what ``metadata.json`` records for each file)."""
    return hashlib.sha256(data).hexdigest()


@functools.cache
def package_versions() -> dict[str, str | None]:
    """Versions of the packages that shape a checkpoint (read without importing them)."""
    out: dict[str, str | None] = {}
    for name in ("circuits", "torch", "safetensors", "transformer-lens"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Reads and checks ``metadata.json`` (format and version) without reading the weights."""
    path = Path(path)
    recover(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a checkpoint directory")
    meta_path = path / METADATA_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path} has no {METADATA_FILE}: not a circuits checkpoint")
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{meta_path} is not valid JSON (truncated or corrupted): {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path} is not circuits checkpoint metadata")
    fmt = meta.get("format_version")
    if not is_int(fmt, 1):
        raise CheckpointError(f"{meta_path}: invalid format_version {fmt!r}")
    if fmt > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {fmt} is newer than this circuits reads "
            f"({FORMAT_VERSION}); upgrade circuits to load it"
        )
    hashes = meta.get("sha256")
    if not isinstance(hashes, dict) or not {MODEL_FILE, CONFIG_FILE} <= set(hashes):
        raise CheckpointError(f"{meta_path}: missing the sha256 of {MODEL_FILE}/{CONFIG_FILE}")
    return meta


def read_file(path: str | Path, name: str, meta: dict[str, Any] | None = None) -> bytes:
    """The bytes of one checkpoint file, checked against the hash recorded in the metadata."""
    path = Path(path)
    meta = meta if meta is not None else read_metadata(path)
    expected = meta["sha256"].get(name)
    if expected is None:
        raise CheckpointError(f"{path}: {name} is not part of this checkpoint")
    file = path / name
    if not file.is_file():
        raise CheckpointError(f"{path}: {name} is missing")
    data = file.read_bytes()
    if sha256(data) != expected:
        raise CheckpointError(
            f"{file}: content hash mismatch (file truncated or corrupted; {len(data)} bytes)"
        )
    return data


# --- validation ---
def check_state_dict(
    tensors: dict[str, Tensor], expected: dict[str, Tensor], source: str = "checkpoint"
) -> None:
    """Raises CheckpointError naming every missing or extra tensor and any bad shape/dtype/value.

    Args:
        tensors: What was read.
        expected: A state dict of a model built from the config (names, shapes, dtypes).
    """
    import torch

    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        parts = [f"missing tensor(s): {', '.join(missing)}"] if missing else []
        parts += [f"unexpected tensor(s): {', '.join(extra)}"] if extra else []
        raise CheckpointError(f"{source}: {'; '.join(parts)}")
    for name, want in expected.items():
        got = tensors[name]
        if got.shape != want.shape:
            raise CheckpointError(
                f"{source}: tensor {name} has shape {tuple(got.shape)}, but the config implies "
                f"{tuple(want.shape)}"
            )
        if got.dtype != want.dtype:
            raise CheckpointError(
                f"{source}: tensor {name} has dtype {got.dtype}, not {want.dtype}"
            )
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise CheckpointError(f"{source}: tensor {name} contains NaN or inf")


# --- the model ---
def save(
    model: Any,
    path: str | Path,
    *,
    overwrite: bool = False,
    metadata: dict[str, Any] | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Saves ``model`` as a checkpoint directory at ``path`` (atomically).

    Args:
        model: The model (a module with a ``cfg`` ModelConfig); its weights must be finite.
        path: The checkpoint directory (created; its parent too).
        overwrite: Replace an existing checkpoint at ``path``.
        metadata: JSON-serialisable fields recorded in ``metadata.json`` (e.g. ``task``,
            ``train_config``, ``step``, ``seed``).
        extra_files: More files to store, hashed like the others (``train_state.pt``).

    Returns:
        The checkpoint directory.
    """
    from safetensors.torch import save as save_safetensors

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    check_state_dict(tensors, tensors, source="model to save")  # refuses non-finite weights
    files = {
        MODEL_FILE: save_safetensors(tensors),
        CONFIG_FILE: (json.dumps(model.cfg.to_dict(), indent=2, sort_keys=True) + "\n").encode(),
        **(extra_files or {}),
    }
    reserved = {"format", "format_version", "sha256", "versions"}
    clash = reserved & set(metadata or {})
    if clash:
        raise ValueError(f"metadata must not set reserved field(s): {', '.join(sorted(clash))}")
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seed": model.cfg.seed,
        **(metadata or {}),
        "versions": package_versions(),
        "sha256": {name: sha256(data) for name, data in files.items()},
    }
    try:
        text = json.dumps(meta, indent=2, allow_nan=False, default=_to_json)
        files[METADATA_FILE] = (text + "\n").encode()
    except (TypeError, ValueError) as e:
        raise ValueError(f"metadata must be JSON-serialisable without NaN: {e}") from e
    return write_files(path, files, overwrite=overwrite)


def _to_json(obj: Any) -> Any:
    """JSON for typed values in metadata (e.g. a history of ``EvalRecord``s: ``to_dict()``)."""
    if callable(getattr(obj, "to_dict", None)):
        return obj.to_dict()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def read_config(path: str | Path, meta: dict[str, Any] | None = None) -> ModelConfig:
    """The ``ModelConfig`` of a checkpoint, hash-checked (no weights read).

    Args:
        meta: Its :func:`read_metadata`, if already read (then it is not read again).
    """
    from circuits.config import ModelConfig

    path = Path(path)
    meta = meta if meta is not None else read_metadata(path)
    try:
        return ModelConfig.from_dict(json.loads(read_file(path, CONFIG_FILE, meta)))
    except CheckpointError:
        raise
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path / CONFIG_FILE}: {e}") from e


def read_model(
    path: str | Path, meta: dict[str, Any] | None = None
) -> tuple[ModelConfig, dict[str, Tensor]]:
    """The config and weights of a checkpoint, hash-checked (not yet checked against a model).

    Args:
        meta: Its :func:`read_metadata`, if already read (then it is not read again).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    path = Path(path)
    meta = meta if meta is not None else read_metadata(path)
    cfg = read_config(path, meta)
    try:
        tensors = load_safetensors(read_file(path, MODEL_FILE, meta))
    except SafetensorError as e:
        raise CheckpointError(f"{path / MODEL_FILE}: unreadable safetensors ({e})") from e
    return cfg, tensors


def load(path: str | Path, model_class: Any = None, meta: dict[str, Any] | None = None) -> Any:
    """Loads and validates a checkpoint saved by :func:`save`; returns the model in eval mode.

    Args:
        model_class: Builds the model from the config. This module never imports the model,
            so pass it (``checkpoint.load(path, HookedTransformer)``), or call
            ``HookedTransformer.load(path)``, which does.
        meta: Its :func:`read_metadata`, if already read.

    Raises:
        FileNotFoundError: No checkpoint at ``path``.
        CheckpointError: (a ``ValueError``) hash mismatch, unreadable file, unknown config
            field, missing/extra tensor, shape or dtype that does not fit the config, non-finite
            weights, or a format version newer than this code.
        TypeError: no ``model_class``.
    """
    if model_class is None:
        raise TypeError(
            "checkpoint.load needs the model class: HookedTransformer.load(path), or "
            "checkpoint.load(path, HookedTransformer)"
        )
    cfg, tensors = read_model(path, meta)
    model = model_class(cfg)
    check_state_dict(tensors, model.state_dict(), source=str(Path(path) / MODEL_FILE))
    model.load_state_dict(tensors, strict=True)
    return model.eval()


# --- extra files (a training checkpoint's train_state.pt: see circuits.training.state) ---
def pack(state: dict[str, Any]) -> bytes:
    """Serialises a dict of tensors and plain data (loadable with ``weights_only=True``)."""
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def unpack(data: bytes, source: str = TRAIN_STATE_FILE) -> dict[str, Any]:
    """Reads a ``torch.save`` archive of a dict (``weights_only``: no code runs) from ``data``.

    Raises:
        CheckpointError: The archive is unreadable or not a dict (``source`` names the file).
    """
    import torch

    try:
        state = torch.load(io.BytesIO(data), weights_only=True)
    except Exception as e:  # torch raises several types for a bad archive
        raise CheckpointError(f"{source}: unreadable ({e})") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: expected a dict, got {type(state).__name__}")
    return state


def all_finite(model: nn.Module) -> bool:
    """Whether every parameter of ``model`` is finite (no NaN, no inf)."""
    import torch

    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


# Names this module exported in earlier versions. The atomic-write helpers live in
# circuits.files (returned here with a DeprecationWarning); the training state moved up to
# circuits.training, which this module must not import (the layer contract): a clear error.
_MOVED_TO_FILES = ("CheckpointBusy", "check_writable", "write_file", "writer_lock")
_MOVED_TO_TRAINING = ("load_training", "read_training_metadata", "save_training", "training_run")


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_FILES:
        import warnings

        from circuits import files

        warnings.warn(
            f"circuits.checkpoint.{name} moved to circuits.files.{name}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(files, name)
    if name in _MOVED_TO_TRAINING:
        raise AttributeError(
            f"circuits.checkpoint.{name} moved to circuits.training.{name} (the training state "
            "owns its checkpoint)"
        )
    raise AttributeError(f"module 'circuits.checkpoint' has no attribute {name!r}")
