"""Files from the Hugging Face hub or its local cache, with one clear error when they can't be had.

``huggingface_hub`` keeps downloads in a cache (``HF_HUB_CACHE``, by default
``~/.cache/huggingface/hub``); with the network down (or ``HF_HUB_OFFLINE=1``) a file that is in
the cache still loads. Every failure becomes a :class:`PretrainedError` naming the repository, the
file and what to do, never a traceback from deep inside the hub client.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TRUE = ("1", "true", "yes", "on")


class PretrainedError(ValueError):
    """A pretrained model or tokenizer could not be found, downloaded or read."""


@dataclass(frozen=True)
class HubOptions:
    """Where and how to look on the hub (passed on to ``huggingface_hub``)."""

    cache_dir: str | Path | None = None
    revision: str | None = None
    local_files_only: bool = False


def download(repo: str, filename: str, hub: HubOptions | None = None) -> Path:
    """The local path of ``filename`` of ``repo``: from the cache, else downloaded.

    Raises:
        PretrainedError: unknown repository or file, or no network and nothing cached.
    """
    from huggingface_hub import errors as hub_errors
    from huggingface_hub import hf_hub_download

    hub = hub or HubOptions()
    try:
        path = hf_hub_download(
            repo,
            filename,
            cache_dir=hub.cache_dir,
            revision=hub.revision,
            local_files_only=hub.local_files_only,
        )
    except hub_errors.RepositoryNotFoundError:
        raise PretrainedError(f"no repository {repo!r} on the Hugging Face hub") from None
    except (hub_errors.LocalEntryNotFoundError, hub_errors.OfflineModeIsEnabled):
        # Before EntryNotFoundError: "not in the cache" is one of its subclasses.
        raise PretrainedError(_offline_message(repo, filename, hub.cache_dir)) from None
    except (hub_errors.EntryNotFoundError, hub_errors.RevisionNotFoundError):
        raise PretrainedError(f"repository {repo!r} has no file {filename!r}") from None
    except (hub_errors.HfHubHTTPError, OSError) as e:
        raise PretrainedError(f"could not download {repo}/{filename}: {_first_line(e)}") from None
    return Path(str(path))


def cached_files(path: Path) -> list[str]:
    """Names of the files beside ``path`` in its cache snapshot (what is there offline)."""
    return sorted(p.name for p in path.parent.iterdir() if p.is_file() or p.is_symlink())


def list_files(repo: str, *, revision: str | None = None) -> list[str] | None:
    """The repository's file names from the hub, or None when the hub can't be reached."""
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE:
        return None

    try:
        return list(HfApi().list_repo_files(repo, revision=revision))
    except Exception:  # any failure here means "ask the cache instead"
        return None


def _offline_message(repo: str, filename: str, cache_dir: str | Path | None) -> str:
    from huggingface_hub import constants

    where = cache_dir or constants.HF_HUB_CACHE
    return (
        f"{repo}/{filename} is not in the Hugging Face cache ({where}) and cannot be downloaded "
        f"(no network, or offline mode): connect once to download it, set HF_HUB_CACHE to a "
        f"cache that has it, or pass a local directory"
    )


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
