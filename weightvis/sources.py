"""Byte sources: what readers read checkpoint bytes through.

A reader never opens a path itself: it asks its source for ``view(lo, hi)``, a read-only uint8
array of bytes ``lo..hi-1``. Two implementations:

- ``LocalFileSource``: the file memory-mapped on first use; a view is a slice of the mapping (no
  copy). The byte range tracked views have covered since the last ``release`` is dropped from
  this process's resident pages by ``madvise(MADV_DONTNEED)`` (the page cache keeps them, RSS
  stays bounded).
- ``HTTPRangeSource``: a remote file read with HTTP ``Range`` requests (stdlib ``urllib``).
  Requests are widened to large aligned blocks, neighbouring missing blocks are fetched in one
  request, and a bounded LRU (one per process, for every HTTP source) keeps recent blocks; a view
  inside one block is a slice of it (no copy).

``SourceFile`` turns any source into a seekable binary file object (for ``zipfile`` and
``pickle``, which want one).
"""

from __future__ import annotations

import abc
import io
import itertools
import mmap
import os
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FormatError

__all__ = ["ByteSource", "LocalFileSource", "HTTPRangeSource", "BlockCache", "SHARED_CACHE",
           "SourceFile", "as_source", "DEFAULT_BLOCK", "DEFAULT_CACHE_BYTES"]

DEFAULT_BLOCK = 4 << 20
"""HTTP reads are widened to aligned blocks of this many bytes (4 MiB)."""
DEFAULT_CACHE_BYTES = 64 << 20
"""Bound of an ``HTTPRangeSource``'s block cache (64 MiB)."""

_EMPTY = np.zeros(0, np.uint8)
_EMPTY.flags.writeable = False


