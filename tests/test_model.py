import pytest
import torch
import torch.nn.functional as F
from helpers import perturbed_model

from circuits import HookedTransformer, ModelConfig


def test_parameter_names_and_shapes_are_transformer_lens():
    model = perturbed_model(act_fn="gelu", d_mlp=48)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    V, C, D, H, E, M = 20, 24, 32, 4, 8, 48
    expected = {"embed.W_E": (V, D), "pos_embed.W_pos": (C, D), "ln_final.w": (D,)}
    expected |= {"ln_final.b": (D,), "unembed.W_U": (D, V), "unembed.b_U": (V,)}
    for layer in range(2):
        a = f"blocks.{layer}.attn."
        expected |= {a + w: (H, D, E) for w in ("W_Q", "W_K", "W_V")}
        expected |= {a + b: (H, E) for b in ("b_Q", "b_K", "b_V")}
        expected |= {a + "W_O": (H, E, D), a + "b_O": (D,)}
        m = f"blocks.{layer}.mlp."
        expected |= {m + "W_in": (D, M), m + "b_in": (M,), m + "W_out": (M, D), m + "b_out": (D,)}
        for ln in ("ln1", "ln2"):
            expected |= {f"blocks.{layer}.{ln}.w": (D,), f"blocks.{layer}.{ln}.b": (D,)}
    assert shapes == expected


def test_attn_only_has_no_ln_or_mlp_parameters():
    model = perturbed_model(attn_only=True, normalization_type=None)
    names = [n for n, _ in model.named_parameters()]
    assert not [n for n in names if "ln" in n or "mlp" in n]


def test_hook_names(any_model):
    cfg = any_model.cfg
    _, cache = any_model.run_with_cache(torch.randint(0, 20, (2, 10)))
    expected = {"hook_embed", "hook_pos_embed"}
    for layer in range(cfg.n_layers):
        b = f"blocks.{layer}."
        expected |= {b + h for h in ("hook_resid_pre", "hook_attn_out", "hook_resid_post")}
        expected |= {b + "attn." + h for h in ("hook_q", "hook_k", "hook_v", "hook_z")}
        expected |= {b + "attn.hook_attn_scores", b + "attn.hook_pattern"}
        if not cfg.attn_only:
            expected |= {b + h for h in ("hook_resid_mid", "mlp.hook_pre", "mlp.hook_post")}
            expected |= {b + "hook_mlp_out"}
        if cfg.use_attn_result:
            expected.add(b + "attn.hook_result")
    if cfg.normalization_type == "LN":
        expected.add("ln_final.hook_scale")
    assert expected <= set(cache.keys())
    assert cache["blocks.0.attn.hook_pattern"].shape == (2, cfg.n_heads, 10, 10)
    assert cache["blocks.0.attn.hook_z"].shape == (2, 10, cfg.n_heads, cfg.d_head)


def test_hooked_residual_stream_adds_up(any_model):
    """resid_post = resid_pre + attn_out (+ mlp_out): the cache is the real computation."""
    _, cache = any_model.run_with_cache(torch.randint(0, 20, (2, 10)))
    for layer in range(any_model.cfg.n_layers):
        total = cache[f"blocks.{layer}.hook_resid_pre"] + cache[f"blocks.{layer}.hook_attn_out"]
        if not any_model.cfg.attn_only:
            total = total + cache[f"blocks.{layer}.hook_mlp_out"]
        torch.testing.assert_close(total, cache[f"blocks.{layer}.hook_resid_post"])
    pattern = cache["blocks.1.attn.hook_pattern"]
    torch.testing.assert_close(pattern.sum(-1), torch.ones(pattern.shape[:-1]))
    assert (pattern.triu(1) == 0).all(), "attention must be causal"


def test_per_head_results_sum_to_attention_output():
    model = perturbed_model(attn_only=True, normalization_type=None)
    tokens = torch.randint(0, 20, (2, 10))
    reference = model(tokens)
    model.set_use_attn_result(True)
    logits, cache = model.run_with_cache(tokens)
    torch.testing.assert_close(logits, reference)
    result = cache["blocks.1.attn.hook_result"]
    assert result.shape == (2, 10, 4, 32)
    torch.testing.assert_close(
        result.sum(-2) + model.blocks[1].attn.b_O, cache["blocks.1.hook_attn_out"]
    )


def test_patching_a_hook_changes_the_output_as_computed_by_hand():
    model = perturbed_model(attn_only=True, normalization_type=None)
    tokens = torch.randint(0, 20, (2, 10))
    _, cache = model.run_with_cache(tokens)

    def zero_head(z, hook):
        z[:, :, 2] = 0.0
        return z

    patched = model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.attn.hook_z", zero_head)])
    head_out = cache["blocks.1.attn.hook_z"][:, :, 2] @ model.blocks[1].attn.W_O[2]
    expected = (cache["blocks.1.hook_resid_post"] - head_out) @ model.W_U + model.b_U
    torch.testing.assert_close(patched, expected, atol=1e-5, rtol=1e-5)
    # Hooks are removed afterwards: the model is back to normal.
    torch.testing.assert_close(model(tokens), cache_free_logits(model, tokens))


def cache_free_logits(model, tokens):
    return model.run_with_hooks(tokens, fwd_hooks=[])


