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
# # Induction heads from scratch
#
# A 2-layer attention-only transformer trained on sequences that repeat with a random period
# learns an **induction circuit**: a *previous-token head* in layer 0 writes "the token before me
# was A" into each position, and an *induction head* in layer 1 uses it (K-composition) to find
# the earlier copy of the current token and attend to the token that followed it.
#
# We train one in seconds, watch the phase change, find the two heads, measure the composition
# between them, ablate the previous-token head, and contrast a 1-layer model.

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

# %% [markdown]
# ## Train
#
# `circuits.presets.build("induction")` is what `circuits train` runs: 2 layers, d_model 32,
# 2 heads, vocabulary 32, sequences of 48 with a random period in [4, 24]. Training stops once
# the probe accuracy reaches 0.9 and a previous-token and an induction head have formed.
# Set `TRAIN = False` to load the same model from `data/induction_2l` instead.

# %%
from circuits.presets import build

TRAIN = True
if TRAIN:
    model, task, train_cfg = build("induction", seed=0, train={"progress": False})
    result = circuits.train(model, task, train_cfg)
    history, losses = result.history, result.losses
    print(f"{result.steps} steps in {result.seconds:.1f}s, solved at step {result.solved_at}")
else:
    from circuits import checkpoint
    from circuits.report import task_from_metadata

    model = HookedTransformer.load(DATA / "induction_2l")
    meta = checkpoint.read_metadata(DATA / "induction_2l")
    task, history, losses = task_from_metadata(meta), meta["history"], meta["losses"]

# %% [markdown]
# ## The phase change
#
# The loss falls slowly, then abruptly, at the same time as the layer-1 heads' induction scores
# jump: the induction heads form. The orange line marks the phase change as the toolkit defines
# it everywhere (`circuits.analysis.phase`, after Olsson et al. 2022): the steepest fall of the
# in-context-learning score, read as the probe loss on the repeated half, searched after the
# loss's first plateau. Evaluations are `eval_every` steps apart, so the label names the two
# evaluations it lies between; the first evaluation with an induction score >= 0.4 is the
# cross-check. See docs/phase-change.md.

# %%
from circuits.analysis.phase import phase_change

phase = phase_change(history)
if phase is None:
    print("no phase change in this history")
else:
    print(
        f"phase change between steps {phase.start} and {phase.step}; "
        f"first induction score >= 0.4 at step {phase.prefix_matching_step}"
    )
plots.training_dynamics({"history": history, "losses": losses})

# %% [markdown]
# ## Which heads are which?
#
# Head scores on the standard probe (a random sequence repeated once). A previous-token head
# attends from position *i* to *i − 1*; an induction head attends from the second copy of a token
# to the token after its first copy.

# %%
from circuits.analysis.head_scores import find_heads, head_scores

probe = task.probe(64)
scores = head_scores(model, probe)
previous = find_heads(model, "previous_token", scores=scores)
induction = [h for h in find_heads(model, "induction", scores=scores) if not h.startswith("L0")]
print("previous-token heads:", previous)
print("induction heads:", induction)
plots.head_scores(scores["previous_token"], "Previous-token scores")

# %%
plots.head_scores(scores["induction"], "Induction scores")

# %% [markdown]
# Attention patterns on one repeated sequence (10 random tokens, twice). Look for the stripe
# just below the diagonal (previous-token) and the stripe offset by the period (induction).
# Hover over a cell to see the query and key tokens.

# %%
example = task.probe(1, length=10)
plots.attention_patterns(model, example.tokens[0])

# %% [markdown]
# ## K-composition
#
# The induction head's keys read what the previous-token head wrote. Composition scores measure
# that from the weights alone: K-composition from the previous-token head into the induction
# heads stands well above the random-matrix baseline, Q and V composition do not.

# %%
from circuits.analysis.composition import all_composition_scores

comp = all_composition_scores(model)
print(f"random baseline: {comp.baseline:.3f} ± {comp.baseline_std:.3f}")
for name in induction:
    layer, head = int(name[1]), int(name[3:])
    for source, excess in comp.top_sources("K", layer, head, k=2):
        print(f"{name} reads its keys from {source}: K-composition {comp.baseline + excess:.3f} "
              f"({excess:+.3f} over the baseline)")
