"""The computational graph of a model: senders, receivers and the edges between them.

The residual stream is a sum, so every component's input is the sum of the outputs written
before it. A **sender** writes to the residual stream: the token embedding, the positional
embedding, each head (its ``hook_result``, without the layer's ``b_O``) and each MLP. A
**receiver** reads from it: each head's query, key and value input separately, each MLP, and
the logits (the unembedding, after the final LayerNorm if any). An **edge** is one (sender,
receiver) pair where the sender writes before the receiver reads: patching it replaces that
sender's contribution to that receiver only (Conmy et al. 2023; Syed et al. 2023).

The attention output biases ``b_O`` belong to no head: they are written to every receiver and
never patched (a corrupted, resampled or mean run has the same biases, so only zero ablation
could see them).

Edges are numbered receiver by receiver, in the order the forward pass reads them, and within
a receiver by sender in the order they were written; :mod:`circuits.discovery.forward` relies on
that order to turn an edge mask into one matrix per layer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Bool
from torch import Tensor

from circuits.names import head_name

SenderKind = Literal["embed", "pos", "head", "mlp"]
ReceiverKind = Literal["q", "k", "v", "mlp", "logits"]


@dataclass(frozen=True)
class Sender:
    """A component that writes to the residual stream.

    Attributes:
        name: ``"embed"``, ``"pos"``, ``"L{l}H{h}"`` or ``"MLP{l}"``.
        kind: ``"embed"``, ``"pos"``, ``"head"`` or ``"mlp"``.
        layer: The layer (-1 for the embeddings).
        head: The head index for heads, else None.
    """

    name: str
    kind: SenderKind
    layer: int
    head: int | None = None


@dataclass(frozen=True)
class Receiver:
    """A component input read from the residual stream.

    Attributes:
        name: ``"L{l}H{h}.q"`` (``.k``, ``.v``), ``"MLP{l}"`` or ``"logits"``.
        kind: ``"q"``, ``"k"``, ``"v"``, ``"mlp"`` or ``"logits"``.
        layer: The layer (``n_layers`` for the logits).
        head: The head index for q/k/v inputs, else None.
    """

    name: str
    kind: ReceiverKind
    layer: int
    head: int | None = None

    @property
    def node(self) -> str:
        """The component that reads: ``"L1H0"`` for ``"L1H0.k"``, else the name itself."""
        return self.name.split(".")[0]


@dataclass(frozen=True)
class Edge:
    """One sender-to-receiver path; ``name`` is ``"sender->receiver"``, e.g. ``"L0H1->L1H0.k"``."""

    sender: Sender
    receiver: Receiver

    @property
    def name(self) -> str:
        return f"{self.sender.name}->{self.receiver.name}"


@dataclass(frozen=True)
class Group:
    """The receivers read at one point of the forward pass, with the senders they can see.

    Attributes:
        kind: ``"attn"`` (all q, k, v inputs of one layer, ``3 * n_heads`` receivers in the order
            q of every head, k of every head, v of every head), ``"mlp"`` or ``"logits"``.
        layer: The layer (``n_layers`` for the logits).
        n_senders: Senders written before this point (the first ``n_senders`` of the graph).
        first_edge: Index of the group's first edge; its edges are
            ``first_edge : first_edge + n_receivers * n_senders``, receiver-major.
        receivers: The receivers, in row order.
    """

    kind: Literal["attn", "mlp", "logits"]
    layer: int
    n_senders: int
    first_edge: int
    receivers: tuple[Receiver, ...]

    @property
    def n_edges(self) -> int:
        return len(self.receivers) * self.n_senders

    @property
    def edge_slice(self) -> slice:
        return slice(self.first_edge, self.first_edge + self.n_edges)


def check_supported(model: Any) -> None:
    """Raises ValueError naming what the graph cannot express on ``model``.

    Supported: any number of layers, attention-only or with MLPs, LayerNorm or none, absolute
    positional embeddings added to the residual stream.
    """
    cfg = getattr(model, "cfg", None)
    if cfg is None or not hasattr(model, "blocks"):
        raise TypeError(f"expected a circuits.HookedTransformer, got {type(model).__name__}")
    norm = getattr(cfg, "normalization_type", None)
    if norm not in (None, "LN"):
        raise ValueError(
            f"circuit discovery supports normalization_type None or 'LN', not {norm!r}"
        )
    pos = getattr(cfg, "positional_embedding_type", "standard")
    if pos != "standard":
        raise ValueError(
            f"circuit discovery needs positions in the residual stream "
            f"(positional_embedding_type 'standard'), not {pos!r}"
        )
    kv = getattr(cfg, "n_key_value_heads", None)
    if kv is not None and kv != cfg.n_heads:
        raise ValueError(f"grouped-query attention (n_key_value_heads={kv}) is not supported")
    act = getattr(cfg, "act_fn", "gelu")
    if not getattr(cfg, "attn_only", True) and act not in ("gelu", "gelu_new", "relu"):
        raise ValueError(f"circuit discovery supports act_fn gelu, gelu_new or relu, not {act!r}")
    if getattr(cfg, "parallel_attn_mlp", False):
        raise ValueError("parallel attention and MLP blocks are not supported")


class Graph:
    """Senders, receivers and edges of a model (attention-only or with MLPs).

    Args:
        model: A :class:`circuits.HookedTransformer` (see :func:`check_supported`).

    Attributes:
        senders: In the order they write: ``embed``, ``pos``, then per layer its heads and MLP.
        receivers: In the order they read: per layer q, k, v of each head then the MLP; logits.
        edges: Every (sender, receiver) pair with the sender written first.
        groups: Receivers grouped by where the forward pass reads them (see :class:`Group`).
    """

    def __init__(self, model: Any):
        check_supported(model)
        cfg = model.cfg
        self.n_layers: int = cfg.n_layers
        self.n_heads: int = cfg.n_heads
        self.attn_only: bool = bool(cfg.attn_only)
        senders = [Sender("embed", "embed", -1), Sender("pos", "pos", -1)]
        groups: list[Group] = []
        n_edges = 0

        def add(kind: Any, layer: int, receivers: list[Receiver]) -> None:
            nonlocal n_edges
            groups.append(Group(kind, layer, len(senders), n_edges, tuple(receivers)))
            n_edges += len(receivers) * len(senders)

        for layer in range(self.n_layers):
            add(
                "attn",
                layer,
                [
                    Receiver(f"{head_name(layer, h)}.{kind}", kind, layer, h)
                    for kind in ("q", "k", "v")
                    for h in range(self.n_heads)
                ],
            )
            senders += [Sender(head_name(layer, h), "head", layer, h) for h in range(self.n_heads)]
            if not self.attn_only:
                add("mlp", layer, [Receiver(f"MLP{layer}", "mlp", layer)])
                senders.append(Sender(f"MLP{layer}", "mlp", layer))
        add("logits", self.n_layers, [Receiver("logits", "logits", self.n_layers)])
        self.senders: tuple[Sender, ...] = tuple(senders)
        self.groups: tuple[Group, ...] = tuple(groups)
        self.receivers: tuple[Receiver, ...] = tuple(r for g in groups for r in g.receivers)
        self.edges: tuple[Edge, ...] = tuple(
            Edge(senders[s], r) for g in groups for r in g.receivers for s in range(g.n_senders)
        )
        self._index = {e.name: i for i, e in enumerate(self.edges)}
        self.sender_index = {s.name: i for i, s in enumerate(self.senders)}

    @property
    def n_edges(self) -> int:
        return len(self.edges)

    @property
    def n_senders(self) -> int:
        return len(self.senders)

    @property
    def edge_names(self) -> list[str]:
        return [e.name for e in self.edges]

    def index(self, name: str) -> int:
        """Index of edge ``name`` (``"L0H1->L1H0.k"``); ValueError if there is no such edge."""
        if name not in self._index:
            raise ValueError(
                f"no edge {name!r} in this graph; edges look like 'L0H1->L1H0.k', "
                f"'embed->L0H0.v', 'L1H0->logits'"
            )
        return self._index[name]

    def mask(self, names: Iterable[str]) -> Bool[Tensor, " n_edges"]:
        """A bool edge mask, True at the named edges."""
        out = torch.zeros(self.n_edges, dtype=torch.bool)
        for name in names:
            out[self.index(name)] = True
        return out

    def names(self, mask: Tensor) -> list[str]:
        """The names of the edges where a bool ``[n_edges]`` mask is True."""
        mask = self.check_mask(mask)
        return [self.edges[i].name for i in mask.nonzero().flatten().tolist()]

    def check_mask(self, mask: Any, name: str = "mask") -> Bool[Tensor, " n_edges"]:
        """Validates a bool ``[n_edges]`` edge mask (or a list of edge names) and returns it."""
        if isinstance(mask, (list, tuple, set, frozenset)):
            return self.mask(mask)
        if not isinstance(mask, Tensor):
            raise TypeError(f"{name} must be a bool tensor or a list of edge names")
        if mask.shape != (self.n_edges,):
            raise ValueError(f"{name} must have shape [{self.n_edges}], got {tuple(mask.shape)}")
        return mask.bool()

    def edges_between(self, sender: str, receiver_node: str) -> list[str]:
        """Names of the edges from ``sender`` into any input of ``receiver_node`` (e.g. a head)."""
        return [
            e.name
            for e in self.edges
            if e.sender.name == sender and e.receiver.node == receiver_node
        ]

    def __repr__(self) -> str:
        return (
            f"Graph({len(self.senders)} senders, {len(self.receivers)} receivers, "
            f"{self.n_edges} edges)"
        )
