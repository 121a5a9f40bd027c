"""Tokenizers from the hub or a directory, never running code shipped with them."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any

from circuits.pretrained.hub import HubOptions, PretrainedError, download, first_line
from circuits.pretrained.options import check_name
from circuits.pretrained.tensors import read_json


def load_tokenizer(name_or_path: str | Path, hub: HubOptions | None = None) -> Any:
    """A Hugging Face tokenizer from a repository (cache or hub) or a local directory.

    A tokenizer that ships its own Python code (``auto_map`` in its ``tokenizer_config.json``
    or ``config.json``) is refused: nothing from a checkpoint ever runs.

    Raises:
        PretrainedError: it can't be found, downloaded or trusted.
    """
    from transformers import AutoTokenizer

    hub = hub or HubOptions()
    name = check_name(name_or_path)
    directory = Path(name).expanduser()
    if not directory.is_dir():
        # Fetch the files ourselves (one clear error when offline), then load the snapshot
        # directory: AutoTokenizer on a repository name also asks for the model's config.json.
        directory = download(name, "tokenizer_config.json", hub).parent
        for optional in _TOKENIZER_FILES:
            with contextlib.suppress(PretrainedError):  # a file this kind of tokenizer lacks
                download(name, optional, hub)
    for config in ("tokenizer_config.json", "config.json"):
        if (directory / config).is_file() and "auto_map" in read_json(directory / config):
            raise PretrainedError(
                f"the tokenizer {name!r} ships its own code (auto_map in {config}): refused, "
                "circuits never runs code from a checkpoint; pass a tokenizer yourself "
                "(tokenizer=...) or load without one (tokenizer=False)"
            )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return AutoTokenizer.from_pretrained(str(directory), trust_remote_code=False)
    except Exception as e:  # transformers raises many kinds for a broken tokenizer
        raise PretrainedError(f"could not load the tokenizer {name!r}: {first_line(e)}") from None


# Files a tokenizer repository may hold besides tokenizer_config.json (fast or GPT-2 style).
_TOKENIZER_FILES = ("tokenizer.json", "special_tokens_map.json", "vocab.json", "merges.txt")
