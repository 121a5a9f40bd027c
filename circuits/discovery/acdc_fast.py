"""ACDC's tests of edges into the logits (from heads) and into an attention-only model's last
layer, through the low-rank readout against ACDC's current state.

ACDC visits receivers from the output backwards, so while it tests these edges every head's
output is the clean one except the last layer's heads whose inputs it has already patched, and
the residual stream read by the logits differs from the current state's by one head's output
change: ``u @ W_O[h]``, ``u`` of size ``d_head``. :class:`~circuits.discovery.readout.LowRank`
scores that at ``d_head x d_vocab`` per row instead of ``d_model x d_vocab``, and an accepted
removal moves its base at the same rank. Other edges go through the general engine.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from circuits.discovery.exact import CleanCache
from circuits.discovery.graph import Edge
from circuits.discovery.metrics import Metric
from circuits.discovery.problem import Problem
from circuits.discovery.readout import LowRank, supports_lowrank


class LastLayer:
    """The low-rank state of one ACDC run (see the module docstring)."""

    @staticmethod
    def applies(problem: Problem) -> bool:
        cfg = problem.model.cfg
        return problem.graph.level == "edge" and cfg.attn_only and supports_lowrank(problem.model)

    def __init__(self, problem: Problem, metric: Metric):
        self.problem, self.metric, self.model = problem, metric, problem.model
        self.layer = self.model.cfg.n_layers - 1
        with torch.no_grad():
            self.cache = CleanCache.build(problem)
            self.low = LowRank(self.model, metric, metric.rows(problem.clean_resid), keep=2)
        self.z = {h: self.cache.z[self.layer][:, :, h] for h in range(self.model.cfg.n_heads)}
        self.delta = problem.clean_outputs - problem.source
        graph = problem.graph
        self.into: dict[str, list[tuple[int, int]]] = {}  # receiver -> [(unit, sender)]
        for u, e in enumerate(graph.edges):
            if e.receiver.layer == self.layer and e.receiver.kind in ("q", "k", "v"):
                self.into.setdefault(e.receiver.name, []).append(
                    (u, graph.sender_index[e.sender.name])
                )

    def clean_value(self) -> float:
        """The metric of the current state (no change yet) through the same readout."""
        W = self.model.blocks[self.layer].attn.W_O[0]
        rows = self.metric.rows(self.problem.clean_resid)
        with torch.no_grad():
            zero = rows.new_zeros(1, rows.shape[0], W.shape[0])
            return float(self.low.values((self.layer, 0), W, zero)[0])

    def in_scope(self, edge: Edge) -> bool:
        """Whether ``edge`` is in a group this state follows (the logits, the last layer)."""
        r = edge.receiver
        return r.kind == "logits" or (r.layer == self.layer and r.kind in ("q", "k", "v"))

    def handles(self, edge: Edge) -> bool:
        """Whether :meth:`test` scores ``edge`` (in scope, and not an embedding -> logits edge,
        which moves the state at full rank: the general engine tests it, then :meth:`reset`)."""
        return self.in_scope(edge) and (
            edge.receiver.kind != "logits" or edge.sender.kind == "head"
        )

    def reset(self, patched: Tensor, start: int) -> None:
        """Rebuilds the readout's base from the general engine's run of ``patched``."""
        from circuits.discovery.forward import run

        p = self.problem
        with torch.no_grad():
            resid = run(
                self.model,
                p.graph,
                p.tokens,
                patched.float()[None],
                p.source,
                start=start,
                prefix=p.clean_outputs,
                logits=False,
                keep_outputs=False,
            ).resid[0]
            self.low = LowRank(self.model, self.metric, self.metric.rows(resid), keep=2)

    def _z(self, head: int, patched: Tensor) -> Tensor:
        """Head ``head``'s z ``[b, p, e]`` with the patched edges into its q, k, v."""
        block = self.model.blocks[self.layer]
        attn, cache, graph = block.attn, self.cache, self.problem.graph
        qkv = []
        for j, (kind, W, b) in enumerate(
            (("q", attn.W_Q, attn.b_Q), ("k", attn.W_K, attn.b_K), ("v", attn.W_V, attn.b_V))
        ):
            edges = self.into.get(f"L{self.layer}H{head}.{kind}", [])
            on = [s for u, s in edges if bool(patched[u])]
            if not on:
                qkv.append((cache.q, cache.k, cache.v)[j][self.layer][:, :, head])
                continue
            pos_on = graph.shortformer and 1 in on
            rest = [s for s in on if not (graph.shortformer and s == 1)]
            x = cache.resid_pre[self.layer]
            if rest:
                x = x - self.delta[:, :, rest].sum(-2)
            x = block.ln1(x)
            if graph.shortformer and j < 2:
                assert cache.pos is not None
                x = x + cache.pos - (self.delta[:, :, 1] if pos_on else 0.0)
            qkv.append(x @ W[head] + b[head])
        q, k, v = (t[:, None] for t in qkv)  # [b, 1, p, e]
        z = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=1.0 / self.model.cfg.attn_scale
        )
        return z[:, 0]

    def test(self, unit: int, patched: Tensor) -> tuple[float, tuple]:
        """The metric with ``patched`` (which includes ``unit``), and how to accept it."""
        e = self.problem.graph.edges[unit]
        rows, cache = self.metric.rows, self.cache
        with torch.no_grad():
            if e.receiver.kind == "logits":
                s = e.sender
                assert s.head is not None
                u = rows(cache.z_src[s.layer][:, :, s.head] - cache.z[s.layer][:, :, s.head])
                key, head, z_new = (s.layer, s.head), None, None
            else:
                head = e.receiver.head
                assert head is not None
                z_new = self._z(head, patched)
                u = rows(z_new - self.z[head])
                key = (self.layer, head)
            W = self.model.blocks[key[0]].attn.W_O[key[1]]
            value = float(self.low.values(key, W, u[None])[0])
        return value, (key, W, u, head, z_new)

    def accept(self, how: tuple) -> None:
        key, W, u, head, z_new = how
        with torch.no_grad():
            self.low.shift(key, W, u)
        if head is not None:
            self.z[head] = z_new
