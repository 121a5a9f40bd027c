"""Synthetic tasks for probing attention heads: induction and shift-by-one, and their registry.

Every task is seeded and deterministic (same seed, same batches) and returns tokens, targets and
a loss mask of the positions whose next token the context determines: a masked target is never
a guess. A task is a complete unit: it samples training batches, builds its evaluation probe
and describes itself as plain data (:class:`Task`), so training, checkpoints, the CLI and the
report need nothing task-specific.

A task with a fixed repeat offset can be solved by a *positional* head in one layer, with no
induction at all. :class:`InductionTask` therefore draws a random period for every sequence:
the only way to predict a repeated token is to find its earlier copy by content.

Adding a task: subclass :class:`TaskBase` with a frozen dataclass that has ``d_vocab``,
``seq_len``, ``seed`` and a ``name`` field, write ``sample()``, and register it
(:func:`register_task`). To train it from the command line (``circuits train --task NAME``)
from an installed package, declare it in the ``circuits.tasks`` entry-point group::

    [project.entry-points."circuits.tasks"]
    my_task = "my_package.tasks:MyTask"

Torch is imported only when a batch is drawn, so listing tasks (``circuits train --help``)
stays instant, and TransformerLens is never imported here.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from jaxtyping import Bool, Int
    from torch import Tensor

# The probe's default seed is the task's seed plus this: held out from the training stream.
PROBE_SEED_OFFSET = 1_000_003
ENTRY_POINT_GROUP = "circuits.tasks"
_MAX_SEED = 2**62


@dataclass(frozen=True)
class Batch:
    """A batch of a task.

    Attributes:
        tokens: Input ids ``[batch, pos]``.
        targets: Ids to predict at each position ``[batch, pos]`` (arbitrary where masked out).
        mask: Bool ``[batch, pos]``: positions whose target is determined by the context.
        repeat_length: For a repeated-random-tokens probe, the length ``S`` of each copy
            (what induction scores need); None otherwise.
    """

    tokens: Int[Tensor, "batch pos"]
    targets: Int[Tensor, "batch pos"]
    mask: Bool[Tensor, "batch pos"]
    repeat_length: int | None = None


@runtime_checkable
class Task(Protocol):
    """What training, checkpoints, the CLI and the report need from a task.

    :class:`TaskBase` supplies ``probe`` and ``to_dict`` for a frozen dataclass; a task is
    rebuilt from ``to_dict()`` by :func:`task_from_dict`.
    """

    @property
    def name(self) -> str: ...

    @property
    def d_vocab(self) -> int: ...

    @property
    def seq_len(self) -> int: ...

    @property
    def seed(self) -> int: ...

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        """A training batch of ``batch_size`` sequences of ``seq_len``, drawn from ``generator``."""
        ...

    def probe(self, batch_size: int = 32, seed: int | None = None) -> Batch:
        """The held-out evaluation batch (training's accuracy and head scores); seeded."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable fields, ``name`` included: ``task_from_dict`` inverts it."""
        ...


def _check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an int {bound}, got {value!r}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")


def _check_generator(generator: Any) -> None:
    import torch

    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")


def check_task_fields(task: Any) -> None:
    """Validates the fields every task has: ``d_vocab``, ``seq_len``, ``seed``, ``name``."""
    _check_int("d_vocab", task.d_vocab, 2)
    _check_int("seq_len", task.seq_len, 2)
    _check_int("seed", task.seed, 0, _MAX_SEED)
    if not isinstance(task.name, str) or not task.name:
        raise TypeError(f"name must be a non-empty str, got {task.name!r}")


class TaskBase:
    """Base of a task written as a frozen dataclass: ``to_dict`` and a seeded ``probe``.

    The default probe is a batch of the task itself, drawn from a generator seeded with
    ``seed + PROBE_SEED_OFFSET`` (so it is never a training batch of the same seed).
    """

    seed: int

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        raise NotImplementedError

    def probe(self, batch_size: int = 32, seed: int | None = None) -> Batch:
        import torch

        _check_int("batch_size", batch_size, 1)
        generator = torch.Generator().manual_seed(probe_seed(self.seed, seed))
        return self.sample(batch_size, generator)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


def probe_seed(task_seed: int, seed: int | None) -> int:
    """The seed of a probe: ``seed`` if given, else the task's seed plus PROBE_SEED_OFFSET."""
    if seed is None:
        return task_seed + PROBE_SEED_OFFSET
    _check_int("seed", seed, 0, _MAX_SEED)
    return seed


def next_token_targets(tokens: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch pos"]:
    """Targets of a language model: the next token, padded with the last one (mask it out)."""
    import torch

    return torch.cat([tokens[:, 1:], tokens[:, -1:]], dim=1)


def distinct_ids(
    batch_size: int, k: int, n: int, generator: torch.Generator
) -> Int[Tensor, "batch k"]:
    """``k`` distinct ids from ``[0, n)`` per row, a uniformly random ordered choice.

    The cost does not grow with ``n``: where a draw of ``k`` ids with replacement is likely
    to be distinct (``n >= 4 k^2``, at least ~88% of rows), rows are drawn with replacement
    and the few with a repeat are redrawn; otherwise ``n < 4 k^2`` and the ``k`` smallest of
    ``n`` random keys per row are cheap. Deterministic for a given generator state.
    """
    import torch

    if k > n:
        raise ValueError(f"{k} distinct ids do not fit in {n} ids")
    if n < 4 * k * k:
        keys = torch.rand(batch_size, n, generator=generator)
        return keys.topk(k, dim=1, largest=False, sorted=True).indices
    ids = torch.randint(n, (batch_size, k), generator=generator)
    while True:  # one pass per round of redraws, not per sequence
        ordered = ids.sort(dim=1).values
        repeats = (ordered[:, 1:] == ordered[:, :-1]).any(dim=1)
        n_bad = int(repeats.sum())
        if n_bad == 0:
            return ids
        ids[repeats] = torch.randint(n, (n_bad, k), generator=generator)


def induction_determined(tokens: Int[Tensor, "batch pos"]) -> Bool[Tensor, "batch pos"]:
    """Positions whose next token an induction rule determines from the context.

    True at ``t`` when the token at ``t`` occurred earlier and every earlier occurrence was
    followed by the same token (which is then the prediction). The last position is False.
    """
    import torch

    n_pos = tokens.shape[1]
    out = torch.zeros_like(tokens, dtype=torch.bool)
    if n_pos < 3:
        return out
    t = tokens[:, :-1]  # positions that have a next token
    nxt = tokens[:, 1:]
    earlier = torch.ones(n_pos - 1, n_pos - 1, dtype=torch.bool).tril(-1)  # [query, key]: s < t
    occurs = (t.unsqueeze(2) == t.unsqueeze(1)) & earlier
    disagree = occurs & (nxt.unsqueeze(2) != nxt.unsqueeze(1))
    out[:, :-1] = occurs.any(dim=2) & ~disagree.any(dim=2)
    return out


def _with_bos(
    tokens: Int[Tensor, "batch pos"], mask: Bool[Tensor, "batch pos"]
) -> tuple[Tensor, Tensor]:
    import torch

    batch = tokens.shape[0]
    tokens = torch.cat([torch.zeros(batch, 1, dtype=torch.long), tokens], dim=1)
    mask = torch.cat([torch.zeros(batch, 1, dtype=torch.bool), mask], dim=1)
    return tokens, mask


@dataclass(frozen=True)
class InductionTask(TaskBase):
    """Sequences that repeat with a random period: ``x[t] = x[t - period]`` after one period.

    Each sequence draws its period uniformly from ``[min_period, max_period]`` and its first
    period of tokens without replacement. The model predicts the next token; the loss mask
    keeps the positions ``t >= period``, whose token occurred one period earlier and is
    followed by the token to predict. Position ``period - 1`` is not kept: its next token is
    the first repeat, but nothing in the context says the period has ended. A random period
    per sequence rules out positional shortcuts.

    Args:
        d_vocab: Vocabulary size of the model; with ``bos`` id 0 is reserved for BOS.
        seq_len: Length of each sequence, BOS included.
        min_period: Shortest period.
        max_period: Longest period; at most the number of non-BOS ids, and short enough to
            leave a predictable position (``max_period <= seq_len - bos - 2``).
        bos: Prepend a BOS token (id 0) to every sequence.
        seed: Seed of the default data stream and of :meth:`probe`.
    """

    d_vocab: int = 32
    seq_len: int = 48
    min_period: int = 4
    max_period: int = 24
    bos: bool = False
    seed: int = 0
    name: str = field(default="induction", init=False)

    def __post_init__(self) -> None:
        check_task_fields(self)
        _check_bool("bos", self.bos)
        _check_int("min_period", self.min_period, 1)
        _check_int("max_period", self.max_period, self.min_period)
        n_ids, body = self.d_vocab - int(self.bos), self.seq_len - int(self.bos)
        if self.max_period > n_ids:
            raise ValueError(
                f"max_period={self.max_period} exceeds the {n_ids} distinct ids available "
                f"(d_vocab={self.d_vocab}, bos={self.bos})"
            )
        if self.max_period > body - 2:
            raise ValueError(
                f"max_period={self.max_period} leaves no predictable repeat in "
                f"seq_len={self.seq_len}: a sequence needs a period, one repeated token and its "
                f"successor (max_period <= {body - 2})"
            )
        if self.probe_length < 2:
            raise ValueError(
                f"seq_len={self.seq_len}, d_vocab={self.d_vocab} leave no room for the "
                f"probe, two copies of at least 2 distinct tokens (seq_len >= "
                f"{4 + int(self.bos)}, d_vocab >= {2 + int(self.bos)})"
            )

    @property
    def probe_length(self) -> int:
        """Default length ``S`` of the probe's repeat: half the sequence, if the ids allow."""
        return min((self.seq_len - int(self.bos)) // 2, self.d_vocab - int(self.bos))

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        """Draws a batch; ``tokens``, ``targets`` and ``mask`` are ``[batch_size, seq_len]``."""
        import torch

        _check_int("batch_size", batch_size, 1)
        _check_generator(generator)
        offset = int(self.bos)
        body = self.seq_len - offset
        period = torch.randint(
            self.min_period, self.max_period + 1, (batch_size, 1), generator=generator
        )
        ids = distinct_ids(batch_size, self.max_period, self.d_vocab - offset, generator)
        pos = torch.arange(body).unsqueeze(0)
        tokens = ids.gather(1, pos % period) + offset
        mask = pos >= period  # the current token is a repeat: its successor is known
        mask[:, -1] = False
        if self.bos:
            tokens, mask = _with_bos(tokens, mask)
        return Batch(tokens, next_token_targets(tokens), mask)

    def probe(
        self, batch_size: int = 32, seed: int | None = None, *, length: int | None = None
    ) -> Batch:
        """The repeated-random-tokens probe: ``[BOS] r r`` with ``r`` of ``length`` distinct ids.

        ``length`` defaults to :attr:`probe_length`. The mask marks the second copy's positions
        whose next token is a repeat (``length - 1`` per sequence).
        """
        length = self.probe_length if length is None else length
        _check_int("length", length, 2, self.probe_length)
        return repeated_tokens(
            batch_size,
            length,
            self.d_vocab,
            bos=self.bos,
            distinct=True,
            seed=probe_seed(self.seed, seed),
        )


def repeated_tokens(
    batch_size: int,
    length: int,
    d_vocab: int,
    *,
    bos: bool = False,
    distinct: bool | None = None,
    seed: int = 0,
) -> Batch:
    """A random sequence of ``length`` tokens repeated once (after BOS id 0 if ``bos``).

    ``mask`` is True at second-copy positions whose next token the earlier tokens determine.

    Args:
        distinct: Draw the sequence without replacement, so that every token has exactly one
            earlier copy and every second-copy position is predictable. The papers draw with
            replacement from a vocabulary of 50k, where duplicates are rare; in a toy vocabulary
            they are not, so the default is distinct whenever ``length`` fits. With replacement
            the mask leaves out positions whose token occurred earlier followed by different
            tokens (the next token is then ambiguous).
    """
    import torch

    _check_int("batch_size", batch_size, 1)
    _check_int("length", length, 2)
    _check_int("d_vocab", d_vocab, 2)
    _check_bool("bos", bos)
    _check_int("seed", seed, 0, _MAX_SEED)
    offset = int(bos)
    n_ids = d_vocab - offset
    if distinct is None:
        distinct = length <= n_ids
    _check_bool("distinct", distinct)
    if distinct and length > n_ids:
        raise ValueError(f"length={length} distinct tokens do not fit in {n_ids} ids")
    gen = torch.Generator().manual_seed(seed)
    if distinct:
        half = distinct_ids(batch_size, length, n_ids, gen) + offset
    else:
        half = torch.randint(offset, d_vocab, (batch_size, length), generator=gen)
    tokens = torch.cat([half, half], dim=1)
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, length:-1] = True
    if bos:
        tokens, mask = _with_bos(tokens, mask)
    if not distinct:
        mask &= induction_determined(tokens)
    return Batch(tokens, next_token_targets(tokens), mask, repeat_length=length)


@dataclass(frozen=True)
class ShiftByOneTask(TaskBase):
    """Copy the previous token: the target at position ``t`` is the token at ``t - 1``.

    This is exactly what a previous-token head computes; a 1-layer model learns it. The probe
    is a held-out batch of the task.

    Args:
        d_vocab: Vocabulary size; tokens are uniform over ``[0, d_vocab)``.
        seq_len: Length of each sequence.
        seed: Seed of the default data stream and of :meth:`probe`.
    """

    d_vocab: int = 32
    seq_len: int = 32
    seed: int = 0
    name: str = field(default="shift", init=False)

    def __post_init__(self) -> None:
        check_task_fields(self)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        import torch

        _check_int("batch_size", batch_size, 1)
        _check_generator(generator)
        tokens = torch.randint(0, self.d_vocab, (batch_size, self.seq_len), generator=generator)
        targets = torch.cat([tokens[:, :1], tokens[:, :-1]], dim=1)
        mask = torch.ones_like(tokens, dtype=torch.bool)
        mask[:, 0] = False
        return Batch(tokens, targets, mask)


# --- the registry ---
TASKS: dict[str, Callable[..., Task]] = {}
_REQUIRED_METHODS = ("sample", "probe", "to_dict")


def register_task(name: str) -> Callable[[Callable[..., Task]], Callable[..., Task]]:
    """Class decorator adding a task to the registry, so that :func:`make_task`,
    ``circuits train --task NAME``, resuming and ``circuits report`` find it by name.

    The task's ``name`` must be ``name`` (checkpoints record it). In a script, import the
    module that registers the task before building the CLI; from an installed package,
    declare it in the ``circuits.tasks`` entry-point group (see the module docstring).

    Example:
        >>> @register_task("constant")
        ... @dataclass(frozen=True)
        ... class Constant(TaskBase):
        ...     d_vocab: int = 8; seq_len: int = 8; seed: int = 0; name: str = "constant"
        ...     def sample(self, batch_size, generator): ...
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a task name must be an identifier, got {name!r}")

    def decorator(factory: Callable[..., Task]) -> Callable[..., Task]:
        if name in TASKS:
            raise ValueError(f"a task named {name!r} is already registered")
        if inspect.isclass(factory):
            missing = [m for m in _REQUIRED_METHODS if not callable(getattr(factory, m, None))]
            if missing:
                raise TypeError(
                    f"task {factory.__name__} has no {', '.join(missing)}(): see "
                    "circuits.tasks.Task (TaskBase supplies probe and to_dict)"
                )
        TASKS[name] = factory
        return factory

    return decorator


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def task_names() -> list[str]:
    """Registered task names, with those declared by installed packages (not yet imported)."""
    return sorted(set(TASKS) | set(_entry_points()))


class TaskChoices:
    """Task names as argparse ``choices``: ``in`` reads packages' entry points only for a name
    not registered in this process, and the names are listed only when help or an error is
    printed, so parsing ``--task induction`` stays instant."""

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in TASKS or name in _entry_points())

    def __iter__(self) -> Iterator[str]:
        return iter(task_names())

    def __len__(self) -> int:
        return len(task_names())


def _lookup(name: str) -> Callable[..., Task]:
    if name not in TASKS:
        ep = _entry_points().get(name)
        if ep is not None:
            try:
                factory = ep.load()
            except Exception as e:  # the plugin's import error, whatever it is
                raise ValueError(f"task {name!r}: loading {ep.value} failed: {e}") from e
            TASKS.setdefault(name, factory)  # registered on import, or registered here
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; registered: {', '.join(task_names())}")
    return TASKS[name]


def make_task(name: str, /, **kwargs: Any) -> Task:
    """Builds a registered task by name, e.g. ``make_task("induction", d_vocab=32)``.

    Raises:
        ValueError: Unknown task, a parameter the task does not take, or a bad value.
        TypeError: A value of the wrong type, or a factory that does not build a task.
    """
    factory = _lookup(name)
    if kwargs.get("name", name) != name:
        raise ValueError(f"name={kwargs['name']!r} given for task {name!r}")
    kwargs.pop("name", None)
    params = inspect.signature(factory).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise ValueError(
                f"task {name!r} has no parameter {', '.join(map(repr, unknown))}; "
                f"it takes {', '.join(params) or 'none'}"
            )
    task = factory(**kwargs)
    missing = [a for a in ("name", "d_vocab", "seq_len", "seed") if not hasattr(task, a)]
    missing += [f"{m}()" for m in _REQUIRED_METHODS if not callable(getattr(task, m, None))]
    if missing:
        raise TypeError(f"task {name!r} built a {type(task).__name__} without {', '.join(missing)}")
    if task.name != name:
        raise ValueError(f"task registered as {name!r} calls itself {task.name!r}: they must match")
    return task


def task_from_dict(data: Any) -> Task:
    """Rebuilds a task from its ``to_dict()`` (as recorded in a checkpoint's metadata)."""
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise ValueError(f"a task record must be a dict with a 'name', got {data!r}")
    return make_task(data["name"], **{k: v for k, v in data.items() if k != "name"})


register_task("induction")(InductionTask)
register_task("shift")(ShiftByOneTask)
