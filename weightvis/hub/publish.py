"""``publish``: an existing bundle uploaded as a static Hugging Face Space (or into a folder of a
model / dataset repo).

The Space gets a ``README.md`` whose front matter says ``sdk: static`` and ``app_file:
index.html`` (docs: hub/spaces-sdks-static), a title, the tag ``weightvis`` and, when the bundle
was rendered from the Hub, the source repos (``models:`` / ``datasets:``) with a link to each at
its commit. The README is committed first, the bundle after it with ``upload_folder`` (which
skips files already on the Hub, so re-running an interrupted publish resumes it), and files of an
older bundle that the new one does not have are deleted last.

A target that holds anything else is never touched: a Space or folder is written only when it is
empty (a new Space holds ``.gitattributes`` and ``README.md``), holds a weightvis bundle (its
``manifest.json`` says so, or its README carries the ``weightvis`` tag of an interrupted
publish) - and one holding a different bundle is replaced only with ``overwrite``.

Bundles over ``pack_above`` files (default 50,000: the Hub recommends < 100k files per repo) are
published with their tiles packed (pack.py), unless ``pack="never"``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NamedTuple

from ..errors import HubError, OutputError
from ..manifest import BUNDLE_FORMAT, dumps, read_manifest
from .calls import call, endpoint, hf
from .remote import listing
from .uri import HubRef, parse_hub_uri

__all__ = ["publish", "preflight", "PublishResult", "PackMode", "PACK_ABOVE", "SHARD_BYTES",
           "space_readme", "count_files"]

PackMode = Literal["auto", "never", "always"]
PACK_ABOVE = 50_000
"""Bundles with more files than this are published packed (``--pack-above``)."""
SHARD_BYTES = 4 << 30
"""Largest pack shard (``--pack-shard-mb``): cheap to retry, far below the Hub's 200 GB advice."""
_DELETE_BATCH = 1000
_BUNDLE_HEAD = re.compile(rb'^\s*\{\s*"format"\s*:\s*"' + BUNDLE_FORMAT.encode() + rb'"')


class PublishResult(NamedTuple):
    url: str
    """The Space's page (or the folder's page in a model / dataset repo)."""
    files: int
    """Files of the published bundle (README apart)."""
    packed: bool
    deleted: int
    """Files of an older bundle removed."""


def count_files(bundle: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(bundle))


def _front_matter_tags(text: str) -> list[str]:
    m = re.match(r"^---\s*\n(.*?)\n---", text, re.S)
    if m is None:
        return []
    tags: list[str] = []
    lines = m.group(1).splitlines()
    for i, line in enumerate(lines):
        if line.startswith("tags:"):
            inline = line[5:].strip()
            if inline.startswith("["):
                tags += [t.strip().strip("'\"") for t in inline.strip("[]").split(",")]
            for more in lines[i + 1:]:
                if not more.lstrip().startswith("- "):
                    break
                tags.append(more.strip()[2:].strip().strip("'\""))
    return tags


def _sources(manifest: dict[str, Any]) -> list[HubRef]:
    """The Hub repos (at their commits) a bundle was rendered from."""
    src = manifest.get("source") or {}
    sides = [src] + [src.get(k) or {} for k in ("a", "b")]
    out: dict[str, HubRef] = {}
    for side in sides:
        for uri in side.get("uris") or () if isinstance(side, dict) else ():
            if isinstance(uri, str):
                ref = parse_hub_uri(uri)
                out.setdefault(ref.repo_id, ref._replace(path=""))
    return list(out.values())


