"""Sampling from a model, as TransformerLens 3's ``generate`` and ``generate_stream`` do.

Functions over a model (anything with :class:`circuits.HookedTransformer`'s ``cfg``, ``embed``,
``forward`` and text methods); the model's methods are one-line calls here, so this module never
imports the model class. Greedy or sampled (temperature, top-k, top-p, frequency penalty),
reproducible through ``seed`` or a ``torch.Generator``, stopping at end-of-sequence ids. With
``use_past_kv_cache`` (the default, as in TL3) each step runs only the new position against
the stored keys and values (:mod:`circuits.model.kv_cache`); the ids are the same as without
the cache and the logits agree to float rounding (tests check 1e-5).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, cast

import torch
from torch import Tensor
from tqdm.auto import tqdm

from circuits.model import kv_cache
from circuits.model.sampling import check_generator, check_sampling, sample_logits
from circuits.validation import check_int, check_tokens

__all__ = ["GenerationMixin", "generate", "generate_stream", "sample_logits"]

RETURN_TYPES = ("input", "str", "tokens", "embeds")


def _eos_ids(model: Any, stop_at_eos: bool, eos_token_id: Any) -> tuple[list[int], int]:
    """The stop ids and the id that pads finished rows (TL3's rule)."""
    tokenizer = getattr(model, "tokenizer", None)
    tok_eos = getattr(tokenizer, "eos_token_id", None) if tokenizer is not None else None
    if not stop_at_eos and eos_token_id is None:
        return [], 0
    if eos_token_id is None:
        if tok_eos is None:
            raise ValueError(
                "stop_at_eos=True needs an end-of-sequence id: pass eos_token_id=..., or "
                "stop_at_eos=False (this model has no tokenizer with an eos_token_id)"
            )
        eos_token_id = tok_eos
    ids = [eos_token_id] if not isinstance(eos_token_id, Sequence) else list(eos_token_id)
    if not ids:
        raise ValueError("eos_token_id is an empty list")
    d_out = model.cfg.d_vocab_out
    for i in ids:
        check_int(i, "eos_token_id", 0, d_out - 1)
    pad = ids[0] if isinstance(eos_token_id, int) or tok_eos is None else tok_eos
    return (ids, pad) if stop_at_eos else ([], 0)  # validated either way


class _Prompt:
    """What ``generate`` was given, as ids (or embeddings), an optional padding mask, and how
    to give the result back."""

    def __init__(self, model: Any, input: Any, prepend_bos: Any, padding_side: Any) -> None:
        self.text = isinstance(input, str) or (
            isinstance(input, list) and len(input) > 0 and all(isinstance(s, str) for s in input)
        )
        self.single_text = isinstance(input, str) or (self.text and len(input) == 1)
        self.squeeze = False
        self.mask: Tensor | None = None
        self.embeds: Tensor | None = None
        self.tokens: Tensor | None = None
        cfg = model.cfg
        if self.text:
            # A batch of prompts is padded on the left, so every row's last position is real.
            side = "left" if isinstance(input, list) and len(input) > 1 else padding_side
            ids, mask = model.tokenize(input, prepend_bos, side)
            self.tokens = ids
            self.mask = None if bool(mask.all()) else mask
        elif isinstance(input, Tensor) and input.is_floating_point():
            if input.ndim != 3 or input.shape[-1] != cfg.d_model or input.shape[1] > cfg.n_ctx:
                raise ValueError(
                    f"embeddings must be [batch, pos <= {cfg.n_ctx}, d_model={cfg.d_model}], "
                    f"got {tuple(input.shape)}"
                )
            self.embeds = input
        elif isinstance(input, Tensor):
            self.squeeze = input.ndim == 1
            self.tokens = check_tokens(input, cfg.d_vocab, cfg.n_ctx, name="input")
        else:
            raise TypeError(
                "input must be a string, a list of strings, token ids [batch, pos] or "
                f"embeddings [batch, pos, d_model], got {type(input).__name__}"
            )
        device = model.W_E.device
        if self.tokens is not None:
            self.tokens = self.tokens.to(device)
        if self.mask is not None:
            self.mask = self.mask.to(device)
        if self.embeds is not None:
            self.embeds = self.embeds.to(device)

    @property
    def shape(self) -> tuple[int, int]:
        x = self.tokens if self.tokens is not None else self.embeds
        assert x is not None
        return int(x.shape[0]), int(x.shape[1])


@torch.no_grad()
def generate_stream(
    model: Any,
    input: Any = "",
    max_new_tokens: int = 10,
    max_tokens_per_yield: int = 25,
    stop_at_eos: bool = True,
    eos_token_id: int | Sequence[int] | None = None,
    do_sample: bool = True,
    top_k: int | None = None,
    top_p: float | None = None,
    temperature: float = 1.0,
    freq_penalty: float = 0.0,
    use_past_kv_cache: bool = True,
    prepend_bos: bool | None = None,
    padding_side: str | None = None,
    return_type: str | None = "input",
    verbose: bool = True,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    sliding_window: bool = False,
) -> Iterator[Any]:
    """Yields the new ids ``[batch, k]`` (or their text) every ``max_tokens_per_yield`` steps.

    Arguments as :func:`generate`; the pieces joined are :func:`generate`'s new ids.
    """
    check_int(max_tokens_per_yield, "max_tokens_per_yield", 1)
    if return_type not in ("input", "str", "tokens"):
        raise ValueError(f"return_type must be 'input', 'str' or 'tokens', got {return_type!r}")
    steps = _steps(
        model, input, max_new_tokens, stop_at_eos, eos_token_id, do_sample, top_k, top_p,
        temperature, freq_penalty, use_past_kv_cache, prepend_bos, padding_side, verbose,
        seed, generator, sliding_window,
    )  # fmt: skip
    prompt = next(steps)
    text = return_type == "str" or (return_type == "input" and prompt.text)
    pending: list[Tensor] = []
    for new, _ in steps:
        pending.append(new[:, None])
        if len(pending) == max_tokens_per_yield:
            yield _piece(model, pending, text)
            pending = []
    if pending:
        yield _piece(model, pending, text)


def _piece(model: Any, pending: list[Tensor], text: bool) -> Any:
    ids = torch.cat(pending, dim=1)
    if not text:
        return ids
    out = [model.tokenizer.decode(row, skip_special_tokens=True) for row in ids.tolist()]
    return out[0] if len(out) == 1 else out


@torch.no_grad()
def generate(
    model: Any,
    input: Any = "",
    max_new_tokens: int = 10,
    stop_at_eos: bool = True,
    eos_token_id: int | Sequence[int] | None = None,
    do_sample: bool = True,
    top_k: int | None = None,
    top_p: float | None = None,
    temperature: float = 1.0,
    freq_penalty: float = 0.0,
    use_past_kv_cache: bool = True,
    prepend_bos: bool | None = None,
    padding_side: str | None = None,
    return_type: str | None = "input",
    verbose: bool = True,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    sliding_window: bool = False,
    **generation_kwargs: Any,
) -> Any:
    """Extends a prompt with the model's predictions (TransformerLens 3's ``generate``).

    Args:
        model: A :class:`circuits.HookedTransformer`.
        input: A string, a list of strings (padded on the left), token ids ``[batch, pos]``
            (or ``[pos]``), or embeddings ``[batch, pos, d_model]``.
        max_new_tokens: Most ids to append.
        stop_at_eos: Stop a sequence at an end-of-sequence id (``eos_token_id``, else the
            tokenizer's; with neither this is an error, as in TL3). Finished sequences are
            padded with the eos id; generation ends when all have finished.
        eos_token_id: End-of-sequence id, or several.
        do_sample: Sample; False is greedy (so is ``temperature=0``).
        top_k, top_p: Keep the ``top_k`` likeliest ids, or the nucleus of mass ``top_p``.
        temperature: Divides the logits before sampling.
        freq_penalty: Subtracted from a logit once per earlier occurrence of its id (needs ids).
        use_past_kv_cache: Run each step on the new position only, against cached keys and
            values (the same ids; see :mod:`circuits.model.kv_cache`).
        prepend_bos, padding_side: For text input, as in ``to_tokens``.
        return_type: "input" (the input's kind), "str", "tokens" or "embeds". For embeddings
            input, "str" and "tokens" give the new ids only, as in TL3.
        verbose: Show a progress bar.
        seed: Seeds a private ``torch.Generator`` (the global RNG is not touched).
        generator: A generator to draw from instead (on the model's device).
        sliding_window: Past ``n_ctx``, feed the model the last ``n_ctx`` positions (without
            the cache); by default a request that would exceed ``n_ctx`` is refused.
        generation_kwargs: TL3's Hugging Face options: ``output_logits=True`` returns a
            ``GenerateDecoderOnlyOutput`` (``sequences`` and each step's ``logits
            [batch, d_vocab_out]``); ``return_dict_in_generate`` is accepted (TL3 ignores it).
            Any other is refused by name (TL3 warns and ignores it).

    Returns:
        Text (one string for one prompt), ids ``[batch, pos + n]`` (``[pos + n]`` for a 1-D
        prompt) or embeddings ``[batch, pos + n, d_model]``, ``n <= max_new_tokens``.

    Raises:
        ValueError: bad ids or arguments, a prompt plus ``max_new_tokens`` over ``n_ctx``
            without ``sliding_window``, or NaN logits.
        TypeError: an input or generator of the wrong type.
    """
    if return_type not in RETURN_TYPES:
        raise ValueError(f"return_type must be one of {RETURN_TYPES}, got {return_type!r}")
    unknown = sorted(set(generation_kwargs) - {"output_logits", "return_dict_in_generate"})
    if unknown:
        raise ValueError(f"generate does not take {', '.join(unknown)}")
    output_logits = bool(generation_kwargs.get("output_logits", False))
    steps = _steps(
        model, input, max_new_tokens, stop_at_eos, eos_token_id, do_sample, top_k, top_p,
        temperature, freq_penalty, use_past_kv_cache, prepend_bos, padding_side, verbose,
        seed, generator, sliding_window,
    )  # fmt: skip
    prompt: _Prompt = next(steps)
    batch = prompt.shape[0]
    device = model.W_E.device
    new_ids, step_logits = [], []
    for new, logits in steps:
        new_ids.append(new[:, None])
        if output_logits:
            step_logits.append(logits.clone())
    generated = torch.cat(new_ids, dim=1) if new_ids else torch.empty(batch, 0, device=device)
    generated = generated.long()
    if output_logits:  # TL3: Hugging Face's output, the sequences and each step's logits
        from transformers.generation.utils import GenerateDecoderOnlyOutput

        ids = generated if prompt.tokens is None else torch.cat([prompt.tokens, generated], 1)
        sequences = cast("torch.LongTensor", ids)
        return GenerateDecoderOnlyOutput(sequences=sequences, logits=tuple(step_logits))
    if return_type == "input":
        return_type = "str" if prompt.text else "tokens" if prompt.embeds is None else "embeds"
    if return_type == "embeds":
        start = prompt.embeds if prompt.embeds is not None else model.embed(prompt.tokens)
        return torch.cat([start, model.embed(generated)], dim=1)
    ids = generated if prompt.tokens is None else torch.cat([prompt.tokens, generated], dim=1)
    if return_type == "tokens":
        return ids[0] if prompt.squeeze else ids
    if model.tokenizer is None:
        raise ValueError("return_type='str' needs a tokenizer; this model has none")
    texts = [model.tokenizer.decode(row, skip_special_tokens=True) for row in ids.tolist()]
    return texts[0] if len(texts) == 1 else texts


def _steps(
    model: Any,
    input: Any,
    max_new_tokens: int,
    stop_at_eos: bool,
    eos_token_id: Any,
    do_sample: bool,
    top_k: Any,
    top_p: Any,
    temperature: Any,
    freq_penalty: Any,
    use_past_kv_cache: bool,
    prepend_bos: Any,
    padding_side: Any,
    verbose: bool,
    seed: Any,
    generator: Any,
    sliding_window: bool,
) -> Iterator[Any]:
    """Yields the validated prompt, then each step's new ids ``[batch]``."""
    cfg = model.cfg
    check_int(max_new_tokens, "max_new_tokens", 0)
    check_sampling(cfg.d_vocab_out, temperature, top_k, top_p, freq_penalty)
    check_generator(generator, seed)
    if cfg.d_vocab_out > cfg.d_vocab:
        raise ValueError(
            f"cannot generate: outputs go up to id {cfg.d_vocab_out - 1} but inputs stop at "
            f"{cfg.d_vocab - 1} (d_vocab_out > d_vocab)"
        )
    prompt = _Prompt(model, input, prepend_bos, padding_side)
    eos, pad = _eos_ids(model, stop_at_eos, eos_token_id)
    batch, pos = prompt.shape
    if freq_penalty and prompt.tokens is None:
        raise ValueError("freq_penalty needs token ids: it counts earlier ids (not embeddings)")
    if not sliding_window and pos + max_new_tokens > cfg.n_ctx:
        raise ValueError(
            f"prompt of {pos} positions + max_new_tokens={max_new_tokens} exceeds "
            f"n_ctx={cfg.n_ctx}; shorten it or pass sliding_window=True"
        )
    device = model.W_E.device
    if generator is not None and generator.device.type != device.type:
        raise ValueError(
            f"generator is on {generator.device}, the model on {device}: make it there "
            "(torch.Generator(device=...)) or pass seed="
        )
    if generator is None and seed is not None and device.type != "meta":
        generator = torch.Generator(device=device).manual_seed(seed)
    yield prompt

    bidirectional = getattr(cfg, "attention_dir", "causal") != "causal"
    cached = use_past_kv_cache and not bidirectional and pos + max_new_tokens <= cfg.n_ctx
    cache = kv_cache.HookedTransformerKeyValueCache.init_cache(cfg, device, batch, model.W_E.dtype)
    tokens, embeds, mask = prompt.tokens, prompt.embeds, prompt.mask
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    eos_tensor = torch.tensor(eos, dtype=torch.long, device=device)
    new: Tensor | None = None
    for _ in tqdm(range(max_new_tokens), disable=not verbose, desc="generate"):
        if cached and new is not None:
            logits = kv_cache.forward(model, new[:, None], cache)
        elif cached:
            logits = kv_cache.forward(model, tokens, cache, embeds=embeds, attention_mask=mask)
        elif embeds is not None:  # the cached forward on a fresh cache is the full forward
            fresh = kv_cache.HookedTransformerKeyValueCache.init_cache(
                cfg, device, batch, model.W_E.dtype
            )
            window = slice(-cfg.n_ctx, None)
            logits = kv_cache.forward(model, None, fresh, embeds=embeds[:, window])
        else:
            assert tokens is not None
            window_mask = None if mask is None else mask[:, -cfg.n_ctx :]
            logits = model(tokens[:, -cfg.n_ctx :], attention_mask=window_mask)
        new = sample_logits(
            logits[:, -1, :],
            do_sample=do_sample,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            freq_penalty=freq_penalty,
            tokens=tokens,
            generator=generator,
        )
        if eos:
            new = torch.where(finished, torch.tensor(pad, device=device), new)
            finished |= torch.isin(new, eos_tensor)
        if tokens is not None:
            tokens = torch.cat([tokens, new[:, None].to(tokens.dtype)], dim=1)
        if embeds is not None:
            embeds = torch.cat([embeds, model.embed(new[:, None])], dim=1)
        if mask is not None:
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        yield new, logits[:, -1, :]
        # (A meta tensor has no values: shapes only, so no early stop there.)
        if eos and device.type != "meta" and bool(finished.all()):
            break


class GenerationMixin:
    """``generate`` and ``generate_stream`` as methods of :class:`circuits.HookedTransformer`."""

    def generate(self, input: Any = "", max_new_tokens: int = 10, *args: Any, **kw: Any) -> Any:
        """See :func:`circuits.model.generation.generate` (TL3's signature and defaults)."""
        return generate(self, input, max_new_tokens, *args, **kw)

    def generate_stream(
        self, input: Any = "", max_new_tokens: int = 10, *args: Any, **kw: Any
    ) -> Iterator[Any]:
        """See :func:`circuits.model.generation.generate_stream`."""
        return generate_stream(self, input, max_new_tokens, *args, **kw)
