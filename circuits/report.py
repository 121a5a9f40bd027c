"""One self-contained HTML page with the figures of a trained model (opens offline).

plotly's JavaScript is embedded once in the page head; every figure after it is a ``<div>`` and
a call to ``Plotly.newPlot``. Sections a model cannot have (composition in one layer, induction
scores without a repeated-sequence probe) are left out rather than drawn empty. Head scores and
attention patterns come from the task's probe, or from the default repeated-random-tokens probe
when there is no task: the report knows no task by name.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from circuits.plots.style import FIGURE_CONFIG, MAX_WIDTH, head_label
from circuits.records import EvalRecord, history_from_json
from circuits.tasks import Batch, next_token_targets

# Token-by-token and position-by-position figures show at most this many rows and columns: a
# pretrained model's 48k x 48k circuit would not fit a page (eigenvalues use every token).
MAX_CIRCUIT_SIDE = 64
# A model without a task is probed with the default repeated-random-tokens probe: up to 64
# sequences, fewer where they would cost more than these budgets (the attention patterns every
# head score reads; the forward pass plus the unembedding of the masked positions). Pattern
# scores average over hundreds of positions per sequence: a few sequences already agree.
PROBE_BATCH, MIN_PROBE_BATCH = 64, 4
PATTERN_BYTES, PROBE_FLOPS = 256 * 2**20, 10**11


def probe_batch(model: Any, length: int) -> int:
    """How many default-probe sequences of ``2 x length`` tokens the report reads (see above)."""
    cfg = model.cfg
    pos = 2 * length
    patterns = 2 * 4 * cfg.n_layers * cfg.n_heads * pos * pos  # the cache and its stacked copy
    block_params = sum(p.numel() for p in model.blocks.parameters())
    flops = 2 * pos * block_params + 2 * length * cfg.d_model * model.W_U.shape[-1]
    fits = min(PATTERN_BYTES // patterns, PROBE_FLOPS // flops)
    return int(max(MIN_PROBE_BATCH, min(PROBE_BATCH, fits)))


def _leading(n: int) -> range:
    """The first ``min(n, MAX_CIRCUIT_SIDE)`` rows or columns of a circuit."""
    return range(min(n, MAX_CIRCUIT_SIDE))


@dataclass(frozen=True)
class Section:
    """A heading, a sentence saying how to read it, and a figure (or None if not drawable)."""

    title: str
    caption: str
    figure: Any


def probes_for(model: Any, task: Any = None) -> tuple[Batch, Batch]:
    """The probe behind the head scores, and one short sequence of it to draw.

    The probe is the task's own (``task.probe(64)``, what training evaluates), or, for a model
    without a task, the default repeated-random-tokens probe of
    :func:`circuits.analysis.head_scores.default_probe` (64 sequences, fewer for a large model:
    :func:`probe_batch`).
    """
    from circuits.analysis.head_scores import MAX_PROBE_REPEAT, default_probe

    if task is not None:
        probe = task.probe(PROBE_BATCH)
    else:
        length = min(model.cfg.n_ctx // 2, MAX_PROBE_REPEAT)
        probe = default_probe(model, batch_size=probe_batch(model, length))
    return probe, short_example(probe)


def short_example(probe: Batch, repeat: int = 10, length: int = 20) -> Batch:
    """The probe's first sequence, short enough that its attention grid stays readable.

    A repeated-random-tokens probe (``[prefix] r r``, ``repeat_length`` set) keeps its prefix
    and the first ``repeat`` tokens of each copy, so that it is still a repeat; any other probe
    keeps its first ``length`` positions.
    """
    tokens = probe.tokens[:1]
    s = probe.repeat_length
    if s is None:
        return Batch(tokens[:, :length], probe.targets[:1, :length], probe.mask[:1, :length])
    prefix = tokens.shape[1] - 2 * s
    k = min(repeat, s)
    keep = [*range(prefix), *range(prefix, prefix + k), *range(prefix + s, prefix + s + k)]
    short = tokens[:, keep]
    mask = torch.zeros_like(short, dtype=torch.bool)
    mask[:, prefix + k : -1] = True  # second copy, where the next token is a repeat
    return Batch(short, next_token_targets(short), mask, repeat_length=k)


def sections_for(
    model: Any,
    task: Any = None,
    history: Sequence[Any] | None = None,
    losses: list[float] | None = None,
    tuned_lens: Any = None,
) -> list[Section]:
    """The report's sections for ``model`` (and its task, training history and tuned lens)."""
    from circuits import plots
    from circuits.analysis import circuits as circ
    from circuits.analysis.composition import all_composition_scores
    from circuits.analysis.head_scores import evaluate
    from circuits.analysis.logit_lens import logit_lens
    from circuits.analysis.scores import applicable, get_score, score_names
    from circuits.plots.tokens import token_strings

    history = history_from_json(history) if history else None  # any version's records
    out: list[Section] = []
    add = lambda title, caption, fig: out.append(Section(title, caption, fig))
    if history or losses:
        add(
            "Training dynamics",
            "Loss and every head's scores on the probe over training. The dashed orange line "
            "marks the phase change (circuits.analysis.phase, after Olsson et al. 2022): the "
            "steepest fall of the in-context-learning score, read as the probe loss on the "
            "repeated part, after the loss's first plateau; it lies between the two "
            "evaluations its label names.",
            plots.training_dynamics({"history": history or [], "losses": losses or []}),
        )
    probe, example = probes_for(model, task)
    # Every registered score the training tracked (or the history carries), from the registry.
    names = [*score_names(tracked=True), *(history[-1].scores if history else ())]
    metrics = evaluate(model, probe, [s.name for s in applicable(dict.fromkeys(names), probe)])
    for name, values in metrics.scores.items():
        spec = get_score(name)
        title = f"{spec.label[:1].upper()}{spec.label[1:]} scores"
        add(
            title,
            f"Per head: {spec.description}. Outlined heads score at least 0.4.",
            plots.head_scores(values, title),
        )
    add(
        "Attention patterns",
        "Every head on one probe sequence (query down, key across). A previous-token head "
        "is a stripe just below the diagonal; an induction head is a stripe one step after "
        "the earlier copy of the current token. Hover for tokens and weights.",
        plots.attention_patterns(model, example.tokens[0]),
    )
    lenses = [("Logit lens", logit_lens(model, example.tokens))]
    if tuned_lens is not None:
        lenses.append(("Tuned lens", tuned_lens.lens(model, example.tokens)))
    for name, lens in lenses:
        prob, _, top = lens.read(example.targets, 1)  # one pass over the logits
        add(
            name,
            "Probability of the next token at each position (column) when the residual "
            "stream is read before each block and at the end (row); cells name the top-1 "
            "prediction. On a repeated sequence, induction shows as the second copy "
            "becoming predictable only after the induction layer.",
            plots.lens_heatmap(
                prob[:, 0],
                token_strings(model, example.tokens[0]),  # strings if the model has a tokenizer
                token_strings(model, top[:, 0, :, 0]),
                "probability",
                lens.labels,
                title=f"{name}: probability of the next token",
            ),
        )
    if model.cfg.n_layers >= 2:
        add(
            "Composition scores",
            "How much each earlier head's output is read by each later head's queries (Q), "
            "keys (K) or values (V). White is the random-matrix baseline, red is above it. An "
            "induction circuit shows as K-composition from a previous-token head.",
            plots.composition_scores(all_composition_scores(model)),
        )
    vocab, ctx = _leading(model.cfg.d_vocab), _leading(model.cfg.n_ctx)
    add(
        "OV circuits",
        "For each head, how attending to a token (row) changes each output logit (column). A "
        "red diagonal means the head copies the token it attends to.",
        plots.circuit_grid(
            circ.full_ov_circuit(model, rows=vocab, cols=_leading(model.W_U.shape[-1])),
            "Full OV circuits W_E W_OV W_U",
            "output token",
            "input token",
            # Heads' OV circuits differ by orders of magnitude (layer 0's far smaller): on a
            # shared scale most would look blank. Each panel title gives its head's maximum.
            scale="head",
            value="logit contribution",
        ),
    )
    # The eigenvalues of W_E W_OV W_U are those of the d_model-sized W_OV W_U W_E (plus zeros).
    spectrum = circ.full_ov_spectrum(model)
    add(
        "Copying: eigenvalues of the OV circuits",
        "Positive real eigenvalues mean copying; the legend gives each head's copying score "
        "sum(eig) / sum(|eig|), in [-1, 1].",
        plots.eigenvalues(spectrum, circ.copying_score(spectrum)),
    )
    add(
        "Positional QK circuits",
        "How much each query position (row) prefers each earlier key position (column) from "
        "positions alone. A previous-token head is bright just below the diagonal.",
        plots.circuit_grid(
            circ.positional_qk_circuit(model, rows=ctx, cols=ctx),
            "Positional QK circuits W_pos W_QK W_pos^T",
            "key position",
            "query position",
            causal=True,
            scale="head",  # one head can dwarf the rest of its layer
            value="attention score (pre-softmax)",
        ),
    )
    add(
        "Token QK circuits",
        "How much a query token (row) attends to a key token (column) from token identity alone.",
        plots.circuit_grid(
            circ.full_qk_circuit(model, rows=vocab, cols=vocab),
            "Full QK circuits W_E W_QK W_E^T",
            "key token",
            "query token",
            scale="head",  # one head can dwarf the rest of its layer
            value="attention score (pre-softmax)",
        ),
    )
    return out


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="generator" content="circuits report">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: {max_width}px; margin: 2em auto;
  padding: 0 1em; color: #222; }}
