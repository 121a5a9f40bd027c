"""Text in and out: an optional Hugging Face tokenizer on the model, with TransformerLens's methods.

A model made from scratch has no tokenizer (``model.tokenizer is None``) and takes token ids only;
``model.set_tokenizer(tok)`` or :func:`circuits.pretrained.from_pretrained` gives it one. The
methods follow TransformerLens 3.x (``to_tokens``, ``to_str_tokens``, ``to_string``,
``to_single_token``, ``get_token_position``), including its BOS rule: ``prepend_bos`` defaults to
``model.default_prepend_bos`` (True), and a BOS is added by hand only when the tokenizer does not
add one itself. Text longer than ``n_ctx`` is truncated with a warning (``truncate=False`` makes
it an error instead).
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
from jaxtyping import Int
from torch import Tensor

from circuits.validation import check_tokens

PaddingSide = Literal["left", "right"]


class NoTokenizerError(ValueError):
    """Text was given to a model that has no tokenizer."""


def is_text(input: object) -> bool:
    """Whether ``input`` is a string or a non-empty list of strings."""
    return isinstance(input, str) or (
        isinstance(input, list | tuple)
        and len(input) > 0
        and all(isinstance(s, str) for s in input)
    )


class TextMixin:
    """Tokenizer methods of :class:`circuits.HookedTransformer` (TransformerLens semantics)."""

    tokenizer: Any = None
    default_prepend_bos: bool = True
    # Whether the tokenizer adds a BOS by itself (set by set_tokenizer).
    tokenizer_prepends_bos: bool = False
    cfg: Any

    def set_tokenizer(
        self,
        tokenizer: Any,
        default_padding_side: PaddingSide | None = None,
        default_prepend_bos: bool | None = None,
    ) -> None:
        """Attaches a Hugging Face tokenizer (``PreTrainedTokenizerBase``), or detaches with None.

        Raises:
            TypeError: ``tokenizer`` is not a Hugging Face tokenizer.
            ValueError: the tokenizer's vocabulary is larger than the model's ``d_vocab``.
        """
        if tokenizer is None:
            self.tokenizer = None
            return
        from transformers import PreTrainedTokenizerBase

        if not isinstance(tokenizer, PreTrainedTokenizerBase):
            raise TypeError(
                f"tokenizer must be a Hugging Face PreTrainedTokenizerBase, got {type(tokenizer)}"
            )
        if default_padding_side not in (None, "left", "right"):
            raise ValueError(
                f"padding side must be 'left' or 'right', got {default_padding_side!r}"
            )
        if len(tokenizer) > self.cfg.d_vocab:
            raise ValueError(
                f"the tokenizer has {len(tokenizer)} tokens but the model's d_vocab is "
                f"{self.cfg.d_vocab}: ids past {self.cfg.d_vocab - 1} would have no embedding"
            )
        # TransformerLens's defaults: a GPT-style tokenizer may lack pad and BOS tokens. Each
        # must be a token of the vocabulary; checked before the tokenizer is changed.
        eos = tokenizer.eos_token if tokenizer.eos_token is not None else "<|endoftext|>"
        specials = {
            "eos_token": eos,
            "pad_token": tokenizer.pad_token if tokenizer.pad_token is not None else eos,
            "bos_token": tokenizer.bos_token if tokenizer.bos_token is not None else eos,
        }
        vocab = tokenizer.get_vocab()
        for role, token in specials.items():
            if token not in vocab or not 0 <= vocab[token] < self.cfg.d_vocab:
                raise ValueError(
                    f"the tokenizer has no usable {role} ({token!r} is not one of its tokens "
                    f"below d_vocab={self.cfg.d_vocab}): set tokenizer.{role} to one of its "
                    "tokens first"
                )
        if default_padding_side is not None:
            tokenizer.padding_side = default_padding_side
        for role, token in specials.items():
            if getattr(tokenizer, role) is None:
                setattr(tokenizer, role, token)
        self.tokenizer = tokenizer
        self.tokenizer_prepends_bos = len(tokenizer.encode("")) > 0
        if default_prepend_bos is not None:
            self.default_prepend_bos = bool(default_prepend_bos)

    def _require_tokenizer(self, what: str) -> Any:
        if self.tokenizer is None:
            raise NoTokenizerError(
                f"{what} needs a tokenizer and this model has none: pass token ids, attach one "
                "with model.set_tokenizer(...), or load a model with "
                "circuits.pretrained.from_pretrained(...)"
            )
        return self.tokenizer

    def _model_device(self) -> torch.device:
        param = next(iter(self.parameters()), None)  # type: ignore[attr-defined]
        return param.device if param is not None else torch.device("cpu")

    def to_tokens(
        self,
        input: Any,
        prepend_bos: bool | None = None,
        padding_side: PaddingSide | None = None,
        move_to_device: bool = True,
        truncate: bool = True,
    ) -> Int[Tensor, "batch pos"]:
        """Text (a string or a list of strings) or token ids to a ``[batch, pos]`` id tensor.

        Token ids (a tensor or nested lists of ints) are validated and returned; text needs a
        tokenizer. Several strings are padded (``padding_side``, default the tokenizer's).

        Raises:
            NoTokenizerError: text given and the model has no tokenizer.
            ValueError: ids out of range, a ragged or non-integer input, or text longer than
                ``n_ctx`` with ``truncate=False``.
        """
        if not is_text(input):
            return self._ids_to_tokens(input, move_to_device)
        ids, _ = self.tokenize(input, prepend_bos, padding_side, truncate)
        return ids.to(self._model_device()) if move_to_device else ids

    def tokenize(
        self,
        input: str | list[str],
        prepend_bos: bool | None = None,
        padding_side: PaddingSide | None = None,
        truncate: bool = True,
    ) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
        """Text to ids and the attention mask (1 for real tokens, 0 for padding), on the CPU.

        The mask is the tokenizer's own, so a BOS that doubles as the pad token still counts.
        """
        tokenizer = self._require_tokenizer("text input")
        if padding_side not in (None, "left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        bos = self.default_prepend_bos if prepend_bos is None else bool(prepend_bos)
        texts = [input] if isinstance(input, str) else list(input)
        if bos and not self.tokenizer_prepends_bos:
            texts = [tokenizer.bos_token + t for t in texts]
        side = padding_side or tokenizer.padding_side or "right"
        old_side, tokenizer.padding_side = tokenizer.padding_side, side
        try:
            out = tokenizer(texts, return_tensors="pt", padding=True, truncation=False)
        except Exception as e:  # the Rust backend raises bare Exceptions (unknown words...)
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ValueError(f"the tokenizer could not encode the text: {first}") from None
        finally:
            tokenizer.padding_side = old_side
        ids, mask = out["input_ids"], out["attention_mask"]
        if not bos and self.tokenizer_prepends_bos:
            ids, mask = _remove_bos(ids, mask, side)
        n_ctx = self.cfg.n_ctx
        if ids.shape[1] > n_ctx:
            if not truncate:
                raise ValueError(
                    f"the text is {ids.shape[1]} tokens long, longer than n_ctx={n_ctx}; "
                    "pass truncate=True to keep the first n_ctx tokens"
                )
            warnings.warn(
                f"text of {ids.shape[1]} tokens truncated to n_ctx={n_ctx}",
                UserWarning,
                stacklevel=3,
            )
            ids, mask = _keep_first(ids, mask, n_ctx, side, tokenizer.pad_token_id)
        return ids, mask

    def _ids_to_tokens(self, input: Any, move_to_device: bool) -> Tensor:
        if isinstance(input, list | tuple) and any(isinstance(x, Tensor) for x in input):
            raise ValueError(
                "to_tokens takes one tensor or nested lists of ints, not a list of tensors: "
                "stack them first (torch.stack, or pad them to one length)"
            )
        try:
            tokens = torch.as_tensor(input)
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(
                f"to_tokens cannot read {type(input).__name__} as token ids ({e}); pass a string, "
                "a list of strings, an integer tensor or nested lists of ints"
            ) from None
        # Moved to the model's device by the check (meta ids on a real model refused).
        device = self._model_device() if move_to_device else None
        return check_tokens(tokens, self.cfg.d_vocab, self.cfg.n_ctx, device=device)

    def to_string(self, tokens: Any) -> str | list[str]:
        """Token ids to text: a string for ``[pos]``, a list of strings for ``[batch, pos]``."""
        tokenizer = self._require_tokenizer("to_string")
        tokens = _read_ids(tokens, "to_string")
        if tokens.ndim > 2:
            raise ValueError(
                f"to_string takes [pos] or [batch, pos] ids, got {tuple(tokens.shape)}"
            )
        self._check_ids(tokens)
        if tokens.ndim == 2:
            return list(tokenizer.batch_decode(tokens.tolist(), clean_up_tokenization_spaces=False))
        return str(
            tokenizer.decode(tokens.reshape(-1).tolist(), clean_up_tokenization_spaces=False)
        )

    def to_str_tokens(
        self,
        input: Any,
        prepend_bos: bool | None = None,
        padding_side: PaddingSide | None = None,
    ) -> list[str] | list[list[str]]:
        """Each token as its own string: ``["<|endoftext|>", "The", " cat"]``.

        Takes a string (tokenized first), ids of shape ``[pos]`` or ``[1, pos]``, or a list of
        either (giving a list of lists), as TransformerLens does.
        """
        tokenizer = self._require_tokenizer("to_str_tokens")
        if isinstance(input, list) and input and not isinstance(input[0], int):
            return [self.to_str_tokens(x, prepend_bos, padding_side) for x in input]  # type: ignore[misc,return-value]
        if isinstance(input, str):
            ids = self.to_tokens(input, prepend_bos=prepend_bos, padding_side=padding_side)[0]
        else:
            ids = _read_ids(input, "to_str_tokens")
            ids = ids.squeeze(0) if ids.ndim == 2 and ids.shape[0] == 1 else ids
            ids = ids.reshape(1) if ids.ndim == 0 else ids
            if ids.ndim != 1:
                raise ValueError(
                    f"to_str_tokens takes [pos] or [1, pos] ids, got {tuple(ids.shape)}"
                )
            self._check_ids(ids)
        return list(
            tokenizer.batch_decode([[t] for t in ids.tolist()], clean_up_tokenization_spaces=False)
        )

    def to_single_token(self, string: str) -> int:
        """The id of a string that is exactly one token (no BOS).

        Raises:
            ValueError: the string is not a single token.
        """
        ids = self.to_tokens(string, prepend_bos=False, move_to_device=False)[0]
        if ids.numel() != 1:
            raise ValueError(f"{string!r} is not a single token: it is {ids.numel()} tokens")
        return int(ids.item())

    def to_single_str_token(self, int_token: int) -> str:
        """The string of one token id."""
        if not isinstance(int_token, int) or isinstance(int_token, bool):
            raise TypeError(f"int_token must be an int, got {type(int_token).__name__}")
        return str(self.to_str_tokens(torch.tensor([int_token]))[0])

    def get_token_position(
        self,
        single_token: str | int,
        input: Any,
        mode: Literal["first", "last"] = "first",
        prepend_bos: bool | None = None,
        padding_side: PaddingSide | None = None,
    ) -> int:
        """Position of ``single_token`` (a string of one token, or an id) in a prompt or ids.

        Raises:
            ValueError: the token does not occur, ``mode`` is unknown, or ids are not one row.
        """
        if mode not in ("first", "last"):
            raise ValueError(f"mode must be 'first' or 'last', not {mode!r}")
        if isinstance(input, str):
            tokens = self.to_tokens(input, prepend_bos=prepend_bos, padding_side=padding_side)
        else:
            tokens = _read_ids(input, "get_token_position")
        if tokens.ndim == 2:
            if tokens.shape[0] != 1:
                raise ValueError(f"rank-2 ids must be [1, pos], got {tuple(tokens.shape)}")
            tokens = tokens[0]
        if tokens.ndim != 1:
            raise ValueError(f"ids must be [pos] or [1, pos], got {tuple(tokens.shape)}")
        token = (
            self.to_single_token(single_token) if isinstance(single_token, str) else single_token
        )
        found = (tokens == int(token)).nonzero().flatten()
        if found.numel() == 0:
            raise ValueError(f"token {single_token!r} does not occur in the input")
        return int(found[0] if mode == "first" else found[-1])

    def _check_ids(self, ids: Tensor) -> None:
        vocab = len(self.tokenizer) if self.tokenizer is not None else self.cfg.d_vocab
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
            raise ValueError(
                f"token ids must be in [0, {vocab}), got {int(ids.min())}..{int(ids.max())}"
            )


def _read_ids(input: Any, what: str) -> Tensor:
    """Token ids as an integer CPU-or-device tensor with values; ValueError otherwise."""
    try:
        ids = torch.as_tensor(input)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(
            f"{what} takes token ids (an integer tensor or nested lists of ints), got "
            f"{type(input).__name__}"
        ) from None
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ValueError(f"token ids must be integers, got {ids.dtype}")
    if ids.device.type == "meta":
        raise ValueError(f"{what}: ids on the meta device have no values")
    return ids


def _keep_first(
    ids: Tensor, mask: Tensor, n_ctx: int, side: str, pad_id: int
) -> tuple[Tensor, Tensor]:
    """The first ``n_ctx`` real tokens of each row (TransformerLens 3 truncates before it pads,
    so the BOS and the start of the text stay), padded again on ``side``."""
    if side == "right":  # real tokens come first in every row
        return ids[:, :n_ctx], mask[:, :n_ctx]
    out_ids = torch.full((len(ids), n_ctx), pad_id, dtype=ids.dtype)
    out_mask = torch.zeros((len(ids), n_ctx), dtype=mask.dtype)
    for row in range(len(ids)):
        real = ids[row][mask[row].bool()][:n_ctx]
        out_ids[row, n_ctx - len(real) :] = real
        out_mask[row, n_ctx - len(real) :] = 1
    return out_ids, out_mask


def _remove_bos(ids: Tensor, mask: Tensor, side: str) -> tuple[Tensor, Tensor]:
    """Drops the BOS a tokenizer added by itself: the first real token of each row."""
    if side == "right":
        return ids[:, 1:], mask[:, 1:]
    # Left padding: the BOS sits after each row's pads; every row loses one position.
    keep = torch.ones_like(mask, dtype=torch.bool)
    keep[torch.arange(len(ids)), mask.argmax(-1)] = False
    return ids[keep].view(len(ids), -1), mask[keep].view(len(ids), -1)
