"""The registry of head scores: one definition per score, everything else derived from it.

A head score maps a model's run on a probe batch to ``[n_layers, n_heads]`` numbers ("how much
is each head a previous-token head?"). Each is registered once, with what it needs and how to
read it::

    from circuits.analysis.scores import register_score

    register_score(
        "last_token",
        lambda ctx: ctx.patterns[..., -1, -1].mean(1),  # attention of the last query to itself
        label="last-token",
    )

From the registry come :data:`~circuits.analysis.head_scores.KINDS`,
:func:`~circuits.analysis.head_scores.head_scores`, ``find_heads``, ``evaluate``, the training
history and targets (``TrainConfig(targets={"last_token": 0.5})``), the training-dynamics
figure, the report and the CLI: a new score needs no other edit.

A score function receives a :class:`ScoreContext` (the model, the probe, the cache of one run
on the probe and the stacked attention patterns) and returns ``[n_layers, n_heads]``. The
context's cache holds the hooks every selected score asked for (``hooks``), so one forward pass
serves them all.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.analysis.protocol import HookedModel, check_model
from circuits.analysis.resources import CHUNK_BYTES
from circuits.registry import Registry
from circuits.validation import check_cache, check_int

Direction = Literal["higher", "lower"]
ProbeKind = Literal["any", "repeated"]
ScoreFn = Callable[["ScoreContext"], Tensor]
PATTERN_HOOK = "attn.hook_pattern"


@dataclass(frozen=True)
class ScoreContext:
    """What a score function reads: one run of ``model`` on ``probe``.

    Attributes:
        model: The model (see :class:`~circuits.analysis.protocol.HookedModel`).
        probe: The probe batch (``tokens``, ``targets``, ``mask``, ``repeat_length``).
        cache: The run's activations (an ``ActivationCache``), holding at least the hooks the
            scores being computed declared.
        given_logits: The run's output ``[batch, pos, d_vocab_out]`` if the caller has it;
            else :attr:`logits` computes it on first use (the built-in scores never do: a
            large vocabulary's full output is what they avoid).
        chunk_bytes: Working-set budget of chunked loops over the vocabulary
            (:mod:`circuits.analysis.resources`).
        memo: Scratch space shared by the scores of one run (two scores computed from one
            intermediate keep it here).
        given_patterns: The stacked attention patterns if the caller has them (then
            :attr:`patterns` returns them and the cache is not read: the batched trainer gives
            many models' layers stacked, for ``layerwise`` scores).
    """

    model: HookedModel
    probe: Any
    cache: Any
    given_logits: Tensor | None = field(default=None, repr=False)
    chunk_bytes: int = CHUNK_BYTES
    memo: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    given_patterns: Tensor | None = field(default=None, repr=False)

    @functools.cached_property
    def logits(self) -> Float[Tensor, "batch pos d_vocab_out"]:
        """The run's output: given, or one more forward pass (``O(batch pos d_vocab_out)``)."""
        if self.given_logits is not None:
            return self.given_logits
        with torch.no_grad():
            out: Tensor = self.model(self.probe.tokens)
        return out

    @functools.cached_property
    def patterns(self) -> Float[Tensor, "n_layers batch n_heads query_pos key_pos"]:
        """Every layer's attention pattern, stacked (given, or from the cache)."""
        if self.given_patterns is not None:
            return self.given_patterns
        return stack_patterns(self.model, self.cache)

    @property
    def tokens(self) -> Tensor:
        return self.probe.tokens

    @property
    def repeat_length(self) -> int:
        """The probe's repeat length (scores registered with ``probe="repeated"`` only)."""
        if self.probe.repeat_length is None:
            raise ValueError("this score needs a repeated-tokens probe (repeat_length set)")
        return int(self.probe.repeat_length)


def stack_patterns(model: HookedModel, cache: Any) -> Tensor:
    """``[n_layers, batch, n_heads, query_pos, key_pos]`` from a cache.

    TransformerLens's ``ActivationCache.stack_activation("pattern")`` where the cache is one
    (tested to agree), else the hooks stacked by hand (a plain dict cache).
    """
    check_model(model)
    n_layers = model.cfg.n_layers
    names = [f"blocks.{layer}.{PATTERN_HOOK}" for layer in range(n_layers)]
    check_cache(model, None, cache, names)
    if hasattr(cache, "stack_activation") and getattr(cache, "model", None) is not None:
        return cache.stack_activation("pattern", layer=n_layers)
    return torch.stack([cache[n] for n in names])


@dataclass(frozen=True)
class HeadScore:
    """One registered head score (see the module doc).

    Attributes:
        name: Key in score dicts, histories, targets and the CLI (``"induction"``).
        fn: ``fn(ctx: ScoreContext) -> [n_layers, n_heads]``.
        label: Human name for figures and the report (``"induction"``, ``"previous-token"``).
        probe: ``"any"`` (any task's probe) or ``"repeated"`` (needs a repeated-random-tokens
            probe, ``repeat_length`` set; skipped on probes without one).
        hooks: Hook-name suffixes the function reads from the cache (the attention pattern by
            default); ``evaluate`` caches only the union of what the selected scores need.
        min_layer: Layers before this do not count for targets, "top head" summaries and
            :func:`find_heads` (induction needs composition: it counts from layer 1).
        direction: ``"higher"`` (a larger score means more of the behaviour) or ``"lower"``.
        bounds: The score's range, if bounded (targets are checked against it).
        track: Record it in training histories by default (cheap scores); a score named in
            training targets is always recorded.
        description: One line for the report and ``--help``.
        layerwise: The function reads only ``ctx.patterns`` (and ``ctx.repeat_length``) and
            computes each layer's row from that layer's patterns alone. Then many models' runs
            can be scored in one call, their layers stacked along the layer axis (the batched
            trainer's evaluation does); False (the default) for anything else.
    """

    name: str
    fn: ScoreFn = field(repr=False)
    label: str = ""
    probe: ProbeKind = "any"
    hooks: tuple[str, ...] = (PATTERN_HOOK,)
    min_layer: int = 0
    direction: Direction = "higher"
    bounds: tuple[float, float] | None = (0.0, 1.0)
    track: bool = True
    description: str = ""
    layerwise: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"score name must be an identifier, got {self.name!r}")
        if self.name in RESERVED:
            raise ValueError(f"score name {self.name!r} is reserved (record field)")
        if not callable(self.fn):
            raise TypeError(f"score {self.name!r}: fn must be callable, got {self.fn!r}")
        if self.probe not in ("any", "repeated"):
            raise ValueError(f"score {self.name!r}: probe must be 'any' or 'repeated'")
        if self.direction not in ("higher", "lower"):
            raise ValueError(f"score {self.name!r}: direction must be 'higher' or 'lower'")
        check_int(self.min_layer, "min_layer", 0)
        if isinstance(self.hooks, str) or not all(isinstance(h, str) for h in self.hooks):
            raise TypeError(f"score {self.name!r}: hooks must be a tuple of hook-name suffixes")
        object.__setattr__(self, "hooks", tuple(self.hooks))
        if self.bounds is not None:
            lo, hi = (float(b) for b in self.bounds)
            if not lo < hi:
                raise ValueError(f"score {self.name!r}: bounds {self.bounds} must be (low, high)")
            object.__setattr__(self, "bounds", (lo, hi))
        if not self.label:
            object.__setattr__(self, "label", self.name.replace("_", "-"))

    def counted(self, scores: Tensor) -> Tensor:
        """The layers that count (``scores[min_layer:]``); empty if the model is too shallow."""
        return scores[self.min_layer :]

    def best(self, scores: Tensor | Any) -> float | None:
        """The best value over counted heads (max, or min for ``direction="lower"``).

        None when no head counts (e.g. induction in a 1-layer model).
        """
        counted = self.counted(torch.as_tensor(scores))
        if counted.numel() == 0:
            return None
        return float(counted.max() if self.direction == "higher" else counted.min())

    def top_head(self, scores: Tensor) -> tuple[int, int] | None:
        """``(layer, head)`` of the best counted head, or None if none counts."""
        counted = self.counted(torch.as_tensor(scores))
        if counted.numel() == 0:
            return None
        flat = counted.flatten()
        i = int(flat.argmax() if self.direction == "higher" else flat.argmin())
        return self.min_layer + i // counted.shape[1], i % counted.shape[1]

    def met(self, scores: Tensor | Any, threshold: float) -> bool:
        """Whether the best counted head reaches ``threshold`` (in this score's direction)."""
        best = self.best(scores)
        if best is None:
            return False
        return best >= threshold if self.direction == "higher" else best <= threshold

    def check_threshold(self, threshold: object) -> float:
        """``threshold`` as a float, checked to be a finite number within :attr:`bounds`."""
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise TypeError(f"target for {self.name!r} must be a number, got {threshold!r}")
        if not math.isfinite(threshold):
            raise ValueError(f"target for {self.name!r} must be finite, got {threshold}")
        if self.bounds is not None and not self.bounds[0] <= threshold <= self.bounds[1]:
            lo, hi = self.bounds
            raise ValueError(f"target for {self.name!r} must be in [{lo}, {hi}], got {threshold}")
        return float(threshold)


# Field names of an evaluation record: no score may take them.
RESERVED = frozenset({"step", "loss", "accuracy", "train_loss", "seconds", "scores"})

_REGISTRY: Registry[HeadScore] = Registry("head score")


def register_score(
    name: str,
    fn: ScoreFn,
    *,
    label: str = "",
    probe: ProbeKind = "any",
    hooks: Iterable[str] = (PATTERN_HOOK,),
    min_layer: int = 0,
    direction: Direction = "higher",
    bounds: tuple[float, float] | None = (0.0, 1.0),
    track: bool = True,
    description: str = "",
    replace: bool = False,
    layerwise: bool = False,
) -> HeadScore:
    """Registers a head score (see :class:`HeadScore` for the fields) and returns it.

    Raises:
        ValueError: ``name`` is taken (pass ``replace=True`` to redefine it) or a field is bad.
    """
    spec = HeadScore(
        name,
        fn,
        label,
        probe,
        tuple(hooks),
        min_layer,
        direction,
        bounds,
        track,
        description,
        layerwise,
    )
    return _REGISTRY.add(name, spec, replace=replace)


def unregister_score(name: str) -> None:
    """Removes a registered score (tests; built-in scores can be removed too)."""
    _REGISTRY.remove(name)


def get_score(name: str) -> HeadScore:
    """The registered score ``name``.

    Raises:
        ValueError: No such score (the message lists the registered ones).
    """
    return _REGISTRY.lookup(name)


def registered_scores() -> tuple[HeadScore, ...]:
    """Every registered score, in registration order (built-ins first)."""
    return tuple(_REGISTRY.values())


def score_names(tracked: bool = False) -> tuple[str, ...]:
    """Names of registered scores (only those tracked in training by default, if ``tracked``)."""
    return tuple(s.name for s in _REGISTRY.values() if s.track or not tracked)


def applicable(names: Iterable[str], probe: Any) -> tuple[HeadScore, ...]:
    """The scores among ``names`` that ``probe`` supports (repeated-probe scores need
    ``probe.repeat_length``)."""
    specs = [get_score(n) for n in names]
    has_repeat = getattr(probe, "repeat_length", None) is not None
    return tuple(s for s in specs if s.probe == "any" or has_repeat)


def hooks_filter(specs: Iterable[HeadScore]) -> Callable[[str], bool]:
    """A ``names_filter`` for ``run_with_cache`` keeping the hooks ``specs`` need."""
    suffixes = tuple({h for s in specs for h in s.hooks})
    return lambda name: name.endswith(suffixes)


def compute_scores(
    model: HookedModel,
    probe: Any,
    names: Iterable[str],
    *,
    cache: Any,
    logits: Tensor | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> dict[str, Tensor]:
    """Runs the score functions ``names`` on one cached run of ``model`` on ``probe``.

    Each result is checked: ``[n_layers, n_heads]``, finite. ``logits`` (the run's output) is
    optional: a score that reads it gets it computed once (:attr:`ScoreContext.logits`).

    Raises:
        ValueError: A score returned the wrong shape or a non-finite value.
    """
    check_model(model)
    ctx = ScoreContext(model, probe, cache, logits, chunk_bytes)
    shape = (model.cfg.n_layers, model.cfg.n_heads)
    out: dict[str, Tensor] = {}
    for name in names:
        spec = get_score(name)
        with torch.no_grad():
            value = spec.fn(ctx)
        if not isinstance(value, Tensor) or tuple(value.shape) != shape:
            got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"score {name!r} returned {got}, not [n_layers, n_heads] = {shape}")
        value = value.detach().float().cpu()
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"score {name!r} returned NaN or inf")
        out[name] = value
    return out


def scores_mapping(scores: Mapping[str, Any]) -> dict[str, Tensor]:
    """Scores as ``{name: float tensor}`` (from tensors or the nested lists of JSON)."""
    return {k: torch.as_tensor(v, dtype=torch.float32) for k, v in scores.items()}
