"""Training from scratch on a synthetic task: AdamW, warm-up, seeded, with head-score history.

The history records an :class:`~circuits.records.EvalRecord` (probe loss, accuracy and the
registered head scores) every ``eval_every`` steps, so the phase change (previous-token heads,
then induction heads, then the loss drop) can be watched. Training can stop on any registered
score: ``TrainConfig(targets={"induction": 0.4}, target_accuracy=0.9)``.

``config.py`` holds :class:`TrainConfig`; ``state.py`` the training state and its checkpoint
(save, read once, restore, the resume policy); ``loop.py`` :func:`train` and :func:`resume`.
"""

from circuits.training.config import TARGET_ALIASES, TrainConfig, targets_met
from circuits.training.loop import (
    TrainingDiverged,
    check_compatible,
    make_optimizer,
    resume,
    train,
)
from circuits.training.state import (
    RESUMABLE_CHANGES,
    TrainingCheckpoint,
    TrainResult,
    load_training,
    read_training_metadata,
    resume_plan,
    save_training,
    training_run,
)

__all__ = [
    "RESUMABLE_CHANGES",
    "TARGET_ALIASES",
    "TrainConfig",
    "TrainResult",
    "TrainingCheckpoint",
    "TrainingDiverged",
    "check_compatible",
    "load_training",
    "make_optimizer",
    "read_training_metadata",
    "resume",
    "resume_plan",
    "save_training",
    "targets_met",
    "train",
    "training_run",
]
