"""Builds ``notebooks/*.ipynb`` from the cell sources below (outputs empty).

Usage: ``python scripts/build_notebooks.py``. Edit the cells here, not the ``.ipynb`` files, so
the notebooks stay reviewable as plain Python. Each notebook imports everything from
``circuits`` and runs top to bottom in a fresh kernel on a CPU in well under two minutes.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

SETUP = """\
from pathlib import Path

import torch

import circuits
from circuits import HookedTransformer, plots

# Checkpoints shipped in data/ (regenerate with `make data`); notebooks run from notebooks/.
DATA = Path("../data") if Path("../data").is_dir() else Path("data")
torch.manual_seed(0)"""

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {}

NOTEBOOKS["01_induction_heads"] = [
    (
        "md",
        """\
# Induction heads from scratch

A 2-layer attention-only transformer trained on sequences that repeat with a random period
learns an **induction circuit**: a *previous-token head* in layer 0 writes "the token before me
was A" into each position, and an *induction head* in layer 1 uses it (K-composition) to find
the earlier copy of the current token and attend to the token that followed it.

We train one in seconds, watch the phase change, find the two heads, measure the composition
between them, ablate the previous-token head, and contrast a 1-layer model.""",
    ),
    ("code", SETUP),
    (
        "md",
        """\
## Train

`circuits.presets.build("induction")` is what `circuits train` runs: 2 layers, d_model 32,
2 heads, vocabulary 32, sequences of 48 with a random period in [4, 24]. Training stops once
the probe accuracy reaches 0.9 and a previous-token and an induction head have formed.
Set `TRAIN = False` to load the same model from `data/induction_2l` instead.""",
    ),
    (
        "code",
        """\
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
    task, history, losses = task_from_metadata(meta), meta["history"], meta["losses"]""",
    ),
    (
        "md",
        """\
## The phase change

The loss falls slowly, then abruptly, at the same time as the layer-1 heads' induction scores
jump: the induction heads form. The orange line marks the steepest drop of the probe loss.""",
    ),
    (
        "code",
        """\
plots.training_dynamics({"history": history, "losses": losses})""",
    ),
    (
        "md",
        """\
## Which heads are which?

Head scores on the standard probe (a random sequence repeated once). A previous-token head
attends from position *i* to *i − 1*; an induction head attends from the second copy of a token
to the token after its first copy.""",
    ),
    (
        "code",
        """\
from circuits.analysis.head_scores import find_heads, head_scores

probe = task.probe(64)
scores = head_scores(model, probe)
previous = find_heads(model, "previous_token", scores=scores)
induction = [h for h in find_heads(model, "induction", scores=scores) if not h.startswith("L0")]
print("previous-token heads:", previous)
print("induction heads:", induction)
plots.head_scores(scores["previous_token"], "Previous-token scores")""",
    ),
    (
        "code",
        """\
plots.head_scores(scores["induction"], "Induction scores")""",
    ),
    (
        "md",
        """\
Attention patterns on one repeated sequence (10 random tokens, twice). Look for the stripe
just below the diagonal (previous-token) and the stripe offset by the period (induction).
Hover over a cell to see the query and key tokens.""",
    ),
    (
        "code",
        """\
example = task.probe(1, length=10)
plots.attention_patterns(model, example.tokens[0])""",
    ),
    (
        "md",
        """\
## K-composition

The induction head's keys read what the previous-token head wrote. Composition scores measure
that from the weights alone: K-composition from the previous-token head into the induction
heads stands well above the random-matrix baseline, Q and V composition do not.""",
    ),
    (
        "code",
        """\
from circuits.analysis.composition import all_composition_scores

comp = all_composition_scores(model)
for name in induction:
    layer, head = int(name[1]), int(name[3:])
    print(name, "reads its keys from", comp.top_sources("K", layer, head, k=2))
plots.composition_scores(comp)""",
    ),
    (
        "md",
        """\
## Ablation: remove the previous-token head

Zeroing the previous-token head's output (`hook_z`) should break induction: the induction
heads lose the signal their keys match on, and accuracy on repeated tokens collapses.
Ablating another layer-0 head instead is the control.""",
    ),
    (
        "code",
        """\
from circuits.analysis import ablation_hooks
from circuits.analysis.head_scores import evaluate

