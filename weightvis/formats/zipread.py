"""Bounded reading of the zip archives torch >= 1.6 writes, from a byte source: nothing is
inflated whole, nothing beyond what an entry declares, and every entry's headers must agree.

Split from ``pytorch.py``: the zip container is a format of its own, with its own attacks.

- **Directory.** ``zipfile`` parses the central directory (after a look at the end record: more
  than ``max_zip_entries()`` entries is refused before anything is parsed). An entry is used only
  once its local header is checked against the central directory (signature, name, compression
  method, CRC and sizes - or the data descriptor's, which torch writes), its data lies inside
  the file, it is not encrypted, and it is stored or deflated (what torch's miniz reads).
- **Stored entries** are views of the source (memory-mapped for a local file). Their CRC-32 is
  checked the first time an entry is read, in 16 MiB steps whose pages are dropped at once; a CRC
  of 0 on a non-empty entry is torch's "not computed" (``compute_crc32=False``) and not checked;
  remote sources (where a full read is not free) are not checked.
- **Deflated entries** are inflated on demand, never whole: ``read(lo, hi)`` inflates the 4 MiB
  chunks of output it needs. Along the way a copy of the decompressor is kept at each chunk
  boundary first reached (zlib's ``zran.c`` idea, ~40 KB each), so a later chunk re-inflates
  from the nearest boundary; the archive caches the last 16 chunks. An entry may not inflate to
  more or fewer bytes than it declares; its CRC is checked once it is inflated to the end.
- **Bombs.** The compressed entries a reader opens may declare, together, at most
  ``max_zip_ratio()`` times the file's size plus ``INFLATE_ALLOWANCE``; a declared size is a
  promise the inflater holds the entry to.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError
from ..sources import ByteSource, SourceFile
from .pt_limits import INFLATE_ALLOWANCE, ZIP_ENTRIES_ENV, ZIP_RATIO_ENV

__all__ = ["ZipArchive", "ZipEntry"]

_CHUNK = 4 << 20          # bytes of inflated output per chunk
_CACHED_CHUNKS = 16       # inflated chunks kept per archive (64 MiB)
_IN_STEP = 1 << 16        # compressed bytes fed to the decompressor at a time
_CRC_STEP = 16 << 20      # bytes of a stored entry checksummed at a time
_EOCD = b"PK\x05\x06"
_METHODS = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma", 9: "deflate64",
            zipfile.ZIP_DEFLATED: "deflate", zipfile.ZIP_STORED: "stored"}


class ZipArchive:
    """The central directory of a zip file on a byte source, and its entries on demand."""

    def __init__(self, source: ByteSource, where: Path, *, max_ratio: int, max_entries: int,
                 check_crc: bool) -> None:
        self.source, self.where, self.check_crc = source, where, check_crc
        self._ratio = max_ratio
        self._budget = max_ratio * source.size + INFLATE_ALLOWANCE
        declared = _declared_entries(source)
        if declared is not None and declared > max_entries:
            raise FormatError(where, f"zip archive declares {declared:,} entries, more than "
                                     f"{max_entries:,} ({ZIP_ENTRIES_ENV})")
        try:
            with zipfile.ZipFile(io.BufferedReader(SourceFile(source), 1 << 16)) as zf:
                infos = zf.infolist()
        except Exception as e:  # zipfile raises many kinds on a hostile directory
            raise FormatError(where, f"not a readable zip archive ({_why(e)}): truncated or "
                                     "corrupt?") from None
        if len(infos) > max_entries:
            raise FormatError(where, f"zip archive holds {len(infos):,} entries, more than "
                                     f"{max_entries:,} ({ZIP_ENTRIES_ENV})")
        self.infos = infos
        self.names = {i.filename: i for i in infos}
        self._opened: dict[str, ZipEntry] = {}
        self.cache: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        """Inflated chunks of every deflated entry, the most recently used last."""

    def entry(self, name: str) -> ZipEntry:
        """The entry called ``name`` (KeyError if none), its headers checked; a compressed
        entry's declared size is charged to the archive's inflation budget."""
        got = self._opened.get(name)
        if got is None:
            got = self._opened[name] = self._check(self.names[name])
        return got

    def _check(self, info: zipfile.ZipInfo) -> ZipEntry:
        p, name, size = self.where, info.filename, self.source.size
        what = f"zip entry {name[:200]!r}"
        if info.flag_bits & 0x1:
            raise FormatError(p, f"{what} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            method = _METHODS.get(info.compress_type, f"method {info.compress_type}")
            raise FormatError(p, f"{what} is compressed with {method}: a PyTorch checkpoint's "
                                 "entries are stored or deflated")
        off = info.header_offset
        if not 0 <= off <= size - 30:
            where = "past the end of the file" if off >= 0 else "before the start of the file"
            raise FormatError(p, f"{what}: the central directory puts its local header at byte "
                                 f"{off}, {where} ({size} bytes)")
        hdr = self.source.read(off, off + 30)
        if hdr[:4] != b"PK\x03\x04":
            raise FormatError(p, f"{what} has no local header where the central directory "
                                 "points", offset=off)
        _, _, flags, method, _, _, crc, csize, usize, n, e = struct.unpack("<IHHHHHIIIHH", hdr)
        local_name = self.source.read(off + 30, min(size, off + 30 + n))
        decoded = local_name.decode("utf-8" if flags & 0x800 else "cp437", "replace")
        if decoded != info.orig_filename:
            raise FormatError(p, f"{what}: its local header names {decoded[:80]!r}",
                              offset=off)
        if method != info.compress_type:
            raise FormatError(p, f"{what}: compression method {method} in its local header, "
                                 f"{info.compress_type} in the central directory", offset=off)
        if not flags & 0x8:  # no data descriptor: the local header states sizes and CRC
            for field, local, central in (("CRC-32", crc, info.CRC),
                                          ("compressed size", csize, info.compress_size),
                                          ("size", usize, info.file_size)):
                if local != central and local != 0xFFFFFFFF:
                    raise FormatError(p, f"{what}: {field} {local} in its local header, "
                                         f"{central} in the central directory", offset=off)
        start = off + 30 + n + e
        if start + info.compress_size > size:
            raise FormatError(p, f"{what} runs past the end of the file ({size} bytes): "
                                 "truncated?", offset=start)
        if flags & 0x8:
            self._check_descriptor(info, start + info.compress_size)
        if info.compress_type == zipfile.ZIP_STORED:
            if info.compress_size != info.file_size:
                raise FormatError(p, f"{what} is stored, but its sizes differ "
                                     f"({info.compress_size} and {info.file_size})", offset=off)
        else:
            self._budget -= info.file_size
            if self._budget < 0:
                raise FormatError(
                    p, f"{what} inflates to {info.file_size:,} bytes from "
                       f"{info.compress_size:,}: the compressed entries read would inflate to "
                       f"more than {self._ratio}x the file's {size:,} bytes (+"
                       f"{INFLATE_ALLOWANCE >> 20} MiB): a zip bomb? ({ZIP_RATIO_ENV})")
        return ZipEntry(self, info, start)

    def _check_descriptor(self, info: zipfile.ZipInfo, at: int) -> None:
        """The data descriptor after an entry's data (what torch writes instead of local sizes):
        CRC-32 and sizes (32 or 64 bits, signature optional) as in the central directory."""
        d = self.source.read(at, min(self.source.size, at + 24))
        if d[:4] == b"PK\x07\x08":
            d = d[4:]
        crc, csize, usize = info.CRC, info.compress_size, info.file_size
        if not (len(d) >= 12 and struct.unpack_from("<I", d)[0] == crc and (
                struct.unpack_from("<II", d, 4) == (csize & 0xFFFFFFFF, usize & 0xFFFFFFFF)
                or len(d) >= 20 and struct.unpack_from("<QQ", d, 4) == (csize, usize))):
            raise FormatError(self.where, f"zip entry {info.filename[:200]!r}: its data descriptor "
                                          f"(CRC-32 and sizes) disagrees with the central "
                                          "directory", offset=at)


class ZipEntry:
    """One checked entry: ``read(lo, hi)`` for random access (storages), ``fetcher()`` for one
    pass from the start (pickles), ``read_small()`` for a few bytes of text."""

    def __init__(self, archive: ZipArchive, info: zipfile.ZipInfo, start: int) -> None:
        self.archive, self.info, self.start = archive, info, start
        self.name = info.filename
        self.size = info.file_size
        self.stored = info.compress_type == zipfile.ZIP_STORED
        self._verified = not archive.check_crc or (info.CRC == 0 and self.size > 0) or (
            self.stored and archive.source.chunk_hint < archive.source.size)
        self._inflater: _Inflater | None = None

    def fail(self, problem: str, offset: int | None = None) -> FormatError:
        return FormatError(self.archive.where, f"zip entry {self.name[:200]!r} {problem}",
                           offset=offset)

    def check_crc(self, crc: int) -> None:
        if crc != self.info.CRC and not self._verified:
            raise self.fail(f"is corrupt: its data has CRC-32 {crc:#010x}, its header says "
                            f"{self.info.CRC:#010x}")
        self._verified = True

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Bytes ``lo..hi-1`` of the entry's (inflated) data, read-only."""
        assert 0 <= lo <= hi <= self.size, (self.name, lo, hi, self.size)
        if self.stored:
            src = self.archive.source
            if not self._verified:
                crc = 0
                for a in range(self.start, self.start + self.size, _CRC_STEP):
                    b = min(self.start + self.size, a + _CRC_STEP)
                    crc = zlib.crc32(src.view(a, b, track=False).data, crc)
                    src.touch(a, b)
                    src.release()  # the pass leaves nothing resident
                self.check_crc(crc)
            return src.view(self.start + lo, self.start + hi)
        if self._inflater is None:
            self._inflater = _Inflater(self)
        return self._inflater.read(lo, hi)

    def fetcher(self) -> Callable[[int], bytes]:
        """``fetch(n)``: the next up to ``n`` bytes of the data, b"" at its end (where the CRC
        of a stored entry is checked; a deflated one's when inflated to its end)."""
        pos, crc = 0, 0

        def fetch(n: int) -> bytes:
            nonlocal pos, crc
            hi = min(self.size, pos + n)
            if self.stored:
                data = self.archive.source.read(self.start + pos, self.start + hi)
                crc = zlib.crc32(data, crc)
                if hi == self.size and pos < hi or self.size == 0:
                    self.check_crc(crc)
            else:
                data = self.read(pos, hi).tobytes()
            pos = hi
            return data

        return fetch

    def read_small(self, limit: int) -> bytes:
        """The whole entry, which may hold at most ``limit`` bytes."""
        if self.size > limit:
            raise self.fail(f"holds {self.size:,} bytes; at most {limit} expected")
        return self.fetcher()(limit)