def space_readme(title: str, manifest: dict[str, Any], app_file: str) -> str:
    """The Space's README: front matter of a static Space, and a line naming the source."""
    refs = _sources(manifest)
    lines = ["---", f"title: {json.dumps(title[:60])}", "emoji: 🗺️", "colorFrom: gray",
             "colorTo: blue", "sdk: static", f"app_file: {app_file}", "pinned: false",
             "tags:", "- weightvis"]
    for kind, label in (("model", "models"), ("dataset", "datasets")):
        ids = [r.repo_id for r in refs if r.type == kind]
        if ids:
            lines += [f"{label}:"] + [f"- {i}" for i in ids]
    lines += ["---", "", f"# {title}", ""]
    if refs:
        links = ", ".join(f"[{r.repo_id}]({r.web_url(endpoint())}/tree/{r.revision})"
                          if r.revision else f"[{r.repo_id}]({r.web_url(endpoint())})"
                          for r in refs)
        lines.append(f"A map of the weights of {links}, made with weightvis: one pixel per "
                     "tensor element at full zoom.")
    else:
        lines.append("A map of a model's weights made with weightvis: one pixel per tensor "
                     "element at full zoom.")
    return "\n".join(lines) + "\n"


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def publish(bundle: str | os.PathLike[str], target: str, *, private: bool = False,
            overwrite: bool = False, path_in_repo: str | None = None,
            title: str | None = None, message: str | None = None, pack: PackMode = "auto",
            pack_above: int = PACK_ABOVE, shard_bytes: int = SHARD_BYTES,
            log: Callable[[str], None] | None = None) -> PublishResult:
    """Upload ``bundle`` to ``target`` (``hf://spaces/NS/NAME`` or a model / dataset repo with a
    folder); see the module's doc. ``log`` hears what is being done (the CLI prints it)."""
    say = log or (lambda _text: None)
    root = Path(bundle)
    manifest = read_manifest(root)
    ref, folder = _target(target, path_in_repo)
    n_files = count_files(root)
    packed = pack == "always" or (pack == "auto" and n_files > pack_above)
    api = hf().HfApi()
    existing, remote_manifest = _inspect(api, ref, folder, target)
    stage = root.parent / f".{root.name}.weightvis-publish-{os.getpid()}"
    try:
        upload_from = root
        if packed:
            say(f"packing the tiles of {n_files:,} files into shards of at most "
                f"{shard_bytes / 2**20:,.0f} MiB")
            manifest = _stage_packed(root, manifest, stage, shard_bytes)
            upload_from = stage
        if remote_manifest is not None and not overwrite and not _oid_matches(
                remote_manifest, (upload_from / "manifest.json").read_bytes()):
            raise OutputError(f"{target}: a weightvis bundle is already there; pass --overwrite "
                              "to replace it")
        if existing is None:
            say(f"creating {ref.web_url(endpoint())}")
            call(ref, api.create_repo, ref.repo_id, repo_type=ref.type, private=private,
                 exist_ok=True, space_sdk="static" if ref.type == "space" else None)
        prefix = f"{folder}/" if folder else ""
        if ref.type == "space":
            readme = space_readme(title or str(manifest.get("title") or "weightvis"), manifest,
                                  f"{prefix}index.html")
            _put_readme(api, ref, readme, existing)
        say(f"uploading {n_files:,} files (re-run the same command to resume)")
        call(ref, api.upload_folder, repo_id=ref.repo_id, repo_type=ref.type,
             folder_path=str(upload_from), path_in_repo=folder or None,
             revision=ref.revision, ignore_patterns=[".*", "**/.*"],
             commit_message=message or f"weightvis bundle: {manifest.get('title')}")
        uploaded = {prefix + p.relative_to(upload_from).as_posix()
                    for p in upload_from.rglob("*") if p.is_file() and not p.name.startswith(".")}
        deleted = _delete_stale(api, ref, prefix, uploaded)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    url = (f"{ref.web_url(endpoint())}" if ref.type == "space" and not folder
           else f"{ref.web_url(endpoint())}/tree/{ref.revision or 'main'}/{folder}")
    return PublishResult(url, n_files, packed, deleted)


def _target(target: str, path_in_repo: str | None) -> tuple[HubRef, str]:
    ref = parse_hub_uri(target)
    folder = (path_in_repo if path_in_repo is not None else ref.path).strip("/")
    if ref.type != "space" and not folder:
        raise OutputError(f"{target}: a {ref.type} repo takes the bundle in a folder: add "
                          "--path-in-repo DIR (or write hf://NS/NAME/DIR)")
    return ref, folder


def _inspect(api: Any, ref: HubRef, folder: str, target: str) -> tuple[_Target | None, Any]:
    """The token checked, the target's state, a foreign target refused; the target's bundle
    manifest (RepoFile) when it holds one."""
    if hf().get_token() is None:
        raise HubError(f"{target}: publishing needs a write token: set HF_TOKEN or run "
                       "'hf auth login'")
    call(ref, api.whoami)
    existing = _existing(api, ref, folder)
    if existing is None:
        return None, None
    return existing, _refuse_foreign(ref, folder, existing, target)


def preflight(target: str, *, overwrite: bool = False, path_in_repo: str | None = None) -> None:
    """What ``publish`` would refuse, checked before a render that will be published: no token,
    a target holding something else, or a bundle without ``overwrite``."""
    ref, folder = _target(target, path_in_repo)
    _, remote_manifest = _inspect(hf().HfApi(), ref, folder, target)
    if remote_manifest is not None and not overwrite:
        raise OutputError(f"{target}: a weightvis bundle is already there; pass --overwrite to "
                          "replace it")


class _Target(NamedTuple):
    """What the target holds now."""

    commit: str
    sdk: str | None
    files: dict[str, Any]
    """Files under the folder (and a Space's README), path -> RepoFile."""


def _existing(api: Any, ref: HubRef, folder: str) -> _Target | None:
    """The target's state, or None when the repo does not exist."""
    errors = hf().errors
    try:
        info = api.repo_info(ref.repo_id, repo_type=ref.type, revision=ref.revision)
    except errors.RepositoryNotFoundError:
        return None
    except Exception:  # noqa: BLE001 - the same call again, for its one-line message
        info = call(ref, api.repo_info, ref.repo_id, repo_type=ref.type, revision=ref.revision)
    commit = str(info.sha)
    entries = call(ref, listing, api, ref.repo_id, recursive=True, repo_type=ref.type,
                   revision=commit)
    repo_file = hf().hf_api.RepoFile
    prefix = f"{folder}/" if folder else ""
    files = {e.path: e for e in entries if isinstance(e, repo_file)
             and (e.path.startswith(prefix) or (ref.type == "space" and e.path == "README.md"))}
    return _Target(commit, getattr(info, "sdk", None), files)


