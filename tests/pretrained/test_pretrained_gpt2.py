"""The GPT-2 family by name (issue 23): stand-ins saved by transformers in the hub's cache
layout under the real repository names, loaded with the hub offline through the same code as
the real models, against transformers' own GPT2LMHeadModel."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import GPT2LMHeadModel

from circuits.pretrained import (
    GPT2_MODELS,
    PretrainedError,
    from_pretrained,
    from_pretrained_no_processing,
)

TEXT = "The quick brown fox jumps over the lazy dog."


def snapshot(cache: Path, repo: str) -> Path:
    root = cache / ("models--" + repo.replace("/", "--"))
    return root / "snapshots" / (root / "refs" / "main").read_text()


def reference(cache: Path, repo: str) -> GPT2LMHeadModel:
    return GPT2LMHeadModel.from_pretrained(str(snapshot(cache, repo))).eval()


@pytest.mark.parametrize(("name", "repo"), [("gpt2", "gpt2"), ("gpt2-small", "gpt2"),
                                            ("GPT2-Small", "gpt2"), ("distilgpt2", "distilgpt2"),
                                            ("gpt2-xs", "distilgpt2")])  # fmt: skip
def test_names_load_with_transformers_logits(gpt2_cache: Path, name: str, repo: str) -> None:
    model = from_pretrained_no_processing(name, cache_dir=gpt2_cache)
    hf = reference(gpt2_cache, repo)
    tokens = model.to_tokens([TEXT, "Numbers too: 0 1 2"])
    assert tokens[0, 0] == model.tokenizer.bos_token_id  # TL3: BOS prepended for GPT-2
    with torch.no_grad():
        expected = hf(tokens).logits
    torch.testing.assert_close(model(tokens), expected, atol=1e-5, rtol=0)
    assert model.cfg.model_name == repo and not model.training


def test_tl3_processing_defaults_keep_log_probs(gpt2_cache: Path) -> None:
    processed = from_pretrained("gpt2", cache_dir=gpt2_cache)
    hf = reference(gpt2_cache, "gpt2")
    assert processed.cfg.normalization_type == "LNPre"  # fold_ln
    assert processed.W_U.mean(-1).abs().max() < 1e-6  # center_unembed
    assert processed.W_E.mean(-1).abs().max() < 1e-6  # center_writing_weights
    tokens = processed.to_tokens(TEXT)
    with torch.no_grad():
        expected = hf(tokens).logits.log_softmax(-1)
    torch.testing.assert_close(processed(tokens).log_softmax(-1), expected, atol=1e-4, rtol=0)


def test_tl3_keyword_arguments(gpt2_cache: Path) -> None:
    hf = reference(gpt2_cache, "gpt2")
    own = from_pretrained("gpt2", cache_dir=gpt2_cache, tokenizer=False)
    assert own.tokenizer is None
    half = from_pretrained("gpt2", cache_dir=gpt2_cache, dtype="bf16", device="cpu")
    assert half.W_E.dtype == torch.bfloat16
    from_hf = from_pretrained(
        "gpt2",
        hf_model=hf,
        cache_dir=gpt2_cache,
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        default_prepend_bos=False,
        default_padding_side="left",
    )
    assert from_hf.default_prepend_bos is False and from_hf.tokenizer.padding_side == "left"
    tokens = from_hf.to_tokens(TEXT)
    assert tokens[0, 0] != from_hf.tokenizer.bos_token_id
    with torch.no_grad():
        torch.testing.assert_close(from_hf(tokens), hf(tokens).logits, atol=1e-5, rtol=0)
    tok = from_hf.tokenizer
    given = from_pretrained("gpt2", cache_dir=gpt2_cache, tokenizer=tok)
    assert given.tokenizer is tok


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(n_devices=2), ValueError, "only one device"),
        (dict(checkpoint_index=3), ValueError, "training checkpoints"),
        (dict(first_n_layers=1), ValueError, "first layers"),
        (dict(n_ctx=8), ValueError, "context length"),
        (dict(device="nonsense"), ValueError, "not a torch device"),
        (dict(dtype="int8"), ValueError, "dtype='int8'"),
        (dict(trust_remote_code=True), ValueError, "never runs code"),
        (dict(load_in_8bit=True), TypeError, "load_in_8bit"),
        (dict(default_padding_side="middle"), ValueError, "default_padding_side"),
    ],
)
def test_arguments_we_do_not_take_are_refused_before_any_work(
    kwargs: dict, error: type, match: str, tmp_path: Path
) -> None:
    # An empty cache: a refusal that came after a download attempt would be the offline error.
    with pytest.raises(error, match=match):
        from_pretrained("gpt2", cache_dir=tmp_path, **kwargs)


def test_the_family_table_is_tl3s() -> None:
    assert set(GPT2_MODELS) == {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2"}
    assert GPT2_MODELS["gpt2"] == ("gpt2-small",)


def test_unknown_names_list_the_gpt2_family_too(tmp_path: Path) -> None:
    with pytest.raises(PretrainedError, match=r"gpt2-medium.*distilgpt2"):
        from_pretrained("gpt-7", cache_dir=tmp_path)


def test_an_hf_model_that_is_not_gpt2_is_a_type_error(gpt2_cache: Path) -> None:
    with pytest.raises(TypeError, match="GPT2LMHeadModel"):
        from_pretrained("gpt2", hf_model="gpt2", cache_dir=gpt2_cache)


def test_the_classmethod_signature_is_tl3s() -> None:
    import inspect

    params = list(inspect.signature(from_pretrained).parameters)
    tl3 = [
        "model_name",
        "fold_ln",
        "center_writing_weights",
        "center_unembed",
        "refactor_factored_attn_matrices",
        "checkpoint_index",
        "checkpoint_value",
        "hf_model",
        "device",
        "n_devices",
        "tokenizer",
        "move_to_device",
        "fold_value_biases",
        "default_prepend_bos",
        "default_padding_side",
        "dtype",
        "first_n_layers",
        "n_ctx",
    ]
    assert params[: len(tl3)] == tl3
