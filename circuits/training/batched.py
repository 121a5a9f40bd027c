"""Many seeds of one architecture trained together: :func:`train_batched` and :class:`BatchedRun`.

Each instance is the run :func:`circuits.train` would make of its own ``(model, task, cfg)``:
its own init (the model passed in), data stream (a generator seeded by its ``cfg.seed``),
probe, AdamW state, targets and early stop. What they share is the computation: parameters
stacked with a leading instance axis (:mod:`circuits.training.stacked`), one forward, one
backward and one fused AdamW step for the group. AdamW is elementwise, so one optimizer over
the stacked tensors is each instance's optimizer; gradient clipping takes each instance's own
norm. An instance that meets its targets (or diverges) leaves the group at once: its weights
are written back to its model and the group shrinks, so it neither updates nor costs more.

Not bitwise equal to :func:`circuits.train`: the stacked matmuls (``bmm`` over the group) and
reductions (the masked mean, the clipping norm) sum in another order than the single model's
``addmm``, so weights agree to float32 rounding, which a few dozen AdamW steps amplify to about
1e-6 (tested at 1e-5).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from circuits.model import HookedTransformer
from circuits.tasks import Task
from circuits.training import stacked
from circuits.training.batched_eval import evaluate_stacked
from circuits.training.config import TrainConfig, targets_met
from circuits.training.loop import TrainingDiverged, check_compatible
from circuits.training.state import TrainResult, save_training

__all__ = ["BatchedRun", "train_batched"]

# Fields a group's train configs may differ in: the seed, and what only affects display.
_PER_INSTANCE = ("seed", "progress")


def _strip(d: dict, keys: Sequence[str]) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


def check_group(
    models: Sequence[HookedTransformer], tasks: Sequence[Task], cfgs: Sequence[TrainConfig]
) -> None:
    """Raises ValueError unless the runs differ only in their seeds (and can be stacked)."""
    if not (len(models) == len(tasks) == len(cfgs)) or not models:
        raise ValueError(
            f"a batched group needs as many models, tasks and configs (>= 1); got "
            f"{len(models)}, {len(tasks)}, {len(cfgs)}"
        )
    kinds: tuple[tuple[str, Sequence[object], type], ...] = (
        ("model", models, HookedTransformer),
        ("task", tasks, Task),
        ("train config", cfgs, TrainConfig),
    )
    for kind, items, want in kinds:
        bad = [type(x).__name__ for x in items if not isinstance(x, want)]
        if bad:
            raise TypeError(
                f"every {kind} of a batched group must be a {want.__name__}, got {bad[0]}"
            )
    reason = stacked.unsupported(models[0].cfg)
    if reason is not None:
        raise ValueError(
            f"batched training does not implement {reason}; train these runs one by one"
        )
    parts = (
        ("architecture", [_strip(m.cfg.to_dict(), ("seed",)) for m in models]),
        ("task", [_strip(t.to_dict(), ("seed",)) for t in tasks]),
        ("train config", [_strip(c.to_dict(), _PER_INSTANCE) for c in cfgs]),
    )
    for what, dicts in parts:
        for i, d in enumerate(dicts[1:], 1):
            if d != dicts[0]:
                diff = sorted(k for k in {*d, *dicts[0]} if d.get(k) != dicts[0].get(k))
                raise ValueError(
                    f"runs 0 and {i} of a batched group differ in their {what} "
                    f"({', '.join(diff)}); a group shares everything but the seeds"
                )
    if getattr(cfgs[0], "interventions", ()):
        raise ValueError(
            "batched training does not implement interventions (they hook the model); train "
            "these runs one by one"
        )
    if cfgs[0].checkpoint_dir is not None:
        raise ValueError(
            "batched training writes no resumable training checkpoints (checkpoint_dir); save "
            "each model when its run ends"
        )
    for model, task in zip(models, tasks, strict=True):
        check_compatible(model, task)


class BatchedRun:
    """A group of runs being trained together (see the module doc); :meth:`step` takes one
    training step of every active instance, :func:`train_batched` drives it.

    Args:
        models: One freshly initialised model per instance (trained in place).
        tasks: Each instance's task (the same task but for its seed).
        cfgs: Each instance's train config (the same but for ``seed``/``progress``).
        memory_budget: Bytes the group may use (default: half the device's free memory);
            a larger group is refused before anything is allocated.
        on_leave: Called as ``on_leave(i, group)`` when run ``i`` (its index in ``models``)
            finished and its weights were written to its model, while its optimizer state is
            still in the group (:meth:`save_training`).
    """

    def __init__(
        self,
        models: Sequence[HookedTransformer],
        tasks: Sequence[Task],
        cfgs: Sequence[TrainConfig],
        memory_budget: int | None = None,
        on_leave: Callable[[int, BatchedRun], None] | None = None,
    ) -> None:
        check_group(models, tasks, cfgs)
        self.on_leave = on_leave
        cfg = cfgs[0]
        self.cfg, self.model_cfg = cfg, models[0].cfg
        device = torch.device(cfg.device) if cfg.device else next(models[0].parameters()).device
        stacked.check_fits(
            self.model_cfg, len(models), cfg.batch_size, tasks[0].seq_len, device, memory_budget
        )
        self.models, self.tasks, self.device = list(models), list(tasks), device
        self.params = {
            k: v.to(device).detach().requires_grad_(True) for k, v in stacked.stack(models).items()
        }
        probes = [task.probe(cfg.probe_size) for task in tasks]
        self.probe = [
            torch.stack([getattr(p, f) for p in probes]).to(device)
            for f in ("tokens", "targets", "mask")
        ]
        self.repeat_length = probes[0].repeat_length
        self.recorded = cfg.recorded_scores(probes[0])
        unsupported = [n for n in cfg.targets if n not in self.recorded]
        if unsupported:
            raise ValueError(f"target score(s) {unsupported} need a repeated-tokens probe")
        self.generators = [torch.Generator().manual_seed(c.seed) for c in cfgs]
        major, minor = (int(x) for x in torch.__version__.split(".")[:2])
        self.optimizer = torch.optim.AdamW(
            list(self.params.values()),
            lr=cfg.lr,
            betas=cfg.betas,
            weight_decay=cfg.weight_decay,
            fused=(major, minor) >= (2, 4) or None,
        )
        warmup = cfg.warmup_steps
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0
        )
        self.shell = HookedTransformer(self.model_cfg).to(device).eval()
        self.active = list(range(len(models)))  # original index of each stacked instance
        self.results: list[TrainResult | TrainingDiverged] = [TrainResult() for _ in models]
        self.steps = 0
        self.start = time.perf_counter()

    def _batch(self) -> list[torch.Tensor]:
        batches = [
            self.tasks[i].sample(self.cfg.batch_size, self.generators[i]) for i in self.active
        ]
        return [
            torch.stack([getattr(b, f) for b in batches]).to(self.device)
            for f in ("tokens", "targets", "mask")
        ]

    def step(self) -> None:
        """One training step of every active instance (evaluating when it is due)."""
        if not self.active:
            return
        tokens, targets, mask = self._batch()
        for p in self.params.values():
            p.grad = None
        losses = stacked.instance_losses(
            stacked.forward(self.params, self.model_cfg, tokens), targets, mask
        )
        values = losses.tolist()
        losses.sum().backward()  # instances share no parameter: each gets its own gradient
        self.steps += 1
        bad = [j for j, v in enumerate(values) if not math.isfinite(v)]
        if bad:  # before the optimizer step, so the survivors' states are untouched by them
            for j in bad:
                i = self.active[j]
                self.results[i] = TrainingDiverged(
                    f"training diverged at step {self.steps}: loss is {values[j]} "
                    f"(lr={self.cfg.lr})"
                )
            self._drop(bad, write_back=False)
            values = [v for j, v in enumerate(values) if j not in bad]
            if not self.active:
                return
        if self.cfg.grad_clip is not None:
            self._clip(self.cfg.grad_clip)
        self.optimizer.step()
        self.schedule.step()
        for j, i in enumerate(self.active):
            result = self.results[i]
            assert isinstance(result, TrainResult)
            result.losses.append(values[j])
            result.steps = self.steps
        if self.steps % self.cfg.eval_every == 0 or self.steps == self.cfg.steps:
            self._evaluate()
        if self.steps == self.cfg.steps:
            self._drop(list(range(len(self.active))), write_back=True)

    def save_training(self, i: int, path: str, train_config: TrainConfig) -> None:
        """Writes run ``i``'s resumable training checkpoint, as :func:`circuits.train` writes
        it when a run stops (``train_config`` recorded): its weights, its slice of the AdamW
        moments, the shared schedule, its data generator, losses and history. Valid while the
        run is still stacked, i.e. from ``on_leave``."""
        j = self.active.index(i)
        opt = self.optimizer.state_dict()  # one param group, parameters in the model's order
        opt["state"] = {
            k: {
                name: (v[j].clone() if name in ("exp_avg", "exp_avg_sq") else v.clone())
                for name, v in state.items()
            }
            for k, state in opt["state"].items()
        }
        save_training(
            path,
            self.models[i],
            step=self.steps,
            optimizer=_Saved(opt),
            schedule=self.schedule,
            generator=self.generators[i],
            result=self.results[i],
            task=self.tasks[i],
            train_config=train_config.to_dict(),
        )

    def _clip(self, max_norm: float) -> None:
        """Each instance's gradients scaled as ``clip_grad_norm_`` scales one model's."""
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        sq = torch.stack([g.pow(2).flatten(1).sum(1) for g in grads]).sum(0)
        coef = (max_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))

    def _evaluate(self) -> None:
        p_tokens, p_targets, p_mask = self.probe
        records = evaluate_stacked(
            self.params,
            self.shell,
            p_tokens,
            p_targets,
            p_mask,
            self.repeat_length,
            self.recorded,
            self.steps,
        )
        seconds = time.perf_counter() - self.start
        solved = []
        for j, (i, record) in enumerate(zip(self.active, records, strict=True)):
            result = self.results[i]
            assert isinstance(result, TrainResult)
            record = dataclasses.replace(record, train_loss=result.losses[-1], seconds=seconds)
            result.history.append(record)
            if targets_met(record, self.cfg):
                result.solved_at = self.steps
                solved.append(j)
        if solved:
            self._drop(solved, write_back=True)

    def _drop(self, positions: list[int], write_back: bool) -> None:
        """Removes stacked instances ``positions`` (writing their weights to their models)."""
        seconds = time.perf_counter() - self.start
        for j in positions:
            i = self.active[j]
            result = self.results[i]
            if isinstance(result, TrainResult):
                result.seconds = seconds
            if write_back:
                stacked.unstack_into(self.params, j, self.models[i])
                if self.on_leave is not None:
                    self.on_leave(i, self)
        keep_pos = [j for j in range(len(self.active)) if j not in set(positions)]
        keep = torch.tensor(keep_pos, dtype=torch.long, device=self.device)
        for p in self.params.values():
            p.data = p.data[keep]
            if p.grad is not None:
                p.grad = p.grad[keep]
            state = self.optimizer.state.get(p, {})
            for name in ("exp_avg", "exp_avg_sq"):
                if name in state:
                    state[name] = state[name][keep]
        self.probe = [t[keep] for t in self.probe]
        self.active = [self.active[j] for j in keep_pos]


class _Saved:
    """A state dict standing in for an optimizer (``save_training`` calls ``state_dict()``)."""

    def __init__(self, state: dict) -> None:
        self.state = state

    def state_dict(self) -> dict:
        return self.state


def train_batched(
    models: Sequence[HookedTransformer],
    tasks: Sequence[Task],
    cfgs: Sequence[TrainConfig],
    memory_budget: int | None = None,
    on_leave: Callable[[int, BatchedRun], None] | None = None,
) -> list[TrainResult | TrainingDiverged]:
    """Trains ``models`` in place as one stacked group; one result per run, in order.

    Each result is what :func:`circuits.train` would return for that run (losses, history,
    ``solved_at``, ``steps``; ``seconds`` is the group's wall time when the run left it), or
    a :class:`~circuits.training.TrainingDiverged` for a run whose loss became NaN or inf (its
    model keeps its initial weights; the others go on).

    ``memory_budget`` and ``on_leave``: see :class:`BatchedRun`.

    Raises:
        ValueError: The runs differ in more than their seeds, the architecture cannot be
            stacked (:func:`circuits.training.stacked.unsupported`), or the group does not fit
            in memory (checked before allocating).
    """
    group = BatchedRun(models, tasks, cfgs, memory_budget, on_leave)
    cfg = group.cfg
    bar = tqdm(
        total=cfg.steps,
        disable=not cfg.progress,
        desc=f"train {len(models)} x {tasks[0].name}",
        leave=False,
    )
    threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        while group.active:
            group.step()
            bar.update(1)
            bar.set_postfix(active=len(group.active))
    finally:
        torch.set_num_threads(threads)
        bar.close()
    return group.results
