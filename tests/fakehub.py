"""A fake Hugging Face Hub on loopback, for testing real huggingface_hub client calls offline.

Taken from the research prototype (../shared/HUB.md §2) and owned by the test suite. Standard
library only; longer than the package's ~450-line modules because it is one server with the Hub's
whole read and write surface (repo API, tree listings, resolve, LFS, commits, xet tokens), kept in
one file so a test can read what the "Hub" does. Two listeners on ephemeral ports:

* the *hub* on 127.0.0.1: repo API, /resolve, LFS batch, commit, xet token routes;
* a *cdn* on 127.0.0.2: LFS blobs (GET/HEAD with Range) and LFS PUT uploads.

The CDN has another host name because huggingface_hub 1.x decides by host name (2.x by
scheme+host+port) whether a HEAD redirect leaves the Hub: the X-Repo-Commit/X-Linked-* headers
must be read from the 302 itself, and the Authorization header must not follow it (the CDN logs
whether it got one, so tests can assert that the token never left the hub).

Bounded: a server stops by itself after ``lifetime`` seconds (default 600), so a hung test
leaves no listener behind.

Set HF_ENDPOINT (and HF_HOME) *before* importing huggingface_hub: the library reads them at
import time, and build_hf_headers() fetches {HF_ENDPOINT}/api/agent-harnesses once a day
(answered here), so a test that only passes endpoint= would still try to reach the public Hub.

    with FakeHub() as hub:
        hub.add_repo("org/tiny", files={"config.json": b"{}", "model.safetensors": blob})
        env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HOME": tmp,
               "HF_TOKEN": "hf_test_token"}
        subprocess.run([sys.executable, "-m", "weightvis", "hf://org/tiny", "--out", out],
                       env=env)

Uploads: with hf_xet installed, huggingface_hub >= 1 sends every file the preupload answer calls
"lfs" through xet (GET .../xet-write-token/{rev}, no LFS batch). Three ways to keep that offline:
``lfs_rule=lambda *a: False`` (everything inline in the commit, every version),
HF_HUB_DISABLE_XET=1 (legacy LFS batch + basic PUT), or ``xet_cas_url="local://<dir>"`` (hf_xet's
own simulated CAS writes xorbs and shards under <dir>/xet; verified with hf_xet 1.8.0) with
``accept_unknown_lfs``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
GITATTRIBUTES = (
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    b"*.gguf filter=lfs diff=lfs merge=lfs -text\n"
)
XET_TOKEN = "fake-xet-token"


def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {size}\n".encode()


def default_lfs_rule(path: str, size: int, sample: bytes) -> bool:
    """Roughly the Hub's choice: big, binary, or matched by the default .gitattributes."""
    return (
        size > 10_000_000
        or b"\0" in sample
        or path.endswith((".safetensors", ".gguf", ".png", ".bin"))
    )


@dataclass
class Entry:
    size: int
    content: bytes | None = None  # regular (git) file
    sha256: str | None = None  # LFS / xet file

    @property
    def oid(self) -> str:  # the git blob oid (of the pointer file for LFS files)
        if self.sha256 is not None:
            return git_oid(lfs_pointer(self.sha256, self.size))
        return git_oid(self.content or b"")

    @property
    def upload_oid(
        self,
    ) -> str:  # what the preupload answer compares with (sha1 regular, sha256 LFS)
        return self.sha256 or git_oid(self.content or b"")


@dataclass
class Repo:
    type: str
    id: str
    private: bool = False
    gated: bool = False
    sdk: str | None = None
    commits: dict = field(
        default_factory=dict
    )  # sha -> {"parent", "files": {path: Entry}, "msg", "time"}
    refs: dict = field(default_factory=dict)  # branch -> sha


