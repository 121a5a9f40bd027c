"""A discovery problem: a model, its graph, a clean batch, what patches carry, and a metric."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuits.analysis.resources import torch_threads
from circuits.discovery.corruption import DEFAULT_METRICS, corrupt
from circuits.discovery.forward import SourceKind, run, source_outputs
from circuits.discovery.graph import Graph, Level
from circuits.discovery.metrics import Metric, kl_to_clean, logit_diff, masked_loss
from circuits.discovery.readout import final_norm, metric_values
from circuits.tasks import Batch
from circuits.validation import check_batch, check_int, check_tokens

# Elements of one chunk's sender outputs (configs x batch x pos x senders x d_model).
_CHUNK_ELEMENTS = 12_000_000


@dataclass(repr=False)
class Problem:
    """Everything a discovery method needs; build one with :meth:`build`.

    Attributes:
        model: The model (eval mode, weights unchanged).
        graph: Its graph (edge or node level).
        batch: The clean batch on the model's device (tokens, targets, mask of the positions
            the metric reads).
        corrupted: The corrupted tokens (None for zero and mean ablation).
        source: Sender outputs patched in ``[batch, pos, n_senders, d_model]``.
        metric: The task metric (loss or logit difference on the masked positions).
        kl: KL to the clean run on the same positions (ACDC's metric).
        clean_outputs: The clean run's sender outputs ``[batch, pos, n_senders, d_model]``.
        clean_resid: The clean residual stream read by the logits ``[batch, pos, d_model]``.
        task: The task name.
        source_kind: ``"corrupted"``, ``"mean"``, ``"zero"`` or ``"resampled"``.

    Memory: the clean and source sender outputs (``2 x batch x pos x n_senders x d_model``
    floats) and the clean log-probabilities at the metric's rows (``n_rows x d_vocab``).
    """

    model: Any
    graph: Graph
    batch: Batch
    corrupted: Tensor | None
    source: Float[Tensor, "batch pos n_senders d_model"]
    metric: Metric
    kl: Metric
    clean_outputs: Tensor = field(repr=False)
    clean_resid: Tensor = field(repr=False)
    task: str = "induction"
    source_kind: str = "corrupted"

    @classmethod
    def build(
        cls,
        model: Any,
        batch: Batch,
        task: str = "induction",
        metric: str | Metric | None = None,
        source: SourceKind = "corrupted",
        corrupted: Int[Tensor, "batch pos"] | None = None,
        seed: int = 0,
        level: Level = "edge",
        threads: int | None = 1,
    ) -> Problem:
        """Builds a problem for ``batch`` of ``task``.

        Args:
            model: A :class:`circuits.HookedTransformer` (see
                :func:`~circuits.discovery.graph.check_supported`); its dtype and device are
                used throughout.
            batch: A :class:`circuits.tasks.Batch` (not bare tokens).
            task: The task whose registered corruption and default metric apply.
            metric: ``"loss"``, ``"logit_diff"`` (minus the batch's ``wrong`` ids when it has
                them, e.g. IOI) or a :class:`Metric`; default: the task's registered one.
            source: What patched edges carry (see :func:`~circuits.discovery.source_outputs`).
            corrupted: Corrupted tokens; by default the task's registered corruption of
                ``batch`` (seeded by ``seed``).
            level: ``"edge"`` or ``"node"`` (see :class:`~circuits.discovery.Graph`).
            threads: Torch threads while building (None: torch's setting).
        """
        graph = Graph(model, level)
        cfg = model.cfg
        device = model.W_E.device
        batch = check_batch(batch, cfg.d_vocab, cfg.d_vocab_out, cfg.n_ctx, "batch")
        seed = check_int(seed, "seed")
        if not isinstance(task, str):
            raise TypeError(f"task must be a task name, got {type(task).__name__}")
        if source not in ("corrupted", "mean", "zero", "resampled"):
            raise ValueError(
                f"unknown source {source!r}; choose corrupted, mean, zero or resampled"
            )
        metric = DEFAULT_METRICS.get(task, "loss") if metric is None else metric
        if not isinstance(metric, Metric) and metric not in ("loss", "logit_diff"):
            raise ValueError(f"the task metric must be 'loss' or 'logit_diff', got {metric!r}")
        with torch_threads(threads):
            if source == "corrupted" and corrupted is None:
                corrupted = corrupt(task, batch, cfg.d_vocab, seed, model=model)
                try:
                    corrupted = check_tokens(corrupted, cfg.d_vocab, cfg.n_ctx, "corrupted")
                except ValueError as e:
                    raise ValueError(
                        f"the {task!r} corruption does not fit this model: {e}"
                    ) from None
            if corrupted is not None:
                corrupted = check_tokens(corrupted, cfg.d_vocab, cfg.n_ctx, "corrupted")
                if corrupted.shape != batch.tokens.shape:
                    raise ValueError(
                        f"corrupted tokens {tuple(corrupted.shape)} must match the batch's "
                        f"{tuple(batch.tokens.shape)}"
                    )
                corrupted = corrupted.to(device)
            batch = _to(batch, device)
            if isinstance(metric, Metric):
                task_metric = metric
            elif metric == "loss":
                task_metric = masked_loss(batch.targets, batch.mask)
            else:
                wrong = getattr(batch, "wrong", None)
                task_metric = logit_diff(batch.targets, batch.mask, wrong)
            src = source_outputs(model, graph, source, batch.tokens, corrupted)
            with torch.no_grad():
                clean = run(model, graph, batch.tokens, logits=False)
                rows = task_metric.rows(clean.resid[0])
                clean_rows = final_norm(model, rows) @ model.W_U + model.b_U
        return cls(
            model,
            graph,
            batch,
            corrupted,
            src,
            task_metric,
            kl_to_clean(clean_rows, batch.mask),
            clean.outputs[0],
            clean.resid[0],
            task,
            source,
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
        """The metric of each patched variant ``patch [configs, n_edges]`` (no grad, chunked;
        on the CPU).

        With ``start``, no variant may patch an edge into a group before ``start``: the clean
        run's sender outputs up to that group are reused (edge level only).
        """
        metric = metric or self.metric
        if patch.ndim == 1:
            patch = patch.unsqueeze(0)
        patch = patch.to(self.model.W_E.device, self.model.W_E.dtype)
        if start:
            first = self.graph.groups[start].first_slot
            if bool(self.graph.slot_patch(patch)[:, :first].ne(0).any()):
                raise ValueError(f"patch touches edges before group {start}")
        prefix = self.clean_outputs if start else None
        out = []
        with torch.no_grad():
            for chunk in patch.split(self.chunk_size()):
                resid = run(
                    self.model,
                    self.graph,
                    self.tokens,
                    chunk,
                    self.source,
                    start=start,
                    prefix=prefix,
                    logits=False,
                    keep_outputs=False,
                ).resid
                out.append(metric_values(self.model, metric, metric.rows(resid)))
        return torch.cat(out).cpu()

    def value(self, kept: Tensor | None = None, metric: Metric | None = None) -> float:
        """The metric with only the units of bool ``kept [n_edges]`` left clean (None: all)."""
        if kept is None:
            kept = torch.ones(self.graph.n_edges, dtype=torch.bool)
        kept = self.graph.check_mask(kept, "kept")
        return float(self.evaluate((~kept).float(), metric)[0])

    def __repr__(self) -> str:
        b, p = self.tokens.shape
        return (
            f"Problem(task={self.task!r}, batch={b}x{p}, metric={self.metric.name!r}, "
            f"{self.graph!r})"
        )


def _to(batch: Batch, device: torch.device) -> Batch:
    import dataclasses

    return dataclasses.replace(
        batch,
        tokens=batch.tokens.to(device),
        targets=batch.targets.to(device),
        mask=batch.mask.to(device),
        **(
            {"wrong": batch.wrong.to(device)}  # type: ignore[attr-defined]
            if getattr(batch, "wrong", None) is not None
            else {}
        ),
    )
