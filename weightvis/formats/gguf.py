"""GGUF reader: the header parsed by our own parser (``gguf_header.py``: v2, v3, every claim
checked against the file), the tensors' types, shapes and data ranges checked here, and decode
to float32 by row range.

Decoding: a row of a tensor's 2-D view is a whole number of ggml blocks (ggml requires the
innermost dim to be a multiple of the block size), so rows ``e_r0..e_r1`` are one contiguous byte
range; only the blocks covering the requested columns are handed to ``gguf.quants.dequantize``
(the reference dequantizer, bit-exact with llama.cpp). Plain F32/F16/BF16/F64 and I8..I64 are
decoded with numpy, like the safetensors reader.
"""

from __future__ import annotations

import functools
import math
import mmap
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gguf
import gguf.quants
import numpy as np

from ..errors import FormatError, UnsupportedDtypeError
from ..index import view_row_dims
from ..sources import ByteSource, as_source
from ..types import TensorInfo
from .base import Reader, check_block, gc_paused
from .dtypes import ELEMENT_TYPES, ElementType
from .gguf_header import (
    DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    MAX_ARRAY_DEPTH,
    MAX_DIMS,
    MAX_KV,
    SHORT_ARRAY_MAX,
    SHORT_STRING_MAX,
    TensorRecord,
    parse_header,
)

__all__ = ["GGUFReader", "GGUF_MAGIC", "DEFAULT_ALIGNMENT", "SHORT_ARRAY_MAX",
           "SHORT_STRING_MAX", "MAX_DIMS", "MAX_KV", "MAX_ARRAY_DEPTH", "ggml_type_name",
           "can_decode"]

_PAGE = mmap.PAGESIZE

# ggml types decoded with numpy (same decode as safetensors' element types)
_NUMPY_TYPES = {"F64", "F32", "F16", "BF16", "I8", "I16", "I32", "I64"}


def ggml_type_name(qtype: int) -> str | None:
    """The ggml type name (``Q4_K``) of a type number, or None when this gguf-py does not know
    it (or knows the name but not its block geometry)."""
    try:
        t = gguf.GGMLQuantizationType(qtype)
    except ValueError:
        return None
    if t not in gguf.constants.GGML_QUANT_SIZES:
        return None
    return t.name


_REFERENCE_ONLY = bool(os.environ.get("WEIGHTVIS_GGML_REFERENCE"))
"""``WEIGHTVIS_GGML_REFERENCE=1``: decode with gguf-py only (benchmarks/quant_speed.py)."""


def _compiled_decode(raw: np.ndarray, type_name: str) -> np.ndarray | None:
    from ..kernels.ggml import decode  # compiled: loads numba on the first quantized read

    return decode(raw, type_name)


@functools.cache
def can_decode(type_name: str) -> bool:
    """True when a ggml type can be decoded to float32 (numpy, or ``gguf.quants``)."""
    if type_name in _NUMPY_TYPES:
        return True
    try:
        t = gguf.GGMLQuantizationType[type_name]
        _bs, ts = gguf.constants.GGML_QUANT_SIZES[t]
        gguf.quants.dequantize(np.zeros((1, ts), np.uint8), t)
    except (KeyError, NotImplementedError):
        return False
    return True


class _Entry:
    __slots__ = ("info", "qtype", "etype", "begin", "nbytes", "row_bytes", "block_size",
                 "type_size")

    def __init__(self, info: TensorInfo, qtype: int, etype: ElementType | None, begin: int,
                 nbytes: int, row_bytes: int, block_size: int, type_size: int) -> None:
        self.info, self.qtype, self.etype = info, qtype, etype
        self.begin, self.nbytes, self.row_bytes = begin, nbytes, row_bytes
        self.block_size, self.type_size = block_size, type_size


