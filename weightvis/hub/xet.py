"""Which Xet xorb stores each byte of a Hub file (``--show-xet-xorbs``), from the file's
reconstruction terms.

The Hub stores a large file as content-defined chunks packed into *xorbs* (~64 MiB each) of its
Xet storage service (CAS); a file is a list of *terms*, each a run of chunks of one xorb. Three
requests per run (HUB.md §4; the reference tool is arbvis ``src/xet.rs``):

1. the files' xet hashes: ``POST /api/{type}s/{repo}/paths-info/{commit}`` (``get_paths_info``:
   ``RepoFile.xet_hash``; an LFS or plain git file has none, which is an error here);
2. a read token for the repo at the commit: ``GET /api/{type}s/{repo}/xet-read-token/{commit}``
   with the user's Hub token; the answer's headers ``X-Xet-Cas-Url``, ``X-Xet-Access-Token``,
   ``X-Xet-Token-Expiration`` (as huggingface_hub reads them; arbvis reads the same fields from
   the JSON body, the fallback here);
3. per file, ``GET {casUrl}/v2/reconstructions/{xet_hash}`` with ``Authorization: Bearer
   <CAS token>``: ``{offset_into_first_range, terms: [{hash, unpacked_length, range}], ...}``.
   Term i covers the next ``unpacked_length`` bytes of the file, the first term starting
   ``offset_into_first_range`` bytes into its own bytes. An answer that covers less than the
   file is continued with ``Range: bytes=<covered>-<last>`` (at most
   ``WEIGHTVIS_XET_PAGES`` requests per file, default 64).

No xorb data is read: the terms only. Tokens are never put into a message (calls.py); the CAS
token is used for the one request and dropped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from ..errors import HubError, InputError
from .calls import call, endpoint, env_int, hf, offline
from .remote import Resolved, resolve
from .uri import is_hub_uri

__all__ = ["XorbRun", "XetFile", "xet_files", "check_sources"]

_HASH = re.compile(r"^[0-9a-fA-F]{64}$")
CAS_TIMEOUT = 30.0
"""Seconds to wait for one answer of the Xet storage service."""


class XorbRun(NamedTuple):
    """Bytes ``start`` .. ``end - 1`` of a file are stored in xorb ``xorb`` (one term).

    >>> XorbRun(0, 200_000, "ab" * 32).end
    200000
    """

    start: int
    end: int
    xorb: str
    """The xorb's hash (64 hex digits, as the CAS spells it)."""


class XetFile(NamedTuple):
    """A Hub file stored with Xet and the xorb of each of its bytes."""

    path: str
    """Its path in the repo."""
    uri: str
    """Its pinned location ``hf://NS/NAME@<commit>/<path>``."""
    xet_hash: str
    size: int
    runs: tuple[XorbRun, ...]
    """In file order, covering 0 .. size exactly."""


class _Cas(NamedTuple):
    url: str
    token: str


def check_sources(sources: Sequence[str], *, stream: bool) -> None:
    """Refuse what ``--show-xet-xorbs`` cannot show, before anything is read."""
    local = [s for s in sources if not is_hub_uri(s)]
    if local:
        raise InputError(f"{local[0]}: --show-xet-xorbs shows how the Hugging Face Hub stores a "
                         "file with Xet; it needs hf://NS/NAME[@REVISION][/PATH], not a local "
                         "path")
    if stream:
        raise InputError(f"{sources[0]}: --show-xet-xorbs draws every byte of the files: "
                         "render it from downloaded files (without --stream)")


def xet_files(sources: Sequence[str]) -> list[XetFile]:
    """The xorb runs of every checkpoint file of the ``hf://`` ``sources`` (see the module's
    doc); a file not stored with Xet, a refused token or a failed reconstruction query is a
    HubError naming the file."""
    out: list[XetFile] = []
    for s in sources:
        if offline():
            raise HubError(f"{s}: --show-xet-xorbs asks the Hub's Xet storage for the files' "
                           "reconstruction terms, which HF_HUB_OFFLINE=1 forbids")
        res = resolve(s)
        hashes = _xet_hashes(res)
        cas = _read_token(res)
        for f in res.files:
            out.append(XetFile(f.path, res.uri(f.path), hashes[f.path], f.size,
                               _runs(res, f.path, f.size, hashes[f.path], cas)))
    return out