plots.composition_scores(comp)

# %% [markdown]
# ## Ablation: remove the previous-token head
#
# Zeroing the previous-token head's output (`hook_z`) should break induction: the induction
# heads lose the signal their keys match on, and accuracy on repeated tokens falls. Ablating
# the other layer-0 head instead is the control. Where both layer-0 heads lean towards the
# previous token (see the scores above), the control costs something too, but less.

# %%
from circuits.analysis import ablation_hooks
from circuits.analysis.head_scores import evaluate

baseline = evaluate(model, probe)
print(f"clean: accuracy {baseline['accuracy']:.3f}, loss {baseline['loss']:.3f}")
for h in range(model.cfg.n_heads):
    with model.hooks(fwd_hooks=ablation_hooks(model, probe.tokens, [(0, h)])):
        m = evaluate(model, probe)
    tag = "previous-token head" if f"L0H{h}" in previous else "control"
    print(f"ablate L0H{h} ({tag}): accuracy {m['accuracy']:.3f}, loss {m['loss']:.3f}, "
          f"max layer-1 induction score {float(m['induction'][1:].max()):.2f}")

# %% [markdown]
# The previous-token head matters *only through the keys of the induction head*: ablate it again
# with every attention pattern frozen to the clean run (as in the induction-heads paper) and the
# damage disappears, because its direct contribution to the logits is negligible.

# %%
prev_head = previous[0]
hooks = ablation_hooks(model, probe.tokens, [prev_head], freeze_patterns=True)
with model.hooks(fwd_hooks=hooks):
    frozen = evaluate(model, probe)
print(f"ablate {prev_head} with patterns frozen: accuracy {frozen['accuracy']:.3f} "
      f"(clean {baseline['accuracy']:.3f})")

# %% [markdown]
# ## Contrast: one layer cannot do it
#
# A 1-layer attention-only model has no earlier head to compose with, so it cannot build an
# induction head; trained for the same budget on the same task, its accuracy on the repeats stays
# low and no head gets a high induction score.

# %%
TRAIN_1L = TRAIN
if TRAIN_1L:
    one, task1, cfg1 = build(
        "induction", seed=0, model={"n_layers": 1},
        train={"steps": 400, "target_accuracy": None, "targets": {},
               "progress": False},
    )
    circuits.train(one, task1, cfg1)
else:
    one = HookedTransformer.load(DATA / "induction_1l")
m1 = evaluate(one, probe)
print(f"1 layer: accuracy {m1['accuracy']:.3f} (2 layers: {baseline['accuracy']:.3f}), "
      f"max induction score {float(m1['induction'].max()):.2f}")
plots.attention_patterns(one, example.tokens[0], title="1-layer model: no induction stripe")

# %% [markdown]
# ## In-context learning
#
# Olsson et al. measure in-context learning as the loss at a late token minus the loss at an
# early one (here about position 4 and the last counted position): negative when later tokens
# are predicted better. We measure it on fresh task sequences, at the positions the task counts:
# those whose next token repeats an earlier one, so that the context determines it.
#
# On this task the score reads differently from a language model's. The 2-layer model is near
# zero loss from the first repeated token on: one earlier copy is all the context it needs; its
# loss rises only over the last few positions. The 1-layer model is good only at the first
# counted positions, where a positional rule still works (position 4 is counted only when the
# period is the shortest, 4, so its next token is the one at position 1), and gets worse as the
# possible periods multiply. Both scores are positive; the 1-layer model's is far larger.

# %%
from circuits.analysis import in_context_learning_score, loss_by_position

fresh = task.sample(512, torch.Generator().manual_seed(5))
by_position, icl = {}, {}
for name, m in (("2 layers", model), ("1 layer", one)):
    by_position[name] = loss_by_position(m, fresh.tokens, fresh.targets, fresh.mask)
    icl[name] = in_context_learning_score(m, fresh.tokens, targets=fresh.targets, mask=fresh.mask)
    print(f"{name}: in-context learning score {icl[name]:+.2f} nats")
plots.loss_by_position(by_position, title="Loss by position on repeats (lower is better)")
