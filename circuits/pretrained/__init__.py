"""Models someone else trained: TransformerLens's toy-model zoo, GPT-2-style checkpoints, ours.

``from_pretrained("attn-only-2l")`` loads one of the toy models the framework and induction-heads
work was done on (config, weights and tokenizer, from the Hugging Face cache or the hub), with
TransformerLens's weight processing by default. A local directory may hold a zoo-format model
(``config.json`` + ``*final.pth``), a Hugging Face ``GPT2LMHeadModel`` (``config.json`` with
``"model_type": "gpt2"``) or a checkpoint saved by :meth:`HookedTransformer.save`.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from circuits.pretrained.hub import HubOptions, PretrainedError, cached_files, download, list_files
from circuits.pretrained.zoo import TOKENIZER, config_from_neel, known_names, repository

if TYPE_CHECKING:
    from circuits.model import HookedTransformer

__all__ = ["HubOptions", "PretrainedError", "from_pretrained", "known_names", "load_tokenizer"]


def from_pretrained(
    name_or_path: str | Path,
    *,
    fold_ln: bool = True,
    center_writing_weights: bool = True,
    center_unembed: bool = True,
    refactor_factored_attn_matrices: bool = False,
    tokenizer: bool = True,
    default_prepend_bos: bool | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    cache_dir: str | Path | None = None,
    revision: str | None = None,
    local_files_only: bool = False,
) -> HookedTransformer:
    """Loads a pretrained model by zoo name, hub repository or local directory (eval mode).

    Args:
        name_or_path: A zoo name (``known_names()``: ``"attn-only-2l"``, ``"gelu-1l"``,
            ``"solu-4l"``...; TransformerLens's aliases and repository ids work too), a Hugging
            Face repository of a GPT-2-style model, or a local directory.
        fold_ln, center_writing_weights, center_unembed, refactor_factored_attn_matrices:
            TransformerLens's weight processing, with its defaults; logits are unchanged up to
            float error (log-probabilities exactly: centering the unembedding shifts logits by a
            constant). Folding is skipped for shortformer models, as in TransformerLens.
        tokenizer: Attach the model's tokenizer (when it names one).
        default_prepend_bos: Override the model's BOS default for text.
        device, dtype: Where and in what precision the model lives.
        cache_dir, revision, local_files_only: Passed to ``huggingface_hub``.

    Raises:
        PretrainedError: unknown name (the message lists the known ones), no network and
            nothing cached, or files that do not make a model.
    """
    hub = HubOptions(cache_dir, revision, local_files_only)
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        model, tok_name = _from_directory(path, hub)
    elif (repo := repository(name)) is not None:
        model, tok_name = _from_zoo(repo, hub)
    elif _looks_like_repo(name):
        config = download(name, "config.json", hub)
        model, tok_name = _from_directory(config.parent, hub, repo=name)
    else:
        raise PretrainedError(
            f"unknown model {name!r}: not a local directory, and not one of the known names "
            f"{', '.join(known_names())} (or a Hugging Face repository 'org/name' of a GPT-2 model)"
        )
    _process(
        model,
        fold_ln=fold_ln,
        center_writing_weights=center_writing_weights,
        center_unembed=center_unembed,
        refactor=refactor_factored_attn_matrices,
    )
    if tokenizer and tok_name is not None:
        try:
            tok = load_tokenizer(tok_name, hub)
        except PretrainedError as e:
            if not path.is_dir():
                raise
            # A local model stays usable on token ids when its tokenizer can't be had.
            warnings.warn(f"{e}; the model has no tokenizer", UserWarning, stacklevel=2)
        else:
            model.set_tokenizer(tok, default_prepend_bos=default_prepend_bos)
    if default_prepend_bos is not None:
        model.default_prepend_bos = default_prepend_bos
    model = model.to(device=device, dtype=dtype) if device is not None else model.to(dtype=dtype)
    return model.eval()


def load_tokenizer(name_or_path: str | Path, hub: HubOptions | None = None) -> Any:
    """A Hugging Face tokenizer from a repository (cache or hub) or a local directory.

    Raises:
        PretrainedError: it can't be found or downloaded.
    """
    from transformers import AutoTokenizer

    hub = hub or HubOptions()
    directory = Path(str(name_or_path)).expanduser()
    if not directory.is_dir():
        # Fetch the files ourselves (one clear error when offline), then load the snapshot
        # directory: AutoTokenizer on a repository name also asks for the model's config.json.
        directory = download(str(name_or_path), "tokenizer_config.json", hub).parent
        for optional in _TOKENIZER_FILES:
            with contextlib.suppress(PretrainedError):  # a file this kind of tokenizer lacks
                download(str(name_or_path), optional, hub)
    try:
        return AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError) as e:
        raise PretrainedError(
            f"could not load the tokenizer {str(name_or_path)!r}: {_first_line(e)}"
        ) from None


# Files a tokenizer repository may hold besides tokenizer_config.json (fast or GPT-2 style).
_TOKENIZER_FILES = ("tokenizer.json", "special_tokens_map.json", "vocab.json", "merges.txt")


def _from_zoo(repo: str, hub: HubOptions) -> tuple[HookedTransformer, str | None]:
    config = download(repo, "config.json", hub)
    names = None if hub.local_files_only else list_files(repo, revision=hub.revision)
    # Offline, the cache snapshot holds what was downloaded before.
    names = names if names is not None else cached_files(config)
    finals = sorted(n for n in names if n.endswith("final.pth") and "/" not in n)
    weights = download(repo, finals[0] if finals else "model_final.pth", hub)
    return _from_neel_files(config, weights, source=repo)


def _from_directory(
    path: Path, hub: HubOptions, repo: str | None = None
) -> tuple[HookedTransformer, str | None]:
    from circuits.model import HookedTransformer

    source = repo or str(path)
    if repo is None and (path / "metadata.json").is_file():
        return HookedTransformer.load(path), None
    config_path = path / "config.json"
    if not config_path.is_file():
        raise PretrainedError(f"{source} has no config.json: not a model directory")
    cfg_json = _read_json(config_path)
    if cfg_json.get("model_type") == "gpt2":
        return _from_gpt2(repo or str(path), hub, tokenizer_dir=None if repo else path)
    if "d_model" in cfg_json and "n_layers" in cfg_json:
        finals = sorted(p.name for p in path.iterdir() if p.name.endswith("final.pth"))
        if not finals:
            raise PretrainedError(f"{source} has a toy-model config.json but no *final.pth weights")
        return _from_neel_files(config_path, path / finals[0], source=source)
    raise PretrainedError(
        f"{source}: config.json is neither a TransformerLens toy model nor a GPT-2 "
        f"(model_type {cfg_json.get('model_type')!r}); only those load here"
    )


def _from_neel_files(
    config_path: Path, weights_path: Path, source: str
) -> tuple[HookedTransformer, str | None]:
    from circuits.model import HookedTransformer

    cfg_json = _read_json(config_path)
    try:
        cfg = config_from_neel(cfg_json, source=f"{source}/config.json")
    except ValueError as e:
        raise PretrainedError(str(e)) from None
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: torch raises many kinds
        raise PretrainedError(
            f"{source}/{weights_path.name} is not a readable state dict: {_first_line(e)}"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedError(f"{source}/{weights_path.name} is not a state dict of tensors")
    model = HookedTransformer(cfg)
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError) as e:
        raise PretrainedError(f"{source}: weights do not fit its config.json: {e}") from None
    return model, cfg_json.get("tokenizer_name", TOKENIZER)


def _from_gpt2(
    name: str, hub: HubOptions, tokenizer_dir: Path | None
) -> tuple[HookedTransformer, str | None]:
    from transformers import GPT2LMHeadModel

    from circuits.interop.gpt2 import from_gpt2

    try:
        hf = GPT2LMHeadModel.from_pretrained(
            name,
            cache_dir=hub.cache_dir,
            revision=hub.revision or "main",
            local_files_only=hub.local_files_only,
        )
    except OSError as e:
        raise PretrainedError(
            f"could not load the GPT-2 model {name!r}: {_first_line(e)}"
        ) from None
    model = from_gpt2(hf)
    has_tokenizer = tokenizer_dir is None or any(
        (tokenizer_dir / f).is_file()
        for f in ("tokenizer.json", "vocab.json", "tokenizer_config.json")
    )
    return model, (name if has_tokenizer else None)


def _process(
    model: HookedTransformer,
    *,
    fold_ln: bool,
    center_writing_weights: bool,
    center_unembed: bool,
    refactor: bool,
) -> None:
    cfg = model.cfg
    if fold_ln and cfg.positional_embedding_type == "shortformer":
        warnings.warn(
            "fold_ln=True cannot be done for a shortformer model; it is skipped "
            "(as in TransformerLens)",
            UserWarning,
            stacklevel=3,
        )
        fold_ln = False
    if not (fold_ln or center_writing_weights or center_unembed or refactor):
        return
    model.process_weights_(
        fold_ln=fold_ln,
        center_writing_weights=center_writing_weights,
        center_unembed=center_unembed,
        refactor_factored_attn_matrices=refactor,
    )


def _looks_like_repo(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~"))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PretrainedError(f"{path} is not readable JSON: {e}") from None
    if not isinstance(data, dict):
        raise PretrainedError(f"{path} is not a JSON object")
    return data


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
