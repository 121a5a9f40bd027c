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
# # In-context Markov chains: statistical induction heads
#
# Edelman et al. 2024 ("The evolution of statistical induction heads: in-context learning Markov
# chains", arXiv 2402.11004) train a 2-layer attention-only transformer on sequences that each
# come from their own random Markov chain. The model passes through three strategies: uniform
# predictions, the in-context **unigram** estimate (a plateau), then a rapid transition to the
# in-context **bigram** estimate, computed by a *statistical induction head*: a layer-1 head
# attending to the tokens that followed earlier copies of the current token, composed with a
# layer-0 previous-token head. We train the `markov_icl` preset (k = 3 states, sequences of 64)
# and track the KL from each strategy to the model with `circuits.analysis.markov`.

# %%
import os

import torch

import circuits
from circuits import plots
from circuits.analysis import markov
from circuits.plots.markov import kl_by_position_figure, strategy_kl_figure
from circuits.presets import build

torch.manual_seed(0)
if os.environ.get("CIRCUITS_STATIC_FIGURES"):
    plots.static_figures()
else:
    plots.interactive_figures()

# %%
model, task, cfg = build("markov_icl", seed=0, train={"progress": False, "eval_every": 25})
tracker = markov.PhaseTracker(model, task)
tracker(0)  # the untrained model
result = circuits.train(model, task, cfg, callback=tracker)
print(f"{result.steps} steps in {result.seconds:.0f}s")
print("phases:", [h["phase"] for h in tracker.history])

# %% [markdown]
# ## The phases
# Paper (saved outputs of the released plots.ipynb, k = 2, read from its figures): uniform until
# about 3k sequences, a unigram plateau, the bigram phase at about 68k–82k sequences in two runs
# (≈1,050–1,300 steps of batch 64). Our k = 3 preset with absolute positions and a larger
# learning rate gets there in a few hundred steps.

# %%
strategy_kl_figure(tracker.history)

# %%
batch, chains = task.probe_chains(256)
kl_by_position_figure(
    markov.strategy_kls(model, batch.tokens, chains), title="KL to the trained model by position"
)

# %% [markdown]
# ## The statistical induction head
# The `statistical_induction` score of each head (1: all attention on tokens that followed
# earlier copies of the current token; uniform attention scores about 1/k), next to the
# previous-token score. Paper: layer-1 relative attention ends one-hot on the previous token.

# %%
scores = result.final.scores
print("statistical induction:", scores["statistical_induction"].tolist())
print("previous token:       ", scores["previous_token"].tolist())
plots.attention_patterns(
    model, batch.tokens[0, :24], title="Attention on one sequence (states 0-2)"
)
