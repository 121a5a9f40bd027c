# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# <!-- Source of notebooks/09_formation_atlas.py (issue 24), kept here until it is executed on a
# quiet machine (384 runs: a few minutes there; far longer on a shared one): copy it to
# notebooks/09_formation_atlas.py and run scripts/run_notebooks.py 09, which stores the outputs
# the notebook tests need. -->
# # The formation atlas: 256 seeds of the default preset
#
# When do induction heads form, and how? One run answers for one seed; this notebook trains
# 256 seeds of `circuits train`'s default model and task at once (stacked: see
# docs/atlas.md), evaluated every 5 steps, and reads off the distribution: formation steps,
# the phase change, which layer-0 head became the previous-token head and how often that work
# is split across both heads. A second, smaller sweep varies the learning rate.

# %%
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np

from circuits import plots
from circuits.plots import atlas
from circuits.sweep import ResultsStore, SweepSpec, run_sweep

if os.environ.get("CIRCUITS_STATIC_FIGURES"):
    plots.static_figures()
else:
    plots.interactive_figures()

SEEDS = 256
WORK = Path(tempfile.mkdtemp(prefix="atlas-"))


def sweep(name: str, grid: dict, seeds: int) -> list[dict]:
    """A sweep of the default preset evaluated every 5 steps, trained in stacked groups."""
    spec = SweepSpec.from_dict(
        {
            "name": name,
            "preset": "induction",
            "base": {"train": {"eval_every": 5}},
            "grid": grid,
            "seeds": seeds,
        }
    )
    out = WORK / name
    summary = run_sweep(spec, out, workers=2, quiet=True, batch_seeds=64)
    print(summary.line())
    return ResultsStore(out).rows()


rows = sweep("seeds", {}, SEEDS)

# %% [markdown]
# ## Formation steps
#
# A run's induction step is its first evaluation with a layer-1 induction score of 0.4 or more;
# evaluations are 5 steps apart, so it is known to within 5 steps.

# %%
ok = [r for r in rows if r["status"] == "ok"]
met = [r for r in ok if r["success"]]
steps = [r["formed"]["induction"]["step"] for r in ok if r["formed"]["induction"]["step"]]
q10, q50, q90 = np.quantile(steps, [0.1, 0.5, 0.9])
print(f"{len(met)}/{len(rows)} runs met every target")
print(
    f"induction formed in {len(steps)}/{len(rows)} runs: 10/50/90% at steps {q10:g}/{q50:g}/{q90:g}"
)
atlas.formation_quantiles(rows)

# %% [markdown]
# ## The phase change, aligned
#
# Each run's induction score against steps since its phase change (the steepest fall of the
# probe loss after its first plateau: `circuits.analysis.phase`): the median over runs and the
# band between the 10% and 90% quantiles.

# %%
store = ResultsStore(WORK / "seeds")
histories = {r["run_id"]: store.history(r["run_id"]) for r in ok}
series = {k: h["series"] for k, h in histories.items()}
phases = [r["phase"]["step"] for r in ok if r.get("phase")]
median_phase = statistics.median(phases)
print(f"{len(phases)}/{len(ok)} runs have a phase change; median at step {median_phase:g}")
atlas.aligned_band(rows, series)

# %% [markdown]
# ## Which layer-0 head becomes the previous-token head, and is the work split?
#
# The default model has two heads in layer 0. A run *splits* the previous-token work when both
# end with a previous-token score of 0.4 or more (read from the final scores).

# %%
finals = {k: h["history"][-1]["previous_token"] for k, h in histories.items()}
split = sum(sum(v >= 0.4 for v in table[0]) >= 2 for table in finals.values())
single = sum(sum(v >= 0.4 for v in table[0]) == 1 for table in finals.values())
tops: dict[str, int] = {}
for r in ok:
    head = r["circuit"]["previous_token_head"]["head"]
    tops[head] = tops.get(head, 0) + 1
share = single / len(ok)
print(f"a single previous-token head in {single}/{len(ok)} runs ({share:.0%}); split in {split}")
print("top previous-token head:", dict(sorted(tops.items())))
atlas.previous_token_heads(rows, finals)

# %%
atlas.k_composition_excess(rows)

# %% [markdown]
# ## Learning rate
#
# The same preset at two other learning rates, 64 seeds each, beside the 256 above.

# %%
lr_rows = sweep("lr", {"train.lr": [0.01, 0.03]}, 64)
by_lr: dict[float, list[int]] = {0.02: steps}
for r in lr_rows:
    step = r["formed"]["induction"]["step"] if r["status"] == "ok" else None
    if step:
        by_lr.setdefault(r["axes"]["train.lr"], []).append(step)
for lr in sorted(by_lr):
    q = np.quantile(by_lr[lr], [0.1, 0.5, 0.9])
    print(
        f"lr {lr:g}: formed in {len(by_lr[lr])} runs, 10/50/90% at steps {q[0]:g}/{q[1]:g}/{q[2]:g}"
    )
atlas.formation_quantiles(lr_rows)

# %%
atlas.failure_modes(lr_rows)
