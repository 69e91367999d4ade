"""safetensors reader: header parsed with a size bound, data memory-mapped, decoded by block.

Format (huggingface/safetensors): u64 little-endian header length N, N bytes of JSON
``{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}``, then the data
buffer; offsets are relative to the start of the data buffer.
"""

from __future__ import annotations

import itertools
import json
import math
import operator
import os
import struct
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import FormatError, UnsupportedDtypeError
from ..index import view_row_dims
from ..sources import ByteSource, LocalFileSource, as_source
from ..types import TensorInfo, view_of
from ..untrusted import load_json
from .base import MAX_NAME_LENGTH, Reader, check_block, gc_paused
from .dtypes import CODE_DTYPES, ELEMENT_TYPES, ElementType
from .limits import MAX_TENSORS_ENV, max_tensors

__all__ = ["SafetensorsReader", "CodeSpan", "MAX_HEADER_BYTES", "looks_like_safetensors",
           "write_safetensors"]

MAX_HEADER_BYTES = 100 * 1024 * 1024
"""The reference implementation's bound on the JSON header (100 MB)."""

MAX_RANK = 64
"""Most dimensions a tensor may have (PyTorch's own bound; real checkpoints stay under 8)."""
_INT64_MAX = (1 << 63) - 1


def _short(v: object) -> str:
    """``repr(v)``, cut to 80 characters (header values are untrusted and may be huge)."""
    r = repr(v)
    return r if len(r) <= 80 else r[:77] + "..."


def looks_like_safetensors(head: bytes) -> bool:
    """True when the first bytes are a plausible safetensors prefix (u64 length, then '{')."""
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= MAX_HEADER_BYTES and head[8:9] == b"{"


class _Entry(NamedTuple):
    """A tensor's place in the file, its 2-D view's size computed once (reads are hot)."""

    info: TensorInfo
    etype: ElementType
    begin: int
    end: int
    rows: int
    cols: int
    row_bytes: int
    start: int
    """The data's first byte in the file (data buffer's start + ``begin``)."""


class CodeSpan(NamedTuple):
    """A 16-bit tensor's place in its file: rows ``e_r0..e_r1-1`` are the bytes
    ``start + e_r0 * row_bytes .. start + e_r1 * row_bytes - 1`` of ``source``, each row
    ``cols`` little-endian codes of ``dtype`` (BF16 or F16)."""

    source: ByteSource
    start: int
    row_bytes: int
    rows: int
    cols: int
    dtype: str


class _Parsed(NamedTuple):
    """A parsed header (immutable once made; shared by readers of the same file)."""

    metadata: dict[str, Any]
    data_start: int
    entries: dict[str, _Entry]
    tensors: tuple[TensorInfo, ...]


_new_tuple = tuple.__new__
"""A NamedTuple made without its Python-level ``__new__`` (45k tensors: per-tensor calls)."""

_PARSED: OrderedDict[tuple[object, ...], _Parsed] = OrderedDict()
"""Headers parsed in this process, by (name, device, inode, size, mtime) of the local file: a
worker process forked after the parent opened the checkpoint, or a reader re-opened, skips the
parse (45k tensors: ~0.5 s per open). Bounded by ``_PARSED_MAX_TENSORS``."""
_PARSED_MAX_TENSORS = 1 << 21
_PARSED_TENSORS = 0
"""Tensors held by ``_PARSED``."""


