"""The edge graph and the patched forward: structure, and agreement with the model's own hooks."""

from __future__ import annotations

import pytest
import torch
from helpers import CONFIGS, perturbed_model

from circuits.discovery import Graph, run, source_outputs
from circuits.discovery.corruption import corrupt, first_copy_length
from circuits.discovery.metrics import kl_to_clean, logit_diff, masked_loss
from circuits.tasks import InductionTask, ShiftByOneTask, repeated_tokens

SUPPORTED = ["attn_only", "full_ln", "gelu_new_result"]


def _tokens(model, batch=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.cfg.d_vocab, (batch, model.cfg.n_ctx), generator=gen)


@pytest.mark.parametrize("name", SUPPORTED)
def test_edges_follow_the_residual_stream(name: str) -> None:
    model = perturbed_model(**CONFIGS[name])
    g = Graph(model)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    per_layer = H + (0 if model.cfg.attn_only else 1)
    assert g.n_senders == 2 + L * per_layer
    # Each q/k/v input sees the embeddings and every earlier layer; MLPs also see their layer.
    expected = sum(3 * H * (2 + layer * per_layer) for layer in range(L)) + g.n_senders
    if not model.cfg.attn_only:
        expected += sum(2 + layer * per_layer + H for layer in range(L))
    assert g.n_edges == expected
    assert len(set(g.edge_names)) == g.n_edges
    order = {s.name: i for i, s in enumerate(g.senders)}
    for e in g.edges:
        assert e.sender.layer < e.receiver.layer or (
            e.receiver.kind == "mlp" and e.sender.layer == e.receiver.layer
        ), e.name
        assert g.index(e.name) == g.edges.index(e)
        assert order[e.sender.name] < g.n_senders
    assert g.names(g.mask(["embed->L0H0.q", "L0H1->L1H0.v"])) == ["embed->L0H0.q", "L0H1->L1H0.v"]


