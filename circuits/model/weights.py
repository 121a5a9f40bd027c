"""TransformerLens 3.x's weight views on :class:`circuits.HookedTransformer`, as a mixin.

Stacked per-layer weights ``[n_layers, ...]`` and factored circuits, with TransformerLens's
names, so analysis code written for it reads our model unchanged. Nothing here is copied: the
per-layer tensors are the parameters (stacking allocates a new tensor each call).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, cast

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens.FactoredMatrix import FactoredMatrix

from circuits.config import ModelConfig
from circuits.model.components import Embed, PosEmbed, TransformerBlock, Unembed
from circuits.validation import is_int


class WeightsHost(Protocol):
    """What :class:`WeightsMixin` reads from the model it is mixed into: the config and the
    layers (``pos_embed`` only where the positional embedding is learned)."""

    @property
    def cfg(self) -> ModelConfig: ...

    blocks: Sequence[TransformerBlock]
    embed: Embed
    pos_embed: PosEmbed
    unembed: Unembed

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...


class WeightsMixin:
    """``W_Q``, ``b_in``, ``QK``, ``accumulated_bias``, ... for a model with ``blocks``."""

    @property
    def _host(self) -> WeightsHost:
        # The model this is mixed into, typed by what is read from it (not the model class).
        return cast(WeightsHost, self)

    def _stack(self, part: str, name: str) -> Tensor:
        return torch.stack([getattr(getattr(block, part), name) for block in self._host.blocks])

    @property
    def W_Q(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return self._stack("attn", "W_Q")

    @property
    def W_K(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return self._stack("attn", "W_K")

    @property
    def W_V(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return self._stack("attn", "W_V")

    @property
    def W_O(self) -> Float[Tensor, "n_layers n_heads d_head d_model"]:
        return self._stack("attn", "W_O")

    @property
    def b_Q(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        return self._stack("attn", "b_Q")

    @property
    def b_K(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        return self._stack("attn", "b_K")

    @property
    def b_V(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        return self._stack("attn", "b_V")

    @property
    def b_O(self) -> Float[Tensor, "n_layers d_model"]:
        return self._stack("attn", "b_O")

    def _mlp(self, name: str) -> Tensor:
        if self._host.cfg.attn_only:
            raise AttributeError(f"{name}: an attention-only model has no MLPs")
        return self._stack("mlp", name)

    @property
    def W_in(self) -> Float[Tensor, "n_layers d_model d_mlp"]:
        return self._mlp("W_in")

    @property
    def W_out(self) -> Float[Tensor, "n_layers d_mlp d_model"]:
        return self._mlp("W_out")

    @property
    def b_in(self) -> Float[Tensor, "n_layers d_mlp"]:
        return self._mlp("b_in")

    @property
    def b_out(self) -> Float[Tensor, "n_layers d_model"]:
        return self._mlp("b_out")

    @property
    def W_E(self) -> Float[Tensor, "d_vocab d_model"]:
        return self._host.embed.W_E

    @property
    def W_pos(self) -> Float[Tensor, "n_ctx d_model"]:
        if self._host.cfg.positional_embedding_type == "rotary":
            raise AttributeError("W_pos: a rotary model has no positional embedding matrix")
        return self._host.pos_embed.W_pos

    @property
    def W_E_pos(self) -> Float[Tensor, "d_vocab_plus_n_ctx d_model"]:
        """``W_E`` and ``W_pos`` stacked: an overcomplete basis of the input space."""
        return torch.cat([self.W_E, self.W_pos], dim=0)

    @property
    def W_U(self) -> Float[Tensor, "d_model d_vocab_out"]:
        return self._host.unembed.W_U

    @property
    def b_U(self) -> Float[Tensor, " d_vocab_out"]:
        return self._host.unembed.b_U

    @property
    def QK(self) -> FactoredMatrix:
        """``W_Q W_K^T`` per head, factored: ``[n_layers, n_heads, d_model, d_model]``."""
        return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))

    @property
    def OV(self) -> FactoredMatrix:
        """``W_V W_O`` per head, factored: ``[n_layers, n_heads, d_model, d_model]``."""
        return FactoredMatrix(self.W_V, self.W_O)

    @property
    def n_params_total(self) -> int:
        """Every parameter, embeddings, biases and norms included (``cfg.n_params`` counts
        the attention and MLP weight matrices only, as TransformerLens does)."""
        return sum(p.numel() for p in self._host.parameters())

    def accumulated_bias(
        self, layer: int, mlp_input: bool = False, include_mlp_biases: bool = True
    ) -> Float[Tensor, " d_model"]:
        """Sum of the output biases (``b_O``, ``b_out``) written before layer ``layer``'s input
        (``0 <= layer <= n_layers``), plus layer ``layer``'s ``b_O`` if ``mlp_input``."""
        n = self._host.cfg.n_layers
        if not is_int(layer) or not 0 <= layer <= n:
            raise ValueError(f"layer={layer!r} out of range [0, {n}]")
        if mlp_input and layer == n:
            raise ValueError("mlp_input=True needs a layer below n_layers")
        total = torch.zeros(self._host.cfg.d_model, device=self.W_E.device, dtype=self.W_E.dtype)
        for block in self._host.blocks[:layer]:
            total = total + block.attn.b_O
            if include_mlp_biases and not self._host.cfg.attn_only:
                total = total + block.mlp.b_out
        if mlp_input:
            total = total + self._host.blocks[layer].attn.b_O
        return total

    def tokens_to_residual_directions(
        self, tokens: Int[Tensor, "..."]
    ) -> Float[Tensor, "... d_model"]:
        """Unembedding directions of token ids: ``W_U[:, token]`` (for logit attribution)."""
        tokens = torch.as_tensor(tokens, device=self.W_U.device)
        n = self._host.cfg.d_vocab_out
        if tokens.is_floating_point() or tokens.dtype == torch.bool:
            raise ValueError(f"tokens must be integer ids in [0, {n}), got {tokens.dtype}")
        if tokens.device.type != "meta" and ((tokens < 0).any() or (tokens >= n).any()):
            raise ValueError(f"tokens must be ids in [0, {n})")
        return self.W_U[:, tokens].movedim(0, -1)