class _Inflater:
    """Random access to a deflated entry (see the module doc)."""

    def __init__(self, entry: ZipEntry) -> None:
        self.entry = entry
        self._snaps: list[tuple[int, Any]] = [(entry.start, zlib.decompressobj(-15))]
        """snaps[k]: (next compressed byte, decompressor) where chunk k starts; the last one is
        the frontier, never itself used (copies are)."""
        self._crc = 0
        self._cache = entry.archive.cache
        self._name = entry.name

    def read(self, lo: int, hi: int) -> np.ndarray:
        if lo == hi:
            return np.zeros(0, np.uint8)
        k0, k1 = lo // _CHUNK, (hi - 1) // _CHUNK
        if k0 == k1:
            c = self._chunk(k0)
            return np.frombuffer(c, np.uint8, hi - lo, lo - k0 * _CHUNK)
        parts = [self._chunk(k) for k in range(k0, k1 + 1)]
        return np.frombuffer(b"".join(parts), np.uint8)[lo - k0 * _CHUNK:hi - k0 * _CHUNK]

    def _chunk(self, k: int) -> bytes:
        got = self._cache.get((self._name, k))
        if got is not None:
            self._cache.move_to_end((self._name, k))
            return got
        while len(self._snaps) < k + 2:  # advance the frontier past chunk k (CRC on the way)
            self._advance()
        got = self._cache.get((self._name, k))
        if got is None:  # passed earlier and dropped since: again from its snapshot
            pos, d = self._snaps[k]
            got, _pos, _d = self._inflate(d.copy(), pos, self._length(k))
            self._keep(k, got)
        return got

    def _length(self, k: int) -> int:
        return min(_CHUNK, self.entry.size - k * _CHUNK)

    def _keep(self, k: int, data: bytes) -> None:
        self._cache[(self._name, k)] = data
        while len(self._cache) > _CACHED_CHUNKS:
            self._cache.popitem(last=False)

    def _advance(self) -> None:
        k = len(self._snaps) - 1
        pos, d = self._snaps[k]
        want = self._length(k)
        if want <= 0:
            raise AssertionError((self.entry.name, k))
        data, pos, d = self._inflate(d.copy(), pos, want)
        self._crc = zlib.crc32(data, self._crc)
        self._snaps.append((pos, d))
        self._keep(k, data)
        if (k + 1) * _CHUNK >= self.entry.size:
            self._finish(d, pos)

    def _inflate(self, d: Any, pos: int, want: int) -> tuple[bytes, int, Any]:
        """``want`` bytes of output from decompressor ``d`` fed from compressed byte ``pos``:
        (data, next compressed byte, d)."""
        e = self.entry
        end = e.start + e.info.compress_size
        out, got, tail = [], 0, b""
        while got < want:
            if not tail:
                if pos >= end:
                    raise e.fail("ends before its declared size: truncated?")
                tail = e.archive.source.read(pos, min(end, pos + _IN_STEP))
                pos += len(tail)
            try:
                piece = d.decompress(tail, want - got)
            except zlib.error as err:
                raise e.fail(f"cannot be inflated ({err}): corrupt?") from None
            tail = d.unconsumed_tail
            out.append(piece)
            got += len(piece)
            if d.eof and got < want:
                raise e.fail(f"inflates to fewer bytes than the {e.size:,} it declares")
        return b"".join(out), pos - len(tail), d

    def _finish(self, d: Any, pos: int) -> None:
        """At the declared size: the stream must end there, and the CRC match."""
        e = self.entry
        end = e.start + e.info.compress_size
        while not d.eof:
            data = e.archive.source.read(pos, min(end, pos + _IN_STEP)) if pos < end else b""
            pos += len(data)
            try:
                extra = d.decompress(d.unconsumed_tail + data, 1)
            except zlib.error as err:
                raise e.fail(f"cannot be inflated ({err}): corrupt?") from None
            if extra:
                raise e.fail(f"inflates to more than the {e.size:,} bytes it declares")
            if not data and not d.unconsumed_tail and not d.eof:
                raise e.fail("ends before its deflate stream does: truncated?")
        e.check_crc(self._crc)


def _declared_entries(source: ByteSource) -> int | None:
    """The entry count of the end-of-central-directory record (zip64's if present), or None
    when there is no such record (``zipfile`` then says what is wrong)."""
    size = source.size
    tail = source.read(max(0, size - (1 << 16) - 22), size)
    at = tail.rfind(_EOCD)
    if at < 0 or at + 22 > len(tail):
        return None
    (count,) = struct.unpack("<H", tail[at + 10:at + 12])
    loc = at - 20
    if count == 0xFFFF and loc >= 0 and tail[loc:loc + 4] == b"PK\x06\x07":
        (z64,) = struct.unpack("<Q", tail[loc + 8:loc + 16])
        if z64 + 56 <= size:
            rec = source.read(z64, z64 + 56)
            if rec[:4] == b"PK\x06\x06":
                return int(struct.unpack("<Q", rec[32:40])[0])
    return int(count)


def _why(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e)[:120]!r}" if str(e) else type(e).__name__
