"""TransformerLens 4.3's own utilities run on our model and agree with independent computations.

- ``patching.get_act_patch_direct_path`` (q, k, v) against the same edge intervention written
  at ``hook_q``/``hook_k``/``hook_v`` with a hand-written LayerNorm;
- ``tools.analysis.attribution_patching.attribution_patch`` (node and edge granularity)
  against ``(a_clean - a_corrupt) . dM/da`` from our own autograd, and ``faithfulness``
  against our own activation patching;
- ``ActivationCache.get_full_resid_decomposition``, ``decompose_resid``,
  ``stack_head_results``, ``logit_attrs`` against sums that must reproduce the residual stream,
  the attention output and (on a weight-processed model) the logits.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from helpers import perturbed_model
from transformer_lens import patching
from transformer_lens.tools.analysis.attribution_patching import (
    EdgeAttributionConfig,
    Node,
    attribution_patch,
    faithfulness,
)

from circuits import HookedTransformer

ATOL = 1e-5
ANSWER = 3


def metric(logits: torch.Tensor) -> torch.Tensor:
    return logits[:, -1, ANSWER].mean()


def pair(batch: int = 2, pos: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return (
        torch.randint(0, 20, (batch, pos), generator=g),
        torch.randint(0, 20, (batch, pos), generator=g),
    )


@pytest.fixture(scope="module")
def model() -> HookedTransformer:
    return perturbed_model(d_vocab=20, n_ctx=24)


def layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    x = x - x.mean(-1, keepdim=True)
    return x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt() * w + b


def test_tl4_hook_names_are_aliases_of_the_tl3_hook_points(model: HookedTransformer) -> None:
    for layer in range(2):
        for c in "qkv":
            alias = f"blocks.{layer}.attn.hook_{c}_input"
            assert model.hook_dict[alias] is model.hook_dict[f"blocks.{layer}.hook_{c}_input"]
            assert model.mod_dict[alias] is model.hook_dict[alias]
    model.set_use_split_qkv_input(True)
    try:
        seen: list[str] = []
        model.run_with_hooks(
            pair()[0],
            fwd_hooks=[("blocks.1.attn.hook_k_input", lambda x, hook: seen.append(hook.name))],
        )
        _, cache = model.run_with_cache(pair()[0])
    finally:
        model.set_use_split_qkv_input(False)
    assert seen == ["blocks.1.hook_k_input"]  # one point, one call
    assert "blocks.1.hook_k_input" in cache.cache_dict
    assert not any(".attn.hook_" in k and k.endswith("_input") for k in cache.cache_dict)


# --- direct path patching ---
@pytest.mark.parametrize("component", ["q", "k", "v"])
def test_direct_path_patching_matches_hand_written_edge_patch(
    model: HookedTransformer, component: str
) -> None:
    clean, corrupt = pair()
    _, clean_cache = model.run_with_cache(clean)
    _, corrupt_cache = model.run_with_cache(corrupt)
    src_layer, src_head = 0, 1
    flags = (model.cfg.use_split_qkv_input, model.cfg.use_attn_in)
    result = patching.get_act_patch_direct_path(
        model,
        corrupt,
        clean_cache,
        corrupt_cache,
        metric,
        src_layer,
        src_head,
        component,
        verbose=False,
    )
    assert (model.cfg.use_split_qkv_input, model.cfg.use_attn_in) == flags  # restored
    assert result.shape == (2, 4) and torch.equal(result[0], torch.zeros(4))

    # Independent: the source head's clean-minus-corrupted write, added to the residual
    # stream that destination head reads, projected by hand at hook_{q,k,v} (not *_input).
    W_O = model.W_O[src_layer, src_head].detach()
    z = "blocks.0.attn.hook_z"
    delta = (clean_cache[z][:, :, src_head] - corrupt_cache[z][:, :, src_head]) @ W_O
    block = model.blocks[1]
    resid = corrupt_cache["blocks.1.hook_resid_pre"] + delta
    normed = layer_norm(resid, block.ln1.w, block.ln1.b, model.cfg.eps).detach()
    W = getattr(block.attn, f"W_{component.upper()}").detach()
    b = getattr(block.attn, f"b_{component.upper()}").detach()
    for head in range(4):
        patched = normed @ W[head] + b[head]

        def hook(x: torch.Tensor, hook: Any, head: int = head, patched: torch.Tensor = patched):
            x = x.clone()
            x[:, :, head] = patched
            return x

        with torch.no_grad():
            logits = model.run_with_hooks(
                corrupt, fwd_hooks=[(f"blocks.1.attn.hook_{component}", hook)]
            )
        assert abs(result[1, head].item() - metric(logits).item()) < ATOL, head
    # A real effect, not a no-op patch.
    with torch.no_grad():
        assert (result[1] - metric(model(corrupt))).abs().max() > 1e-4


# --- attribution patching ---
def grad_at(model: HookedTransformer, tokens: torch.Tensor, name: str) -> torch.Tensor:
    """dM/d(activation at ``name``) on ``tokens``, by making that activation a leaf."""
    leaf: dict[str, torch.Tensor] = {}

    def hook(x: torch.Tensor, hook: Any) -> torch.Tensor:
        leaf["x"] = x.detach().requires_grad_(True)
        return leaf["x"]

    logits = model.run_with_hooks(tokens, fwd_hooks=[(name, hook)])
    (grad,) = torch.autograd.grad(metric(logits), leaf["x"])
    return grad


def test_attribution_patching_nodes_match_our_gradients(model: HookedTransformer) -> None:
    clean, corrupt = pair(batch=1)
    result = attribution_patch(model, clean, corrupt, metric)
    _, clean_cache = model.run_with_cache(clean)
    _, corrupt_cache = model.run_with_cache(corrupt)
    checked = 0
    for name, kind in (
        ("hook_embed", "embed"),
        ("blocks.0.attn.hook_z", "attn_head_out"),
        ("blocks.1.attn.hook_z", "attn_head_out"),
        ("blocks.0.hook_mlp_out", "mlp_out"),
        ("blocks.1.hook_mlp_out", "mlp_out"),
    ):
        grad = grad_at(model, corrupt, name)[0]
        diff = (clean_cache[name] - corrupt_cache[name])[0]
        layer = None if kind == "embed" else int(name.split(".")[1])
        for pos in range(clean.shape[1]):
            heads: list[int | None] = list(range(4)) if kind == "attn_head_out" else [None]
            for head in heads:
                if head is None:
                    expected = (diff[pos] * grad[pos]).sum()
                else:
                    expected = (diff[pos, head] * grad[pos, head]).sum()
                node = Node(kind=kind, position=pos, layer=layer, head=head)  # type: ignore[arg-type]
                assert abs(result.node_scores[node] - expected.item()) < ATOL, node
                checked += 1
    assert checked == len(result.node_scores)


def test_attribution_patching_edges_match_our_gradients(model: HookedTransformer) -> None:
    clean, corrupt = pair(batch=1)
    flags = (model.cfg.use_split_qkv_input, model.cfg.use_attn_result, model.cfg.use_hook_mlp_in)
    result = attribution_patch(
        model, clean, corrupt, metric, EdgeAttributionConfig(granularity="edge")
    )
    assert flags == (
        model.cfg.use_split_qkv_input,
        model.cfg.use_attn_result,
        model.cfg.use_hook_mlp_in,
    )
    assert result.edge_scores
    model.set_use_attn_result(True)
    model.set_use_split_qkv_input(True)
    try:
        _, clean_cache = model.run_with_cache(clean)
        _, corrupt_cache = model.run_with_cache(corrupt)
        # Writer: head (0, 2)'s result; reader: head (1, h)'s key input, same position.
        write = (
            clean_cache["blocks.0.attn.hook_result"] - corrupt_cache["blocks.0.attn.hook_result"]
        )[0, :, 2]
        grad = grad_at(model, corrupt, "blocks.1.hook_k_input")[0]
    finally:
        model.set_use_attn_result(flags[1])
        model.set_use_split_qkv_input(flags[0])
    for pos in range(clean.shape[1]):
        for head in range(4):
            edge = (
                Node(kind="attn_head_out", position=pos, layer=0, head=2),
                Node(kind="k_input", position=pos, layer=1, head=head),
            )
            expected = (write[pos] * grad[pos, head]).sum().item()
            assert abs(result.edge_scores[edge] - expected) < ATOL, edge


def test_faithfulness_without_one_head_is_patching_that_head(model: HookedTransformer) -> None:
    """Ablating every edge out of head (0, 2) is patching its output to the corrupted one:
    TL4's edge-level faithfulness must equal our own node patch at hook_z."""
    clean, corrupt = pair(batch=1)
    edges = attribution_patch(
        model, clean, corrupt, metric, EdgeAttributionConfig(granularity="edge")
    ).edge_scores
    circuit = [
        e
        for e in edges
        if not (e[0].kind == "attn_head_out" and e[0].layer == 0 and e[0].head == 2)
    ]
    assert 0 < len(circuit) < len(edges)
    result = faithfulness(model, clean, corrupt, metric, circuit)
    _, corrupt_cache = model.run_with_cache(corrupt)

    def patch(z: torch.Tensor, hook: Any) -> torch.Tensor:
        z = z.clone()
        z[:, :, 2] = corrupt_cache["blocks.0.attn.hook_z"][:, :, 2]
        return z

    with torch.no_grad():
        patched = metric(model.run_with_hooks(clean, fwd_hooks=[("blocks.0.attn.hook_z", patch)]))
        m_clean, m_corrupt = metric(model(clean)), metric(model(corrupt))
    expected = ((patched - m_corrupt) / (m_clean - m_corrupt)).item()
    assert abs(result.recovered - expected) < 1e-4
    assert abs(result.full_metric - m_clean.item()) < ATOL


