"""Probe and data helpers shared by tasks: repeated random tokens (the induction probe),
distinct ids, next-token targets, which positions an induction rule determines."""

from __future__ import annotations

from typing import TYPE_CHECKING

from circuits.tasks.base import MAX_SEED, Batch, check_bool
from circuits.validation import check_int

if TYPE_CHECKING:
    import torch
    from jaxtyping import Bool, Int
    from torch import Tensor

__all__ = [
    "distinct_ids",
    "induction_determined",
    "next_token_targets",
    "repeated_tokens",
    "with_bos",
]


def next_token_targets(tokens: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch pos"]:
    """Targets of a language model: the next token, padded with the last one (mask it out)."""
    import torch

    return torch.cat([tokens[:, 1:], tokens[:, -1:]], dim=1)


def distinct_ids(
    batch_size: int, k: int, n: int, generator: torch.Generator
) -> Int[Tensor, "batch k"]:
    """``k`` distinct ids from ``[0, n)`` per row, a uniformly random ordered choice.

    The cost does not grow with ``n``: where a draw of ``k`` ids with replacement is likely
    to be distinct (``n >= 4 k^2``, at least ~88% of rows), rows are drawn with replacement
    and the few with a repeat are redrawn; otherwise ``n < 4 k^2`` and the ``k`` smallest of
    ``n`` random keys per row are cheap. Deterministic for a given generator state.
    """
    import torch

    if k > n:
        raise ValueError(f"{k} distinct ids do not fit in {n} ids")
    if n < 4 * k * k:
        keys = torch.rand(batch_size, n, generator=generator)
        return keys.topk(k, dim=1, largest=False, sorted=True).indices
    ids = torch.randint(n, (batch_size, k), generator=generator)
    while True:  # one pass per round of redraws, not per sequence
        ordered = ids.sort(dim=1).values
        repeats = (ordered[:, 1:] == ordered[:, :-1]).any(dim=1)
        n_bad = int(repeats.sum())
        if n_bad == 0:
            return ids
        ids[repeats] = torch.randint(n, (n_bad, k), generator=generator)


def induction_determined(tokens: Int[Tensor, "batch pos"]) -> Bool[Tensor, "batch pos"]:
    """Positions whose next token an induction rule determines from the context.

    True at ``t`` when the token at ``t`` occurred earlier and every earlier occurrence was
    followed by the same token (which is then the prediction). The last position is False.
    """
    import torch

    n_pos = tokens.shape[1]
    out = torch.zeros_like(tokens, dtype=torch.bool)
    if n_pos < 3:
        return out
    t = tokens[:, :-1]  # positions that have a next token
    nxt = tokens[:, 1:]
    earlier = torch.ones(n_pos - 1, n_pos - 1, dtype=torch.bool).tril(-1)  # [query, key]: s < t
    occurs = (t.unsqueeze(2) == t.unsqueeze(1)) & earlier
    disagree = occurs & (nxt.unsqueeze(2) != nxt.unsqueeze(1))
    out[:, :-1] = occurs.any(dim=2) & ~disagree.any(dim=2)
    return out


def with_bos(
    tokens: Int[Tensor, "batch pos"], mask: Bool[Tensor, "batch pos"]
) -> tuple[Tensor, Tensor]:
    import torch

    batch = tokens.shape[0]
    tokens = torch.cat([torch.zeros(batch, 1, dtype=torch.long), tokens], dim=1)
    mask = torch.cat([torch.zeros(batch, 1, dtype=torch.bool), mask], dim=1)
    return tokens, mask


def repeated_tokens(
    batch_size: int,
    length: int,
    d_vocab: int,
    *,
    bos: bool = False,
    distinct: bool | None = None,
    seed: int = 0,
) -> Batch:
    """A random sequence of ``length`` tokens repeated once (after BOS id 0 if ``bos``).

    ``mask`` is True at second-copy positions whose next token the earlier tokens determine.

    Args:
        distinct: Draw the sequence without replacement, so that every token has exactly one
            earlier copy and every second-copy position is predictable. The papers draw with
            replacement from a vocabulary of 50k, where duplicates are rare; in a toy vocabulary
            they are not, so the default is distinct whenever ``length`` fits. With replacement
            the mask leaves out positions whose token occurred earlier followed by different
            tokens (the next token is then ambiguous).
    """
    import torch

    check_int(batch_size, "batch_size", 1)
    check_int(length, "length", 2)
    check_int(d_vocab, "d_vocab", 2)
    check_bool("bos", bos)
    check_int(seed, "seed", 0, MAX_SEED)
    offset = int(bos)
    n_ids = d_vocab - offset
    if distinct is None:
        distinct = length <= n_ids
    check_bool("distinct", distinct)
    if distinct and length > n_ids:
        raise ValueError(f"length={length} distinct tokens do not fit in {n_ids} ids")
    gen = torch.Generator().manual_seed(seed)
    if distinct:
        half = distinct_ids(batch_size, length, n_ids, gen) + offset
    else:
        half = torch.randint(offset, d_vocab, (batch_size, length), generator=gen)
    tokens = torch.cat([half, half], dim=1)
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, length:-1] = True
    if bos:
        tokens, mask = with_bos(tokens, mask)
    if not distinct:
        mask &= induction_determined(tokens)
    return Batch(tokens, next_token_targets(tokens), mask, repeat_length=length)
