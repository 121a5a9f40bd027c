"""Interventions during training: clamp, zero, freeze or ablate parts of a model while it trains.

The causal study of how a circuit forms (Singh et al. 2024, "What needs to go right for an
induction head?", arXiv 2404.07129) overwrites chosen activations with their ideal values on
every forward pass, in training and evaluation, so that the clamped part gets no gradient and
the rest trains against a perfect upstream. ``TrainConfig(interventions=[...])`` does this:

- :class:`ClampPattern`: a head's attention pattern set to an oracle (``"previous"``: each query
  attends to the token before it, position 0 to itself) or to a fixed ``[pos, pos]`` pattern;
- :class:`ClampOutput`: a head's output ``z`` (``hook_z``, ``[d_head]``) set to a fixed vector;
- :class:`Ablate`: a head's ``z`` or an MLP's output set to zero (the head then contributes
  nothing: the logits are those of the model with its ``W_O`` zeroed);
- :class:`Freeze`: parameters matched by name (``fnmatch``, e.g. ``"blocks.0.*"``) not updated.

Each acts for a range of steps ``[start, stop)`` (``stop=None``: to the end), counted as steps
already taken (0 is the first step); an evaluation sees the interventions of the step it
follows. Clamps and ablations are plain torch forward hooks on the model's hook points, so the
fast path steps aside only for the blocks they touch; freezing sets ``requires_grad`` off, so
AdamW skips the parameter entirely (no weight decay either). Everything is removed when
training ends. Each intervention round-trips through :meth:`Intervention.to_dict` /
:func:`intervention_from_dict`, so a training checkpoint's ``train_config`` records them and a
resume re-applies them. :mod:`circuits.training.intervention_plan` attaches them to a model
(and checks them against it before training).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.names import head_name, parse_head_name
from circuits.validation import check_fields, check_int, check_layer_head, is_number

__all__ = [
    "Ablate",
    "ClampOutput",
    "ClampPattern",
    "Freeze",
    "Intervention",
    "intervention_from_dict",
    "interventions_from",
    "parse_flag",
    "previous_token_pattern",
]

Hook = tuple[str, Callable[[Tensor], Tensor]]  # (hook point name, output -> new output)
_TOL = 1e-5  # rows of a fixed pattern must sum to 1 within this (float32 JSON round-trips)
_MLP = re.compile(r"L(\d+)MLP")


def previous_token_pattern(
    n_pos: int, dtype: torch.dtype = torch.float32, device: Any = None
) -> Float[Tensor, "query_pos key_pos"]:
    """The ideal previous-token pattern ``A[i, i-1] = 1``, ``A[0, 0] = 1`` (Singh et al.'s
    ``opto_prev_token_heads``), ``[n_pos, n_pos]``."""
    check_int(n_pos, "n_pos", 1)
    pattern = torch.zeros(n_pos, n_pos, dtype=dtype, device=device)
    rows = torch.arange(n_pos, device=device)
    pattern[rows, (rows - 1).clamp(min=0)] = 1.0
    return pattern


@dataclass(frozen=True, kw_only=True)
class Intervention:
    """A change to the model for steps ``[start, stop)`` of a run (``stop=None``: to the end)."""

    start: int = 0
    stop: int | None = None
    kind: ClassVar[str] = ""

    def __post_init__(self) -> None:
        check_int(self.start, "start", 0)
        if self.stop is not None:
            check_int(self.stop, "stop", 0)
            if self.stop <= self.start:
                raise ValueError(f"{self.kind}: empty step range {self.start}:{self.stop}")

    def active(self, step: int) -> bool:
        """Whether it acts on step ``step`` (steps already taken; 0 is the first)."""
        return self.start <= step and (self.stop is None or step < self.stop)

    def check(self, model: Any, n_pos: int) -> None:
        """Raises ValueError if it names a layer, head or parameter ``model`` lacks."""

    def hooks(self, model: Any) -> list[Hook]:
        """The forward hooks that implement it (none for :class:`Freeze`)."""
        return []

    def parameters(self, model: Any) -> list[str]:
        """Names of the parameters it freezes (only :class:`Freeze` has any)."""
        return []

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"kind": ..., field: value, ...}``."""
        return {"kind": self.kind, **dataclasses.asdict(self)}


def _check_head(model: Any, layer: int, head: int, what: str) -> None:
    try:
        check_layer_head(layer, head, model.cfg.n_layers, model.cfg.n_heads)
    except ValueError as e:
        raise ValueError(
            f"{what} names head {head_name(layer, head)}, not in the model: {e}"
        ) from e


def _set_head(out: Tensor, head: int, dim: int, value: Tensor) -> Tensor:
    """``out`` with head ``head`` (along ``dim``) replaced by ``value``: a new tensor, so the
    head's own computation gets no gradient while the other heads' does."""
    new = out.clone()
    new.select(dim, head).copy_(value.expand_as(new.select(dim, head)))
    return new


