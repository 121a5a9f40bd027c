"""A hookable transformer, small enough to read in one sitting.

Parameter names, shapes and hook names are TransformerLens's (``HookedTransformer`` 3.x), so its
state dicts load with ``strict=True`` and its users find every activation where they expect it.
The model is built on ``transformer_lens.HookedRootModule``: ``run_with_hooks``,
``run_with_cache`` and ``hooks()`` come from there.

Two execution paths give the same numbers: with hooks or a cache attached, attention is spelled
out (scores, mask, softmax) so every intermediate can be read or patched; with none attached it
uses the fused ``scaled_dot_product_attention`` kernel and skips the hook calls, and layer 0 of a
model without LayerNorm projects its small embedding tables instead of every position; that is what
makes training fast on a CPU. The choice is per layer: a hook on one layer leaves the others fused.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, cast

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens.ActivationCache import ActivationCache
from transformer_lens.FactoredMatrix import FactoredMatrix
from transformer_lens.hook_points import HookPoint
from transformer_lens.HookedRootModule import HookedRootModule

from circuits.config import ModelConfig
from circuits.validation import check_tokens

ReturnType = Literal["logits", "loss", "both"] | None
# Up to this many positions the fast path on several threads spells attention out instead of
# calling the fused kernel (see Attention._fused); beyond it the kernel's memory saving matters.
EXPLICIT_ATTENTION_MAX_POS = 128


def gelu_new(x: Tensor) -> Tensor:
    """GPT-2's tanh approximation of GELU (TransformerLens's ``gelu_new``)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": F.gelu,
    "gelu_new": gelu_new,
    "relu": F.relu,
}


def cross_entropy(
    logits: Float[Tensor, "batch pos d_vocab"],
    tokens: Int[Tensor, "batch pos"],
    targets: Int[Tensor, "batch pos"] | None = None,
    loss_mask: Tensor | None = None,
    per_token: bool = False,
) -> Tensor:
    """Cross-entropy of ``logits``: next-token by default, else against ``targets``.

    Args:
        logits: ``[batch, pos, d_vocab]``.
        tokens: ``[batch, pos]``; the next token is the target when ``targets`` is None (the
            last position has none, so the loss covers ``pos - 1`` positions).
        targets: ``[batch, pos]`` ids to predict at each position.
        loss_mask: Bool ``[batch, pos]``: positions that count.
        per_token: Return the per-position loss (zero where masked) instead of the mean.
    """
    if targets is None:
        logits, targets = logits[:, :-1], tokens[:, 1:]
        if loss_mask is not None:
            loss_mask = loss_mask[:, :-1]
    elif targets.shape != tokens.shape:
        raise ValueError(f"targets shape {tuple(targets.shape)} != tokens {tuple(tokens.shape)}")
    # Rows of [batch * pos, d_vocab]: log-softmax over contiguous rows is faster than over
    # the strided d_vocab axis of a [batch, d_vocab, pos] view.
    per_pos = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    ).view(targets.shape)
    if loss_mask is None:
        return per_pos if per_token else per_pos.mean()
    if loss_mask.shape != per_pos.shape:
        raise ValueError(
            f"loss_mask shape {tuple(loss_mask.shape)} does not match {tuple(per_pos.shape)}"
        )
    per_pos = per_pos * loss_mask
    return per_pos if per_token else per_pos.sum() / loss_mask.sum().clamp(min=1)


class Embed(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_model))

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        return F.embedding(tokens, self.W_E)


class PosEmbed(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model))

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        batch, pos = tokens.shape
        return self.W_pos[:pos].unsqueeze(0).expand(batch, pos, -1)


