"""Reading someone else's weight files safely: no pickled code, no truncation, no NaN.

Three checks every pretrained load goes through, each one line naming the file and, where it
applies, the tensor:

- a ``.pth``/``.bin`` is read with ``torch.load(weights_only=True)``; a file holding anything
  but tensors (a pickle payload) is refused as unsafe and nothing in it runs;
- a ``.safetensors`` header is parsed by hand first (names, dtypes, shapes and byte ranges,
  without reading the data), so a truncated file or an absurd header is refused before any
  allocation and shapes can be checked against the config;
- every floating-point tensor must be finite (as our own checkpoints must be): one NaN in
  ``W_U`` would otherwise spread through weight processing to every logit.
"""

from __future__ import annotations

import json
import pickle
import struct
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from circuits.pretrained.hub import PretrainedError, first_line

# A safetensors header larger than this is not a model's (the format's own limit is 100 MB).
_MAX_HEADER = 100_000_000


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; PretrainedError when unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise PretrainedError(f"{path} is not readable JSON: {first_line(e)}") from None
    if not isinstance(data, dict):
        raise PretrainedError(f"{path} is not a JSON object")
    return data


def load_torch(path: Path, source: str) -> dict[str, Tensor]:
    """A state dict from a ``torch.save`` file, read with ``weights_only=True`` (memory-mapped
    when the format allows, so the tensors are not copied into memory until used).

    Raises:
        PretrainedError: the file is truncated or foreign, holds more than tensors (refused as
            unsafe: nothing in it was run), or is not a dict of tensors.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's own advice about the file, see below
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:
                if "mmap" not in str(e):
                    raise
                state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's message suggests switching the protection off; we never do.
        raise PretrainedError(
            f"{source} was refused as unsafe: it is a pickle holding more than tensors "
            "(torch's weights-only load failed), so nothing in it was run or loaded; use a "
            "file of plain tensors (a state dict or .safetensors) from a source you trust"
        ) from None
    except Exception as e:  # a truncated or foreign file: torch raises many kinds
        raise PretrainedError(f"{source} is not a readable state dict: {first_line(e)}") from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()
    ):
        raise PretrainedError(f"{source} is not a state dict of tensors")
    return state


def safetensors_header(path: Path, source: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{name: (dtype, shape)}`` of a ``.safetensors`` file, from its header alone.

    The byte ranges must tile the data exactly as far as the file goes, so a truncated file is
    refused here, before anything is read or allocated.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError("shorter than a header")
            (n,) = struct.unpack("<Q", head)
            if n > min(_MAX_HEADER, size - 8):
                raise ValueError(f"header of {n} bytes in a file of {size}")
            header = json.loads(f.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise PretrainedError(f"{source} is not a readable safetensors file: {e}") from None
    if not isinstance(header, dict):
        raise PretrainedError(f"{source} is not a readable safetensors file: bad header")
    header.pop("__metadata__", None)
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    end = 0
    for name, info in header.items():
        try:
            dtype, shape, (start, stop) = info["dtype"], info["shape"], info["data_offsets"]
            ok = all(isinstance(d, int) and d >= 0 for d in (*shape, start, stop))
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok or not isinstance(dtype, str) or start > stop:
            raise PretrainedError(f"{source}: the header entry of {name!r} is malformed")
        out[name] = (dtype, tuple(shape))
        end = max(end, stop)
    if 8 + n + end != size:
        raise PretrainedError(
            f"{source} is truncated or corrupt: its header describes {8 + n + end} bytes, the "
            f"file has {size}"
        )
    return out


def load_safetensors(path: Path, source: str) -> dict[str, Tensor]:
    """The tensors of a ``.safetensors`` file (check :func:`safetensors_header` first)."""
    from safetensors.torch import load_file

    try:
        return dict(load_file(str(path), device="cpu"))
    except Exception as e:  # SafetensorError and friends
        raise PretrainedError(
            f"{source} is not a readable safetensors file: {first_line(e)}"
        ) from None


def check_finite(state: dict[str, Tensor], source: str) -> None:
    """Refuses a state dict with a NaN or infinite value, naming the first such tensor."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise PretrainedError(
                f"{source}: tensor {name} contains NaN or inf; non-finite weights are refused "
                "(they would spread to every logit)"
            )


def check_shapes(
    found: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]], source: str
) -> None:
    """Missing, unexpected or misshapen tensors, as one line (the first few named)."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    wrong = [
        f"{k} {found[k]} (config implies {expected[k]})"
        for k in expected
        if k in found and tuple(found[k]) != tuple(expected[k])
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", extra), ("misshapen", wrong)):
        if items:
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            problems.append(f"{label}: {', '.join(map(str, items[:3]))}{more}")
    if problems:
        raise PretrainedError(
            f"{source}: weights do not fit its config.json: {'; '.join(problems)}"
        )
