"""Getting the bytes of Hub files: ranged reads (``HubRangeSource``) and cached downloads
(``localize``).

- Ranged reads: one HEAD per file and process (``file_location``: the Hub answers with the file's
  CDN URL, signed, and its size) and then ``Range`` GETs on that URL, never on ``/resolve/`` (so
  one resolver request per file, whatever is read). The token goes to the Hub only, never to the
  CDN. Blocks are kept in one bounded cache per process (``WEIGHTVIS_HUB_BUFFER_MB``, default
  256 MiB); neighbouring missing blocks are fetched in one request (sources.HTTPRangeSource).
  An expired URL (401/403/410) is renewed with a new HEAD.
- Downloads: ``localize`` pins each ``hf://`` input, checks that the cache's disk can hold the
  files not cached yet, downloads them with ``hf_hub_download`` into huggingface_hub's standard
  cache (xet when the Hub offers it; a broken stream resumes; files already cached cost no
  request), and returns their local paths, which render like any local file. With ``stream`` it
  returns the pinned locations instead, which ``formats.open_checkpoint`` reads by ranges.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..errors import HubError
from ..sources import BlockCache, HTTPRangeSource
from .calls import call, env_int, hf
from .remote import RemoteFile, Resolved, cached_path, local_paths, read_config, remember, resolve
from .uri import HubRef, is_hub_uri

__all__ = ["HubRangeSource", "file_location", "process_cache", "localize", "BLOCK",
           "check_disk", "set_buffer"]

BLOCK = 1 << 20
"""Ranged reads are aligned to 1 MiB blocks (a header read fetches its first MiB; a tile's rows
are fetched in one request however many blocks they span)."""
DOWNLOAD_THREADS = 4
"""Files downloaded at once (each xet download is parallel inside too)."""
HEADROOM = 64 << 20
"""Bytes the disk must keep free beyond the download itself."""

Progress = Callable[[str, int, int], None]

_LOCATIONS: dict[tuple[str, str, str, str], str] = {}
_LOCK = threading.Lock()
_CACHE: BlockCache | None = None
_BUFFER: int | None = None


def set_buffer(nbytes: int) -> None:
    """Bound of this process's ranged-read cache (and of processes forked after)."""
    global _BUFFER, _CACHE
    _BUFFER, _CACHE = nbytes, None


def process_cache() -> BlockCache:
    """The block cache every ranged Hub read of this process shares."""
    global _CACHE
    if _CACHE is None:
        size = _BUFFER if _BUFFER is not None else env_int("WEIGHTVIS_HUB_BUFFER_MB", 256, 1) << 20
        _CACHE = BlockCache(max(size, BLOCK))
    return _CACHE


def file_location(ref: HubRef, commit: str, path: str) -> str:
    """Where a file's bytes are served (its CDN URL for LFS / xet files, the resolve URL for a
    small git file): one HEAD, remembered by this process."""
    key = (ref.type, ref.repo_id, commit, path)
    with _LOCK:
        got = _LOCATIONS.get(key)
    if got is None:
        url = hf().hf_hub_url(ref.repo_id, path, repo_type=ref.type, revision=commit)
        meta = call(ref, hf().get_hf_file_metadata, url, path=path, commit=commit)
        got = str(meta.location or url)
        with _LOCK:
            _LOCATIONS[key] = got
    return got


def _forget_location(ref: HubRef, commit: str, path: str) -> None:
    with _LOCK:
        _LOCATIONS.pop((ref.type, ref.repo_id, commit, path), None)


def _headers_for(url: str) -> dict[str, str]:
    """The token goes with a request to the Hub itself, never elsewhere (the CDN)."""
    from .calls import endpoint

    if not url.startswith(endpoint() + "/"):
        return {}
    built = hf().utils.build_hf_headers()
    return {k: v for k, v in built.items() if k.lower() in ("authorization", "user-agent")}


class HubRangeSource(HTTPRangeSource):
    """A Hub file read by HTTP ranges; named by its pinned ``hf://`` location, its ``path`` the
    path in the repo (what the manifest calls the file)."""

    def __init__(self, ref: HubRef, commit: str, path: str, size: int, *,
                 cache: BlockCache | None = None, block: int = BLOCK) -> None:
        self._where = (ref, commit, path)
        url = file_location(ref, commit, path)
        super().__init__(url, size, block=block, cache=cache or process_cache(),
                         headers=_headers_for(url), name=ref.pinned(commit, path), path=path)

    def refresh(self) -> bool:
        """A signed URL expired: ask the Hub for a new one."""
        ref, commit, path = self._where
        _forget_location(ref, commit, path)
        self.url = file_location(ref, commit, path)
        self.headers = _headers_for(self.url)
        return True