def test_bad_edges_and_models_are_refused() -> None:
    g = Graph(perturbed_model(**CONFIGS["attn_only"]))
    with pytest.raises(ValueError, match=r"no edge 'L1H0->L0H0\.q'"):
        g.index("L1H0->L0H0.q")
    with pytest.raises(ValueError, match="shape"):
        g.check_mask(torch.zeros(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="rotary"):
        Graph(perturbed_model(positional_embedding_type="rotary"))
    with pytest.raises(ValueError, match="level"):
        Graph(perturbed_model(**CONFIGS["attn_only"]), level="heads")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Graph(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("name", SUPPORTED)
def test_unpatched_and_fully_patched_runs_are_the_models(name: str) -> None:
    model = perturbed_model(**CONFIGS[name])
    g = Graph(model)
    clean, other = _tokens(model, seed=0), _tokens(model, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(run(model, g, clean).logits[0], model(clean), atol=2e-5, rtol=0)
        src = source_outputs(model, g, "corrupted", clean, other)
        everything = run(model, g, clean, torch.ones(1, g.n_edges), src).logits[0]
        torch.testing.assert_close(everything, model(other), atol=2e-5, rtol=0)


@pytest.mark.parametrize("name", SUPPORTED)
def test_patching_every_edge_into_a_query_is_patching_hook_q(name: str) -> None:
    """An independent check through the model's own hooks: a head's query input is the whole
    residual stream, so patching all its incoming edges is patching its ``hook_q``."""
    model = perturbed_model(**CONFIGS[name])
    g = Graph(model)
    clean, other = _tokens(model, seed=0), _tokens(model, seed=1)
    patch = torch.zeros(1, g.n_edges)
    for e in g.edges:
        if e.receiver.name == "L1H2.q":
            patch[0, g.index(e.name)] = 1.0
    with torch.no_grad():
        _, cache = model.run_with_cache(other, names_filter="blocks.1.attn.hook_q")

        def hook(q, hook):
            q[:, :, 2] = cache["blocks.1.attn.hook_q"][:, :, 2]
            return q

        expected = model.run_with_hooks(clean, fwd_hooks=[("blocks.1.attn.hook_q", hook)])
        src = source_outputs(model, g, "corrupted", clean, other)
        got = run(model, g, clean, patch, src).logits[0]
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=0)


def test_one_edge_patch_matches_a_hook_on_the_key() -> None:
    """Patching L0H1 -> L1H0.k changes L1H0's key by exactly that head's corrupted-minus-clean
    output through W_K (no LayerNorm), which a hook on ``hook_k`` reproduces."""
    model = perturbed_model(**CONFIGS["attn_only"])
    model.set_use_attn_result(True)
    g = Graph(model)
    clean, other = _tokens(model, seed=0), _tokens(model, seed=1)
    with torch.no_grad():
        names = lambda n: n == "blocks.0.attn.hook_result"
        _, c_clean = model.run_with_cache(clean, names_filter=names)
        _, c_other = model.run_with_cache(other, names_filter=names)
        delta = (
            c_other["blocks.0.attn.hook_result"][:, :, 1]
            - c_clean["blocks.0.attn.hook_result"][:, :, 1]
        )
        W_K = model.blocks[1].attn.W_K[0]

        def hook(k, hook):
            k[:, :, 0] = k[:, :, 0] + delta @ W_K
            return k

        expected = model.run_with_hooks(clean, fwd_hooks=[("blocks.1.attn.hook_k", hook)])
        src = source_outputs(model, g, "corrupted", clean, other)
        got = run(model, g, clean, g.mask(["L0H1->L1H0.k"]).float()[None], src).logits[0]
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=0)


def test_configs_in_one_forward_equal_separate_forwards() -> None:
    model = perturbed_model(**CONFIGS["full_ln"])
    g = Graph(model)
    clean, other = _tokens(model, seed=0), _tokens(model, seed=1)
    src = source_outputs(model, g, "corrupted", clean, other)
    gen = torch.Generator().manual_seed(0)
    patch = (torch.rand(3, g.n_edges, generator=gen) < 0.3).float()
    with torch.no_grad():
        together = run(model, g, clean, patch, src).logits
        for i in range(3):
            alone = run(model, g, clean, patch[i : i + 1], src).logits[0]
            torch.testing.assert_close(together[i], alone, atol=1e-5, rtol=0)


def test_sources() -> None:
    model = perturbed_model(**CONFIGS["attn_only"])
    g = Graph(model)
    clean = _tokens(model)
    zero = source_outputs(model, g, "zero", clean)
    assert zero.shape == (4, model.cfg.n_ctx, g.n_senders, model.cfg.d_model) and not zero.any()
    mean = source_outputs(model, g, "mean", clean)
    torch.testing.assert_close(mean[0], mean[3])
    resampled = source_outputs(model, g, "resampled", clean)
    torch.testing.assert_close(resampled[1], run(model, g, clean[:1]).outputs[0, 0])
    with pytest.raises(ValueError, match="at least 2"):
        source_outputs(model, g, "resampled", clean[:1])
    with pytest.raises(ValueError, match="corrupted tokens"):
        source_outputs(model, g, "corrupted", clean)
    with pytest.raises(ValueError, match="source"):
        run(model, g, clean, torch.ones(1, g.n_edges))
    with pytest.raises(ValueError, match="patch must have shape"):
        run(model, g, clean, torch.ones(g.n_edges), zero)


def test_induction_corruption_redraws_the_first_copy_only() -> None:
    for bos in (False, True):
        batch = repeated_tokens(6, 10, 32, bos=bos, seed=3)
        bad = corrupt("induction", batch, 32, seed=1)
        start = int(bos)
        assert torch.equal(bad[:, start + 10 :], batch.tokens[:, start + 10 :])
        assert (bad[:, start : start + 10] != batch.tokens[:, start : start + 10]).any()
        first = bad[:, start : start + 10]
        assert all(len(set(row.tolist())) == 10 for row in first)  # still distinct ids
        if bos:
            assert (bad[:, 0] == 0).all() and (bad[:, 1:] != 0).all()
    task = InductionTask(seed=0)
    periodic = task.sample(8, torch.Generator().manual_seed(0))
    lengths = first_copy_length(periodic.tokens)
    for row, n in enumerate(lengths.tolist()):  # the period: distinct, then repeating
        tokens = periodic.tokens[row]
        assert len(set(tokens[:n].tolist())) == n and torch.equal(tokens[n:], tokens[:-n])
    bad = corrupt("induction", periodic, 32, seed=0)
    for row, n in enumerate(lengths.tolist()):
        assert torch.equal(bad[row, n:], periodic.tokens[row, n:])
    shift = ShiftByOneTask().probe(4)
    assert corrupt("shift", shift, 32).shape == shift.tokens.shape
    with pytest.raises(ValueError, match="no corruption registered"):
        corrupt("nope", shift, 32)


def test_metrics() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, 7, generator=gen)
    targets = torch.randint(0, 7, (3, 5), generator=gen)
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[:, 2:] = True
    loss = masked_loss(targets, mask)(logits)
    expected = torch.nn.functional.cross_entropy(logits[0][mask], targets[mask], reduction="mean")
    torch.testing.assert_close(loss[0], expected)
    kl = kl_to_clean(logits[0], mask)(logits)
    assert abs(float(kl[0])) < 1e-6 and float(kl[1]) > 0
    diff = logit_diff(targets, mask)(logits)
    manual = (logits[1].gather(-1, targets[..., None])[..., 0] - logits[1].mean(-1))[mask].mean()
    torch.testing.assert_close(diff[1], manual)
    with pytest.raises(ValueError, match="no position"):
        masked_loss(targets, torch.zeros_like(mask))(logits)
    with pytest.raises(ValueError, match="configs"):
        masked_loss(targets, mask)(logits[0])
    with pytest.raises(ValueError, match="unknown metric"):
        from circuits.discovery.metrics import Metric

        Metric("accuracy", mask, targets)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["full_ln", "attn_only"])