@dataclass(frozen=True, kw_only=True)
class ClampPattern(Intervention):
    """Head ``L{layer}H{head}``'s attention pattern set to ``pattern``: ``"previous"`` (see
    :func:`previous_token_pattern`) or a fixed ``[pos, pos]`` list of rows (non-negative, each
    summing to 1, no weight on later positions), at least as long as the task's sequences."""

    layer: int
    head: int
    pattern: str | tuple[tuple[float, ...], ...] = "previous"
    kind: ClassVar[str] = "clamp_pattern"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(self.layer, "layer", 0)
        check_int(self.head, "head", 0)
        if isinstance(self.pattern, str):
            if self.pattern != "previous":
                raise ValueError(
                    f"clamp_pattern: pattern must be 'previous' or a list of rows, "
                    f"got {self.pattern!r}"
                )
            return
        rows = self.pattern
        if not isinstance(rows, Sequence) or not all(isinstance(r, Sequence) for r in rows):
            raise TypeError(f"clamp_pattern: pattern must be a list of rows, got {rows!r:.80}")
        n = len(rows)
        if n == 0 or any(len(r) != n for r in rows):
            raise ValueError(f"clamp_pattern: pattern must be square [pos, pos], got {n} rows")
        if not all(is_number(v) and math.isfinite(v) and v >= 0 for r in rows for v in r):
            raise ValueError("clamp_pattern: pattern entries must be finite and >= 0")
        for i, row in enumerate(rows):
            if any(v != 0 for v in row[i + 1 :]):
                raise ValueError(f"clamp_pattern: row {i} attends to later positions")
            if abs(math.fsum(row) - 1) > _TOL:
                raise ValueError(f"clamp_pattern: row {i} sums to {math.fsum(row)}, not 1")
        object.__setattr__(self, "pattern", tuple(tuple(float(v) for v in r) for r in rows))

    def check(self, model: Any, n_pos: int) -> None:
        _check_head(model, self.layer, self.head, self.kind)
        if not isinstance(self.pattern, str) and len(self.pattern) < n_pos:
            raise ValueError(
                f"clamp_pattern: the pattern covers {len(self.pattern)} positions; the task's "
                f"sequences have {n_pos}"
            )

    def hooks(self, model: Any) -> list[Hook]:
        fixed = None if isinstance(self.pattern, str) else torch.tensor(self.pattern)
        cache: dict[tuple[Any, ...], Tensor] = {}

        def clamp(
            pattern: Float[Tensor, "batch head query_pos key_pos"],
        ) -> Float[Tensor, "batch head query_pos key_pos"]:
            q, k = pattern.shape[-2:]
            key = (q, k, pattern.dtype, pattern.device)
            if key not in cache:
                full = previous_token_pattern(k) if fixed is None else fixed
                cache[key] = full[:q, :k].to(pattern.dtype).to(pattern.device)
            return _set_head(pattern, self.head, 1, cache[key])

        return [(f"blocks.{self.layer}.attn.hook_pattern", clamp)]

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        if not isinstance(self.pattern, str):
            d["pattern"] = [list(r) for r in self.pattern]
        return d


@dataclass(frozen=True, kw_only=True)
class ClampOutput(Intervention):
    """Head ``L{layer}H{head}``'s output ``z`` (``hook_z``) set to ``value`` (``[d_head]``) at
    every position. Its ``W_O`` still trains; freeze it too for a fixed contribution."""

    layer: int
    head: int
    value: tuple[float, ...]
    kind: ClassVar[str] = "clamp_output"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(self.layer, "layer", 0)
        check_int(self.head, "head", 0)
        if isinstance(self.value, str) or not isinstance(self.value, Sequence):
            raise TypeError(f"clamp_output: value must be a list of floats, got {self.value!r}")
        if not all(is_number(v) and math.isfinite(v) for v in self.value):
            raise ValueError("clamp_output: value entries must be finite numbers")
        object.__setattr__(self, "value", tuple(float(v) for v in self.value))

    def check(self, model: Any, n_pos: int) -> None:
        _check_head(model, self.layer, self.head, self.kind)
        if len(self.value) != model.cfg.d_head:
            raise ValueError(
                f"clamp_output: value has {len(self.value)} entries; d_head is {model.cfg.d_head}"
            )

    def hooks(self, model: Any) -> list[Hook]:
        vector = torch.tensor(self.value)

        def clamp(
            z: Float[Tensor, "batch pos head d_head"],
        ) -> Float[Tensor, "batch pos head d_head"]:
            return _set_head(z, self.head, 2, vector.to(z.dtype).to(z.device))

        return [(f"blocks.{self.layer}.attn.hook_z", clamp)]

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "value": list(self.value)}


