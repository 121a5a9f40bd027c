"""Exact patching of every unit (edge or node), fast: ``M(unit patched) - M(clean)``.

Patching one edge changes one receiver's input, so the clean run is reused up to that
receiver's layer: only the one head (or MLP) it feeds is recomputed, for many edges at once (a
leading config axis), and from there on the model's own blocks run on one residual stream per
edge. The unembedding is applied only at the metric's rows, only at rows the patch changed, and
where the only change is one head's output (edges into an attention-only model's last layer,
head -> logits edges) through that head's ``d_head``-dimensional factor
(:class:`~circuits.discovery.readout.LowRank`). Scores equal one hooked forward per unit
(:func:`circuits.discovery.benchmark.naive_exact_patching`) to float error (tested).

Memory per chunk of configs: ``chunk x batch x pos x max(d_mlp, 4 d_model)`` activations plus
``chunk x n_heads x batch x pos^2`` attention and ``O(readout._CHUNK)`` logits; the clean run's
per-layer activations (``~8 x batch x pos x d_model`` per layer); the low-rank readout's
``n_rows x d_vocab`` base logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from circuits.analysis.resources import torch_threads
from circuits.discovery.metrics import Metric
from circuits.discovery.problem import Problem
from circuits.discovery.readout import LowRank, row_values, sparse_metric_values, supports_lowrank
from circuits.discovery.scores import EdgeScores

# Activation elements per chunk of configs (batch x pos x width per config).
_CHUNK_ELEMENTS = 8_000_000


@dataclass
class CleanCache:
    """The clean run, per layer, from the model's own hooks: residual streams before and
    after attention and after each block, every head's queries, keys, values and z, the
    source's z (what a patched head output carries), and the shortformer positions."""

    resid_pre: list[Tensor]
    resid_mid: list[Tensor]
    resid_post: list[Tensor]
    q: list[Tensor]
    k: list[Tensor]
    v: list[Tensor]
    z: list[Tensor]
    z_src: list[Tensor]
    pos: Tensor | None

    @classmethod
    def build(cls, problem: Problem) -> CleanCache:
        model, n = problem.model, problem.model.cfg.n_layers
        names = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post")
        attn = ("attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_z")

        def cached(tokens: Tensor, keep: tuple[str, ...]) -> dict[str, Tensor]:
            _, cache = model.run_with_cache(
                tokens,
                names_filter=lambda s: s.endswith(keep) or s == "hook_pos_embed",
                return_cache_object=False,
            )
            return cache

        with torch.no_grad():
            cache = cached(problem.tokens, names + attn)
            zs = [cache[f"blocks.{layer}.attn.hook_z"] for layer in range(n)]
            kind = problem.source_kind
            if kind in ("corrupted", "resampled"):
                other = problem.tokens.roll(1, 0) if kind == "resampled" else problem.corrupted
                assert other is not None
                src_cache = cached(other, ("attn.hook_z",))
                z_src = [src_cache[f"blocks.{layer}.attn.hook_z"] for layer in range(n)]
            elif kind == "mean":
                z_src = [z.mean(0, keepdim=True).expand_as(z) for z in zs]
            else:
                z_src = [torch.zeros_like(z) for z in zs]

        def get(name: str) -> list[Tensor]:
            return [cache[f"blocks.{layer}.{name}"] for layer in range(n)]

        mid = get("hook_resid_post") if model.cfg.attn_only else get("hook_resid_mid")
        pos = cache["hook_pos_embed"] if problem.graph.shortformer else None
        return cls(
            get("hook_resid_pre"),
            mid,
            get("hook_resid_post"),
            get("attn.hook_q"),
            get("attn.hook_k"),
            get("attn.hook_v"),
            zs,
            z_src,
            pos,
        )


