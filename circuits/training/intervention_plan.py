"""Attaching a run's interventions (:mod:`circuits.training.interventions`) to its model.

:class:`InterventionPlan` checks every intervention against the model before training, then,
step by step, registers each one's forward hooks (plain torch hooks on the hook points, so the
model's fast path steps aside only for the blocks they touch, and ``reset_hooks`` leaves them
alone) and sets ``requires_grad`` off for the parameters frozen on that step (AdamW then skips
them entirely, weight decay included). :meth:`InterventionPlan.close` undoes all of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import Tensor

from circuits.training.interventions import Intervention

__all__ = ["InterventionPlan"]


class InterventionPlan:
    """A run's interventions attached to its model: each one's hooks on, and its parameters
    frozen, exactly on the steps it is active. Use as a context manager (or call
    :meth:`close`): everything is removed and ``requires_grad`` restored at the end.

    Raises (on construction, before any change to the model):
        ValueError: an intervention names a layer, head or parameter the model lacks, starts
            at or after ``steps`` (it would never act), or the freezes cover every parameter.
    """

    def __init__(
        self, interventions: Iterable[Intervention], model: Any, n_pos: int, steps: int
    ) -> None:
        self.interventions = tuple(interventions)
        for i in self.interventions:
            i.check(model, n_pos)
            if i.start >= steps:
                raise ValueError(f"{i.kind} starts at step {i.start}; the run has {steps} steps")
        self.model = model
        self._grad = {n: p.requires_grad for n, p in model.named_parameters()}
        frozen = {n for i in self.interventions for n in i.parameters(model)}
        if frozen and frozen >= set(self._grad):
            raise ValueError("freeze: the patterns match every parameter; nothing would train")
        self._handles: dict[int, list[Any]] = {}

    def apply(self, step: int) -> None:
        """Sets the model up for step ``step`` (steps already taken)."""
        if not self.interventions:
            return
        hooks = dict(self.model.hook_dict)
        frozen: set[str] = set()
        for index, i in enumerate(self.interventions):
            on = i.active(step)
            if on and index not in self._handles:
                self._handles[index] = [
                    hooks[name].register_forward_hook(_wrap(fn)) for name, fn in i.hooks(self.model)
                ]
            elif not on and index in self._handles:
                for handle in self._handles.pop(index):
                    handle.remove()
            if on:
                frozen.update(i.parameters(self.model))
        for name, p in self.model.named_parameters():
            p.requires_grad_(self._grad[name] and name not in frozen)

    def close(self) -> None:
        """Removes every hook and restores ``requires_grad``."""
        for handles in self._handles.values():
            for handle in handles:
                handle.remove()
        self._handles.clear()
        for name, p in self.model.named_parameters() if self.interventions else ():
            p.requires_grad_(self._grad[name])

    def __enter__(self) -> InterventionPlan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _wrap(fn: Callable[[Tensor], Tensor]) -> Callable[..., Tensor]:
    """A torch forward hook ``(module, args, output) -> new output`` around ``fn``."""
    return lambda module, args, output: fn(output)
