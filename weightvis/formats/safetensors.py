"""safetensors reader: header parsed with a size bound, data memory-mapped, decoded by block.

Format (huggingface/safetensors): u64 little-endian header length N, N bytes of JSON
``{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}``, then the data
buffer; offsets are relative to the start of the data buffer.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError, UnsupportedDtypeError
from ..types import TensorInfo
from .base import MappedFile, Reader, check_block
from .dtypes import CODE_DTYPES, ELEMENT_TYPES, ElementType

__all__ = ["SafetensorsReader", "MAX_HEADER_BYTES", "looks_like_safetensors", "write_safetensors"]

MAX_HEADER_BYTES = 100 * 1024 * 1024
"""The reference implementation's bound on the JSON header (100 MB)."""

def looks_like_safetensors(head: bytes) -> bool:
    """True when the first bytes are a plausible safetensors prefix (u64 length, then '{')."""
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= MAX_HEADER_BYTES and head[8:9] == b"{"


class _Entry:
    __slots__ = ("info", "etype", "begin", "end")

    def __init__(self, info: TensorInfo, etype: ElementType, begin: int, end: int):
        self.info, self.etype, self.begin, self.end = info, etype, begin, end


class SafetensorsReader(Reader):
    """One ``.safetensors`` file."""

    format = "safetensors"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file = MappedFile(self.path)
        self._fh, self._size = self._file.fh, self._file.size
        self._entries: dict[str, _Entry] = {}
        self._metadata: dict[str, Any] = {}
        self._data_start = 0
        try:
            self._parse_header()
        except BaseException:
            self._file.close()
            raise

    # -- header ------------------------------------------------------------------------------
    def _parse_header(self) -> None:
        p = self.path
        head = self._fh.read(8)
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
        raw = self._fh.read(n)
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise FormatError(p, f"header is not valid JSON ({e})", offset=8) from None
        if not isinstance(header, dict):
            raise FormatError(p, "header is not a JSON object", offset=8)
        self._data_start = 8 + n
        data_size = self._size - self._data_start
        meta = header.pop("__metadata__", None)
        if meta is not None and not isinstance(meta, dict):
            raise FormatError(p, "__metadata__ is not a JSON object", offset=8)
        self._metadata = dict(meta or {})
        spans: list[tuple[int, int, str]] = []
        for name, spec in header.items():
            if not isinstance(spec, dict):
                raise FormatError(p, "header entry is not an object", tensor=name)
            dtype, shape, offs = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
            if not isinstance(dtype, str):
                raise FormatError(p, "missing dtype", tensor=name)
            etype = ELEMENT_TYPES.get(dtype.upper())
            if etype is None:
                raise UnsupportedDtypeError(
                    p, f"unknown or unsupported dtype {dtype!r} (supported: "
                       f"{', '.join(ELEMENT_TYPES)})", tensor=name)
            if (not isinstance(shape, list)
                    or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                               for d in shape)):
                raise FormatError(p, f"shape {shape!r} is not a list of non-negative integers",
                                  tensor=name)
            if (not isinstance(offs, list) or len(offs) != 2
                    or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)):
                raise FormatError(p, f"data_offsets {offs!r} is not [begin, end]", tensor=name)
            begin, end = offs
            numel = math.prod(shape)
            if not 0 <= begin <= end:
                raise FormatError(p, f"data_offsets [{begin}, {end}] are not increasing",
                                  tensor=name, offset=self._data_start + begin)
            if end - begin != numel * etype.itemsize:
                raise FormatError(
                    p, f"data_offsets span {end - begin} bytes but shape {shape} of {dtype} "
                       f"needs {numel * etype.itemsize}", tensor=name,
                    offset=self._data_start + begin)
            if end > data_size:
                raise FormatError(
                    p, f"data ends at byte {self._data_start + end}, past the end of the file "
                       f"({self._size} bytes): truncated?", tensor=name,
                    offset=self._data_start + begin)
            info = TensorInfo(name, tuple(shape), etype.name, str(p))
            self._entries[name] = _Entry(info, etype, begin, end)
            if end > begin:
                spans.append((begin, end, name))
        spans.sort()
        for (b0, e0, n0), (b1, _e1, n1) in zip(spans, spans[1:], strict=False):
            if b1 < e0:
                raise FormatError(p, f"data of {n1!r} [{b1}, ...) overlaps {n0!r} "
                                     f"[{b0}, {e0})", tensor=n1, offset=self._data_start + b1)
        # file order
        self._order = sorted(self._entries, key=lambda k: (self._entries[k].begin, k))

    # -- Reader ------------------------------------------------------------------------------
    def tensors(self) -> Sequence[TensorInfo]:
        return [self._entries[k].info for k in self._order]

    @property
    def files(self) -> Sequence[Path]:
        return (self.path,)

    @property
    def metadata(self) -> Mapping[str, Any]:
        return self._metadata

    def stored(self, name: str) -> np.ndarray:
        """The tensor's 2-D view in its storage dtype, memory-mapped (no copy, no decode)."""
        try:
            ent = self._entries[name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor {name!r}") from None
        buf = self._file.buffer()
        a = buf[self._data_start + ent.begin:self._data_start + ent.end].view(ent.etype.storage)
        return a.reshape(ent.info.e_rows, ent.info.e_cols)

    def read(self, name: str, e_r0: int, e_r1: int, e_c0: int = 0,
             e_c1: int | None = None) -> np.ndarray:
        ent = self._entries.get(name)
        if ent is None:
            raise KeyError(f"{self.path}: no tensor {name!r}")
        c1 = check_block(ent.info, e_r0, e_r1, e_c0, e_c1)
        block = self.stored(name)[e_r0:e_r1, e_c0:c1]
        out = np.ascontiguousarray(ent.etype.decode(block), dtype=np.float32)
        row_bytes = ent.info.e_cols * ent.etype.itemsize
        start = self._data_start + ent.begin
        self._file.touch(start + e_r0 * row_bytes, start + e_r1 * row_bytes)
        return out

    def read_codes(self, name: str, e_r0: int, e_r1: int, e_c0: int = 0,
                   e_c1: int | None = None) -> np.ndarray | None:
        ent = self._entries.get(name)
        if ent is None or ent.etype.name not in CODE_DTYPES:
            return None
        c1 = check_block(ent.info, e_r0, e_r1, e_c0, e_c1)
        block = self.stored(name)[e_r0:e_r1, e_c0:c1].view(np.uint16)
        row_bytes = ent.info.e_cols * 2
        start = self._data_start + ent.begin
        self._file.touch(start + e_r0 * row_bytes, start + e_r1 * row_bytes)
        return block

    def raw_bytes(self) -> np.ndarray:
        """The whole file as a read-only uint8 array (memory-mapped)."""
        return self._file.buffer()

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
