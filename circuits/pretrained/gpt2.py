"""GPT-2 checkpoints in Hugging Face's layout: the family's names, and a loader that checks first.

``gpt2`` (alias ``gpt2-small``), ``gpt2-medium``, ``gpt2-large``, ``gpt2-xl`` and ``distilgpt2``
(aliases ``distillgpt2``, ``distill-gpt2``, ``distil-gpt2``, ``gpt2-xs``) are TransformerLens
3.5.1's official names and aliases (``supported_models.py``); each is a ``GPT2LMHeadModel``
repository of that name on the hub. Any other repository or directory whose ``config.json``
says ``"model_type": "gpt2"`` loads the same way.

The files are read by us, not by ``transformers``' model loader: ``config.json``, then the
weights' names and shapes (the safetensors header, or a weights-only ``torch.load`` of
``pytorch_model.bin``), checked against the config and against the machine's memory
(:meth:`ModelConfig.check_fits`) before the model is built; then every tensor must be finite.
So a ``config.json`` claiming 100,000 layers over 2 layers of weights is one error, not minutes
of allocation, and no code shipped with a checkpoint ever runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from torch import Tensor

from circuits.pretrained.hub import HubOptions, PretrainedError, download
from circuits.pretrained.tensors import (
    check_finite,
    check_shapes,
    load_safetensors,
    load_torch,
    read_json,
    safetensors_header,
)

if TYPE_CHECKING:
    from circuits.model import HookedTransformer

# official name -> aliases (TransformerLens 3.5.1's MODEL_ALIASES).
GPT2_MODELS: dict[str, tuple[str, ...]] = {
    "gpt2": ("gpt2-small",),
    "gpt2-medium": (),
    "gpt2-large": (),
    "gpt2-xl": (),
    "distilgpt2": ("distillgpt2", "distill-gpt2", "distil-gpt2", "gpt2-xs"),
}
_BY_NAME = {a.lower(): name for name, aliases in GPT2_MODELS.items() for a in (name, *aliases)}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def gpt2_repository(name: str) -> str | None:
    """The hub repository of a GPT-2 family name or alias (case-insensitive), else None."""
    return _BY_NAME.get(name.lower())


def gpt2_files(repo: str, hub: HubOptions) -> tuple[Path, Path]:
    """``config.json`` and the weights file of a hub repository (cache first)."""
    config = download(repo, "config.json", hub)
    first: PretrainedError | None = None
    for name in WEIGHT_FILES:
        try:
            return config, download(repo, name, hub)
        except PretrainedError as e:
            first = first or e
    assert first is not None
    raise first


def directory_weights(path: Path) -> Path:
    """The single weights file of a ``save_pretrained`` directory."""
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return path / name
    if any(path.glob("*.index.json")):
        raise PretrainedError(f"{path}: sharded checkpoints are not supported; save one file")
    raise PretrainedError(f"{path} has a GPT-2 config.json but no {' or '.join(WEIGHT_FILES)}")


def load_gpt2(config_path: Path, weights_path: Path, source: str) -> HookedTransformer:
    """Our model (float32, CPU) from a GPT-2 ``config.json`` and weights file, checked first.

    Raises:
        PretrainedError: the config names something our model lacks, the weights' names or
            shapes do not fit it, it cannot fit in memory, the file is truncated, unsafe or
            foreign, or a tensor is not finite.
    """
    import torch

    from circuits.interop.gpt2 import config_from_gpt2, gpt2_names, gpt2_shapes
    from circuits.interop.gpt2 import state_dict_from_gpt2 as convert
    from circuits.model import HookedTransformer

    where = f"{source}/{weights_path.name}"
    cfg_json = read_json(config_path)
    try:
        cfg = config_from_gpt2(cfg_json).replace(model_name=Path(source).name or source)
    except (TypeError, ValueError) as e:
        raise PretrainedError(f"{source}/config.json: {e}") from None
    state: dict[str, Tensor] | None = None
    if weights_path.suffix == ".safetensors":
        header = safetensors_header(weights_path, where)
        names = gpt2_names(header)
        found = {k: header[v][1] for k, v in names.items()}
    else:
        state = load_torch(weights_path, where)
        names = gpt2_names(state)
        found = {k: tuple(state[v].shape) for k, v in names.items()}
    layers = {k.split(".")[1] for k in found if k.startswith("h.")}
    if len(layers) != cfg.n_layers:
        raise PretrainedError(
            f"{source}: config.json says n_layer={cfg.n_layers} but the weights have "
            f"{len(layers)} layers"
        )
    check_shapes(found, gpt2_shapes(cfg, lm_head="lm_head.weight" in found), source)
    try:
        cfg.check_fits()
    except ValueError as e:
        raise PretrainedError(f"{source}: {e}") from None
    if state is None:
        state = load_safetensors(weights_path, where)
    sd = {k: state[v] for k, v in names.items()}
    check_finite(sd, where)
    model = HookedTransformer(cfg)
    ours = {k: v.to(torch.float32) for k, v in convert(sd, cfg).items()}
    model.load_state_dict(ours, strict=True)
    return model