class ByteSource(abc.ABC):
    """Random access to the bytes of one file, local or remote.

    ``name`` names it in messages (the path, or the URL); ``path`` is a ``Path`` for the file
    (the local path; for a URL, its path part); ``size`` is its length in bytes.
    """

    name: str
    path: Path
    size: int
    chunk_hint: int
    """A good size for a first read of unknown extent (headers): the whole file when reads are
    free, one block for a remote file."""

    @abc.abstractmethod
    def view(self, lo: int, hi: int, *, track: bool = True) -> np.ndarray:
        """Bytes ``lo..hi-1`` as a read-only uint8 array. ``track``: the range is dropped from
        memory by the next ``release`` (pass False for views kept across releases)."""

    def read(self, lo: int, hi: int) -> bytes:
        """Bytes ``lo..hi-1`` as ``bytes`` (a copy, untracked: headers and other small
        reads)."""
        return self.view(lo, hi, track=False).tobytes()

    def touch(self, lo: int, hi: int) -> None:  # noqa: B027 (optional hook)
        """Record that bytes lo..hi-1 were read through an untracked view: the next release
        drops them too."""

    def release(self) -> None:  # noqa: B027 (optional hook)
        """Drop the memory that tracked views since the last release have made resident."""

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release handles; the source is unusable afterwards (views already taken stay valid
        as long as they are referenced)."""

    def _check(self, lo: int, hi: int) -> None:
        if not 0 <= lo <= hi <= self.size:
            raise FormatError(self.name, f"byte range [{lo}, {hi}) is outside the file "
                                         f"({self.size} bytes): truncated?", offset=lo)

    def __enter__(self) -> ByteSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, size={self.size})"


class LocalFileSource(ByteSource):
    """A local file, memory-mapped on first use; views are slices of the mapping."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        try:
            self.fh = open(self.path, "rb")
        except OSError as e:
            raise FormatError(self.path, f"cannot open: {e.strerror}") from None
        self.stat = os.fstat(self.fh.fileno())
        """The file's status when opened (identity for caches: device, inode, size, mtime)."""
        self.size = self.stat.st_size
        self.chunk_hint = self.size
        self.mm: mmap.mmap | None = None
        self._buf: np.ndarray | None = None
        self._touched: tuple[int, int] | None = None

    def buffer(self) -> np.ndarray:
        """The whole file as a read-only uint8 array (not tracked)."""
        if self._buf is None:
            if self.fh.closed:
                raise ValueError(f"{self.name}: source is closed")
            if self.size == 0:
                self._buf = _EMPTY
            else:
                self.mm = mmap.mmap(self.fh.fileno(), 0, access=mmap.ACCESS_READ)
                self._buf = np.frombuffer(self.mm, dtype=np.uint8)
                # the mapping holds a descriptor of its own: one per file, not two (a
                # checkpoint of 10,000 shards stays under the usual open-file limits)
                self.fh.close()
        return self._buf

    def view(self, lo: int, hi: int, *, track: bool = True) -> np.ndarray:
        buf = self._buf if self._buf is not None else self.buffer()
        if not 0 <= lo <= hi <= self.size:
            self._check(lo, hi)
        if track:
            t = self._touched
            self._touched = (lo, hi) if t is None else (min(lo, t[0]), max(hi, t[1]))
        return buf[lo:hi]

    @property
    def touched(self) -> tuple[int, int] | None:
        """Byte range tracked views covered since the last release (None: nothing)."""
        return self._touched

    def touch(self, lo: int, hi: int) -> None:
        """Record that bytes lo..hi-1 were read (through an untracked view)."""
        t = self._touched
        self._touched = (lo, hi) if t is None else (min(lo, t[0]), max(hi, t[1]))

    def release(self) -> None:
        if self.mm is not None and self._touched is not None and hasattr(self.mm, "madvise"):
            lo = (self._touched[0] // mmap.PAGESIZE) * mmap.PAGESIZE
            hi = min(self.size, self._touched[1])
            if hi > lo:
                self.mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
        self._touched = None

    def close(self) -> None:
        self._buf = None
        if self.mm is not None:
            try:
                self.mm.close()
            except BufferError:  # a caller still holds a view; the mapping dies with it
                pass
            self.mm = None
        self.fh.close()


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class BlockCache:
    """A bounded LRU of fetched blocks, keyed by (source, block number); one is shared by every
    ``HTTPRangeSource`` of a process unless a source is given its own, so memory stays bounded
    however many shards a checkpoint has."""

    def __init__(self, capacity: int = DEFAULT_CACHE_BYTES) -> None:
        self.capacity = capacity
        self.nbytes = 0
        self._blocks: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int]) -> np.ndarray | None:
        with self._lock:
            got = self._blocks.get(key)
            if got is not None:
                self._blocks.move_to_end(key)
            return got

    def put(self, key: tuple[int, int], arr: np.ndarray) -> None:
        with self._lock:
            old = self._blocks.pop(key, None)
            if old is not None:
                self.nbytes -= old.nbytes
            self._blocks[key] = arr
            self.nbytes += arr.nbytes
            while self.nbytes > self.capacity and len(self._blocks) > 1:
                self.nbytes -= self._blocks.popitem(last=False)[1].nbytes

    def drop(self, owner: int) -> None:
        """Forget every block of one source."""
        with self._lock:
            for key in [k for k in self._blocks if k[0] == owner]:
                self.nbytes -= self._blocks.pop(key).nbytes

    def held(self, owner: int) -> int:
        """Bytes held for one source."""
        with self._lock:
            return sum(a.nbytes for k, a in self._blocks.items() if k[0] == owner)


SHARED_CACHE = BlockCache()
"""The block cache of this process's HTTP sources (64 MiB)."""
_SOURCE_IDS = itertools.count()


