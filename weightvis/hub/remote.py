"""Resolve an ``hf://`` input into the checkpoint files of one commit, once per process.

``resolve(uri)``: the revision pinned to a commit (one ``repo_info`` call, none when the URI
names a commit), the checkpoint files chosen from the folder's listing by the same rules as a
local directory (``formats.choose_checkpoint_files``: an index wins, else the files whose magic
bytes say checkpoint, read with a 16-byte Range request each), an index expanded into its shards,
and the sidecars beside them (``config.json``, ``README.md``). Under ``HF_HUB_OFFLINE=1`` the
same is answered from the Hugging Face cache (``refs/`` and the snapshot's files), with no
request. Results are kept per process: every later open of the same URI, or of its pinned
spellings (``hf://NS/NAME@<commit>/<file>``, which render and diff hand to their worker
processes), makes no request.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import FormatError, HubError, InputError
from ..formats import choose_checkpoint_files, detect_format, kind_of_head
from ..sources import BlockCache, ByteSource, LocalFileSource
from .calls import call, hf, offline
from .uri import COMMIT_RE, HubRef, parse_hub_uri

__all__ = ["RemoteFile", "Resolved", "resolve", "remember", "cached_path", "open_hub_input",
           "listing", "SIDECARS"]

SIDECARS = ("config.json", "README.md")
"""Small files read beside the checkpoint files: the config (as locally) and the model card
(its ``base_model`` tells diff that B is a finetune of A)."""


class RemoteFile(NamedTuple):
    """A file of the repo at the pinned commit."""

    path: str
    size: int


class Resolved(NamedTuple):
    """An ``hf://`` input pinned to a commit: what to read."""

    ref: HubRef
    """As the user wrote it."""
    commit: str
    files: tuple[RemoteFile, ...]
    """The checkpoint files, in reading order (an index's shards)."""
    index_file: str | None
    """The ``*.safetensors.index.json`` the files come from, if any."""
    sidecars: tuple[RemoteFile, ...]
    """Those of SIDECARS that exist beside the files."""

    def uri(self, path: str) -> str:
        """The pinned location of a file of this input."""
        return self.ref.pinned(self.commit, path)


_RESOLVED: dict[str, Resolved] = {}
_LOCK = threading.Lock()


def remember(spelling: str, res: Resolved) -> None:
    """Answer ``resolve(spelling)`` with ``res`` from now on (in this process and in processes
    forked from it)."""
    with _LOCK:
        _RESOLVED[spelling] = res


def resolve(uri: str) -> Resolved:
    """``uri`` pinned to a commit, its checkpoint files chosen (see the module's doc)."""
    with _LOCK:
        got = _RESOLVED.get(uri)
    if got is None:
        ref = parse_hub_uri(uri)
        got = _resolve_offline(ref) if offline() else _resolve_online(ref)
        remember(uri, got)
    return got


def cached_path(ref: HubRef, commit: str, path: str) -> str | None:
    """The file's path in the Hugging Face cache, or None when it is not there."""
    got = hf().try_to_load_from_cache(ref.repo_id, path, revision=commit, repo_type=ref.type)
    return got if isinstance(got, str) else None


def listing(api: Any, repo_id: str, **kwargs: Any) -> list[Any]:
    """``list_repo_tree`` read to the end (it pages lazily: its requests happen while it is
    iterated, so inside ``call``, which turns their failures into words)."""
    return list(api.list_repo_tree(repo_id, **kwargs))


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


