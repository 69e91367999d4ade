"""The GGUF header parser (v2, v3): magic, version, KV metadata and tensor infos, every count,
length and offset checked against the file before anything is allocated or iterated.

Format (ggml-org/ggml ``docs/gguf.md``), little-endian::

    "GGUF"  u32 version  u64 tensor_count  u64 kv_count
    kv_count     x (string key, u32 value_type, value)
    tensor_count x (string name, u32 n_dims, u64 ne[n_dims] (innermost first), u32 ggml_type,
                    u64 offset)
    padding to ``general.alignment`` (default 32), then the tensor data; each offset is relative
    to the start of the data and a multiple of the alignment.

A string is a u64 byte length + UTF-8 bytes; an array is u32 element type + u64 count + elements.
v1 (u32 counts and lengths) is refused; big-endian v3 files are refused.

The parser never materialises long arrays (tokenizer vocabularies, merges, scores) nor long
strings: arrays of fixed-size elements are skipped by arithmetic, string arrays by hopping over
their u64 lengths in one tight loop. gguf-py's ``GGUFReader`` builds numpy views of every element
instead, which takes seconds on a 262k-token vocabulary.

Bounds (a count or length the file cannot hold is refused first): ``MAX_KV`` KV pairs,
``limits.max_tensors()`` tensors, names of at most ``base.MAX_NAME_LENGTH`` bytes, arrays nested
at most ``MAX_ARRAY_DEPTH`` deep, ``MAX_DIMS`` dimensions whose product fits in int64.
"""

from __future__ import annotations

import math
import struct
from typing import Any, NamedTuple

from ..errors import FormatError
from ..sources import ByteSource
from .base import MAX_NAME_LENGTH
from .limits import MAX_TENSORS_ENV, max_tensors

__all__ = ["GGUF_MAGIC", "DEFAULT_ALIGNMENT", "SHORT_ARRAY_MAX", "SHORT_STRING_MAX", "MAX_DIMS",
           "MAX_KV", "MAX_ARRAY_DEPTH", "TensorRecord", "Header", "parse_header"]

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
SHORT_ARRAY_MAX = 64
"""Arrays up to this many elements are kept as values in ``metadata``; longer ones as a summary
``{"type": <element type>, "length": n}``."""
SHORT_STRING_MAX = 1 << 20
"""String values up to this many bytes are kept in ``metadata`` (every chat template fits);
longer ones as a summary ``{"type": "STRING", "length": n}``, never read into memory."""
MAX_DIMS = 4
"""GGML_MAX_DIMS."""
MAX_KV = 1 << 16
"""Most KV pairs a file may declare (real files have 20-60; a tokenizer is one KV of arrays)."""
MAX_ARRAY_DEPTH = 8
"""Deepest nesting of arrays in a KV value (llama.cpp reads no nested array at all)."""
_INT64_MAX = (1 << 63) - 1

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

# GGUF value types: id -> (name, struct code or None, byte size or 0 for variable)
_STRING, _ARRAY = 8, 9
_VALUE_TYPES: dict[int, tuple[str, str, int]] = {
    0: ("UINT8", "B", 1), 1: ("INT8", "b", 1), 2: ("UINT16", "H", 2), 3: ("INT16", "h", 2),
    4: ("UINT32", "I", 4), 5: ("INT32", "i", 4), 6: ("FLOAT32", "f", 4), 7: ("BOOL", "?", 1),
    8: ("STRING", "", 0), 9: ("ARRAY", "", 0), 10: ("UINT64", "Q", 8), 11: ("INT64", "q", 8),
    12: ("FLOAT64", "d", 8),
}


class TensorRecord(NamedTuple):
    """One tensor info as stored: ``ne`` innermost first; ``offset`` relative to the data
    section; ``type_at`` the file offset of its ggml type field (for messages)."""

    name: str
    ne: tuple[int, ...]
    qtype: int
    offset: int
    type_at: int


