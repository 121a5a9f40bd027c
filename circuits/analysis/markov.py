"""In-context Markov chains: the estimators a model passes through and the head that computes
the last one (Edelman et al. 2024, "The evolution of statistical induction heads").

- :func:`unigram_estimator`, :func:`bigram_estimator`: the in-context strategies with add-one
  smoothing (the posterior means under a Dirichlet(1) prior; the bigram one is Bayes-optimal);
- :func:`kl_by_position`, :func:`strategy_kls`: KL(strategy || model) per position, for the
  uniform, unigram and bigram strategies and the true transition rows;
- :func:`phase`: the strategy the model is closest to (uniform -> unigram -> bigram);
- :func:`late_kls`: the late-position KLs and phase as training records them
  (``MarkovICLTask.evaluation_metrics``); :func:`phase_sequence` reads the phases back;
- :class:`PhaseTracker`: a training callback recording those KLs at every evaluation;
- the ``statistical_induction`` head score (registered): attention from each position to the
  positions that followed earlier copies of its token, what a statistical induction head does.

Definitions: ``/work/shared/reference/definitions.md`` ("In-context Markov chains").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from circuits.analysis.protocol import HookedModel, check_model
from circuits.analysis.scores import ScoreContext, register_score
from circuits.validation import check_int

__all__ = [
    "STRATEGIES",
    "PhaseTracker",
    "bigram_estimator",
    "kl_by_position",
    "late_kls",
    "phase",
    "phase_sequence",
    "statistical_induction_score",
    "strategy_kls",
    "unigram_estimator",
]

STRATEGIES = ("uniform", "unigram", "bigram")


def _check_tokens(tokens: Tensor, k: int) -> None:
    check_int(k, "k", 2)
    if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.is_floating_point():
        raise ValueError("tokens must be an integer tensor [batch, pos]")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= k):
        raise ValueError(f"tokens must be states in [0, k={k})")


def unigram_estimator(tokens: Int[Tensor, "batch pos"], k: int) -> Float[Tensor, "batch pos k"]:
    """``p(j) = (1 + #{s <= t: x_s = j}) / (t + 1 + k)`` at 0-based position ``t``."""
    _check_tokens(tokens, k)
    counts = F.one_hot(tokens, k).double().cumsum(1)
    t = torch.arange(tokens.shape[1], dtype=torch.float64)[None, :, None]
    return (1 + counts) / (t + 1 + k)


def bigram_estimator(tokens: Int[Tensor, "batch pos"], k: int) -> Float[Tensor, "batch pos k"]:
    """``p(j) = (1 + #{s < t: x_s = x_t, x_{s+1} = j}) / (k + #{s < t: x_s = x_t})``.

    Memory: ``O(batch pos k^2)`` (the running transition counts).
    """
    _check_tokens(tokens, k)
    onehot = F.one_hot(tokens, k).double()
    trans = torch.einsum("bsi,bsj->bsij", onehot[:, :-1], onehot[:, 1:])
    counts = torch.cat([torch.zeros_like(trans[:, :1]), trans.cumsum(1)], dim=1)
    rows = torch.einsum("bti,btij->btj", onehot, counts)
    return (1 + rows) / (k + rows.sum(-1, keepdim=True))


def kl_by_position(
    strategy: Float[Tensor, "batch pos k"], logits: Float[Tensor, "batch pos k"]
) -> Float[Tensor, " pos"]:
    """``KL(strategy || softmax(logits))`` per position, averaged over the batch (nats)."""
    if strategy.shape != logits.shape:
        raise ValueError(f"strategy {tuple(strategy.shape)} != logits {tuple(logits.shape)}")
    s = strategy.double()
    logq = F.log_softmax(logits.double(), -1)
    kl = (s * (torch.log(s.clamp(min=1e-300)) - logq)).where(s > 0, torch.zeros_like(s))
    return kl.sum(-1).mean(0)


@torch.no_grad()
def strategy_kls(
    model: HookedModel,
    tokens: Int[Tensor, "batch pos"],
    chains: Float[Tensor, "batch k k"],
) -> dict[str, Tensor]:
    """KL per position from each strategy and from the true next-state distribution
    (``"true"``) to the model's prediction: ``{name: [pos]}``."""
    check_model(model)
    k = chains.shape[-1]
    if chains.shape != (tokens.shape[0], k, k):
        raise ValueError(f"chains must be [batch, k, k] for tokens {tuple(tokens.shape)}")
    if model.cfg.d_vocab < k:
        raise ValueError(f"the model's d_vocab={model.cfg.d_vocab} is below k={k}")
    logits = model(tokens.to(model.W_E.device))[..., :k].cpu()
    b = torch.arange(tokens.shape[0])[:, None]
    truth = chains.double()[b, tokens]
    out = {
        "uniform": kl_by_position(torch.full_like(truth, 1.0 / k), logits),
        "unigram": kl_by_position(unigram_estimator(tokens, k), logits),
        "bigram": kl_by_position(bigram_estimator(tokens, k), logits),
        "true": kl_by_position(truth, logits),
    }
    return out


def phase(kls: dict[str, Any], positions: slice | None = None) -> str:
    """The strategy (``uniform``, ``unigram`` or ``bigram``) with the smallest KL, averaged over
    ``positions`` (default: the last quarter, where the strategies differ most)."""
    means = {}
    for name in STRATEGIES:
        v = torch.as_tensor(kls[name], dtype=torch.float64)
        sl = positions if positions is not None else slice(-max(1, v.shape[-1] // 4), None)
        means[name] = float(v[..., sl].mean())
    return min(means, key=means.__getitem__)


def _late(n_pos: int) -> slice:
    return slice(-max(1, n_pos // 4), None)


@torch.no_grad()
def late_kls(model: HookedModel, tokens: Int[Tensor, "batch pos"], k: int) -> dict[str, float]:
    """``kl_uniform``, ``kl_unigram``, ``kl_bigram``: mean ``KL(strategy || model)`` over the
    last quarter of positions (nats), and ``phase``: the index in :data:`STRATEGIES` of the
    closest one (a float, as records hold numbers). Needs no transition matrices: one forward
    of ``tokens``; memory ``O(batch pos k^2)`` (the bigram counts)."""
    check_model(model)
    _check_tokens(tokens, k)
    if model.cfg.d_vocab < k:
        raise ValueError(f"the model's d_vocab={model.cfg.d_vocab} is below k={k}")
    logits = model(tokens.to(model.W_E.device))[..., :k].cpu()
    tokens = tokens.cpu()
    late = _late(tokens.shape[1])
    strategies = {
        "uniform": torch.full(logits.shape, 1.0 / k, dtype=torch.float64),
        "unigram": unigram_estimator(tokens, k),
        "bigram": bigram_estimator(tokens, k),
    }
    out = {f"kl_{n}": float(kl_by_position(s, logits)[late].mean()) for n, s in strategies.items()}
    closest = min(STRATEGIES, key=lambda n: out[f"kl_{n}"])
    out["phase"] = float(STRATEGIES.index(closest))
    return out


def phase_sequence(records: Any) -> list[tuple[int, str]]:
    """``(first step, phase)`` of each run of equal phases in a history whose records hold the
    ``phase`` metric (:func:`late_kls`), in order: e.g. ``[(50, "uniform"), (100, "unigram"),
    (250, "bigram")]``. Records without it are skipped."""
    out: list[tuple[int, str]] = []
    for r in records:
        if "phase" not in r.metrics:
            continue
        name = STRATEGIES[int(r.metrics["phase"])]
        if not out or out[-1][1] != name:
            out.append((r.step, name))
    return out


@dataclass
class PhaseTracker:
    """A training callback (``train(..., callback=tracker)``) recording, at each evaluation,
    the mean KL over the last quarter of positions of each strategy and of the truth, on a
    fixed held-out batch of the task (``task.probe_chains``).

    Attributes:
        history: One dict per evaluation: ``step``, ``uniform``, ``unigram``, ``bigram``,
            ``true`` (nats) and ``phase``.
    """

    model: Any
    task: Any
    batch_size: int = 256
    history: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_model(self.model)
        check_int(self.batch_size, "batch_size", 1)
        if not hasattr(self.task, "probe_chains"):
            raise TypeError("PhaseTracker needs a Markov task (with probe_chains)")
        batch, self._chains = self.task.probe_chains(self.batch_size)
        self._tokens = batch.tokens

    def __call__(self, step: int, record: Any = None) -> None:
        was_training = getattr(self.model, "training", False)
        self.model.eval()  # type: ignore[attr-defined]
        kls = strategy_kls(self.model, self._tokens, self._chains)
        if was_training:
            self.model.train()  # type: ignore[attr-defined]
        late = _late(self._tokens.shape[1])
        row: dict[str, Any] = {"step": int(step)}
        row.update({name: float(v[late].mean()) for name, v in kls.items()})
        row["phase"] = phase(kls)
        self.history.append(row)


def statistical_induction_mask(tokens: Int[Tensor, "batch pos"]) -> Tensor:
    """Bool ``[batch, query, key]``: key ``s + 1`` followed an earlier copy ``x_s = x_query``
    (``s + 1 <= query``)."""
    prev = tokens[:, None, :-1] == tokens[:, :, None]  # [batch, query, s]
    mask = torch.zeros(*tokens.shape, tokens.shape[1], dtype=torch.bool, device=tokens.device)
    mask[:, :, 1:] = prev
    causal = torch.ones(tokens.shape[1], tokens.shape[1], dtype=torch.bool, device=tokens.device)
    return mask & causal.tril()


def statistical_induction_score(ctx: ScoreContext) -> Float[Tensor, "n_layers n_heads"]:
    """Attention mass each head puts on the tokens that followed earlier copies of the current
    token, averaged over the queries that have any (1: a perfect statistical induction head;
    uniform attention scores the fraction of such keys, about ``1 / k``)."""
    mask = statistical_induction_mask(ctx.tokens)  # [batch, q, k]
    has = mask.any(-1)  # [batch, q]
    mass = (ctx.patterns * mask[None, :, None].to(ctx.patterns.dtype)).sum(-1)
    weight = has[None, :, None].to(mass.dtype)
    return (mass * weight).sum((1, 3)) / weight.sum((1, 3)).clamp(min=1)


register_score(
    "statistical_induction",
    statistical_induction_score,
    label="statistical induction",
    min_layer=1,
    track=False,
    description="attention to the tokens that followed earlier copies of the current token",
)
