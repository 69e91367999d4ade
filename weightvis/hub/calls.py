"""Calls into huggingface_hub: imported lazily, retried on 429, failures turned into HubError.

Every request weightvis makes to the Hub goes through ``call`` (or, for ranged reads of file
bytes, through ``remote.HubRangeSource``, which asks ``file_location`` for the file's URL).
Tokens come only from huggingface_hub's own places (``HF_TOKEN``, ``hf auth login``'s file), are
read by it at call time and are never put into a message: every message is written here from
the repo id, revision and path, and any text taken from an exception is scrubbed of URL queries
(signed CDN URLs) and token-like strings first.

Limits (environment variables, read at call time):

- ``WEIGHTVIS_HUB_RETRIES`` (default 5): retries of a request the Hub answered with 429.
- ``WEIGHTVIS_HUB_MAX_WAIT`` (default 60 s): the longest wait before one retry (the Hub's
  ``Retry-After`` / ``RateLimit`` reset when it sends one, else 1, 2, 4 … s).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

from ..errors import HubError
from .uri import HubRef

__all__ = ["hf", "call", "offline", "endpoint", "scrub", "words_for", "env_int"]

T = TypeVar("T")

_HF_MODULES = ("huggingface_hub", "httpx", "httpcore", "hf_xet", "requests", "urllib3")


def hf() -> ModuleType:
    """huggingface_hub, imported on first use (it reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE
    when imported: set them before)."""
    import huggingface_hub
    import huggingface_hub.constants
    import huggingface_hub.errors
    import huggingface_hub.file_download
    import huggingface_hub.hf_api
    import huggingface_hub.utils

    return huggingface_hub


def endpoint() -> str:
    """The Hub weightvis talks to (``HF_ENDPOINT``, default https://huggingface.co)."""
    return str(hf().constants.ENDPOINT).rstrip("/")


def offline() -> bool:
    """``HF_HUB_OFFLINE=1``: answer from the local cache only, make no request."""
    return bool(hf().constants.HF_HUB_OFFLINE)


def env_int(name: str, default: int, minimum: int = 0) -> int:
    """An integer limit from the environment (a bad value is an error naming the variable)."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HubError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise HubError(f"{name}={value} must be at least {minimum}")
    return value


_QUERY = re.compile(r"(https?://[^\s'\"?#]+)\?[^\s'\"]*")
_TOKEN_LIKE = re.compile(r"\b(hf_[A-Za-z0-9]{6,}|api_org_[A-Za-z0-9]{6,}|Bearer\s+\S+)")


def scrub(text: str) -> str:
    """``text`` without URL queries (signed URLs), token-like words or the current token; its
    first line only."""
    line = (text.strip().splitlines() or [""])[0]
    line = _QUERY.sub(r"\1", line)
    line = _TOKEN_LIKE.sub("<hidden>", line)
    token = _current_token()
    if token:
        line = line.replace(token, "<hidden>")
    return line[:300]


def _current_token() -> str | None:
    try:
        tok = hf().get_token()
    except Exception:  # noqa: BLE001 - a broken token file must not hide the real message
        return None
    return tok if isinstance(tok, str) and tok else None


def _status(e: BaseException) -> int | None:
    resp = getattr(e, "response", None)
    code = getattr(resp, "status_code", None)
    return code if isinstance(code, int) else None


def _retry_after(e: BaseException) -> float | None:
    """Seconds the Hub asked to wait (``Retry-After``, or the reset of a spent ``RateLimit``)."""
    headers = getattr(getattr(e, "response", None), "headers", None) or {}
    raw = headers.get("Retry-After")
    if raw is not None and str(raw).strip().isdigit():
        return float(raw)
    m = re.search(r"\bt=(\d+)", str(headers.get("RateLimit", "")))
    return float(m.group(1)) if m else None


def call(ref: HubRef, fn: Callable[..., T], *args: Any, path: str | None = None,
         commit: str | None = None, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` (a huggingface_hub call about ``ref``), retried with backoff
    when the Hub answers 429; any failure becomes a one-line HubError (``path``, ``commit``:
    the file and commit the call was about, for the message)."""
    retries = env_int("WEIGHTVIS_HUB_RETRIES", 5)
    max_wait = env_int("WEIGHTVIS_HUB_MAX_WAIT", 60)
    waited = 0.0
    for attempt in range(retries + 1):
        try:
            return fn(*args, **kwargs)
        except HubError:
            raise
        except Exception as e:
            if _status(e) != 429 or attempt == retries:
                raise HubError(words_for(e, ref, path=path, commit=commit, retries=attempt,
                                         waited=waited)) from e
            asked = _retry_after(e)
            wait = min(float(max_wait), asked if asked is not None else float(2 ** attempt))
            time.sleep(wait)
            waited += wait
    raise AssertionError("unreachable")


def words_for(e: BaseException, ref: HubRef, *, path: str | None = None,
              commit: str | None = None, retries: int = 0, waited: float = 0.0) -> str:
    """The one-line message for a huggingface_hub failure about ``ref`` (see HUB.md §1.7)."""
    errors = hf().errors
    where = ref.uri  # as the user wrote it; a missing file is named in the message itself
    page = ref.web_url(endpoint())
    status = _status(e)
    what = f"{path} at {commit}" if path and commit else path or "it"
    if isinstance(e, errors.OfflineModeIsEnabled) or (
            offline() and isinstance(e, errors.LocalEntryNotFoundError)):
        return (f"{where}: {what} is not in the local Hugging Face cache, and HF_HUB_OFFLINE=1 "
                "forbids downloading it (run once online, or unset HF_HUB_OFFLINE)")
    if isinstance(e, errors.GatedRepoError):
        return (f"{where}: {ref.repo_id} is gated: request access at {page}, then set HF_TOKEN "
                "or run 'hf auth login'")
    if isinstance(e, errors.RepositoryNotFoundError):
        return (f"{where}: repository {ref.repo_id} not found on {endpoint()} (a private repo? "
                "set HF_TOKEN or run 'hf auth login')")
    if isinstance(e, errors.RevisionNotFoundError):
        return f"{where}: {ref.repo_id} has no revision {ref.revision or 'main'!r}"
    if isinstance(e, errors.EntryNotFoundError) and not isinstance(
            e, errors.LocalEntryNotFoundError):
        at = f" at {commit}" if commit else ""
        return f"{where}: {ref.repo_id} has no file {path or ref.path!r}{at}"
    if status == 401:
        return (f"{where}: the Hub rejected the token (HF_TOKEN or 'hf auth login'): invalid or "
                "expired")
    if status == 403:
        return (f"{where}: the token has no access to {ref.repo_id} (a read token cannot write; "
                f"see {page})")
    if status == 429:
        return (f"{where}: rate limited by the Hub (HTTP 429), still after {retries} retries "
                f"over {waited:.0f} s; try again later (a logged-in user gets a larger quota)")
    if isinstance(e, errors.FileMetadataError):
        return f"{where}: HF_ENDPOINT={endpoint()} does not answer like a Hugging Face Hub"
    if isinstance(e, errors.LocalEntryNotFoundError):
        return f"{where}: cannot reach the Hub at {endpoint()}, and {what} is not cached"
    if isinstance(e, errors.HfHubHTTPError):
        return f"{where}: the Hub answered HTTP {status}: {scrub(str(e))}"
    if isinstance(e, OSError) or type(e).__module__.startswith(_HF_MODULES):
        return (f"{where}: cannot reach the Hub at {endpoint()} ({type(e).__name__}: "
                f"{scrub(str(e))})")
    raise e  # a bug of ours, not a Hub failure: keep its traceback
