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
# # QK and OV circuits
#
# Read the trained 2-layer induction model from its **weights**, without running it:
#
# - the full OV circuit `W_E W_OV W_U` says what a head writes to the logits when it attends to
#   a token: a red diagonal means it copies;
# - its eigenvalues give the framework paper's copying score `sum(λ) / sum(|λ|)`;
# - the positional QK circuit `W_pos W_QK W_pos^T` shows where a head attends from positions
#   alone: a previous-token head prefers the key just before the query.

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
from circuits.analysis import circuits as circ
from circuits.analysis.head_scores import find_heads

model = HookedTransformer.load(DATA / "induction_2l")
previous = find_heads(model, "previous_token")
induction = [h for h in find_heads(model, "induction") if not h.startswith("L0")]
print("previous-token heads:", previous, " induction heads:", induction)

# %% [markdown]
# ## OV circuits: who copies?

# %%
ov = circ.full_ov_circuit(model)
# One colour scale per head (its maximum in its title): layer 0's OV circuits are far smaller
# than layer 1's and would look blank on a shared scale.
plots.circuit_grid(ov, "Full OV circuits W_E W_OV W_U", "output token", "attended token",
                   scale="head", value="logit contribution")

# %%
copying = circ.copying_score(ov)
for layer in range(model.cfg.n_layers):
    for head in range(model.cfg.n_heads):
        print(f"L{layer}H{head}: copying score {float(copying[layer, head]):+.2f}")
plots.eigenvalues(ov, copying)

# %% [markdown]
# The induction heads copy (score near +1): once they attend to the token that followed the
# earlier copy, they raise its logit. The previous-token head need not copy: what it writes is
# read by the induction heads' keys, not by the unembedding.

# %% [markdown]
# ## Positional QK circuit of the previous-token head

# %%
layer, head = int(previous[0][1]), int(previous[0][3:])
plots.circuit_heatmap(
    circ.positional_qk_circuit(model, layer, head),
    f"Positional QK circuit of {previous[0]}", "key position", "query position", causal=True,
    value="attention score (pre-softmax)",
)

# %%
attn = circ.positional_attention(model, layer, head)  # softmax over earlier keys, positions only
n = attn.shape[0]
hits = (attn[1:].argmax(-1) == torch.arange(n - 1)).float().mean()
print(f"from positions alone, {previous[0]} puts its top attention on the previous position "
      f"for {hits:.0%} of queries")
plots.circuit_heatmap(attn, f"Positional attention of {previous[0]}", "key position",
                      "query position", causal=True, value="attention weight", kind="probability")

# %% [markdown]
# In this model positions are only part of the story: the head also reads token content.
# Compare notebook 3, where a 1-layer model finds the previous token from positions alone.

# %% [markdown]
# ## Token QK circuits
#
# `W_E W_QK W_E^T`: how much a query token attends to a key token by identity alone. The
# induction heads' keys match on the *previous* token (through K-composition), so their direct
# token-token circuit shows no positive diagonal.

# %%
plots.circuit_grid(circ.full_qk_circuit(model), "Full QK circuits", "key token", "query token",
                   scale="head", value="attention score (pre-softmax)")