def test_edge_patches_match_the_models_split_input_hooks(name: str) -> None:
    """Our forward against the model's own ``use_split_qkv_input`` path: patching
    ``L0H1 -> L1H2.v`` and ``embed -> MLP1`` adds the corrupted-minus-clean sender output to
    that receiver's input hook (``hook_v_input`` / ``hook_mlp_in``, before its LayerNorm)."""
    model = perturbed_model(**CONFIGS[name])
    g = Graph(model)
    clean, other = _tokens(model, seed=0), _tokens(model, seed=1)
    model.set_use_attn_result(True)
    model.set_use_split_qkv_input(True)
    if not model.cfg.attn_only:
        model.set_use_hook_mlp_in(True)
    try:
        names = lambda n: n in ("hook_embed", "blocks.0.attn.hook_result")
        with torch.no_grad():
            _, c_clean = model.run_with_cache(clean, names_filter=names)
            _, c_other = model.run_with_cache(other, names_filter=names)
            head = (
                c_other["blocks.0.attn.hook_result"][:, :, 1]
                - c_clean["blocks.0.attn.hook_result"][:, :, 1]
            )
            embed = c_other["hook_embed"] - c_clean["hook_embed"]

            def v_hook(x, hook):
                x[:, :, 2] = x[:, :, 2] + head
                return x

            def mlp_hook(x, hook):
                return x + embed

            hooks = [("blocks.1.hook_v_input", v_hook)]
            edges = ["L0H1->L1H2.v"]
            if not model.cfg.attn_only:
                hooks.append(("blocks.1.hook_mlp_in", mlp_hook))
                edges.append("embed->MLP1")
            expected = model.run_with_hooks(clean, fwd_hooks=hooks)
    finally:
        model.set_use_attn_result(False)
        model.set_use_split_qkv_input(False)
        if not model.cfg.attn_only:
            model.set_use_hook_mlp_in(False)
    src = source_outputs(model, g, "corrupted", clean, other)
    with torch.no_grad():
        got = run(model, g, clean, g.mask(edges).float()[None], src).logits[0]
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=0)


def test_resuming_at_a_group_equals_the_whole_run() -> None:
    from circuits.discovery import Problem, exact_patching

    model = perturbed_model(**CONFIGS["full_ln"])
    batch = repeated_tokens(4, 10, model.cfg.d_vocab, seed=0)
    problem = Problem.build(model, batch)
    eye = torch.eye(problem.graph.n_edges)
    direct = problem.evaluate(eye) - problem.value()
    torch.testing.assert_close(exact_patching(problem).scores, direct, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="before group"):
        problem.evaluate(eye[:1], start=2)
