"""Text in and out on a stand-in zoo model: TransformerLens's tokenizer methods and padding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from circuits import HookedTransformer, ModelConfig
from circuits.model.text import NoTokenizerError
from circuits.pretrained import from_pretrained

RAW = {"fold_ln": False, "center_writing_weights": False, "center_unembed": False}
TEXT = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def model(zoo_cache: Path) -> HookedTransformer:
    import huggingface_hub.constants

    old = huggingface_hub.constants.HF_HUB_OFFLINE
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        return from_pretrained("attn-only-2l", cache_dir=zoo_cache, **RAW)
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE = old


def test_text_round_trips(model: HookedTransformer) -> None:
    tokens = model.to_tokens(TEXT)
    assert tokens.shape[0] == 1 and tokens[0, 0] == model.tokenizer.bos_token_id
    assert model.to_string(tokens[0, 1:]) == TEXT
    assert model.to_string(model.to_tokens(TEXT, prepend_bos=False)[0]) == TEXT
    assert model.to_string(model.to_tokens([TEXT, "Numbers"], prepend_bos=False)[1:, :1]) == [
        model.to_string(model.to_tokens("Numbers", prepend_bos=False)[0, :1])
    ]


def test_str_tokens_are_the_tokens_decoded_one_by_one(model: HookedTransformer) -> None:
    ids = model.to_tokens(TEXT)[0]
    expected = [model.tokenizer.decode([t]) for t in ids.tolist()]
    assert model.to_str_tokens(TEXT) == expected
    assert model.to_str_tokens(ids) == expected == model.to_str_tokens(ids[None])
    assert model.to_str_tokens([ids, ids[:2]]) == [expected, expected[:2]]
    assert expected[0] == "<|endoftext|>" and "".join(expected[1:]) == TEXT


def test_single_tokens_and_positions(model: HookedTransformer) -> None:
    ids = model.to_tokens(TEXT)[0]
    piece = model.to_str_tokens(ids)[3]
    assert model.to_single_token(piece) == int(ids[3])
    assert model.to_single_str_token(int(ids[3])) == piece
    assert model.get_token_position(piece, TEXT) == int((ids == ids[3]).nonzero()[0])
    assert model.get_token_position(int(ids[3]), ids, mode="last") == int(
        (ids == ids[3]).nonzero()[-1]
    )
    with pytest.raises(ValueError, match="not a single token"):
        model.to_single_token(TEXT)
    with pytest.raises(ValueError, match="does not occur"):
        model.get_token_position(piece, ids[:3])


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batches_give_each_text_its_own_logits(model: HookedTransformer, side: str) -> None:
    texts = [TEXT, "In the beginning"]
    tokens = model.to_tokens(texts, padding_side=side)
    _, mask = model.tokenize(texts, padding_side=side)
    assert tokens.shape[1] == model.to_tokens(TEXT).shape[1]
    batch_logits = model(texts, padding_side=side)
    for row, text in enumerate(texts):
        alone = model(text)[0]
        real = mask[row].bool()
        torch.testing.assert_close(batch_logits[row][real], alone, atol=1e-4, rtol=1e-4)
    # the loss counts real positions only: the padded batch's per-token loss where it is defined
    loss = model(texts, padding_side=side, return_type="loss", loss_per_token=True)
    alone = model("In the beginning", return_type="loss", loss_per_token=True)[0]
    real_targets = (mask[1, 1:] * mask[1, :-1]).bool()
    torch.testing.assert_close(loss[1][real_targets], alone, atol=1e-4, rtol=1e-4)


def test_text_longer_than_n_ctx_is_truncated_with_a_warning(model: HookedTransformer) -> None:
    long = " ".join([TEXT] * 20)
    with pytest.warns(UserWarning, match="truncated to n_ctx"):
        tokens = model.to_tokens(long)
    assert tokens.shape[1] == model.cfg.n_ctx
    with pytest.raises(ValueError, match="longer than n_ctx"):
        model.to_tokens(long, truncate=False)


def test_text_without_a_tokenizer_is_one_clear_error() -> None:
    model = HookedTransformer(ModelConfig(n_layers=1, d_model=16, n_heads=2, n_ctx=8, d_vocab=10))
    assert model.tokenizer is None
    for call in (
        lambda: model("hello"),
        lambda: model.to_tokens(["a", "b"]),
        lambda: model.to_str_tokens("a"),
    ):
        with pytest.raises(NoTokenizerError, match="needs a tokenizer"):
            call()
    # token ids keep working without one
    assert model.to_tokens([[1, 2, 3]]).tolist() == [[1, 2, 3]]
    with pytest.raises(ValueError, match="list of tensors"):
        model.to_tokens([torch.tensor([1, 2]), torch.tensor([3])])


def test_a_tokenizer_larger_than_the_vocabulary_is_refused(model: HookedTransformer) -> None:
    small = HookedTransformer(ModelConfig(n_layers=1, d_model=16, n_heads=2, n_ctx=8, d_vocab=10))
    with pytest.raises(ValueError, match="d_vocab"):
        small.set_tokenizer(model.tokenizer)
    with pytest.raises(TypeError, match="PreTrainedTokenizerBase"):
        small.set_tokenizer("gpt2")


def test_generate_on_text_returns_text_and_matches_greedy_ids(model: HookedTransformer) -> None:
    prompt = "The quick brown"
    out = model.generate(prompt, max_new_tokens=5, do_sample=False)
    assert isinstance(out, str) and out.startswith(prompt)
    ids = model.generate(model.to_tokens(prompt), max_new_tokens=5, do_sample=False)
    assert out == model.to_string(ids[0, 1:])
    assert torch.equal(
        model.generate(prompt, max_new_tokens=5, do_sample=False, return_type="tokens"), ids
    )
    sampled = [model.generate(prompt, max_new_tokens=5, seed=3, top_k=5) for _ in range(2)]
    assert sampled[0] == sampled[1]
    # (a list of prompts is TL3's batched generation now: tests/tl3 covers it)


def _independent_ids(model: HookedTransformer, text: str) -> list[int]:
    """BOS then the tokenizer's own ids of ``text``, untruncated and unpadded."""
    return [model.tokenizer.bos_token_id, *model.tokenizer(text)["input_ids"]]


