"""Head ablation (zero or mean, optionally with frozen attention patterns) and activation patching.

Interventions act on each head's ``hook_z`` (``[batch, pos, n_heads, d_head]``), the head's
output before ``W_O``: replacing it removes (or swaps) exactly that head's contribution, leaving
the bias ``b_O`` alone. With ``freeze_patterns=True`` every layer's ``hook_pattern`` is pinned to
the clean run's, so an ablation acts only through values and the direct path: later heads keep
attending where they did (Olsson et al. 2022 ablate this way).

Metrics are callables ``metric(logits) -> scalar tensor``; results are metric *changes*
``[n_layers, n_heads]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuits.analysis.names import head_name, parse_head_name
from circuits.analysis.protocol import HookedModel, check_model
from circuits.analysis.resources import DEFAULT_THREADS, torch_threads
from circuits.losses import cross_entropy
from circuits.validation import check_layer_head, check_mask, check_tokens

Metric = Callable[[Tensor], Tensor]
Head = tuple[int, int] | str
Hook = tuple[str, Callable[..., Any]]


def parse_heads(model: HookedModel, heads: Iterable[Head]) -> list[tuple[int, int]]:
    """``[(layer, head), ...]`` from tuples or names like ``"L1H0"``; validated."""
    check_model(model)
    if isinstance(heads, str | Tensor) or not isinstance(heads, Iterable):
        raise TypeError(f"heads must be a list of (layer, head) pairs or names, got {heads!r}")
    out = []
    for item in heads:
        if isinstance(item, str):
            try:
                layer, head = parse_head_name(item)
            except ValueError as e:
                raise ValueError(f"heads: {e}") from None
        elif isinstance(item, tuple | list) and len(item) == 2:
            layer, head = item
        else:
            raise TypeError(f"heads: {item!r} is neither a (layer, head) pair nor a name 'L1H0'")
        check_layer_head(layer, head, model.cfg.n_layers, model.cfg.n_heads)
        out.append((layer, head))
    return out


def masked_loss(targets: Tensor, mask: Tensor | None = None) -> Metric:
    """A metric: mean cross-entropy of ``logits`` against ``targets`` where ``mask``.

    ``targets`` are ``[batch, pos]`` ids; the metric checks them against the logits it gets.
    """
    if not isinstance(targets, Tensor):
        raise TypeError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
    targets = check_tokens(targets, 2**62, 2**62, name="targets")
    if mask is not None:
        mask = check_mask(mask, tuple(targets.shape))

    def metric(logits: Tensor) -> Tensor:
        if not isinstance(logits, Tensor) or logits.shape[:-1] != targets.shape:
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(f"logits {shape} do not match targets {tuple(targets.shape)}")
        check_tokens(targets, logits.shape[-1], targets.shape[1], name="targets")
        return cross_entropy(logits, targets, targets, mask)

    return metric


def _scalar(value: object, what: str) -> float:
    """A metric's value as a float; ours is the error when it is not one finite number."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"metric must return a scalar, got shape {tuple(value.shape)} {what}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"metric must return a number or a scalar tensor, got {value!r} {what}")
    if not math.isfinite(value):
        raise ValueError(f"metric returned {value} {what}")
    return float(value)


def _check_metric(metric: object) -> None:
    if not callable(metric):
        raise TypeError(f"metric must be a callable logits -> scalar, got {metric!r}")