# -- online --------------------------------------------------------------------------------------
def _resolve_online(ref: HubRef) -> Resolved:
    api = hf().HfApi()
    rev = ref.revision
    if rev is not None and COMMIT_RE.match(rev):
        commit = rev
    else:
        info = call(ref, api.repo_info, ref.repo_id, repo_type=ref.type, revision=rev)
        commit = str(info.sha)
    repo_file = hf().hf_api.RepoFile
    if ref.path:
        probe = [ref.path, *(_join(_parent(ref.path), s) for s in SIDECARS)]
        infos = call(ref, api.get_paths_info, ref.repo_id, probe, revision=commit,
                     repo_type=ref.type, path=ref.path, commit=commit)
        by_path = {i.path: i for i in infos}
        target = by_path.get(ref.path)
        if target is None:
            raise HubError(f"{ref.uri}: {ref.repo_id} has no file or folder {ref.path!r} at "
                           f"{commit}")
        if isinstance(target, repo_file):
            sidecars = tuple(RemoteFile(i.path, int(i.size)) for p, i in by_path.items()
                             if p != ref.path and isinstance(i, repo_file))
            files: tuple[RemoteFile, ...] = (RemoteFile(target.path, int(target.size)),)
            return _with_index(ref, commit, files, sidecars, {})
    entries = call(ref, listing, api, ref.repo_id, path_in_repo=ref.path or None,
                   recursive=False, revision=commit, repo_type=ref.type, commit=commit)
    folder = ref.path
    sizes = {e.path[len(folder) + 1 if folder else 0:]: int(e.size)
             for e in entries if isinstance(e, repo_file)}
    others = [e.path.rsplit("/", 1)[-1] for e in entries if not isinstance(e, repo_file)]

    def kind_of(name: str) -> str:
        return _kind_online(ref, commit, _join(folder, name), sizes[name])

    chosen = choose_checkpoint_files(list(sizes), kind_of, ref.uri, others=others,
                                     size_of=sizes.__getitem__)
    files = tuple(RemoteFile(_join(folder, n), sizes[n]) for n in chosen)
    sidecars = tuple(RemoteFile(_join(folder, s), sizes[s]) for s in SIDECARS if s in sizes)
    return _with_index(ref, commit, files, sidecars,
                       {_join(folder, n): s for n, s in sizes.items()})


def _kind_online(ref: HubRef, commit: str, path: str, size: int) -> str:
    """The detect_format kind of a remote file from its first 16 bytes (the cached copy when
    there is one, else one Range request)."""
    local = cached_path(ref, commit, path)
    if local is not None:
        return detect_format(Path(local))
    from .fetch import HubRangeSource

    src = HubRangeSource(ref, commit, path, size, cache=BlockCache(16), block=16)
    try:
        return kind_of_head(src.read(0, min(16, size)))
    finally:
        src.close()


def _with_index(ref: HubRef, commit: str, files: tuple[RemoteFile, ...],
                sidecars: tuple[RemoteFile, ...], sizes: dict[str, int]) -> Resolved:
    """The resolution, an index (a single ``*.index.json``) expanded into its shards."""
    if len(files) != 1 or not files[0].path.endswith(".index.json"):
        return Resolved(ref, commit, files, None, sidecars)
    index = files[0].path
    local = _download_small(ref, commit, index)
    shards = _weight_map(Path(local), ref.pinned(commit, index))
    folder = _parent(index)
    paths = [_join(folder, s) for s in shards]
    unknown = [p for p in paths if p not in sizes]
    if unknown:
        api = hf().HfApi()
        infos = call(ref, api.get_paths_info, ref.repo_id, unknown, revision=commit,
                     repo_type=ref.type, path=index, commit=commit)
        sizes = {**sizes, **{i.path: int(i.size) for i in infos
                             if isinstance(i, hf().hf_api.RepoFile)}}
    for p, s in zip(paths, shards, strict=True):
        if p not in sizes:
            raise InputError(f"{ref.pinned(commit, index)}: shard {s!r} listed in weight_map is "
                             "missing")
    return Resolved(ref, commit, tuple(RemoteFile(p, sizes[p]) for p in paths), index, sidecars)


def _weight_map(local: Path, where: str) -> list[str]:
    try:
        doc = json.loads(local.read_text("utf-8"))
        weight_map = doc["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise FormatError(where, "not a sharded-checkpoint index (needs a 'weight_map' object)"
                          ) from None
    shards = [str(s) for s in dict.fromkeys(weight_map.values())]
    bad = [s for s in shards if s.startswith("/") or ".." in s.split("/")]
    if bad:
        raise FormatError(where, f"shard {bad[0]!r} points outside the index's folder")
    return shards


def _download_small(ref: HubRef, commit: str, path: str) -> str:
    """A small file (index, config, model card) into the cache; its local path."""
    got = cached_path(ref, commit, path)
    if got is not None:
        return got
    return str(call(ref, hf().hf_hub_download, ref.repo_id, path, repo_type=ref.type,
                    revision=commit, path=path, commit=commit))


# -- offline -------------------------------------------------------------------------------------
def _not_cached(ref: HubRef, what: str) -> HubError:
    return HubError(f"{ref.uri}: {what} is not in the local Hugging Face cache, and "
                    "HF_HUB_OFFLINE=1 forbids downloading it (run once online, or unset "
                    "HF_HUB_OFFLINE)")