baseline = evaluate(model, probe)
print(f"clean: accuracy {baseline['accuracy']:.3f}, loss {baseline['loss']:.3f}")
for h in range(model.cfg.n_heads):
    with model.hooks(fwd_hooks=ablation_hooks(model, probe.tokens, [(0, h)])):
        m = evaluate(model, probe)
    tag = "previous-token head" if f"L0H{h}" in previous else "control"
    print(f"ablate L0H{h} ({tag}): accuracy {m['accuracy']:.3f}, loss {m['loss']:.3f}, "
          f"max layer-1 induction score {float(m['induction'][1:].max()):.2f}")""",
    ),
    (
        "md",
        """\
The previous-token head matters *only through the keys of the induction head*: ablate it again
with every attention pattern frozen to the clean run (as in the induction-heads paper) and the
damage disappears, because its direct contribution to the logits is negligible.""",
    ),
    (
        "code",
        """\
prev_head = previous[0]
hooks = ablation_hooks(model, probe.tokens, [prev_head], freeze_patterns=True)
with model.hooks(fwd_hooks=hooks):
    frozen = evaluate(model, probe)
print(f"ablate {prev_head} with patterns frozen: accuracy {frozen['accuracy']:.3f} "
      f"(clean {baseline['accuracy']:.3f})")""",
    ),
    (
        "md",
        """\
## Contrast: one layer cannot do it

A 1-layer attention-only model has no earlier head to compose with, so it cannot build an
induction head; trained for the same budget on the same task, its accuracy on the repeats stays
low and no head gets a high induction score.""",
    ),
    (
        "code",
        """\
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
plots.attention_patterns(one, example.tokens[0], title="1-layer model: no induction stripe")""",
    ),
    (
        "md",
        """\
## In-context learning

Olsson et al. measure in-context learning as the loss at a late token minus the loss at an
early one: negative when the model uses its context. On fresh task sequences, at the positions
the task can predict (a repeat has begun), the 2-layer model's loss falls with position as the
repeats pile up; the 1-layer model's does not.""",
    ),
    (
        "code",
        """\
from circuits.analysis import in_context_learning_score, loss_by_position

fresh = task.sample(512, torch.Generator().manual_seed(5))
by_position, icl = {}, {}
for name, m in (("2 layers", model), ("1 layer", one)):
    by_position[name] = loss_by_position(m, fresh.tokens, fresh.targets, fresh.mask)
    icl[name] = in_context_learning_score(m, fresh.tokens, targets=fresh.targets, mask=fresh.mask)
    print(f"{name}: in-context learning score {icl[name]:+.2f} nats")
plots.loss_by_position(by_position, title="Loss by position on repeats (lower is better)")""",
    ),
]