def _z_name(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def _cache(model: HookedModel, tokens: Tensor, names: Sequence[str]) -> dict[str, Tensor]:
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    return {n: cache[n] for n in names}


def _set_heads(values: dict[int, Tensor]) -> Callable[..., Tensor]:
    """A hook writing ``values[head]`` (broadcast to ``[batch, pos, d_head]``) into ``z``."""

    def hook(z: Tensor, hook: Any = None) -> Tensor:
        z = z.clone()
        for head, value in values.items():
            z[:, :, head] = value
        return z

    return hook


def _pattern_hooks(model: HookedModel, tokens: Tensor) -> list[Hook]:
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
    clean = _cache(model, tokens, names)
    return [(n, lambda x, hook=None, _p=clean[n]: _p) for n in names]


def ablation_hooks(
    model: HookedModel,
    tokens: Int[Tensor, "batch pos"],
    heads: Iterable[Head],
    method: Literal["zero", "mean"] = "zero",
    mean_tokens: Int[Tensor, "batch pos"] | None = None,
    freeze_patterns: bool = False,
) -> list[Hook]:
    """Forward hooks ablating ``heads`` on ``tokens`` (use with ``model.run_with_hooks``).

    Args:
        heads: ``(layer, head)`` pairs or names like ``"L1H0"``.
        method: "zero" sets the head's ``z`` to 0; "mean" to its mean over the batch of
            ``mean_tokens`` (default ``tokens``), per position.
        freeze_patterns: Pin every attention pattern to the clean run on ``tokens``.
    """
    check_model(model)
    if method not in ("zero", "mean"):
        raise ValueError(f"method={method!r} must be 'zero' or 'mean'")
    tokens = check_tokens(tokens, model.cfg.d_vocab, model.cfg.n_ctx)
    by_layer: dict[int, list[int]] = {}
    for layer, head in parse_heads(model, heads):
        by_layer.setdefault(layer, []).append(head)
    means: dict[str, Tensor] = {}
    if method == "mean":
        ref = (
            tokens
            if mean_tokens is None
            else check_tokens(mean_tokens, model.cfg.d_vocab, model.cfg.n_ctx, name="mean_tokens")
        )
        if ref.shape[1] != tokens.shape[1]:
            raise ValueError("mean_tokens must have as many positions as tokens")
        means = {
            n: z.mean(0) for n, z in _cache(model, ref, [_z_name(la) for la in by_layer]).items()
        }
    hooks: list[Hook] = _pattern_hooks(model, tokens) if freeze_patterns else []
    for layer, head_list in by_layer.items():
        name = _z_name(layer)
        values = {h: means[name][:, h] if method == "mean" else 0.0 for h in head_list}
        hooks.append((name, _set_heads(values)))  # type: ignore[arg-type]
    return hooks


@dataclass(frozen=True)
class AblationRun:
    """The output of :func:`run_with_ablation`, named, with what was ablated.

    Attributes:
        logits: The ablated run's output ``[batch, pos, d_vocab_out]``.
        heads: Names of the ablated heads (``"L1H0"``), in the order given.
        method: ``"zero"`` or ``"mean"``.
        freeze_patterns: Whether every attention pattern was pinned to the clean run's.
    """

    logits: Float[Tensor, "batch pos d_vocab"]
    heads: tuple[str, ...]
    method: str
    freeze_patterns: bool

    def __repr__(self) -> str:
        return (
            f"AblationRun(logits=[{', '.join(map(str, self.logits.shape))}], "
            f"heads={list(self.heads)}, method={self.method!r}, "
            f"freeze_patterns={self.freeze_patterns})"
        )


def run_with_ablation(
    model: HookedModel,
    tokens: Int[Tensor, "batch pos"],
    heads: Iterable[Head],
    method: Literal["zero", "mean"] = "zero",
    mean_tokens: Int[Tensor, "batch pos"] | None = None,
    freeze_patterns: bool = False,
) -> AblationRun:
    """``model`` on ``tokens`` with ``heads`` ablated (see :func:`ablation_hooks`).

    Returns an :class:`AblationRun`: ``.logits`` is the output, named with the heads and the
    method. Memory: one forward pass and its output, O(batch pos d_vocab_out).
    """
    check_model(model)
    hooks = ablation_hooks(model, tokens, heads, method, mean_tokens, freeze_patterns)
    names = tuple(head_name(layer, head) for layer, head in parse_heads(model, heads))
    with torch.no_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
    return AblationRun(logits, names, method, freeze_patterns)


def ablation_effects(
    model: HookedModel,
    tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    method: Literal["zero", "mean"] = "zero",
    mean_tokens: Int[Tensor, "batch pos"] | None = None,
    freeze_patterns: bool = False,
    *,
    threads: int | None = DEFAULT_THREADS,
) -> Float[Tensor, "n_layers n_heads"]:
    """``metric(ablated) - metric(clean)`` for each head ablated on its own.

    ``threads``: torch threads while it runs (restored after; None: torch's setting).

    Memory: one forward pass at a time and its output O(batch pos d_vocab_out), which the
    metric reads; time ``n_layers n_heads + 1`` forward passes.
    """
    check_model(model)
    _check_metric(metric)
    tokens = check_tokens(tokens, model.cfg.d_vocab, model.cfg.n_ctx)
    out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    with torch_threads(threads):
        with torch.no_grad():
            clean = _scalar(metric(model(tokens)), "on the clean run")
        for layer in range(model.cfg.n_layers):
            for head in range(model.cfg.n_heads):
                logits = run_with_ablation(
                    model, tokens, [(layer, head)], method, mean_tokens, freeze_patterns
                ).logits
                name = head_name(layer, head)
                out[layer, head] = _scalar(metric(logits), f"ablating {name}") - clean
    return out


def patch_heads(
    model: HookedModel,
    clean_tokens: Int[Tensor, "batch pos"],
    corrupted_tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    direction: Literal["noising", "denoising"] = "noising",
    *,
    threads: int | None = DEFAULT_THREADS,
) -> Float[Tensor, "n_layers n_heads"]:
    """Activation patching of each head's output (``hook_z``, all positions), one at a time.

    "noising": run on ``clean_tokens`` with one head's ``z`` taken from the corrupted run;
    returns ``metric(patched) - metric(clean)`` (how much that head's clean output matters).
    "denoising": run on ``corrupted_tokens`` with one head's clean ``z``; returns
    ``metric(patched) - metric(corrupted)`` (how much that head alone restores).

    Memory: every layer's ``hook_z`` of the source run O(n_layers batch pos n_heads d_head),
    and one forward pass with its output at a time (the metric reads the logits).
    ``threads``: torch threads while it runs (restored after; None: torch's setting).
    """
    check_model(model)
    _check_metric(metric)
    if direction not in ("noising", "denoising"):
        raise ValueError(f"direction={direction!r} must be 'noising' or 'denoising'")
    cfg = model.cfg
    clean_tokens = check_tokens(clean_tokens, cfg.d_vocab, cfg.n_ctx, name="clean_tokens")
    corrupted_tokens = check_tokens(
        corrupted_tokens, cfg.d_vocab, cfg.n_ctx, name="corrupted_tokens"
    )
    if clean_tokens.shape != corrupted_tokens.shape:
        raise ValueError(
            f"clean_tokens {tuple(clean_tokens.shape)} and corrupted_tokens "
            f"{tuple(corrupted_tokens.shape)} must have the same shape"
        )
    run_on, source = (
        (clean_tokens, corrupted_tokens)
        if direction == "noising"
        else (corrupted_tokens, clean_tokens)
    )
    names = [_z_name(layer) for layer in range(cfg.n_layers)]
    with torch_threads(threads), torch.no_grad():
        donor = _cache(model, source, names)
        base = _scalar(metric(model(run_on)), f"on the {direction} base run")
        out = torch.zeros(cfg.n_layers, cfg.n_heads)
        for layer, name in enumerate(names):
            for head in range(cfg.n_heads):
                hook = _set_heads({head: donor[name][:, :, head]})
                logits = model.run_with_hooks(run_on, fwd_hooks=[(name, hook)])
                out[layer, head] = (
                    _scalar(metric(logits), f"patching {head_name(layer, head)}") - base
                )
    return out
