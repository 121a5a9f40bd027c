"""circuits.model.weights reads its model through the WeightsHost protocol (no stubbed host
attributes): the model provides every member, and the views are its parameters."""

from __future__ import annotations

import torch

from circuits.config import ModelConfig
from circuits.model import HookedTransformer
from circuits.model.weights import WeightsHost, WeightsMixin


def test_the_model_provides_what_the_mixin_reads() -> None:
    model = HookedTransformer(ModelConfig(n_layers=2, d_model=16, n_heads=2, d_vocab=11, n_ctx=8))
    members = [n for n in vars(WeightsHost) if not n.startswith("_")]
    members += list(WeightsHost.__annotations__)
    assert set(members) >= {"cfg", "blocks", "embed", "pos_embed", "unembed", "parameters"}
    for name in members:
        assert hasattr(model, name), name
    assert isinstance(model, WeightsMixin)
    assert model._host is model
    assert torch.equal(model.W_Q[1], model.blocks[1].attn.W_Q)
    assert model.W_E is model.embed.W_E and model.W_pos is model.pos_embed.W_pos
    assert model.n_params_total == sum(p.numel() for p in model.parameters())
