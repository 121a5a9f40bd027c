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
# # Shift-by-one: a previous-token head in one layer
#
# The target at position *t* is the token at *t − 1*. A 1-layer attention-only model solves this
# with a single previous-token head whose OV circuit copies. We train one (a few seconds) and read
# the mechanism off its weights: the positional QK circuit puts each query's attention on the key
# just before it.

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
from circuits.presets import build

TRAIN = True
if TRAIN:
    model, task, cfg = build("shift", seed=0, train={"progress": False})
    result = circuits.train(model, task, cfg)
    print(f"{result.steps} steps in {result.seconds:.1f}s; accuracy {result.final['accuracy']:.3f}")
    history, losses = result.history, result.losses
else:
    from circuits import checkpoint
    from circuits.report import task_from_metadata

    model = HookedTransformer.load(DATA / "shift_1l")
    meta = checkpoint.read_metadata(DATA / "shift_1l")
    task, history, losses = task_from_metadata(meta), meta["history"], meta["losses"]
plots.training_dynamics({"history": history, "losses": losses})

# %%
from circuits.analysis.head_scores import evaluate

metrics = evaluate(model, task.probe(64))
scores = metrics["previous_token"]
layer, head = divmod(int(scores.argmax()), model.cfg.n_heads)
print(f"probe accuracy {metrics['accuracy']:.3f}; previous-token head L{layer}H{head} "
      f"(score {float(scores.max()):.2f})")
plots.head_scores(scores, "Previous-token scores")

# %%
example = task.probe(1).tokens[0, :16]
plots.attention_patterns(model, example)

# %% [markdown]
# ## Reading it off the weights
#
# The positional QK circuit `W_pos W_QK W_pos^T` of the head, masked causally, and the attention
# it implies from positions alone (softmax over the earlier keys): the mass sits on the
# sub-diagonal.

# %%
from circuits.analysis import circuits as circ

plots.circuit_heatmap(circ.positional_qk_circuit(model, layer, head),
                      f"Positional QK circuit of L{layer}H{head}", "key position",
                      "query position", causal=True, value="attention score (pre-softmax)")

# %%
attn = circ.positional_attention(model, layer, head)
n = attn.shape[0]
on_previous = attn[torch.arange(1, n), torch.arange(n - 1)]
print(f"from positions alone, L{layer}H{head} puts {float(on_previous.mean()):.0%} of its "
      f"attention on the previous position (argmax there for "
      f"{float((attn[1:].argmax(-1) == torch.arange(n - 1)).float().mean()):.0%} of queries)")
plots.circuit_heatmap(attn, "Attention from positions alone", "key position", "query position",
                      causal=True, value="attention weight", kind="probability")

# %%
ov = circ.full_ov_circuit(model, layer, head)
print(f"copying score of its OV circuit: {float(circ.copying_score(ov)):+.2f}")
plots.circuit_heatmap(ov, f"Full OV circuit of L{layer}H{head}", "output token",
                      "attended token", value="logit contribution")
