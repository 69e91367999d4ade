"""``hf://`` URIs: parsed exactly as huggingface_hub parses them, without importing it.

Grammar (huggingface_hub ``utils/_hf_uris.py``, ``parse_hf_uri``; 2.4.0)::

    hf://[<TYPE>/]<NS>/<NAME>[@<REVISION>][/<PATH>]       TYPE: models | datasets | spaces

- the type prefix is plural and optional (default: a model repo); ``namespace/name`` is required
  (``hf://gpt2`` is refused, as since huggingface_hub PR #4189);
- ``@`` starts the revision only right after ``namespace/name``; ``refs/pr/N`` and
  ``refs/convert/NAME`` are kept whole, any other revision ends at the next ``/`` (write a ``/``
  inside a branch name as ``%2F``); the revision is %-decoded; an empty one is refused;
- the path has no empty segment; trailing slashes are dropped.

Kernels and buckets (also ``hf://`` types) hold no checkpoints weightvis reads: refused with a
message. numpy-free and huggingface_hub-free: ``formats`` and ``scenes`` use it to recognise an
``hf://`` input and a file of the Hugging Face cache.

>>> parse_hub_uri("hf://datasets/org/ds@refs/pr/3/data/x.safetensors")
HubRef(type='dataset', repo_id='org/ds', revision='refs/pr/3', path='data/x.safetensors')
>>> parse_hub_uri("hf://org/model@feature%2Fx").revision
'feature/x'
>>> parse_hub_uri("hf://org/model").pinned("0" * 40, "model.safetensors")
'hf://org/model@0000000000000000000000000000000000000000/model.safetensors'
"""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import Literal, NamedTuple
from urllib.parse import unquote

from ..errors import InputError

__all__ = ["HubRef", "RepoType", "parse_hub_uri", "is_hub_uri", "ref_of_cached_path",
           "looks_like_repo_id", "COMMIT_RE"]

RepoType = Literal["model", "dataset", "space"]

PROTOCOL = "hf://"
_PLURAL: dict[str, RepoType] = {"models": "model", "datasets": "dataset", "spaces": "space"}
_PREFIX: dict[str, str] = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_UNSUPPORTED = {"kernels": "kernel repos", "buckets": "buckets"}
_SINGULAR = {"model": "models", "dataset": "datasets", "space": "spaces", "kernel": "kernels",
             "bucket": "buckets"}
_SPECIAL_REF = re.compile(r"^refs/(?:convert/[\w.-]+|pr/\d+)")
# huggingface_hub utils/_validators.py REPO_ID_REGEX (ASCII), plus its "--", ".." and ".git" rules
_NAME = re.compile(r"\b[\w\-.]{1,96}\b", re.ASCII)
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
"""A full commit hash (what a revision is pinned to)."""
# <cache>/<type>s--<ns>--<name>/snapshots/<commit>/<path> (huggingface_hub's cache layout)
_CACHED = re.compile(r"(?:^|/)(models|datasets|spaces)--([^/]+?)--([^/]+)/snapshots/"
                     r"([0-9a-f]{40})/(.+)$")


class HubRef(NamedTuple):
    """A location on the Hub: a repo, optionally a revision and a path inside it."""

    type: RepoType
    repo_id: str
    """``namespace/name``."""
    revision: str | None = None
    """As written (decoded); None: the default branch."""
    path: str = ""
    """Inside the repo, no leading or trailing slash; "" is the repo's root."""

    @property
    def uri(self) -> str:
        """The canonical ``hf://`` spelling (type prefix only when it is not a model)."""
        return self._spell(self.revision, self.path)

    def pinned(self, commit: str, path: str | None = None) -> str:
        """``hf://[TYPE/]NS/NAME@<commit>/<path>``: what a manifest records for a file."""
        return self._spell(commit, self.path if path is None else path)

    def _spell(self, revision: str | None, path: str) -> str:
        out = f"{PROTOCOL}{_PREFIX[self.type]}{self.repo_id}"
        if revision is not None:
            if "/" in revision and _SPECIAL_REF.fullmatch(revision) is None:
                revision = revision.replace("/", "%2F")
            out += f"@{revision}"
        return out + (f"/{path}" if path else "")

    @property
    def url_prefix(self) -> str:
        """``""``, ``datasets/`` or ``spaces/``: the repo's place in Hub URLs."""
        return _PREFIX[self.type]

    def web_url(self, endpoint: str) -> str:
        """The repo's page on the Hub at ``endpoint``."""
        return f"{endpoint.rstrip('/')}/{self.url_prefix}{self.repo_id}"


