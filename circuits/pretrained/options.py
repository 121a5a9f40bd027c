"""The arguments of ``from_pretrained`` checked before any download or allocation.

TransformerLens 3.5.1's keyword arguments are accepted with its meanings; what we do not do
(training checkpoints, several devices, layer or context truncation, quantisation, running a
checkpoint's own code) is one clear error naming the argument.
"""

from __future__ import annotations

from typing import Any

import torch

# TransformerLens 3.5.1's DTYPE_FROM_STRING, plus float64 (our analysis tests use it).
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float64": torch.float64,
}
# Keyword arguments TL3 passes on to Hugging Face's from_pretrained that mean something here.
HUB_KWARGS = ("cache_dir", "revision", "local_files_only", "torch_dtype", "trust_remote_code")


def check_name(name: object) -> str:
    """The model name as a string; TypeError for anything else."""
    from pathlib import Path

    if isinstance(name, Path):
        return str(name)
    if not isinstance(name, str):
        raise TypeError(f"model_name must be a string or a path, got {type(name).__name__}")
    if not name.strip():
        raise ValueError(f"model_name is empty ({name!r}): give a model name or a directory")
    return name


def resolve_dtype(dtype: object, torch_dtype: object = None) -> torch.dtype:
    """A floating torch dtype from a dtype or one of :data:`DTYPES`' names (``torch_dtype``,
    TL3's older spelling, wins when given)."""
    value = torch_dtype if torch_dtype is not None else dtype
    if isinstance(value, str):
        if value not in DTYPES:
            raise ValueError(f"dtype={value!r} is not one of {', '.join(DTYPES)}")
        return DTYPES[value]
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(f"dtype must be a floating torch dtype or its name, got {value!r}")
    return value


def resolve_device(device: object) -> torch.device | None:
    """``device`` as a ``torch.device`` that exists on this machine (None stays None: CPU).

    Raises:
        ValueError: not a device name, or a CUDA/MPS device this machine lacks.
    """
    if device is None:
        return None
    if not isinstance(device, str | torch.device):
        raise TypeError(f"device must be a string or torch.device, got {type(device).__name__}")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(
            f"device={device!r} is not a torch device ('cpu', 'cuda', 'cuda:1', 'mps'...)"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r}: MPS is not available on this machine")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device={device!r}: only cpu, cuda and mps are supported")
    return dev


def check_unsupported(**given: Any) -> None:
    """Refuses TL3 arguments we do not implement when they are set."""
    reasons = {
        "checkpoint_index": "training checkpoints are not available here",
        "checkpoint_value": "training checkpoints are not available here",
        "checkpoint_label": "training checkpoints are not available here",
        "first_n_layers": "loading only the first layers is not supported",
        "n_ctx": "changing the context length is not supported",
    }
    for name, value in given.items():
        if name == "n_devices":
            if isinstance(value, bool) or value != 1:
                raise ValueError(f"n_devices={value!r}: only one device is supported")
        elif value is not None:
            raise ValueError(f"{name}={value!r}: {reasons[name]}")


def check_hub_kwargs(kwargs: dict[str, Any]) -> None:
    """The extra keyword arguments: only :data:`HUB_KWARGS`, and no remote code."""
    unknown = sorted(set(kwargs) - set(HUB_KWARGS))
    if unknown:
        raise TypeError(
            f"from_pretrained got unexpected keyword argument(s) {', '.join(unknown)} "
            f"(beyond TransformerLens's own it takes {', '.join(HUB_KWARGS)})"
        )
    if kwargs.get("trust_remote_code"):
        raise ValueError(
            "trust_remote_code=True is refused: circuits never runs code shipped with a "
            "checkpoint or tokenizer (only GPT-2-style and toy-zoo models load, from tensors)"
        )
    for flag in ("local_files_only",):
        if flag in kwargs and not isinstance(kwargs[flag], bool):
            raise TypeError(f"{flag} must be a bool, got {kwargs[flag]!r}")
