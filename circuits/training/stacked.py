"""Many models of one architecture as one computation: parameters with a leading instance axis.

``G`` models that differ only in their weights (seeds) are stored as one tensor per parameter,
``[G, *shape]``, and run with batched matmuls written out (``bmm``/``baddbmm``), so a step over
``G`` small models is one sequence of kernels instead of ``G``. The forward pass is the fast
path's (:mod:`circuits.model.fast_path`) with an instance axis in front: layer 0 of a model
without LayerNorm projects Q, K and V from two small tables; attention is the fused kernel on
one thread and explicit matmuls on several or when the patterns are wanted (evaluation), on
Q, K and V in the layout their projections write (:mod:`circuits.training.stacked_attention`).

Interface: :func:`unsupported` (why a config cannot be stacked, or None), :func:`stack` /
:func:`unstack_into` (models <-> stacked tensors), :func:`forward`, :func:`instance_losses`,
:func:`estimate_bytes` and :func:`check_fits` (the memory a group needs, checked before any
allocation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Bool, Float, Int
from torch import Tensor

from circuits.model.components import ACTIVATIONS
from circuits.model.fast_path import tables_pay
from circuits.training.stacked_attention import attention, attention_from_tables

if TYPE_CHECKING:
    from circuits.config import ModelConfig
    from circuits.model import HookedTransformer

__all__ = [
    "check_fits",
    "estimate_bytes",
    "forward",
    "instance_losses",
    "stack",
    "unstack_into",
    "unsupported",
]

Params = dict[str, Tensor]  # parameter name (as in named_parameters) -> [G, *shape]


def unsupported(cfg: ModelConfig) -> str | None:
    """Why ``cfg`` cannot be trained stacked (a sentence naming the field), or None if it can.

    Stacked training implements the common toy models: standard positions, causal attention,
    no grouped-query attention, no LayerNorm or ``LN``, ``attn_only`` or an MLP with a plain
    activation. The others train one model at a time (:func:`circuits.training.train`).
    """
    if cfg.positional_embedding_type != "standard":
        return f"positional_embedding_type={cfg.positional_embedding_type!r}"
    if cfg.normalization_type not in (None, "LN"):
        return f"normalization_type={cfg.normalization_type!r}"
    if cfg.attention_dir != "causal":
        return f"attention_dir={cfg.attention_dir!r}"
    if cfg.n_key_value_heads is not None:
        return f"n_key_value_heads={cfg.n_key_value_heads}"
    if not cfg.attn_only and cfg.act_fn == "solu_ln":
        return "act_fn='solu_ln'"
    for flag in ("use_split_qkv_input", "use_attn_in", "use_hook_mlp_in", "use_attn_result"):
        if getattr(cfg, flag):
            return f"{flag}=True"
    return None


def stack(models: Sequence[HookedTransformer]) -> Params:
    """``{name: [G, *shape]}``: each model's parameters, stacked (a copy; leaf tensors)."""
    names = [n for n, _ in models[0].named_parameters()]
    params = [dict(m.named_parameters()) for m in models]
    return {n: torch.stack([p[n].detach() for p in params]).requires_grad_(True) for n in names}