def is_hub_uri(s: object) -> bool:
    """True for a string that starts with ``hf://`` (valid or not: parsing says what is wrong)."""
    return isinstance(s, str) and s.startswith(PROTOCOL)


def _bad(uri: str, why: str) -> InputError:
    return InputError(f"{uri}: not a Hub location ({why}); expected "
                      "hf://[datasets/|spaces/]NAMESPACE/NAME[@REVISION][/PATH]")


def _check_repo_id(uri: str, repo_id: str) -> None:
    if repo_id.count("/") != 1:
        raise _bad(uri, f"the repo id must be 'namespace/name', got {repo_id!r}")
    for part in repo_id.split("/"):
        if not _NAME.fullmatch(part):
            raise _bad(uri, f"{repo_id!r} must use letters, digits, '-', '_' or '.', and not "
                            "start or end with '-' or '.'")
    if "--" in repo_id or ".." in repo_id or repo_id.endswith(".git"):
        raise _bad(uri, f"{repo_id!r} may not contain '--' or '..' or end with '.git'")


def parse_hub_uri(uri: str) -> HubRef:
    """Parse ``hf://[TYPE/]NS/NAME[@REVISION][/PATH]`` (see the module's doc); raises
    InputError naming what is wrong."""
    if not is_hub_uri(uri):
        raise _bad(uri, "it does not start with hf://")
    body = uri[len(PROTOCOL):]
    if not body:
        raise _bad(uri, "nothing after hf://")
    first, slash, rest = body.partition("/")
    rtype: RepoType = "model"
    if first in _UNSUPPORTED:
        raise InputError(f"{uri}: {_UNSUPPORTED[first]} hold no checkpoints weightvis reads "
                         "(use a model, dataset or Space repo)")
    if first in _PLURAL:
        if not slash or not rest:
            raise _bad(uri, f"nothing after '{first}/'")
        rtype, body = _PLURAL[first], rest
    elif first in _SINGULAR:
        raise _bad(uri, f"the type prefix is plural: '{_SINGULAR[first]}/', not '{first}/'")
    location = body.strip("/")
    if not location:
        raise _bad(uri, "no repository id")
    at = location.find("@")
    revision: str | None = None
    if at == -1 or location[:at].count("/") > 1:  # an '@' deeper down is part of a file name
        parts = location.split("/", 2)
        if len(parts) < 2:
            raise _bad(uri, f"the repo id must be 'namespace/name', got {location!r}")
        repo_id, path = f"{parts[0]}/{parts[1]}", parts[2] if len(parts) > 2 else ""
    else:
        repo_id, rev_path = location[:at], location[at + 1:]
        _check_repo_id(uri, repo_id)
        special = _SPECIAL_REF.search(rev_path)
        if special is not None:
            revision, path = special.group(), rev_path[special.end():].removeprefix("/")
        else:
            revision, _, path = rev_path.partition("/")
        revision = unquote(revision)
        if not revision:
            raise _bad(uri, "empty revision after '@'")
    _check_repo_id(uri, repo_id)
    if path.startswith("/") or "//" in path:
        raise _bad(uri, f"empty segment in the path {path!r}")
    return HubRef(rtype, repo_id, revision, path)


def ref_of_cached_path(path: str | PurePath) -> tuple[HubRef, str] | None:
    """``(ref, commit)`` when ``path`` is a file of a Hugging Face cache snapshot
    (``…/models--NS--NAME/snapshots/<commit>/<path>``, not resolved: snapshot files are
    symlinks), else None. ``ref.path`` is the file's path in the repo.

    >>> ref_of_cached_path("/c/hub/models--org--m/snapshots/" + "a" * 40 + "/x/y.gguf")[0]
    HubRef(type='model', repo_id='org/m', revision=None, path='x/y.gguf')
    >>> ref_of_cached_path("/data/model.safetensors") is None
    True
    """
    m = _CACHED.search(PurePath(path).as_posix())
    if m is None:
        return None
    return HubRef(_PLURAL[m.group(1)], f"{m.group(2)}/{m.group(3)}", None, m.group(5)), m.group(4)


def looks_like_repo_id(s: str) -> bool:
    """``NS/NAME`` and nothing else: what a user may have meant as ``hf://NS/NAME``.

    >>> looks_like_repo_id("HuggingFaceTB/SmolLM2-135M"), looks_like_repo_id("./a/b")
    (True, False)
    """
    parts = s.split("/")
    return len(parts) == 2 and all(_NAME.fullmatch(p) and not p.startswith(".") for p in parts)
