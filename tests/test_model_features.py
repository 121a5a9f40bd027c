"""TransformerLens 3.x forward features: start/stop at a layer, input_to_embed, padding masks,
weight views, devices, and bad input answered with our ValueError."""

from __future__ import annotations

import pytest
import torch
from helpers import perturbed_model

from circuits import HookedTransformer, ModelConfig
from circuits.model import fast_path

TOKENS = torch.randint(0, 20, (3, 10), generator=torch.Generator().manual_seed(1))
VARIANTS = {
    "ln": {},
    "attn_only": dict(attn_only=True, normalization_type=None),
    "shortformer": dict(positional_embedding_type="shortformer"),
    "rotary_rms_gqa": dict(
        positional_embedding_type="rotary", normalization_type="RMS", n_key_value_heads=2
    ),
    "solu_ln": dict(act_fn="solu_ln", normalization_type="LNPre"),
}


@pytest.fixture(params=sorted(VARIANTS))
def model(request: pytest.FixtureRequest) -> HookedTransformer:
    return perturbed_model(n_layers=3, **VARIANTS[request.param])


# --- start_at_layer / stop_at_layer / input_to_embed ---
def test_stop_and_start_at_a_layer_compose_to_the_full_forward(model: HookedTransformer) -> None:
    with torch.no_grad():
        logits, cache = model.run_with_cache(TOKENS)
        for layer in (0, 1, 2, -1):
            resid = model(TOKENS, stop_at_layer=layer)
            expected = cache[f"blocks.{layer % 3}.hook_resid_pre"]
            torch.testing.assert_close(resid, expected, atol=1e-5, rtol=1e-5)
            shortformer = None
            if model.cfg.positional_embedding_type == "shortformer":
                shortformer = cache["hook_pos_embed"]
            resumed = model(resid, start_at_layer=layer, shortformer_pos_embed=shortformer)
            torch.testing.assert_close(resumed, logits, atol=1e-5, rtol=1e-5)
        middle = model(
            cache["blocks.1.hook_resid_pre"],
            start_at_layer=1,
            stop_at_layer=2,
            shortformer_pos_embed=shortformer,
        )
        torch.testing.assert_close(middle, cache["blocks.1.hook_resid_post"], atol=1e-5, rtol=1e-5)


def test_input_to_embed_is_the_first_residual_stream(model: HookedTransformer) -> None:
    _, cache = model.run_with_cache(TOKENS)
    residual, tokens, shortformer, mask = model.input_to_embed(TOKENS)
    torch.testing.assert_close(residual, cache["blocks.0.hook_resid_pre"])
    assert torch.equal(tokens, TOKENS) and mask is None
    assert (shortformer is None) == (model.cfg.positional_embedding_type != "shortformer")


def test_loss_from_a_middle_layer_needs_and_uses_tokens() -> None:
    model = perturbed_model()
    with torch.no_grad():
        loss = model(TOKENS, return_type="loss")
        resid = model(TOKENS, stop_at_layer=1)
        torch.testing.assert_close(
            model(resid, start_at_layer=1, tokens=TOKENS, return_type="loss"), loss
        )
        with pytest.raises(ValueError, match="the loss needs tokens"):
            model(resid, start_at_layer=1, return_type="loss")
        with pytest.raises(ValueError, match="d_model=32"):
            model(resid[..., :5], start_at_layer=1)
        with pytest.raises(ValueError, match="float tensor"):
            model(TOKENS, start_at_layer=1)