class Header(NamedTuple):
    """A parsed header: ``end`` is the offset just past the tensor infos, ``data_start`` where
    the data section begins (``end`` rounded up to ``alignment``)."""

    version: int
    alignment: int
    metadata: dict[str, Any]
    tensors: list[TensorRecord]
    end: int
    data_start: int


class _More(Exception):
    """Internal: the header runs past the prefix being parsed (parse a longer one)."""


class _Truncated(Exception):
    """Internal: a read ran past the end of the file (turned into a FormatError)."""

    def __init__(self, offset: int, what: str) -> None:
        self.offset, self.what = offset, what


def parse_header(source: ByteSource) -> Header:
    """Parse and check the header of the GGUF file behind ``source`` (a ``FormatError`` naming
    the file and byte offset when it is malformed)."""
    return _Parser(source).parse()


class _Parser:
    """One parse: the file, the prefix of it being parsed (``lim``) and what was found."""

    def __init__(self, source: ByteSource) -> None:
        self._file = source
        self.path = source.path
        self._size = source.size
        self._lim = 0
        self.alignment = DEFAULT_ALIGNMENT
        self._metadata: dict[str, Any] = {}

    def parse(self) -> Header:
        p, size = self.path, self._size
        head = self._file.read(0, min(24, size))
        if head[:4] != GGUF_MAGIC:
            raise FormatError(p, f"wrong magic {head[:4]!r}, expected {GGUF_MAGIC!r} "
                                 "(not a GGUF file)", offset=0)
        if len(head) < 24:
            raise FormatError(p, f"file is {size} bytes, too short for a GGUF header "
                                 "(needs at least 24)", offset=len(head))
        (version,) = _U32.unpack_from(head, 4)
        if version == 1:
            raise FormatError(p, "GGUF v1 is not supported (re-convert the model with a "
                                 "current llama.cpp)", offset=4)
        if version & 0xFFFF == 0 and (version >> 24) in (2, 3):
            raise FormatError(p, f"big-endian GGUF v{version >> 24} is not supported", offset=4)
        if version not in (2, 3):
            raise FormatError(p, f"unsupported GGUF version {version} (supported: 2, 3)",
                              offset=4)
        n_tensors, n_kv = struct.unpack_from("<QQ", head, 8)
        # every KV needs >= 13 bytes (u64 key length, u32 type, 1-byte value), every tensor info
        # >= 24 (u64 name length, u32 n_dims, u32 type, u64 offset)
        room = size - 24
        if n_kv * 13 > room:
            raise FormatError(p, f"impossible KV count {n_kv}: the file ({size} bytes) cannot "
                                 "hold that many (truncated or corrupt)", offset=16)
        if n_tensors * 24 + n_kv * 13 > room:
            raise FormatError(p, f"impossible tensor count {n_tensors}: the file ({size} bytes) "
                                 f"cannot hold that many tensor infos after {n_kv} KV pairs "
                                 "(truncated or corrupt)", offset=8)
        if n_kv > MAX_KV:
            raise FormatError(p, f"KV count {n_kv} is over the bound of {MAX_KV} (corrupt?)",
                              offset=16)
        if n_tensors > max_tensors():
            raise FormatError(p, f"tensor count {n_tensors} is over the bound of "
                                 f"{max_tensors()} ({MAX_TENSORS_ENV} raises it)", offset=8)
        # parse a prefix of the file, longer until the header fits (one pass when the source
        # is local: its chunk_hint is the whole file)
        self._lim = min(size, max(self._file.chunk_hint, 1 << 16))
        while True:
            mm = memoryview(self._file.view(0, self._lim, track=False).data)
            self._metadata = {}
            try:
                off = self._parse_kv(mm, 24, n_kv)
                off, infos = self._parse_tensor_infos(mm, off, n_tensors)
                break
            except _More:
                self._lim = min(size, self._lim * 8)
            except _Truncated as e:
                raise FormatError(p, f"truncated header: {e.what} runs past the end of the "
                                     f"file ({size} bytes)", offset=e.offset) from None
            finally:
                mm.release()
        data_start = -(-off // self.alignment) * self.alignment
        return Header(version, self.alignment, self._metadata, infos, off, data_start)

    def _past(self, end: int) -> bool:
        """True when ``end`` lies past the end of the file; raises ``_More`` when it lies past
        the end of the prefix being parsed but not of the file."""
        if end <= self._lim:
            return False
        if self._lim < self._size:
            raise _More
        return True

    def _string(self, mm: memoryview, off: int, what: str) -> tuple[str, int]:
        """A name (key, tensor name): at most ``MAX_NAME_LENGTH`` bytes."""
        s, off = self._string_value(mm, off, what, MAX_NAME_LENGTH)
        if not isinstance(s, str):
            raise FormatError(self.path, f"{what}: a name of {s['length']} bytes (the bound is "
                                         f"{MAX_NAME_LENGTH}): corrupt?", offset=off - 8 -
                              s["length"])
        return s, off

    def _string_value(self, mm: memoryview, off: int, what: str, keep: int = SHORT_STRING_MAX
                      ) -> tuple[str | dict[str, Any], int]:
        """A string, or ``{"type": "STRING", "length": n}`` when longer than ``keep`` bytes
        (not read)."""
        if self._past(off + 8):
            raise _Truncated(off, f"length of {what}")
        (n,) = _U64.unpack_from(mm, off)
        if self._past(off + 8 + n):
            raise FormatError(self.path, f"{what}: string length {n} runs past the end of the "
                                         f"file ({self._size} bytes)", offset=off)
        if n > keep:
            return {"type": "STRING", "length": n}, off + 8 + n
        return bytes(mm[off + 8:off + 8 + n]).decode("utf-8", errors="replace"), off + 8 + n

    def _u32(self, mm: memoryview, off: int, what: str) -> int:
        if self._past(off + 4):
            raise _Truncated(off, what)
        return int(_U32.unpack_from(mm, off)[0])

    def _u64(self, mm: memoryview, off: int, what: str) -> int:
        if self._past(off + 8):
            raise _Truncated(off, what)
        return int(_U64.unpack_from(mm, off)[0])

    def _parse_kv(self, mm: memoryview, off: int, n_kv: int) -> int:
        meta = self._metadata
        for i in range(n_kv):
            key_off = off
            key, off = self._string(mm, off, f"key of KV pair {i}")
            vtype = self._u32(mm, off, f"value type of KV {key!r}")
            if key in meta:
                raise FormatError(self.path, f"duplicate KV key {key!r}", offset=key_off)
            value, off = self._value(mm, off + 4, vtype, key, 0)
            meta[key] = value
        align = meta.get("general.alignment", DEFAULT_ALIGNMENT)
        if (not isinstance(align, int) or isinstance(align, bool) or align <= 0
                or align & (align - 1)):
            raise FormatError(self.path, f"general.alignment {align!r} is not a positive power "
                                         "of two")
        self.alignment = align
        return off

    def _value(self, mm: memoryview, off: int, vtype: int, key: str, depth: int
               ) -> tuple[Any, int]:
        spec = _VALUE_TYPES.get(vtype)
        if spec is None:
            raise FormatError(self.path, f"KV {key!r}: unknown value type {vtype} (known: "
                                         f"0..12)", offset=off - 4)
        name, code, width = spec
        if vtype == _STRING:
            return self._string_value(mm, off, f"KV {key!r}")
        if vtype == _ARRAY:
            return self._array(mm, off, key, depth + 1)
        if self._past(off + width):
            raise _Truncated(off, f"value of KV {key!r}")
        (v,) = struct.unpack_from("<" + code, mm, off)
        return v, off + width

    def _array(self, mm: memoryview, off: int, key: str, depth: int) -> tuple[Any, int]:
        size = self._size
        if depth > MAX_ARRAY_DEPTH:
            raise FormatError(self.path, f"KV {_short_key(key)}: arrays nested deeper than "
                                         f"{MAX_ARRAY_DEPTH} levels", offset=off)
        etype = self._u32(mm, off, f"element type of array KV {key!r}")
        n = self._u64(mm, off + 4, f"length of array KV {key!r}")
        off += 12
        spec = _VALUE_TYPES.get(etype)
        if spec is None:
            raise FormatError(self.path, f"KV {key!r}: unknown array element type {etype}",
                              offset=off - 12)
        name, code, width = spec
        if width:
            end = off + n * width
            if self._past(end):
                raise FormatError(self.path, f"KV {key!r}: array of {n} {name} runs past the end "
                                             f"of the file ({size} bytes)", offset=off - 12)
            if n <= SHORT_ARRAY_MAX:
                return list(struct.unpack_from(f"<{n}{code}", mm, off)), end
            return {"type": name, "length": n}, end
        if n > (size - off) // 8:  # each string or array element needs >= 8 bytes
            raise FormatError(self.path, f"KV {key!r}: array of {n} {name} cannot fit in the "
                                         f"file ({size} bytes)", offset=off - 12)
        if n <= SHORT_ARRAY_MAX:
            values = []
            for j in range(n):
                v, off = self._value(mm, off, etype, f"{key}[{j}]", depth)
                values.append(v)
            return values, off
        if etype == _STRING:
            return {"type": name, "length": n}, self._skip_strings(mm, off, n, key)
        for j in range(n):  # array of arrays: rare, walk each element
            _v, off = self._array(mm, off, f"{key}[{j}]", depth + 1)
        return {"type": name, "length": n}, off

    def _skip_strings(self, mm: memoryview, off: int, n: int, key: str) -> int:
        """Offset after ``n`` GGUF strings starting at ``off``, without decoding them."""
        start = off
        unpack = _U64.unpack_from
        try:
            for _ in range(n):
                off += 8 + unpack(mm, off)[0]
        except (struct.error, OverflowError):  # past the buffer, or past what an index holds
            off = self._size + 1
        if off <= self._size and not self._past(off):
            return off
        # slow path: find the first string that runs past the end, for the message
        off = start
        for j in range(n):
            if self._past(off + 8):
                raise _Truncated(off, f"length of {key}[{j}]")
            (k,) = unpack(mm, off)
            if self._past(off + 8 + k):
                raise FormatError(self.path, f"{key}[{j}]: string length {k} runs past the end "
                                             f"of the file ({self._size} bytes)", offset=off)
            off += 8 + k
        raise AssertionError("unreachable")  # pragma: no cover

    def _parse_tensor_infos(self, mm: memoryview, off: int, n: int
                            ) -> tuple[int, list[TensorRecord]]:
        p = self.path
        infos = []
        seen: set[str] = set()
        for i in range(n):
            info_off = off
            name, off = self._string(mm, off, f"name of tensor {i}")
            if name in seen:
                raise FormatError(p, "duplicate tensor name", tensor=name, offset=info_off)
            seen.add(name)
            n_dims = self._u32(mm, off, f"n_dims of tensor {name!r}")
            if n_dims > MAX_DIMS:
                raise FormatError(p, f"n_dims {n_dims} exceeds GGML_MAX_DIMS ({MAX_DIMS})",
                                  tensor=name, offset=off)
            off += 4
            if self._past(off + 8 * n_dims + 12):
                raise _Truncated(off, f"dims of tensor {name!r}")
            ne = struct.unpack_from(f"<{n_dims}Q", mm, off)
            off += 8 * n_dims
            qtype, offset = struct.unpack_from("<IQ", mm, off)
            type_off = off
            off += 12
            if any(d > _INT64_MAX for d in ne) or math.prod(max(d, 1) for d in ne) > _INT64_MAX:
                raise FormatError(p, f"dims {list(ne)} overflow int64", tensor=name,
                                  offset=info_off)
            infos.append(TensorRecord(name, tuple(ne), qtype, offset, type_off))
        return off, infos


def _short_key(key: str) -> str:
    """``repr`` of a KV key path, cut to 120 characters (a nested array's path grows)."""
    r = repr(key)
    return r if len(r) <= 120 else r[:117] + "..."


