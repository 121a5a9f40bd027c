"""Analysis on text prompts, for models with a tokenizer (e.g. the pretrained toy models).

The synthetic probes measure heads on random tokens; these measure them on language:

- previous-token scores on the prompts as written (real sentences);
- induction and duplicate-token scores on each prompt repeated (``[BOS] t t``), the natural-text
  version of the repeated-random-tokens probe (a token that occurs twice inside ``t`` makes the
  score a little lower than on random tokens, where every token is unique);
- the logit lens as token strings, and the direct logit attribution of a prompt's answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.analysis.attribution import direct_logit_attribution
from circuits.analysis.head_scores import (
    attention_patterns,
    duplicate_token_score,
    induction_score,
    previous_token_score,
)
from circuits.analysis.logit_lens import LensResult, logit_lens


def _prompts(model: Any, texts: str | list[str]) -> list[str]:
    if getattr(model, "tokenizer", None) is None:
        raise ValueError("text analysis needs a model with a tokenizer (model.set_tokenizer)")
    prompts = [texts] if isinstance(texts, str) else list(texts)
    if not prompts or not all(isinstance(t, str) and t for t in prompts):
        raise ValueError("texts must be a non-empty string or a list of non-empty strings")
    return prompts


def text_head_scores(
    model: Any, texts: str | list[str]
) -> dict[str, Float[Tensor, "n_layers n_heads"]]:
    """Previous-token, induction and duplicate-token scores of every head on text.

    Args:
        model: A model with a tokenizer.
        texts: One prompt or several (scores are averaged over them).

    Returns:
        ``{"previous_token", "induction", "duplicate_token"}`` -> ``[n_layers, n_heads]``.

    Raises:
        ValueError: no tokenizer, empty text, or a prompt too long to repeat within ``n_ctx``.
    """
    scores: dict[str, list[Tensor]] = {"previous_token": [], "induction": [], "duplicate_token": []}
    for text in _prompts(model, texts):
        tokens = model.to_tokens(text)
        scores["previous_token"].append(previous_token_score(attention_patterns(model, tokens)))
        body = model.to_tokens(text, prepend_bos=False)[0]
        if 1 + 2 * len(body) > model.cfg.n_ctx:
            raise ValueError(
                f"a prompt of {len(body)} tokens repeated does not fit n_ctx={model.cfg.n_ctx}: "
                f"use prompts of at most {(model.cfg.n_ctx - 1) // 2} tokens"
            )
        if len(body) < 2:
            raise ValueError(f"{text!r} is {len(body)} token(s): induction needs at least 2")
        bos = tokens[0, :1]
        repeated = torch.cat([bos, body, body])[None]
        patterns = attention_patterns(model, repeated)
        scores["induction"].append(induction_score(patterns, len(body)))
        scores["duplicate_token"].append(duplicate_token_score(patterns, len(body)))
    return {name: torch.stack(values).mean(0) for name, values in scores.items()}


@dataclass(frozen=True)
class TextLens:
    """The logit lens of one prompt, in token strings.

    Attributes:
        result: The lens itself (:class:`circuits.analysis.logit_lens.LensResult`).
        str_tokens: The prompt's tokens as strings ``[pos]``.
        top_tokens: Top prediction at every lens point and position, ``[point][pos]``.
        next_token_prob: Probability of the actual next token ``[point, pos - 1]``.
    """

    result: LensResult
    str_tokens: list[str]
    top_tokens: list[list[str]]
    next_token_prob: Float[Tensor, "point pos_minus_1"]


def text_logit_lens(model: Any, text: str, sublayers: bool = False) -> TextLens:
    """The logit lens of ``model`` on one prompt, with token strings for axes and cells."""
    (prompt,) = _prompts(model, text)
    tokens = model.to_tokens(prompt)
    result = logit_lens(model, tokens, sublayers=sublayers)
    top = result.top_k(1)[1][:, 0, :, 0]  # [point, pos], from logits formed in chunks
    top_strings = [model.to_str_tokens(row) for row in top]
    targets = tokens.clone()
    targets[:, :-1] = tokens[:, 1:]
    probs = result.target_prob(targets)[:, 0, :-1]
    return TextLens(result, list(model.to_str_tokens(tokens)), top_strings, probs)


def answer_attribution(
    model: Any, prompt: str, answer: str, wrong_answer: str | None = None
) -> dict[str, float]:
    """Direct logit attribution of the answer token at the prompt's last position.

    Args:
        model: A model with a tokenizer.
        prompt: The prompt (a BOS is prepended as the model's default says).
        answer: The answer, one token (e.g. ``" Mary"``).
        wrong_answer: Attribute the logit difference ``answer - wrong_answer`` instead.

    Returns:
        Component label (``embed``, ``pos_embed``, ``L0H3``, ``L1 mlp``, ...) -> its direct
        contribution, plus ``"constant"`` (biases); the values add up to the final logit
        (difference) at that position.
    """
    (text,) = _prompts(model, prompt)
    tokens = model.to_tokens(text)
    target = model.to_single_token(answer)
    targets = torch.full_like(tokens, target)
    baseline = None
    if wrong_answer is not None:
        baseline = torch.full_like(tokens, model.to_single_token(wrong_answer))
    attribution = direct_logit_attribution(model, tokens, targets, baseline)
    out = {
        label: float(attribution.attributions[i, 0, -1])
        for i, label in enumerate(attribution.labels)
    }
    constant = attribution.constant
    out["constant"] = float(constant[0, -1] if isinstance(constant, Tensor) else constant)
    return out
