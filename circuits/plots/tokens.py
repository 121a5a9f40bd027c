"""Token labels a reader can see: token strings from the tokenizer, whitespace made visible.

A figure labelled with token ids says little about a model with a tokenizer, and decoding one
token at a time turns a token that is part of a UTF-8 character into the replacement glyph
"\ufffd". :func:`token_strings` decodes each token to its bytes instead (byte-level BPE, as in
GPT-2 and the toy models) and :func:`visible` writes what a label would hide: a space as
"␣", a newline as ``\\n``, a byte that is no character as ``\\xe2``.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from typing import Any

SPACE = "\u2423"  # ␣
EMPTY = "\u2205"  # ∅: a token that decodes to nothing
_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def visible(text: str | bytes) -> str:
    """``text`` with whitespace and unprintable characters written out.

    Spaces become "␣"; newline, tab and carriage return ``\\n``, ``\\t``, ``\\r``; other
    control, format, unassigned and separator characters their escape (``\\x07``,
    ``\\u200b``); bytes that are not valid UTF-8 ``\\xNN``; an empty string "∅".
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="backslashreplace")
    if not text:
        return EMPTY
    out = []
    for ch in text:
        if ch == " ":
            out.append(SPACE)
        elif ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch == "\\":
            out.append(ch)
        elif unicodedata.category(ch)[0] in "CZ" or ch == "\ufffd":
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet, reversed: printable stand-in character -> byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def _is_byte_level(tokenizer: Any) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    return type(decoder).__name__ == "ByteLevel" or "ByteLevel" in repr(decoder)


def _token_string(tokenizer: Any, token_id: int, byte_level: bool) -> str:
    if byte_level:
        piece = tokenizer.convert_ids_to_tokens(token_id)
        special = set(getattr(tokenizer, "all_special_tokens", ()))
        table = _byte_decoder()
        if isinstance(piece, str) and piece not in special and all(c in table for c in piece):
            return visible(bytes(table[c] for c in piece))
        if isinstance(piece, str):
            return visible(piece)
    return visible(tokenizer.decode([token_id]))


def token_strings(model: Any, tokens: Any) -> Any:
    """Display strings of token ids, from ``model``'s tokenizer (ids as text without one).

    Args:
        model: A model with a ``tokenizer`` attribute (None, or no tokenizer, is allowed).
        tokens: Token ids of any nesting: a tensor or (nested) list, e.g. ``[pos]`` or
            ``[point, pos]``.

    Returns:
        Nested lists of strings of the same shape: each token's bytes decoded with
        :func:`visible` ("␣cat", "\\n", "\\xe2"), or ``str(id)`` without a tokenizer.
    """
    ids = tokens.tolist() if hasattr(tokens, "tolist") else tokens
    tokenizer = getattr(model, "tokenizer", None)
    byte_level = tokenizer is not None and _is_byte_level(tokenizer)

    def convert(x: Any) -> Any:
        if isinstance(x, list | tuple):
            return [convert(v) for v in x]
        if isinstance(x, bool) or not isinstance(x, int):
            raise TypeError(f"tokens must be integer token ids, got {type(x).__name__}")
        return str(x) if tokenizer is None else _token_string(tokenizer, x, byte_level)

    return convert(ids)
