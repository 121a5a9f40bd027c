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
# # The formation atlas: 256 seeds of the default preset
#
# When do induction heads form, and how? One run answers for one seed; this notebook trains
# 256 seeds of `circuits train`'s default model and task at once (stacked: see
# docs/atlas.md), evaluated every 5 steps, and reads off the distribution: formation steps,
# the phase change, which layer-0 head became the previous-token head and how often a single
# head does that work (by ablation). A second sweep varies the learning rate.

# %%
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np

from circuits import plots
from circuits.analysis.split import SPLIT_SHARE
from circuits.plots import atlas
from circuits.sweep import ResultsStore, SweepSpec, run_sweep

if os.environ.get("CIRCUITS_STATIC_FIGURES"):
    plots.static_figures()
else:
    plots.interactive_figures()

SEEDS = int(os.environ.get("CIRCUITS_ATLAS_SEEDS", "256"))  # a smoke test sets a few
LR_SEEDS = max(1, SEEDS // 4)  # seeds 0..LR_SEEDS-1 at each other learning rate
WORK = Path(tempfile.mkdtemp(prefix="atlas-"))
# A run that has not met its targets by this step counts as failed. Default-preset runs meet them
# by step ~300; a run that collapses (as some do at a high learning rate) would otherwise train
# on to the preset's 3,000 steps.
STEPS = 600


def sweep(name: str, grid: dict, seeds: int) -> list[dict]:
    """A sweep of the default preset evaluated every 5 steps, trained in stacked groups of 32
    seeds (two workers, one group each at a time)."""
    spec = SweepSpec.from_dict(
        {
            "name": name,
            "preset": "induction",
            "base": {"train": {"eval_every": 5, "steps": STEPS}},
            "grid": grid,
            "seeds": seeds,
        }
    )
    out = WORK / name
    summary = run_sweep(spec, out, workers=2, quiet=True, batch_seeds=min(32, seeds))
    print(summary.line())
    return ResultsStore(out).rows()


def quantiles(values: list[float], fmt: str = "g") -> str:
    """``"10/50/90% a/b/c"`` of ``values`` ("none" if empty)."""
    if not values:
        return "none"
    q10, q50, q90 = np.quantile(values, [0.1, 0.5, 0.9])
    return f"10/50/90% {q10:{fmt}}/{q50:{fmt}}/{q90:{fmt}}"


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
print(f"{len(met)}/{len(rows)} runs met every target")
print(f"induction formed in {len(steps)}/{len(rows)} runs: steps {quantiles(steps)}")
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
print(f"{len(phases)}/{len(ok)} runs have a phase change; steps {quantiles(phases)}")
atlas.aligned_band(rows, series)

# %% [markdown]
# ## Does a single head do the previous-token work?
#
# The default model has two heads in layer 0, below its induction head. A final
# previous-token *score* only says where a head attends; whether the model needs it is an
# ablation question. For each run, on its probe (the positions the task scores), we compare the
# accuracy `a` with the top previous-token head mean-ablated (`a_top`) and with both layer-0
# heads mean-ablated (`a_all`): the top head's *share* of the work is
# `(a - a_top) / (a - a_all)` (1: it works alone; about 0: the other head stands in for it).
# A run *splits* the work when the share is below the threshold printed here
# (`circuits.analysis.split.previous_token_split`, recorded in each sweep row).

# %%
records = [r["circuit"]["previous_token_split"] for r in ok]
decided = [s for s in records if s is not None and s["split"] is not None]
single = sum(not s["split"] for s in decided)
shares = [s["share"] for s in decided]
tops: dict[str, int] = {}
for r in ok:
    head = (r["circuit"]["previous_token_head"] or {}).get("head")
    tops[head] = tops.get(head, 0) + 1
print(f"split threshold: share < {SPLIT_SHARE:g}")
print(
    f"a single previous-token head in {single}/{len(decided)} runs "
    f"({single / max(len(decided), 1):.0%}); split in {len(decided) - single}; "
    f"{len(ok) - len(decided)} runs without previous-token dependence"
)
print(f"share of the top head: {quantiles(shares, '.2f')}")
print("top previous-token head:", dict(sorted(tops.items(), key=lambda kv: str(kv[0]))))
atlas.previous_token_heads(rows)

# %% [markdown]
# The share is a continuum rather than two clusters: the threshold cuts a distribution.

# %%
atlas.previous_token_share(rows)

# %%
atlas.k_composition_excess(rows)

# %% [markdown]
# ## Learning rate
#
# The same preset at 0.01 and 0.04 (the default is 0.02), a quarter as many seeds each; those
# seeds are the first ones of the sweep above, so each seed is also compared with itself at the
# default rate.

# %% [markdown]
# A run *succeeds* when it meets every target of the preset (accuracy 0.9, induction and
# previous-token scores 0.4) within 600 steps; formation is the first evaluation with an
# induction score of 0.4, which a run can reach and then lose.

# %%
lr_rows = sweep("lr", {"train.lr": [0.01, 0.04]}, LR_SEEDS)
all_rows = lr_rows + [{**r, "axes": {**r["axes"], "train.lr": 0.02}} for r in rows]
at_default = {r["axes"]["seed"]: s for r in ok if (s := r["formed"]["induction"]["step"])}
for lr in (0.01, 0.02, 0.04):
    at = [r for r in all_rows if r["axes"]["train.lr"] == lr and r["status"] == "ok"]
    formed = {r["axes"]["seed"]: s for r in at if (s := r["formed"]["induction"]["step"])}
    ratios = [formed[k] / at_default[k] for k in formed if k < LR_SEEDS and k in at_default]
    split_at = [r["circuit"]["previous_token_split"] for r in at]
    decided_at = [s for s in split_at if s is not None and s["split"] is not None]
    single_at = sum(not s["split"] for s in decided_at)
    paired = f"x{statistics.median(ratios):.2f} (median of {len(ratios)})" if ratios else "none"
    succeeded = sum(bool(r["success"]) for r in at)
    missed = [r["final"]["accuracy"] for r in at if not r["success"]]
    print(
        f"lr {lr:g}: succeeded in {succeeded}/{len(at)}, induction formed in {len(formed)}, "
        f"steps {quantiles(list(formed.values()))}; "
        + ("" if lr == 0.02 else f"per seed vs lr 0.02: {paired}; ")
        + f"single previous-token head in {single_at}/{len(decided_at)}"
        + (
            f"; final accuracy of the runs that missed: {quantiles(missed, '.2f')}"
            if missed
            else ""
        )
    )
atlas.formation_quantiles(all_rows)

# %% [markdown]
# A higher learning rate forms induction heads sooner, a lower one later. At the highest rate
# the circuit still forms on time in every run, but some runs then stall below the accuracy
# target (the "formed, targets missed" bar): forming the circuit is not the same as using it
# well.

# %%
atlas.failure_modes(all_rows)
