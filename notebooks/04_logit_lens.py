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
# # Logit lens on a small LayerNorm + MLP model
#
# The logit lens reads the residual stream after each layer through the final LayerNorm and the
# unembedding, as if the model stopped there. On a repeated random sequence it shows *where* the
# model comes to know the next token: before the induction layer the correct token is not
# predicted; after it, it is.
#
# The model is `data/induction_2l_mlp` (2 layers, LayerNorm, MLPs, trained on the induction
# task; `make data` regenerates it).

# %%
import os
from pathlib import Path

import torch

import circuits
from circuits import HookedTransformer, plots

# Checkpoints shipped in data/ (regenerate with `make data`); notebooks run from notebooks/.
DATA = Path("../data") if Path("../data").is_dir() else Path("data")
torch.manual_seed(0)
# Figures are interactive here. The outputs stored in the repository are static PNGs, which a
# code host can show: `make notebooks` sets CIRCUITS_STATIC_FIGURES (needs kaleido + Chromium).
if os.environ.get("CIRCUITS_STATIC_FIGURES"):
    plots.static_figures()
else:
    plots.interactive_figures()  # the report's toolbar settings

# %%
from circuits.report import task_from_metadata
from circuits import checkpoint

path = DATA / "induction_2l_mlp"
model = HookedTransformer.load(path)
task = task_from_metadata(checkpoint.read_metadata(path))
seq = task.probe(1, length=12)
tokens, targets, mask = seq.tokens, seq.targets[0], seq.mask[0]
print(model.cfg.n_layers, "layers,", "LayerNorm" if model.cfg.normalization_type else "no LN")

# %% [markdown]
# `circuits.analysis.logit_lens` reads the residual stream before each block and at the end,
# through the final LayerNorm and `W_U` (the last point is exactly the model's output).

# %%
from circuits.analysis import TunedLens, logit_lens

lens = logit_lens(model, tokens)
target_prob = lens.target_prob(seq.targets)[:, 0]  # [point, pos]
rank = lens.target_rank(seq.targets)[:, 0]
top = lens.top_k(1)[1][:, 0, :, 0]  # top-1 token per point and position
print("points:", lens.labels)
print("last point equals the model:", torch.allclose(lens.logits[-1], lens.final_logits, atol=1e-5))
print("mean probability of the next token on the repeat, by point:",
      [round(float(p[mask].mean()), 3) for p in target_prob])

# %%
plots.lens_heatmap(target_prob, tokens[0], top, "probability", lens.labels,
                   title="Logit lens: probability of the next token (cells: top-1 token)")

# %%
plots.lens_heatmap(rank.float(), tokens[0], top, "rank", lens.labels,
                   title="Logit lens: rank of the next token (0 is top)")

# %% [markdown]
# From the first repeated token on, the correct token appears only after the last block: the
# induction step happens in layer 1. Before that, on the first copy, nothing can be predicted.
#
# ## Tuned lens
#
# The logit lens assumes every layer speaks the final layer's language. The tuned lens (Belrose
# et al. 2023) learns one affine translator per layer, `h + A h + b`, starting at zero (so it
# starts as the logit lens) and trained to minimise `KL(final || lens)` on the model's own task
# data. It is saved next to the checkpoint (`lens.save(path)`, `TunedLens.load(path, model)`).

# %%
tuned = TunedLens.for_model(model)
losses = tuned.fit(model, task, steps=300, seed=0)
held_out = task.sample(64, torch.Generator().manual_seed(123)).tokens
kl_logit = logit_lens(model, held_out).kl_to_final().mean(dim=(1, 2))
kl_tuned = tuned.lens(model, held_out).kl_to_final().mean(dim=(1, 2))
for label, a, b in zip(lens.labels[:-1], kl_logit, kl_tuned):
    print(f"{label:>10}: KL to final  logit lens {a:.3f}   tuned lens {b:.3f}")

# %%
tuned_result = tuned.lens(model, tokens)
plots.lens_heatmap(tuned_result.target_prob(seq.targets)[:, 0], tokens[0],
                   tuned_result.top_k(1)[1][:, 0, :, 0], "probability", tuned_result.labels,
                   title="Tuned lens: probability of the next token")