# --- ActivationCache decompositions ---
@pytest.fixture(scope="module")
def cached(model: HookedTransformer) -> tuple[torch.Tensor, Any, torch.Tensor]:
    tokens, _ = pair()
    logits, cache = model.run_with_cache(tokens)
    return tokens, cache, logits


@pytest.mark.parametrize("expand_neurons", [False, True])
def test_full_resid_decomposition_sums_to_the_residual_stream(
    model: HookedTransformer, cached: Any, expand_neurons: bool
) -> None:
    _, cache, _ = cached
    stack, labels = cache.get_full_resid_decomposition(
        expand_neurons=expand_neurons, return_labels=True
    )
    n_mlp_rows = 2 * model.cfg.d_mlp if expand_neurons else 2
    assert len(labels) == stack.shape[0] == 8 + n_mlp_rows + 3  # heads, mlps, embed, pos, bias
    assert labels[-1] == "bias" and "L1H3" in labels
    torch.testing.assert_close(stack.sum(0), cache["blocks.1.hook_resid_post"], atol=ATOL, rtol=0)
    # Into layer 1's MLP: heads of layers 0-1, MLP 0, embeddings, b_O of both layers + b_out 0.
    stack, labels = cache.get_full_resid_decomposition(
        layer=1, mlp_input=True, expand_neurons=expand_neurons, return_labels=True
    )
    torch.testing.assert_close(stack.sum(0), cache["blocks.1.hook_resid_mid"], atol=ATOL, rtol=0)


