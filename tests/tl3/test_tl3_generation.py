"""``generate`` / ``generate_stream`` with TL3 3.5.1's signature, defaults and error contracts,
and the key-value cache: cached generation equals uncached generation (the same ids; logits
within 1e-5) for standard, shortformer and rotary positions, with and without padding.

The expectations are TL3's (its ``generate`` docstring and tests/unit/test_generate_no_tokenizer.py)
and, for the cache, our own uncached forward pass (TL3's cached path is not the reference: it
is wrong for learned positions after padding and fails on shortformer models).
"""

from __future__ import annotations

import pytest
import torch
from helpers import perturbed_model

from circuits import HookedTransformerKeyValueCache
from circuits.model import kv_cache
from circuits.model.generation import generate, sample_logits

VARIANTS = {
    "standard": dict(),
    "shortformer": dict(positional_embedding_type="shortformer"),
    "rotary": dict(positional_embedding_type="rotary"),
    "rotary_partial_attn_only": dict(
        positional_embedding_type="rotary", rotary_dim=4, attn_only=True, normalization_type=None
    ),
    "grouped_query": dict(n_key_value_heads=2, use_attn_result=True),
    "split_qkv_rms": dict(use_split_qkv_input=True, normalization_type="RMS", act_fn="gelu_new"),
}


def prompt(batch: int = 3, pos: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 20, (batch, pos), generator=torch.Generator().manual_seed(seed))


# The three position types in the unit tier; the other variants with the slow tests.
SLOW = ("rotary_partial_attn_only", "grouped_query", "split_qkv_rms")


@pytest.mark.parametrize(
    "variant",
    [pytest.param(v, marks=pytest.mark.slow) if v in SLOW else v for v in sorted(VARIANTS)],
)
def test_cached_generation_equals_uncached(variant: str) -> None:
    model = perturbed_model(**VARIANTS[variant])
    tokens = prompt(batch=2)
    kw = dict(stop_at_eos=False, verbose=False)
    cached = model.generate(tokens, 10, do_sample=False, use_past_kv_cache=True, **kw)
    plain = model.generate(tokens, 10, do_sample=False, use_past_kv_cache=False, **kw)
    assert torch.equal(cached, plain)
    sampled = [
        model.generate(tokens, 10, seed=4, use_past_kv_cache=use, **kw) for use in (True, False)
    ]
    assert torch.equal(sampled[0], sampled[1])
    # Logits position by position: one cached step at a time against one uncached forward.
    cache = HookedTransformerKeyValueCache.init_cache(model.cfg, "cpu", tokens.shape[0])
    with torch.no_grad():
        steps = [kv_cache.forward(model, cached[:, :5], cache)]
        steps += [kv_cache.forward(model, cached[:, i : i + 1], cache) for i in range(5, 15)]
        full = model(cached)
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)
    assert cache.entries[0].past_keys.shape[1] == 15


@pytest.mark.parametrize("variant", ["standard", "shortformer", "rotary"])
def test_cached_equals_uncached_with_left_padding(variant: str) -> None:
    model = perturbed_model(**VARIANTS[variant])
    tokens = prompt(batch=2, pos=7)
    mask = torch.ones_like(tokens)
    mask[0, :3] = 0  # the first prompt is 4 tokens, padded on the left
    cache = HookedTransformerKeyValueCache.init_cache(model.cfg, "cpu", 2)
    with torch.no_grad():
        first = kv_cache.forward(model, tokens, cache, attention_mask=mask)
        nxt = first[:, -1].argmax(-1, keepdim=True)
        second = kv_cache.forward(model, nxt, cache)
        longer = torch.cat([tokens, nxt], dim=1)
        full = model(longer, attention_mask=torch.cat([mask, torch.ones_like(nxt)], dim=1))
        alone = model(longer[:1, 3:])  # the padded prompt alone, without padding
    assert torch.allclose(first, full[:, :7], atol=1e-5, rtol=0)
    assert torch.allclose(second[:, 0], full[:, 7], atol=1e-5, rtol=0)
    assert torch.allclose(second[0, 0], alone[0, -1], atol=1e-5, rtol=0)


