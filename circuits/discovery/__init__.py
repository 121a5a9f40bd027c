"""Circuit discovery, graded against circuits we know.

Modules, one concept each: :mod:`~circuits.discovery.graph` (senders, receivers, edges),
:mod:`~circuits.discovery.forward` (a forward pass with any edges patched, batched),
:mod:`~circuits.discovery.corruption` (corrupted inputs per task),
:mod:`~circuits.discovery.metrics` (masked loss, logit difference, KL to clean),
:mod:`~circuits.discovery.problem` (model + batch + source + metric),
:mod:`~circuits.discovery.exact` (exact path patching of every edge),
:mod:`~circuits.discovery.attribution` (EAP, EAP-IG, node attribution),
:mod:`~circuits.discovery.acdc` (ACDC), :mod:`~circuits.discovery.evaluate` (faithfulness,
completeness, minimality, ROC AUC), :mod:`~circuits.discovery.path_expansion` (direct, head and
virtual-head terms; attention-score decomposition), :mod:`~circuits.discovery.handbuilt`
(circuits with known weights), :mod:`~circuits.discovery.text` (repeated natural text and IOI
from a pretrained model's tokenizer), :mod:`~circuits.discovery.readout` (the unembedding at
the metric's rows only).

Every function that runs the model takes ``threads=`` (default 1, as training; restored
afterwards). Graphs come at two granularities: ``Problem.build(..., level="node")`` scores heads
and MLPs as wholes (the first pass on a big graph), ``"edge"`` (default) every sender -> q/k/v/
MLP/logits edge. See docs/discovery-scale.md.

Typical use::

    problem = Problem.build(model, task.probe(32))          # induction, corrupted first copy
    truth = exact_patching(problem)                          # ground truth, one forward per edge
    eap, ig = edge_attribution(problem), edge_attribution(problem, ig_steps=5)
    found = acdc(problem)                                    # circuit at DEFAULT_TAU
    faithfulness(problem, found.circuit), roc_auc(eap, reference_circuit(truth))
"""

from __future__ import annotations

from circuits.analysis.resources import DEFAULT_THREADS
from circuits.discovery.acdc import DEFAULT_TAU, AcdcResult, acdc, acdc_sweep
from circuits.discovery.attribution import edge_attribution, node_attribution
from circuits.discovery.corruption import CORRUPTIONS, corrupt, register_corruption
from circuits.discovery.evaluate import (
    CircuitGrade,
    completeness,
    faithfulness,
    grade,
    minimality,
    reference_circuit,
    roc_auc,
    roc_curve,
)
from circuits.discovery.exact import exact_patching
from circuits.discovery.forward import GraphRun, run, source_outputs
from circuits.discovery.graph import Edge, Graph, Receiver, Sender
from circuits.discovery.metrics import Metric, kl_to_clean, logit_diff, masked_loss
from circuits.discovery.problem import Problem
from circuits.discovery.scores import EdgeScores
from circuits.discovery.text import IoiBatch, ioi_batch, repeated_text

__all__ = [
    "CORRUPTIONS",
    "DEFAULT_TAU",
    "DEFAULT_THREADS",
    "AcdcResult",
    "CircuitGrade",
    "Edge",
    "EdgeScores",
    "Graph",
    "GraphRun",
    "IoiBatch",
    "Metric",
    "Problem",
    "Receiver",
    "Sender",
    "acdc",
    "acdc_sweep",
    "completeness",
    "corrupt",
    "edge_attribution",
    "exact_patching",
    "faithfulness",
    "grade",
    "ioi_batch",
    "kl_to_clean",
    "logit_diff",
    "masked_loss",
    "minimality",
    "node_attribution",
    "reference_circuit",
    "register_corruption",
    "repeated_text",
    "roc_auc",
    "roc_curve",
    "run",
    "source_outputs",
]