# -- downloads -----------------------------------------------------------------------------------
def check_disk(need: int, where: str) -> None:
    """Refuse a download the disk holding the cache cannot take."""
    cache = Path(hf().constants.HF_HUB_CACHE)
    probe = cache
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need + HEADROOM > free:
        raise HubError(f"{where}: needs {need / 1e9:.2f} GB more in the Hugging Face cache "
                       f"({cache}), which has {free / 1e9:.2f} GB free; free some space, point "
                       "HF_HUB_CACHE at a bigger disk, or read it over HTTP with --stream")


def localize(sources: Sequence[str], *, stream: bool = False,
             progress: Progress | None = None) -> list[list[str]]:
    """What a render reads for each input: an ``hf://`` input pinned to its commit and
    downloaded into the cache (its local paths), or with ``stream`` its pinned locations (read
    by ranges); another input as it is. Every input is resolved before anything is downloaded,
    and the disk is checked once for all. Sidecars (config, model card) are downloaded either
    way."""
    todo: list[tuple[Resolved, RemoteFile]] = []
    resolved: list[Resolved | None] = []
    for s in sources:
        if not is_hub_uri(s):
            resolved.append(None)
            continue
        got = resolve(s)
        resolved.append(got)
        todo += [(got, f) for f in got.sidecars]
        if not stream:
            todo += [(got, f) for f in got.files]
    _download(todo, progress)
    out: list[list[str]] = []
    for s, res in zip(sources, resolved, strict=True):
        if res is None:
            out.append([s])
            continue
        _record_ref(res)
        if not stream:
            out.append(local_paths(res))
            continue
        read_config(res)  # cached for the worker processes
        spelled = []
        for p in [res.index_file] if res.index_file else [f.path for f in res.files]:
            one = res if res.index_file or len(res.files) == 1 else res._replace(
                files=tuple(f for f in res.files if f.path == p), ref=res.ref._replace(path=p))
            remember(res.uri(p), one)
            spelled.append(res.uri(p))
        out.append(spelled)
    return out


def _record_ref(res: Resolved) -> None:
    """Note in the cache which commit the input's revision named (``refs/<revision>``, as
    huggingface_hub's own snapshot downloads do), so that HF_HUB_OFFLINE=1 finds it."""
    from .uri import COMMIT_RE

    rev = res.ref.revision or "main"
    if COMMIT_RE.match(rev):
        return
    folder = hf().file_download.repo_folder_name(repo_id=res.ref.repo_id, repo_type=res.ref.type)
    path = Path(hf().constants.HF_HUB_CACHE) / folder / "refs" / rev
    try:
        if path.is_file() and path.read_text().strip() == res.commit:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(res.commit)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache: offline runs then need the commit spelled out


class _Bytes:
    """A tqdm stand-in for huggingface_hub's downloads: forwards bytes written to ``progress``
    (one total for every file), shows nothing itself."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total = progress, total
        self.lock = threading.Lock()

    def tqdm_class(self) -> type:
        from tqdm import tqdm

        outer = self

        class _Forward(tqdm):  # type: ignore[misc]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                kwargs.pop("name", None)
                kwargs["disable"] = True
                super().__init__(*args, **kwargs)

            def update(self, n: float | None = 1) -> bool | None:
                if n and outer.progress is not None:
                    with outer.lock:
                        outer.progress("download", int(n), outer.total)
                return super().update(n)  # type: ignore[no-any-return]

            def update_transfer(self, n: float | None = 1) -> None:
                """Network bytes (xet): the bytes written are what ``update`` reports."""

            def set_transfer_postfix_str(self, *args: Any, **kwargs: Any) -> None:
                """No transfer line of its own."""

        return _Forward


def _download(todo: list[tuple[Resolved, RemoteFile]], progress: Progress | None) -> None:
    """Download what is not cached yet (disk checked first), a few files at once."""
    missing = [(res, f) for res, f in dict.fromkeys(todo)
               if cached_path(res.ref, res.commit, f.path) is None]
    if not missing:
        return
    need = sum(f.size for _, f in missing)
    check_disk(need, ", ".join(dict.fromkeys(res.ref.uri for res, _ in missing)))
    bar = _Bytes(progress, need).tqdm_class()

    def fetch(res: Resolved, f: RemoteFile) -> None:
        call(res.ref, hf().hf_hub_download, res.ref.repo_id, f.path, repo_type=res.ref.type,
             revision=res.commit, tqdm_class=bar, path=f.path, commit=res.commit)

    pool = ThreadPoolExecutor(max_workers=min(DOWNLOAD_THREADS, len(missing)),
                              thread_name_prefix="weightvis-download")
    try:
        futures: list[Future[None]] = [pool.submit(fetch, res, f) for res, f in missing]
        for fut in futures:
            fut.result()
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        # files being downloaded finish (a re-run then starts from them), the others are not
        # started
        pool.shutdown(wait=True, cancel_futures=True)
