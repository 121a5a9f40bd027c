"""Sampling token ids from a tokenizer-free model, as TransformerLens 3.x's ``generate`` does.

Greedy or sampled (temperature, top-k, top-p, frequency penalty), reproducible through a
``seed`` or a ``torch.Generator``, stopping at an end-of-sequence id. Each step reruns the
model on the whole sequence (no key-value cache: the toy models here are small).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, cast

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuits.validation import check_tokens

if TYPE_CHECKING:
    from circuits.model import HookedTransformer


def sample_logits(
    logits: Float[Tensor, "batch d_vocab_out"],
    *,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    freq_penalty: float = 0.0,
    tokens: Int[Tensor, "batch pos"] | None = None,
    generator: torch.Generator | None = None,
) -> Int[Tensor, " batch"]:
    """One next token per row of ``logits`` (TL3's ``utils.sample_logits`` semantics).

    Greedy (argmax) when ``do_sample`` is False or ``temperature`` is 0. Otherwise the logits
    are divided by ``temperature``, lowered by ``freq_penalty`` times each id's count in
    ``tokens``, cut to the ``top_k`` largest or to the smallest set whose probability exceeds
    ``top_p`` (the first token always stays), and sampled with ``generator``.
    """
    if not do_sample or temperature == 0.0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if freq_penalty:
        if tokens is None:
            raise ValueError("freq_penalty needs the tokens generated so far")
        counts = torch.zeros_like(logits)
        ids = tokens.clamp(max=logits.shape[-1] - 1)
        counts.scatter_add_(-1, ids, (tokens < logits.shape[-1]).to(logits.dtype))
        logits = logits - freq_penalty * counts
    if top_k is not None:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    elif top_p is not None:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token once the ones before it already exceed top_p; keep the first.
        drop = torch.zeros_like(cumulative, dtype=torch.bool)
        drop[..., 1:] = cumulative[..., :-1] > top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _check_args(
    model: HookedTransformer,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    freq_penalty: float,
) -> None:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
        raise ValueError(f"max_new_tokens must be an int, got {max_new_tokens!r}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if not isinstance(temperature, int | float) or not temperature >= 0:
        raise ValueError(f"temperature must be a float >= 0, got {temperature!r}")
    if top_k is not None and top_p is not None:
        raise ValueError("pass top_k or top_p, not both (TransformerLens would ignore top_p)")
    d_out = model.cfg.d_vocab_out
    if top_k is not None and (
        isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= d_out
    ):
        raise ValueError(f"top_k must be an int in [1, {d_out}], got {top_k!r}")
    if top_p is not None and (not isinstance(top_p, int | float) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    if not isinstance(freq_penalty, int | float) or not freq_penalty >= 0:
        raise ValueError(f"freq_penalty must be >= 0, got {freq_penalty!r}")
    if d_out > model.cfg.d_vocab:
        raise ValueError(
            f"cannot generate: outputs go up to id {d_out - 1} but inputs stop at "
            f"{model.cfg.d_vocab - 1} (d_vocab_out > d_vocab)"
        )


def _eos_ids(eos_token_id: int | Sequence[int] | None, d_vocab_out: int) -> list[int]:
    if eos_token_id is None:
        return []
    ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < d_vocab_out:
            raise ValueError(f"eos_token_id must be ids in [0, {d_vocab_out}), got {i!r}")
    return ids


@torch.no_grad()
def generate(
    model: HookedTransformer,
    input: Int[Tensor, "batch pos"] | Int[Tensor, " pos"],
    max_new_tokens: int = 10,
    *,
    stop_at_eos: bool = True,
    eos_token_id: int | Sequence[int] | None = None,
    do_sample: bool = True,
    top_k: int | None = None,
    top_p: float | None = None,
    temperature: float = 1.0,
    freq_penalty: float = 0.0,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    sliding_window: bool = False,
    verbose: bool = False,
) -> Int[Tensor, "batch new_pos"]:
    """Extends token ids with the model's predictions.

    Args:
        model: The model (eval mode is the caller's choice, as in TransformerLens).
        input: Prompt ids ``[batch, pos]`` or ``[pos]``.
        max_new_tokens: Most ids to append.
        stop_at_eos: Stop a sequence at ``eos_token_id`` (only if one is given: there is no
            tokenizer to supply it); finished sequences are padded with their eos id, and
            generation ends when every sequence has finished.
        eos_token_id: End-of-sequence id, or several.
        do_sample: Sample; False is greedy (so is ``temperature=0``).
        top_k, top_p: Keep the ``top_k`` likeliest ids, or the nucleus of mass ``top_p``.
        temperature: Divides the logits before sampling.
        freq_penalty: Subtracted from a logit once per earlier occurrence of its id.
        seed: Seeds a private ``torch.Generator`` (the global RNG is not touched).
        generator: A generator to draw from instead (on the model's device).
        sliding_window: Past ``n_ctx``, feed the model the last ``n_ctx`` ids; by default a
            request that would exceed ``n_ctx`` is refused.
        verbose: Unused (TransformerLens's progress bar).

    Returns:
        ``[batch, pos + n]`` ids (``[pos + n]`` for a 1-D prompt), ``n <= max_new_tokens``.

    Raises:
        ValueError: Bad ids or arguments, or ``pos + max_new_tokens > n_ctx`` without
            ``sliding_window``.
    """
    del verbose
    if not isinstance(input, Tensor):
        raise TypeError(f"input must be a tensor of token ids, got {type(input).__name__}")
    squeeze = input.dim() == 1
    tokens = check_tokens(input, model.cfg.d_vocab, model.cfg.n_ctx, name="input")
    _check_args(model, max_new_tokens, temperature, top_k, top_p, freq_penalty)
    eos = _eos_ids(eos_token_id, model.cfg.d_vocab_out)
    n_ctx = model.cfg.n_ctx
    if not sliding_window and tokens.shape[1] + max_new_tokens > n_ctx:
        raise ValueError(
            f"prompt of {tokens.shape[1]} ids + max_new_tokens={max_new_tokens} exceeds "
            f"n_ctx={n_ctx}; shorten it or pass sliding_window=True"
        )
    if generator is not None and seed is not None:
        raise ValueError("pass seed or generator, not both")
    # Validated where they are, then moved to the model (never the weights to the ids).
    device = model.W_E.device
    tokens = tokens.to(device)
    if generator is not None and generator.device.type != device.type:
        raise ValueError(
            f"generator is on {generator.device}, the model on {device}: make it there "
            "(torch.Generator(device=...)) or pass seed="
        )
    if generator is None and seed is not None and device.type != "meta":
        generator = torch.Generator(device=device).manual_seed(seed)
    finished = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
    pad = torch.tensor(eos[0] if eos else 0, device=tokens.device)
    eos_tensor = torch.tensor(eos, dtype=tokens.dtype, device=tokens.device)
    for _ in range(max_new_tokens):
        logits = model(tokens[:, -n_ctx:])[:, -1, :]
        new = sample_logits(
            logits,
            do_sample=do_sample,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            freq_penalty=freq_penalty,
            tokens=tokens,
            generator=generator,
        )
        if stop_at_eos and eos:
            new = torch.where(finished, pad, new)
            finished |= torch.isin(new, eos_tensor)
        tokens = torch.cat([tokens, new[:, None].to(tokens.dtype)], dim=1)
        # (A meta tensor has no values: shapes only, so no early stop there.)
        if stop_at_eos and eos and device.type != "meta" and bool(finished.all()):
            break
    return tokens[0] if squeeze else tokens


class GenerationMixin:
    """``generate`` as a method of :class:`circuits.HookedTransformer`."""

    def generate(
        self,
        input: Int[Tensor, "batch pos"] | Int[Tensor, " pos"],
        max_new_tokens: int = 10,
        *,
        stop_at_eos: bool = True,
        eos_token_id: int | Sequence[int] | None = None,
        do_sample: bool = True,
        top_k: int | None = None,
        top_p: float | None = None,
        temperature: float = 1.0,
        freq_penalty: float = 0.0,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        sliding_window: bool = False,
        verbose: bool = False,
        prepend_bos: bool | None = None,
        return_type: Literal["input", "str", "tokens"] = "input",
    ) -> Any:
        """Token ids in, token ids out: see :func:`circuits.model.generation.generate`.

        With a tokenizer, a prompt string works as in TransformerLens: it is tokenized
        (``prepend_bos`` as in ``to_tokens``), generation stops at the tokenizer's EOS unless
        ``eos_token_id`` says otherwise, and the continued text comes back as a string
        (``return_type="input"`` or ``"str"``; ``"tokens"`` gives the ids).
        """
        if return_type not in ("input", "str", "tokens"):
            raise ValueError(f"return_type must be 'input', 'str' or 'tokens', got {return_type!r}")
        model = cast("HookedTransformer", self)
        text = isinstance(input, str)
        if isinstance(input, list | tuple) and input and all(isinstance(s, str) for s in input):
            raise ValueError("generate takes one prompt string at a time (or a batch of ids)")
        if text:
            input = model.to_tokens(input, prepend_bos=prepend_bos)  # needs a tokenizer
            if eos_token_id is None and stop_at_eos:
                eos_token_id = model.tokenizer.eos_token_id
        out = generate(
            model,
            input,
            max_new_tokens,
            stop_at_eos=stop_at_eos,
            eos_token_id=eos_token_id,
            do_sample=do_sample,
            top_k=top_k,
            top_p=top_p,
            temperature=temperature,
            freq_penalty=freq_penalty,
            seed=seed,
            generator=generator,
            sliding_window=sliding_window,
            verbose=verbose,
        )
        if not text or return_type == "tokens":
            return out
        bos = model.default_prepend_bos if prepend_bos is None else prepend_bos
        return model.to_string(out[0, 1:] if bos else out[0])
