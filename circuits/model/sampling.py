"""Choosing the next token from logits: TransformerLens 3's ``sample_logits``, validated.

Greedy, temperature, top-k, top-p (nucleus) and frequency penalty, as TL3 defines them; every
argument is checked first (one ``ValueError``/``TypeError`` from us, never a torch error), and
broken logits (NaN, +inf) are refused instead of sampled. Memory: a few ``[batch, d_vocab]``
float64 copies of the logits.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuits.validation import check_int


def sample_logits(
    logits: Float[Tensor, "batch d_vocab_out"],
    *,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    freq_penalty: float = 0.0,
    tokens: Int[Tensor, "batch pos"] | None = None,
    generator: torch.Generator | None = None,
) -> Int[Tensor, " batch"]:
    """One next token per row of ``logits`` (TL3's ``utils.sample_logits`` semantics).

    Greedy (argmax) when ``do_sample`` is False or ``temperature`` is 0. Otherwise the logits
    are divided by ``temperature``, lowered by ``freq_penalty`` times each id's count in
    ``tokens``, cut to the ``top_k`` largest or to the smallest set whose probability exceeds
    ``top_p`` (the first token always stays), and sampled with ``generator``. A temperature so
    small that the scaled logits overflow float64 is its limit, the argmax.

    Raises:
        ValueError: a bad argument, or logits with NaN or +inf (a broken model) or a row that
            is all -inf.
        TypeError: ``generator`` is not a ``torch.Generator``.
    """
    if not isinstance(logits, Tensor) or logits.ndim != 2 or not logits.is_floating_point():
        raise ValueError("logits must be a float tensor [batch, d_vocab]")
    check_sampling(logits.shape[-1], temperature, top_k, top_p, freq_penalty)
    check_generator(generator, None)
    if logits.device.type != "meta":
        if bool((logits.isnan() | (logits == math.inf)).any()):
            raise ValueError("the logits contain NaN or +inf: the model's output is broken")
        if bool((logits == -math.inf).all(dim=-1).any()):
            raise ValueError("a row of logits is all -inf: no token can be sampled")
    if not do_sample or temperature == 0.0:
        return logits.argmax(dim=-1)
    # float64: a tiny temperature (1e-45) overflows float32 but is still an ordering here.
    scaled = logits.double() / temperature
    if logits.device.type != "meta" and bool((scaled == math.inf).any()):
        return logits.argmax(dim=-1)  # the temperature -> 0 limit
    if freq_penalty:
        if tokens is None:
            raise ValueError("freq_penalty needs the tokens generated so far")
        counts = torch.zeros_like(scaled)
        ids = tokens.clamp(max=scaled.shape[-1] - 1)
        counts.scatter_add_(-1, ids, (tokens < scaled.shape[-1]).to(scaled.dtype))
        scaled = scaled - freq_penalty * counts
    if top_k is not None:
        kth = scaled.topk(top_k, dim=-1).values[..., -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    elif top_p is not None:
        sorted_logits, order = scaled.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token once the ones before it already exceed top_p; keep the first.
        drop = torch.zeros_like(cumulative, dtype=torch.bool)
        drop[..., 1:] = cumulative[..., :-1] > top_p
        scaled = scaled.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    probs = scaled.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_sampling(d_out: int, temperature: Any, top_k: Any, top_p: Any, freq_penalty: Any) -> None:
    """One ``ValueError`` for a bad sampling argument, before any work."""
    if not _number(temperature) or not temperature >= 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if top_k is not None and top_p is not None:
        raise ValueError("pass top_k or top_p, not both (TransformerLens would ignore top_p)")
    if top_k is not None:
        check_int(top_k, "top_k", 1, d_out)
    if top_p is not None and (not _number(top_p) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    if not _number(freq_penalty) or not 0 <= freq_penalty < math.inf:
        raise ValueError(f"freq_penalty must be a finite number >= 0, got {freq_penalty!r}")


def check_generator(generator: Any, seed: Any) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if seed is not None:
        check_int(seed, "seed", 0)
    if generator is not None and seed is not None:
        raise ValueError("pass seed or generator, not both")
