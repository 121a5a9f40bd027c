"""What a sweep runs: a grid or random search over model, task and training fields, seeds an axis.

A spec is a small mapping (a Python dict, or a YAML / TOML / JSON file)::

    name: lr-by-seed
    preset: induction            # the starting point (circuits.presets)
    base:                        # fixed overrides of the preset, per part
      train: {steps: 1500}
    grid:                        # every combination of these values ...
      train.lr: [0.01, 0.02]
      model.d_model: [32, 64]
    seeds: 8                     # ... times seeds 0..7 (or a list: [0, 5, 9])
    checkpoint: false            # keep each run's trained model

``search: random`` draws ``samples`` points instead, each axis from ``{choice: [...]}``,
``{uniform: [lo, hi]}``, ``{log_uniform: [lo, hi]}`` or ``{int: [lo, hi]}`` (inclusive),
seeded by ``sample_seed``; every point is run with every seed. A ``seed`` sets the model's
init, the task's probe and the data stream, as :func:`circuits.presets.build` does; an axis
such as ``model.seed`` then varies one of them alone.

:meth:`SweepSpec.runs` expands a spec into :class:`RunSpec`\\ s whose id is a hash of the run's
resolved settings, so the same run has the same id in any spec, in any order, on any machine:
that is what ``--resume`` matches on.

The number of runs is counted arithmetically (points x seeds) before anything is built: a spec
of more than :data:`MAX_RUNS` runs is refused in one line unless the caller raises the limit
(``max_runs=``, ``circuits sweep --max-runs N``), so ``seeds: 1000000000`` or a 40^5 grid costs
nothing.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from circuits.validation import check_fields

PARTS = ("model", "task", "train")
DISTRIBUTIONS = ("choice", "uniform", "log_uniform", "int")
# Fields that change how a run is watched or stored, not its numbers: left out of the run id,
# and fixed by the runner (no progress bar, one thread).
NOT_HASHED = ("progress", "threads", "checkpoint_dir", "checkpoint_every")
# The most runs a spec may expand to without the caller confirming a larger number: 10,000 runs
# of the default preset are hours on a laptop and ~100 MB of rows and histories.
MAX_RUNS = 10_000


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep, fully resolved.

    Attributes:
        run_id: 12 hex digits of the sha256 of the settings (see :func:`run_id`).
        preset: The preset the settings started from (for display).
        settings: ``{"model": {...}, "task": {...}, "train": {...}}``, every field resolved.
        axes: The swept values of this run, e.g. ``{"train.lr": 0.01, "seed": 3}``.
        checkpoint: Keep the trained model (under the sweep's ``checkpoints/RUN_ID``).
    """

    run_id: str
    preset: str
    settings: dict[str, dict[str, Any]]
    axes: dict[str, Any]
    checkpoint: bool = False


def run_id(settings: Mapping[str, Mapping[str, Any]]) -> str:
    """A stable id of a run's settings: sha256 of their canonical JSON, 12 hex digits."""
    hashed = {
        part: {k: v for k, v in sorted(values.items()) if k not in NOT_HASHED}
        for part, values in sorted(settings.items())
    }
    text = json.dumps(hashed, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _check_axis_name(name: Any) -> None:
    if not isinstance(name, str):
        raise ValueError(f"axis names must be strings, got {name!r}")
    if name == "seed":
        return
    part, _, fld = name.partition(".")
    if part not in PARTS or not fld:
        raise ValueError(
            f"axis {name!r} must be 'seed' or PART.FIELD with PART one of {', '.join(PARTS)} "
            "(e.g. train.lr, model.d_model, task.max_period)"
        )


def _check_distribution(name: str, dist: Any) -> None:
    if not isinstance(dist, Mapping) or len(dist) != 1:
        raise ValueError(
            f"random axis {name!r} must be one of {{{', '.join(DISTRIBUTIONS)}: ...}}, got {dist!r}"
        )
    ((kind, arg),) = dist.items()
    if kind not in DISTRIBUTIONS:
        raise ValueError(
            f"random axis {name!r}: unknown distribution {kind!r}; use {DISTRIBUTIONS}"
        )
    if kind == "choice":
        if not isinstance(arg, list | tuple) or not arg:
            raise ValueError(f"random axis {name!r}: choice needs a non-empty list, got {arg!r}")
        return
    if not (isinstance(arg, list | tuple) and len(arg) == 2):
        raise ValueError(f"random axis {name!r}: {kind} needs [low, high], got {arg!r}")
    lo, hi = arg
    numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x in (lo, hi))
    if not numeric or not lo <= hi:
        raise ValueError(f"random axis {name!r}: {kind} needs numbers low <= high, got {arg!r}")
    if kind == "log_uniform" and lo <= 0:
        raise ValueError(f"random axis {name!r}: log_uniform needs low > 0, got {lo}")
    if kind == "int" and not all(isinstance(x, int) for x in (lo, hi)):
        raise ValueError(f"random axis {name!r}: int needs integer bounds, got {arg!r}")