def unstack_into(params: Params, index: int, model: HookedTransformer) -> None:
    """Copies instance ``index`` of ``params`` into ``model``'s parameters (in place)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(params[name][index])


def _layer_norm(x: Tensor, params: Params, name: str, cfg: ModelConfig) -> Tensor:
    """LayerNorm with per-instance weights: ``x [G, n, d_model]``."""
    if cfg.normalization_type is None:
        return x
    x = F.layer_norm(x, x.shape[-1:], eps=cfg.eps)
    return x * params[f"{name}.w"].unsqueeze(1) + params[f"{name}.b"].unsqueeze(1)


def forward(
    params: Params,
    cfg: ModelConfig,
    tokens: Int[Tensor, "G batch pos"],
    patterns: list[Tensor] | None = None,
) -> Float[Tensor, "G batch pos d_vocab_out"]:
    """Logits of ``G`` models on their own batches, ``[G, batch, pos, d_vocab_out]``.

    Args:
        params: :func:`stack`'s tensors.
        tokens: One batch per instance.
        patterns: If a list, each layer's attention pattern ``[G, batch, n_heads, query,
            key]`` is appended (memory: ``G batch n_heads pos^2`` floats per layer).

    Memory: the activations of ``G`` ordinary forward passes; nothing vocabulary-squared.

    Raises:
        ValueError: A token id outside ``[0, d_vocab)`` or more positions than ``n_ctx``
            (the instances' tables are looked up with offsets, so an id past the vocabulary
            would silently read the next instance's rows).
    """
    G, b, p = tokens.shape
    d = cfg.d_model
    if p > cfg.n_ctx:
        raise ValueError(f"{p} positions exceed the model's n_ctx={cfg.n_ctx}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= cfg.d_vocab):
        raise ValueError(
            f"token ids must be in [0, {cfg.d_vocab}) (d_vocab); got "
            f"{int(tokens.min())}..{int(tokens.max())}"
        )
    W_E, W_pos = params["embed.W_E"], params["pos_embed.W_pos"][:, :p]
    # Instance g's ids index rows g * d_vocab + id of the flattened tables.
    offsets = torch.arange(G, device=tokens.device).view(G, 1, 1) * cfg.d_vocab
    flat_ids = (tokens + offsets).reshape(G, b * p)
    resid = F.embedding(flat_ids, W_E.reshape(-1, d)).view(G, b, p, d) + W_pos.unsqueeze(1)
    resid = resid.reshape(G, b * p, d)
    scale = 1 / cfg.attn_scale
    for layer in range(cfg.n_layers):
        pre = f"blocks.{layer}"
        if layer == 0 and tables_pay(cfg, b, p):
            # The input is W_E[tokens] + W_pos: project the two tables, then look rows up.
            W_QKV = _heads_last(torch.cat([params[f"{pre}.attn.W_{x}"] for x in "QKV"], dim=1))
            b_QKV = torch.cat([params[f"{pre}.attn.b_{x}"] for x in "QKV"], dim=1).reshape(G, 1, -1)
            by_token = torch.bmm(W_E, W_QKV).reshape(G * cfg.d_vocab, -1)
            by_pos = torch.baddbmm(b_QKV, W_pos, W_QKV)  # [G, pos, 3 * heads * d_head]
            z = attention_from_tables(by_token, by_pos, tokens, b, cfg.n_heads, scale, patterns)
            if z is None:  # no compiled kernel here: look the rows up
                qkv = F.embedding(flat_ids, by_token).view(G, b, p, -1) + by_pos.unsqueeze(1)
                q, k, v = qkv.view(G, b * p, 3, -1).unbind(2)
                z = attention(q, k, v, b, cfg.n_heads, scale, patterns)
        else:
            # Separate projections: each lands in the layout attention reads and its gradient
            # comes back in the same layout (a packed QKV tensor cost a copy of it each way).
            normed = _layer_norm(resid, params, f"{pre}.ln1", cfg)
            q, k, v = (
                torch.baddbmm(
                    params[f"{pre}.attn.b_{x}"].reshape(G, 1, -1),
                    normed,
                    _heads_last(params[f"{pre}.attn.W_{x}"]),
                )
                for x in "QKV"
            )
            z = attention(q, k, v, b, cfg.n_heads, scale, patterns)
        W_O = rearrange(params[f"{pre}.attn.W_O"], "G n e d -> G (n e) d")
        resid = resid + torch.baddbmm(params[f"{pre}.attn.b_O"].unsqueeze(1), z, W_O)
        if not cfg.attn_only:
            x = _layer_norm(resid, params, f"{pre}.ln2", cfg)
            hidden = torch.baddbmm(
                params[f"{pre}.mlp.b_in"].unsqueeze(1), x, params[f"{pre}.mlp.W_in"]
            )
            hidden = ACTIVATIONS[cfg.act_fn](hidden)
            out = torch.baddbmm(
                params[f"{pre}.mlp.b_out"].unsqueeze(1), hidden, params[f"{pre}.mlp.W_out"]
            )
            resid = resid + out
    resid = _layer_norm(resid, params, "ln_final", cfg)
    logits = torch.baddbmm(params["unembed.b_U"].unsqueeze(1), resid, params["unembed.W_U"])
    return logits.view(G, b, p, -1)


def _heads_last(W: Tensor) -> Tensor:
    """Per-head weights ``[G, n, d_model, d_head]`` -> ``[G, d_model, n * d_head]``."""
    return rearrange(W, "G n d e -> G d (n e)")


def instance_losses(
    logits: Float[Tensor, "G batch pos d_vocab_out"],
    targets: Int[Tensor, "G batch pos"],
    mask: Bool[Tensor, "G batch pos"],
) -> Float[Tensor, " G"]:
    """Each instance's masked mean cross-entropy, as :func:`circuits.losses.cross_entropy`."""
    G = logits.shape[0]
    per_pos = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    ).view(G, -1)
    mask = mask.reshape(G, -1)
    return (per_pos * mask).sum(1) / mask.sum(1).clamp(min=1)