NOTEBOOKS["02_circuits"] = [
    (
        "md",
        """\
# QK and OV circuits

Read the trained 2-layer induction model from its **weights**, without running it:

- the full OV circuit `W_E W_OV W_U` says what a head writes to the logits when it attends to
  a token: a red diagonal means it copies;
- its eigenvalues give the framework paper's copying score `sum(λ) / sum(|λ|)`;
- the positional QK circuit `W_pos W_QK W_pos^T` shows where a head attends from positions
  alone: a previous-token head prefers the key just before the query.""",
    ),
    ("code", SETUP),
    (
        "code",
        """\
from circuits.analysis import circuits as circ
from circuits.analysis.head_scores import find_heads

model = HookedTransformer.load(DATA / "induction_2l")
previous = find_heads(model, "previous_token")
induction = [h for h in find_heads(model, "induction") if not h.startswith("L0")]
print("previous-token heads:", previous, " induction heads:", induction)""",
    ),
    ("md", "## OV circuits: who copies?"),
    (
        "code",
        """\
ov = circ.full_ov_circuit(model)
plots.circuit_grid(ov, "Full OV circuits W_E W_OV W_U", "output token", "attended token")""",
    ),
    (
        "code",
        """\
copying = circ.copying_score(ov)
for layer in range(model.cfg.n_layers):
    for head in range(model.cfg.n_heads):
        print(f"L{layer}H{head}: copying score {float(copying[layer, head]):+.2f}")
plots.eigenvalues(ov, copying)""",
    ),
    (
        "md",
        """\
The induction heads copy (score near +1): once they attend to the token that followed the
earlier copy, they raise its logit. The previous-token head need not copy: what it writes is
read by the induction heads' keys, not by the unembedding.""",
    ),
    ("md", "## Positional QK circuit of the previous-token head"),
    (
        "code",
        """\
layer, head = int(previous[0][1]), int(previous[0][3:])
plots.circuit_heatmap(
    circ.positional_qk_circuit(model, layer, head),
    f"Positional QK circuit of {previous[0]}", "key position", "query position", causal=True,
)""",
    ),
    (
        "code",
        """\
attn = circ.positional_attention(model, layer, head)  # softmax over earlier keys, positions only
n = attn.shape[0]
hits = (attn[1:].argmax(-1) == torch.arange(n - 1)).float().mean()
print(f"from positions alone, {previous[0]} puts its top attention on the previous position "
      f"for {hits:.0%} of queries")
plots.circuit_heatmap(attn, f"Positional attention of {previous[0]}", "key position",
                      "query position", causal=True)""",
    ),
    (
        "md",
        """\
In this model positions are only part of the story: the head also reads token content.
Compare notebook 3, where a 1-layer model finds the previous token from positions alone.""",
    ),
    (
        "md",
        """\
## Token QK circuits

`W_E W_QK W_E^T`: how much a query token attends to a key token by identity alone. The
induction heads' keys match on the *previous* token (through K-composition), so their direct
token-token circuit shows no positive diagonal.""",
    ),
    (
        "code",
        """\
plots.circuit_grid(circ.full_qk_circuit(model), "Full QK circuits", "key token", "query token")""",
    ),
]

NOTEBOOKS["03_shift_by_one"] = [
    (
        "md",
        """\
# Shift-by-one: a previous-token head in one layer

The target at position *t* is the token at *t − 1*. A 1-layer attention-only model solves this
with a single previous-token head whose OV circuit copies. We train one (a few seconds) and read
the mechanism off its weights: the positional QK circuit puts each query's attention on the key
just before it.""",
    ),
    ("code", SETUP),
    (
        "code",
        """\
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
plots.training_dynamics({"history": history, "losses": losses})""",
    ),
    (
        "code",
        """\
from circuits.analysis.head_scores import evaluate

metrics = evaluate(model, task.probe(64))
scores = metrics["previous_token"]
layer, head = divmod(int(scores.argmax()), model.cfg.n_heads)
print(f"probe accuracy {metrics['accuracy']:.3f}; previous-token head L{layer}H{head} "
      f"(score {float(scores.max()):.2f})")
plots.head_scores(scores, "Previous-token scores")""",
    ),
    (
        "code",
        """\
example = task.probe(1).tokens[0, :16]
plots.attention_patterns(model, example)""",
    ),
    (
        "md",
        """\
## Reading it off the weights

The positional QK circuit `W_pos W_QK W_pos^T` of the head, masked causally, and the attention
it implies from positions alone (softmax over the earlier keys): the mass sits on the
sub-diagonal.""",
    ),
    (
        "code",
        """\
from circuits.analysis import circuits as circ

plots.circuit_heatmap(circ.positional_qk_circuit(model, layer, head),
                      f"Positional QK circuit of L{layer}H{head}", "key position",
                      "query position", causal=True)""",
    ),
    (
        "code",
        """\
attn = circ.positional_attention(model, layer, head)
n = attn.shape[0]
on_previous = attn[torch.arange(1, n), torch.arange(n - 1)]
print(f"from positions alone, L{layer}H{head} puts {float(on_previous.mean()):.0%} of its "
      f"attention on the previous position (argmax there for "
      f"{float((attn[1:].argmax(-1) == torch.arange(n - 1)).float().mean()):.0%} of queries)")
plots.circuit_heatmap(attn, "Attention from positions alone", "key position", "query position",
                      causal=True)""",
    ),
    (
        "code",
        """\
ov = circ.full_ov_circuit(model, layer, head)
print(f"copying score of its OV circuit: {float(circ.copying_score(ov)):+.2f}")
plots.circuit_heatmap(ov, f"Full OV circuit of L{layer}H{head}", "output token",
                      "attended token")""",
    ),
]


