"""The toy models published with TransformerLens: names, repositories and their config format.

The framework and induction-heads work used Neel Nanda's toy models (attention-only, GELU and SoLU,
1 to 4 layers, trained on C4 + code with the ``NeelNanda/gpt-neox-tokenizer-digits`` tokenizer).
Each repository holds a ``config.json`` in Neel's own format (``n_layers``, ``d_model``, ...,
``normalization``, ``shortformer_pos``, ``tokenizer_name`` and training settings) and the weights
as a TransformerLens-format state dict in a file ending ``final.pth`` (``model_final.pth``).
The table is TransformerLens 3.x's (``supported_models.py``, ``convert_neel_model_config``).
"""

from __future__ import annotations

from typing import Any

from circuits.config import ModelConfig, PosEmbedType

# repository -> names it answers to (the first is the canonical short name), as in TransformerLens.
REPOSITORIES: dict[str, tuple[str, ...]] = {
    "NeelNanda/Attn_Only_1L512W_C4_Code": (
        "attn-only-1l",
        "attn-only-1l-new",
        "attn-only-1l-c4-code",
    ),
    "NeelNanda/Attn_Only_2L512W_C4_Code": (
        "attn-only-2l",
        "attn-only-2l-new",
        "attn-only-2l-c4-code",
    ),
    "NeelNanda/Attn_Only_3L512W_C4_Code": (
        "attn-only-3l",
        "attn-only-3l-new",
        "attn-only-3l-c4-code",
    ),
    "NeelNanda/Attn_Only_4L512W_C4_Code": (
        "attn-only-4l",
        "attn-only-4l-new",
        "attn-only-4l-c4-code",
    ),
    "NeelNanda/Attn-Only-2L512W-Shortformer-6B-big-lr": (
        "attn-only-2l-demo",
        "attn-only-2l-shortformer-6b-big-lr",
        "attn-only-2l-induction-demo",
    ),
    "NeelNanda/GELU_1L512W_C4_Code": ("gelu-1l", "gelu-1l-new", "gelu-1l-c4-code"),
    "NeelNanda/GELU_2L512W_C4_Code": ("gelu-2l", "gelu-2l-new", "gelu-2l-c4-code"),
    "NeelNanda/GELU_3L512W_C4_Code": ("gelu-3l", "gelu-3l-new", "gelu-3l-c4-code"),
    "NeelNanda/GELU_4L512W_C4_Code": ("gelu-4l", "gelu-4l-new", "gelu-4l-c4-code"),
    "NeelNanda/SoLU_1L512W_C4_Code": ("solu-1l", "solu-1l-new", "solu-1l-c4-code"),
    "NeelNanda/SoLU_2L512W_C4_Code": ("solu-2l", "solu-2l-new", "solu-2l-c4-code"),
    "NeelNanda/SoLU_3L512W_C4_Code": ("solu-3l", "solu-3l-new", "solu-3l-c4-code"),
    "NeelNanda/SoLU_4L512W_C4_Code": ("solu-4l", "solu-4l-new", "solu-4l-c4-code"),
}
TOKENIZER = "NeelNanda/gpt-neox-tokenizer-digits"

_BY_NAME: dict[str, str] = {
    alias.lower(): repo for repo, aliases in REPOSITORIES.items() for alias in (repo, *aliases)
}


def known_names() -> list[str]:
    """The canonical short names of the zoo, e.g. ``["attn-only-1l", ...]``."""
    return [aliases[0] for aliases in REPOSITORIES.values()]


def repository(name: str) -> str | None:
    """The Hugging Face repository of a zoo name or alias (case-insensitive), else None."""
    return _BY_NAME.get(name.lower())


# Keys of Neel's config.json that describe the architecture; the others are training settings.
_REQUIRED = ("d_model", "n_layers", "d_head", "n_heads", "n_ctx", "d_vocab", "act_fn", "attn_only")


def config_from_neel(cfg_json: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """A :class:`ModelConfig` from a zoo repository's ``config.json`` (TransformerLens's rules).

    Raises:
        ValueError: a required key is missing or a value is one our model does not support.
    """
    required = _REQUIRED if cfg_json.get("attn_only", True) else (*_REQUIRED, "d_mlp")
    missing = [k for k in required if k not in cfg_json]
    if missing:
        raise ValueError(f"{source} is not a TransformerLens toy-model config: missing {missing}")
    if "normalization" in cfg_json:
        norm = cfg_json["normalization"]
    else:
        norm = cfg_json.get("normalization_type")
    pos: PosEmbedType = "shortformer" if cfg_json.get("shortformer_pos") else "standard"
    if cfg_json.get("final_rms"):
        raise ValueError(f"{source}: final_rms models are not supported")
    attn_only = bool(cfg_json["attn_only"])
    try:
        return ModelConfig(
            n_layers=cfg_json["n_layers"],
            d_model=cfg_json["d_model"],
            n_ctx=cfg_json["n_ctx"],
            d_vocab=cfg_json["d_vocab"],
            n_heads=cfg_json["n_heads"],
            d_head=cfg_json["d_head"],
            attn_only=attn_only,
            d_mlp=None if attn_only else cfg_json["d_mlp"],
            act_fn=cfg_json["act_fn"],
            normalization_type=norm,
            positional_embedding_type=pos,
            eps=float(cfg_json.get("ln_eps", cfg_json.get("eps", 1e-5))),
            model_name=str(
                cfg_json.get("model_name") or source.split("/config.json")[0].split("/")[-1]
            ),
        )
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: {e}") from None