def _resolve_offline(ref: HubRef) -> Resolved:
    """The same answer from the cache alone: the commit from ``refs/``, the files from the
    snapshot folder."""
    cache = Path(hf().constants.HF_HUB_CACHE)
    repo_dir = cache / hf().file_download.repo_folder_name(repo_id=ref.repo_id,
                                                           repo_type=ref.type)
    rev = ref.revision or "main"
    if COMMIT_RE.match(rev):
        commit = rev
    else:
        try:
            commit = (repo_dir / "refs" / rev).read_text().strip()
        except OSError:
            raise _not_cached(ref, f"revision {rev!r}") from None
    snap = repo_dir / "snapshots" / commit
    target = snap / ref.path if ref.path else snap
    if target.is_file():
        folder = _parent(ref.path)
        files: tuple[RemoteFile, ...] = (RemoteFile(ref.path, target.stat().st_size),)
    elif target.is_dir():
        folder = ref.path
        entries = list(target.iterdir())
        names = [f.name for f in entries if f.is_file()]
        try:
            chosen = choose_checkpoint_files(names, lambda n: detect_format(target / n), ref.uri,
                                             others=[f.name for f in entries if not f.is_file()])
        except InputError as e:
            if not str(e).startswith(f"{ref.uri}: no checkpoint files found"):
                raise
            raise _not_cached(ref, f"its checkpoint files at {commit}") from None
        files = tuple(RemoteFile(_join(folder, n), (target / n).stat().st_size) for n in chosen)
    else:
        raise _not_cached(ref, f"{ref.path or 'the snapshot'} at {commit}")
    sidecars = tuple(RemoteFile(_join(folder, s), (snap / _join(folder, s)).stat().st_size)
                     for s in SIDECARS if (snap / _join(folder, s)).is_file())
    sizes = {str(p.relative_to(snap).as_posix()): p.stat().st_size
             for p in (snap / folder).iterdir() if p.is_file()} if (snap / folder).is_dir() else {}
    if len(files) == 1 and files[0].path.endswith(".index.json"):
        index = files[0].path
        shards = _weight_map(snap / index, ref.pinned(commit, index))
        paths = [_join(folder, s) for s in shards]
        missing = [p for p in paths if not (snap / p).is_file()]
        if missing:
            raise _not_cached(ref, f"shard {missing[0]!r}")
        return Resolved(ref, commit, tuple(RemoteFile(p, sizes.get(p) or (snap / p).stat().st_size)
                                           for p in paths), index, sidecars)
    return Resolved(ref, commit, files, None, sidecars)


# -- opening -------------------------------------------------------------------------------------
def open_hub_input(uri: str) -> tuple[list[ByteSource], dict[str, Any], list[str | None]]:
    """The byte sources of an ``hf://`` input (the cached file where there is one, else HTTP
    ranges), its sidecar config and the pinned location of each file (formats.open_checkpoint
    calls this)."""
    from .fetch import HubRangeSource, process_cache

    res = resolve(uri)
    sources: list[ByteSource] = []
    try:
        for f in res.files:
            local = cached_path(res.ref, res.commit, f.path)
            sources.append(LocalFileSource(local) if local is not None else
                           HubRangeSource(res.ref, res.commit, f.path, f.size,
                                          cache=process_cache()))
        config = read_config(res)
    except BaseException:
        for s in sources:
            s.close()
        raise
    return sources, config, [res.uri(f.path) for f in res.files]


def read_config(res: Resolved) -> dict[str, Any]:
    """The ``config.json`` beside the files ({} when there is none or it is not an object)."""
    cfg = next((s for s in res.sidecars if s.path.endswith("config.json")), None)
    if cfg is None:
        return {}
    try:
        loaded = json.loads(Path(_download_small(res.ref, res.commit, cfg.path)).read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}  # a sidecar is optional; a broken one is ignored (as locally)
    return loaded if isinstance(loaded, dict) else {}


def model_card(uri: str) -> Path | None:
    """The cached ``README.md`` beside an input's files (None when it has none)."""
    res = resolve(uri)
    card = next((s for s in res.sidecars if s.path.endswith("README.md")), None)
    return None if card is None else Path(_download_small(res.ref, res.commit, card.path))


def local_paths(res: Resolved) -> list[str]:
    """The cached paths render hands to the local code: the index (its shards beside it) or the
    files (None when not all are cached)."""
    paths = [res.index_file] if res.index_file else [f.path for f in res.files]
    got = [cached_path(res.ref, res.commit, p) for p in paths]
    if any(g is None for g in got):
        raise HubError(f"{res.ref.uri}: the download did not complete (re-run to resume)")
    return [os.fspath(g) for g in got if g is not None]
