"""Model factories shared by the tests (imported as ``helpers``; see pythonpath in pyproject)."""

from __future__ import annotations

import torch

from circuits import HookedTransformer, ModelConfig

CONFIGS = {
    "attn_only": dict(attn_only=True, normalization_type=None),
    "full_ln": dict(act_fn="gelu"),
    "shortformer": dict(positional_embedding_type="shortformer"),
    "gelu_new_result": dict(act_fn="gelu_new", use_attn_result=True),
}


def perturbed_model(**overrides: object) -> HookedTransformer:
    """A small model whose biases and LayerNorm gains are non-trivial (so bugs show)."""
    kwargs: dict = dict(n_layers=2, d_model=32, n_ctx=24, d_vocab=20, n_heads=4, seed=3)
    kwargs.update(overrides)
    model = HookedTransformer(ModelConfig(**kwargs))
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()