def estimate_bytes(cfg: ModelConfig, instances: int, batch_size: int, seq_len: int) -> int:
    """Peak bytes of one stacked training step of ``instances`` models (fp32).

    Counts parameters four times (weights, gradients, AdamW's two moments) and the activations
    the backward keeps per layer (Q/K/V, attention scores and pattern, head outputs, residual,
    MLP hidden) and at the output (logits and their gradient), doubled for the backward's
    temporaries. An estimate, deliberately high; it is what :func:`check_fits` compares.
    """
    n_params = sum(_param_numel(cfg))
    tokens = batch_size * seq_len
    per_layer = (
        4 * cfg.n_heads * cfg.d_head * tokens  # q, k, v, z
        + 2 * batch_size * cfg.n_heads * seq_len * seq_len  # scores, pattern
        + 2 * cfg.d_model * tokens  # residual, its normed copy
        + (0 if cfg.attn_only else 2 * (cfg.d_mlp or 0) * tokens)
    )
    per_instance = 4 * n_params + 2 * (cfg.n_layers * per_layer + 3 * cfg.d_vocab_out * tokens)
    return 4 * instances * per_instance


def _param_numel(cfg: ModelConfig) -> list[int]:
    d, h, e = cfg.d_model, cfg.n_heads, cfg.d_head
    attn = 4 * h * d * e + 3 * h * e + d
    mlp = 0 if cfg.attn_only else 2 * d * (cfg.d_mlp or 0) + (cfg.d_mlp or 0) + d
    norms = 0 if cfg.normalization_type is None else 2 * d * (2 * cfg.n_layers + 1)
    head = d * cfg.d_vocab_out + cfg.d_vocab_out
    return [cfg.d_vocab * d, cfg.n_ctx * d, cfg.n_layers * (attn + mlp), norms, head]


def available_bytes(device: torch.device) -> int:
    """Free memory on ``device``: the GPU's free memory, or the host's available memory."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    import psutil

    return int(psutil.virtual_memory().available)


def check_fits(
    cfg: ModelConfig,
    instances: int,
    batch_size: int,
    seq_len: int,
    device: torch.device,
    budget: int | None = None,
) -> None:
    """Refuses (ValueError) a group whose :func:`estimate_bytes` exceeds half the free memory
    of ``device`` (or ``budget`` bytes), before anything is allocated; says the largest that
    fits."""
    need = estimate_bytes(cfg, instances, batch_size, seq_len)
    limit = available_bytes(device) // 2 if budget is None else budget
    if need > limit:
        per = estimate_bytes(cfg, 1, batch_size, seq_len)
        fits = max(limit // per, 0)
        raise ValueError(
            f"a batched group of {instances} models needs about {_gib(need)} on {device}, more "
            f"than the {_gib(limit)} allowed (half the free memory); at most {fits} fit: use "
            "smaller groups (--batch-seeds)"
        )


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{math.ceil(n / 2**20)} MiB"
