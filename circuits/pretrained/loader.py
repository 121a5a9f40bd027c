"""Loading a pretrained model: the name or directory resolved, files read and checked, weights
processed; :func:`from_pretrained` and :func:`from_pretrained_no_processing`. Re-exported by
:mod:`circuits.pretrained`."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from circuits.pretrained.gpt2 import GPT2_MODELS, gpt2_repository
from circuits.pretrained.hub import (
    HubOptions,
    PretrainedError,
    cached_files,
    download,
    list_files,
)
from circuits.pretrained.options import (
    check_hub_kwargs,
    check_name,
    check_unsupported,
    resolve_device,
    resolve_dtype,
)
from circuits.pretrained.tensors import check_finite, check_shapes, load_torch, read_json
from circuits.pretrained.tokenizer import load_tokenizer
from circuits.pretrained.zoo import TOKENIZER, config_from_neel, known_names, repository

if TYPE_CHECKING:
    from circuits.model import HookedTransformer

__all__ = ["from_pretrained", "from_pretrained_no_processing"]


def from_pretrained(
    model_name: str | Path,
    fold_ln: bool = True,
    center_writing_weights: bool = True,
    center_unembed: bool = True,
    refactor_factored_attn_matrices: bool = False,
    checkpoint_index: int | None = None,
    checkpoint_value: int | None = None,
    hf_model: Any = None,
    device: str | torch.device | None = None,
    n_devices: int = 1,
    tokenizer: Any = None,
    move_to_device: bool = True,
    fold_value_biases: bool = True,
    default_prepend_bos: bool | None = None,
    default_padding_side: str | None = None,
    dtype: torch.dtype | str = torch.float32,
    first_n_layers: int | None = None,
    n_ctx: int | None = None,
    **from_pretrained_kwargs: Any,
) -> HookedTransformer:
    """Loads a pretrained model by name, hub repository or local directory (eval mode).

    TransformerLens 3.5.1's ``HookedTransformer.from_pretrained`` signature and defaults.

    Args:
        model_name: A zoo name (``known_names()``: ``"attn-only-2l"``, ``"gelu-1l"``...), a
            GPT-2 family name (``"gpt2"``/``"gpt2-small"``, ``"gpt2-medium"``, ``"gpt2-large"``,
            ``"gpt2-xl"``, ``"distilgpt2"``; TL3's aliases and repository ids work too), a Hugging
            Face repository of a GPT-2-style model, or a local directory.
        fold_ln, center_writing_weights, center_unembed, refactor_factored_attn_matrices,
            fold_value_biases: TransformerLens's weight processing, with its defaults; logits
            are unchanged up to float error (log-probabilities exactly: centering the
            unembedding shifts logits by a constant). Shortformer models skip folding and
            centering, as in TransformerLens.
        hf_model: An already loaded ``GPT2LMHeadModel`` to take the weights from.
        device: Where the model lives (default the CPU); checked before anything is loaded.
        tokenizer: A Hugging Face tokenizer to use; None loads the model's own, False none.
        move_to_device: Move the model to ``device`` (else it stays on the CPU).
        default_prepend_bos, default_padding_side: The model's defaults for text.
        dtype: A floating torch dtype or its name (``"float32"``, ``"bf16"``...).
        checkpoint_index, checkpoint_value, first_n_layers, n_ctx, n_devices: TL3's; only
            their defaults are supported (anything else is refused, named).
        from_pretrained_kwargs: ``cache_dir``, ``revision``, ``local_files_only`` (passed to
            ``huggingface_hub``), ``torch_dtype`` (TL3's older ``dtype``);
            ``trust_remote_code=True`` is refused.

    Raises:
        PretrainedError: unknown name (the message lists the known ones), no network and
            nothing cached (in seconds; the message names the offline stand-in), files that do
            not make a model (truncated, unsafe pickles, shapes that do not fit the config,
            non-finite tensors), a tokenizer that ships its own code.
        ValueError, TypeError: an argument that is not valid, before any work.
    """
    name = check_name(model_name)
    check_unsupported(
        checkpoint_index=checkpoint_index,
        checkpoint_value=checkpoint_value,
        checkpoint_label=from_pretrained_kwargs.pop("checkpoint_label", None),
        first_n_layers=first_n_layers,
        n_ctx=n_ctx,
        n_devices=n_devices,
    )
    check_hub_kwargs(from_pretrained_kwargs)
    dtype = resolve_dtype(dtype, from_pretrained_kwargs.get("torch_dtype"))
    dev = resolve_device(device)
    if default_padding_side not in (None, "left", "right"):
        raise ValueError(
            f"default_padding_side must be 'left' or 'right', got {default_padding_side!r}"
        )
    hub = HubOptions(
        from_pretrained_kwargs.get("cache_dir"),
        from_pretrained_kwargs.get("revision"),
        bool(from_pretrained_kwargs.get("local_files_only", False)),
    )
    model, tok_name = _load(name, hub, hf_model)
    _process(
        model,
        fold_ln=fold_ln,
        center_writing_weights=center_writing_weights,
        center_unembed=center_unembed,
        refactor=refactor_factored_attn_matrices,
        fold_value_biases=fold_value_biases,
    )
    _attach_tokenizer(
        model,
        tokenizer,
        tok_name,
        hub,
        local=Path(name).expanduser().is_dir(),
        default_prepend_bos=default_prepend_bos,
        padding_side=default_padding_side,
    )
    if default_prepend_bos is not None:
        model.default_prepend_bos = bool(default_prepend_bos)
    model = model.to(dtype=dtype)
    if dev is not None and move_to_device:
        model = model.to(dev)
    return model.eval()


def from_pretrained_no_processing(
    model_name: str | Path,
    fold_ln: bool = False,
    center_writing_weights: bool = False,
    center_unembed: bool = False,
    refactor_factored_attn_matrices: bool = False,
    fold_value_biases: bool = False,
    dtype: torch.dtype | str = torch.float32,
    default_prepend_bos: bool | None = None,
    default_padding_side: str | None = None,
    **from_pretrained_kwargs: Any,
) -> HookedTransformer:
    """:func:`from_pretrained` with every weight-processing step off (TL3's wrapper)."""
    return from_pretrained(
        model_name,
        fold_ln=fold_ln,
        center_writing_weights=center_writing_weights,
        center_unembed=center_unembed,
        refactor_factored_attn_matrices=refactor_factored_attn_matrices,
        fold_value_biases=fold_value_biases,
        dtype=dtype,
        default_prepend_bos=default_prepend_bos,
        default_padding_side=default_padding_side,
        **from_pretrained_kwargs,
    )


def _load(name: str, hub: HubOptions, hf_model: Any) -> tuple[HookedTransformer, str | None]:
    """The model (unprocessed, float32, CPU) and the tokenizer it names."""
    from circuits.pretrained.gpt2 import gpt2_files, load_gpt2

    path = Path(name).expanduser()
    if hf_model is not None:
        from circuits.interop.gpt2 import from_gpt2

        try:
            model = from_gpt2(hf_model)
        except ValueError as e:
            raise PretrainedError(f"hf_model: {e}") from None
        return model, (gpt2_repository(name) or name)
    if path.is_dir():
        return _from_directory(path, hub)
    if (repo := repository(name)) is not None:
        return _from_zoo(repo, hub)
    if (repo := gpt2_repository(name)) is not None:
        config, weights = gpt2_files(repo, hub)
        return load_gpt2(config, weights, repo), repo
    if _looks_like_repo(name):
        config = download(name, "config.json", hub)
        return _from_directory(config.parent, hub, repo=name)
    raise PretrainedError(
        f"unknown model {name!r}: not a local directory, and not one of the known names "
        f"{', '.join([*known_names(), *GPT2_MODELS])} (or a Hugging Face repository "
        "'org/name' of a GPT-2 model)"
    )


def _attach_tokenizer(
    model: HookedTransformer,
    tokenizer: Any,
    tok_name: str | None,
    hub: HubOptions,
    *,
    local: bool,
    default_prepend_bos: bool | None,
    padding_side: str | None,
) -> None:
    default = tokenizer is None or tokenizer is True
    if tokenizer is False or (default and tok_name is None):
        return
    if default:
        try:
            tokenizer = load_tokenizer(tok_name, hub)  # type: ignore[arg-type]
        except PretrainedError as e:
            if not local or "own code" in str(e):
                raise
            # A local model stays usable on token ids when its tokenizer can't be had.
            warnings.warn(f"{e}; the model has no tokenizer", UserWarning, stacklevel=3)
            return
    model.set_tokenizer(
        tokenizer,
        default_padding_side=padding_side,  # type: ignore[arg-type]
        default_prepend_bos=default_prepend_bos,
    )


def _from_zoo(repo: str, hub: HubOptions) -> tuple[HookedTransformer, str | None]:
    config = download(repo, "config.json", hub)
    names = list_files(repo, hub)
    # Offline, the cache snapshot holds what was downloaded before.
    names = names if names is not None else cached_files(config)
    finals = sorted(n for n in names if n.endswith("final.pth") and "/" not in n)
    weights = download(repo, finals[0] if finals else "model_final.pth", hub)
    return _from_neel_files(config, weights, source=repo)


def _from_directory(
    path: Path, hub: HubOptions, repo: str | None = None
) -> tuple[HookedTransformer, str | None]:
    from circuits.model import HookedTransformer
    from circuits.pretrained.gpt2 import directory_weights, load_gpt2

    source = repo or str(path)
    if repo is None and (path / "metadata.json").is_file():
        return HookedTransformer.load(path), None
    config_path = path / "config.json"
    if not config_path.is_file():
        raise PretrainedError(f"{source} has no config.json: not a model directory")
    cfg_json = read_json(config_path)
    if cfg_json.get("model_type") == "gpt2":
        if repo is not None:
            from circuits.pretrained.gpt2 import gpt2_files

            config_path, weights = gpt2_files(repo, hub)
        else:
            weights = directory_weights(path)
        model = load_gpt2(config_path, weights, source)
        return model, (repo or (str(path) if _has_tokenizer(path) else None))
    if "d_model" in cfg_json and "n_layers" in cfg_json:
        finals = sorted(p.name for p in path.iterdir() if p.name.endswith("final.pth"))
        if not finals:
            raise PretrainedError(f"{source} has a toy-model config.json but no *final.pth weights")
        return _from_neel_files(config_path, path / finals[0], source=source)
    raise PretrainedError(
        f"{source}: config.json is neither a TransformerLens toy model nor a GPT-2 "
        f"(model_type {cfg_json.get('model_type')!r}); only those load here"
    )


def _has_tokenizer(path: Path) -> bool:
    files = ("tokenizer.json", "vocab.json", "tokenizer_config.json")
    return any((path / f).is_file() for f in files)


# Buffers the zoo's files carry that our model rebuilds itself.
_ZOO_BUFFERS = ("attn.mask", "attn.IGNORE")


def _from_neel_files(
    config_path: Path, weights_path: Path, source: str
) -> tuple[HookedTransformer, str | None]:
    """A zoo model: config checked, weights read safely and checked against it (shapes on a
    meta-device model, memory, finiteness) before the real model is built."""
    from circuits.model import HookedTransformer

    cfg_json = read_json(config_path)
    try:
        cfg = config_from_neel(cfg_json, source=f"{source}/config.json")
    except ValueError as e:
        raise PretrainedError(str(e)) from None
    where = f"{source}/{weights_path.name}"
    state = load_torch(weights_path, where)
    state = {k: v for k, v in state.items() if not k.endswith(_ZOO_BUFFERS)}
    layers = {k.split(".")[1] for k in state if k.startswith("blocks.")}
    if len(layers) != cfg.n_layers:  # before a model of n_layers blocks is built, even on meta
        raise PretrainedError(
            f"{source}: config.json says n_layers={cfg.n_layers} but the weights have "
            f"{len(layers)} layers"
        )
    try:
        cfg.check_fits()
    except ValueError as e:
        raise PretrainedError(f"{source}: {e}") from None
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in HookedTransformer(cfg).state_dict().items()}
    check_shapes({k: tuple(v.shape) for k, v in state.items()}, expected, source)
    check_finite(state, where)
    model = HookedTransformer(cfg)
    model.load_state_dict(state, strict=True)
    tok = cfg_json.get("tokenizer_name", TOKENIZER)
    if tok is not None and not isinstance(tok, str):
        raise PretrainedError(f"{source}/config.json: tokenizer_name must be a string, got {tok!r}")
    return model, tok


def _process(
    model: HookedTransformer,
    *,
    fold_ln: bool,
    center_writing_weights: bool,
    center_unembed: bool,
    refactor: bool,
    fold_value_biases: bool,
) -> None:
    cfg = model.cfg
    if cfg.positional_embedding_type == "shortformer":
        skipped = [
            n
            for n, on in (
                ("fold_ln", fold_ln),
                ("center_writing_weights", center_writing_weights),
                ("center_unembed", center_unembed),
            )
            if on
        ]
        if skipped:
            warnings.warn(
                f"{', '.join(skipped)} cannot be done for a shortformer model; skipped "
                "(as in TransformerLens)",
                UserWarning,
                stacklevel=3,
            )
        fold_ln = center_writing_weights = center_unembed = False
    if not (fold_ln or center_writing_weights or center_unembed or refactor or fold_value_biases):
        return
    model.process_weights_(
        fold_ln=fold_ln,
        center_writing_weights=center_writing_weights,
        center_unembed=center_unembed,
        refactor_factored_attn_matrices=refactor,
        fold_value_biases=fold_value_biases,
    )


def _looks_like_repo(name: str) -> bool:
    parts = name.split("/")
    return (
        len(parts) == 2
        and all(p and p not in (".", "..") for p in parts)
        and not name.startswith((".", "~"))
    )
