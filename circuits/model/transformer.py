"""A hookable transformer, small enough to read in one sitting.

Parameter names, shapes, hook names and switches are TransformerLens's (``HookedTransformer``
3.x), so its state dicts load with ``strict=True``, its users find every activation where they
expect it, and TransformerLens's utilities accept the model. It is built on
``transformer_lens.HookedRootModule``: ``run_with_hooks``, ``run_with_cache`` and ``hooks()``
come from there. The layers are in :mod:`circuits.model.components`.

``TransformerBlock.forward`` is the spelled-out computation that every hook sees, and the one
``model(x)`` runs in eval mode, so ``model(x)``, ``run_with_cache(x)[0]`` and ``run_with_hooks``
with an identity hook give bit-identical logits (as in TransformerLens 3). In train mode
(``model.train()``: the trainer's forward), a block with no hook attached runs through
:mod:`circuits.model.fast_path` instead (fused projections and attention kernels, the same
function up to float rounding); the choice is per block. A new model starts in eval mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, cast

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens.ActivationCache import ActivationCache
from transformer_lens.hook_points import HookPoint
from transformer_lens.HookedRootModule import HookedRootModule

from circuits import checkpoint
from circuits.config import ModelConfig
from circuits.losses import cross_entropy
from circuits.model import fast_path, kv_cache, processing, tl3_config
from circuits.model.components import Embed, PosEmbed, TransformerBlock, Unembed, make_norm
from circuits.model.generation import GenerationMixin
from circuits.model.hook_aliases import HookAliasMixin
from circuits.model.processing import StateDict
from circuits.model.state_dict import to_tl3_state_dict
from circuits.model.text import TextMixin, is_text
from circuits.model.tl3_methods import TL3Mixin
from circuits.model.weights import WeightsMixin
from circuits.validation import check_attention_mask, check_residual, check_tokens

__all__ = ["HookedTransformer", "TransformerBlock", "cross_entropy"]

ReturnType = Literal["logits", "loss", "both"] | None


class HookedTransformer(
    TL3Mixin,
    TextMixin,
    WeightsMixin,
    GenerationMixin,
    HookAliasMixin,
    HookedRootModule,
):
    """A decoder-only transformer with TransformerLens's names, shapes, hooks and switches.

    Token ids in, logits out; there is no tokenizer (``tokenizer`` is None). ``forward``
    validates its input and raises ``ValueError`` naming the problem (ids out of
    ``[0, d_vocab)``, length over ``n_ctx``, non-integer dtype, wrong rank).

    Args:
        cfg: The architecture; weights are initialised from ``cfg.seed``. A TL3
            ``HookedTransformerConfig`` or a dict of its fields works too (see
            :mod:`circuits.model.tl3_config`).
        tokenizer, move_to_device, default_padding_side: As in TransformerLens 3.
    """

    # TransformerBlocks; Any because torch types a ModuleList's items as plain Modules.
    blocks: Any

    def __init__(
        self,
        cfg: ModelConfig | tl3_config.HookedTransformerConfig | dict[str, Any],
        tokenizer: Any = None,
        move_to_device: bool = True,
        default_padding_side: str | None = None,
    ):
        super().__init__()
        cfg, tl3, tokenizer = tl3_config.build_args(cfg, tokenizer)
        cfg.check_fits()  # a clear error, not the allocator's, for sizes that cannot fit
        self._cfg = cfg
        if cfg.use_hook_tokens:
            self.hook_tokens = HookPoint()  # [batch, pos]
        self.embed = Embed(cfg)
        self.hook_embed = HookPoint()  # [batch, pos, d_model]
        if cfg.positional_embedding_type != "rotary":
            self.pos_embed = PosEmbed(cfg)
            self.hook_pos_embed = HookPoint()  # [batch, pos, d_model]
        self.blocks = nn.ModuleList([TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        if cfg.normalization_type is not None:
            self.ln_final = make_norm(cfg)
        self.unembed = Unembed(cfg)
        self.init_weights()
        self.setup()
        self.eval()  # model(x) is the hooked path's answer until model.train()
        tl3_config.finish(self, tl3, tokenizer, move_to_device, default_padding_side)

    @property
    def cfg(self) -> ModelConfig:
        return self._cfg

    def init_weights(self) -> None:
        """Normal(0, init_range) weight matrices, zero biases, unit norm gains; seeded."""
        gen = torch.Generator().manual_seed(self.cfg.seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.split(".")[-1].lstrip("_").startswith("W_"):
                    noise = torch.randn(p.shape, generator=gen).to(p.device)
                    p.copy_(noise * self.cfg.init_range)
                elif name.endswith(".w"):
                    p.fill_(1.0)
                else:
                    p.zero_()

    # --- TransformerLens's switches ---
    def set_use_attn_result(self, use_attn_result: bool) -> None:
        """Per-head outputs ``blocks.{l}.attn.hook_result`` ``[batch, pos, n_heads, d_model]``."""
        self._set_cfg(use_attn_result=use_attn_result)

    def set_use_split_qkv_input(self, use_split_qkv_input: bool) -> None:
        """Per-head query/key/value inputs ``blocks.{l}.hook_q_input/k_input/v_input``."""
        self._set_cfg(use_split_qkv_input=use_split_qkv_input)

    def set_use_attn_in(self, use_attn_in: bool) -> None:
        """Per-head attention input ``blocks.{l}.hook_attn_in`` (not with grouped-query)."""
        self._set_cfg(use_attn_in=use_attn_in)

    def set_use_hook_mlp_in(self, use_hook_mlp_in: bool) -> None:
        """MLP input ``blocks.{l}.hook_mlp_in`` (models with MLPs only)."""
        self._set_cfg(use_hook_mlp_in=use_hook_mlp_in)

    def _set_cfg(self, cfg: ModelConfig | None = None, **changes: Any) -> None:
        """Gives the model and every layer ``cfg`` (default: the current one with ``changes``,
        switches that must be bools)."""
        for name, value in changes.items():
            if name != "device" and not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, got {value!r}")
        cfg = (cfg or self.cfg).replace(**changes)
        self._cfg = cfg
        for module in self.modules():
            if module is not self and isinstance(getattr(module, "cfg", None), ModelConfig):
                setattr(module, "cfg", cfg)  # noqa: B010 (mypy: nn.Module.__setattr__)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> HookedTransformer:
        # Every .to()/.cuda()/.cpu() passes through here: keep cfg.device truthful.
        super()._apply(fn, *args, **kwargs)
        device = str(self.embed.W_E.device)
        if device != self.cfg.device:
            self._set_cfg(device=device)
        return self

    def _hooked_parts(self) -> set[str]:
        """The parts with a hook attached: ``"blocks.{l}"``, or ``""`` for everything outside
        the blocks. A block takes the hooked path only if it has a hook (or needs it)."""
        # Plain torch hooks registered on a HookPoint count too, not only TransformerLens's.
        return {
            ".".join(name.split(".")[:2]) if name.startswith("blocks.") else ""
            for name, hp in self.hook_dict.items()
            if hp._forward_hooks or hp._forward_pre_hooks or hp._backward_hooks
        }

    # --- the forward pass ---
    def input_to_embed(
        self,
        input: Int[Tensor, "batch pos"] | str | list[str],
        prepend_bos: bool | None = None,
        padding_side: str | None = None,
        attention_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """Token ids (or text, tokenized with ``prepend_bos``/``padding_side``) to the first
        residual stream, as TransformerLens 3.x.

        Returns:
            ``(residual [batch, pos, d_model], tokens [batch, pos], shortformer_pos_embed
            [batch, pos, d_model] or None, attention_mask [batch, pos] or None)``.
        """
        if is_text(input):
            input, text_mask = self.tokenize(input, prepend_bos, padding_side)  # type: ignore[arg-type]
            if attention_mask is None and not bool(text_mask.all()):
                attention_mask = text_mask
        tokens = check_tokens(input, self.cfg.d_vocab, self.cfg.n_ctx, device=self.W_E.device)
        attention_mask = check_attention_mask(attention_mask, tokens)
        copy = "" in self._hooked_parts()  # a hook must never see (or edit) our storage
        if self.cfg.use_hook_tokens:
            tokens = self.hook_tokens(tokens.clone() if copy else tokens)
            tokens = check_tokens(tokens, self.cfg.d_vocab, self.cfg.n_ctx, "hook_tokens output")
        residual = self.hook_embed(self.embed(tokens))
        if self.cfg.positional_embedding_type == "rotary":
            return residual, tokens, None, attention_mask
        pos_embed = self.pos_embed(tokens, attention_mask)
        pos_embed = self.hook_pos_embed(pos_embed.clone() if copy else pos_embed)
        if self.cfg.positional_embedding_type == "shortformer":
            return residual, tokens, pos_embed, attention_mask
        return residual + pos_embed, tokens, None, attention_mask

    def forward(
        self,
        input: Int[Tensor, "batch pos"] | Float[Tensor, "batch pos d_model"],
        return_type: ReturnType = "logits",
        loss_per_token: bool = False,
        *,
        start_at_layer: int | None = None,
        stop_at_layer: int | None = None,
        tokens: Int[Tensor, "batch pos"] | None = None,
        shortformer_pos_embed: Float[Tensor, "batch pos d_model"] | None = None,
        attention_mask: Int[Tensor, "batch pos"] | None = None,
        targets: Int[Tensor, "batch pos"] | None = None,
        loss_mask: Tensor | None = None,
        prepend_bos: bool | None = None,
        padding_side: str | None = None,
        past_kv_cache: Any = None,
    ) -> Any:
        """Runs the model (TransformerLens 3.x's signature).

        Args:
            input: Token ids ``[batch, pos]`` (or ``[pos]``) in ``[0, d_vocab)``; with
                ``start_at_layer``, the residual stream ``[batch, pos, d_model]`` before it.
            return_type: "logits" ``[batch, pos, d_vocab_out]``, "loss", "both" (logits,
                loss), or None.
            loss_per_token: Return the loss per position instead of its mean.
            start_at_layer: First block to run (negative counts from the end).
            stop_at_layer: Stop before this block and return the residual stream there.
            tokens: With ``start_at_layer``, the tokens for the loss.
            shortformer_pos_embed: With ``start_at_layer`` on a shortformer model.
            attention_mask: ``[batch, pos]``, 1 for real tokens and 0 for padding (either
                side): padded keys get no attention, padded positions no loss, and positions
                count from each sequence's first real token.
            targets: Target ids ``[batch, pos]`` for the loss; by default the next token
                (language-model loss over ``pos - 1`` positions).
            loss_mask: Bool ``[batch, pos]``: positions that count in the loss.
            past_kv_cache: A :class:`~circuits.model.kv_cache.HookedTransformerKeyValueCache`:
                ``input`` is the positions after the cached ones (see that module).
        """
        if return_type not in ("logits", "loss", "both", None):
            raise ValueError(f"unknown return_type {return_type!r}")
        if is_text(input):  # text needs the tokenizer; padding comes with its mask
            input, text_mask = self.tokenize(input, prepend_bos, padding_side)  # type: ignore[arg-type]
            input = input.to(self.W_E.device)
            if attention_mask is None and not bool(text_mask.all()):
                attention_mask = text_mask.to(self.W_E.device)
        elif prepend_bos or padding_side is not None:
            raise ValueError("prepend_bos/padding_side apply to text input only")
        if past_kv_cache is not None:
            if start_at_layer is not None or stop_at_layer is not None:
                raise ValueError("past_kv_cache runs the whole model: no start/stop_at_layer")
            return kv_cache.forward(
                self, input, past_kv_cache, attention_mask=attention_mask, return_type=return_type
            )
        if start_at_layer is None:
            residual, tokens, shortformer_pos_embed, attention_mask = self.input_to_embed(
                input, attention_mask=attention_mask
            )
        else:
            residual = check_residual(
                input, "input (with start_at_layer)", self.cfg.d_model, self.cfg.n_ctx
            )
            if tokens is not None:
                tokens = check_tokens(tokens, self.cfg.d_vocab, self.cfg.n_ctx)
            attention_mask = check_attention_mask(attention_mask, residual[..., 0])
            if self._hooked_parts():
                residual = residual.clone()  # a hook may edit it in place: not the caller's
        hooked = self._hooked_parts()
        # Train mode only: in eval mode model(x) is the hooked path's answer, bit for bit.
        fast = self.training and fast_path.supports(self.cfg) and attention_mask is None
        tables = None
        if fast and start_at_layer is None and "" not in hooked and tokens is not None:
            tables = fast_path.embedding_tables(self.cfg, tokens, self.W_E, self.W_pos)
        layers = range(self.cfg.n_layers)[start_at_layer:stop_at_layer]
        for layer in layers:
            block = cast(TransformerBlock, self.blocks[layer])
            if fast and f"blocks.{layer}" not in hooked:
                table = tables if layer == 0 else None
                residual = fast_path.block_forward(block, residual, shortformer_pos_embed, table)
            else:
                residual = block(residual, shortformer_pos_embed, attention_mask)
        if stop_at_layer is not None:
            return residual
        if self.cfg.normalization_type is not None:
            residual = self.ln_final(residual)
        if return_type is None:
            return None
        logits = self.unembed(residual)
        if return_type == "logits":
            return logits
        if tokens is None:
            raise ValueError("the loss needs tokens: pass tokens= with start_at_layer")
        if attention_mask is not None:
            padding = attention_mask.bool()
            counted = padding if targets is not None else padding & padding.roll(-1, dims=1)
            loss_mask = counted if loss_mask is None else counted & loss_mask.bool()
        loss = self.loss(logits, tokens, targets, loss_mask, loss_per_token)
        return loss if return_type == "loss" else (logits, loss)

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

    # --- checkpoints (the format is circuits.checkpoint's) ---
    def save(self, path: str | Path, overwrite: bool = False, **metadata: Any) -> Path:
        """Saves a checkpoint directory (see :mod:`circuits.checkpoint`); returns its path."""
        return checkpoint.save(self, path, overwrite=overwrite, metadata=metadata)

    @classmethod
    def load(cls, path: str | Path) -> HookedTransformer:
        """Loads and validates a checkpoint saved by :meth:`save` (eval mode)."""
        return cast(HookedTransformer, checkpoint.load(path, cls))

    # --- weight processing (the transforms are circuits.model.processing's) ---
    def to_tl3_state_dict(self) -> StateDict:
        """The weights as TL3's ``state_dict()`` holds them (buffers added; a copy)."""
        return to_tl3_state_dict(self.state_dict(), self.cfg)

    def process_weights_(
        self,
        fold_ln: bool = True,
        center_writing_weights: bool = True,
        center_unembed: bool = True,
        refactor_factored_attn_matrices: bool = False,
        fold_value_biases: bool = True,
    ) -> None:
        """Processes the weights in place (TL3's ``process_weights_``): see
        :func:`circuits.model.processing.process_state_dict`. Steps the model cannot take
        exactly are skipped with a logged warning; after ``fold_ln`` the config says
        ``normalization_type="LNPre"`` (or "RMSPre"). Hooks must be removed first."""
        if self._hooked_parts():
            raise ValueError("remove the model's hooks (model.reset_hooks()) before processing")
        steps = dict(fold_ln=fold_ln, center_writing_weights=center_writing_weights)
        steps.update(center_unembed=center_unembed, fold_value_biases=fold_value_biases)
        steps.update(refactor_factored_attn_matrices=refactor_factored_attn_matrices)
        sd, cfg = processing.process_state_dict(self.state_dict(), self.cfg, **steps)
        self._replace_weights(sd, cfg)

    def _replace_weights(self, state_dict: StateDict, cfg: ModelConfig) -> None:
        """Rebuilds the layers for ``cfg`` around ``state_dict``'s tensors (their device and
        dtype), keeping each parameter's ``requires_grad`` and the train/eval mode."""
        requires_grad = {k: p.requires_grad for k, p in self.named_parameters()}
        fresh = type(self)(cfg)
        fresh.load_state_dict(dict(state_dict), strict=True, assign=True)
        for name, p in fresh.named_parameters():
            p.requires_grad_(requires_grad.get(name, True))
        new = dict(fresh.named_children())
        for name in {name for name, _ in self.named_children()} - set(new):
            delattr(self, name)
        for name, child in new.items():
            setattr(self, name, child)
        self._set_cfg(cfg, device=str(fresh.embed.W_E.device))  # the config follows the weights
        self.train(self.training)
        self.setup()

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

    def extra_repr(self) -> str:
        c = self.cfg
        kind = "attn-only" if c.attn_only else f"d_mlp={c.d_mlp} {c.act_fn}"
        return (
            f"n_layers={c.n_layers}, d_model={c.d_model}, heads={c.n_heads}x{c.d_head}, "
            f"{kind}, norm={c.normalization_type}, pos={c.positional_embedding_type}, "
            f"n_ctx={c.n_ctx}, d_vocab={c.d_vocab}"
        )
