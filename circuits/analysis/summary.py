"""The induction circuit a model ends with, as plain data: one summary for the CLI and sweeps.

From a model and its last evaluation's head scores: the top previous-token head, the top
induction heads (over the layers that count for each score, as the score registry ranks
them), the K-composition into the top induction head from its strongest earlier source (with
the random-matrix baseline of Elhage et al. 2021), and, given a probe, what zero-ablating that
source does to the probe accuracy. ``circuits train`` prints it; a sweep stores it per run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from circuits.names import head_name

__all__ = ["TOP_INDUCTION_HEADS", "induction_circuit", "ranked_heads", "score_rule", "top_head"]

TOP_INDUCTION_HEADS = 2


def score_rule(name: str) -> tuple[int, str]:
    """``(first layer that counts, "higher" | "lower")`` of a registered score; an unknown
    name (a score registered by a run that is not registered here) counts every layer."""
    from circuits.analysis.scores import get_score

    try:
        spec = get_score(name)
    except ValueError:
        return 0, "higher"
    return spec.min_layer, spec.direction


def ranked_heads(name: str, table: Any) -> list[tuple[float, int, int]]:
    """``(value, layer, head)`` of score ``name``'s ``[n_layers][n_heads]`` table, best first,
    over the layers that count (ties: lower layer, then lower head, as ``HeadScore.top_head``).

    Plain floats (no tensor round trip), so the values are those of the history.
    """
    first_layer, direction = score_rule(name)
    rows = table.tolist() if hasattr(table, "tolist") else table
    sign = -1.0 if direction == "higher" else 1.0
    cells = [
        (float(v), layer, head)
        for layer, scores in enumerate(rows)
        if layer >= first_layer
        for head, v in enumerate(scores)
    ]
    return sorted(cells, key=lambda c: (sign * c[0], c[1], c[2]))


def top_head(name: str, table: Any) -> dict[str, Any] | None:
    """``{"head": "L1H0", "score": value}`` of the best counted head, or None if none counts."""
    ranked = ranked_heads(name, table)
    return (
        {"head": head_name(ranked[0][1], ranked[0][2]), "score": ranked[0][0]} if ranked else None
    )


def induction_circuit(model: Any, scores: Mapping[str, Any], probe: Any = None) -> dict[str, Any]:
    """The induction circuit of ``model`` given its final head scores.

    Args:
        model: A model with TransformerLens's weight properties (composition is read from the
            weights).
        scores: ``{score name: [n_layers, n_heads]}`` (an evaluation record's ``scores``).
        probe: A task batch: if given, the source head is zero-ablated on it (two forward
            passes over the probe).

    Returns:
        ``previous_token_head`` and ``induction_heads`` (``{"head", "score"}``, the latter up
        to :data:`TOP_INDUCTION_HEADS`), ``k_composition`` (``source``, ``target``, ``score``,
        ``baseline``, ``baseline_std``, ``excess``, ``source_is_previous_token_head``; None
        without an induction head that counts, e.g. in one layer) and, with a probe,
        ``ablate_source`` (``head``, ``accuracy_before``, ``accuracy_after``).
    """
    from circuits.analysis.composition import all_composition_scores

    out: dict[str, Any] = {
        "previous_token_head": None,
        "induction_heads": [],
        "k_composition": None,
    }
    if "previous_token" in scores:
        out["previous_token_head"] = top_head("previous_token", scores["previous_token"])
    ranked = ranked_heads("induction", scores["induction"]) if "induction" in scores else []
    if not ranked:
        return out
    out["induction_heads"] = [
        {"head": head_name(layer, head), "score": v}
        for v, layer, head in ranked[:TOP_INDUCTION_HEADS]
    ]
    _, il, ih = ranked[0]
    comp = all_composition_scores(model)
    excess = comp.excess("K")[:il, :, il, ih]  # earlier heads -> the top induction head
    sl, sh = divmod(int(excess.argmax()), excess.shape[1])
    source = head_name(sl, sh)
    out["k_composition"] = {
        "source": source,
        "target": head_name(il, ih),
        "score": float(comp.k[sl, sh, il, ih]),
        "baseline": float(comp.baseline),
        "baseline_std": float(comp.baseline_std),
        "excess": float(excess[sl, sh]),
        "source_is_previous_token_head": source == (out["previous_token_head"] or {}).get("head"),
    }
    if probe is not None:
        out["ablate_source"] = _ablate(model, probe, source)
    return out


def _ablate(model: Any, probe: Any, source: str) -> dict[str, Any]:
    from circuits.analysis.ablation import run_with_ablation
    from circuits.analysis.head_scores import evaluate, probe_accuracy

    run: Any = run_with_ablation(model, probe.tokens, [source])
    logits = getattr(run, "logits", run)  # a named AblationRun, or the bare logits
    ablated = probe_accuracy(logits, probe)
    return {
        "head": source,
        "accuracy_before": round(evaluate(model, probe)["accuracy"], 4),
        "accuracy_after": round(ablated, 4),
    }