class _Engine:
    """Patches units of one problem alone, many per call (see the module docstring)."""

    def __init__(self, problem: Problem, metric: Metric):
        self.problem, self.metric, self.model = problem, metric, problem.model
        self.cache = CleanCache.build(problem)
        self.delta = problem.clean_outputs - problem.source  # [b, p, s, d]
        self.clean_rows = metric.rows(problem.clean_resid)  # [n, d]
        n = self.clean_rows.shape[0]
        rows = torch.arange(n, device=self.clean_rows.device)
        self.clean_row_values = row_values(self.model, metric, self.clean_rows, rows)
        self.clean = float(self.clean_row_values.mean())
        # Senders whose patched output equals the clean one (positions under a corruption that
        # keeps them): patching them changes nothing, exactly.
        self.unchanged = (self.delta == 0).flatten(0, 1).all(-1).all(0).tolist()  # [s]
        self.lowrank = None
        self.clean_low = 0.0
        if supports_lowrank(self.model):
            self.lowrank = LowRank(self.model, metric, self.clean_rows, keep=2)
            last = self.model.cfg.n_layers - 1
            W_O = self.model.blocks[last].attn.W_O[0]
            zero = self.clean_rows.new_zeros(1, n, W_O.shape[0])
            self.clean_low = float(self.lowrank.values((last, 0), W_O, zero)[0])

    def full(self, out: Tensor) -> tuple[Tensor, float]:
        """Values of final residual streams ``out [c, b, p, d]`` and the clean value."""
        x = self.metric.rows(out)
        values = sparse_metric_values(
            self.model, self.metric, x, self.clean_rows, self.clean_row_values
        )
        return values, self.clean

    def low(self, layer: int, head: int, du: Tensor) -> tuple[Tensor, float] | None:
        """Values when the final stream moves by ``du [c, b, p, e] @ W_O[layer, head]``."""
        if self.lowrank is None:
            return None
        W_O = self.model.blocks[layer].attn.W_O[head]
        values = self.lowrank.values((layer, head), W_O, self.metric.rows(du))
        return values, self.clean_low

    def downstream(self, resid: Tensor, layer: int, mid: bool) -> Tensor:
        """Runs the model on ``resid [c, b, p, d]`` from layer ``layer`` (``mid``: after its
        attention, so its MLP first) to the end: the residual stream read by the logits."""
        model, cache = self.model, self.cache
        c, b, p, d = resid.shape
        if mid and not model.cfg.attn_only:
            block = model.blocks[layer]
            resid = resid + block.mlp(block.ln2(resid))
        start = layer + 1 if mid else layer
        if start >= model.cfg.n_layers:
            return resid
        pos = None if cache.pos is None else cache.pos.expand(c, b, p, d).reshape(c * b, p, d)
        out = model(
            resid.reshape(c * b, p, d),
            start_at_layer=start,
            stop_at_layer=model.cfg.n_layers,
            shortformer_pos_embed=pos,
        )
        return out.reshape(c, b, p, d)

    def head_z(self, layer: int, head: int, kind: int, x: Tensor) -> Tensor:
        """``z`` of one head ``[c, b, p, e]`` when its input ``kind`` (0 q, 1 k, 2 v) is ``x``
        ``[c, b, p, d]`` (after the norm and shortformer positions), the others clean."""
        attn, cache = self.model.blocks[layer].attn, self.cache
        W = (attn.W_Q, attn.W_K, attn.W_V)[kind][head]
        bias = (attn.b_Q, attn.b_K, attn.b_V)[kind][head]
        c, b = x.shape[:2]
        qkv = [
            t[layer][:, :, head].expand(c, *t[layer].shape[:2], -1)
            for t in (cache.q, cache.k, cache.v)
        ]
        qkv[kind] = x @ W + bias
        q, k, v = (t.reshape(c * b, 1, *t.shape[2:]) for t in qkv)  # [(c b), 1, p, e]
        z = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=1.0 / self.model.cfg.attn_scale
        )
        return z.reshape(c, b, *z.shape[2:])

    def node(self, s: int) -> tuple[Tensor, float]:
        """Sender ``s``'s output replaced wherever it is read."""
        graph, cache, model = self.problem.graph, self.cache, self.model
        sender = graph.senders[s]
        if self.unchanged[s]:
            return torch.full((1,), self.clean, dtype=torch.float64), self.clean
        D = self.delta[:, :, s][None]  # [1, b, p, d]
        last = (
            sender.kind == "head" and model.cfg.attn_only and sender.layer == model.cfg.n_layers - 1
        )
        if sender.kind == "head" and last and self.lowrank is not None:
            h, layer = sender.head, sender.layer
            assert h is not None
            du = cache.z_src[layer][:, :, h] - cache.z[layer][:, :, h]
            result = self.low(layer, h, du[None])
            assert result is not None
            return result
        if sender.kind == "pos" and graph.shortformer:
            _c, _b, _p, _d = D.shape
            assert cache.pos is not None
            out = model(
                cache.resid_pre[0],
                start_at_layer=0,
                stop_at_layer=model.cfg.n_layers,
                shortformer_pos_embed=cache.pos - D[0],
            )[None]
        elif sender.kind in ("embed", "pos"):
            out = self.downstream(cache.resid_pre[0] - D, 0, mid=False)
        elif sender.kind == "head":
            out = self.downstream(cache.resid_mid[sender.layer] - D, sender.layer, True)
        else:
            out = self.downstream(cache.resid_post[sender.layer] - D, sender.layer + 1, False)
        return self.full(out)

    def edges(self, units: list[int]) -> tuple[Tensor, float]:
        """Edges ``units``, all into one receiver, each patched alone."""
        graph, cache, model = self.problem.graph, self.cache, self.model
        edges = [graph.edges[u] for u in units]
        senders = [graph.sender_index[e.sender.name] for e in edges]
        if any(self.unchanged[s] for s in senders):
            values = torch.zeros(len(units), dtype=torch.float64)
            moved = [i for i, s in enumerate(senders) if not self.unchanged[s]]
            if moved:
                part, clean = self.edges([units[i] for i in moved])
                values[moved] = part.double().cpu() - clean
            return values, 0.0
        r = edges[0].receiver
        D = self.delta[:, :, senders].permute(2, 0, 1, 3)  # [c, b, p, d]
        if r.kind == "logits":
            heads = [e.sender for e in edges]
            if (
                self.lowrank is not None
                and all(s.kind == "head" for s in heads)
                and len({(s.layer, s.head) for s in heads}) == 1
            ):
                s = heads[0]
                assert s.head is not None
                du = cache.z_src[s.layer][:, :, s.head] - cache.z[s.layer][:, :, s.head]
                result = self.low(s.layer, s.head, du.expand(len(units), *du.shape))
                assert result is not None
                return result
            return self.full(self.problem.clean_resid - D)
        layer = r.layer
        block = model.blocks[layer]
        if r.kind == "mlp":
            new = block.mlp(block.ln2(cache.resid_mid[layer] - D))
            old = cache.resid_post[layer] - cache.resid_mid[layer]
            out = self.downstream(cache.resid_post[layer] + (new - old), layer + 1, False)
            return self.full(out)
        kind = "qkv".index(r.kind)
        is_pos = torch.tensor([graph.senders[s].kind == "pos" for s in senders], device=D.device)
        if graph.shortformer and bool(is_pos.any()):
            # Positions join after the norm: a pos edge moves the input by -D after ln1.
            pos_mask = is_pos[:, None, None, None]
            resid = cache.resid_pre[layer].expand_as(D)
            x = block.ln1(torch.where(pos_mask, resid, resid - D))
            x = x + cache.pos - torch.where(pos_mask, D, 0.0)
        else:
            x = block.ln1(cache.resid_pre[layer] - D)
            if graph.shortformer and kind < 2:
                x = x + cache.pos
        assert r.head is not None
        du = self.head_z(layer, r.head, kind, x) - cache.z[layer][:, :, r.head]
        if model.cfg.attn_only and layer == model.cfg.n_layers - 1:
            result = self.low(layer, r.head, du)
            if result is not None:
                return result
        out = self.downstream(cache.resid_mid[layer] + du @ block.attn.W_O[r.head], layer, True)
        return self.full(out)