NOTEBOOKS["04_logit_lens"] = [
    (
        "md",
        """\
# Logit lens on a small LayerNorm + MLP model

The logit lens reads the residual stream after each layer through the final LayerNorm and the
unembedding, as if the model stopped there. On a repeated random sequence it shows *where* the
model comes to know the next token: before the induction layer the correct token is not
predicted; after it, it is.

The model is `data/induction_2l_mlp` (2 layers, LayerNorm, MLPs, trained on the induction
task; `make data` regenerates it).""",
    ),
    ("code", SETUP),
    (
        "code",
        """\
from circuits.report import task_from_metadata
from circuits import checkpoint

path = DATA / "induction_2l_mlp"
model = HookedTransformer.load(path)
task = task_from_metadata(checkpoint.read_metadata(path))
seq = task.probe(1, length=12)
tokens, targets, mask = seq.tokens, seq.targets[0], seq.mask[0]
print(model.cfg.n_layers, "layers,", "LayerNorm" if model.cfg.normalization_type else "no LN")""",
    ),
    (
        "md",
        """\
`circuits.analysis.logit_lens` reads the residual stream before each block and at the end,
through the final LayerNorm and `W_U` (the last point is exactly the model's output).""",
    ),
    (
        "code",
        """\
from circuits.analysis import TunedLens, logit_lens

lens = logit_lens(model, tokens)
target_prob = lens.target_prob(seq.targets)[:, 0]  # [point, pos]
rank = lens.target_rank(seq.targets)[:, 0]
top = lens.top_k(1)[1][:, 0, :, 0]  # top-1 token per point and position
print("points:", lens.labels)
print("last point equals the model:", torch.allclose(lens.logits[-1], lens.final_logits, atol=1e-5))
print("mean probability of the next token on the repeat, by point:",
      [round(float(p[mask].mean()), 3) for p in target_prob])""",
    ),
    (
        "code",
        """\
plots.lens_heatmap(target_prob, tokens[0], top, "probability", lens.labels,
                   title="Logit lens: probability of the next token (cells: top-1 token)")""",
    ),
    (
        "code",
        """\
plots.lens_heatmap(rank.float(), tokens[0], top, "rank", lens.labels,
                   title="Logit lens: rank of the next token (0 is top)")""",
    ),
    (
        "md",
        """\
From the first repeated token on, the correct token appears only after the last block: the
induction step happens in layer 1. Before that, on the first copy, nothing can be predicted.

## Tuned lens

The logit lens assumes every layer speaks the final layer's language. The tuned lens (Belrose
et al. 2023) learns one affine translator per layer, `h + A h + b`, starting at zero (so it
starts as the logit lens) and trained to minimise `KL(final || lens)` on the model's own task
data. It is saved next to the checkpoint (`lens.save(path)`, `TunedLens.load(path, model)`).""",
    ),
    (
        "code",
        """\
tuned = TunedLens.for_model(model)
losses = tuned.fit(model, task, steps=300, seed=0)
held_out = task.sample(64, torch.Generator().manual_seed(123)).tokens
kl_logit = logit_lens(model, held_out).kl_to_final().mean(dim=(1, 2))
kl_tuned = tuned.lens(model, held_out).kl_to_final().mean(dim=(1, 2))
for label, a, b in zip(lens.labels[:-1], kl_logit, kl_tuned):
    print(f"{label:>10}: KL to final  logit lens {a:.3f}   tuned lens {b:.3f}")""",
    ),
    (
        "code",
        """\
tuned_result = tuned.lens(model, tokens)
plots.lens_heatmap(tuned_result.target_prob(seq.targets)[:, 0], tokens[0],
                   tuned_result.top_k(1)[1][:, 0, :, 0], "probability", tuned_result.labels,
                   title="Tuned lens: probability of the next token")""",
    ),
]


def build_notebook(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.cells = [
        new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in cells
    ]
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:02d}"  # stable ids: rebuilding changes only the cells that changed
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def main() -> None:
    out = Path(__file__).resolve().parent.parent / "notebooks"
    out.mkdir(exist_ok=True)
    for name, cells in NOTEBOOKS.items():
        path = out / f"{name}.ipynb"
        nbformat.write(build_notebook(cells), path)
        print(path)


if __name__ == "__main__":
    main()
