"""``generate`` on token ids: greedy, temperature, top-k, top-p, seeds, stop tokens, n_ctx."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from helpers import perturbed_model

from circuits import HookedTransformer
from circuits.model.generation import generate, sample_logits


@pytest.fixture(scope="module")
def model() -> HookedTransformer:
    return perturbed_model(d_vocab=20, n_ctx=24)


def prompt(batch: int = 2, pos: int = 5) -> torch.Tensor:
    return torch.randint(0, 20, (batch, pos), generator=torch.Generator().manual_seed(0))


def test_greedy_is_the_argmax_loop(model: HookedTransformer) -> None:
    tokens = prompt()
    out = model.generate(tokens, max_new_tokens=6, do_sample=False, stop_at_eos=False)
    expected = tokens
    for _ in range(6):  # an independent loop: run, take the argmax, append
        with torch.no_grad():
            nxt = model(expected)[:, -1].argmax(-1, keepdim=True)
        expected = torch.cat([expected, nxt], dim=1)
    assert torch.equal(out, expected)
    assert torch.equal(model.generate(tokens, 6, temperature=0.0, stop_at_eos=False), expected)
    assert torch.equal(model.generate(tokens, 6, top_k=1, seed=3, stop_at_eos=False), expected)


def test_seeded_sampling_is_reproducible_and_leaves_global_rng(model: HookedTransformer) -> None:
    tokens = prompt()
    state = torch.get_rng_state()
    a = model.generate(tokens, 15, seed=1, stop_at_eos=False)
    b = model.generate(tokens, 15, seed=1, stop_at_eos=False)
    c = model.generate(tokens, 15, seed=2, stop_at_eos=False)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.equal(a, c)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(
        model.generate(tokens, 15, generator=g1, stop_at_eos=False),
        model.generate(tokens, 15, generator=g2, stop_at_eos=False),
    )
    assert a.shape == (2, 20) and torch.equal(a[:, :5], tokens)


def frequencies(logits: torch.Tensor, n: int = 40000, **kwargs: Any) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    draws = sample_logits(logits.expand(n, -1), generator=g, **kwargs)
    return torch.bincount(draws, minlength=logits.shape[-1]).float() / n


def test_temperature_samples_the_tempered_softmax() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    for t in (0.5, 1.0, 2.0):
        expected = (logits[0] / t).softmax(-1)
        torch.testing.assert_close(frequencies(logits, temperature=t), expected, atol=0.01, rtol=0)


def test_top_k_keeps_the_k_likeliest_renormalised() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0, -1.0]])
    freq = frequencies(logits, top_k=2)
    expected = torch.zeros(5)
    expected[[1, 3]] = torch.tensor([3.0, 2.0]).softmax(-1)
    torch.testing.assert_close(freq, expected, atol=0.01, rtol=0)


def test_top_p_keeps_the_nucleus() -> None:
    probs = torch.tensor([0.05, 0.5, 0.15, 0.3])
    logits = probs.log()[None]
    # Sorted 0.5, 0.3 | 0.15, 0.05: 0.5 < 0.7, 0.5 + 0.3 passes 0.7, so {1, 3} remain.
    expected = torch.tensor([0.0, 0.5, 0.0, 0.3]) / 0.8
    torch.testing.assert_close(frequencies(logits, top_p=0.7), expected, atol=0.01, rtol=0)
    # The likeliest token always stays, however small top_p.
    assert torch.equal(frequencies(logits, top_p=1e-6), torch.tensor([0.0, 1.0, 0.0, 0.0]))


def test_freq_penalty_lowers_repeated_ids() -> None:
    logits = torch.zeros(1, 4)
    seen = torch.tensor([[0, 0, 1]])
    g = torch.Generator().manual_seed(0)
    draws = sample_logits(
        logits.expand(20000, -1), freq_penalty=1.0, tokens=seen.expand(20000, -1), generator=g
    )
    freq = torch.bincount(draws, minlength=4).float() / 20000
    expected = torch.tensor([-2.0, -1.0, 0.0, 0.0]).softmax(-1)
    torch.testing.assert_close(freq, expected, atol=0.01, rtol=0)


def test_stops_at_eos_and_pads_finished_rows(model: HookedTransformer) -> None:
    tokens = prompt()
    greedy = model.generate(tokens, 8, do_sample=False, stop_at_eos=False)
    eos = int(greedy[0, 7])  # row 0's third new token
    out = model.generate(tokens, 8, do_sample=False, eos_token_id=eos)
    first = [
        int((row[5:] == eos).nonzero()[0]) if (row[5:] == eos).any() else None for row in greedy
    ]
    if all(f is not None for f in first):  # every row finished: stops at the last to finish
        assert out.shape[1] == 5 + max(f for f in first if f is not None) + 1
    for row, f in zip(range(2), first, strict=True):
        if f is None:
            assert torch.equal(out[row], greedy[row, : out.shape[1]])
            continue
        # Identical up to the eos, then eos only.
        assert torch.equal(out[row, : 5 + f + 1], greedy[row, : 5 + f + 1])
        assert (out[row, 5 + f :] == eos).all()
    # stop_at_eos=False ignores it.
    assert torch.equal(
        model.generate(tokens, 8, do_sample=False, eos_token_id=eos, stop_at_eos=False), greedy
    )


def test_stops_early_when_all_rows_finish(model: HookedTransformer) -> None:
    tokens = prompt(batch=1)
    greedy = model.generate(tokens, 8, do_sample=False, stop_at_eos=False)
    eos = int(greedy[0, 6])
    out = model.generate(tokens, 8, do_sample=False, eos_token_id=[eos, 19])
    stop = int((greedy[0, 5:] == eos).nonzero()[0]) + 5 + 1
    assert out.shape == (1, stop) and torch.equal(out, greedy[:, :stop])


def test_respects_n_ctx(model: HookedTransformer) -> None:
    tokens = prompt(pos=20)
    with pytest.raises(ValueError, match="n_ctx"):
        model.generate(tokens, 5, stop_at_eos=False)
    out = model.generate(tokens, 10, do_sample=False, sliding_window=True, stop_at_eos=False)
    assert out.shape == (2, 30)
    with torch.no_grad():  # the last step saw only the last n_ctx ids
        assert torch.equal(out[:, -1], model(out[:, -25:-1])[:, -1].argmax(-1))


def test_one_dimensional_prompt_and_zero_new_tokens(model: HookedTransformer) -> None:
    tokens = prompt(batch=1)[0]
    out = model.generate(tokens, 3, do_sample=False, stop_at_eos=False)
    assert out.shape == (8,)
    assert torch.equal(model.generate(tokens, 0, stop_at_eos=False), tokens)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(top_k=0), "top_k"),
        (dict(top_k=21), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_k=2, top_p=0.5), "not both"),
        (dict(temperature=-1.0), "temperature"),
        (dict(max_new_tokens=-1), "max_new_tokens"),
        (dict(eos_token_id=20), "eos_token_id"),
        (dict(seed=1, generator=torch.Generator()), "not both"),
        (dict(freq_penalty=-1.0), "freq_penalty"),
    ],
)
def test_bad_arguments_raise_value_error(
    model: HookedTransformer, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        generate(model, prompt(), stop_at_eos=False, **kwargs)


def test_a_generator_that_is_not_one_is_a_type_error(model: HookedTransformer) -> None:
    # (A generator on another device than the model is tests/test_devices.py's, on a GPU.)
    with pytest.raises(TypeError, match=r"torch\.Generator"):
        generate(model, prompt(), stop_at_eos=False, generator=SimpleNamespace(device="cuda"))


def test_bad_input_raises(model: HookedTransformer) -> None:
    with pytest.raises(ValueError, match=r"tokenizer|token ids|text"):
        model.generate("hello")
    with pytest.raises(ValueError):
        model.generate(torch.tensor([[0, 25]]))
    with pytest.raises(TypeError):
        generate(model, [[1, 2]])  # type: ignore[arg-type]