# --- attention_mask: padding on either side ---
def padded(tokens: torch.Tensor, pad: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    fill = torch.zeros(tokens.shape[0], pad, dtype=tokens.dtype)
    ones, zeros = torch.ones_like(tokens), torch.zeros_like(fill)
    if side == "left":
        return torch.cat([fill, tokens], 1), torch.cat([zeros, ones], 1)
    return torch.cat([tokens, fill], 1), torch.cat([ones, zeros], 1)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_changes_nothing_at_real_tokens(model: HookedTransformer, side: str) -> None:
    short = TOKENS[:, :7]
    tokens, mask = padded(short, 3, side)
    real = mask.bool()
    with torch.no_grad():
        expected_logits, expected_loss = model(short, return_type="both")
        logits, loss = model(tokens, return_type="both", attention_mask=mask)
        _, cache = model.run_with_cache(tokens, attention_mask=mask)
    torch.testing.assert_close(logits[real].view(3, 7, -1), expected_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss, expected_loss, atol=1e-5, rtol=1e-5)
    pattern = cache["blocks.0.attn.hook_pattern"]  # [batch, head, query, key]
    assert torch.all(pattern[:, :, :, ~real[0]] == 0), "a padded key got attention"
    assert not pattern.isnan().any()


def test_a_mask_of_ones_is_no_mask_and_steps_the_fast_path_aside(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = perturbed_model().train()  # the fast path runs in train mode only
    calls: list[int] = []
    original = fast_path.block_forward
    monkeypatch.setattr(
        fast_path, "block_forward", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    with torch.no_grad():
        plain = model(TOKENS)
        masked = model(TOKENS, attention_mask=torch.ones_like(TOKENS))
    assert len(calls) == 2  # the unmasked run only
    torch.testing.assert_close(masked, plain, atol=1e-5, rtol=1e-5)


def test_per_token_loss_is_zero_at_padding() -> None:
    model = perturbed_model()
    tokens, mask = padded(TOKENS[:, :6], 4, "right")
    per_token = model(tokens, return_type="loss", loss_per_token=True, attention_mask=mask)
    assert per_token.shape == (3, 9)
    assert torch.all(per_token[:, 5:] == 0) and torch.all(per_token[:, :5] > 0)


@pytest.mark.parametrize(
    "mask, message",
    [
        (torch.ones(3, 4, dtype=torch.long), "does not match"),
        (torch.ones(3, 10), "integer or bool"),
        (torch.full((3, 10), 2), "only 0"),
    ],
)
def test_bad_attention_masks(mask: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        perturbed_model()(TOKENS, attention_mask=mask)


# --- weight views ---
def test_weight_views_and_parameter_counts() -> None:
    model = perturbed_model(d_mlp=48)
    assert model.W_E_pos.shape == (20 + 24, 32)
    assert torch.equal(model.W_E_pos[20:], model.W_pos)
    assert model.b_in.shape == (2, 48) and model.b_out.shape == (2, 32)
    assert torch.equal(model.b_in[1], model.blocks[1].mlp.b_in)
    for name, shape in [("b_Q", (2, 4, 8)), ("b_K", (2, 4, 8)), ("b_V", (2, 4, 8))]:
        assert getattr(model, name).shape == shape
    assert model.b_O.shape == (2, 32)
    assert model.n_params_total == sum(p.numel() for p in model.parameters())
    assert model.cfg.n_params == 2 * (4 * 4 * 32 * 8 + 2 * 32 * 48)
    bias = model.accumulated_bias(2)
    expected = sum(b.attn.b_O + b.mlp.b_out for b in model.blocks)
    torch.testing.assert_close(bias, expected)
    torch.testing.assert_close(model.accumulated_bias(1, mlp_input=True), expected - model.b_out[1])
    with pytest.raises(ValueError, match="out of range"):
        model.accumulated_bias(3)
    with pytest.raises(AttributeError, match="b_in"):
        perturbed_model(attn_only=True).b_in  # noqa: B018


def test_grouped_query_weights_repeat_per_query_head() -> None:
    model = perturbed_model(n_key_value_heads=2)
    attn = model.blocks[0].attn
    assert attn._W_K.shape == (2, 32, 8) and model.W_K.shape == (2, 4, 32, 8)
    assert torch.equal(model.W_K[0, 1], attn._W_K[0]) and torch.equal(model.W_V[0, 2], attn._W_V[1])
    keys = {k for k in model.state_dict() if k.startswith("blocks.0.attn.")}
    assert {"blocks.0.attn._W_K", "blocks.0.attn._b_V"} <= keys
    assert "blocks.0.attn.W_K" not in keys


def test_there_is_no_tokenizer() -> None:
    assert perturbed_model().tokenizer is None


# --- devices ---
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_the_meta_device_runs_everything_with_no_hidden_copy_to_cpu(name: str) -> None:
    """Meta tensors have shapes and no values: any ``.cpu()``, ``.item()`` or tensor made on the
    CPU by default would fail or show up as a non-meta result."""
    model = perturbed_model(**VARIANTS[name]).to("meta")
    assert model.cfg.device == "meta"
    assert all(m.cfg is model.cfg for m in model.modules() if hasattr(m, "cfg"))
    tokens = torch.zeros(2, 6, dtype=torch.long, device="meta")
    mask = torch.ones(2, 6, dtype=torch.long, device="meta")
    logits, loss = model(tokens, return_type="both")
    assert logits.device.type == loss.device.type == "meta"
    assert model(tokens, attention_mask=mask).device.type == "meta"
    _, cache = model.run_with_cache(tokens)
    assert {v.device.type for v in cache.values()} == {"meta"}
    assert model(tokens, stop_at_layer=1).device.type == "meta"
    assert model.accumulated_bias(1).device.type == "meta"


def test_cfg_device_follows_the_model() -> None:
    model = perturbed_model()
    assert model.cfg.device == "cpu"
    model.to("meta")
    assert model.cfg.device == "meta"
    model.to_empty(device="cpu")
    assert model.cfg.device == "cpu"
    assert model.cfg == perturbed_model().cfg  # the device is not architecture


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu() -> None:
    model = perturbed_model()
    expected = model(TOKENS)
    model.to("cuda")
    assert model.cfg.device.startswith("cuda")
    logits = model(TOKENS.cuda())
    torch.testing.assert_close(logits.cpu(), expected, atol=1e-4, rtol=1e-4)


# --- bad input gets our ValueError ---
def test_loss_over_one_position_is_refused_not_nan() -> None:
    model = perturbed_model()
    with pytest.raises(ValueError, match="at least 2 positions"):
        model(TOKENS[:, :1], return_type="loss")


@pytest.mark.parametrize(
    "targets, message",
    [
        (torch.full((3, 10), 20), "target id 20 is outside"),
        (torch.full((3, 10), -1), "target id -1 is outside"),
        (torch.zeros(3, 10), "integer dtype"),
        (torch.zeros(3, 10, dtype=torch.bool), "integer dtype"),
        (torch.zeros(3, 9, dtype=torch.long), "targets shape"),
    ],
)
def test_bad_targets(targets: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        perturbed_model()(TOKENS, return_type="loss", targets=targets)


def test_a_smaller_output_vocabulary_refuses_targets_it_cannot_output() -> None:
    model = HookedTransformer(
        ModelConfig(n_layers=1, d_model=16, n_ctx=8, d_vocab=8, n_heads=2, d_vocab_out=4)
    )
    tokens = torch.tensor([[1, 2, 7, 3]])
    with pytest.raises(
        ValueError, match=r"next-token target id 7 is outside the model's outputs \[0, 4\)"
    ):
        model(tokens, return_type="loss")
    assert model(tokens, return_type="loss", targets=tokens % 4).isfinite()


@pytest.mark.parametrize(
    "bad",
    [[torch.tensor([1, 2]), torch.tensor([3])], object(), [[1, 2], [3]], [1.5, 2.0]],
    ids=["list_of_tensors", "object", "ragged", "floats"],
)
def test_to_tokens_refuses_what_it_cannot_take(bad: object) -> None:
    with pytest.raises(ValueError):
        perturbed_model().to_tokens(bad)


def test_kv_cache_and_text_options_are_refused_by_name() -> None:
    model = perturbed_model()
    with pytest.raises(TypeError, match="past_kv_cache"):
        model(TOKENS, past_kv_cache=object())
