"""Analysis on text prompts: exact decompositions on a stand-in, head scores on a trained one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from circuits import HookedTransformer, ModelConfig
from circuits.analysis.text import answer_attribution, text_head_scores, text_logit_lens
from circuits.pretrained import from_pretrained

DATA = Path(__file__).resolve().parents[2] / "data" / "standin_hub"
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "In the beginning the model knew nothing.",
]


@pytest.fixture(scope="module")
def model(zoo_cache: Path) -> HookedTransformer:
    return from_pretrained("gelu-1l", cache_dir=zoo_cache, local_files_only=True)


def test_answer_attribution_adds_up_to_the_answer_logit(model: HookedTransformer) -> None:
    prompt, answer = SENTENCES[0][:-5], model.to_str_tokens(SENTENCES[0])[-2]
    parts = answer_attribution(model, prompt, answer)
    logit = model(prompt)[0, -1, model.to_single_token(answer)]
    assert sum(parts.values()) == pytest.approx(logit.item(), abs=1e-4)
    assert {"embed", "constant"} <= set(parts) and any(k.startswith("L0H") for k in parts)
    other = model.to_str_tokens(SENTENCES[1])[1]
    diff = answer_attribution(model, prompt, answer, wrong_answer=other)
    logits = model(prompt)[0, -1]
    expected = logits[model.to_single_token(answer)] - logits[model.to_single_token(other)]
    assert sum(diff.values()) == pytest.approx(expected.item(), abs=1e-4)


def test_text_logit_lens_ends_at_the_models_own_prediction(model: HookedTransformer) -> None:
    lens = text_logit_lens(model, SENTENCES[0])
    tokens = model.to_tokens(SENTENCES[0])
    probs = model(tokens).softmax(-1)[0, :-1].gather(-1, tokens[0, 1:, None])[:, 0]
    torch.testing.assert_close(lens.next_token_prob[-1], probs, atol=1e-5, rtol=1e-4)
    assert lens.str_tokens == model.to_str_tokens(tokens)
    assert lens.top_tokens[-1] == model.to_str_tokens(model(tokens)[0].argmax(-1))


def test_text_analysis_refuses_what_it_cannot_score(model: HookedTransformer) -> None:
    bare = HookedTransformer(ModelConfig(n_layers=1, d_model=16, n_heads=2, n_ctx=8, d_vocab=10))
    with pytest.raises(ValueError, match="tokenizer"):
        text_head_scores(bare, "hello")
    with pytest.raises(ValueError, match="does not fit n_ctx"):
        text_head_scores(model, " ".join(SENTENCES))
    with pytest.raises(ValueError, match="non-empty"):
        text_head_scores(model, [])


@pytest.mark.slow
def test_the_trained_standin_has_previous_token_and_induction_heads_on_text() -> None:
    """The shipped stand-in (data/standin_hub) was trained on random tokens; on text too, a
    layer-0 head attends to the previous token and layer-1 heads do induction."""
    model = from_pretrained("attn-only-2l", cache_dir=DATA, local_files_only=True)
    scores = text_head_scores(model, SENTENCES)
    assert float(scores["previous_token"][0].max()) > 0.5
    assert float(scores["induction"][1].max()) > 0.5
    assert float(scores["induction"][0].max()) < 0.2  # layer 0 cannot do induction