def test_stacked_weights_and_factored_circuits():
    model = perturbed_model()
    assert model.W_Q.shape == (2, 4, 32, 8)
    assert model.W_O.shape == (2, 4, 8, 32)
    torch.testing.assert_close(model.W_K[1, 3], model.blocks[1].attn.W_K[3])
    QK, OV = model.QK, model.OV
    assert QK.shape == (2, 4, 32, 32)
    torch.testing.assert_close(QK.AB[0, 1], model.W_Q[0, 1] @ model.W_K[0, 1].T)
    torch.testing.assert_close(OV.AB[1, 2], model.W_V[1, 2] @ model.W_O[1, 2])


def test_losses():
    model = perturbed_model()
    tokens = torch.randint(0, 20, (3, 12))
    logits, loss = model(tokens, return_type="both")
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 20), tokens[:, 1:].reshape(-1))
    torch.testing.assert_close(loss, expected)
    assert model(tokens, return_type=None) is None
    targets = torch.randint(0, 20, (3, 12))
    mask = torch.zeros(3, 12, dtype=torch.bool)
    mask[1, 4] = True
    masked = model(tokens, return_type="loss", targets=targets, loss_mask=mask)
    torch.testing.assert_close(masked, F.cross_entropy(logits[1, 4:5], targets[1, 4:5]))


def test_seeded_init_is_deterministic():
    cfg = ModelConfig(n_layers=1, d_model=16, n_ctx=8, d_vocab=10, n_heads=2, seed=11)
    a, b = HookedTransformer(cfg), HookedTransformer(cfg)
    c = HookedTransformer(cfg.replace(seed=12))
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.W_E, c.W_E)


def test_seeded_init_draws_the_weight_matrices_in_a_fixed_order():
    """Checkpoints in data/ and the presets' seeds depend on this stream: one normal draw per
    weight matrix, in the order embed, pos_embed, per block W_Q, W_K, W_V, W_O, W_in, W_out,
    then W_U; biases zero, gains one."""
    cfg = ModelConfig(n_layers=2, d_model=16, n_ctx=8, d_vocab=10, n_heads=2, seed=5)
    model = HookedTransformer(cfg)
    gen = torch.Generator().manual_seed(5)
    order = ["embed.W_E", "pos_embed.W_pos"]
    for layer in range(2):
        order += [f"blocks.{layer}.attn.W_{m}" for m in "QKVO"]
        order += [f"blocks.{layer}.mlp.W_in", f"blocks.{layer}.mlp.W_out"]
    sd = model.state_dict()
    for name in [*order, "unembed.W_U"]:
        expected = torch.randn(sd[name].shape, generator=gen) * cfg.init_range
        assert torch.equal(sd[name], expected), name
    for name, p in model.named_parameters():
        if name.split(".")[-1].startswith("b"):
            assert not p.any(), name


@pytest.mark.parametrize(
    "tokens, message",
    [
        (torch.tensor([[0, 1, 20]]), "contains id 20, outside \\[0, d_vocab=20\\)"),
        (torch.tensor([[0, -1]]), "contains id -1"),
        (torch.zeros(1, 25, dtype=torch.long), "length 25, longer than n_ctx=24"),
        (torch.zeros(1, 4), "integer dtype"),
        (torch.zeros(1, 4, dtype=torch.bool), "integer dtype"),
        (torch.zeros(1, 2, 3, dtype=torch.long), "shape \\[batch, pos\\]"),
        (torch.zeros(0, 3, dtype=torch.long), "empty"),
    ],
)
def test_bad_tokens_raise_value_error(tokens, message):
    model = perturbed_model()
    with pytest.raises(ValueError, match=message):
        model(tokens)


def test_non_tensor_tokens_and_bad_return_type():
    model = perturbed_model()
    with pytest.raises(TypeError, match=r"tokens must be a torch\.Tensor"):
        model([[1, 2]])
    with pytest.raises(ValueError, match="unknown return_type"):
        model(torch.tensor([[1, 2]]), return_type="probs")
    with pytest.raises(ValueError, match="tokenizer"):
        model.to_tokens("hello")


def test_one_dimensional_tokens_are_a_batch_of_one():
    model = perturbed_model()
    tokens = torch.tensor([1, 2, 3])
    torch.testing.assert_close(model(tokens), model(tokens.unsqueeze(0)))


def test_transformer_lens_utilities_accept_the_model():
    from transformer_lens import ActivationCache
    from transformer_lens.head_detector import detect_head
    from transformer_lens.model_protocol import TransformerLensModel

    model = perturbed_model()
    assert isinstance(model, TransformerLensModel)
    tokens = torch.randint(0, 20, (1, 12))
    _, cache = model.run_with_cache(tokens)
    assert isinstance(cache, ActivationCache)
    resid = cache.accumulated_resid()
    assert resid.shape == (3, 1, 12, 32)
    torch.testing.assert_close(resid[-1], cache["blocks.1.hook_resid_post"])
    # TransformerLens's own detector agrees with our previous-token score. Its "mul" measure
    # divides by all n rows of the pattern; ours averages over the n - 1 rows that have a
    # previous token.
    from circuits.analysis.head_scores import previous_token_score

    tl_scores = detect_head(
        model, tokens, "previous_token_head", exclude_bos=False, error_measure="mul"
    )
    patterns = torch.stack([cache[f"blocks.{layer}.attn.hook_pattern"] for layer in range(2)])
    ours = previous_token_score(patterns)
    torch.testing.assert_close(tl_scores, ours * 11 / 12)
