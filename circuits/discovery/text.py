"""Discovery on text: problems built from a pretrained model's tokenizer.

- **Repeated natural text** (:func:`repeated_text`): each sequence is a stretch of real text
  followed by the same stretch again; the metric is the loss on the second copy, and the
  registered corruption (task ``"repeated_text"``) re-draws the first copy from the tokenizer's
  vocabulary (special tokens excluded), so the repeat has nothing to copy from.
- **Indirect object identification** (:func:`ioi_batch`, task ``"ioi"``): prompts such as
  "When Mary and John went to the store, John gave a drink to" built from the shipped word lists
  (:mod:`circuits.discovery.ioi_words`), keeping only words that are one token for this
  tokenizer. The metric is the logit difference between the indirect object (" Mary") and the
  subject (" John") at the last position; the registered corruption is Wang et al.'s "ABC"
  prompts (all three names re-drawn, distinct), which keep the template and remove who is who.

Both need a model with a tokenizer (offline: the shipped stand-in in ``data/standin_hub``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from circuits.discovery import ioi_words
from circuits.discovery.corruption import register_corruption
from circuits.tasks import Batch
from circuits.tasks.probes import next_token_targets
from circuits.validation import check_int


def _tokenizer(model: Any) -> Any:
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise ValueError(
            "text tasks need a model with a tokenizer (from_pretrained attaches one; offline, "
            "use the shipped stand-in: "
            "from_pretrained('attn-only-2l', cache_dir='data/standin_hub'))"
        )
    return tok


def vocabulary_ids(model: Any) -> Int[Tensor, " n"]:
    """Ids of the tokenizer's ordinary tokens that the model embeds (no special tokens)."""
    tok = _tokenizer(model)
    special = set(getattr(tok, "all_special_ids", []) or [])
    n = min(len(tok), model.cfg.d_vocab)
    ids = [i for i in range(n) if i not in special]
    if len(ids) < 2:
        raise ValueError("the tokenizer has fewer than 2 ordinary tokens the model embeds")
    return torch.tensor(ids)


def repeated_text(model: Any, texts: list[str], length: int) -> Batch:
    """``[BOS] x x`` per text, ``x`` its first ``length`` tokens; mask on the second copy.

    Raises:
        ValueError: No tokenizer, a text shorter than ``length`` tokens, or ``2 * length + 1``
            over the model's ``n_ctx``.
    """
    tok = _tokenizer(model)
    check_int(length, "length", 2)
    if (
        not isinstance(texts, (list, tuple))
        or not texts
        or not all(isinstance(t, str) for t in texts)
    ):
        raise ValueError("texts must be a non-empty list of strings")
    bos = getattr(tok, "bos_token_id", None)
    total = 2 * length + (bos is not None)
    if total > model.cfg.n_ctx:
        raise ValueError(
            f"2 x length{' + BOS' if bos is not None else ''} = {total} > n_ctx={model.cfg.n_ctx}"
        )
    rows = []
    for text in texts:
        ids = model.to_tokens(text, prepend_bos=False)[0].cpu()
        if ids.shape[0] < length:
            raise ValueError(
                f"text {text[:40]!r}... has {ids.shape[0]} tokens, fewer than {length}"
            )
        x = ids[:length]
        rows.append(
            torch.cat([torch.tensor([bos] if bos is not None else [], dtype=torch.long), x, x])
        )
    tokens = torch.stack(rows)
    start = int(bos is not None)
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, start + length : start + 2 * length - 1] = True
    return Batch(tokens, next_token_targets(tokens), mask, repeat_length=length)


@register_corruption("repeated_text", takes_model=True)
def corrupt_repeated_text(batch: Batch, model: Any, generator: torch.Generator) -> Tensor:
    """The first copy re-drawn uniformly from the tokenizer's ordinary tokens (BOS kept)."""
    if batch.repeat_length is None:
        raise ValueError("the repeated_text corruption needs a batch from repeated_text()")
    ids = vocabulary_ids(model)
    L = batch.repeat_length
    start = batch.tokens.shape[1] - 2 * L
    out = batch.tokens.clone()
    draw = ids[torch.randint(0, len(ids), (out.shape[0], L), generator=generator)]
    out[:, start : start + L] = draw.to(out.device)
    return out


@dataclass(frozen=True)
class IoiBatch(Batch):
    """An IOI batch: ``targets`` holds the indirect object at the last position, ``wrong`` the
    subject there (the metric is their logit difference).

    Attributes:
        wrong: ``[batch, pos]`` the subject's id (where ``mask``).
        name_positions: ``[batch, 3]`` positions of the indirect object and both subjects.
        name_ids: ``[n_names]`` the single-token names the corruption draws from.
    """

    wrong: Tensor | None = None
    name_positions: Tensor | None = None
    name_ids: Tensor | None = None


