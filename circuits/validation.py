"""Input checks shared by every layer (configs, the model, tasks, analysis): clear errors instead
of wrong answers. A leaf: it imports nothing from circuits."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeGuard

if TYPE_CHECKING:  # torch is imported where a tensor is checked: configs stay torch-free
    from torch import Tensor


def check_residual(x: object, name: str, d_model: int, n_ctx: int) -> Tensor:
    """Validates a residual stream ``[batch, pos <= n_ctx, d_model]`` (float) and returns it.

    Raises:
        ValueError: Not a float tensor, or a shape other than ``[batch, pos, d_model]`` with
            ``pos <= n_ctx``.
    """
    from torch import Tensor

    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor [batch, pos, d_model]")
    if x.ndim != 3 or x.shape[-1] != d_model or x.shape[1] > n_ctx:
        raise ValueError(
            f"{name} must have shape [batch, pos <= {n_ctx}, "
            f"d_model={d_model}], got {tuple(x.shape)}"
        )
    return x


def check_attention_mask(mask: object, like: Tensor) -> Tensor | None:
    """Validates an attention mask ``[batch, pos]`` of 0 (padding) and 1 (token) for token ids
    (or a residual's first feature) ``like``; returns it on ``like``'s device (None stays None).

    Raises:
        ValueError: A float or complex mask, a shape other than ``like``'s, or values other
            than 0 and 1.
    """
    from torch import Tensor

    if mask is None:
        return None
    if not isinstance(mask, Tensor) or mask.is_floating_point() or mask.is_complex():
        raise ValueError("attention_mask must be an integer or bool tensor [batch, pos]")
    if mask.shape != like.shape:
        raise ValueError(
            f"attention_mask shape {tuple(mask.shape)} does not match the input's "
            f"{tuple(like.shape)}"
        )
    if mask.device.type != "meta" and bool(((mask != 0) & (mask != 1)).any()):
        raise ValueError("attention_mask must hold only 0 (padding) and 1 (token)")
    return mask.to(like.device)


def check_tokens(
    tokens: object, d_vocab: int, n_ctx: int, name: str = "tokens", device: Any = None
) -> Tensor:
    """Validates token ids and returns them as a ``[batch, pos]`` int64 tensor.

    Args:
        device: The model's device (a ``torch.device`` or its name): ids elsewhere are moved
            there (as TransformerLens 3 does), except ids on the ``meta`` device, which have
            no values to move: they are refused for a model with real weights (NaN logits).

    Raises:
        TypeError: ``tokens`` is not a tensor.
        ValueError: Wrong rank, non-integer dtype, empty, longer than ``n_ctx``, ids
            outside ``[0, d_vocab)``, or meta ids for a model that is not on ``meta``.
    """
    import torch
    from torch import Tensor

    if not isinstance(tokens, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(tokens).__name__}")
    want = None if device is None else torch.device(device)
    if want is not None and tokens.device.type == "meta" and want.type != "meta":
        raise ValueError(
            f"{name} are on the meta device (shapes without values) but the model is on "
            f"{want}: pass real token ids"
        )
    if tokens.dtype == torch.bool or tokens.is_floating_point() or tokens.is_complex():
        raise ValueError(f"{name} must have an integer dtype, got {tokens.dtype}")
    if tokens.ndim == 1:
        tokens = tokens.unsqueeze(0)
    if tokens.ndim != 2:
        raise ValueError(f"{name} must have shape [batch, pos] or [pos], got {tuple(tokens.shape)}")
    batch, pos = tokens.shape
    if batch == 0 or pos == 0:
        raise ValueError(f"{name} is empty: shape {tuple(tokens.shape)}")
    if pos > n_ctx:
        raise ValueError(f"{name} has length {pos}, longer than n_ctx={n_ctx}")
    if tokens.device.type == "meta":  # shapes only: there are no values to check
        return tokens if tokens.dtype == torch.long else tokens.long()
    lo, hi = int(tokens.min()), int(tokens.max())
    if lo < 0 or hi >= d_vocab:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{name} contains id {bad}, outside [0, d_vocab={d_vocab})")
    tokens = tokens if tokens.dtype == torch.long else tokens.long()
    return tokens if want is None or want.type == "meta" else tokens.to(want)


def check_layer_head(layer: int, head: int | None, n_layers: int, n_heads: int) -> None:
    """Raises ValueError naming ``layer`` or ``head`` when out of range."""
    if not is_int(layer) or not 0 <= layer < n_layers:
        raise ValueError(f"layer={layer!r} out of range [0, {n_layers})")
    if head is not None and (not is_int(head) or not 0 <= head < n_heads):
        raise ValueError(f"head={head!r} out of range [0, {n_heads})")


def check_mask(mask: object, shape: tuple[int, ...], name: str = "mask") -> Tensor:
    """Validates a ``[batch, pos]`` position mask against ``shape`` and returns it as bool.

    Raises:
        TypeError: ``mask`` is not a tensor.
        ValueError: Its shape is not ``shape``.
    """
    from torch import Tensor

    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} shape {tuple(mask.shape)} != tokens {tuple(shape)}")
    return mask.bool()


def is_int(value: object, low: int | None = None) -> TypeGuard[int]:
    """Whether ``value`` is an int (a bool is not) and at least ``low``: for callers whose
    error must say more than :func:`check_int`'s (or be a ``ValueError`` in a config)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return False
    return low is None or value >= low


def is_number(value: object) -> bool:
    """Whether ``value`` is an int or a float (a bool is not)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_int(value: object, name: str, low: int | None = None, high: int | None = None) -> int:
    """Returns ``value`` if it is an int (not a bool) in ``[low, high]`` (bounds inclusive).

    Raises:
        TypeError: ``value`` is not an int (a float such as ``24.0`` included).
        ValueError: It is out of range.
    """
    if not is_int(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"{name}={value} out of range [{lo}, {hi}]")
    return value


def check_fields(
    cls: type,
    data: object,
    what: str,
    extra: Iterable[str] = (),
    *,
    exclude: Iterable[str] = (),
    noun: str = "field",
) -> dict[str, Any]:
    """``data`` as a dict of ``cls``'s dataclass fields (plus ``extra`` accepted names, minus
    ``exclude``: fields not read from data).

    The strict half of every ``from_dict``: a non-mapping or an unknown key is refused, all
    unknown keys named in one message.

    Raises:
        ValueError: ``data`` is not a mapping, or has keys that are not fields.
    """
    if not hasattr(data, "keys") or not hasattr(data, "__getitem__"):
        raise ValueError(f"{what} must be a mapping (a JSON object), got {type(data).__name__}")
    known = ({f.name for f in dataclasses.fields(cls)} | set(extra)) - set(exclude)
    out = dict(data)  # type: ignore[call-overload]
    unknown = sorted(set(out) - known, key=str)
    if unknown:
        raise ValueError(
            f"unknown {what} {noun}(s): {', '.join(map(str, unknown))}; "
            f"known: {', '.join(sorted(known))}"
        )
    return out


def _batch_pos(name: str, act: Tensor) -> tuple[int, ...]:
    """The ``(batch, pos)`` an activation was computed on (attention maps: query and key pos)."""
    if name.endswith(("hook_pattern", "hook_attn_scores")):
        return (act.shape[0], act.shape[-2], act.shape[-1]) if act.ndim == 4 else tuple(act.shape)
    return tuple(act.shape[:2])


def check_cache(
    model: Any, tokens: Tensor | None, cache: object, names: Iterable[str] = ()
) -> None:
    """Checks that ``cache`` holds ``names`` and was computed by ``model`` on ``tokens``.

    Every cached activation among ``names`` (and ``hook_embed``) must have the batch and
    positions of ``tokens`` (no broadcasting of a batch-1 cache over a larger batch), and the
    cached token embeddings, when the cache has ``hook_embed``, must equal ``W_E[tokens]``: a
    cheap fingerprint that catches the cache of other tokens (or of other weights). A cache
    filtered without ``hook_embed`` is checked by shape only.

    Args:
        tokens: Validated ``[batch, pos]`` token ids; None: only check that the named
            activations are present and agree with each other on batch and positions.
        names: Hook names the caller reads.

    Raises:
        TypeError: ``cache`` is not a mapping of hook names to tensors.
        ValueError: A name is missing, or the cache is of other tokens or another batch.
    """
    import torch
    from torch import Tensor

    if not (hasattr(cache, "keys") and hasattr(cache, "__getitem__")):
        raise TypeError(
            f"cache must be an ActivationCache (or a dict of hook name -> tensor) from "
            f"model.run_with_cache, got {type(cache).__name__}"
        )
    keys = set(cache.keys())  # type: ignore[attr-defined]
    names = list(names)
    missing = [n for n in names if n not in keys]
    if missing:
        raise ValueError(
            f"cache lacks {missing[0]!r}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + ": pass the cache of a full model.run_with_cache(tokens) (no names_filter)"
        )
    checked = [*names, *(["hook_embed"] if "hook_embed" in keys else [])]
    if tokens is None:
        shapes = {n: tuple(cache[n].shape[:2]) for n in names}  # type: ignore[index]
        if len(set(shapes.values())) > 1:
            raise ValueError(f"cache activations disagree on [batch, pos]: {shapes}")
        return
    batch, pos = tokens.shape
    for name in checked:
        act = cache[name]  # type: ignore[index]
        if not isinstance(act, Tensor):
            raise TypeError(f"cache[{name!r}] must be a tensor, got {type(act).__name__}")
        if act.ndim < 2:
            raise ValueError(f"cache[{name!r}] has shape {tuple(act.shape)}: no batch dimension")
        got = _batch_pos(name, act)
        want = (batch, pos, pos) if len(got) == 3 else (batch, pos)
        if got != want:
            raise ValueError(
                f"cache[{name!r}] has batch/positions {got}, but tokens are {tuple(tokens.shape)}: "
                "the cache is of other tokens"
            )
    if "hook_embed" in keys:
        W_E = getattr(model, "W_E", None)
        if isinstance(W_E, Tensor):
            embed = cache["hook_embed"]  # type: ignore[index]
            expected = W_E.detach()[tokens].to(embed.dtype)
            if expected.shape != embed.shape or not torch.allclose(
                embed.detach(), expected, rtol=1e-4, atol=1e-5
            ):
                raise ValueError(
                    "cache does not match tokens: its token embeddings (hook_embed) differ from "
                    "W_E[tokens] (a cache of other tokens, or of other weights)"
                )


def check_batch(
    batch: object, d_vocab: int, d_vocab_out: int, n_ctx: int, name: str = "probe"
) -> Any:
    """Validates a task :class:`~circuits.tasks.Batch` (tokens, targets, mask, repeat_length).

    Returns the batch with tokens and targets as int64 and the mask as bool (a new object
    when anything was converted; the caller's batch is not modified).

    Raises:
        TypeError: Not a batch (no ``tokens/targets/mask``), or a non-int ``repeat_length``.
        ValueError: Bad tokens or targets (see :func:`check_tokens`), a mask of another shape,
            or a ``repeat_length`` that does not fit the sequence.
    """
    if not all(hasattr(batch, a) for a in ("tokens", "targets", "mask")):
        raise TypeError(
            f"{name} must be a circuits.tasks.Batch (tokens, targets, mask), "
            f"got {type(batch).__name__}"
        )
    b: Any = batch
    tokens = check_tokens(b.tokens, d_vocab, n_ctx, name=f"{name}.tokens")
    targets = check_tokens(b.targets, d_vocab_out, n_ctx, name=f"{name}.targets")
    if targets.shape != tokens.shape:
        raise ValueError(
            f"{name}.targets shape {tuple(targets.shape)} != tokens {tuple(tokens.shape)}"
        )
    mask = check_mask(b.mask, tuple(tokens.shape), f"{name}.mask")
    repeat = getattr(batch, "repeat_length", None)
    if repeat is not None:
        check_int(repeat, f"{name}.repeat_length", 1, tokens.shape[1] // 2)
    same = tokens is b.tokens and targets is b.targets
    if same and mask is b.mask:
        return batch
    return dataclasses.replace(b, tokens=tokens, targets=targets, mask=mask)


def all_finite(t: Tensor) -> bool:
    """Whether every element of ``t`` is finite (no NaN or inf), in one reduction.

    A NaN or inf anywhere makes the sum NaN or inf, so a finite sum proves the tensor finite
    without the elementwise mask ``torch.isfinite`` writes (several times slower on the
    attention patterns the scores check); only a non-finite sum (or a float overflow of a sum
    of finite values) pays the elementwise check. Memory: O(1) beyond ``t`` on the fast path.
    """
    import torch

    if not t.is_floating_point() or t.numel() == 0 or t.device.type == "meta":
        return True  # a meta tensor has no values to check
    if math.isfinite(float(t.sum())):
        return True
    return bool(torch.isfinite(t).all())
