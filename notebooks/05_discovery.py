# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Circuit discovery, graded against a circuit we know
#
# Automatic circuit discovery (path patching, attribution patching, EAP, EAP-IG, ACDC) is hard
# to judge on real models because nobody knows the true circuit. Here we do: a 2-layer
# attention-only model trained on repeated sequences grows an induction circuit (a
# previous-token head in layer 0 K-composing into induction heads in layer 1), and we can
# hand-build circuits with known weights. We run every method, grade it against exact path
# patching, and look at where the cheap ones go wrong.

# %%
import dataclasses
import os

import plotly.express as px
import torch

from circuits import plots, presets, train
from circuits.discovery import (
    Problem,
    acdc,
    acdc_sweep,
    edge_attribution,
    exact_patching,
    faithfulness,
    reference_circuit,
    roc_auc,
    roc_curve,
)
from circuits.discovery.benchmark import induction_heads, key_edges
from circuits.discovery.handbuilt import HANDBUILT
from circuits.discovery.path_expansion import path_expansion, score_decomposition
from circuits.plots import discovery as dplots

_ = torch.manual_seed(0)
# Figures are interactive here; the stored outputs are static PNGs (`make notebooks` sets
# CIRCUITS_STATIC_FIGURES, which needs kaleido + Chromium).
if os.environ.get("CIRCUITS_STATIC_FIGURES"):
    plots.static_figures()
else:
    plots.interactive_figures()  # the report's toolbar settings

# %% [markdown]
# ## A trained induction model
# The default preset trains in a few seconds. The head scores tell us which heads to expect.

# %%
model, task, cfg = presets.build("induction", seed=0)
train(model, task, dataclasses.replace(cfg, progress=False))
model.eval()
probe = task.probe(32)
prev, induction = induction_heads(model, probe)
print("previous-token head:", prev, " induction heads:", induction)

# %% [markdown]
# ## The graph, the corruption and the metric
# Senders (embeddings, heads) write to the residual stream; receivers (each head's q, k and v
# input, the logits) read it; an edge is one pair. The corruption re-draws the first copy of
# the repeated sequence, so induction has nothing to copy; the metric is the loss on the
# repeated positions.

# %%
problem = Problem.build(model, probe, task="induction", metric="loss")
print(problem.graph)
patched = problem.value(torch.zeros(problem.graph.n_edges, dtype=torch.bool))
print(f"loss clean: {problem.value():.3f}  everything patched: {patched:.3f}")

# %% [markdown]
# ## Exact path patching: the ground truth
# One patched forward per edge (batched). Its top edges are the induction circuit: the
# previous-token head's value reads the token, its output feeds the induction heads' keys, the
# induction heads' values read the token and their outputs feed the logits.

# %%
exact = exact_patching(problem)
reference = reference_circuit(exact)
for name, score in exact.top(10):
    print(f"{name:16s} {score:+.3f}")
print("key edges and their ranks:", {e: exact.rank(e) for e in key_edges(prev, induction)})

# %%
dplots.circuit_graph(exact, reference=reference, title="Exact path patching (reference in orange)")

# %% [markdown]
# ## The cheap methods
# EAP uses one gradient at the clean run; EAP-IG averages gradients along the path from the
# corrupted to the clean embeddings; ACDC prunes edges from the logits backwards while the KL
# to the model stays within tau.

# %%
eap = edge_attribution(problem)
ig = edge_attribution(problem, ig_steps=5)
found = acdc(problem)
aucs = {s.method: roc_auc(s, reference) for s in (eap, ig, found.scores)}
print("ROC AUC against exact patching:", {name: round(auc, 3) for name, auc in aucs.items()})
print("ACDC kept", found.n_edges, "edges, faithfulness", round(faithfulness(problem, found.circuit), 3))
dplots.roc_curves({s.method: roc_curve(s, reference) for s in (eap, ig, found.scores)}, aucs)

# %% [markdown]
# ### Where plain attribution goes wrong
# Compare the scores themselves, not only their ranking. At the clean run the loss on the
# repeats is near its floor and the induction heads' softmax is saturated, so the local slope
# says little about a patch that costs nats: EAP's scores come out several to tens of times too
# small, and here even with the wrong sign (patching would, to first order, *lower* the loss). Ranking by magnitude can still come out right, which is why an ROC AUC
# alone flatters it. EAP-IG averages the gradient along the way from the corrupted input and
# gets the sign and the scale roughly right.

# %%
for name, _ in exact.top(7):
    print(f"{name:16s} exact {exact[name]:+.3f}   EAP {eap[name]:+.4f}   EAP-IG {ig[name]:+.3f}")
dplots.circuit_graph(eap, reference=reference)

# %% [markdown]
# ## ACDC: KL versus edges

# %%
sweep = acdc_sweep(problem, [0.003, 0.03, 0.3])
dplots.acdc_curve(sweep)

# %% [markdown]
# ## Path expansion
# With the attention patterns fixed, the logits split into the direct path, one term per head
# and one virtual-head term per pair (V-composition). The induction heads' own terms carry the
# behaviour; the virtual heads matter little, as in the framework paper: the composition that
# matters is K-composition, which sits in the attention pattern, not in these terms. The
# attention-score decomposition shows it: the induction head's query reads the token
# embedding and its key reads the previous-token head's output.

# %%
pe = path_expansion(model, probe.tokens, probe.targets, probe.mask)
dplots.path_expansion_bars(pe)

# %%
sd = score_decomposition(model, probe.tokens, 1, int(induction[0][-1]))
contrast = sd.induction_contrast(probe.repeat_length, probe.mask)
best = divmod(int(contrast.argmax()), len(sd.labels))
print("largest (query, key) term at the induction target:", sd.labels[best[0]], sd.labels[best[1]])
px.imshow(
    contrast,
    x=sd.labels,
    y=sd.labels,
    color_continuous_scale="RdBu_r",
    color_continuous_midpoint=0.0,
    labels=dict(x="key component", y="query component", color="attention score<br>difference"),
    title="Induction head: score at the target minus elsewhere, by (query, key) component",
)

# %% [markdown]
# ## Hand-built circuits: the same behaviour by two mechanisms
# A K-composition induction circuit and a Q-composition one (a duplicate-token head whose
# output the layer-1 query reads) have the same input-output behaviour. Discovery tells them
# apart: the layer-0 head's edge lands on the keys in one and the queries in the other.

# %%
for name in ("k_induction", "q_induction"):
    hb = HANDBUILT[name]()
    batch = hb.probe(16, 0)
    p = Problem.build(hb.model, batch, task=hb.task, metric="logit_diff")
    print(name, [n for n, s in exact_patching(p).top(4)], " ACDC:", acdc(p, tau=1e-4).edge_names())