def _file_key(src: ByteSource) -> tuple[object, ...] | None:
    if not isinstance(src, LocalFileSource):
        return None
    st = src.stat
    return (src.name, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class SafetensorsReader(Reader):
    """One ``.safetensors`` file."""

    format = "safetensors"

    def __init__(self, source: ByteSource | str | os.PathLike[str]) -> None:
        self._file = as_source(source)
        self.path = self._file.path
        self._size = self._file.size
        self._entries: dict[str, _Entry] = {}
        self._metadata: dict[str, Any] = {}
        self._data_start = 0
        self._tensors: tuple[TensorInfo, ...] = ()
        try:
            key = _file_key(self._file)
            got = _PARSED.get(key) if key is not None else None
            if got is None:
                with gc_paused():
                    self._parse_header()
                if key is not None:
                    self._remember(key)
            else:
                assert key is not None
                _PARSED.move_to_end(key)
                self._entries, self._data_start, self._tensors = (got.entries, got.data_start,
                                                                  got.tensors)
                self._metadata = dict(got.metadata)
        except BaseException:
            self._file.close()
            raise
        self._file.touch(0, self._data_start)  # the header is not needed again: drop its pages
        self._file.release()

    # -- header ------------------------------------------------------------------------------
    def _remember(self, key: tuple[object, ...]) -> None:
        global _PARSED_TENSORS
        old = _PARSED.pop(key, None)
        _PARSED[key] = _Parsed(dict(self._metadata), self._data_start, self._entries,
                               self._tensors)
        # a running count: summing over the cache at every file made opening n shards O(n^2)
        # (10,000 one-tensor shards: 66 s)
        _PARSED_TENSORS += len(self._entries) - (len(old.entries) if old is not None else 0)
        while _PARSED_TENSORS > _PARSED_MAX_TENSORS and len(_PARSED) > 1:
            _PARSED_TENSORS -= len(_PARSED.popitem(last=False)[1].entries)

    def _parse_header(self) -> None:
        p = self._file.name if self._file.name != str(self.path) else self.path
        head = self._file.read(0, min(8, self._size))
        if len(head) < 8:
            raise FormatError(p, f"file is {self._size} bytes, too short for a safetensors header "
                                 "(needs at least 8)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES:
            raise FormatError(p, f"header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit "
                                 "(not a safetensors file?)", offset=0)
        if 8 + n > self._size:
            raise FormatError(p, f"header length {n} runs past the end of the file "
                                 f"({self._size} bytes): truncated or not safetensors", offset=0)
        raw = self._file.read(8, 8 + n)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise FormatError(p, "header is not UTF-8 text", offset=8 + e.start) from None
        header = load_json(text, p, offset=8, what="header")
        if not isinstance(header, dict):
            raise FormatError(p, "header is not a JSON object", offset=8)
        self._data_start = 8 + n
        data_size = self._size - self._data_start
        meta = header.pop("__metadata__", None)
        if meta is not None and not isinstance(meta, dict):
            raise FormatError(p, "__metadata__ is not a JSON object", offset=8)
        self._metadata = dict(meta or {})
        if len(header) > max_tensors():
            raise FormatError(p, f"{len(header)} tensors, over the bound of {max_tensors()} "
                                 f"({MAX_TENSORS_ENV} raises it)", offset=8)
        spans: list[tuple[int, int, str]] = []
        order: list[tuple[int, str]] = []
        entries = self._entries
        file_name = str(p)
        # (45k tensors: the loop's own cost matters) each dtype string's type looked up once;
        # TensorInfo(...) without its Python-level __new__
        kinds: dict[str, tuple[ElementType, str, int]] = {}
        new = _new_tuple
        int_only = {int}
        if self._entries_at_once(header, data_size, file_name, spans, order):
            header = {}  # (all of them made)
        for name, spec in header.items():  # (a header the checks at once refused: which entry)
            if len(name) > MAX_NAME_LENGTH:
                raise FormatError(p, f"tensor name of {len(name)} characters (the bound is "
                                     f"{MAX_NAME_LENGTH}): corrupt?", tensor=name[:64] + "...")
            if not isinstance(spec, dict):
                raise FormatError(p, "header entry is not an object", tensor=name)
            dtype, shape, offs = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
            if not isinstance(dtype, str):
                raise FormatError(p, "missing dtype", tensor=name)
            kind = kinds.get(dtype)
            if kind is None:
                etype = ELEMENT_TYPES.get(dtype.upper())
                if etype is None:
                    raise UnsupportedDtypeError(
                        p, f"unknown or unsupported dtype {_short(dtype)} (supported: "
                           f"{', '.join(ELEMENT_TYPES)})", tensor=name)
                kind = kinds[dtype] = (etype, etype.name, etype.itemsize)
            etype, etype_name, itemsize = kind
            if (type(shape) is not list or len(shape) > MAX_RANK  # noqa: E721 (exact types:
                    or not int_only.issuperset(map(type, shape))  # JSON gives list, int, bool)
                    or (shape and (min(shape) < 0 or max(shape) > _INT64_MAX))):
                raise FormatError(p, f"shape {_short(shape)} is not a list of at most "
                                     f"{MAX_RANK} integers in [0, 2**63)", tensor=name)
            if (type(offs) is not list or len(offs) != 2  # noqa: E721
                    or type(offs[0]) is not int or type(offs[1]) is not int):  # noqa: E721
                raise FormatError(p, f"data_offsets {_short(offs)} is not [begin, end]",
                                  tensor=name)
            begin, end = offs
            if not 0 <= begin <= end:
                raise FormatError(p, f"data_offsets {_short(offs)} are not increasing "
                                     "non-negative integers", tensor=name)
            if end > data_size:
                raise FormatError(
                    p, f"data ends at byte {_short(self._data_start + end)}, past the end of "
                       f"the file ({self._size} bytes): truncated?", tensor=name,
                    offset=self._data_start + begin if begin <= data_size else None)
            numel = math.prod(shape)
            if end - begin != numel * itemsize:
                raise FormatError(
                    p, f"data_offsets span {end - begin} bytes but shape {_short(shape)} of "
                       f"{etype_name} needs {_short(numel * itemsize)}", tensor=name,
                    offset=self._data_start + begin)
            dims = tuple(shape)
            if len(dims) == 2:
                row_dims, view = 1, dims
            else:
                row_dims = view_row_dims(name, dims) if len(dims) > 2 else 1
                view = view_of(dims, row_dims)
            info = new(TensorInfo, (name, dims, etype_name, file_name, row_dims))
            entries[name] = new(_Entry, (info, etype, begin, end, view[0], view[1],
                                         view[1] * itemsize, self._data_start + begin))
            order.append((begin, name))
            if end > begin:
                spans.append((begin, end, name))
        order.sort()  # file order: by offset, then name
        self._tensors = tuple(entries[n].info for _b, n in order)
        spans.sort()
        for (b0, e0, n0), (b1, _e1, n1) in zip(spans, spans[1:], strict=False):
            if b1 < e0:
                raise FormatError(p, f"data of {n1!r} [{b1}, ...) overlaps {n0!r} "
                                     f"[{b0}, {e0})", tensor=n1, offset=self._data_start + b1)

    def _entries_at_once(self, header: dict[str, Any], data_size: int, file_name: str,
                         spans: list[tuple[int, int, str]], order: list[tuple[int, str]]
                         ) -> bool:
        """The entries of a header every entry of which passes ``_parse_header``'s checks,
        each check made over all of them at once (C loops over columns: 45k tensors in ~0.05 s,
        not ~0.1); ``spans`` and ``order`` as that loop fills them. False, with nothing
        filled in, when a check fails (that loop then finds and names the entry)."""
        names = list(header)
        specs = list(header.values())
        if not names or max(map(len, names)) > MAX_NAME_LENGTH \
                or not {dict}.issuperset(map(type, specs)):
            return False
        dtypes, shapes, offs = (list[Any](map(dict.get, specs, repeat(k)))
                                for k in ("dtype", "shape", "data_offsets"))
        if not {str}.issuperset(map(type, dtypes)):
            return False
        kinds: dict[str, ElementType] = {}
        for d in set(dtypes):
            etype = ELEMENT_TYPES.get(d.upper())
            if etype is None:
                return False
            kinds[d] = etype
        if not {list}.issuperset(map(type, shapes)) or max(map(len, shapes)) > MAX_RANK \
                or not {list}.issuperset(map(type, offs)) or set(map(len, offs)) != {2}:
            return False
        dims = list(itertools.chain.from_iterable(shapes))
        if not {int}.issuperset(map(type, dims)) \
                or (dims and (min(dims) < 0 or max(dims) > _INT64_MAX)):
            return False
        begins, ends = list(map(itemgetter(0), offs)), list(map(itemgetter(1), offs))
        if not {int}.issuperset(map(type, begins)) or not {int}.issuperset(map(type, ends)) \
                or min(begins) < 0 or not all(map(operator.le, begins, ends)) \
                or max(ends) > data_size:
            return False
        sizes = {d: k.itemsize for d, k in kinds.items()}
        itemsizes = list(map(sizes.__getitem__, dtypes))
        if list(map(operator.sub, ends, begins)) != list(map(operator.mul,
                                                             map(math.prod, shapes), itemsizes)):
            return False
        new = _new_tuple
        tuples = list(map(tuple, shapes))
        row_dims = [view_row_dims(n, t) if len(t) > 2 else 1
                    for n, t in zip(names, tuples, strict=True)]
        views = [t if len(t) == 2 else view_of(t, r) for t, r in zip(tuples, row_dims, strict=True)]
        type_names = {d: k.name for d, k in kinds.items()}
        infos = map(new, repeat(TensorInfo), zip(
            names, tuples, map(type_names.__getitem__, dtypes), repeat(file_name), row_dims,
            strict=False))  # (repeat: endless)
        cols = list(map(itemgetter(1), views))
        fields = zip(infos, map(kinds.__getitem__, dtypes), begins, ends,
                     map(itemgetter(0), views), cols, map(operator.mul, cols, itemsizes),
                     map(operator.add, begins, repeat(self._data_start)), strict=True)
        self._entries.update(zip(names, map(new, repeat(_Entry), fields), strict=True))
        order += zip(begins, names, strict=True)
        spans += [(b, e, n) for b, e, n in zip(begins, ends, names, strict=True) if e > b]
        return True

    # -- Reader ------------------------------------------------------------------------------
    def tensors(self) -> Sequence[TensorInfo]:
        return self._tensors

    def info(self, name: str) -> TensorInfo:
        ent = self._entries.get(name)
        if ent is None:
            raise KeyError(f"{self.path}: no tensor {name!r}")
        return ent.info

    @property
    def files(self) -> Sequence[Path]:
        return (self.path,)

    @property
    def metadata(self) -> Mapping[str, Any]:
        return self._metadata

    def stored(self, name: str) -> np.ndarray:
        """The tensor's 2-D view in its storage dtype, a view of the source (no copy, no
        decode; not tracked for ``release``)."""
        try:
            ent = self._entries[name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor {name!r}") from None
        a = self._file.view(self._data_start + ent.begin, self._data_start + ent.end,
                            track=False).view(ent.etype.storage)
        return a.reshape(ent.info.e_rows, ent.info.e_cols)

    def _block(self, ent: _Entry, e_r0: int, e_r1: int, e_c0: int, e_c1: int | None
               ) -> np.ndarray:
        """The block in its storage dtype: a view of just the bytes of its rows (no copy)."""
        cols = ent.cols
        c1 = cols if e_c1 is None else e_c1
        if not (0 <= e_r0 <= e_r1 <= ent.rows and 0 <= e_c0 <= c1 <= cols):
            check_block(ent.info, e_r0, e_r1, e_c0, e_c1)  # raises, naming the tensor
        rb, start = ent.row_bytes, ent.start
        raw = self._file.view(start + e_r0 * rb, start + e_r1 * rb)
        rows = raw.view(ent.etype.storage).reshape(e_r1 - e_r0, cols)
        return rows if e_c0 == 0 and c1 == cols else rows[:, e_c0:c1]

    def read(self, name: str, e_r0: int, e_r1: int, e_c0: int = 0,
             e_c1: int | None = None) -> np.ndarray:
        ent = self._entries.get(name)
        if ent is None:
            raise KeyError(f"{self.path}: no tensor {name!r}")
        block = self._block(ent, e_r0, e_r1, e_c0, e_c1)
        return np.ascontiguousarray(ent.etype.decode(block), dtype=np.float32)

    def read_codes(self, name: str, e_r0: int, e_r1: int, e_c0: int = 0,
                   e_c1: int | None = None) -> np.ndarray | None:
        ent = self._entries.get(name)
        if ent is None or ent.etype.name not in CODE_DTYPES:
            return None
        return self._block(ent, e_r0, e_r1, e_c0, e_c1).view(np.uint16)

    def code_span(self, name: str) -> CodeSpan | None:
        """Where a BF16/F16 tensor's codes lie (for readers of many small blocks, which view
        the rows' bytes themselves); None for other dtypes or an unknown name."""
        ent = self._entries.get(name)
        if ent is None or ent.etype.name not in CODE_DTYPES:
            return None
        return _new_tuple(CodeSpan, (self._file, ent.start, ent.row_bytes, ent.rows, ent.cols,
                                     ent.etype.name))  # (CodeSpan(...) less its __new__)

    def raw_bytes(self) -> np.ndarray:
        """The whole file as a read-only uint8 array (a view of the source, not tracked)."""
        return self._file.view(0, self._size, track=False)

    def release(self) -> None:
        self._file.release()

    def close(self) -> None:
        self._file.close()


def write_safetensors(path: str | os.PathLike[str], tensors: Mapping[str, tuple[str, Sequence[int],
                      np.ndarray]], metadata: Mapping[str, str] | None = None) -> None:
    """Write a safetensors file from ``{name: (dtype, shape, storage array)}``; the storage array
    holds the elements, or their raw bits as unsigned integers (BF16 and F16 as uint16). Used by
    the demo and by tests (numpy has no bfloat16; ``safetensors.numpy`` cannot write one)."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    blobs = []
    offset = 0
    for name, (dtype, shape, arr) in tensors.items():
        etype = ELEMENT_TYPES[dtype]
        a = np.ascontiguousarray(arr)
        if a.dtype.kind in "ui" and etype.storage.kind == "f" \
                and a.dtype.itemsize == etype.itemsize:
            a = a.view(etype.storage)  # integer codes are the raw bits (F16 from uint16)
        data = a.astype(etype.storage, copy=False).tobytes()
        if len(data) != math.prod(shape) * etype.itemsize:
            raise ValueError(f"{name}: {len(data)} bytes for shape {list(shape)} of {dtype}")
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        for b in blobs:
            fh.write(b)
    os.replace(tmp, path)
