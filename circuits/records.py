"""Typed evaluation records: what one evaluation of a model on its probe measured.

Training histories, checkpoints, the training-dynamics figure and the report all hold lists of
:class:`EvalRecord`. A record round-trips through JSON (:meth:`EvalRecord.to_dict`,
:meth:`EvalRecord.from_dict`); ``from_dict`` also reads the flat dicts of older checkpoints
(``{"step", "train_loss", "accuracy", "loss", "previous_token": [[...]], ...}``), which is how
they keep loading. Records written before ``metrics`` existed load with ``metrics == {}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor

from circuits.validation import is_int, is_number

FIELDS = ("step", "loss", "accuracy", "train_loss", "seconds")


def _number(name: str, value: Any, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if not is_number(value):
        raise TypeError(f"record {name} must be a number, got {value!r}")
    return float(value)


@dataclass(frozen=True, eq=False)
class EvalRecord:
    """One evaluation.

    Attributes:
        step: Optimizer steps taken when it was measured (0 outside training).
        loss: Masked cross-entropy on the probe (nats).
        accuracy: Top-1 accuracy on the probe's masked positions.
        scores: ``{score name: [n_layers, n_heads] tensor}`` (names from
            :mod:`circuits.analysis.scores`).
        train_loss: The training batch's loss at that step (training only).
        seconds: Wall time of the run when it was measured (training only).
        metrics: ``{name: float}`` model-level measures the task defines (its
            ``evaluation_metrics``; e.g. ``kl_bigram`` for ``markov_icl``); empty otherwise.

    ``record[key]`` reads a field, a score (``record["induction"]``) or a metric, as the dicts
    of earlier versions did.
    """

    step: int
    loss: float
    accuracy: float
    scores: Mapping[str, Tensor] = field(default_factory=dict)
    train_loss: float | None = None
    seconds: float | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not is_int(self.step, 0):
            raise TypeError(f"record step must be a non-negative int, got {self.step!r}")
        object.__setattr__(self, "loss", _number("loss", self.loss))
        object.__setattr__(self, "accuracy", _number("accuracy", self.accuracy))
        object.__setattr__(self, "train_loss", _number("train_loss", self.train_loss, True))
        object.__setattr__(self, "seconds", _number("seconds", self.seconds, True))
        if not isinstance(self.scores, Mapping):
            raise TypeError(f"record scores must be a mapping, got {type(self.scores).__name__}")
        scores = {}
        for name, value in self.scores.items():
            t = torch.as_tensor(value, dtype=torch.float32).detach().cpu()
            if t.ndim != 2:
                raise ValueError(f"score {name!r} must be [n_layers, n_heads], got {t.shape}")
            scores[str(name)] = t
        object.__setattr__(self, "scores", scores)
        if not isinstance(self.metrics, Mapping):
            raise TypeError(f"record metrics must be a mapping, got {type(self.metrics).__name__}")
        metrics: dict[str, float] = {}
        for key, number in self.metrics.items():
            if not isinstance(key, str) or not key:
                raise TypeError(f"metric names must be non-empty strs, got {key!r}")
            if key in FIELDS or key in scores:
                raise ValueError(f"metric {key!r} would shadow a field or score of the record")
            metrics[key] = float(_number(f"metric {key!r}", number))  # type: ignore[arg-type]
        object.__setattr__(self, "metrics", metrics)

    # --- compatibility with the dict records of earlier versions ---
    def __getitem__(self, key: str) -> Any:
        if key in FIELDS:
            return getattr(self, key)
        if key in self.scores:
            return self.scores[key]
        if key in self.metrics:
            return self.metrics[key]
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        if key in FIELDS:
            return getattr(self, str(key)) is not None
        return key in self.scores or key in self.metrics

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default  # noqa: SIM401 (this is get)

    def __eq__(self, other: object) -> bool:
        """Same measurements: every field and score but ``seconds`` (wall time varies from run
        to run; a resumed run equals an uninterrupted one)."""
        if not isinstance(other, EvalRecord):
            return NotImplemented
        same = all(getattr(self, f) == getattr(other, f) for f in FIELDS if f != "seconds")
        return (
            same
            and self.scores.keys() == other.scores.keys()
            and all(torch.equal(v, other.scores[k]) for k, v in self.scores.items())
            and self.metrics == other.metrics
        )

    __hash__ = None  # type: ignore[assignment]

    def best(self, name: str) -> float | None:
        """The best value of score ``name`` over the heads that count (see ``HeadScore.best``)."""
        from circuits.analysis.scores import get_score

        if name not in self.scores:
            raise ValueError(f"record has no score {name!r}; it has {sorted(self.scores)}")
        return get_score(name).best(self.scores[name])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (scores as nested lists; ``metrics`` only when there are any, so
        a record without them writes what earlier versions wrote)."""
        out: dict[str, Any] = {f: getattr(self, f) for f in FIELDS}
        out["scores"] = {k: v.tolist() for k, v in self.scores.items()}
        if self.metrics:
            out["metrics"] = dict(self.metrics)
        return out

    @classmethod
    def from_dict(cls, data: EvalRecord | Mapping[str, Any]) -> EvalRecord:
        """Reads :meth:`to_dict`'s output, or the flat dict records of older checkpoints.

        Raises:
            ValueError: Not a record (no ``step``, or values of the wrong kind).
        """
        if isinstance(data, EvalRecord):
            return data
        if not isinstance(data, Mapping) or "step" not in data:
            raise ValueError(f"not an evaluation record: {data!r:.120}")
        known = {f.name for f in fields(cls)}
        if "scores" in data:
            unknown = set(data) - known
            if unknown:
                raise ValueError(f"evaluation record has unknown field(s) {sorted(unknown)}")
            scores, metrics = data["scores"], data.get("metrics") or {}
        else:  # the flat format: every non-field entry is a score
            scores = {k: v for k, v in data.items() if k not in FIELDS}
            metrics = {}
        try:
            return cls(
                step=data["step"],
                loss=data["loss"],
                accuracy=data["accuracy"],
                scores=scores,
                train_loss=data.get("train_loss"),
                seconds=data.get("seconds"),
                metrics=metrics,
            )
        except KeyError as e:
            raise ValueError(f"evaluation record at step {data['step']!r} lacks {e}") from e
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"bad evaluation record at step {data.get('step')!r}: {e}") from e


def history_from_json(records: Iterable[Any]) -> list[EvalRecord]:
    """A history (list of records) from JSON dicts of any version, or records."""
    if isinstance(records, str | bytes | Mapping):
        raise ValueError(f"a history must be a list of records, got {type(records).__name__}")
    return [EvalRecord.from_dict(r) for r in records]


def history_to_json(records: Iterable[EvalRecord | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A history as JSON-ready dicts (records of any version are converted first)."""
    return [EvalRecord.from_dict(r).to_dict() for r in records]


def metric_series(records: Iterable[EvalRecord], name: str) -> list[tuple[int, float]]:
    """``(step, value)`` of metric ``name`` over the records that have it."""
    return [(r.step, r.metrics[name]) for r in records if name in r.metrics]


def score_series(records: Iterable[EvalRecord], name: str) -> Iterator[Tensor]:
    """The ``[n_layers, n_heads]`` values of score ``name`` over records that have it."""
    return (r.scores[name] for r in records if name in r.scores)
