"""Figures show exactly the numbers they are given: cells, masks, outlines, hover text, marks."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from circuits import HookedTransformer, ModelConfig, plots
from circuits.plots.training import phase_change_step


@pytest.fixture(params=["attn_only", "full_ln"])
def any_model(request: pytest.FixtureRequest) -> HookedTransformer:
    extra: dict = {"attn_only": dict(attn_only=True, normalization_type=None), "full_ln": {}}
    cfg = ModelConfig(
        n_layers=2, d_model=16, n_ctx=12, d_vocab=10, n_heads=2, seed=1, **extra[request.param]
    )
    return HookedTransformer(cfg).eval()


def causal_patterns(n_layers: int, n_heads: int, n: int, seed: int = 0) -> torch.Tensor:
    scores = torch.randn(n_layers, n_heads, n, n, generator=torch.Generator().manual_seed(seed))
    mask = torch.ones(n, n, dtype=torch.bool).tril()
    return scores.masked_fill(~mask, float("-inf")).softmax(-1)


def test_attention_grid_shows_each_head_with_causal_blanks_and_token_hover() -> None:
    p = causal_patterns(2, 3, 5)
    tokens = [7, 3, 9, 3, 1]
    fig = plots.attention_grid(p, tokens)
    assert isinstance(fig, go.Figure)
    assert len(fig.data) == 6
    for i, trace in enumerate(fig.data):
        layer, head = divmod(i, 3)
        assert trace.name == f"L{layer}H{head}"
        z = np.array(trace.z, dtype=float)
        lower = np.tril(np.ones((5, 5), dtype=bool))
        np.testing.assert_allclose(z[lower], p[layer, head].numpy()[lower], rtol=1e-6)
        assert np.isnan(z[~lower]).all()
        # Hover data at (query 3, key 1) names both tokens.
        assert tuple(trace.customdata[3][1]) == ("3", "3")
        assert tuple(trace.customdata[2][4]) == ("9", "1")
    assert fig.layout.coloraxis.cmin == 0 and fig.layout.coloraxis.cmax == 1


def test_attention_patterns_runs_the_model_and_rejects_batches(
    any_model: HookedTransformer,
) -> None:
    tokens = torch.arange(6) % any_model.cfg.d_vocab
    fig = plots.attention_patterns(any_model, tokens)
    assert len(fig.data) == any_model.cfg.n_layers * any_model.cfg.n_heads
    _, cache = any_model.run_with_cache(tokens)
    want = cache["blocks.1.attn.hook_pattern"][0, 0]
    np.testing.assert_allclose(
        np.nan_to_num(np.array(fig.data[any_model.cfg.n_heads].z, dtype=float)),
        want.detach().numpy(),
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="one sequence"):
        plots.attention_patterns(any_model, torch.zeros(2, 4, dtype=torch.long))


def test_attention_grid_rejects_bad_shapes_and_labels() -> None:
    with pytest.raises(ValueError, match="4 dimensions"):
        plots.attention_grid(torch.rand(2, 3, 3))
    with pytest.raises(ValueError, match="square"):
        plots.attention_grid(torch.rand(1, 1, 3, 4))
    with pytest.raises(ValueError, match="3 entries but the data has 4"):
        plots.attention_grid(causal_patterns(1, 1, 4), [1, 2, 3])
    with pytest.raises(TypeError, match="patterns"):
        plots.attention_grid("not a tensor")


def test_head_scores_outline_exactly_the_heads_over_threshold() -> None:
    scores = torch.tensor([[0.1, 0.5, 0.39], [0.4, 0.0, 0.9]])
    fig = plots.head_scores(scores, "Previous-token", threshold=0.4)
    np.testing.assert_allclose(np.array(fig.data[0].z), scores.numpy())
    outlined = sorted(
        (round((s.y0 + s.y1) / 2), round((s.x0 + s.x1) / 2)) for s in fig.layout.shapes
    )
    assert outlined == [(0, 1), (1, 0), (1, 2)]
    assert "Previous-token" in fig.layout.title.text
    assert len(plots.head_scores(scores, threshold=None).layout.shapes) == 0


def test_composition_scores_show_only_earlier_to_later_pairs_around_the_baseline() -> None:
    gen = torch.Generator().manual_seed(0)
    raw = {m: torch.rand(3, 2, 3, 2, generator=gen) for m in "QKV"}
    fig = plots.composition_scores(raw, baseline=0.2)
    assert all(t.x == ("L1H0", "L1H1", "L2H0", "L2H1") for t in fig.data)
    assert fig.data[0].y == ("L0H0", "L0H1", "L1H0", "L1H1")
    for trace, mode in zip(fig.data, "QKV", strict=True):
        z = np.array(trace.z, dtype=float)
        for r, (l1, h1) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
            for c, (l2, h2) in enumerate([(1, 0), (1, 1), (2, 0), (2, 1)]):
                if l1 < l2:
                    assert z[r, c] == pytest.approx(float(raw[mode][l1, h1, l2, h2]))
                else:
                    assert np.isnan(z[r, c])
    axis = fig.layout.coloraxis
    assert (axis.cmin + axis.cmax) / 2 == pytest.approx(0.2)  # white sits at the baseline
    assert "baseline 0.20" in axis.colorbar.ticktext[1]
    with pytest.raises(ValueError, match="at least 2 layers"):
        plots.composition_scores({"K": torch.rand(1, 2, 1, 2)})
    with pytest.raises(TypeError, match="CompositionScores"):
        plots.composition_scores(torch.rand(2, 2, 2, 2))


def test_composition_scores_accepts_the_analysis_result(any_model: HookedTransformer) -> None:
    from circuits.analysis.composition import all_composition_scores

    comp = all_composition_scores(any_model, n_samples=16)
    fig = plots.composition_scores(comp)
    assert len(fig.data) == 3
    assert f"{comp.baseline:.3f}" in fig.layout.title.text
    n_heads = any_model.cfg.n_heads
    z = np.array(fig.data[1].z, dtype=float)  # K
    assert z[0, 0] == pytest.approx(float(comp.k[0, 0, 1, 0]), rel=1e-6)
    assert z[n_heads - 1, n_heads - 1] == pytest.approx(
        float(comp.k[0, n_heads - 1, 1, n_heads - 1]), rel=1e-6
    )


def test_circuit_heatmap_is_centred_on_zero_and_masks_causally() -> None:
    m = torch.tensor([[1.0, 2.0], [-4.0, 0.5]])
    fig = plots.circuit_heatmap(m, causal=True)
    z = np.array(fig.data[0].z, dtype=float)
    assert np.isnan(z[0, 1]) and z[1, 0] == -4.0
    assert fig.data[0].zmin == -4.0 and fig.data[0].zmax == 4.0


def test_circuit_grid_forms_factored_products() -> None:
    from transformer_lens.FactoredMatrix import FactoredMatrix

    gen = torch.Generator().manual_seed(1)
    A, B = torch.randn(2, 3, 5, 2, generator=gen), torch.randn(2, 3, 2, 5, generator=gen)
    fig = plots.circuit_grid(FactoredMatrix(A, B))
    assert len(fig.data) == 6
    np.testing.assert_allclose(np.array(fig.data[4].z), (A[1, 1] @ B[1, 1]).numpy(), rtol=1e-5)


def test_eigenvalue_scatter_places_known_eigenvalues() -> None:
    # Head 0 copies (eigenvalues 1, 2), head 1 rotates (eigenvalues +-i), head 2 anti-copies.
    mats = torch.zeros(1, 3, 3, 3)
    mats[0, 0] = torch.diag(torch.tensor([1.0, 2.0, 0.0]))
    mats[0, 1, :2, :2] = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
    mats[0, 2] = -torch.eye(3)
    fig = plots.eigenvalues(mats, copying=torch.tensor([[1.0, 0.0, -1.0]]))
    points = [sorted(zip(t.x, t.y, strict=True)) for t in fig.data]
    np.testing.assert_allclose(points[0], [(1.0, 0.0), (2.0, 0.0)], atol=1e-6)
    np.testing.assert_allclose(points[1], [(0.0, -1.0), (0.0, 1.0)], atol=1e-6)
    np.testing.assert_allclose(points[2], [(-1.0, 0.0)] * 3, atol=1e-6)
    assert [t.name for t in fig.data] == [
        "L0H0 (copying +1.00)",
        "L0H1 (copying +0.00)",
        "L0H2 (copying -1.00)",
    ]


def test_lens_heatmap_writes_top_tokens_and_logs_ranks() -> None:
    probs = torch.tensor([[0.1, 0.2, 0.3], [0.9, 0.8, 0.7]])
    top = torch.tensor([[4, 5, 6], [1, 2, 3]])
    fig = plots.lens_heatmap(probs, tokens=[1, 2, 3], top_tokens=top)
    np.testing.assert_allclose(np.array(fig.data[0].z), probs.numpy())
    assert np.array(fig.data[0].text).tolist() == [["4", "5", "6"], ["1", "2", "3"]]
    ranks = torch.tensor([[0.0, 9.0, 99.0]])
    fig = plots.lens_heatmap(ranks, metric="rank")
    np.testing.assert_allclose(np.array(fig.data[0].z), [[0.0, 1.0, 2.0]])
    with pytest.raises(ValueError, match="top_tokens shape"):
        plots.lens_heatmap(probs, top_tokens=top[:1])


def test_loss_by_position_draws_one_line_per_model_and_marks_the_score_tokens() -> None:
    two = torch.tensor([float("nan"), 1.2, 0.5, 0.1])
    fig = plots.loss_by_position({"2L": two, "1L": [float("nan"), 1.0, 1.3, 1.4]}, early=1, late=3)
    assert [trace.name for trace in fig.data] == ["2L", "1L"]
    np.testing.assert_allclose(np.array(fig.data[0].y, dtype=float), two.numpy())
    assert np.array(fig.data[1].x).tolist() == [0, 1, 2, 3]
    assert sorted(shape.x0 for shape in fig.layout.shapes) == [1, 3]
    with pytest.raises(ValueError, match="losses is empty"):
        plots.loss_by_position({})
    with pytest.raises(ValueError, match="1 dimensions"):
        plots.loss_by_position({"bad": torch.zeros(2, 2)})


def fake_history() -> list[dict]:
    # The probe loss falls slowly, then by 1.5 between steps 300 and 350: the phase change.
    losses = [3.0, 2.9, 2.8, 2.7, 2.6, 2.5, 1.0, 0.9, 0.85]
    return [
        {
            "step": 50 * (i + 1),
            "loss": loss,
            "accuracy": 1 - loss / 3,
            "previous_token": [[0.1 * i / 8, 0.5], [0.0, 0.0]],
            "induction": [[0.0, 0.0], [0.9 * i / 8, 0.1]],
        }
        for i, loss in enumerate(losses)
    ]


def test_phase_change_step_finds_the_steepest_drop() -> None:
    assert phase_change_step(fake_history()) == 350
    assert phase_change_step(fake_history()[:1]) is None
    flat = [{"step": s, "loss": 1.0} for s in (1, 2, 3)]
    assert phase_change_step(flat) is None
    # Uneven evaluation intervals: the drop per step counts, not the drop per record.
    uneven = [(0, 2.0), (10, 1.99), (20, 1.5), (1000, 0.5)]
    assert phase_change_step([{"step": s, "loss": v} for s, v in uneven]) == 20
    # A run's initial descent (each interval falling less steeply) is not a phase change.
    descent = [(0, 2.0), (10, 1.5), (1000, 0.5)]
    assert phase_change_step([{"step": s, "loss": v} for s, v in descent]) is None


def test_training_dynamics_plots_every_head_and_marks_the_phase_change() -> None:
    history = fake_history()
    fig = plots.training_dynamics({"history": history, "losses": [3.0] * 450})
    names = [t.name for t in fig.data]
    assert names[:3] == ["train loss (per step)", "probe loss", "probe accuracy"]
    assert "L1H0 induction" in names and "L0H1 previous-token" in names
    assert len(names) == 3 + 2 * 4
    ind = fig.data[names.index("L1H0 induction")]
    np.testing.assert_allclose(ind.y, [r["induction"][1][0] for r in history])
    assert {s.x0 for s in fig.layout.shapes} == {350}  # one line through both panels
    assert any(a.text == "phase change (steps 300-350)" for a in fig.layout.annotations)
    unmarked = plots.training_dynamics(history, mark_phase_change=False)
    assert len(unmarked.layout.shapes) == 0
    with pytest.raises(ValueError, match="no training history"):
        plots.training_dynamics([])
    with pytest.raises(TypeError, match="TrainResult"):
        plots.training_dynamics(3)


def standin_tokenizer():
    from pathlib import Path

    from transformers import AutoTokenizer

    hub = Path(__file__).resolve().parents[1] / "data" / "standin_hub"
    (folder,) = hub.glob("models--NeelNanda--gpt-neox-tokenizer-digits/snapshots/*")
    return AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)


def test_token_strings_show_bytes_and_whitespace_not_replacement_glyphs() -> None:
    from types import SimpleNamespace

    from circuits.plots.tokens import token_strings, visible

    tok = standin_tokenizer()
    model = SimpleNamespace(tokenizer=tok)
    ids = tok("é\n cat\t", add_special_tokens=False)["input_ids"]
    shown = token_strings(model, torch.tensor(ids))
    # Whatever the merges, the labels spell the text back with its bytes made visible.
    assert "".join(shown) == "\\xc3\\xa9\\n␣cat\\t" or "".join(shown) == "é\\n␣cat\\t"
    assert all("\ufffd" not in s for s in token_strings(model, list(range(tok.vocab_size))))
    assert token_strings(model, [[ids[0]], [ids[-1]]]) == [[shown[0]], [shown[-1]]]
    assert token_strings(None, torch.tensor([3, 4])) == ["3", "4"]
    assert visible("") == "∅" and visible(" a\x07") == "␣a\\x07" and visible(b"\xe2") == "\\xe2"
    with pytest.raises(TypeError, match="integer token ids"):
        token_strings(model, [1.5])


def test_attention_patterns_of_a_tokenizer_model_label_axes_with_token_strings(
    any_model: HookedTransformer,
) -> None:
    any_model.tokenizer = standin_tokenizer()  # ids 0..9: the tokenizer's first strings
    try:
        tokens = torch.tensor([0, 5, 3, 5])
        fig = plots.attention_patterns(any_model, tokens)
        want = plots.token_strings(any_model, tokens)
        assert [str(t) for t in fig.layout.yaxis.ticktext] == [
            f"{i}:{s}" for i, s in enumerate(want)
        ]
    finally:
        any_model.tokenizer = None


def test_lens_heatmap_writes_token_strings_in_cells() -> None:
    probs = torch.tensor([[0.1, 0.2], [0.9, 0.8]])
    fig = plots.lens_heatmap(probs, [" a", "b"], [["x", " y"], ["\n", "z"]])
    assert np.array(fig.data[0].text).tolist() == [["x", "␣y"], ["\\n", "z"]]
    assert fig.layout.xaxis.ticktext[0] == "0:␣a"
    with pytest.raises(ValueError, match="top_tokens shape"):
        plots.lens_heatmap(probs, top_tokens=[["x"], ["y", "z"]])