class GGUFReader(Reader):
    """One ``.gguf`` file (v2 or v3, little-endian)."""

    format = "gguf"

    def __init__(self, source: ByteSource | str | os.PathLike[str]) -> None:
        self._file = as_source(source)
        self.path = self._file.path
        self._size = self._file.size
        self._closed = False
        self._tensors: tuple[TensorInfo, ...] | None = None
        try:
            self.version = 0
            self.alignment = DEFAULT_ALIGNMENT
            self.data_start = 0
            self._metadata: dict[str, Any] = {}
            self._entries: dict[str, _Entry] = {}
            with gc_paused():
                head = parse_header(self._file)
            self.version, self.alignment = head.version, head.alignment
            self.data_start, self._metadata = head.data_start, head.metadata
            self._check_data(head.tensors)
        except BaseException:
            self.close()
            raise
        # the header (vocabulary ...) is not needed again: drop its pages
        if head.end > _PAGE:
            self._file.touch(0, (head.end // _PAGE) * _PAGE)
            self._file.release()

    # -- header ------------------------------------------------------------------------------
    # -- tensors -------------------------------------------------------------------------------
    def _check_data(self, infos: list[TensorRecord]) -> None:
        p, size = self.path, self._size
        data_size = size - self.data_start
        spans: list[tuple[int, int, str]] = []
        for name, ne, qtype, begin, type_off in infos:
            tname = ggml_type_name(qtype)
            if tname is None:
                raise UnsupportedDtypeError(p, f"unknown ggml type {qtype} (gguf-py "
                                               f"{_gguf_version()} does not know it)",
                                            tensor=name, offset=type_off)
            bs, ts = gguf.constants.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(qtype)]
            ne0 = ne[0] if ne else 1
            if ne0 % bs:
                raise FormatError(p, f"innermost dim {ne0} is not a multiple of the {tname} "
                                     f"block size {bs}", tensor=name, offset=type_off)
            shape = tuple(int(d) for d in reversed(ne))
            info = TensorInfo(name, shape, tname, self._file.name,
                              view_row_dims(name, shape) if len(shape) > 2 else 1)
            numel = math.prod(shape)
            nbytes = numel // bs * ts
            row_bytes = info.e_cols // bs * ts
            assert info.e_cols % bs == 0 and info.e_rows * row_bytes == nbytes
            if begin % self.alignment:
                raise FormatError(p, f"data offset {begin} is not a multiple of the alignment "
                                     f"{self.alignment}", tensor=name, offset=type_off + 4)
            if begin + nbytes > data_size:
                raise FormatError(
                    p, f"data [{self.data_start + begin}, {self.data_start + begin + nbytes}) "
                       f"runs past the end of the file ({size} bytes): truncated?",
                    tensor=name, offset=self.data_start + begin)
            etype = ELEMENT_TYPES[tname] if tname in _NUMPY_TYPES else None
            self._entries[name] = _Entry(info, qtype, etype, self.data_start + begin, nbytes,
                                         row_bytes, bs, ts)
            if nbytes:
                spans.append((begin, begin + nbytes, name))
        spans.sort()
        for (b0, e0, n0), (b1, _e1, n1) in zip(spans, spans[1:], strict=False):
            if b1 < e0:
                raise FormatError(p, f"data of {n1!r} [{b1}, ...) overlaps {n0!r} [{b0}, {e0}) "
                                     "(offsets relative to the data section)", tensor=n1,
                                  offset=self.data_start + b1)

    # -- GGUF extras ---------------------------------------------------------------------------
    @property
    def kv(self) -> dict[str, Any]:
        """The scalar KV pairs (numbers, booleans, strings); arrays are in ``metadata``."""
        return {k: v for k, v in self._metadata.items() if not isinstance(v, (list, dict))}

    def arch_info(self) -> dict[str, Any]:
        """Architecture numbers from the KV metadata (None when absent or not a non-negative
        integer - a per-layer array, a string, a float): ``architecture``,
        ``block_count``, ``embedding_length``, ``head_count``, ``head_count_kv``,
        ``expert_count``, ``context_length``, ``vocab_size`` (length of
        ``tokenizer.ggml.tokens``, else ``<arch>.vocab_size``)."""
        m = self._metadata
        arch = m.get("general.architecture")
        a = arch if isinstance(arch, str) else ""

        def get(key: str) -> int | None:
            return _count(m.get(f"{a}.{key}")) if a else None

        tokens = m.get("tokenizer.ggml.tokens")
        if isinstance(tokens, dict):
            vocab = _count(tokens.get("length"))
        elif isinstance(tokens, list):
            vocab = len(tokens)
        else:
            vocab = get("vocab_size")
        return {
            "architecture": arch if isinstance(arch, str) else None,
            "block_count": get("block_count"),
            "embedding_length": get("embedding_length"),
            "head_count": get("attention.head_count"),
            "head_count_kv": get("attention.head_count_kv"),
            "expert_count": get("expert_count"),
            "context_length": get("context_length"),
            "vocab_size": vocab,
        }

    def byte_range(self, name: str) -> tuple[int, int]:
        """``(begin, end)`` file offsets of a tensor's stored data."""
        e = self._entry(name)
        return e.begin, e.begin + e.nbytes

    # -- Reader ------------------------------------------------------------------------------
    def tensors(self) -> Sequence[TensorInfo]:
        got = self._tensors
        if got is None:
            got = self._tensors = tuple(e.info for e in self._entries.values())
        return got

    def info(self, name: str) -> TensorInfo:
        return self._entry(name).info

    def _entry(self, name: str) -> _Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor {name!r}") from None

    @property
    def files(self) -> Sequence[Path]:
        return (self.path,)

    @property
    def metadata(self) -> Mapping[str, Any]:
        return self._metadata


    def read(self, name: str, e_r0: int, e_r1: int, e_c0: int = 0,
             e_c1: int | None = None) -> np.ndarray:
        ent = self._entry(name)
        t = ent.info
        c1 = check_block(t, e_r0, e_r1, e_c0, e_c1)
        if not can_decode(t.dtype):
            raise UnsupportedDtypeError(
                self.path, f"ggml type {t.dtype} ({ent.qtype}) cannot be decoded (gguf-py "
                           f"{_gguf_version()} has no dequantizer for it)", tensor=name,
                offset=ent.begin)
        n_rows = e_r1 - e_r0
        if n_rows == 0 or c1 == e_c0:
            return np.zeros((n_rows, c1 - e_c0), np.float32)
        lo = ent.begin + e_r0 * ent.row_bytes
        hi = ent.begin + e_r1 * ent.row_bytes
        if self._closed:
            raise ValueError(f"{self.path}: reader is closed")
        rows = self._file.view(lo, hi).reshape(n_rows, ent.row_bytes)
        if ent.etype is not None:
            block = rows.view(ent.etype.storage)[:, e_c0:c1]
            out = np.ascontiguousarray(ent.etype.decode(block), dtype=np.float32)
        else:
            bs, ts = ent.block_size, ent.type_size
            b0, b1 = e_c0 // bs, -(-c1 // bs)  # the blocks covering the columns
            raw = np.ascontiguousarray(rows[:, b0 * ts:b1 * ts])
            vals = None if _REFERENCE_ONLY else _compiled_decode(raw, t.dtype)
            if vals is None:  # a type without a compiled decoder: gguf-py's reference
                with np.errstate(all="ignore"):  # garbage scales make NaN / Inf: drawn as such
                    vals = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType(ent.qtype))
            assert vals.shape == (n_rows, (b1 - b0) * bs), (vals.shape, n_rows, b0, b1)
            out = np.ascontiguousarray(vals[:, e_c0 - b0 * bs:c1 - b0 * bs], dtype=np.float32)
        return out

    def raw_bytes(self) -> np.ndarray:
        """The whole file as a read-only uint8 array (a view of the source, not tracked)."""
        if self._closed:
            raise ValueError(f"{self.path}: reader is closed")
        return self._file.view(0, self._size, track=False)

    def release(self) -> None:
        self._file.release()

    def close(self) -> None:
        self._closed = True
        self._file.close()


def _count(v: Any) -> int | None:
    """A count from the KV metadata (a non-negative integer), else None."""
    return v if type(v) is int and v >= 0 else None  # noqa: E721 (bool is not a count)


def _gguf_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gguf")
    except PackageNotFoundError:  # pragma: no cover
        return "?"