def test_frozen_cache_is_not_extended() -> None:  # TL3's test_freeze_cache, on ids
    model = perturbed_model()
    cache = HookedTransformerKeyValueCache.init_cache(model.cfg, "cpu", 1)
    with torch.no_grad():
        kv_cache.forward(model, prompt(1), cache)
        cache.freeze()
        a = kv_cache.forward(model, torch.tensor([[3, 4]]), cache)
        b = kv_cache.forward(model, torch.tensor([[3, 4]]), cache)
    assert torch.equal(a, b) and cache.entries[1].past_keys.shape[1] == 5
    assert cache.previous_attention_mask.shape == (1, 5)
    cache.unfreeze()
    with torch.no_grad():
        kv_cache.forward(model, torch.tensor([[3]]), cache)
    assert cache[0].past_values.shape[1] == 6 and len(cache) == 2


def test_cache_misuse_is_one_clear_error() -> None:
    model = perturbed_model()
    cache = HookedTransformerKeyValueCache.init_cache(model.cfg, "cpu", 2)
    with pytest.raises(ValueError, match="batch"):
        kv_cache.forward(model, prompt(3), cache)
    with pytest.raises(TypeError, match="HookedTransformerKeyValueCache"):
        kv_cache.forward(model, prompt(2), [])  # type: ignore[arg-type]
    with torch.no_grad():
        kv_cache.forward(model, prompt(2, 20), cache)
    with pytest.raises(ValueError, match="n_ctx"):
        kv_cache.forward(model, prompt(2, 5), cache)


# --- TL3's tests/unit/test_generate_no_tokenizer.py, on a TL3-style config ---
def tokenizer_free_model():
    from circuits import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=1, d_model=16, d_head=4, n_heads=4, n_ctx=32, d_vocab=20, attn_only=True
    )
    return HookedTransformer(cfg)


@pytest.mark.parametrize("use_past_kv_cache", [True, False])
def test_generate_without_tokenizer(use_past_kv_cache: bool) -> None:
    model = tokenizer_free_model()
    assert model.tokenizer is None
    tokens = torch.zeros((1, 5), dtype=torch.long)
    output = model.generate(
        tokens,
        max_new_tokens=3,
        stop_at_eos=False,
        use_past_kv_cache=use_past_kv_cache,
        return_type="tokens",
        verbose=False,
    )
    assert output.shape == (1, 8)
    output = model.generate(
        tokens,
        max_new_tokens=5,
        stop_at_eos=True,
        eos_token_id=0,
        use_past_kv_cache=use_past_kv_cache,
        return_type="tokens",
        verbose=False,
    )
    assert output.shape[0] == 1 and output.shape[1] >= 5
    # TL3: "Must pass a eos_token_id if stop_at_eos is True and tokenizer is None".
    with pytest.raises(ValueError, match="eos_token_id"):
        model.generate(tokens, max_new_tokens=3, verbose=False)


def test_embeddings_input() -> None:
    model = perturbed_model()
    tokens = prompt()
    embeds = model.embed(tokens).detach()
    kw = dict(stop_at_eos=False, do_sample=False, verbose=False)
    ids = model.generate(tokens, 6, **kw)
    out = model.generate(embeds, 6, **kw)  # "input": embeddings back, prompt included
    assert out.shape == (3, 11, 32) and torch.allclose(out, model.embed(ids))
    assert torch.equal(model.generate(embeds, 6, return_type="tokens", **kw), ids[:, 5:])
    for use in (True, False):  # both paths: TL3 returns only the new ids here
        new = model.generate(embeds, 6, return_type="tokens", use_past_kv_cache=use, **kw)
        assert torch.equal(new, ids[:, 5:])
    with pytest.raises(ValueError, match="freq_penalty"):
        model.generate(embeds, 3, freq_penalty=1.0, stop_at_eos=False, verbose=False)


def test_generate_stream_pieces_join_to_generate() -> None:
    model = perturbed_model()
    tokens = prompt()
    kw = dict(stop_at_eos=False, do_sample=False, verbose=False)
    pieces = list(model.generate_stream(tokens, 12, max_tokens_per_yield=5, **kw))
    assert [p.shape[1] for p in pieces] == [5, 5, 2]
    assert torch.equal(torch.cat([tokens, *pieces], dim=1), model.generate(tokens, 12, **kw))


