"""The computational graph of a model: senders, receivers and the edges between them.

The residual stream is a sum, so every component's input is the sum of the outputs written
before it. A **sender** writes to the residual stream: the token embedding, the positional
embedding, each head (its ``hook_result``, without the layer's ``b_O``) and each MLP. A
**receiver** reads from it: each head's query, key and value input separately, each MLP, and
the logits (the unembedding, after the final norm if any). An **edge** is one (sender,
receiver) pair where the sender writes before the receiver reads: patching it replaces that
sender's contribution to that receiver only (Conmy et al. 2023; Syed et al. 2023).

**Shortformer** models (the framework paper's attention-only models) never add positions to
the residual stream: the positional embedding is added to each query and key input after the
layer's LayerNorm. There ``pos`` is a sender into queries and keys only (no ``pos -> L0H0.v``,
``pos -> MLP0`` or ``pos -> logits`` edges).

The attention output biases ``b_O`` (and MLP output biases, part of the MLP's output) are
written to every receiver; ``b_O`` is never patched (a corrupted, resampled or mean run has
the same biases, so only zero ablation could see them).

Two granularities (``level``):

- ``"edge"`` (default): one unit per (sender, receiver input) pair, as above.
- ``"node"``: one unit per sender (``"embed"``, ``"pos"``, ``"L0H1"``, ``"MLP0"``); patching a
  node patches every edge out of it (its output is replaced wherever it is read). A 12 x 12
  model has ~33,000 edges but 158 nodes: the first pass on a big graph.

Internally every group of receivers (one layer's q/k/v inputs, one MLP, the logits) has a
rectangular block of **slots**, receiver-major, one per (receiver, sender written before it);
edges are the slots that exist (all of them except shortformer's ``pos`` into values, MLPs and
logits). :mod:`circuits.discovery.forward` works on slots; :meth:`Graph.slot_patch` turns a
patch over units into one over slots.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from circuits.model import capabilities
from circuits.names import head_name

SenderKind = Literal["embed", "pos", "head", "mlp"]
ReceiverKind = Literal["q", "k", "v", "mlp", "logits", "all"]
Level = Literal["edge", "node"]


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
        name: ``"L{l}H{h}.q"`` (``.k``, ``.v``), ``"MLP{l}"``, ``"logits"``, or ``"*"`` (every
            reader: the receiver of a node-level unit).
        kind: ``"q"``, ``"k"``, ``"v"``, ``"mlp"``, ``"logits"`` or ``"all"``.
        layer: The layer (``n_layers`` for the logits and ``"*"``).
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
    """One sender-to-receiver path; ``name`` is ``"sender->receiver"``, e.g. ``"L0H1->L1H0.k"``
    (a node-level unit is named after its sender alone, e.g. ``"L0H1"``)."""

    sender: Sender
    receiver: Receiver

    @property
    def name(self) -> str:
        if self.receiver.kind == "all":
            return self.sender.name
        return f"{self.sender.name}->{self.receiver.name}"


@dataclass(frozen=True)
class Group:
    """The receivers read at one point of the forward pass, with the senders they can see.

    Attributes:
        kind: ``"attn"`` (all q, k, v inputs of one layer, ``3 * n_heads`` receivers in the order
            q of every head, k of every head, v of every head), ``"mlp"`` or ``"logits"``.
        layer: The layer (``n_layers`` for the logits).
        n_senders: Senders written before this point (the first ``n_senders`` of the graph).
        first_slot: Index of the group's first slot; its slots are
            ``first_slot : first_slot + n_receivers * n_senders``, receiver-major.
        receivers: The receivers, in row order.
    """

    kind: Literal["attn", "mlp", "logits"]
    layer: int
    n_senders: int
    first_slot: int
    receivers: tuple[Receiver, ...]

    @property
    def n_slots(self) -> int:
        return len(self.receivers) * self.n_senders

    @property
    def slot_slice(self) -> slice:
        return slice(self.first_slot, self.first_slot + self.n_slots)


def check_supported(model: Any) -> None:
    """Raises ValueError naming what the graph cannot express on ``model`` (TypeError for
    something that is not a :class:`circuits.HookedTransformer`).

    Supported: any number of layers; attention-only or with MLPs (gelu, gelu_new, relu,
    solu_ln); normalization None, LN, LNPre (folded), RMS or RMSPre, recomputed per receiver;
    standard or shortformer positions. Not: rotary positions, grouped-query attention,
    parallel attention and MLP (``"edge_graph"`` in :mod:`circuits.model.capabilities`).
    """
    cfg = getattr(model, "cfg", None)
    if cfg is None or not hasattr(model, "blocks") or not hasattr(model, "W_E"):
        raise TypeError(f"expected a circuits.HookedTransformer, got {type(model).__name__}")
    capabilities.require(cfg, "edge_graph", "discover circuits on this model")
    if not model.W_E.is_floating_point():
        raise ValueError(f"the model's weights must be floating point, got {model.W_E.dtype}")


class Graph:
    """Senders, receivers and units (edges or nodes) of a model.

    Args:
        model: A :class:`circuits.HookedTransformer` (see :func:`check_supported`).
        level: ``"edge"`` (each sender -> receiver input) or ``"node"`` (each sender).

    Attributes:
        senders: In the order they write: ``embed``, ``pos``, then per layer its heads and MLP.
        receivers: In the order they read: per layer q, k, v of each head then the MLP; logits.
        edges: The units: every (sender, receiver) edge, or every sender at node level.
        groups: Receivers grouped by where the forward pass reads them (see :class:`Group`).
        slots: Every (sender, receiver) pair of the groups' blocks, existing or not.
    """

    def __init__(self, model: Any, level: Level = "edge"):
        check_supported(model)
        if level not in ("edge", "node"):
            raise ValueError(f"level must be 'edge' or 'node', got {level!r}")
        cfg = model.cfg
        self.level: Level = level
        self.n_layers: int = cfg.n_layers
        self.n_heads: int = cfg.n_heads
        self.attn_only: bool = bool(cfg.attn_only)
        self.shortformer: bool = cfg.positional_embedding_type == "shortformer"
        senders = [Sender("embed", "embed", -1), Sender("pos", "pos", -1)]
        groups: list[Group] = []
        n_slots = 0

        def add(kind: Any, layer: int, receivers: list[Receiver]) -> None:
            nonlocal n_slots
            groups.append(Group(kind, layer, len(senders), n_slots, tuple(receivers)))
            n_slots += len(receivers) * len(senders)

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
        self.sender_index = {s.name: i for i, s in enumerate(self.senders)}
        self.groups: tuple[Group, ...] = tuple(groups)
        self.receivers: tuple[Receiver, ...] = tuple(r for g in groups for r in g.receivers)
        self.slots: tuple[Edge, ...] = tuple(
            Edge(senders[s], r) for g in groups for r in g.receivers for s in range(g.n_senders)
        )
        exists = [
            not (self.shortformer and e.sender.kind == "pos" and e.receiver.kind not in "qk")
            for e in self.slots
        ]
        self.slot_exists: Bool[Tensor, " n_slots"] = torch.tensor(exists)
        self.edge_slot = self.slot_exists.nonzero().flatten()  # edge index -> slot index
        self.slot_sender = torch.tensor([self.sender_index[e.sender.name] for e in self.slots])
        self.all_edges: tuple[Edge, ...] = tuple(
            e for e, ok in zip(self.slots, exists, strict=False) if ok
        )
        if level == "edge":
            self.edges: tuple[Edge, ...] = self.all_edges
        else:
            everywhere = Receiver("*", "all", self.n_layers)
            self.edges = tuple(Edge(s, everywhere) for s in self.senders)
        self._index = {e.name: i for i, e in enumerate(self.edges)}

    @property
    def n_edges(self) -> int:
        """Units: edges at edge level, senders at node level."""
        return len(self.edges)

    @property
    def n_senders(self) -> int:
        return len(self.senders)

    @property
    def n_slots(self) -> int:
        return len(self.slots)

    @property
    def edge_names(self) -> list[str]:
        return [e.name for e in self.edges]

    def slot_patch(
        self, patch: Float[Tensor, "configs n_units"]
    ) -> Float[Tensor, "configs n_slots"]:
        """A patch over units as one over slots (zeros where no edge exists)."""
        if self.level == "node":
            idx = self.slot_sender.to(patch.device)
            return patch[:, idx] * self.slot_exists.to(patch.device, patch.dtype)
        out = patch.new_zeros(patch.shape[0], self.n_slots)
        out[:, self.edge_slot.to(patch.device)] = patch
        return out

    def group_units(self, gi: int) -> list[int]:
        """Edge-level units whose slot lies in group ``gi`` (in order)."""
        if self.level != "edge":
            raise ValueError("group_units is defined at edge level only")
        sl = self.groups[gi].slot_slice
        return [i for i, s in enumerate(self.edge_slot.tolist()) if sl.start <= s < sl.stop]

    def index(self, name: str) -> int:
        """Index of unit ``name``; ValueError if there is no such unit."""
        if name not in self._index:
            example = "'L0H1', 'MLP0', 'embed'" if self.level == "node" else "'L0H1->L1H0.k'"
            raise ValueError(f"no {self.level} {name!r} in this graph; names look like {example}")
        return self._index[name]

    def mask(self, names: Iterable[str]) -> Bool[Tensor, " n_edges"]:
        """A bool unit mask, True at the named units."""
        out = torch.zeros(self.n_edges, dtype=torch.bool)
        for name in names:
            out[self.index(name)] = True
        return out

    def names(self, mask: Tensor) -> list[str]:
        """The names of the units where a bool ``[n_edges]`` mask is True."""
        mask = self.check_mask(mask)
        return [self.edges[i].name for i in mask.nonzero().flatten().tolist()]

    def check_mask(self, mask: Any, name: str = "mask") -> Bool[Tensor, " n_edges"]:
        """Validates a bool ``[n_edges]`` unit mask (or a list of names) and returns it (CPU)."""
        if isinstance(mask, (list, tuple, set, frozenset)):
            return self.mask(mask)
        if not isinstance(mask, Tensor):
            raise TypeError(f"{name} must be a bool tensor or a list of {self.level} names")
        if mask.shape != (self.n_edges,):
            raise ValueError(f"{name} must have shape [{self.n_edges}], got {tuple(mask.shape)}")
        return mask.detach().cpu().bool()

    def edges_between(self, sender: str, receiver_node: str) -> list[str]:
        """Names of the edges from ``sender`` into any input of ``receiver_node`` (e.g. a head)."""
        return [
            e.name
            for e in self.all_edges
            if e.sender.name == sender and e.receiver.node == receiver_node
        ]

    def __repr__(self) -> str:
        return (
            f"Graph({len(self.senders)} senders, {len(self.receivers)} receivers, "
            f"{len(self.all_edges)} edges, level={self.level!r})"
        )