class HTTPRangeSource(ByteSource):
    """A remote file read by HTTP ``Range`` requests.

    Reads are widened to ``block``-aligned blocks; the missing blocks of one view are fetched in
    one request; blocks are kept in ``cache`` (default: the process's ``SHARED_CACHE``, 64 MiB
    for all sources), so ``release`` has nothing to drop. A view larger than the cache is
    fetched exactly and not cached. ``size`` (when known) saves the first request's size
    discovery. Errors name the source (``name``: the URL unless given) and the byte offset;
    ``path`` (default: the URL's path) is what readers call the file. A subclass may override
    ``refresh`` to renew an expired URL (signed CDN URLs expire): it is called once when the
    server answers 401, 403 or 410.
    """

    def __init__(self, url: str, size: int | None = None, *, block: int = DEFAULT_BLOCK,
                 cache: BlockCache | None = None, timeout: float = 30.0,
                 headers: dict[str, str] | None = None, retries: int = 2,
                 name: str | None = None, path: str | None = None) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"{url}: not an http(s) URL")
        cache = SHARED_CACHE if cache is None else cache
        if block <= 0 or cache.capacity < block:
            raise ValueError(f"block {block} must be positive and at most the cache's "
                             f"{cache.capacity} bytes")
        self.url = url
        self.name = url if name is None else name
        self.path = Path(path if path is not None else urllib.parse.unquote(parts.path) or "/")
        self.block, self.cache = block, cache
        self._id = next(_SOURCE_IDS)
        self.timeout, self.retries = timeout, max(0, retries)
        self.headers = dict(headers or {})
        self.chunk_hint = block
        self.requests = 0
        """Range requests made (for tests and statistics)."""
        self._closed = False
        if size is None:
            size = self._discover_size()
        self.size = size

    # -- HTTP --------------------------------------------------------------------------------
    def refresh(self) -> bool:
        """Renew ``url`` after the server refused it (401/403/410); True when there is a new
        one to try. The base class has none."""
        return False

    def _get(self, lo: int, hi: int, *, clamp: bool = False) -> tuple[bytes, int | None]:
        """Bytes lo..hi-1 (hi > lo) and the total size from ``Content-Range``. ``clamp``: the
        server may end the range early (at the end of the file)."""
        last = ""
        refreshed = False
        for _attempt in range(self.retries + 1):
            self.requests += 1
            req = urllib.request.Request(self.url, headers={
                **self.headers, "Range": f"bytes={lo}-{hi - 1}", "Accept-Encoding": "identity"})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    status = resp.status
                    crange = resp.headers.get("Content-Range", "")
                    if status != 206:
                        raise FormatError(self.name, f"the server answered a Range request with "
                                                    f"HTTP {status}, not 206 Partial Content "
                                                    "(it does not honour Range)", offset=lo)
                    m = _CONTENT_RANGE.fullmatch(crange.strip())
                    end = int(m.group(2)) if m is not None else -1
                    if (m is None or int(m.group(1)) != lo
                            or not (end == hi - 1 or (clamp and lo <= end < hi - 1))):
                        raise FormatError(self.name, f"asked for bytes {lo}-{hi - 1}, the server "
                                                    f"sent Content-Range {crange!r}", offset=lo)
                    data = resp.read(end + 1 - lo)
            except FormatError:
                raise
            except urllib.error.HTTPError as e:
                if e.code == 416:
                    raise FormatError(self.name, f"bytes {lo}-{hi - 1} are not satisfiable "
                                                "(HTTP 416): file shorter than expected?",
                                      offset=lo) from None
                if e.code in (401, 403, 410) and not refreshed:
                    refreshed = True
                    if self.refresh():
                        last = f"HTTP {e.code} {e.reason}"
                        continue
                if e.code < 500:
                    raise FormatError(self.name, f"HTTP {e.code} {e.reason} reading bytes "
                                                f"{lo}-{hi - 1}", offset=lo) from None
                last = f"HTTP {e.code} {e.reason}"
                continue
            except (urllib.error.URLError, OSError, ValueError) as e:
                last = str(getattr(e, "reason", None) or e) or type(e).__name__
                continue
            if len(data) != end + 1 - lo:
                last = f"short read: {len(data)} of {end + 1 - lo} bytes"
                continue
            total = m.group(3)
            return data, None if total == "*" else int(total)
        raise FormatError(self.name, f"cannot read bytes {lo}-{hi - 1} ({last}; "
                                    f"{self.retries + 1} attempts)", offset=lo)

    def _discover_size(self) -> int:
        """Fetch block 0 (clamped by the server to a shorter file) and learn the size."""
        data, total = self._get(0, self.block, clamp=True)
        if total is None:
            raise FormatError(self.name, "the server does not tell the file size (Content-Range "
                                        "'*'): pass size=", offset=0)
        if len(data) != min(self.block, total):
            raise FormatError(self.name, f"first block is {len(data)} bytes, expected "
                                        f"{min(self.block, total)} of a {total}-byte file",
                              offset=0)
        if total:
            self.cache.put((self._id, 0), np.frombuffer(data, np.uint8))
        return total

    # -- cache -------------------------------------------------------------------------------
    def _block_span(self, b: int) -> tuple[int, int]:
        return b * self.block, min(self.size, (b + 1) * self.block)

    def _blocks(self, b0: int, b1: int) -> list[np.ndarray]:
        """Blocks b0..b1 (inclusive), from the cache or fetched: each run of missing blocks in
        one request. A block of a multi-block fetch is copied out, so a cached block never pins
        a bigger buffer."""
        got: list[np.ndarray | None] = [self.cache.get((self._id, b)) for b in range(b0, b1 + 1)]
        i = 0
        while i < len(got):
            if got[i] is not None:
                i += 1
                continue
            j = i
            while j + 1 < len(got) and got[j + 1] is None:
                j += 1
            lo, hi = self._block_span(b0 + i)[0], self._block_span(b0 + j)[1]
            data, _total = self._get(lo, hi)
            arr = np.frombuffer(data, np.uint8)
            for k in range(i, j + 1):
                s0, s1 = self._block_span(b0 + k)
                part = arr if i == j else arr[s0 - lo:s1 - lo].copy()
                part.flags.writeable = False
                got[k] = part
                self.cache.put((self._id, b0 + k), part)
            i = j + 1
        return [g for g in got if g is not None]

    def view(self, lo: int, hi: int, *, track: bool = True) -> np.ndarray:
        if self._closed:
            raise ValueError(f"{self.name}: source is closed")
        self._check(lo, hi)
        if hi == lo:
            return _EMPTY
        b0, b1 = lo // self.block, (hi - 1) // self.block
        if (b1 - b0 + 1) * self.block > self.cache.capacity:  # too big to cache: fetch exactly
            data, _total = self._get(lo, hi)
            return np.frombuffer(data, np.uint8)
        blocks = self._blocks(b0, b1)
        if b0 == b1:
            base = b0 * self.block
            return blocks[0][lo - base:hi - base]
        out = np.empty(hi - lo, np.uint8)
        for b, arr in zip(range(b0, b1 + 1), blocks, strict=True):
            s0, s1 = self._block_span(b)
            a0, a1 = max(lo, s0), min(hi, s1)
            out[a0 - lo:a1 - lo] = arr[a0 - s0:a1 - s0]
        out.flags.writeable = False
        return out

    @property
    def cached_bytes(self) -> int:
        """Bytes of this source held by the block cache now."""
        return self.cache.held(self._id)

    def release(self) -> None:
        """Nothing to drop: the block cache is bounded for the whole process."""

    def close(self) -> None:
        self.cache.drop(self._id)
        self._closed = True


