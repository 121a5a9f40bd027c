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
# # Grokking modular addition: the Fourier mechanism
#
# Nanda et al. 2023 ("Progress measures for grokking via mechanistic interpretability",
# arXiv 2301.05217) trained a 1-layer transformer on `(a + b) mod 113` and found that it adds by
# rotating: it embeds `a` and `b` as `cos/sin(w_k a)` for a handful of *key frequencies*
# `w_k = 2πk/p`, multiplies them into `cos/sin(w_k(a+b))` in the attention and MLP, and reads out
# `logit(c) ≈ Σ_k α_k cos(w_k(a+b−c))`. We train the `modular_addition` preset (the paper's model at
# half width, 35% of the pairs instead of 30%, higher lr and weight decay so that it groks in
# minutes on a CPU: see docs/tasks-zoo.md) and recover the mechanism with
# `circuits.analysis.fourier`.

# %%
import copy
import os

import plotly.graph_objects as go
import torch

import circuits
from circuits import plots
from circuits.analysis import fourier
from circuits.plots.fourier import frequency_norms_figure, progress_measures_figure
from circuits.plots.style import finish
from circuits.presets import build

torch.manual_seed(0)
if os.environ.get("CIRCUITS_STATIC_FIGURES"):
    plots.static_figures()
else:
    plots.interactive_figures()

# %% [markdown]
# ## Training
# The probe is the held-out set, so the recorded accuracy is test accuracy; we also measure the
# accuracy on the training pairs at every evaluation. Grokking: training accuracy reaches 100%
# long before held-out accuracy does. We keep a copy of
# the weights at every evaluation to measure the progress measures afterwards with the final
# model's key frequencies (as the paper's analysis notebook does).

# %%
model, task, cfg = build("modular_addition", seed=0, train={"progress": False, "eval_every": 20})
snapshots, accuracy = [], []
train_batch = task.batch(task.pairs("train"))


def record(step, rec):
    snapshots.append((step, copy.deepcopy(model)))
    with torch.no_grad():
        logits = model(train_batch.tokens)[:, -1]
    train_acc = float((logits.argmax(-1) == train_batch.targets[:, -1]).float().mean())
    accuracy.append((step, train_acc, rec.accuracy))


result = circuits.train(model, task, cfg, callback=record)
print(
    f"p={task.p}, train fraction {task.train_fraction}: {result.steps} steps in "
    f"{result.seconds:.0f}s, held-out accuracy {result.final.accuracy:.4f}"
)
first_train = next(s for s, tr, _ in accuracy if tr == 1.0)
held_out = dict((s, te) for s, _, te in accuracy)[first_train]
print(f"training accuracy 100% at step {first_train}; held-out accuracy then {held_out:.3f}")

# %%
fig = go.Figure(
    [
        go.Scatter(x=[a[0] for a in accuracy], y=[a[1] for a in accuracy], name="train"),
        go.Scatter(x=[a[0] for a in accuracy], y=[a[2] for a in accuracy], name="held-out"),
    ]
)
fig.update_layout(xaxis_title="step", yaxis_title="accuracy", width=700, height=350)
finish(fig, "Accuracy: memorising, then generalising")

# %% [markdown]
# ## The embedding in the Fourier basis
# Paper (§4.1, main model): the embedding has 6 non-negligible frequencies, 5 used downstream,
# `k ∈ {14, 35, 41, 42, 52}`; other seeds use 3–4. Which frequencies is seed-dependent.

# %%
train_rows = task.pairs("train") @ torch.tensor([task.p, 1])
summary = fourier.mechanism_summary(model, task.p, train_rows)
print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items()})
frequency_norms_figure(fourier.embedding_norms(model, task.p), summary["key_frequencies"])

# %% [markdown]
# ## Progress measures over training
# Paper (§5, Figure 7): the restricted loss (only the key frequencies kept) falls before the test
# loss does; the excluded loss (key frequencies removed, training pairs) rises during circuit
# formation; the Gini coefficients of the frequency norms rise sharply in cleanup; the weight
# norm falls. The paper's phases span about 1.4k / 9.4k / 14k epochs; our preset compresses them
# into a few hundred steps.

# %%
freqs = summary["key_frequencies"]
history = [
    {"step": s, **fourier.progress_measures(m, task.p, freqs, train_rows)} for s, m in snapshots
]
progress_measures_figure(history)
