"""``TrainConfig``: how a model is trained (optimizer, schedule, data seed, targets, checkpoints).

A frozen dataclass of plain values, checked when built; :meth:`TrainConfig.to_dict` /
:meth:`TrainConfig.from_dict` round-trip it through JSON (checkpoints and sweeps store it).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from dataclasses import InitVar, dataclass, field
from typing import Any

from circuits.analysis.scores import applicable, get_score, score_names
from circuits.records import EvalRecord
from circuits.training.interventions import Intervention, interventions_from
from circuits.validation import check_fields, check_int, is_number

__all__ = ["TARGET_ALIASES", "TrainConfig", "targets_met"]

# Deprecated spellings of ``targets`` entries, still read from configs of earlier versions and
# accepted (with a DeprecationWarning) by the constructor; they are not fields.
TARGET_ALIASES = {"target_induction": "induction", "target_previous_token": "previous_token"}


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Args:
        steps: Maximum number of optimizer steps.
        batch_size: Sequences per step.
        lr: Peak learning rate (AdamW).
        weight_decay: AdamW weight decay.
        betas: AdamW betas.
        warmup_steps: Linear warm-up from 0 to ``lr``; constant afterwards.
        grad_clip: Clip the global gradient norm (None: no clipping).
        seed: Seed of the data stream (the model's init has its own seed in ``ModelConfig``).
        eval_every: Evaluate the probe (accuracy, head scores) every this many steps.
        probe_size: Sequences in the evaluation probe.
        target_accuracy: Stop early once the probe accuracy reaches this (None: don't).
        targets: ``{score name: threshold}``: ...and the best head of each registered score
            (over the layers that count, e.g. induction from layer 1) reaches its threshold.
        scores: Scores recorded in the history (None: every score registered with
            ``track=True`` that the task's probe supports); target scores are always recorded.
        progress: Show a tqdm progress bar.
        checkpoint_dir: Save a resumable checkpoint here (see :mod:`circuits.training.state`)
            every ``checkpoint_every`` steps and when training stops.
        checkpoint_every: Steps between checkpoints (None: only when training stops).
        threads: Torch intra-op threads while training, restored afterwards. At toy sizes one
            thread is as fast as several and is not slowed down by other busy processes; None
            keeps torch's.
        device: Move the model here before training ("cpu", "cuda", "mps", ...); None trains
            where the model already is. Batches are drawn on the CPU (the same data stream
            on every device) and moved to the model's device.
        interventions: Clamps, ablations and freezes applied while training, each for a range
            of steps (:mod:`circuits.training.interventions`; dicts are read with
            ``intervention_from_dict``).
        target_induction: Deprecated: ``targets={"induction": ...}``. Write-only (an init
            argument, not a field: read ``targets``), so it stays out of ``to_dict``.
        target_previous_token: Deprecated: ``targets={"previous_token": ...}``, likewise.
    """

    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-2
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = 20
    grad_clip: float | None = 1.0
    seed: int = 0
    eval_every: int = 50
    probe_size: int = 64
    target_accuracy: float | None = None
    targets: Mapping[str, float] = field(default_factory=dict)
    scores: tuple[str, ...] | None = None
    progress: bool = True
    checkpoint_dir: str | None = None
    checkpoint_every: int | None = None
    threads: int | None = 1
    device: str | None = None
    interventions: tuple[Intervention, ...] = ()
    target_induction: InitVar[float | None] = None
    target_previous_token: InitVar[float | None] = None

    def __post_init__(
        self, target_induction: float | None, target_previous_token: float | None
    ) -> None:
        for name in ("steps", "batch_size", "eval_every", "probe_size"):
            check_int(getattr(self, name), name, 1)
        check_int(self.warmup_steps, "warmup_steps", 0)
        check_int(self.seed, "seed")
        if not (is_number(self.lr) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive float, got {self.lr!r}")
        if not (is_number(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two floats in [0, 1), got {self.betas!r}")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be positive or None, got {self.grad_clip!r}")
        acc = self.target_accuracy
        if acc is not None and not is_number(acc):
            raise TypeError(f"target_accuracy must be a number or None, got {acc!r}")
        if acc is not None and not 0 <= acc <= 1:
            raise ValueError(f"target_accuracy must be in [0, 1] or None, got {acc!r}")
        aliases = {"target_induction": target_induction}
        aliases["target_previous_token"] = target_previous_token
        self._normalise_targets({k: v for k, v in aliases.items() if v is not None})
        if self.checkpoint_every is not None:
            check_int(self.checkpoint_every, "checkpoint_every", 1)
            if self.checkpoint_dir is None:
                raise ValueError("checkpoint_every needs checkpoint_dir")
        if self.checkpoint_dir is not None:
            object.__setattr__(self, "checkpoint_dir", str(self.checkpoint_dir))
        if self.threads is not None:
            check_int(self.threads, "threads", 1)
        if self.device is not None:
            import torch

            try:
                torch.device(self.device)
            except (RuntimeError, TypeError) as e:
                raise ValueError(f"device must be a torch device name, got {self.device!r}") from e
            object.__setattr__(self, "device", str(self.device))
        object.__setattr__(self, "interventions", interventions_from(self.interventions))

    def _normalise_targets(self, aliases: dict[str, float]) -> None:
        if not isinstance(self.targets, Mapping):
            raise TypeError(f"targets must be a mapping score -> threshold, got {self.targets!r}")
        targets: dict[str, float] = {}
        for name, value in self.targets.items():
            if value is not None:
                targets[get_score(name).name] = get_score(name).check_threshold(value)
        for alias, value in aliases.items():
            name = TARGET_ALIASES[alias]
            warnings.warn(
                f"TrainConfig({alias}=...) is deprecated; use targets={{{name!r}: ...}}",
                DeprecationWarning,
                stacklevel=4,
            )
            value = get_score(name).check_threshold(value)
            if name in self.targets and targets.get(name) != value:
                raise ValueError(f"{alias}={value} contradicts targets[{name!r}]")
            targets[name] = value
        object.__setattr__(self, "targets", targets)
        if self.scores is not None:
            if isinstance(self.scores, str):
                raise TypeError(f"scores must be a list of score names, got {self.scores!r}")
            object.__setattr__(self, "scores", tuple(get_score(n).name for n in self.scores))

    @property
    def has_targets(self) -> bool:
        return self.target_accuracy is not None or bool(self.targets)

    def recorded_scores(self, probe: Any) -> tuple[str, ...]:
        """Score names each evaluation records on ``probe`` (see ``scores``)."""
        names = score_names(tracked=True) if self.scores is None else self.scores
        names = tuple(s.name for s in applicable(names, probe))
        return names + tuple(n for n in self.targets if n not in names)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again); ``dataclasses.replace`` works too."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        d["targets"] = dict(self.targets)
        d["scores"] = None if self.scores is None else list(self.scores)
        # Written only when there are any: a run without them keeps the dict (and so a sweep's
        # run id and a checkpoint's train_config) of the versions before interventions.
        d["interventions"] = [i.to_dict() for i in self.interventions]
        if not self.interventions:
            del d["interventions"]
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Reads :meth:`to_dict`'s output, or the config of an earlier version (``target_*``)."""
        data = check_fields(cls, data, "train config", extra=TARGET_ALIASES)
        old = {k: data.pop(k) for k in TARGET_ALIASES if k in data}
        targets = dict(data.get("targets") or {})
        for alias, value in old.items():  # earlier versions stored both spellings
            name = TARGET_ALIASES[alias]
            if value is not None and targets.setdefault(name, value) != value:
                raise ValueError(f"{alias}={value} contradicts targets[{name!r}]")
        if old:
            data["targets"] = targets
        if "betas" in data:
            data["betas"] = tuple(data["betas"])
        if data.get("scores") is not None:
            data["scores"] = tuple(data["scores"])
        return cls(**data)


def targets_met(record: EvalRecord | Mapping[str, Any], cfg: TrainConfig) -> bool:
    """Whether an evaluation meets every target of ``cfg`` (False when it has none).

    Each score target is met when the score's best head over the layers that count reaches
    the threshold (``HeadScore.met``); a score the record lacks is not met.
    """
    record = EvalRecord.from_dict(record)
    if not cfg.has_targets:
        return False
    if cfg.target_accuracy is not None and record.accuracy < cfg.target_accuracy:
        return False
    return all(
        name in record.scores and get_score(name).met(record.scores[name], threshold)
        for name, threshold in cfg.targets.items()
    )