def test_silent_ten_nan_logits_raise() -> None:  # issue 20, item 10
    model = perturbed_model()
    with torch.no_grad():
        model.unembed.W_U[0, 0] = float("nan")
    for use in (True, False):
        with pytest.raises(ValueError, match="NaN"):
            model.generate(prompt(), 3, stop_at_eos=False, use_past_kv_cache=use, verbose=False)


def test_silent_ten_sampling_arguments() -> None:  # issue 20, item 10
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    with pytest.raises(ValueError, match="temperature"):
        sample_logits(logits, temperature=-1.0)
    with pytest.raises(ValueError, match="top_k"):
        sample_logits(logits, top_k=0)
    with pytest.raises(ValueError, match="freq_penalty"):
        sample_logits(logits, freq_penalty=float("inf"), tokens=torch.tensor([[0]]))
    # A temperature that overflows the scaled logits is its limit, the argmax (no torch error).
    g = torch.Generator().manual_seed(0)
    draws = sample_logits(logits.expand(50, -1), temperature=1e-45, generator=g)
    assert bool((draws == 0).all())
    # -inf marks banned ids; a row that bans everything cannot be sampled.
    banned = torch.tensor([[float("-inf"), 0.0, float("-inf"), 1.0]])
    assert set(sample_logits(banned.expand(40, -1), generator=g).tolist()) <= {1, 3}
    with pytest.raises(ValueError, match="all -inf"):
        sample_logits(torch.full((1, 4), float("-inf")))


def test_silent_ten_seed_and_generator_types() -> None:  # issue 20: our errors, not torch's
    model = perturbed_model()
    kw = dict(stop_at_eos=False, verbose=False)
    with pytest.raises(TypeError, match="seed"):
        generate(model, prompt(), 3, seed="abc", **kw)
    with pytest.raises(TypeError, match="generator"):
        generate(model, prompt(), 3, generator=5, **kw)
    for bad in (dict(top_k=0), dict(freq_penalty=float("inf")), dict(temperature=-1.0)):
        with pytest.raises(ValueError):
            generate(model, prompt(), 3, **kw, **bad)
    out = generate(model, prompt(), 3, temperature=1e-45, seed=0, **kw)
    assert torch.equal(out, generate(model, prompt(), 3, do_sample=False, **kw))


def test_text_input_lists_and_return_types(standin_hub) -> None:
    from circuits import HookedTransformer

    model = HookedTransformer.from_pretrained("attn-only-2l", device="cpu")
    kw = dict(max_new_tokens=4, do_sample=False, verbose=False)
    one = model.generate("The quick", **kw)
    assert isinstance(one, str) and one.startswith("The quick")
    both = model.generate(["The quick", "Numbers too: 0 1 2"], **kw)
    assert isinstance(both, list) and len(both) == 2 and both[0] == one  # padding is masked
    for use in (True, False):
        again = model.generate(["The quick", "Numbers too: 0 1 2"], use_past_kv_cache=use, **kw)
        assert again == both
    ids = model.generate("The quick", return_type="tokens", **kw)
    assert ids.shape[0] == 1 and ids[0, 0].item() == model.tokenizer.bos_token_id
    streamed = "".join(model.generate_stream("The quick", max_tokens_per_yield=2, **kw))
    assert "The quick" + streamed == one


# --- TL3's tests/integration/test_kv_cache.py, through forward(past_kv_cache=), on text ---
def test_single_and_multiple_new_tokens_through_forward(standin_hub) -> None:
    from circuits import HookedTransformer, TransformerLensKeyValueCache

    model = HookedTransformer.from_pretrained("attn-only-2l", device="cpu")
    pre_prompt_tokens = model.to_tokens("I went to Staten Island,")
    for post in (" Sharon", " to buy myself a mandolin"):
        new_tokens = model.to_tokens(post, prepend_bos=False)
        full_prompt_tokens = torch.cat([pre_prompt_tokens, new_tokens], dim=-1)
        no_cache_logits = model(full_prompt_tokens)
        past_kv_cache = TransformerLensKeyValueCache.init_cache(
            model.cfg, model.cfg.device, pre_prompt_tokens.shape[0]
        )
        model(pre_prompt_tokens, past_kv_cache=past_kv_cache)
        with_cache_logits = model(new_tokens, past_kv_cache=past_kv_cache)
        n = new_tokens.shape[-1]
        # float32 rounding: within 1e-5 of the logits' scale (~30 here; TL3's test: 1e-4)
        diff = (no_cache_logits[:, -n:] - with_cache_logits).abs().max()
        assert diff <= 1e-5 * no_cache_logits.abs().max()
    # A string goes through the tokenizer first, as in TL3.
    cache = TransformerLensKeyValueCache.init_cache(model.cfg, "cpu", 1)
    first = model("I went to Staten Island,", past_kv_cache=cache)
    assert torch.equal(first, model(pre_prompt_tokens))  # the first cached forward: bitwise
    with pytest.raises(ValueError, match="start/stop_at_layer"):
        model(pre_prompt_tokens, past_kv_cache=cache, stop_at_layer=1)


