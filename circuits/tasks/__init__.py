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

Modules: ``base.py`` (Batch, Task, TaskBase), ``probes.py`` (repeated tokens and other helpers),
``induction.py``, ``shift.py`` (one per task), ``registry.py`` (names, entry points).
"""

from circuits.tasks.base import (
    PROBE_SEED_OFFSET,
    Batch,
    Task,
    TaskBase,
    check_task_fields,
    probe_seed,
)
from circuits.tasks.induction import InductionTask
from circuits.tasks.markov_icl import MarkovICLTask
from circuits.tasks.modular_addition import ModularAdditionTask
from circuits.tasks.probes import (
    distinct_ids,
    induction_determined,
    next_token_targets,
    repeated_tokens,
)
from circuits.tasks.registry import (
    ENTRY_POINT_GROUP,
    TASKS,
    TaskChoices,
    make_task,
    register_task,
    task_from_dict,
    task_names,
)
from circuits.tasks.shift import ShiftByOneTask

register_task("induction")(InductionTask)
register_task("shift")(ShiftByOneTask)
register_task("modular_addition")(ModularAdditionTask)
register_task("markov_icl")(MarkovICLTask)

__all__ = [
    "ENTRY_POINT_GROUP",
    "PROBE_SEED_OFFSET",
    "TASKS",
    "Batch",
    "InductionTask",
    "MarkovICLTask",
    "ModularAdditionTask",
    "ShiftByOneTask",
    "Task",
    "TaskBase",
    "TaskChoices",
    "check_task_fields",
    "distinct_ids",
    "induction_determined",
    "make_task",
    "next_token_targets",
    "probe_seed",
    "register_task",
    "repeated_tokens",
    "task_from_dict",
    "task_names",
]