def test_accumulated_bias_is_the_sum_of_output_biases(model: HookedTransformer) -> None:
    b_O, b_out = model.b_O.detach(), model.b_out.detach()
    torch.testing.assert_close(model.accumulated_bias(0), torch.zeros(model.cfg.d_model))
    torch.testing.assert_close(model.accumulated_bias(2), b_O.sum(0) + b_out.sum(0))
    torch.testing.assert_close(
        model.accumulated_bias(1, mlp_input=True, include_mlp_biases=False), b_O.sum(0)
    )


def test_decompose_resid_sums_to_resid_pre(model: HookedTransformer, cached: Any) -> None:
    _, cache, _ = cached
    for layer in range(3):
        stack, labels = cache.decompose_resid(layer=layer, return_labels=True)
        name = "blocks.1.hook_resid_post" if layer == 2 else f"blocks.{layer}.hook_resid_pre"
        torch.testing.assert_close(stack.sum(0), cache[name], atol=ATOL, rtol=0)
        assert labels[:2] == ["embed", "pos_embed"] and len(labels) == 2 + 2 * layer


@pytest.mark.parametrize("use_attn_result", [False, True])
def test_stack_head_results_is_z_times_W_O(model: HookedTransformer, use_attn_result: bool) -> None:
    tokens, _ = pair()
    model.set_use_attn_result(use_attn_result)
    try:
        _, cache = model.run_with_cache(tokens)
    finally:
        model.set_use_attn_result(False)
    stack, labels = cache.stack_head_results(layer=-1, return_labels=True)
    assert labels == [f"L{layer}H{h}" for layer in range(2) for h in range(4)]
    for layer in range(2):
        z = cache[f"blocks.{layer}.attn.hook_z"]
        expected = torch.einsum("bphe,hed->hbpd", z, model.W_O[layer].detach())
        torch.testing.assert_close(stack[4 * layer : 4 * layer + 4], expected, atol=ATOL, rtol=0)
        torch.testing.assert_close(
            expected.sum(0) + model.b_O[layer].detach(),
            cache[f"blocks.{layer}.hook_attn_out"],
            atol=ATOL,
            rtol=0,
        )