def test_bidirectional_attention_sees_later_positions_and_refuses_the_cache() -> None:
    causal = perturbed_model()
    both = perturbed_model(attention_dir="bidirectional")
    tokens = prompt(1, 6)
    changed = tokens.clone()
    changed[0, -1] = (changed[0, -1] + 1) % 20
    with torch.no_grad():  # a later token changes earlier positions only when bidirectional
        assert torch.equal(causal(tokens)[0, :5], causal(changed)[0, :5])
        assert not torch.allclose(both(tokens)[0, :5], both(changed)[0, :5])
        pattern = both.run_with_cache(tokens)[1]["pattern", 0]
    assert bool((pattern.triu(1) > 0).any())  # attention above the diagonal
    cache = HookedTransformerKeyValueCache.init_cache(both.cfg, "cpu", 1)
    with pytest.raises(ValueError, match="causal"):
        kv_cache.forward(both, tokens, cache)
    # generate falls back to the full forward (the only right answer there).
    kw = dict(stop_at_eos=False, do_sample=False, verbose=False)
    assert torch.equal(
        both.generate(tokens, 4, **kw), both.generate(tokens, 4, use_past_kv_cache=False, **kw)
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(max_new_tokens=True),
        dict(max_new_tokens=2.0),
        dict(temperature=float("nan")),
        dict(temperature=float("inf")),
        dict(top_p=float("nan")),
        dict(top_k=2.5),
        dict(eos_token_id=[-1]),
        dict(eos_token_id="a"),
        dict(eos_token_id=[]),
        dict(return_type="logits"),
        dict(seed=-1),
        dict(seed=True),
        dict(input=torch.zeros(2, 0, dtype=torch.long)),
        dict(input=torch.zeros(2, 3, 5)),  # embeddings of the wrong width
        dict(input=[[1, 2]]),
        dict(input=torch.full((1, 3), float("nan")).unsqueeze(-1).expand(1, 3, 32)),
    ],
)
def test_hostile_generate_arguments_are_one_clear_error(kwargs: dict) -> None:
    model = perturbed_model()
    kwargs = dict(input=prompt(), max_new_tokens=2, stop_at_eos=False, verbose=False) | kwargs
    with pytest.raises((ValueError, TypeError)):
        generate(model, **kwargs)
    with pytest.raises((ValueError, TypeError)):
        list(model.generate_stream(**kwargs))


def test_a_cache_on_another_device_is_refused() -> None:
    model = perturbed_model()
    cache = HookedTransformerKeyValueCache.init_cache(model.cfg, "meta", 1)
    with pytest.raises(ValueError, match=r"on meta"):
        kv_cache.forward(model, prompt(1), cache)


def test_output_logits_as_tl3() -> None:
    model = perturbed_model()
    tokens = prompt()
    kw = dict(stop_at_eos=False, do_sample=False, verbose=False)
    out = model.generate(tokens, 4, output_logits=True, return_dict_in_generate=True, **kw)
    assert torch.equal(out.sequences, model.generate(tokens, 4, **kw))
    assert len(out.logits) == 4 and out.logits[0].shape == (3, 20)
    with torch.no_grad():
        expected = model(out.sequences[:, :-1])[:, -4:]
    for step, logits in enumerate(out.logits):
        torch.testing.assert_close(logits, expected[:, step], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="num_beams"):
        model.generate(tokens, 4, num_beams=2, **kw)
