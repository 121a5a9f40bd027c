"""Models with the real shapes of the models people study, from random weights (no download).

One home for these shapes, used by ``circuits bench --cases scale`` and by the slow tests:

- :func:`attn_only_2l`: the framework paper's ``attn-only-2l`` (2 layers, d_model 512, 8 heads of
  64, vocabulary 48,262, n_ctx 2048, LayerNorm, *shortformer* positions, no MLPs).
- :func:`gelu_4l`: ``gelu-4l`` (4 layers, d_model 512, d_mlp 2048, 8 heads, vocabulary 48,262,
  LayerNorm, standard positions).
- :func:`gpt2_small`: GPT-2 small (12 layers x 12 heads, d_model 768, vocabulary 50,257,
  n_ctx 1024, ``gelu_new``, LayerNorm).

Every builder takes overrides (``d_vocab=``, ``n_ctx=``, ...) so that tests build the same
structure at a size a unit test can afford; the weights come from ``seed`` (default 0).
A model's parameters cost ``4 * n_params`` bytes: attn-only-2l ~0.2 GB, gelu-4l ~0.25 GB,
GPT-2 small ~0.65 GB (its untied ``W_E`` and ``W_U`` are 0.15 GB each).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from circuits.config import ModelConfig
from circuits.model import HookedTransformer

ATTN_ONLY_2L: dict[str, Any] = dict(
    n_layers=2,
    d_model=512,
    n_heads=8,
    d_head=64,
    d_vocab=48262,
    n_ctx=2048,
    attn_only=True,
    normalization_type="LN",
    positional_embedding_type="shortformer",
)
GELU_4L: dict[str, Any] = dict(
    n_layers=4,
    d_model=512,
    n_heads=8,
    d_head=64,
    d_mlp=2048,
    d_vocab=48262,
    n_ctx=1024,
    act_fn="gelu",
    normalization_type="LN",
    positional_embedding_type="standard",
)
GPT2_SMALL: dict[str, Any] = dict(
    n_layers=12,
    d_model=768,
    n_heads=12,
    d_head=64,
    d_mlp=3072,
    d_vocab=50257,
    n_ctx=1024,
    act_fn="gelu_new",
    normalization_type="LN",
    positional_embedding_type="standard",
)
SHAPES: dict[str, dict[str, Any]] = {
    "attn-only-2l": ATTN_ONLY_2L,
    "gelu-4l": GELU_4L,
    "gpt2-small": GPT2_SMALL,
}


def config(name: str, seed: int = 0, **overrides: Any) -> ModelConfig:
    """The :class:`ModelConfig` of shape ``name`` (a key of :data:`SHAPES`), with overrides."""
    if name not in SHAPES:
        raise ValueError(f"unknown shape {name!r}; choose from {', '.join(SHAPES)}")
    return ModelConfig(**{**SHAPES[name], "seed": seed, **overrides})


def build(name: str, seed: int = 0, **overrides: Any) -> HookedTransformer:
    """A model of shape ``name`` with random weights from ``seed``, in eval mode.

    The biases and LayerNorm parameters are randomised too (a fresh model's are 0 and 1, which
    would hide bugs that only non-trivial LayerNorms show).
    """
    model = HookedTransformer(config(name, seed, **overrides))
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith((".b", "b_Q", "b_K", "b_V", "b_O", "b_in", "b_out", "b_U")):
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
            elif pname.endswith(".w"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


def attn_only_2l(seed: int = 0, **overrides: Any) -> HookedTransformer:
    """The ``attn-only-2l`` shape (module doc)."""
    return build("attn-only-2l", seed, **overrides)


def gelu_4l(seed: int = 0, **overrides: Any) -> HookedTransformer:
    """The ``gelu-4l`` shape (module doc)."""
    return build("gelu-4l", seed, **overrides)


def gpt2_small(seed: int = 0, **overrides: Any) -> HookedTransformer:
    """The GPT-2 small shape (module doc)."""
    return build("gpt2-small", seed, **overrides)


BUILDERS: dict[str, Callable[..., HookedTransformer]] = {
    "attn-only-2l": attn_only_2l,
    "gelu-4l": gelu_4l,
    "gpt2-small": gpt2_small,
}