def _xet_hashes(res: Resolved) -> dict[str, str]:
    """path -> xet hash of each of the resolution's files (one paths-info request)."""
    ref, commit = res.ref, res.commit
    paths = [f.path for f in res.files]
    api = hf().HfApi()
    infos = call(ref, api.get_paths_info, ref.repo_id, paths, revision=commit,
                 repo_type=ref.type, path=paths[0], commit=commit)
    by_path = {i.path: i for i in infos}
    out: dict[str, str] = {}
    for p in paths:
        info = by_path.get(p)
        xet_hash = getattr(info, "xet_hash", None)
        if not isinstance(xet_hash, str) or not _HASH.match(xet_hash):
            how = ("an LFS file" if getattr(info, "lfs", None) is not None
                   else "a plain git file" if info is not None else "not listed")
            raise HubError(f"{res.uri(p)}: not stored with Xet ({how}); --show-xet-xorbs needs "
                           "a file the Hub stores with Xet")
        out[p] = xet_hash.lower()
    return out


def _read_token(res: Resolved) -> _Cas:
    """The CAS URL and a read token for the repo at the commit (one request)."""
    ref, commit = res.ref, res.commit
    url = f"{endpoint()}/api/{ref.type}s/{ref.repo_id}/xet-read-token/{commit}"
    resp = call(ref, _get, url, hf().utils.build_hf_headers(), commit=commit)
    h = resp.headers
    cas_url, token = h.get("X-Xet-Cas-Url"), h.get("X-Xet-Access-Token")
    if not cas_url or not token:
        body = _json(resp)
        cas_url = body.get("casUrl") if isinstance(body, dict) else None
        token = body.get("accessToken") if isinstance(body, dict) else None
    if not isinstance(cas_url, str) or not isinstance(token, str) or not cas_url.startswith(
            ("http://", "https://")):
        raise HubError(f"{ref.uri}: the Hub's xet-read-token answer for {ref.repo_id} at "
                       f"{commit} names no Xet storage service (no X-Xet-Cas-Url / "
                       "X-Xet-Access-Token over http(s))")
    return _Cas(cas_url.rstrip("/"), token)


def _get(url: str, headers: dict[str, str]) -> Any:
    resp = hf().utils.get_session().get(url, headers=headers, timeout=CAS_TIMEOUT)
    hf().utils.hf_raise_for_status(resp)
    return resp


def _json(resp: Any) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def _runs(res: Resolved, path: str, size: int, xet_hash: str, cas: _Cas
          ) -> tuple[XorbRun, ...]:
    """The file's xorb runs from its reconstruction terms, asked for in pages until they cover
    the file."""
    where = res.uri(path)
    url = f"{cas.url}/v2/reconstructions/{xet_hash}"
    pages = env_int("WEIGHTVIS_XET_PAGES", 64, 1)
    runs: list[XorbRun] = []
    covered = 0
    for _ in range(pages):
        headers = {"Authorization": f"Bearer {cas.token}"}
        if covered:
            headers["Range"] = f"bytes={covered}-{size - 1}"
        try:
            resp = call(res.ref, _get, url, headers, path=path, commit=res.commit)
        except HubError as e:
            status = getattr(getattr(e.__cause__, "response", None), "status_code", None)
            why = f"HTTP {status}" if isinstance(status, int) else "no answer"
            raise HubError(f"{where}: the Xet storage service did not give the file's "
                           f"reconstruction terms ({why} for xet hash {xet_hash[:12]}…)"
                           ) from None
        got = _terms(_json(resp), where, covered)
        if not got:
            break
        runs += got
        covered = runs[-1].end
        if covered >= size:
            break
    if covered != size:
        raise HubError(f"{where}: the Xet reconstruction terms cover {covered:,} bytes, the file "
                       f"has {size:,}")
    return tuple(runs)


def _terms(doc: Any, where: str, start: int) -> list[XorbRun]:
    """One reconstruction answer as runs from byte ``start`` on."""
    bad = HubError(f"{where}: the Xet storage service answered something that is not a file "
                   "reconstruction (expected terms with a hash and an unpacked_length)")
    if not isinstance(doc, dict) or not isinstance(doc.get("terms"), list):
        raise bad
    skip = doc.get("offset_into_first_range", 0)
    if not isinstance(skip, int) or skip < 0:
        raise bad
    runs: list[XorbRun] = []
    at = start
    for term in doc["terms"]:
        xorb = term.get("hash") if isinstance(term, dict) else None
        n = term.get("unpacked_length") if isinstance(term, dict) else None
        if not isinstance(xorb, str) or not _HASH.match(xorb) or not isinstance(n, int) \
                or isinstance(n, bool) or n <= 0:
            raise bad
        n -= skip
        skip = 0
        if n <= 0:
            raise bad
        runs.append(XorbRun(at, at + n, xorb.lower()))
        at += n
    return runs