@pytest.mark.parametrize("side", ["left", "right"])
def test_long_text_keeps_its_first_n_ctx_tokens_on_either_padding_side(
    model: HookedTransformer, side: str
) -> None:
    """Issue 20 (silent 8): left padding kept the last n_ctx tokens and dropped the BOS."""
    n_ctx = model.cfg.n_ctx
    long = " ".join([TEXT] * 12)
    full = _independent_ids(model, long)
    assert len(full) > n_ctx
    with pytest.warns(UserWarning, match="truncated"):
        ids = model.to_tokens(long, padding_side=side)
    assert ids[0].tolist() == full[:n_ctx]
    # In a batch, the short text keeps all of its tokens, padded on its side.
    with pytest.warns(UserWarning, match="truncated"):
        both, mask = model.tokenize([long, "Numbers"], padding_side=side)
    short = _independent_ids(model, "Numbers")
    assert both.shape == (2, n_ctx) and both[0].tolist() == full[:n_ctx]
    real = both[1][mask[1].bool()].tolist()
    assert real == short and int(mask[1].sum()) == len(short)
    assert bool(mask[1, -1] if side == "left" else mask[1, 0])


def test_a_tokenizer_without_special_tokens_is_one_clear_error() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    word = Tokenizer(models.WordLevel({"a": 0, "b": 1, "c": 2}, unk_token=None))
    word.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=word)
    small = HookedTransformer(ModelConfig(n_layers=1, d_model=16, n_ctx=8, d_vocab=3, n_heads=2))
    with pytest.raises(ValueError, match="no usable eos_token"):
        small.set_tokenizer(tok)
    assert small.tokenizer is None and tok.eos_token is None  # nothing was changed
    tok.eos_token = "c"
    small.set_tokenizer(tok)  # pad and BOS default to the EOS, as in TransformerLens
    assert tok.pad_token == tok.bos_token == "c" and tok.bos_token_id == 2
    assert small.to_tokens("a b", prepend_bos=False).tolist() == [[0, 1]]
    with pytest.raises(ValueError, match="could not encode"):
        small.to_tokens("a z", prepend_bos=False)  # a word its vocabulary lacks


def test_meta_token_ids_on_a_real_model_are_refused() -> None:
    """Issue 20 (silent 12): meta ids on a CPU model gave NaN logits without a word."""
    small = HookedTransformer(ModelConfig(n_layers=1, d_model=16, n_ctx=8, d_vocab=10, n_heads=2))
    with pytest.raises(ValueError, match="meta device"):
        small(torch.zeros(1, 4, dtype=torch.long, device="meta"))
    with torch.device("meta"):
        shapes_only = HookedTransformer(small.cfg)
    out = shapes_only(torch.zeros(1, 4, dtype=torch.long, device="meta"))
    assert out.shape == (1, 4, 10) and out.device.type == "meta"