def _refuse_foreign(ref: HubRef, folder: str, target: _Target, where: str) -> Any:
    """Refuse a target that holds something other than a weightvis bundle; returns the remote
    ``manifest.json`` (RepoFile) when there is one, for the overwrite check."""
    if ref.type == "space" and target.sdk not in (None, "static"):
        raise OutputError(f"{where}: a {target.sdk} Space, not a static one; weightvis never "
                          "overwrites it - publish to another Space")
    prefix = f"{folder}/" if folder else ""
    files = target.files
    theirs = [p for p in files if p not in (".gitattributes", "README.md")]
    if not theirs:
        return None
    remote_manifest = files.get(f"{prefix}manifest.json")
    is_bundle = remote_manifest is not None and bool(_BUNDLE_HEAD.match(
        _read_remote(ref, target.commit, remote_manifest, 4096)))
    if not is_bundle and ref.type == "space" and "README.md" in files:
        card = _read_remote(ref, target.commit, files["README.md"], 1 << 16)
        is_bundle = "weightvis" in _front_matter_tags(card.decode("utf-8", "replace"))
    if not is_bundle:
        shown = ", ".join(sorted(theirs)[:3])
        raise OutputError(f"{where}: holds files that are not a weightvis bundle ({shown}); "
                          "weightvis never overwrites them - publish to another Space or "
                          "folder")
    return remote_manifest


def _oid_matches(remote: Any, data: bytes) -> bool:
    lfs = getattr(remote, "lfs", None)
    sha = getattr(lfs, "sha256", None) if lfs is not None else None
    if sha:
        return bool(sha == hashlib.sha256(data).hexdigest())
    return bool(getattr(remote, "blob_id", None) == _git_oid(data))


def _read_remote(ref: HubRef, commit: str, remote: Any, limit: int) -> bytes:
    """The first ``limit`` bytes of a file of the target (a ranged read: a manifest can be tens
    of MB)."""
    from .fetch import HubRangeSource

    size = int(remote.size)
    src = HubRangeSource(ref, commit, remote.path, size)
    try:
        return src.read(0, min(size, limit))
    finally:
        src.close()


def _put_readme(api: Any, ref: HubRef, text: str, target: _Target | None) -> None:
    """Commit the Space's card (nothing when it is already this text)."""
    data = text.encode("utf-8")
    old = target.files.get("README.md") if target is not None else None
    if old is not None and _oid_matches(old, data):
        return
    ops = [hf().CommitOperationAdd(path_in_repo="README.md",
                                   path_or_fileobj=data)]
    call(ref, api.create_commit, repo_id=ref.repo_id, repo_type=ref.type, operations=ops,
         revision=ref.revision, commit_message="weightvis: static Space card")


def _delete_stale(api: Any, ref: HubRef, prefix: str, uploaded: set[str]) -> int:
    """Remove files under ``prefix`` that the new bundle does not have (an older bundle's)."""
    entries = call(ref, listing, api, ref.repo_id, recursive=True, repo_type=ref.type,
                   revision=ref.revision)
    repo_file = hf().hf_api.RepoFile
    keep = {".gitattributes", "README.md"} if not prefix else set()
    stale = sorted(e.path for e in entries if isinstance(e, repo_file)
                   and e.path.startswith(prefix) and e.path not in uploaded
                   and e.path not in keep)
    for i in range(0, len(stale), _DELETE_BATCH):
        ops = [hf().CommitOperationDelete(path_in_repo=p) for p in stale[i:i + _DELETE_BATCH]]
        call(ref, api.create_commit, repo_id=ref.repo_id, repo_type=ref.type, operations=ops,
             revision=ref.revision, commit_message="weightvis: remove files of the older bundle")
    return len(stale)


def _stage_packed(root: Path, manifest: dict[str, Any], stage: Path, shard_bytes: int
                  ) -> dict[str, Any]:
    """The bundle with each scene's tiles packed, in ``stage``: the other files linked (or
    copied), the manifest and index.html rewritten. Returns the new manifest."""
    from ..regen import write_text, write_viewer
    from .pack import write_pack

    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir()
    tiles = root / "tiles"
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.is_dir() or rel.parts[0] == "tiles" or rel.name in ("manifest.json",
                                                                    "index.html"):
            continue
        dst = stage / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, dst)
        except OSError:
            shutil.copy2(path, dst)
    doc = dict(manifest)
    doc["scenes"] = [dict(sc, pack=write_pack(root, sc, stage, shard_bytes))
                     for sc in manifest["scenes"]]
    assert tiles.is_dir() or not doc["scenes"]
    write_text(stage, "manifest.json", dumps(doc))
    write_viewer(stage, doc)
    return doc