@dataclass(frozen=True, kw_only=True)
class Ablate(Intervention):
    """``component`` zero-ablated: a head ``"L0H1"`` (its ``z``) or an MLP ``"L1MLP"`` (its
    output)."""

    component: str
    kind: ClassVar[str] = "ablate"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._parse()

    def _parse(self) -> tuple[int, int | None]:
        if isinstance(self.component, str) and (m := _MLP.fullmatch(self.component)):
            return int(m[1]), None
        try:
            return parse_head_name(self.component)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"ablate: component must be a head like 'L0H1' or an MLP like 'L1MLP', "
                f"got {self.component!r}"
            ) from e

    def check(self, model: Any, n_pos: int) -> None:
        layer, head = self._parse()
        if head is not None:
            _check_head(model, layer, head, self.kind)
            return
        if not 0 <= layer < model.cfg.n_layers:
            raise ValueError(f"ablate: {self.component}: the model has {model.cfg.n_layers} layers")
        if model.cfg.attn_only:
            raise ValueError(f"ablate: {self.component}: the model is attention-only (no MLPs)")

    def hooks(self, model: Any) -> list[Hook]:
        layer, head = self._parse()
        if head is None:
            return [(f"blocks.{layer}.hook_mlp_out", torch.zeros_like)]
        zero = torch.zeros(())
        return [(f"blocks.{layer}.attn.hook_z", lambda z: _set_head(z, head, 2, zero.to(z)))]


@dataclass(frozen=True, kw_only=True)
class Freeze(Intervention):
    """Parameters whose names match ``pattern`` (``fnmatch``: ``"blocks.0.*"``,
    ``"embed.W_E"``) are not updated."""

    pattern: str
    kind: ClassVar[str] = "freeze"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.pattern, str) or not self.pattern:
            raise TypeError(f"freeze: pattern must be a non-empty str, got {self.pattern!r}")

    def check(self, model: Any, n_pos: int) -> None:
        if not self.parameters(model):
            names = ", ".join(n for n, _ in model.named_parameters())
            raise ValueError(f"freeze: {self.pattern!r} matches no parameter; they are: {names}")

    def parameters(self, model: Any) -> list[str]:
        return [n for n, _ in model.named_parameters() if fnmatch.fnmatchcase(n, self.pattern)]


KINDS: dict[str, type[Intervention]] = {
    cls.kind: cls for cls in (ClampPattern, ClampOutput, Ablate, Freeze)
}


def intervention_from_dict(data: Mapping[str, Any] | Intervention) -> Intervention:
    """Reads :meth:`Intervention.to_dict`'s output (strict: unknown keys refused)."""
    if isinstance(data, Intervention):
        return data
    if not isinstance(data, Mapping) or data.get("kind") not in KINDS:
        kind = data.get("kind") if isinstance(data, Mapping) else data
        raise ValueError(f"unknown intervention {kind!r}; kinds: {', '.join(KINDS)}")
    cls = KINDS[data["kind"]]
    fields = check_fields(cls, data, f"{data['kind']} intervention", extra=("kind",))
    fields.pop("kind")
    return cls(**fields)


def interventions_from(
    items: Iterable[Mapping[str, Any] | Intervention],
) -> tuple[Intervention, ...]:
    """A tuple of interventions from interventions or their dicts."""
    if isinstance(items, str | Mapping | Intervention):
        raise TypeError(f"interventions must be a list, got {type(items).__name__}")
    return tuple(intervention_from_dict(i) for i in items)


def parse_flag(kind: str, text: str) -> Intervention:
    """One CLI flag's value as an intervention (``@START:STOP`` optional, STOP may be empty):

    - ``clamp_pattern``: ``L0H0=previous`` or ``L0H0=pattern.json`` (a ``[pos, pos]`` list);
    - ``ablate``: ``L0H1@0:100``, ``L1MLP``; ``freeze``: ``'blocks.0.*'``.
    """
    body, at, span = text.rpartition("@") if "@" in text else (text, "", "")
    steps: dict[str, Any] = {}
    if at:
        first, colon, last = span.partition(":")
        if not colon or not first.strip().isdigit() or not (last.strip().isdigit() or not last):
            raise ValueError(f"{text!r}: the step range must be @START:STOP, e.g. @0:100")
        steps = {"start": int(first), "stop": int(last) if last.strip() else None}
    if kind == "clamp_pattern":
        name, eq, value = body.partition("=")
        if not eq:
            raise ValueError(
                f"{text!r}: expected HEAD=previous or HEAD=FILE.json, e.g. L0H0=previous"
            )
        layer, head = parse_head_name(name.strip())
        pattern: Any = value.strip()
        if pattern != "previous":
            import json
            from pathlib import Path

            try:
                pattern = json.loads(Path(pattern).read_text())
            except (OSError, ValueError) as e:
                raise ValueError(f"{text!r}: cannot read the pattern file {pattern!r}: {e}") from e
        return ClampPattern(layer=layer, head=head, pattern=pattern, **steps)
    if kind == "ablate":
        return Ablate(component=body.strip(), **steps)
    if kind == "freeze":
        return Freeze(pattern=body.strip(), **steps)
    raise ValueError(f"unknown intervention flag kind {kind!r}")