def test_logit_attrs_are_ln_scaled_projections_on_unembedding_directions(
    model: HookedTransformer, cached: Any
) -> None:
    _, cache, _ = cached
    stack = cache.decompose_resid(layer=-1)[:, :, -1]  # [components, batch, d_model]
    answers = torch.tensor([ANSWER, 5])
    wrong = torch.tensor([7, 1])
    # Independent: centre each component and divide by ln_final's cached scale, then project.
    scaled = (stack - stack.mean(-1, keepdim=True)) / cache["ln_final.hook_scale"][:, -1]
    W_U = model.W_U.detach()
    attrs = cache.logit_attrs(stack, tokens=answers, pos_slice=-1)
    expected = torch.einsum("cbd,db->cb", scaled, W_U[:, answers])
    torch.testing.assert_close(attrs, expected, atol=ATOL, rtol=0)
    diff = cache.logit_attrs(stack, tokens=answers, incorrect_tokens=wrong, pos_slice=-1)
    expected = torch.einsum("cbd,db->cb", scaled, W_U[:, answers] - W_U[:, wrong])
    torch.testing.assert_close(diff, expected, atol=ATOL, rtol=0)


def test_direct_logit_attribution_adds_up_to_logits_after_folding() -> None:
    """With LayerNorm folded (LNPre), the LN-scaled decomposition times W_U plus b_U is the
    logit itself: the exact direct logit attribution that folding makes possible."""
    model = perturbed_model(d_vocab=20, n_ctx=24)
    model.process_weights_()
    tokens, _ = pair()
    logits, cache = model.run_with_cache(tokens)
    stack = cache.get_full_resid_decomposition(apply_ln=True, expand_neurons=False)
    total = stack.sum(0) @ model.W_U.detach() + model.b_U.detach()
    torch.testing.assert_close(total, logits, atol=1e-4, rtol=0)
    raw = cache.get_full_resid_decomposition(expand_neurons=False)[:, :, -1]
    attrs = cache.logit_attrs(raw, tokens=torch.tensor([ANSWER, ANSWER]), pos_slice=-1)
    torch.testing.assert_close(
        attrs.sum(0) + model.b_U[ANSWER].detach(), logits[:, -1, ANSWER], atol=1e-4, rtol=0
    )
