"""A discovery problem: a model, its graph, a clean batch, what patches carry, and a metric."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuits.discovery.corruption import corrupt
from circuits.discovery.forward import SourceKind, run, source_outputs
from circuits.discovery.graph import Graph
from circuits.discovery.metrics import Metric, MetricName, kl_to_clean, logit_diff, masked_loss
from circuits.tasks import Batch

# Patched configs per forward: keeps one chunk's sender outputs to a few tens of MB.
_CHUNK_ELEMENTS = 12_000_000


@dataclass
class Problem:
    """Everything a discovery method needs; build one with :meth:`build`.

    Attributes:
        model: The model (eval mode, weights unchanged).
        graph: Its graph.
        batch: The clean batch (tokens, targets, mask of the positions the metric reads).
        corrupted: The corrupted tokens (None for zero and mean ablation).
        source: Sender outputs patched in ``[batch, pos, n_senders, d_model]``.
        metric: The task metric (loss or logit_diff on the masked positions).
        kl: KL to the clean run on the same positions (ACDC's metric).
    """

    model: Any
    graph: Graph
    batch: Batch
    corrupted: Tensor | None
    source: Float[Tensor, "batch pos n_senders d_model"]
    metric: Metric
    kl: Metric
    clean_logits: Tensor = field(repr=False)
    clean_outputs: Tensor = field(repr=False)

    @classmethod
    def build(
        cls,
        model: Any,
        batch: Batch,
        task: str = "induction",
        metric: MetricName = "loss",
        source: SourceKind = "corrupted",
        corrupted: Int[Tensor, "batch pos"] | None = None,
        seed: int = 0,
    ) -> Problem:
        """Builds a problem for ``batch`` of ``task``.

        Args:
            metric: ``"loss"`` or ``"logit_diff"`` on ``batch.mask`` positions (the task metric).
            source: What patched edges carry (see :func:`~circuits.discovery.source_outputs`).
            corrupted: Corrupted tokens; by default the task's registered corruption of
                ``batch`` (seeded by ``seed``).
        """
        graph = Graph(model)
        if metric not in ("loss", "logit_diff"):
            raise ValueError(f"the task metric must be 'loss' or 'logit_diff', got {metric!r}")
        if source == "corrupted" and corrupted is None:
            corrupted = corrupt(task, batch, model.cfg.d_vocab, seed)
        src = source_outputs(model, graph, source, batch.tokens, corrupted)
        with torch.no_grad():
            clean = run(model, graph, batch.tokens)
        make = masked_loss if metric == "loss" else logit_diff
        return cls(
            model,
            graph,
            batch,
            corrupted,
            src,
            make(batch.targets, batch.mask),
            kl_to_clean(clean.logits[0], batch.mask),
            clean.logits[0],
            clean.outputs[0],
        )

    @property
    def tokens(self) -> Tensor:
        return self.batch.tokens

    def chunk_size(self) -> int:
        b, p, s, d = self.source.shape
        return max(1, _CHUNK_ELEMENTS // (b * p * s * d))

    def evaluate(
        self, patch: Tensor, metric: Metric | None = None, start: int = 0
    ) -> Float[Tensor, " configs"]:
        """The metric of each patched variant ``patch [configs, n_edges]`` (no grad, chunked).

        With ``start``, no variant may patch an edge into a group before ``start``: the clean
        run's sender outputs up to that group are reused.
        """
        metric = metric or self.metric
        if patch.ndim == 1:
            patch = patch.unsqueeze(0)
        if start and bool(patch[:, : self.graph.groups[start].first_edge].any()):
            raise ValueError(f"patch touches edges before group {start}")
        prefix = self.clean_outputs if start else None
        out = []
        with torch.no_grad():
            for chunk in patch.split(self.chunk_size()):
                logits = run(
                    self.model,
                    self.graph,
                    self.tokens,
                    chunk.float(),
                    self.source,
                    start=start,
                    prefix=prefix,
                ).logits
                out.append(metric(logits))
        return torch.cat(out)

    def value(self, kept: Tensor | None = None, metric: Metric | None = None) -> float:
        """The metric with only the edges of bool ``kept [n_edges]`` left clean (None: all)."""
        if kept is None:
            kept = torch.ones(self.graph.n_edges, dtype=torch.bool)
        kept = self.graph.check_mask(kept, "kept")
        return float(self.evaluate((~kept).float(), metric)[0])