section {{ margin-bottom: 2.5em; }}
/* A figure wider than the window scrolls on its own instead of being cut off. */
.figure {{ overflow-x: auto; }}
.caption {{ color: #555; max-width: 60em; }}
table.meta td {{ padding: 0 1em 0 0; }}
</style>
<script type="text/javascript">{plotlyjs}</script>
</head>
<body>
<h1>{title}</h1>
<table class="meta">{meta}</table>
<nav><ul>{toc}</ul></nav>
{body}
</body>
</html>
"""


def render(sections: list[Section], title: str, summary: dict[str, Any] | None = None) -> str:
    """The HTML page: plotly.js inline once, then one ``<section>`` per figure."""
    from plotly.offline import get_plotlyjs

    rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
        for k, v in (summary or {}).items()
    )
    toc, body = [], []
    for i, s in enumerate(sections):
        anchor = f"s{i}"
        toc.append(f'<li><a href="#{anchor}">{html.escape(s.title)}</a></li>')
        div = s.figure.to_html(
            full_html=False, include_plotlyjs=False, div_id=f"fig-{anchor}", config=FIGURE_CONFIG
        )
        body.append(
            f'<section id="{anchor}"><h2>{html.escape(s.title)}</h2>'
            f'<p class="caption">{html.escape(s.caption)}</p>'
            f'<div class="figure">{div}</div></section>'
        )
    return PAGE.format(
        title=html.escape(title),
        max_width=MAX_WIDTH,
        # A "</script>" inside the library would end the tag early; plotly.js has none, but
        # guard it anyway.
        plotlyjs=get_plotlyjs().replace("</script>", "<\\/script>"),
        meta=rows,
        toc="".join(toc),
        body="\n".join(body),
    )


def summary_of(model: Any, task: Any = None, history: Sequence[Any] | None = None) -> dict:
    """Model, task and final metrics as a few display rows."""
    cfg = model.cfg
    kind = "attention-only" if cfg.attn_only else f"MLP {cfg.d_mlp} {cfg.act_fn}"
    out: dict[str, Any] = {
        "model": f"{cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads of "
        f"{cfg.d_head}, {kind}, norm {cfg.normalization_type}, vocab {cfg.d_vocab}",
    }
    if task is not None:
        out["task"] = json.dumps(task.to_dict()) if hasattr(task, "to_dict") else task.name
    if history:
        from circuits.analysis.scores import get_score

        last = EvalRecord.from_dict(history[-1])
        out["steps"] = last.step
        out["probe accuracy"] = f"{last.accuracy:.3f}"
        out["probe loss"] = f"{last.loss:.3f}"
        for name, values in last.scores.items():
            spec = get_score(name)
            top = spec.top_head(values)  # among the layers that count (induction: from 1)
            if top is not None:
                value = float(values[top])
                out[f"top {spec.label} head"] = f"{head_label(*top)} ({value:.2f})"
    return out


def build_report(
    model: Any,
    task: Any = None,
    history: Sequence[Any] | None = None,
    losses: list[float] | None = None,
    title: str = "circuits report",
    tuned_lens: Any = None,
    threads: int | None = 1,
) -> str:
    """The report page for ``model`` as an HTML string.

    Memory: the model, a forward pass of the probe (no ``[batch, pos, d_vocab]`` output: loss
    and accuracy unembed the probe's masked positions in chunks), the attention patterns of the
    probe, and per circuit figure a 64 x 64 corner of each head's circuit; eigenvalues come from
    ``d_model``-sized factors. Nothing vocabulary-squared: an attn-only-2l-shaped model (48k
    tokens, n_ctx 2048) stays within a few hundred MB above its weights.

    Args:
        model: A :class:`circuits.HookedTransformer` (or any TransformerLens-style model).
        task: Its task (for the probe behind head scores and attention patterns); optional.
        history: ``TrainResult.history`` (evaluation records); optional.
        losses: ``TrainResult.losses`` (training loss per step); optional.
        title: Page title.
        tuned_lens: A fitted :class:`~circuits.analysis.tuned_lens.TunedLens`; optional.
        threads: Torch threads while it computes (restored after; None: torch's setting).

    Raises:
        ValueError: The model's weights hold a NaN or an infinity (named).
    """
    from circuits.analysis.resources import torch_threads
    from circuits.analysis.weights import check_finite_weights

    check_finite_weights(model)
    model.eval()
    with torch_threads(threads), torch.no_grad():
        sections = sections_for(model, task, history, losses, tuned_lens)
    return render(sections, title, summary_of(model, task, history))


# In every page we write: an existing file is replaced without force only if it carries this.
MARKER = b'<meta name="generator" content="circuits report">'


def check_report_path(path: str | Path, force: bool = False) -> Path:
    """Raises unless a report can be written at ``path``: a writable file location in an existing
    directory, not inside a checkpoint, and not an existing file other than one of our reports
    (unless ``force``). See :func:`circuits.files.check_output_file`."""
    from circuits.files import check_output_file, starts_with_marker

    return check_output_file(
        path, force, lambda p: starts_with_marker(p, MARKER), what="report (an HTML page)"
    )


def write_report(html_text: str, path: str | Path, force: bool = False) -> Path:
    """Writes the page to ``path`` atomically (checked by :func:`check_report_path` first)."""
    from circuits.files import write_file

    path = check_report_path(path, force)
    return write_file(path, html_text.encode("utf-8"))


def task_from_metadata(meta: dict[str, Any]) -> Any:
    """Rebuilds the task recorded in checkpoint metadata (None if there is none)."""
    from circuits.tasks import task_from_dict

    task = meta.get("task")
    if not isinstance(task, dict) or "name" not in task:
        return None
    return task_from_dict(task)


def report_from_checkpoint(
    path: str | Path, title: str | None = None, threads: int | None = 1
) -> str:
    """The report page of a checkpoint directory, with its task and history if recorded."""
    from circuits import checkpoint
    from circuits.model import HookedTransformer

    model = HookedTransformer.load(path)
    meta = checkpoint.read_metadata(path)
    history, losses = meta.get("history"), meta.get("losses")
    if checkpoint.TRAIN_STATE_FILE in meta["sha256"]:
        state = checkpoint.unpack(checkpoint.read_file(path, checkpoint.TRAIN_STATE_FILE, meta))
        history, losses = state.get("history", history), state.get("losses", losses)
    from circuits.analysis.tuned_lens import META as LENS_META
    from circuits.analysis.tuned_lens import TunedLens

    saved_lens = (Path(path) / LENS_META).is_file()
    return build_report(
        model,
        task_from_metadata(meta),
        history,
        losses,
        title=title or f"circuits report: {Path(path).name}",
        tuned_lens=TunedLens.load(path, model) if saved_lens else None,
        threads=threads,
    )
