"""Files from the Hugging Face hub or its local cache, with one clear error when they can't be had.

``huggingface_hub`` keeps downloads in a cache (``HF_HUB_CACHE``, by default
``~/.cache/huggingface/hub``); with the network down (or ``HF_HUB_OFFLINE=1``) a file that is in
the cache still loads. Every failure becomes a :class:`PretrainedError` naming the repository, the
file and what to do, never a traceback from deep inside the hub client.

Offline is detected first, in at most :data:`PROBE_TIMEOUT` seconds (one TCP connection to the
hub, or to the proxy, remembered for a minute): ``huggingface_hub`` itself retries a file that is
not cached five times with backoff (about 25-40 s) before it gives up.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

_TRUE = ("1", "true", "yes", "on")
# Seconds one reachability probe may take, and how long its answer is trusted.
PROBE_TIMEOUT = 3.0
_PROBE_TTL = 60.0
_probes: dict[tuple[str, int], tuple[float, bool]] = {}
# The shipped stand-in cache of a source checkout (data/standin_hub): toy stand-ins that load
# offline under the real names.
STANDIN_HUB = Path(__file__).resolve().parents[2] / "data" / "standin_hub"


class PretrainedError(ValueError):
    """A pretrained model or tokenizer could not be found, downloaded, read or trusted."""


@dataclass(frozen=True)
class HubOptions:
    """Where and how to look on the hub (passed on to ``huggingface_hub``)."""

    cache_dir: str | Path | None = None
    revision: str | None = None
    local_files_only: bool = False


def offline(hub: HubOptions | None = None) -> bool:
    """Whether the hub must not (``local_files_only``, ``HF_HUB_OFFLINE``) or cannot be asked."""
    from huggingface_hub import constants

    if hub is not None and hub.local_files_only:
        return True
    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE:
        return True
    return not hub_reachable()


def hub_reachable(timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether a TCP connection to the hub (or the HTTPS proxy) opens within ``timeout`` s.

    Name resolution can hang on a machine without network, so the probe runs in a daemon
    thread and is abandoned after ``timeout``. The answer is cached for a minute.
    """
    from huggingface_hub import constants

    target = _proxy_or(constants.ENDPOINT)
    now = time.monotonic()
    cached = _probes.get(target)
    if cached is not None and now - cached[0] < _PROBE_TTL:
        return cached[1]
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection(target, timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    ok = bool(result and result[0])
    _probes[target] = (now, ok)
    return ok


def _proxy_or(endpoint: str) -> tuple[str, int]:
    """The (host, port) a request to ``endpoint`` first connects to."""
    url = urlsplit(endpoint)
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        if url.scheme == "https" and os.environ.get(var):
            url = urlsplit(os.environ[var])
            break
    else:
        if url.scheme == "http" and (proxy := os.environ.get("HTTP_PROXY", "")):
            url = urlsplit(proxy)
    port = url.port or (443 if url.scheme == "https" else 80)
    return url.hostname or "", port


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
            local_files_only=offline(hub),
        )
    except hub_errors.RepositoryNotFoundError:
        raise PretrainedError(f"no repository {repo!r} on the Hugging Face hub") from None
    except (hub_errors.LocalEntryNotFoundError, hub_errors.OfflineModeIsEnabled):
        # Before EntryNotFoundError: "not in the cache" is one of its subclasses.
        raise PretrainedError(offline_message(repo, filename, hub.cache_dir)) from None
    except (hub_errors.EntryNotFoundError, hub_errors.RevisionNotFoundError):
        raise PretrainedError(f"repository {repo!r} has no file {filename!r}") from None
    except (hub_errors.HFValidationError, ValueError) as e:
        raise PretrainedError(f"{repo!r} is not a valid repository id: {first_line(e)}") from None
    except (hub_errors.HfHubHTTPError, OSError) as e:
        raise PretrainedError(f"could not download {repo}/{filename}: {first_line(e)}") from None
    return Path(str(path))


def cached_files(path: Path) -> list[str]:
    """Names of the files beside ``path`` in its cache snapshot (what is there offline)."""
    return sorted(p.name for p in path.parent.iterdir() if p.is_file() or p.is_symlink())


def list_files(repo: str, hub: HubOptions | None = None) -> list[str] | None:
    """The repository's file names from the hub, or None when the hub can't be asked."""
    from huggingface_hub import HfApi

    if offline(hub):
        return None
    try:
        return list(HfApi().list_repo_files(repo, revision=hub.revision if hub else None))
    except Exception:  # any failure here means "ask the cache instead"
        return None


def offline_message(repo: str, filename: str, cache_dir: str | Path | None) -> str:
    """One line: what is missing, where we looked, and how to load offline (the stand-in)."""
    from huggingface_hub import constants

    where = cache_dir or constants.HF_HUB_CACHE
    standin = STANDIN_HUB if STANDIN_HUB.is_dir() else Path("data/standin_hub")
    held = sorted(
        p.name.removeprefix("models--").replace("--", "/")
        for p in (standin.iterdir() if standin.is_dir() else ())
        if p.name.startswith("models--")
    )
    what = f"toy stand-ins of {', '.join(held)}" if held else "toy stand-ins"
    return (
        f"{repo}/{filename} is not in the Hugging Face cache ({where}) and the hub cannot be "
        f"reached (no network, or HF_HUB_OFFLINE=1): connect once to download it, or point "
        f"HF_HUB_CACHE (cache_dir= in Python) at a cache that has it; the shipped stand-in hub "
        f"({what}, not the real weights) loads offline with HF_HUB_CACHE={standin}"
    )


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