class SourceFile(io.RawIOBase):
    """A seekable, read-only binary file over a byte source (wrap it in ``io.BufferedReader``
    for many small reads). Reads are untracked views: the caller releases the source."""

    def __init__(self, source: ByteSource) -> None:
        super().__init__()
        self.source = source
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self.pos + offset
        elif whence == io.SEEK_END:
            pos = self.source.size + offset
        else:
            raise ValueError(f"bad whence {whence}")
        if pos < 0:
            raise OSError(f"negative seek position {pos}")
        self.pos = pos
        return pos

    def readinto(self, b: Any) -> int:
        mv = memoryview(b).cast("B")
        lo = min(self.pos, self.source.size)
        hi = min(self.source.size, lo + len(mv))
        n = hi - lo
        if n:
            mv[:n] = self.source.view(lo, hi, track=False).data
        self.pos = lo + n
        return n


def as_source(obj: ByteSource | str | os.PathLike[str]) -> ByteSource:
    """``obj`` itself when it is a byte source; an ``http(s)://`` URL as an ``HTTPRangeSource``;
    otherwise a local path as a ``LocalFileSource``."""
    if isinstance(obj, ByteSource):
        return obj
    s = os.fspath(obj)
    if isinstance(s, str) and s.startswith(("http://", "https://")):
        return HTTPRangeSource(s)
    return LocalFileSource(s)
