"""Weight processing keeps the model's function (logits to 1e-5; log-probs for center_unembed).

Random weights with nonzero biases and LayerNorm gains; LN+MLP models and attention-only ones.
Parity with TransformerLens 3.x's own processing is in the fixture tests at the end.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from circuits import HookedTransformer, ModelConfig
from circuits.model import processing as P

ATOL = 1e-5
PROCESSING_FIXTURES = sorted((Path(__file__).parent / "fixtures" / "tl3_processing").glob("*.pt"))


def random_model(seed: int = 0, **overrides: Any) -> HookedTransformer:
    fields: dict[str, Any] = dict(
        n_layers=2, d_model=16, n_ctx=12, d_vocab=11, n_heads=4, d_mlp=24, seed=seed
    )
    fields.update(overrides)
    if fields.get("attn_only"):
        fields.pop("d_mlp", None)
    model = HookedTransformer(ModelConfig(**fields)).eval()
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1].lstrip("_")
            if leaf.startswith("b_") or leaf == "b":
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif leaf == "w":
                p.copy_(1 + 0.5 * torch.randn(p.shape, generator=g))
    return model


def tokens_for(model: HookedTransformer, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.cfg.d_vocab, (3, model.cfg.n_ctx), generator=g)


ARCHS = {
    "ln_gelu": dict(),
    "ln_relu_1l": dict(n_layers=1, act_fn="relu"),
    "ln_gelu_new": dict(act_fn="gelu_new"),
    "ln_attn_only": dict(attn_only=True),
    "attn_only_no_ln": dict(attn_only=True, normalization_type=None),
    "mlp_no_ln": dict(normalization_type=None),
}
LN_ARCHS = [k for k, v in ARCHS.items() if v.get("normalization_type", "LN") == "LN"]


def logits_before_after(arch: dict[str, Any], **flags: Any) -> tuple[Any, ...]:
    model = random_model(**arch)
    tokens = tokens_for(model)
    with torch.no_grad():
        before = model(tokens)
    flags = {
        "fold_ln": False,
        "center_writing_weights": False,
        "center_unembed": False,
        "fold_value_biases": False,
        **flags,
    }
    model.process_weights_(**flags)
    with torch.no_grad():
        after = model(tokens)
    return model, before, after


@pytest.mark.parametrize("name", LN_ARCHS)
def test_fold_layer_norm_keeps_logits(name: str) -> None:
    model, before, after = logits_before_after(ARCHS[name], fold_ln=True)
    torch.testing.assert_close(after, before, atol=ATOL, rtol=0)
    assert model.cfg.normalization_type == "LNPre"
    assert not any(".ln" in k or k.startswith("ln_final") for k in model.state_dict())
    # The readers' input-side mean is gone (the input to them is mean-free after LNPre).
    torch.testing.assert_close(model.W_Q.mean(-2), torch.zeros_like(model.W_Q.mean(-2)))
    torch.testing.assert_close(model.W_U.mean(0), torch.zeros_like(model.W_U.mean(0)))


def test_fold_layer_norm_moves_gain_into_readers() -> None:
    """A known answer: W_Q_folded = diag(w) W_Q minus its mean over d_model; b_Q += b @ W_Q."""
    model = random_model()
    sd = model.state_dict()
    folded = P.fold_layer_norm(sd, model.cfg)
    w, b, W = sd["blocks.1.ln1.w"], sd["blocks.1.ln1.b"], sd["blocks.1.attn.W_Q"]
    expected = w[None, :, None] * W
    expected = expected - expected.mean(1, keepdim=True)
    torch.testing.assert_close(folded["blocks.1.attn.W_Q"], expected)
    torch.testing.assert_close(
        folded["blocks.1.attn.b_Q"],
        sd["blocks.1.attn.b_Q"] + torch.einsum("d,hde->he", b, W),
    )
    # The input dict is left as it was.
    assert "blocks.1.ln1.w" in sd and torch.equal(sd["blocks.1.attn.W_Q"], W)


@pytest.mark.parametrize("name", LN_ARCHS)
def test_center_writing_weights_keeps_logits(name: str) -> None:
    model, before, after = logits_before_after(ARCHS[name], center_writing_weights=True)
    torch.testing.assert_close(after, before, atol=ATOL, rtol=0)
    for W in (model.W_E, model.W_pos, model.W_O, model.b_O):
        torch.testing.assert_close(W.mean(-1), torch.zeros_like(W.mean(-1)))


def test_center_writing_weights_after_fold_keeps_logits() -> None:
    _, before, after = logits_before_after(
        ARCHS["ln_gelu"], fold_ln=True, center_writing_weights=True
    )
    torch.testing.assert_close(after, before, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", list(ARCHS))
def test_center_unembed_keeps_log_probs(name: str) -> None:
    _, before, after = logits_before_after(ARCHS[name], center_unembed=True)
    torch.testing.assert_close(after.log_softmax(-1), before.log_softmax(-1), atol=ATOL, rtol=0)
    # Logits change by exactly their mean over the vocabulary.
    torch.testing.assert_close(after, before - before.mean(-1, keepdim=True), atol=ATOL, rtol=0)
    assert (after - before).abs().max() > 1e-3  # a real change, not a no-op


@pytest.mark.parametrize("name", list(ARCHS))
def test_fold_value_biases_keeps_logits(name: str) -> None:
    model, before, after = logits_before_after(ARCHS[name], fold_value_biases=True)
    torch.testing.assert_close(after, before, atol=ATOL, rtol=0)
    assert torch.equal(model.b_V, torch.zeros_like(model.b_V))


@pytest.mark.parametrize("name", list(ARCHS))
def test_refactor_keeps_logits_patterns_and_circuits(name: str) -> None:
    model = random_model(**ARCHS[name])
    tokens = tokens_for(model)
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("pattern"))
    QK, OV = model.QK.AB.detach(), model.OV.AB.detach()
    with torch.no_grad():
        before = model(tokens)
    model.process_weights_(
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        refactor_factored_attn_matrices=True,
    )
    with torch.no_grad():
        after = model(tokens)
    torch.testing.assert_close(after, before, atol=ATOL, rtol=0)
    _, cache2 = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("pattern"))
    for layer in range(model.cfg.n_layers):
        torch.testing.assert_close(
            cache2["pattern", layer], cache["pattern", layer], atol=ATOL, rtol=0
        )
    torch.testing.assert_close(model.OV.AB, OV, atol=ATOL, rtol=0)
    # Without biases folded in, W_QK itself (the d_model block) is unchanged too.
    torch.testing.assert_close(model.QK.AB, QK, atol=ATOL, rtol=0)
    # W_O has orthonormal rows (a rotation into the residual stream).
    W_O = model.W_O.detach()
    eye = torch.eye(model.cfg.d_head).expand_as(W_O @ W_O.transpose(-1, -2))
    torch.testing.assert_close(W_O @ W_O.transpose(-1, -2), eye, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", list(ARCHS))
def test_process_weights_defaults_keep_log_probs(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    model = random_model(**ARCHS[name])
    tokens = tokens_for(model)
    with torch.no_grad():
        before = model(tokens)
    with caplog.at_level(logging.WARNING, logger="circuits.model.processing"):
        model.process_weights_()
    with torch.no_grad():
        after = model(tokens)
    torch.testing.assert_close(after.log_softmax(-1), before.log_softmax(-1), atol=ATOL, rtol=0)
    if name in LN_ARCHS:
        assert model.cfg.normalization_type == "LNPre"
        assert not caplog.records
    else:
        # TL3 skips what a model without LayerNorm cannot take, and says so.
        assert model.cfg.normalization_type is None
        messages = " ".join(r.getMessage() for r in caplog.records)
        assert "fold_ln skipped" in messages and "center_writing_weights skipped" in messages


def test_processed_model_still_trains_and_caches() -> None:
    model = random_model().train()
    model.process_weights_()
    assert model.training
    tokens = tokens_for(model)
    loss = model(tokens, return_type="loss")
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    _, cache = model.run_with_cache(tokens)
    assert "blocks.0.ln1.hook_scale" in cache.cache_dict  # LNPre keeps its hooks


def test_errors_are_clear() -> None:
    short = random_model(positional_embedding_type="shortformer")
    with pytest.raises(ValueError, match="shortformer"):
        P.fold_layer_norm(short.state_dict(), short.cfg)
    no_ln = random_model(normalization_type=None)
    with pytest.raises(ValueError, match="normalization_type"):
        P.fold_layer_norm(no_ln.state_dict(), no_ln.cfg)
    with pytest.raises(ValueError, match="LN"):
        P.center_writing_weights(no_ln.state_dict(), no_ln.cfg)
    model = random_model()
    model.add_hook("blocks.0.hook_resid_pre", lambda x, hook: x)
    with pytest.raises(ValueError, match="hooks"):
        model.process_weights_()
    with pytest.raises(TypeError, match="dict"):
        P.center_unembed([1, 2])  # type: ignore[arg-type]


def test_shortformer_process_weights_skips_fold_and_keeps_log_probs() -> None:
    model = random_model(positional_embedding_type="shortformer")
    tokens = tokens_for(model)
    with torch.no_grad():
        before = model(tokens)
    model.process_weights_()
    with torch.no_grad():
        after = model(tokens)
    assert model.cfg.normalization_type == "LN"
    torch.testing.assert_close(after.log_softmax(-1), before.log_softmax(-1), atol=ATOL, rtol=0)


# --- parity with TransformerLens 3.x's own process_weights_ (fixtures made by TL 3.9) ---
def test_processing_fixtures_present() -> None:
    assert {p.stem for p in PROCESSING_FIXTURES} >= {
        "full_2l_ln",
        "attn_only_2l_ln",
        "attn_only_2l",
    }


def _config_from_fixture(c: dict[str, Any]) -> ModelConfig:
    fields = {
        k: v
        for k, v in c.items()
        if v is not None
        and k
        not in (
            "attn_scale",
            "use_attn_scale",
            "final_rms",
            "rotary_base",
            "rotary_adjacent_pairs",
            "rotary_dim",
        )
    }
    fields["normalization_type"] = c["normalization_type"]
    if c["attn_only"]:
        fields.pop("act_fn", None)
    return ModelConfig(**fields)


@pytest.mark.parametrize("path", PROCESSING_FIXTURES, ids=[p.stem for p in PROCESSING_FIXTURES])
def test_matches_tl3_process_weights(path: Path) -> None:
    fx = torch.load(path, weights_only=True)
    cfg = _config_from_fixture(fx["config"])
    raw = {
        k: v for k, v in fx["state_dict"].items() if not k.endswith(("attn.mask", "attn.IGNORE"))
    }
    ours, new_cfg = P.process_state_dict(raw, cfg)
    assert new_cfg.normalization_type == fx["processed_config"]["normalization_type"]
    theirs = {
        k: v
        for k, v in fx["processed_state_dict"].items()
        if not k.endswith(("attn.mask", "attn.IGNORE", "rotary_sin", "rotary_cos"))
    }
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        torch.testing.assert_close(ours[key], theirs[key], atol=1e-5, rtol=0, msg=key)
    model = HookedTransformer(new_cfg).eval()
    model.load_state_dict(ours, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(model(fx["tokens"]), fx["processed_logits"], atol=ATOL, rtol=0)
    if "refactored_logits" in fx:
        ours_r, cfg_r = P.process_state_dict(raw, cfg, refactor_factored_attn_matrices=True)
        model = HookedTransformer(cfg_r).eval()
        model.load_state_dict(ours_r, strict=True)
        with torch.no_grad():
            torch.testing.assert_close(
                model(fx["tokens"]), fx["refactored_logits"], atol=ATOL, rtol=0
            )


@pytest.mark.parametrize(
    "arch",
    [
        dict(positional_embedding_type="rotary", rotary_dim=2),
        dict(normalization_type="RMS"),
        dict(act_fn="solu_ln"),
        dict(n_key_value_heads=2),
    ],
    ids=["rotary", "rms", "solu_ln", "gqa"],
)
def test_process_weights_variants_keep_log_probs(arch: dict[str, Any]) -> None:
    model = random_model(**arch)
    tokens = tokens_for(model)
    with torch.no_grad():
        before = model(tokens)
    model.process_weights_()
    with torch.no_grad():
        after = model(tokens)
    torch.testing.assert_close(after.log_softmax(-1), before.log_softmax(-1), atol=ATOL, rtol=0)
    expected = "RMSPre" if arch.get("normalization_type") == "RMS" else "LNPre"
    assert model.cfg.normalization_type == expected


def test_refactor_refuses_rotary_and_grouped_query() -> None:
    for arch, match in (
        (dict(positional_embedding_type="rotary"), "rotary"),
        (dict(n_key_value_heads=2), "grouped"),
    ):
        model = random_model(**arch)
        with pytest.raises(ValueError, match=match):
            P.refactor_factored_attn_matrices(model.state_dict(), model.cfg)


def test_composition_scores_after_folding_are_the_fold_ln_scores() -> None:
    """What folding changes in a weight-based analysis: the processed model's raw composition
    scores are the original's scores with LayerNorm folded in by the analysis (centring and
    gain), not its raw scores."""
    from circuits.analysis import composition_scores

    model = random_model(n_layers=2, attn_only=True)
    folded_view = {m: composition_scores(model, m, fold_ln=True) for m in "QKV"}
    raw = {m: composition_scores(model, m) for m in "QKV"}
    model.process_weights_(center_writing_weights=False, center_unembed=False)
    for m in "QKV":
        after = composition_scores(model, m)
        torch.testing.assert_close(after, folded_view[m], atol=1e-5, rtol=0)
        torch.testing.assert_close(composition_scores(model, m, fold_ln=True), after)
        assert (after - raw[m]).abs().max() > 1e-3  # the gains matter
