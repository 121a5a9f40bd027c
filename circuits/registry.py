"""One tiny registry type: named entries (tasks, head scores, corruptions) in registration order.

A :class:`Registry` is a ``dict`` (iterate it, ``name in registry``, ``registry[name]``) with
three additions: :meth:`~Registry.register` as a decorator that refuses a second entry under
one name, :meth:`~Registry.lookup` whose error lists what is registered, and
:meth:`~Registry.remove`. A leaf: it imports nothing from circuits.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(dict[str, T]):
    """Named entries of one kind (``kind`` names it in errors, e.g. "task", "head score")."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._lock = threading.Lock()  # registration may happen from several threads

    def add(self, name: str, entry: T, *, replace: bool = False) -> T:
        """Registers ``entry`` under ``name``; returns it.

        Raises:
            ValueError: ``name`` is taken (and not ``replace``).
        """
        with self._lock:
            if name in self and not replace:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self[name] = entry
        return entry

    def register(self, name: str, *, replace: bool = False) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def decorator(entry: T) -> T:
            return self.add(name, entry, replace=replace)

        return decorator

    def lookup(self, name: object) -> T:
        """The entry ``name``.

        Raises:
            ValueError: nothing is registered under ``name`` (the message lists what is).
        """
        if not isinstance(name, str) or name not in self:
            raise ValueError(f"unknown {self.kind} {name!r}; registered: {', '.join(self)}")
        return self[name]

    def remove(self, name: str) -> None:
        """Removes ``name`` (tests; built-in entries can be removed too).

        Raises:
            ValueError: nothing is registered under ``name``.
        """
        with self._lock:
            if name not in self:
                raise ValueError(f"no {self.kind} {name!r} is registered")
            del self[name]

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self)})"