def _batches(problem: Problem) -> list[list[int]]:
    """Edges grouped by receiver (and, into the logits, by sender) in chunks; nodes one by one."""
    graph = problem.graph
    if graph.level == "node":
        return [[u] for u in range(graph.n_edges)]
    b, p = problem.tokens.shape
    cfg = problem.model.cfg
    width = max(cfg.d_model * 4, (cfg.d_mlp or 0) + cfg.d_model, cfg.n_heads * p)
    per = max(1, _CHUNK_ELEMENTS // (b * p * width))
    groups: dict[tuple[int, int, str], list[int]] = {}
    for u, e in enumerate(graph.edges):
        # Ordered by (layer, head): the low-rank readout's factor is per head.
        r, s = e.receiver, e.sender
        if r.kind == "logits":
            key = (s.layer, -1 if s.head is None else s.head, "logits>" + s.name)
        else:
            key = (r.layer, -1 if r.head is None else r.head, r.name)
        groups.setdefault(key, []).append(u)
    return [ids[i : i + per] for _, ids in sorted(groups.items()) for i in range(0, len(ids), per)]


def exact_patching(
    problem: Problem,
    metric: Metric | None = None,
    *,
    threads: int | None = 1,
    progress: bool = False,
) -> EdgeScores:
    """Patches each unit (edge, or node at node level) alone: ``M(patched) - M(clean)``.

    Args:
        problem: The model, batch, source and metric.
        metric: Defaults to the problem's task metric (``problem.kl`` gives KL scores).
        threads: Torch threads while it runs (None: torch's setting); restored afterwards.
        progress: Show a progress bar over chunks.
    """
    metric = metric or problem.metric
    graph = problem.graph
    with torch_threads(threads), torch.no_grad():
        engine = _Engine(problem, metric)
        scores = torch.zeros(graph.n_edges, dtype=torch.float64)
        for units in tqdm(_batches(problem), disable=not progress, desc="exact patching"):
            if graph.level == "node":
                values, clean = engine.node(units[0])
            else:
                values, clean = engine.edges(units)
            scores[units] = values.double().cpu() - clean
    return EdgeScores(graph, scores.to(problem.model.W_E.dtype), "exact")
