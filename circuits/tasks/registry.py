"""The task registry: names to task factories, with installed packages' entry points.

:func:`register_task` adds a task; :func:`make_task` builds one by name; :func:`task_from_dict`
rebuilds one from its ``to_dict()`` (as a checkpoint records it).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

from circuits.registry import Registry
from circuits.tasks.base import Task

__all__ = [
    "ENTRY_POINT_GROUP",
    "TASKS",
    "TaskChoices",
    "make_task",
    "register_task",
    "task_from_dict",
    "task_names",
]

ENTRY_POINT_GROUP = "circuits.tasks"
TASKS: Registry[Callable[..., Task]] = Registry("task")
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
        if inspect.isclass(factory):
            missing = [m for m in _REQUIRED_METHODS if not callable(getattr(factory, m, None))]
            if missing:
                raise TypeError(
                    f"task {factory.__name__} has no {', '.join(missing)}(): see "
                    "circuits.tasks.Task (TaskBase supplies probe and to_dict)"
                )
        return TASKS.add(name, factory)

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
    return TASKS.lookup(name)


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