def _draw(dist: Mapping[str, Any], rng: random.Random) -> Any:
    ((kind, arg),) = dist.items()
    if kind == "choice":
        return arg[rng.randrange(len(arg))]
    lo, hi = arg
    if kind == "int":
        return rng.randint(lo, hi)
    if kind == "uniform":
        return rng.uniform(lo, hi)
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def _seeds(value: Any) -> tuple[int, ...]:
    if isinstance(value, bool):
        raise ValueError(f"seeds must be a count or a list of ints, got {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"seeds must be a positive count, got {value}")
        return tuple(range(value))
    if isinstance(value, list | tuple) and value:
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in value):
            raise ValueError(f"seeds must be ints, got {list(value)!r}")
        if len(set(value)) != len(value):
            raise ValueError(f"seeds repeat: {list(value)!r}")
        return tuple(value)
    raise ValueError(f"seeds must be a count or a non-empty list of ints, got {value!r}")


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep specification (see the module docstring for the file format).

    Args:
        name: Name of the sweep (the default output directory is ``sweeps/NAME``).
        preset: Preset the runs start from (``circuits.presets.PRESETS``).
        base: Fixed per-part overrides: ``{"train": {"steps": 500}}``.
        grid: Axis -> list of values (``search="grid"``).
        random: Axis -> distribution (``search="random"``).
        search: ``"grid"`` or ``"random"``.
        samples: Points drawn by a random search.
        sample_seed: Seed of the random search's draws.
        seeds: Seeds every point runs with: a count (``0..n-1``) or a list.
        checkpoint: Keep every run's trained model.
        max_runs: Refuse (ValueError) a spec of more runs than this, counted before any run is
            built (default :data:`MAX_RUNS`; not a spec-file key: the caller confirms it).
    """

    name: str
    preset: str = "induction"
    base: dict[str, dict[str, Any]] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    random: dict[str, dict[str, Any]] = field(default_factory=dict)
    search: str = "grid"
    samples: int = 0
    sample_seed: int = 0
    seeds: tuple[int, ...] = (0,)
    checkpoint: bool = False
    max_runs: int = field(default=MAX_RUNS, compare=False, repr=False)

    def __post_init__(self) -> None:
        from circuits.presets import PRESETS

        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        if any(c in self.name for c in "/\\\0") or self.name in (".", ".."):
            raise ValueError(f"name {self.name!r} must not contain path separators")
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if not isinstance(self.base, Mapping):
            raise ValueError(f"base must be a mapping of parts, got {self.base!r}")
        for part, values in self.base.items():
            if part not in PARTS or not isinstance(values, Mapping):
                raise ValueError(
                    f"base.{part} is not a part: base maps {', '.join(PARTS)} to field values"
                )
        if self.search not in ("grid", "random"):
            raise ValueError(f"search must be 'grid' or 'random', got {self.search!r}")
        for what in ("grid", "random"):
            if not isinstance(getattr(self, what), Mapping):
                raise ValueError(
                    f"{what} must map axis names to values, got {getattr(self, what)!r}"
                )
            # A private copy: the spec must not change when the caller's dict does.
            object.__setattr__(self, what, copy.deepcopy(dict(getattr(self, what))))
        object.__setattr__(self, "base", copy.deepcopy(dict(self.base)))
        for name, axis in self.grid.items():
            _check_axis_name(name)
            if not isinstance(axis, list | tuple) or not axis:
                raise ValueError(f"grid axis {name!r} needs a non-empty list, got {axis!r}")
        for name, dist in self.random.items():
            _check_axis_name(name)
            _check_distribution(name, dist)
        if self.search == "grid" and self.random:
            raise ValueError("random axes given with search: grid; set search: random")
        if self.search == "random":
            if isinstance(self.samples, bool) or not isinstance(self.samples, int):
                raise ValueError(f"samples must be an int, got {self.samples!r}")
            if self.samples <= 0:
                raise ValueError("search: random needs samples > 0")
            if not self.random:
                raise ValueError("search: random needs at least one axis under random")
        if isinstance(self.sample_seed, bool) or not isinstance(self.sample_seed, int):
            raise ValueError(f"sample_seed must be an int, got {self.sample_seed!r}")
        self._check_count()  # before any list of runs or seeds is built
        object.__setattr__(self, "seeds", _seeds(self.seeds))
        if "seed" in self.grid or "seed" in self.random:
            raise ValueError("give seeds with the seeds field, not as a grid or random axis")
        if not isinstance(self.checkpoint, bool):
            raise ValueError(f"checkpoint must be true or false, got {self.checkpoint!r}")
        # Every run's configs are built once here (and kept): a bad value fails now.
        object.__setattr__(self, "_runs", self._build_runs())

    def count(self) -> int:
        """Runs in the spec (points x seeds), counted without building any."""
        return self._points_count() * self._seeds_count()

    def _points_count(self) -> int:
        if self.search == "random":
            return int(self.samples)
        return math.prod(len(axis) for axis in self.grid.values())

    def _seeds_count(self) -> int:
        return self.seeds if isinstance(self.seeds, int) else len(self.seeds)

    def _check_count(self) -> None:
        limit = self.max_runs
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"max_runs must be an int >= 1, got {limit!r}")
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int | list | tuple):
            _seeds(self.seeds)  # raises its one-line error
        points, seeds = self._points_count(), self._seeds_count()
        if points * seeds > limit:
            n = points * seeds
            raise ValueError(
                f"the sweep has {n:,} runs ({points:,} points x {seeds:,} seeds), more than "
                f"the limit of {limit:,}; pass --max-runs {n} (max_runs={n}) if you mean it"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], max_runs: int = MAX_RUNS) -> SweepSpec:
        """A spec from a mapping, rejecting unknown keys by name (``max_runs``: see the class)."""
        data = check_fields(cls, data, "sweep spec", noun="key", exclude={"max_runs"})
        if "name" not in data:
            raise ValueError("a sweep spec needs a name")
        return cls(**data, max_runs=max_runs)

    @classmethod
    def load(cls, path: str | Path, max_runs: int = MAX_RUNS) -> SweepSpec:
        """A spec from a ``.yaml``/``.yml``, ``.toml`` or ``.json`` file."""
        return cls.from_dict(read_spec_file(path), max_runs=max_runs)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["seeds"] = list(self.seeds)
        del out["max_runs"]
        return out

    def points(self) -> list[dict[str, Any]]:
        """The swept points (without seeds), in a fixed order."""
        if self.search == "grid":
            names = list(self.grid)
            return [
                dict(zip(names, combo, strict=True))
                for combo in itertools.product(*(self.grid[n] for n in names))
            ]
        rng = random.Random(self.sample_seed)
        return [
            {name: _draw(dist, rng) for name, dist in self.random.items()}
            for _ in range(self.samples)
        ]

    def runs(self) -> list[RunSpec]:
        """Every run: each point with each seed (built and checked once, when the spec is)."""
        return list(self._runs)  # type: ignore[attr-defined]

    def _build_runs(self) -> list[RunSpec]:
        """Every run. Raises ValueError on a bad field or value."""
        out: list[RunSpec] = []
        seen: dict[str, dict[str, Any]] = {}
        for point in self.points():
            for seed in self.seeds:
                axes = {**point, "seed": seed}
                settings = resolve(self.preset, self.base, axes)
                rid = run_id(settings)
                if rid in seen:
                    raise ValueError(
                        f"two points of the sweep are the same run ({seen[rid]} and {axes}); "
                        "remove the duplicate value"
                    )
                seen[rid] = axes
                out.append(RunSpec(rid, self.preset, settings, axes, self.checkpoint))
        return out


def resolve(
    preset: str, base: Mapping[str, Mapping[str, Any]], axes: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """The full settings of one run: preset, then base, then the seed, then the other axes.

    Every part is validated by :class:`circuits.run.RunConfig` (each part's own config) and
    stored with every field resolved, so the run id does not depend on how a value was
    given (a default or an explicit equal value hash the same).
    """
    from circuits.presets import preset as preset_parts
    from circuits.run import RunConfig

    parts = preset_parts(preset)
    for part, values in base.items():
        parts[part].update(values)
    seed = axes.get("seed", 0)
    for part in PARTS:
        parts[part]["seed"] = seed
    for name, value in axes.items():
        if name != "seed":
            part, _, fld = name.partition(".")
            parts[part][fld] = value
    parts["train"].update(progress=False, threads=1)
    where = f"run {dict(axes)}"
    try:
        settings = RunConfig.from_dict(parts).to_dict()
    except (TypeError, ValueError) as e:  # TypeError: an unknown task keyword
        raise ValueError(f"{where}: {e}") from e
    settings["model"].pop("model_name", None)  # a label (compare=False): not the run's identity
    return settings


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML, TOML or JSON spec file (chosen by its suffix)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; give a spec file (.yaml, .toml, .json)")
    if not path.is_file():
        raise FileNotFoundError(f"sweep spec {path} does not exist")
    suffix = path.suffix.lower()
    parse = _parser(path, suffix)
    try:
        data = parse(path.read_text(encoding="utf-8"))
    except Exception as e:  # each parser has its own error type (YAMLError, TOMLDecodeError...)
        raise ValueError(f"{path}: not a valid {suffix[1:].upper()} file ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a sweep spec must be a mapping, got {type(data).__name__}")
    return data


def _parser(path: Path, suffix: str) -> Any:
    if suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as e:
            raise ValueError(f"{path}: reading YAML needs PyYAML (pip install pyyaml)") from e
        return yaml.safe_load
    if suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            try:
                import tomli as tomllib  # type: ignore[no-redef]
            except ImportError as e:
                raise ValueError(f"{path}: reading TOML on Python 3.10 needs tomli") from e
        return tomllib.loads
    if suffix == ".json":
        return json.loads
    raise ValueError(f"{path}: unknown spec format {suffix!r}; use .yaml, .yml, .toml or .json")
