"""Path expansion of an attention-only model (Elhage et al. 2021), with sizes and importance.

With the attention patterns held at their values on the batch, an attention-only model without
LayerNorm is linear in its residual input ``x0 = W_E[tokens] + W_pos``, so its logits split
exactly into one term per path: the **direct path** ``x0 W_U``, one term per head
``A^h x0 W_OV^h W_U``, one **virtual-head** term per chain of heads in increasing layers
(``A^{h2} A^{h1} x0 W_OV^{h1} W_OV^{h2} W_U``: V-composition), and one term for every path that
starts at a bias (``b_V``, ``b_O``, ``b_U``). The terms sum to the logits (tested).

Each term gets a **size** (the mean norm over the metric's positions of its logits, centred over
the vocabulary, since a constant shift changes no prediction) and an **importance**: the rise in
the loss when the term alone is removed from the logits.

:func:`score_decomposition` does the same for the attention scores of one later head: its
query and its key are each a sum of residual components (token and positional embeddings, each
earlier head's output, biases), so its scores split into one term per (query component, key
component) pair. For an induction head, the term (query: ``embed``, key: the previous-token
head) is what finds the token after the earlier copy: K-composition, read off the activations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import einops
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from circuits.names import head_name
from circuits.validation import check_int, check_layer_head, check_mask, check_tokens


def _check_linear(model: Any) -> None:
    cfg = model.cfg
    if not cfg.attn_only or cfg.normalization_type is not None:
        raise ValueError(
            "path expansion needs an attention-only model without LayerNorm "
            f"(got attn_only={cfg.attn_only}, normalization_type={cfg.normalization_type!r})"
        )
    if getattr(cfg, "positional_embedding_type", "standard") != "standard":
        raise ValueError("path expansion needs positional embeddings in the residual stream")


def _patterns(model: Any, tokens: Tensor) -> list[Tensor]:
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    return [cache[f"blocks.{layer}.attn.hook_pattern"] for layer in range(model.cfg.n_layers)]


@dataclass(frozen=True)
class PathExpansion:
    """The logits split into path terms.

    Attributes:
        labels: ``"direct"``, ``"L0H1"``, ``"L0H1>L1H0"`` (a virtual head: L0H1's output read by
            L1H0's values), ..., and ``"biases"`` last.
        logits: ``[terms, batch, pos, d_vocab]``; they sum to the model's logits.
        order: Heads on each path (0 for direct and biases).
        sizes: ``[terms]`` mean norm of each term's vocabulary-centred logits on the mask.
        importance: ``[terms]`` loss with the term removed minus the model's loss (None
            without targets).
    """

    labels: list[str]
    logits: Float[Tensor, "terms batch pos d_vocab"]
    order: list[int]
    sizes: Float[Tensor, " terms"]
    importance: Float[Tensor, " terms"] | None

    def __getitem__(self, label: str) -> Tensor:
        if label not in self.labels:
            raise ValueError(f"no term {label!r}; terms: {', '.join(self.labels)}")
        return self.logits[self.labels.index(label)]

    def table(self) -> list[dict[str, Any]]:
        """One row per term: label, order, size, importance."""
        return [
            {
                "term": label,
                "order": order,
                "size": float(self.sizes[i]),
                "importance": None if self.importance is None else float(self.importance[i]),
            }
            for i, (label, order) in enumerate(zip(self.labels, self.order, strict=True))
        ]


def _loss(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Masked cross-entropy per leading index: ``[..., batch, pos, vocab] -> [...]``."""
    logp = logits.log_softmax(-1)
    nll = -logp.gather(-1, targets.expand(*logits.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    w = mask.to(logits.dtype)
    return (nll * w).sum((-2, -1)) / w.sum()


def path_expansion(
    model: Any,
    tokens: Int[Tensor, "batch pos"],
    targets: Int[Tensor, "batch pos"] | None = None,
    mask: Bool[Tensor, "batch pos"] | None = None,
) -> PathExpansion:
    """Splits the logits of ``tokens`` into direct, per-head and virtual-head path terms.

    Args:
        model: An attention-only model without LayerNorm.
        tokens: ``[batch, pos]``.
        targets: Ids to predict ``[batch, pos]``; with them each term gets an importance.
        mask: Bool ``[batch, pos]``: positions the sizes and importance average over
            (default: all).
    """
    _check_linear(model)
    tokens = check_tokens(tokens, model.cfg.d_vocab, model.cfg.n_ctx).to(model.W_E.device)
    b, p = tokens.shape
    mask = torch.ones(b, p, dtype=torch.bool) if mask is None else check_mask(mask, (b, p))
    mask = mask.to(tokens.device)
    if not bool(mask.any()):
        raise ValueError("mask selects no position: sizes and importance would be undefined")
    if targets is not None:
        targets = check_tokens(targets, model.cfg.d_vocab_out, model.cfg.n_ctx, "targets")
        targets = targets.to(tokens.device)
        if targets.shape != tokens.shape:
            raise ValueError(f"targets {tuple(targets.shape)} do not match tokens {(b, p)}")
    patterns = _patterns(model, tokens)
    with torch.no_grad():
        x0 = model.W_E[tokens] + model.W_pos[:p]
        paths: dict[str, Tensor] = {"direct": x0, "biases": torch.zeros_like(x0)}
        for layer in range(model.cfg.n_layers):
            attn = model.blocks[layer].attn
            new: dict[str, Tensor] = {}
            for h in range(model.cfg.n_heads):
                name = head_name(layer, h)
                A = patterns[layer][:, h]  # [b, q, k]
                for label, x in paths.items():
                    out = A @ (x @ attn.W_V[h]) @ attn.W_O[h]
                    key = (
                        label
                        if label == "biases"
                        else name
                        if label == "direct"
                        else (f"{label}>{name}")
                    )
                    new[key] = new.get(key, 0) + out
                # Rows of A sum to 1: the value bias reaches the output unchanged.
                new["biases"] = new.get("biases", 0) + attn.b_V[h] @ attn.W_O[h]
            new["biases"] = new["biases"] + attn.b_O
            for key, value in new.items():
                paths[key] = paths.get(key, 0) + value if key == "biases" else value
        labels = [k for k in paths if k != "biases"] + ["biases"]
        terms = torch.stack([paths[k] @ model.W_U for k in labels])
        terms[-1] = terms[-1] + model.b_U
        centred = terms - terms.mean(-1, keepdim=True)
        w = mask.float()
        sizes = (centred.norm(dim=-1) * w).sum((-2, -1)) / w.sum()
        importance = None
        if targets is not None:
            full = terms.sum(0)
            importance = _loss(full - terms, targets, mask) - _loss(full, targets, mask)
    order = [0 if k in ("direct", "biases") else k.count(">") + 1 for k in labels]
    return PathExpansion(labels, terms, order, sizes, importance)


@dataclass(frozen=True)
class ScoreDecomposition:
    """Attention scores of one head split by (query component, key component).

    Attributes:
        layer, head: The head.
        labels: Residual components: ``"embed"``, ``"pos"``, earlier heads, ``"biases"``.
        scores: ``[query comps, key comps, batch, query_pos, key_pos]``, scaled like the model's
            scores (before the causal mask); they sum to the head's scores.
    """

    layer: int
    head: int
    labels: list[str]
    scores: Float[Tensor, "cq ck batch qpos kpos"]

    def induction_contrast(self, repeat_length: int, mask: Tensor) -> Float[Tensor, "cq ck"]:
        """Per component pair: mean score at the key after the earlier copy (``i - S + 1``)
        minus the mean over the other keys the query may see, at query positions ``mask``."""
        b, p = self.scores.shape[2], self.scores.shape[3]
        # The key after the earlier copy is i - S + 1: S >= 1 keeps it at or before the query.
        check_int(repeat_length, "repeat_length", 1, p)
        mask = check_mask(mask, (b, p)).to(self.scores.device)
        i = torch.arange(p, device=self.scores.device)
        target = i[None, :] == (i[:, None] - repeat_length + 1)  # [q, k]
        causal = i[None, :] <= i[:, None]
        other = causal & ~target
        w = mask.float()  # [b, q]
        at = (self.scores * target).sum(-1) / target.sum(-1).clamp(min=1)  # [cq, ck, b, q]
        rest = (self.scores * other).sum(-1) / other.sum(-1).clamp(min=1)
        has_target = target.any(-1).float()  # [q]
        weights = w * has_target
        if not weights.any():
            raise ValueError("no masked query position has an earlier copy to attend to")
        return ((at - rest) * weights).sum((-2, -1)) / weights.sum()


def score_decomposition(
    model: Any, tokens: Int[Tensor, "batch pos"], layer: int, head: int
) -> ScoreDecomposition:
    """Splits the attention scores of head ``(layer, head)`` by query and key component."""
    _check_linear(model)
    check_layer_head(layer, head, model.cfg.n_layers, model.cfg.n_heads)
    tokens = check_tokens(tokens, model.cfg.d_vocab, model.cfg.n_ctx).to(model.W_E.device)
    b, p = tokens.shape
    with torch.no_grad():
        _, cache = model.run_with_cache(
            tokens, names_filter=lambda n: n.endswith("hook_z") or n == "hook_embed"
        )
        comps = {"embed": model.W_E[tokens], "pos": model.W_pos[:p].expand(b, p, -1)}
        bias = torch.zeros_like(model.W_E[0])
        for l1 in range(layer):
            attn = model.blocks[l1].attn
            z = cache[f"blocks.{l1}.attn.hook_z"]
            for h in range(model.cfg.n_heads):
                comps[head_name(l1, h)] = z[:, :, h] @ attn.W_O[h]
            bias = bias + attn.b_O
        comps["biases"] = bias.expand(b, p, -1)
        attn = model.blocks[layer].attn
        labels = list(comps)
        x = torch.stack([comps[k] for k in labels])  # [c, b, p, d]
        q = x @ attn.W_Q[head]
        k = x @ attn.W_K[head]
        q[-1] = q[-1] + attn.b_Q[head]
        k[-1] = k[-1] + attn.b_K[head]
        scores = einops.einsum(q, k, "cq b i e, ck b j e -> cq ck b i j") / model.cfg.attn_scale
    return ScoreDecomposition(layer, head, labels, scores)