class Unembed(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.W_U = nn.Parameter(torch.empty(cfg.d_model, cfg.d_vocab_out))
        self.b_U = nn.Parameter(torch.zeros(cfg.d_vocab_out))

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_vocab"]:
        return torch.addmm(self.b_U, x.reshape(-1, x.shape[-1]), self.W_U).view(*x.shape[:-1], -1)


class LayerNorm(nn.Module):
    """LayerNorm with TransformerLens's ``hook_scale`` (the divisor) and ``hook_normalized``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.eps = cfg.eps
        self.w = nn.Parameter(torch.ones(cfg.d_model))
        self.b = nn.Parameter(torch.zeros(cfg.d_model))
        self.hook_scale = HookPoint()  # [batch, pos, 1]
        self.hook_normalized = HookPoint()  # [batch, pos, d_model]

    def forward(
        self, x: Float[Tensor, "batch pos d_model"], hooked: bool = True
    ) -> Float[Tensor, "batch pos d_model"]:
        if not hooked:
            return F.layer_norm(x, x.shape[-1:], self.w, self.b, self.eps)
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(x / scale) * self.w + self.b


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        h, d, e = cfg.n_heads, cfg.d_model, cfg.d_head
        self.W_Q = nn.Parameter(torch.empty(h, d, e))
        self.W_K = nn.Parameter(torch.empty(h, d, e))
        self.W_V = nn.Parameter(torch.empty(h, d, e))
        self.W_O = nn.Parameter(torch.empty(h, e, d))
        self.b_Q = nn.Parameter(torch.zeros(h, e))
        self.b_K = nn.Parameter(torch.zeros(h, e))
        self.b_V = nn.Parameter(torch.zeros(h, e))
        self.b_O = nn.Parameter(torch.zeros(d))
        self.hook_q = HookPoint()  # [batch, pos, n_heads, d_head]
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        self.hook_attn_scores = HookPoint()  # [batch, n_heads, query_pos, key_pos], masked
        self.hook_pattern = HookPoint()  # [batch, n_heads, query_pos, key_pos]
        self.hook_z = HookPoint()  # [batch, pos, n_heads, d_head]
        self.hook_result = HookPoint()  # [batch, pos, n_heads, d_model], if use_attn_result

    def forward(
        self,
        query_input: Float[Tensor, "batch pos d_model"],
        key_input: Float[Tensor, "batch pos d_model"],
        value_input: Float[Tensor, "batch pos d_model"],
        hooked: bool = True,
        embedding: tuple[Tensor, Tensor, Tensor] | None = None,
    ) -> Float[Tensor, "batch pos d_model"]:
        if not hooked:
            return self._fused(query_input, key_input, value_input, embedding)
        q = self.hook_q(einops.einsum(query_input, self.W_Q, "b p d, h d e -> b p h e") + self.b_Q)
        k = self.hook_k(einops.einsum(key_input, self.W_K, "b p d, h d e -> b p h e") + self.b_K)
        v = self.hook_v(einops.einsum(value_input, self.W_V, "b p d, h d e -> b p h e") + self.b_V)
        scores = einops.einsum(q, k, "b q h e, b k h e -> b h q k")
        n = scores.shape[-1]
        causal = torch.ones(n, n, dtype=torch.bool, device=scores.device).tril()
        # In place: the same numbers as TransformerLens's `scores / scale` then masking, without
        # two more [batch, heads, pos, pos] copies (neither op's backward needs its input).
        scores = scores.div_(self.cfg.attn_scale).masked_fill_(~causal, float("-inf"))
        scores = self.hook_attn_scores(scores)
        pattern = self.hook_pattern(scores.softmax(dim=-1))
        z = self.hook_z(einops.einsum(pattern, v, "b h q k, b k h e -> b q h e"))
        if self.cfg.use_attn_result:
            result = self.hook_result(einops.einsum(z, self.W_O, "b p h e, h e d -> b p h d"))
            return result.sum(dim=-2) + self.b_O
        return einops.einsum(z, self.W_O, "b p h e, h e d -> b p d") + self.b_O

    def _fused(
        self,
        query_input: Tensor,
        key_input: Tensor,
        value_input: Tensor,
        embedding: tuple[Tensor, Tensor, Tensor] | None = None,
    ) -> Tensor:
        # One matmul for Q, K and V instead of three einsums, no hook calls, and attention
        # without the intermediate passes of the hooked path (no pattern kept on one thread).
        h, e = self.cfg.n_heads, self.cfg.d_head
        b, p, d = query_input.shape

        def flat(W: Tensor) -> Tensor:  # [n, d_model, d_head] -> [d_model, n * d_head]
            return W.permute(1, 0, 2).reshape(d, -1)

        def project(x: Tensor, W: Tensor, bias: Tensor) -> Tensor:
            out = torch.addmm(bias.reshape(-1), x.reshape(b * p, d), flat(W))
            return out.view(b, p, -1, e)  # [batch, pos, heads (or 3 * heads), d_head]

        if embedding is None and not (query_input is key_input is value_input):
            qkv = (
                project(query_input, self.W_Q, self.b_Q),
                project(key_input, self.W_K, self.b_K),
                project(value_input, self.W_V, self.b_V),
            )
        else:
            W_QKV = torch.cat([self.W_Q, self.W_K, self.W_V], dim=0)  # [3 * heads, d_model, d_head]
            b_QKV = torch.cat([self.b_Q, self.b_K, self.b_V], dim=0)
            if embedding is None:
                qkv = project(query_input, W_QKV, b_QKV).split(h, dim=2)
            else:
                # The input is exactly W_E[tokens] + W_pos[:pos] (HookedTransformer.
                # _embedding_tables says when), so its projection is a lookup in two projected
                # tables: d_vocab + pos rows go through the matmul (and its two backward
                # matmuls) instead of batch * pos.
                tokens, W_E, W_pos = embedding
                by_token = W_E @ flat(W_QKV)  # [d_vocab, 3 * heads * d_head]
                by_pos = torch.addmm(b_QKV.reshape(-1), W_pos[:p], flat(W_QKV))
                qkv = (F.embedding(tokens, by_token) + by_pos).view(b, p, 3 * h, e).split(h, dim=2)
        # Split before transposing to [batch, heads, pos, d_head]: the kernel's gradients come
        # back in [batch, pos, heads, d_head] layout, so the backward concatenates them without
        # a transposing copy.
        q, k, v = (t.transpose(1, 2) for t in qkv)
        if p <= EXPLICIT_ATTENTION_MAX_POS and torch.get_num_threads() > 1:
            # Short sequences on several threads: a plain matmul-softmax-matmul, whose backward
            # parallelises where the fused kernel's CPU backward does not. At the benchmark's
            # reference size on 2 threads: 74 steps/s against 51 with the kernel; on one thread
            # the kernel wins, 49 against 43 (2026-11-25 machine; on a 4x slower one of
            # 2026-11-27 the two tie on 2 threads, and the split below beats the kernel by 10%).
            # The pattern kept for the backward is small here.
            causal = torch.full((p, p), float("-inf"), device=q.device, dtype=q.dtype).triu(1)
            q, k, v = (t.reshape(b * h, p, e) for t in (q, k, v))

            def attend(queries: Tensor, lo: int, hi: int) -> Tensor:  # queries lo:hi see keys :hi
                # Whole k and v where all keys are seen: even a full slice costs the backward a
                # zero-filled copy.
                keys, values = (k, v) if hi == p else (k[:, :hi], v[:, :hi])
                # One GEMM scales the scores and adds the mask: no more passes over them.
                scores = torch.baddbmm(
                    causal[lo:hi, :hi], queries, keys.transpose(1, 2), alpha=1 / self.cfg.attn_scale
                )
                return torch.bmm(scores.softmax(dim=-1), values)

            # The first half of the queries sees only the first half of the keys: two products
            # skip the masked quarter of the scores (+5% steps/s at the reference size).
            cut = p // 2 if p >= 16 else 0
            if cut:
                first, second = q.split([cut, p - cut], dim=1)
                z = torch.cat([attend(first, 0, cut), attend(second, cut, p)], dim=1)
            else:
                z = attend(q, 0, p)
            z = z.view(b, h, p, e)
        else:
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [b, h, p, e]
        z = z.transpose(1, 2).reshape(b * p, h * e)
        return torch.addmm(self.b_O, z, self.W_O.reshape(h * e, d)).view(b, p, d)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # TransformerLens 3.x saves two buffers per attention layer: ``mask`` (a causal mask,
        # empty in 3.9) and ``IGNORE`` (the masked score). We always mask causally with -inf,
        # so we consume them here, after checking they say nothing else.
        mask = state_dict.pop(prefix + "mask", None)
        if mask is not None and mask.numel() and not torch.equal(mask.bool(), mask.bool().tril()):
            raise ValueError(f"{prefix}mask in the state dict is not a causal mask")
        state_dict.pop(prefix + "IGNORE", None)
        super()._load_from_state_dict(state_dict, prefix, *args)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        assert cfg.d_mlp is not None
        self.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp))
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model))
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model))
        self.act_fn = ACTIVATIONS[cfg.act_fn]
        self.hook_pre = HookPoint()  # [batch, pos, d_mlp]
        self.hook_post = HookPoint()

    def forward(
        self, x: Float[Tensor, "batch pos d_model"], hooked: bool = True
    ) -> Float[Tensor, "batch pos d_model"]:
        pre = x @ self.W_in + self.b_in
        post = self.act_fn(self.hook_pre(pre) if hooked else pre)
        if hooked:
            post = self.hook_post(post)
        return post @ self.W_out + self.b_out


class TransformerBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.normalization_type == "LN":
            self.ln1: nn.Module = LayerNorm(cfg)
        self.attn = Attention(cfg)
        if not cfg.attn_only:
            if cfg.normalization_type == "LN":
                self.ln2: nn.Module = LayerNorm(cfg)
            self.mlp = MLP(cfg)
            self.hook_resid_mid = HookPoint()
            self.hook_mlp_out = HookPoint()
        self.hook_resid_pre = HookPoint()  # [batch, pos, d_model]
        self.hook_attn_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(
        self,
        resid_pre: Float[Tensor, "batch pos d_model"],
        pos_embed: Float[Tensor, "batch pos d_model"] | None = None,
        hooked: bool = True,
        embedding: tuple[Tensor, Tensor, Tensor] | None = None,
    ) -> Float[Tensor, "batch pos d_model"]:
        def hook(hp: HookPoint, x: Tensor) -> Tensor:
            return hp(x) if hooked else x

        def ln(name: str, x: Tensor) -> Tensor:
            return getattr(self, name)(x, hooked) if self.cfg.normalization_type else x

        resid_pre = hook(self.hook_resid_pre, resid_pre)
        normed = ln("ln1", resid_pre)
        if pos_embed is None:
            attn_out = self.attn(normed, normed, normed, hooked, embedding)
        else:
            # Shortformer: positions reach queries and keys only, never values.
            qk_input = normed + pos_embed
            attn_out = self.attn(qk_input, qk_input, normed, hooked)
        attn_out = hook(self.hook_attn_out, attn_out)
        if self.cfg.attn_only:
            return hook(self.hook_resid_post, resid_pre + attn_out)
        resid_mid = hook(self.hook_resid_mid, resid_pre + attn_out)
        mlp_out = hook(self.hook_mlp_out, self.mlp(ln("ln2", resid_mid), hooked))
        return hook(self.hook_resid_post, resid_mid + mlp_out)


class HookedTransformer(HookedRootModule):
    """A decoder-only transformer with TransformerLens's names, shapes and hooks.

    Token ids in, logits out; there is no tokenizer. ``forward`` validates its input and raises
    ``ValueError`` naming the problem (ids out of ``[0, d_vocab)``, length over ``n_ctx``,
    non-integer dtype, wrong rank).

    Args:
        cfg: The architecture; weights are initialised from ``cfg.seed``.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if not isinstance(cfg, ModelConfig):
            raise TypeError(f"cfg must be a circuits.ModelConfig, got {type(cfg).__name__}")
        self._cfg = cfg
        self.embed = Embed(cfg)
        self.hook_embed = HookPoint()  # [batch, pos, d_model]
        self.pos_embed = PosEmbed(cfg)
        self.hook_pos_embed = HookPoint()
        self.blocks = nn.ModuleList([TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        if cfg.normalization_type == "LN":
            self.ln_final = LayerNorm(cfg)
        self.unembed = Unembed(cfg)
        self.init_weights()
        self.setup()

    @property
    def cfg(self) -> ModelConfig:
        return self._cfg

    def init_weights(self) -> None:
        """Normal(0, init_range) weight matrices, zero biases, unit LayerNorm gains; seeded."""
        gen = torch.Generator().manual_seed(self.cfg.seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.split(".")[-1].startswith("W_"):
                    p.copy_(torch.randn(p.shape, generator=gen) * self.cfg.init_range)
                elif name.endswith(".w"):
                    p.fill_(1.0)
                else:
                    p.zero_()

    def set_use_attn_result(self, use_attn_result: bool) -> None:
        """Turns per-head outputs (``blocks.{l}.attn.hook_result``) on or off."""
        self._set_cfg(self.cfg.replace(use_attn_result=use_attn_result))

    def _set_cfg(self, cfg: ModelConfig) -> None:
        self._cfg = cfg
        for block in self._block_list():
            block.cfg = cfg
            block.attn.cfg = cfg

    def _block_list(self) -> list[TransformerBlock]:
        return [cast(TransformerBlock, block) for block in self.blocks]

    def _any_hooks(self) -> bool:
        return bool(self._hooked_parts())

    def _hooked_parts(self) -> set[str]:
        """The parts with a hook attached: ``"blocks.{l}"``, or ``""`` for the embeddings and
        the final LayerNorm. Each part takes the hooked path only if it has a hook, so caching
        one layer's pattern leaves the other layers on the fused path."""
        # Plain torch hooks registered on a HookPoint count too, not only TransformerLens's.
        return {
            ".".join(name.split(".")[:2]) if name.startswith("blocks.") else ""
            for name, hp in self.hook_dict.items()
            if hp._forward_hooks or hp._forward_pre_hooks or hp._backward_hooks
        }

    def forward(
        self,
        tokens: Int[Tensor, "batch pos"],
        return_type: ReturnType = "logits",
        *,
        targets: Int[Tensor, "batch pos"] | None = None,
        loss_mask: Tensor | None = None,
        loss_per_token: bool = False,
    ) -> Any:
        """Runs the model.

        Args:
            tokens: Token ids ``[batch, pos]`` (or ``[pos]``), integers in ``[0, d_vocab)``.
            return_type: "logits" ``[batch, pos, d_vocab]``, "loss", "both" (logits, loss),
                or None.
            targets: Target ids ``[batch, pos]`` for the loss; by default the next token
                (language-model loss over ``pos - 1`` positions).
            loss_mask: Bool ``[batch, pos]``: positions that count in the loss.
            loss_per_token: Return the loss per position instead of its mean.
        """
        if return_type not in ("logits", "loss", "both", None):
            raise ValueError(f"unknown return_type {return_type!r}")
        tokens = check_tokens(tokens, self.cfg.d_vocab, self.cfg.n_ctx)
        hooked_parts = self._hooked_parts()
        hooked = "" in hooked_parts

        def hook(hp: HookPoint, x: Tensor) -> Tensor:
            return hp(x) if hooked else x

        embed = hook(self.hook_embed, self.embed(tokens))
        pos_embed = hook(self.hook_pos_embed, self.pos_embed(tokens))
        if self.cfg.positional_embedding_type == "shortformer":
            residual, shortformer_pos = embed, pos_embed
        else:
            residual, shortformer_pos = embed + pos_embed, None
        tables = None if hooked else self._embedding_tables(tokens)
        for layer, block in enumerate(self.blocks):
            block_hooked = f"blocks.{layer}" in hooked_parts
            embedding = tables if layer == 0 and not block_hooked else None
            residual = block(residual, shortformer_pos, block_hooked, embedding)
        if self.cfg.normalization_type == "LN":
            residual = self.ln_final(residual, hooked)
        logits = self.unembed(residual)
        if return_type == "logits":
            return logits
        if return_type is None:
            return None
        loss = self.loss(logits, tokens, targets, loss_mask, loss_per_token)
        return loss if return_type == "loss" else (logits, loss)

    def _embedding_tables(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
        """``(tokens, W_E, W_pos)`` when layer 0 may project its input from tables, else None.

        Without LayerNorm and with positions added to the residual stream, layer 0 reads
        exactly ``W_E[tokens] + W_pos[:pos]`` (when no hook can change the embeddings), so
        ``x @ W = (W_E @ W)[tokens] + (W_pos @ W)[:pos]``. That pays while the vocabulary and
        the positions are few against the batch's tokens: the reference training step at
        d_vocab 64, batch 64 x 64 runs 8-13% faster (bench/, README, Speed).
        """
        batch, pos = tokens.shape
        if (
            self.cfg.normalization_type is None
            and self.cfg.positional_embedding_type == "standard"
            and 2 * (self.cfg.d_vocab + pos) <= batch * pos
        ):
            return tokens, self.embed.W_E, self.pos_embed.W_pos
        return None

    @staticmethod
    def loss(
        logits: Float[Tensor, "batch pos d_vocab"],
        tokens: Int[Tensor, "batch pos"],
        targets: Int[Tensor, "batch pos"] | None = None,
        loss_mask: Tensor | None = None,
        per_token: bool = False,
    ) -> Tensor:
        """Cross-entropy; next-token by default, else against ``targets`` where ``loss_mask``."""
        return cross_entropy(logits, tokens, targets, loss_mask, per_token)

    # --- stacked weights, TransformerLens-style: [n_layers, n_heads, ...] ---
    def _stack(self, name: str) -> Tensor:
        return torch.stack([getattr(block.attn, name) for block in self.blocks])

    @property
    def W_Q(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return self._stack("W_Q")

    @property
    def W_K(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return self._stack("W_K")

    @property
    def W_V(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return self._stack("W_V")

    @property
    def W_O(self) -> Float[Tensor, "n_layers n_heads d_head d_model"]:
        return self._stack("W_O")

    @property
    def b_Q(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        return self._stack("b_Q")

    @property
    def b_K(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        return self._stack("b_K")

    @property
    def b_V(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        return self._stack("b_V")

    @property
    def b_O(self) -> Float[Tensor, "n_layers d_model"]:
        return self._stack("b_O")

    @property
    def W_E(self) -> Float[Tensor, "d_vocab d_model"]:
        return self.embed.W_E

    @property
    def W_pos(self) -> Float[Tensor, "n_ctx d_model"]:
        return self.pos_embed.W_pos

    @property
    def W_U(self) -> Float[Tensor, "d_model d_vocab"]:
        return self.unembed.W_U

    @property
    def b_U(self) -> Float[Tensor, " d_vocab"]:
        return self.unembed.b_U

    @property
    def W_in(self) -> Float[Tensor, "n_layers d_model d_mlp"]:
        return torch.stack([block.mlp.W_in for block in self._block_list()])

    @property
    def W_out(self) -> Float[Tensor, "n_layers d_mlp d_model"]:
        return torch.stack([block.mlp.W_out for block in self._block_list()])

    @property
    def QK(self) -> FactoredMatrix:
        """``W_Q W_K^T`` per head, factored: ``[n_layers, n_heads, d_model, d_model]``."""
        return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))

    @property
    def OV(self) -> FactoredMatrix:
        """``W_V W_O`` per head, factored: ``[n_layers, n_heads, d_model, d_model]``."""
        return FactoredMatrix(self.W_V, self.W_O)

    # --- TransformerLens model-protocol surface ---
    def run_with_cache(
        self, *model_args: Any, return_cache_object: bool = True, **kwargs: Any
    ) -> tuple[Any, ActivationCache | dict[str, Tensor]]:
        """Runs the model and caches activations (``names_filter`` etc. as in TransformerLens).

        Returns:
            ``(output, cache)``; the cache is a ``transformer_lens.ActivationCache`` (a plain
            dict with ``return_cache_object=False``).
        """
        out, cache_dict = super().run_with_cache(*model_args, **kwargs)
        if not return_cache_object:
            return out, cache_dict
        has_batch_dim = not kwargs.get("remove_batch_dim", False)
        return out, ActivationCache(cache_dict, self, has_batch_dim=has_batch_dim)

    def tokens_to_residual_directions(
        self, tokens: Int[Tensor, "..."]
    ) -> Float[Tensor, "... d_model"]:
        """Unembedding directions of token ids: ``W_U[:, token]`` (for logit attribution)."""
        tokens = torch.as_tensor(tokens)
        if (
            tokens.is_floating_point()
            or (tokens < 0).any()
            or (tokens >= self.cfg.d_vocab_out).any()
        ):
            raise ValueError(f"tokens must be ids in [0, {self.cfg.d_vocab_out})")
        return self.W_U[:, tokens].movedim(0, -1)

    def to_tokens(self, input: Any, *args: Any, **kwargs: Any) -> Int[Tensor, "batch pos"]:
        """There is no tokenizer: accepts token ids (tensor or nested lists) and validates them."""
        if isinstance(input, str) or (
            isinstance(input, list) and input and isinstance(input[0], str)
        ):
            raise ValueError("circuits models have no tokenizer: pass token ids, not strings")
        return check_tokens(torch.as_tensor(input), self.cfg.d_vocab, self.cfg.n_ctx)

    def save(self, path: Any, overwrite: bool = False, **metadata: Any) -> Any:
        """Saves a checkpoint directory (see :mod:`circuits.checkpoint`); returns its path."""
        from circuits import checkpoint

        return checkpoint.save(self, path, overwrite=overwrite, metadata=metadata)

    @classmethod
    def load(cls, path: Any) -> HookedTransformer:
        """Loads and validates a checkpoint saved by :meth:`save` (eval mode)."""
        from circuits import checkpoint

        return checkpoint.load(path)

    def extra_repr(self) -> str:
        c = self.cfg
        kind = "attn-only" if c.attn_only else f"d_mlp={c.d_mlp} {c.act_fn}"
        return (
            f"n_layers={c.n_layers}, d_model={c.d_model}, heads={c.n_heads}x{c.d_head}, "
            f"{kind}, norm={c.normalization_type}, pos={c.positional_embedding_type}, "
            f"n_ctx={c.n_ctx}, d_vocab={c.d_vocab}"
        )