def single_tokens(model: Any, words: tuple[str, ...] | list[str]) -> list[tuple[str, int]]:
    """``(word, id)`` for the words that are exactly one token for the model's tokenizer."""
    out = []
    for w in words:
        ids = model.to_tokens(w, prepend_bos=False)[0]
        if ids.shape[0] == 1 and int(ids[0]) < model.cfg.d_vocab:
            out.append((w, int(ids[0])))
    return out


def ioi_batch(
    model: Any,
    n: int,
    seed: int = 0,
    template: int = 0,
    names: list[str] | None = None,
    places: list[str] | None = None,
    objects: list[str] | None = None,
) -> IoiBatch:
    """``n`` IOI prompts of one template, half ABBA and half BABA.

    Args:
        model: A model with a tokenizer.
        template: Index into :data:`circuits.discovery.ioi_words.TEMPLATES`.
        names, places, objects: Word lists (leading space); default the shipped ones. Only the
            words that are one token for this tokenizer are used.

    Raises:
        ValueError: No tokenizer, fewer than 3 single-token names (or no place or object), or
            prompts that do not fit ``n_ctx``.
    """
    _tokenizer(model)
    check_int(n, "n", 1)
    check_int(template, "template", 0, len(ioi_words.TEMPLATES) - 1)
    pools = {}
    for kind, words, need in (
        ("names", names or ioi_words.NAMES, 3),
        ("places", places or ioi_words.PLACES, 1),
        ("objects", objects or ioi_words.OBJECTS, 1),
    ):
        ok = single_tokens(model, words)
        if len(ok) < need:
            raise ValueError(
                f"only {len(ok)} of {len(words)} {kind} are single tokens for this tokenizer "
                f"(need {need}): pass {kind}= with words it has"
            )
        pools[kind] = ok
    gen = torch.Generator().manual_seed(seed)
    pick = lambda pool: pool[int(torch.randint(0, len(pool), (1,), generator=gen))]
    text, io_ids, s_ids = [], [], []
    for i in range(n):
        order = torch.randperm(len(pools["names"]), generator=gen)[:2].tolist()
        (a, a_id), (b, b_id) = (pools["names"][j] for j in order)
        first, second = (a, b) if i % 2 == 0 else (b, a)
        prompt = ioi_words.TEMPLATES[template].replace("{A}", first, 1).replace("{B}", second, 1)
        prompt = prompt.replace("{B}", b).format(
            P=pick(pools["places"])[0], O=pick(pools["objects"])[0]
        )
        text.append(prompt)
        io_ids.append(a_id)
        s_ids.append(b_id)
    rows = [model.to_tokens(t)[0].cpu() for t in text]
    if len({r.shape[0] for r in rows}) != 1:
        raise ValueError("the prompts tokenized to different lengths; pass single-token words")
    tokens = torch.stack(rows)
    if tokens.shape[1] > model.cfg.n_ctx:
        raise ValueError(f"the prompts have {tokens.shape[1]} tokens, over n_ctx={model.cfg.n_ctx}")
    io, s = torch.tensor(io_ids), torch.tensor(s_ids)
    positions = []
    for row, a_id, b_id in zip(tokens, io, s, strict=True):
        at = (row == a_id).nonzero().flatten().tolist()
        bt = (row == b_id).nonzero().flatten().tolist()
        if len(at) != 1 or len(bt) != 2:
            raise ValueError("a name occurs elsewhere in the template; pass other names")
        positions.append([at[0], *bt])
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, -1] = True
    targets = torch.zeros_like(tokens)
    targets[:, -1] = io
    wrong = torch.zeros_like(tokens)
    wrong[:, -1] = s
    name_ids = torch.tensor([i for _, i in pools["names"]])
    return IoiBatch(tokens, targets, mask, None, wrong, torch.tensor(positions), name_ids)


@register_corruption("ioi", metric="logit_diff")
def corrupt_ioi(batch: Batch, d_vocab: int, generator: torch.Generator) -> Tensor:
    """Wang et al.'s ABC prompts: the indirect object and both subjects replaced by three
    distinct names drawn from the batch's names."""
    positions = getattr(batch, "name_positions", None)
    names = getattr(batch, "name_ids", None)
    if positions is None or names is None:
        raise ValueError("the ioi corruption needs a batch from ioi_batch()")
    out = batch.tokens.clone()
    for row in range(out.shape[0]):
        new = names[torch.randperm(len(names), generator=generator)[:3]]
        out[row, positions[row].to(out.device)] = new.to(out.device)
    return out