class HttpError(Exception):
    def __init__(self, status, message="", code=None, headers=None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """A client that hung up (a cut download, a killed test process) is not news."""
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class FakeHub:
    def __init__(
        self,
        *,
        tokens=None,
        orgs=("org",),
        page_size=1000,
        lfs_rule=None,
        cdn_host="127.0.0.2",
        lifetime=600.0,
    ):
        self.lifetime = lifetime  # seconds: the servers stop by themselves after this long
        self.tokens = dict(tokens or {"hf_test_token": "tester"})  # token -> user name
        self.orgs = set(orgs)  # namespaces every valid token may write to
        self.page_size = page_size  # tree listing page size (Link: rel="next" pagination)
        # (path, size, first 512 bytes) -> upload as LFS?
        self.lfs_rule = lfs_rule or default_lfs_rule
        self.cdn_host = cdn_host
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs: dict[str, bytes] = {}  # sha256 -> bytes (LFS store, served by the CDN)
        self.log: list[dict] = []  # one entry per request: kind, method, path, query, range, auth
        self.faults: list[list] = []  # [method, compiled regex, remaining, status, headers]
        self.xet_cas_url: str | None = None  # "local://<dir>" -> hf_xet's simulated CAS
        self.xet_hashes: dict[str, str] = {}  # sha256 -> xet file hash (advertised on HEAD / tree)
        # xet hash -> terms, at {endpoint}/cas/v2/reconstructions/
        self.reconstructions: dict[str, list] = {}
        self.reconstruction_page: int | None = None  # terms per answer (None: all of them)
        # commit lfsFile oids never PUT here (they went to the xet CAS)
        self.accept_unknown_lfs = False
        self.truncate_next = 0  # cut this many CDN GET bodies half-way (exercises resume)
        self.lock = threading.RLock()
        self._n = 0
        self._servers: list = []
        self._timer: threading.Timer | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        hub = self
        api_cls = type("HubHandler", (Handler,), {"store": hub, "kind": "hub"})
        cdn_cls = type("CdnHandler", (Handler,), {"store": hub, "kind": "cdn"})
        self._api = _Server(("127.0.0.1", 0), api_cls)
        self._cdn = _Server((self.cdn_host, 0), cdn_cls)
        for s in (self._api, self._cdn):
            s.daemon_threads = True
            t = threading.Thread(
                target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            t.start()
            self._servers.append((s, t))
        self.endpoint = f"http://127.0.0.1:{self._api.server_address[1]}"
        self.cdn_url = f"http://{self.cdn_host}:{self._cdn.server_address[1]}"
        self._timer = threading.Timer(self.lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self):
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.cancel()
        with self.lock:
            servers, self._servers = list(self._servers), []
        for s, t in servers:
            s.shutdown()
            s.server_close()
            t.join(timeout=5)

    # -- fixtures -------------------------------------------------------------------------------
    def add_repo(
        self, repo_id, files=None, *, repo_type="model", private=False, gated=False, sdk=None
    ):
        with self.lock:
            repo = Repo(repo_type, repo_id, private, gated, sdk)
            self.repos[(repo_type, repo_id)] = repo
            init = {".gitattributes": GITATTRIBUTES}
            if repo_type == "space":
                init["README.md"] = (
                    f"---\ntitle: {repo_id.split('/')[1]}\nsdk: {sdk}\n---\n".encode()
                )
            self.commit(
                repo, "main", {p: self.entry(p, d) for p, d in init.items()}, "initial commit"
            )
            if files:
                self.commit(
                    repo, "main", {p: self.entry(p, d) for p, d in files.items()}, "add files"
                )
            return repo

    def add_xet_file(self, repo, path, data):
        """Store `data` in the local xet CAS too (needs xet_cas_url="local://..." and hf_xet),
        so that HEAD advertises X-Xet-Hash and hf_hub_download takes the xet path."""
        # hf_xet >= 1.6 session API; the token route hands out xet_cas_url
        from hf_xet import XetSession

        token = next(iter(self.tokens))
        url = f"{self.endpoint}/api/{repo.type}s/{repo.id}/xet-write-token/main"
        with XetSession().new_upload_commit(
            token_refresh_url=url, token_refresh_headers={"Authorization": f"Bearer {token}"}
        ) as c:
            handle = c.start_upload_bytes(data)
        info = handle.result().xet_info
        sha = hashlib.sha256(data).hexdigest()
        self.lfs[sha] = data
        self.xet_hashes[sha] = info.hash
        return self.commit(repo, "main", {path: Entry(len(data), sha256=sha)}, f"add {path} (xet)")

    def add_xet_terms(self, repo, path, data, terms):
        """Commit `data` as a file the Hub stores with Xet, made of `terms` (the CAS answer's
        ``[{"hash", "unpacked_length", "range"}]``, served at {endpoint}/cas/v2/reconstructions/
        with xet_cas_url = f"{endpoint}/cas"). Its bytes are served from the CDN as an LFS file's
        (download it with HF_HUB_DISABLE_XET=1: this CAS holds no xorb data); HEAD, tree and
        paths-info advertise its xet hash, as the Hub does for xet files. Returns the commit."""
        assert sum(t["unpacked_length"] for t in terms) == len(data), "terms must cover the file"
        sha = hashlib.sha256(data).hexdigest()
        file_hash = hashlib.sha256(b"xet file " + data).hexdigest()
        with self.lock:
            self.lfs[sha] = data
            self.xet_hashes[sha] = file_hash
            self.reconstructions[file_hash] = [dict(t) for t in terms]
        return self.commit(repo, "main", {path: Entry(len(data), sha256=sha)}, f"add {path} (xet)")

    def inject(self, method, path_regex, status, count=1, headers=None):
        """The next `count` requests matching method and path get `status` (e.g. 429 +
        Retry-After)."""
        self.faults.append([method, re.compile(path_regex), count, status, headers or {}])

    def entry(self, path, data: bytes) -> Entry:
        if self.lfs_rule(path, len(data), data[:512]):
            sha = hashlib.sha256(data).hexdigest()
            self.lfs[sha] = data
            return Entry(len(data), sha256=sha)
        return Entry(len(data), content=data)

    def commit(self, repo, branch, changes, msg, deletions=()):
        with self.lock:
            parent = repo.refs.get(branch)
            files = dict(repo.commits[parent]["files"]) if parent else {}
            for d in deletions:
                for p in [p for p in files if p == d or p.startswith(d.rstrip("/") + "/")]:
                    del files[p]
            files.update(changes)
            self._n += 1
            seed = f"{repo.id}{parent}{msg}{self._n}{sorted((p, e.oid) for p, e in files.items())}"
            sha = hashlib.sha1(seed.encode()).hexdigest()
            repo.commits[sha] = {"parent": parent, "files": files, "msg": msg, "time": time.time()}
            repo.refs[branch] = sha
            return sha

    def files(self, repo_id, repo_type="model", rev="main") -> dict[str, Entry]:
        repo = self.repos[(repo_type, repo_id)]
        return repo.commits[repo.refs.get(rev, rev)]["files"]

    def file_bytes(self, repo_id, path, repo_type="model", rev="main") -> bytes | None:
        e = self.files(repo_id, repo_type, rev)[path]
        return (
            e.content if e.sha256 is None else self.lfs.get(e.sha256)
        )  # None: only in the xet CAS


_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")
_API = re.compile(
    r"^/api/(models|datasets|spaces)/([^/]+/[^/]+?)"
    r"(?:/(revision|tree|paths-info|preupload|commit|refs|xet-read-token|xet-write-token)(?:/(.*))?)?$"
)
_LFS = re.compile(r"^/(datasets/|spaces/)?([^/]+/[^/]+?)\.git/info/lfs/objects/(batch|verify)$")
_RESOLVE = re.compile(r"^/(datasets/|spaces/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_URL_TYPE = {"datasets/": "dataset", "spaces/": "space"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response carries Content-Length
    store: FakeHub
    kind: str

    def log_message(self, *a):
        pass

    # -- plumbing ---------------------------------------------------------------------------------
    def _body(self) -> bytes:
        """Read the request body exactly once (a second read would block on the open socket)."""
        if hasattr(self, "_cached_body"):
            return self._cached_body
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                n = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                out += self.rfile.read(n)
                self.rfile.readline()
            body = bytes(out)
        else:
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
        self._cached_body = body
        return body

    def _send(self, status, body=b"", headers=None, ctype="application/json"):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        self.send_response(status)
        for k, v in {
            "Content-Type": ctype,
            "Content-Length": str(len(body)),
            **(headers or {}),
        }.items():
            self.send_header(k, str(v))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _user(self):
        auth = self.headers.get("Authorization", "")
        if not auth:
            return None
        tok = auth.removeprefix("Bearer ").strip()
        if tok not in self.store.tokens:
            raise HttpError(401, "Invalid credentials in Authorization header")
        return self.store.tokens[tok]

    def _handle(self):
        self.__dict__.pop(
            "_cached_body", None
        )  # one handler instance serves a whole keep-alive connection
        url = urlsplit(self.path)
        st = self.store
        st.log.append(
            {
                "kind": self.kind,
                "method": self.command,
                "path": url.path,
                "query": url.query,
                "range": self.headers.get("Range"),
                "auth": "Authorization" in self.headers,
            }
        )
        try:
            self._body()  # always drain the body, also for faults and errors (keep-alive)
            with st.lock:
                fault = next(
                    (
                        f
                        for f in st.faults
                        if f[2] > 0 and f[0] == self.command and f[1].search(unquote(url.path))
                    ),
                    None,
                )
                if fault:
                    fault[2] -= 1
            if fault:
                raise HttpError(fault[3], "injected fault", headers=fault[4])
            if self.kind == "cdn":
                return self._cdn(unquote(url.path))
            return self._route(unquote(url.path), parse_qs(url.query), url.path)
        except (
            Exception
        ) as e:  # a bug here must surface as a 500 in the test, not as a dropped connection
            if not isinstance(e, HttpError):
                import traceback

                traceback.print_exc()
                e = HttpError(500, f"fake hub bug: {type(e).__name__}: {e}")
            h = dict(e.headers)
            if e.code:
                h["X-Error-Code"] = e.code
            if e.message:
                h["X-Error-Message"] = e.message
            self._send(e.status, {"error": e.message}, h)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _handle

    def _repo(self, rtype, rid, *, write=False):
        user = self._user()
        repo = self.store.repos.get((rtype, rid))
        if repo is None or (repo.private and user is None):
            # the Hub answers 401 to anonymous requests for missing *and* private repos alike
            raise HttpError(401 if user is None else 404, "Repository not found", "RepoNotFound")
        if write and (
            user is None or (rid.split("/")[0] != user and rid.split("/")[0] not in self.store.orgs)
        ):
            raise HttpError(403, "You don't have the rights to write to this repo")
        return repo, user

    @staticmethod
    def _rev(repo, rev):
        rev = unquote(rev)
        if rev in repo.refs:
            return repo.refs[rev]
        if rev in repo.commits:
            return rev
        raise HttpError(404, f"Invalid rev id: {rev}", "RevisionNotFound")

    # -- hub routes -------------------------------------------------------------------------------
    def _route(self, path, qs, raw_path):
        st, m = self.store, self.command
        if path == "/api/whoami-v2":
            user = self._user()
            if user is None:
                raise HttpError(401, "Invalid username or password.")
            return self._send(
                200,
                {
                    "type": "user",
                    "name": user,
                    "orgs": [{"name": o} for o in sorted(st.orgs)],
                    "auth": {"type": "access_token", "accessToken": {"role": "write"}},
                },
            )
        if path == "/api/agent-harnesses":  # build_hf_headers() fetches this once a day
            return self._send(200, {"standardEnvVars": [], "harnesses": {}})
        if path == "/api/repos/create" and m == "POST":
            return self._create_repo(json.loads(self._body() or b"{}"))
        if path == "/api/validate-yaml" and m == "POST":  # every commit that touches README.md
            return self._send(200, {"errors": [], "warnings": []})
        mo = re.match(r"^/cas/v[12]/reconstructions/([0-9a-f]{64})$", path)
        if mo:  # a CAS reconstruction query: terms only, no xorb data
            if self.headers.get("Authorization") != f"Bearer {XET_TOKEN}":
                raise HttpError(401, "bad CAS token")
            if mo[1] not in st.reconstructions:
                raise HttpError(404, "unknown file hash")
            return self._send(200, self._reconstruction(st.reconstructions[mo[1]]))
        mo = _API.match(path)
        if mo:
            rtype, rid, op, rest = TYPES[mo[1]], mo[2], mo[3], mo[4] or ""
            if op in (None, "revision"):
                return self._info(rtype, rid, rest or "main")
            if op == "tree":
                rev, _, sub = rest.partition("/")
                return self._tree(rtype, rid, rev, sub, qs, raw_path)
            if op == "paths-info":
                return self._paths_info(rtype, rid, rest)
            if op == "preupload":
                return self._preupload(rtype, rid, rest)
            if op == "commit":
                return self._commit(rtype, rid, rest)
            if op == "refs":
                repo, _ = self._repo(rtype, rid)
                return self._send(
                    200,
                    {
                        "branches": [
                            {"name": b, "ref": f"refs/heads/{b}", "targetCommit": s}
                            for b, s in repo.refs.items()
                        ],
                        "tags": [],
                        "converts": [],
                    },
                )
            return self._xet_token(rtype, rid, op)
        mo = _LFS.match(path)
        if mo and m == "POST":
            return self._lfs(_URL_TYPE.get(mo[1] or "", "model"), mo[2], mo[3])
        mo = _RESOLVE.match(raw_path)
        if mo and m in ("GET", "HEAD"):
            return self._resolve(
                _URL_TYPE.get(mo[1] or "", "model"), unquote(mo[2]), unquote(mo[3]), unquote(mo[4])
            )
        raise HttpError(404, f"no route for {m} {path}")

    def _create_repo(self, body):
        user = self._user()
        if user is None:
            raise HttpError(401, "You must be authenticated")
        ns = body.get("organization") or user
        if ns != user and ns not in self.store.orgs:
            raise HttpError(403, "You don't have the rights to create a repo in this namespace")
        rtype = body.get("type") or "model"
        rid = f"{ns}/{body['name']}"
        if rtype == "space" and body.get("sdk") not in ("gradio", "streamlit", "docker", "static"):
            raise HttpError(400, "sdk is required for spaces")
        url = f"{self.store.endpoint}/{PREFIX[rtype]}{rid}"
        if (
            rtype,
            rid,
        ) in self.store.repos:  # create_repo(exist_ok=True) reads "url" from this body
            return self._send(
                409,
                {"error": "You already created this repo", "url": url},
                {"X-Error-Message": "You already created this repo"},
            )
        private = body.get("visibility") == "private" or bool(body.get("private"))
        self.store.add_repo(rid, repo_type=rtype, private=private, sdk=body.get("sdk"))
        return self._send(200, {"url": url, "name": rid, "id": rid})

    def _info(self, rtype, rid, rev):
        repo, _ = self._repo(rtype, rid)
        sha = self._rev(repo, rev)
        c = repo.commits[sha]
        out = {
            "_id": rid,
            "id": rid,
            "author": rid.split("/")[0],
            "sha": sha,
            "private": repo.private,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "likes": 0,
            "tags": [],
            "lastModified": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(c["time"])),
            "siblings": [{"rfilename": p} for p in sorted(c["files"])],
        }
        if rtype == "space":
            out.update({"sdk": repo.sdk, "runtime": {"stage": "RUNNING"}})
        self._send(200, out)

    def _tree_entry(self, path, e):
        d = {"type": "file", "oid": e.oid, "size": e.size, "path": path}
        if e.sha256:
            d["lfs"] = {
                "oid": e.sha256,
                "size": e.size,
                "pointerSize": len(lfs_pointer(e.sha256, e.size)),
            }
            if e.sha256 in self.store.xet_hashes:
                d["xetHash"] = self.store.xet_hashes[e.sha256]
        return d

    def _tree(self, rtype, rid, rev, sub, qs, raw_path):
        repo, _ = self._repo(rtype, rid)
        files = repo.commits[self._rev(repo, rev)]["files"]
        recursive = qs.get("recursive", ["false"])[0].lower() == "true"
        pre = sub.strip("/") + "/" if sub.strip("/") else ""
        if pre and not any(p.startswith(pre) for p in files):
            raise HttpError(404, f"{sub} does not exist on {rev}", "EntryNotFound")
        items: dict[str, dict] = {}
        for p, e in files.items():
            if not p.startswith(pre):
                continue
            parts = p[len(pre) :].split("/")
            for i in range(1, len(parts) if recursive else min(2, len(parts))):
                fp = pre + "/".join(parts[:i])
                items.setdefault(
                    fp,
                    {
                        "type": "directory",
                        "oid": hashlib.sha1(fp.encode()).hexdigest(),
                        "size": 0,
                        "path": fp,
                    },
                )
            if recursive or len(parts) == 1:
                items[p] = self._tree_entry(p, e)
        ordered = [items[k] for k in sorted(items)]
        start = int(qs.get("cursor", ["0"])[0])
        end = start + self.store.page_size
        h = {}
        if end < len(ordered):
            h["Link"] = (
                f"<{self.store.endpoint}{raw_path}?recursive={str(recursive).lower()}"
                f'&expand=false&cursor={end}>; rel="next"'
            )
        self._send(200, ordered[start:end], h)

    def _paths_info(self, rtype, rid, rev):
        repo, _ = self._repo(rtype, rid)
        files = repo.commits[self._rev(repo, rev)]["files"]
        body = self._body().decode()
        paths = (
            json.loads(body)["paths"] if body.startswith("{") else parse_qs(body).get("paths", [])
        )
        out = []
        for p in paths:
            if p in files:
                out.append(self._tree_entry(p, files[p]))
            elif any(f.startswith(p.rstrip("/") + "/") for f in files):
                out.append(
                    {
                        "type": "directory",
                        "oid": hashlib.sha1(p.encode()).hexdigest(),
                        "size": 0,
                        "path": p,
                    }
                )
        self._send(200, out)

    def _resolve(self, rtype, rid, rev, fpath):
        repo, user = self._repo(rtype, rid)
        sha = self._rev(repo, rev)
        if repo.gated and user is None:
            raise HttpError(
                401,
                f"Access to model {rid} is restricted. You must have access to it and be "
                "authenticated to access it. Please log in.",
                "GatedRepo",
            )
        e = repo.commits[sha]["files"].get(fpath)
        if e is None:
            raise HttpError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": sha})
        h = {"X-Repo-Commit": sha, "Accept-Ranges": "bytes", "ETag": f'"{e.oid}"'}
        xh = self.store.xet_hashes.get(e.sha256 or "")
        if xh and self.store.xet_cas_url:
            route = f"{self.store.endpoint}/api/{rtype}s/{rid}/xet-read-token/{sha}"
            h.update(
                {
                    "X-Xet-Hash": xh,
                    "X-Xet-Refresh-Route": route,
                    "Link": f'<{route}>; rel="xet-auth"',
                }
            )
        if e.sha256 is not None:  # LFS: 302 to the CDN host; the metadata travels on the 302 itself
            h.update(
                {
                    "X-Linked-Etag": f'"{e.sha256}"',
                    "X-Linked-Size": str(e.size),
                    "Location": f"{self.store.cdn_url}/lfs/{e.sha256}?sig=fake",
                }
            )
            return self._send(302, b"", h, "text/plain")
        self._send_ranged(e.content or b"", h)

    def _send_ranged(self, data, h):
        rng = self.headers.get("Range")
        status, body = 200, data
        if rng:
            n, mo = len(data), _RANGE.match(rng.strip())
            if not mo or mo[1] == mo[2] == "":
                raise HttpError(416, "bad range", headers={"Content-Range": f"bytes */{n}"})
            if mo[1] == "":
                a, b = max(0, n - int(mo[2])), n - 1
            else:
                a, b = int(mo[1]), min(int(mo[2]) if mo[2] else n - 1, n - 1)
            if a >= n or a > b:
                raise HttpError(
                    416, "range not satisfiable", headers={"Content-Range": f"bytes */{n}"}
                )
            status, body, h = 206, data[a : b + 1], {**h, "Content-Range": f"bytes {a}-{b}/{n}"}
        st = self.store
        if self.kind == "cdn" and self.command == "GET" and st.truncate_next > 0 and len(body) > 1:
            st.truncate_next -= 1  # announce the full length, send half, hang up
            self.send_response(status)
            for k, v in {
                **h,
                "Content-Type": "application/octet-stream",
                "Content-Length": str(len(body)),
            }.items():
                self.send_header(k, str(v))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self._send(status, body, h, "application/octet-stream")

    def _reconstruction(self, terms):
        """The terms from the requested byte on (``Range: bytes=A-``; the first term may start
        before A: ``offset_into_first_range``), at most ``reconstruction_page`` of them."""
        mo = _RANGE.match((self.headers.get("Range") or "bytes=0-").strip())
        want = int(mo[1] or 0) if mo else 0
        at, first, skip = 0, len(terms), 0
        for i, t in enumerate(terms):
            if at + t["unpacked_length"] > want:
                first, skip = i, want - at
                break
            at += t["unpacked_length"]
        page = self.store.reconstruction_page or len(terms)
        return {"offset_into_first_range": skip, "terms": terms[first : first + page],
                "xorbs": {}}

    def _xet_token(self, rtype, rid, op):
        if self.store.xet_cas_url is None:
            raise HttpError(501, "xet is not emulated by this fake Hub")
        self._repo(rtype, rid, write=op == "xet-write-token")
        exp = int(time.time()) + 3600
        self._send(
            200,
            {"casUrl": self.store.xet_cas_url, "accessToken": XET_TOKEN, "exp": exp},
            {
                "X-Xet-Cas-Url": self.store.xet_cas_url,
                "X-Xet-Access-Token": XET_TOKEN,
                "X-Xet-Token-Expiration": str(exp),
            },
        )

    # -- uploads -----------------------------------------------------------------------------------
    def _preupload(self, rtype, rid, rev):
        repo, _ = self._repo(rtype, rid, write=True)
        head = repo.refs.get(unquote(rev))
        files = repo.commits[head]["files"] if head else {}
        out = []
        for f in json.loads(self._body())["files"]:
            lfs = self.store.lfs_rule(f["path"], f["size"], base64.b64decode(f["sample"]))
            old = files.get(f["path"])
            out.append(
                {
                    "path": f["path"],
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": None if old is None else old.upload_oid,
                }
            )
        self._send(200, {"files": out, "commitOid": head})

    def _lfs(self, rtype, rid, op):
        self._repo(rtype, rid, write=True)
        body = json.loads(self._body())
        if op == "verify":
            ok = body["oid"] in self.store.lfs
            return self._send(200 if ok else 404, {"ok": ok})
        objs = []
        for o in body["objects"]:
            d = {"oid": o["oid"], "size": o["size"], "authenticated": True}
            if o["oid"] not in self.store.lfs:  # no "actions": already stored, nothing to upload
                d["actions"] = {
                    "upload": {"href": f"{self.store.cdn_url}/upload/{o['oid']}", "header": {}},
                    "verify": {
                        "href": f"{self.store.endpoint}/{PREFIX[rtype]}{rid}.git"
                        "/info/lfs/objects/verify"
                    },
                }
            objs.append(d)
        self._send(
            200, {"transfer": "basic", "objects": objs}, ctype="application/vnd.git-lfs+json"
        )

    def _commit(self, rtype, rid, rev):
        repo, _ = self._repo(rtype, rid, write=True)
        branch = unquote(rev)
        lines = [json.loads(x) for x in self._body().splitlines() if x.strip()]
        header = next((x["value"] for x in lines if x["key"] == "header"), {})
        st = self.store
        with st.lock:
            head = repo.refs.get(branch)
            if head is None:
                raise HttpError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            if header.get("parentCommit") and not head.startswith(header["parentCommit"]):
                raise HttpError(412, "A commit has happened since. Please refresh and try again.")
            changes, deletions = {}, []
            for x in lines:
                k, v = x["key"], x["value"]
                if k == "file":
                    data = (
                        base64.b64decode(v["content"])
                        if v.get("encoding") == "base64"
                        else v["content"].encode()
                    )
                    changes[v["path"]] = Entry(len(data), content=data)
                elif k == "lfsFile":
                    if v["oid"] not in st.lfs and not st.accept_unknown_lfs:
                        raise HttpError(
                            422, f"LFS object {v['oid']} of {v['path']} was never uploaded"
                        )
                    size = len(st.lfs[v["oid"]]) if v["oid"] in st.lfs else int(v.get("size") or 0)
                    changes[v["path"]] = Entry(size, sha256=v["oid"])
                elif k in ("deletedFile", "deletedFolder"):
                    deletions.append(v["path"])
            sha = st.commit(repo, branch, changes, header.get("summary", ""), deletions)
        self._send(
            200,
            {
                "success": True,
                "commitOid": sha,
                "pullRequestUrl": None,
                "commitUrl": f"{st.endpoint}/{PREFIX[rtype]}{rid}/commit/{sha}",
            },
        )

    # -- cdn ---------------------------------------------------------------------------------------
    def _cdn(self, path):
        st = self.store
        mo = re.match(r"^/lfs/([0-9a-f]{64})$", path)
        if mo and self.command in ("GET", "HEAD"):
            if mo[1] not in st.lfs:
                raise HttpError(404, "no such object")
            return self._send_ranged(
                st.lfs[mo[1]], {"ETag": f'"{mo[1]}"', "Accept-Ranges": "bytes"}
            )
        mo = re.match(r"^/upload/([0-9a-f]{64})$", path)
        if mo and self.command == "PUT":
            data = self._body()
            if hashlib.sha256(data).hexdigest() != mo[1]:
                raise HttpError(400, "sha256 mismatch")
            st.lfs[mo[1]] = data
            return self._send(200, b"", {"ETag": f'"{mo[1]}"'})
        raise HttpError(404, f"no cdn route {path}")
