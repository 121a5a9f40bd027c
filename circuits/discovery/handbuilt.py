"""Circuits with known weights: every discovery method must recover exactly what was planted.

Each model is attention-only, one head per layer, with the residual stream split into
disjoint one-hot subspaces (token, position, an intermediate subspace, output) so that every
edge that is not planted carries exactly nothing: its sender writes where its receiver does
not read.

- **shift-by-one** (1 layer): the head attends from position ``i`` to ``i - 1`` by position
  (``pos -> q``, ``pos -> k``) and copies that token (``embed -> v``) to the output.
- **K-composition induction** (2 layers): a previous-token head writes "the token before me"
  into a ``prev`` subspace; the layer-1 head's query reads the current token, its key reads
  ``prev`` (``L0H0 -> L1H0.k``), so it attends to the token after the earlier copy and copies it.
- **Q-composition induction** (2 layers): a duplicate-token head attends from a token to its
  earlier copy (token match in q and k, minus a same-position term) and writes that copy's
  position plus one into a ``target`` subspace; the layer-1 head's query reads it
  (``L0H0 -> L1H0.q``) and its key reads positions, so it attends to the token after the
  earlier copy and copies it. Same behaviour as K-composition, different mechanism.

Attention is sharp but not saturated (about 0.8-0.9 on the target), so gradients through the
softmax are not vanishingly small and attribution methods have something to read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from circuits.config import ModelConfig
from circuits.model import HookedTransformer
from circuits.tasks import Batch, ShiftByOneTask, repeated_tokens


@dataclass(frozen=True)
class HandBuilt:
    """A hand-built model with the edges its mechanism uses.

    Attributes:
        name: ``"shift"``, ``"k_induction"`` or ``"q_induction"``.
        model: The model (eval mode).
        task: The task name whose corruption applies (``"shift"`` or ``"induction"``).
        planted: Every edge the mechanism reads (what zero ablation finds).
        planted_corrupted: The planted edges whose signal the task's corruption changes where
            the metric reads it (what patching from the corrupted run finds): positional edges
            carry the same positions in both runs, and a query in the second copy reads the
            same token in both.
        probe: ``probe(batch_size, seed)`` returns a batch whose mask marks the positions the
            circuit predicts.
    """

    name: str
    model: HookedTransformer
    task: str
    planted: frozenset[str]
    planted_corrupted: frozenset[str]
    probe: Callable[[int, int], Batch]


def _model(n_layers: int, d_model: int, d_head: int, n_ctx: int, d_vocab: int) -> HookedTransformer:
    cfg = ModelConfig(
        n_layers=n_layers,
        d_model=d_model,
        n_heads=1,
        d_head=d_head,
        n_ctx=n_ctx,
        d_vocab=d_vocab,
        attn_only=True,
        normalization_type=None,
    )
    model = HookedTransformer(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return model.eval()


def _previous_token_qk(W_Q: Tensor, W_K: Tensor, pos: slice, n_ctx: int, score: float) -> None:
    """Query at position ``i`` matches the key at ``i - 1`` with logit ``score``."""
    for i in range(n_ctx):
        W_Q[pos.start + i, i] = score
        if i + 1 < W_K.shape[1]:
            W_K[pos.start + i, i + 1] = 1.0


def shift_by_one(
    d_vocab: int = 16, n_ctx: int = 16, sharpness: float = 5.0, gain: float = 8.0
) -> HandBuilt:
    """A 1-layer previous-token head that predicts the previous token (see module doc)."""
    tok, pos, out = (
        slice(0, d_vocab),
        slice(d_vocab, d_vocab + n_ctx),
        slice(d_vocab + n_ctx, 2 * d_vocab + n_ctx),
    )
    d_head = max(d_vocab, n_ctx + 1)
    model = _model(1, 2 * d_vocab + n_ctx, d_head, n_ctx, d_vocab)
    scale = model.cfg.attn_scale
    attn = model.blocks[0].attn
    with torch.no_grad():
        model.embed.W_E[:, tok] = torch.eye(d_vocab)
        model.pos_embed.W_pos[:, pos] = torch.eye(n_ctx)
        _previous_token_qk(attn.W_Q[0], attn.W_K[0], pos, n_ctx, sharpness * scale)
        attn.W_V[0, tok, :d_vocab] = torch.eye(d_vocab)
        attn.W_O[0, :d_vocab, out] = gain * torch.eye(d_vocab)
        model.unembed.W_U[out] = torch.eye(d_vocab)
    planted = frozenset({"pos->L0H0.q", "pos->L0H0.k", "embed->L0H0.v", "L0H0->logits"})

    def probe(batch_size: int, seed: int) -> Batch:
        return ShiftByOneTask(d_vocab, n_ctx, seed).probe(batch_size)

    return HandBuilt(
        "shift", model, "shift", planted, frozenset({"embed->L0H0.v", "L0H0->logits"}), probe
    )


def _induction_probe(d_vocab: int, n_ctx: int) -> Callable[[int, int], Batch]:
    def probe(batch_size: int, seed: int) -> Batch:
        return repeated_tokens(batch_size, n_ctx // 2, d_vocab, seed=seed)

    return probe


def k_composition_induction(
    d_vocab: int = 16, n_ctx: int = 16, sharpness: float = 5.0, gain: float = 8.0
) -> HandBuilt:
    """A previous-token head K-composing into an induction head (see module doc)."""
    tok = slice(0, d_vocab)
    pos = slice(d_vocab, d_vocab + n_ctx)
    prev = slice(pos.stop, pos.stop + d_vocab)
    out = slice(prev.stop, prev.stop + d_vocab)
    d_head = max(d_vocab, n_ctx + 1)
    model = _model(2, out.stop, d_head, n_ctx, d_vocab)
    scale = model.cfg.attn_scale
    a0, a1 = model.blocks[0].attn, model.blocks[1].attn
    with torch.no_grad():
        model.embed.W_E[:, tok] = torch.eye(d_vocab)
        model.pos_embed.W_pos[:, pos] = torch.eye(n_ctx)
        _previous_token_qk(a0.W_Q[0], a0.W_K[0], pos, n_ctx, sharpness * scale)
        a0.W_V[0, tok, :d_vocab] = torch.eye(d_vocab)
        a0.W_O[0, :d_vocab, prev] = torch.eye(d_vocab)
        a1.W_Q[0, tok, :d_vocab] = sharpness * scale * torch.eye(d_vocab)
        a1.W_K[0, prev, :d_vocab] = torch.eye(d_vocab)
        a1.W_V[0, tok, :d_vocab] = torch.eye(d_vocab)
        a1.W_O[0, :d_vocab, out] = gain * torch.eye(d_vocab)
        model.unembed.W_U[out] = torch.eye(d_vocab)
    planted = frozenset(
        {
            "pos->L0H0.q",
            "pos->L0H0.k",
            "embed->L0H0.v",
            "embed->L1H0.q",
            "L0H0->L1H0.k",
            "embed->L1H0.v",
            "L1H0->logits",
        }
    )
    corrupted = frozenset({"embed->L0H0.v", "L0H0->L1H0.k", "embed->L1H0.v", "L1H0->logits"})
    return HandBuilt(
        "k_induction", model, "induction", planted, corrupted, _induction_probe(d_vocab, n_ctx)
    )


def q_composition_induction(
    d_vocab: int = 16, n_ctx: int = 16, sharpness: float = 6.0, gain: float = 8.0
) -> HandBuilt:
    """A duplicate-token head Q-composing into an induction head (see module doc)."""
    tok = slice(0, d_vocab)
    pos = slice(d_vocab, d_vocab + n_ctx)
    target = slice(pos.stop, pos.stop + n_ctx)
    out = slice(target.stop, target.stop + d_vocab)
    d_head = d_vocab + n_ctx
    model = _model(2, out.stop, d_head, n_ctx, d_vocab)
    scale = model.cfg.attn_scale
    a0, a1 = model.blocks[0].attn, model.blocks[1].attn
    eye_v, eye_p = torch.eye(d_vocab), torch.eye(n_ctx)
    with torch.no_grad():
        model.embed.W_E[:, tok] = eye_v
        model.pos_embed.W_pos[:, pos] = eye_p
        # Score = sharpness * ([same token] - [same position]): the earlier copy, not itself.
        a0.W_Q[0, tok, :d_vocab] = sharpness * scale * eye_v
        a0.W_Q[0, pos, d_vocab:] = sharpness * scale * eye_p
        a0.W_K[0, tok, :d_vocab] = eye_v
        a0.W_K[0, pos, d_vocab:] = -eye_p
        # Value: the key's position; output: that position plus one, in the target subspace.
        a0.W_V[0, pos, :n_ctx] = eye_p
        for j in range(n_ctx - 1):
            a0.W_O[0, j, target.start + j + 1] = 1.0
        a1.W_Q[0, target, :n_ctx] = sharpness * scale * eye_p
        a1.W_K[0, pos, :n_ctx] = eye_p
        a1.W_V[0, tok, :d_vocab] = eye_v
        a1.W_O[0, :d_vocab, out] = gain * eye_v
        model.unembed.W_U[out] = eye_v
    planted = frozenset(
        {
            "embed->L0H0.q",
            "pos->L0H0.q",
            "embed->L0H0.k",
            "pos->L0H0.k",
            "pos->L0H0.v",
            "L0H0->L1H0.q",
            "pos->L1H0.k",
            "embed->L1H0.v",
            "L1H0->logits",
        }
    )
    corrupted = frozenset({"embed->L0H0.k", "L0H0->L1H0.q", "embed->L1H0.v", "L1H0->logits"})
    return HandBuilt(
        "q_induction", model, "induction", planted, corrupted, _induction_probe(d_vocab, n_ctx)
    )


HANDBUILT: dict[str, Callable[[], HandBuilt]] = {
    "shift": shift_by_one,
    "k_induction": k_composition_induction,
    "q_induction": q_composition_induction,
}
