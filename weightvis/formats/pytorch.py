# Over the 450-line guide (~530): the two containers and the tensor checks fill the reader's
# state, and splitting them would pass that state around; the pickle, the zip and the
# state-dict search are already modules of their own.
"""PyTorch checkpoints (``.bin``, ``.pt``, ``.pth``, ``.ckpt``) read without torch and without
running code from the file.

Containers (torch/serialization.py):

- **zip** (torch >= 1.6): ``<prefix>/data.pkl`` (the object, tensors as persistent ids
  ``('storage', storage_type, key, location, numel)``), ``<prefix>/data/<key>`` (raw storage
  bytes in the writer's ``byteorder``), ``<prefix>/version``. Read through ``zipread.py``:
  stored entries are memory-mapped, deflated ones inflated by the chunks a read needs, never
  whole; headers, sizes and CRCs are checked. TorchScript archives (``code/``,
  ``constants.pkl``) are read the same way: the tensors of their ``data.pkl`` are the module's
  attributes.
- **legacy** (torch < 1.6, ``_use_new_zipfile_serialization=False``): five pickles in a row -
  magic number ``0x1950a86a20f9469cfc6c``, protocol version 1001, ``sys_info``, the object
  (persistent ids ``('storage', storage_type, key, location, numel, view_metadata)``), the list of
  storage keys - then each storage as a little-endian int64 element count and its raw bytes
  (always little-endian; THPStorage_writeFileRaw converts). Storages are memory-mapped in place.

**Reading never executes code from the file**: pickles are read by the restricted unpickler of
``pickle_safe.py``, through the opcode checks and memory bound of ``pickle_scan.py``; where the
tensors are in the object and what they are called is ``statedict.py``. ``metadata`` says which
key was used (``state_dict_key``), lists the entries not drawn (``other_entries``) and the
unresolved globals (``placeholder_globals``).

**Unsupported tensors** (quantized, complex, sparse, nested, meta, fnuz float8, sub-byte types)
are *excluded* from :meth:`PyTorchReader.tensors` and listed in ``metadata["unsupported_tensors"]``
with the reason, so the rest of the checkpoint still renders; :meth:`PyTorchReader.read` on one of
them raises :class:`UnsupportedDtypeError`.

**Extents.** Storage offsets, strides (transposed and other non-contiguous views) and storages
shared by several tensors are honoured: a block read is ``np.lib.stride_tricks.as_strided`` over
the storage's bytes, after every tensor's extent has been checked at open time: sizes, strides
and offsets are non-negative and below 2^62, the last element reachable (offset + sum of
(size_i - 1) * stride_i) lies inside the storage, the storage inside its entry or record.
Views may overlap - a stride-0 ``expand`` of a bias, tied weights on one storage are real - but
the elements drawn may number at most ``max_view_ratio()`` per byte of the storages they view
(plus ``VIEW_ALLOWANCE``), so that a few bytes of storage cannot claim a trillion pixels.
"""

from __future__ import annotations

import math
import os
import pickle
import struct
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import FormatError, UnsupportedDtypeError
from ..index import view_row_dims
from ..sources import ByteSource, as_source
from ..types import TensorInfo
from .base import Reader, check_block, gc_paused
from .dtypes import ELEMENT_TYPES, ElementType
from .pickle_safe import (
    DTYPES,
    MAX_NUMEL,
    RestrictedUnpickler,
    StorageRef,
    TensorRef,
    Unsupported,
    short,
)
from .pickle_scan import PickleRefused, PickleStream
from .pt_limits import (
    VIEW_ALLOWANCE,
    VIEW_RATIO_ENV,
    check_crc,
    max_pickle_memory,
    max_view_ratio,
    max_zip_entries,
    max_zip_ratio,
)
from .statedict import STATE_DICT_KEYS, STRIP_PREFIXES, find_tensors
from .zipread import ZipArchive

__all__ = ["PyTorchReader", "LEGACY_MAGIC", "STATE_DICT_KEYS", "STRIP_PREFIXES"]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
"""First pickle of a legacy (non-zip) ``torch.save`` file."""
LEGACY_PROTOCOL = 1001

_MAX_RANK = 64             # dimensions of a tensor
_MAX_LISTED = 200          # names listed in metadata (duplicates, placeholder globals)
_MAX_TEXT_ENTRY = 64       # bytes of the byteorder and version entries


class _Bytes(Protocol):
    """Where a storage's bytes are: a zip entry, or a record of a legacy file."""

    size: int

    def read(self, lo: int, hi: int) -> np.ndarray: ...


class _Record:
    """A legacy storage record: ``size`` bytes from ``start`` of the file."""

    __slots__ = ("source", "start", "size")

    def __init__(self, source: ByteSource, start: int, size: int) -> None:
        self.source, self.start, self.size = source, start, size

    def read(self, lo: int, hi: int) -> np.ndarray:
        return self.source.view(self.start + lo, self.start + hi)


class _Entry:
    __slots__ = ("info", "etype", "blob", "base", "offset", "rows", "row_stride", "trailing",
                 "neg", "storage_dtype", "span")

    def __init__(self, info: TensorInfo, etype: ElementType, blob: _Bytes, base: int, offset: int,
                 rows: int, row_stride: int, trailing: list[tuple[int, int]], neg: bool,
                 storage_dtype: np.dtype[Any], span: int) -> None:
        self.info, self.etype, self.blob, self.base, self.offset = info, etype, blob, base, offset
        self.rows, self.row_stride, self.trailing, self.neg = rows, row_stride, trailing, neg
        self.storage_dtype, self.span = storage_dtype, span


def _is_count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < MAX_NUMEL


def _merge_trailing(size: Sequence[int], stride: Sequence[int]) -> list[tuple[int, int]]:
    """Trailing dims (size, stride) of the 2-D view's columns with size-1 dims dropped and
    adjacent dims merged where one stride steps over the other; at least one dim."""
    dims = [(s, t) for s, t in zip(size, stride, strict=True) if s != 1]
    out: list[tuple[int, int]] = []
    for s, t in dims:
        if out and out[-1][1] == t * s:
            ps, _pt = out[-1]
            out[-1] = (ps * s, t)
        else:
            out.append((s, t))
    return out or [(1, 0)]


def _one_line(text: str, limit: int = 200) -> str:
    """A foreign message (an exception's, a pickle's text) as one bounded line."""
    text = text if len(text) <= limit else text[:limit] + "…"
    return text.encode("unicode_escape", "backslashreplace").decode("ascii") if (
        not text.isprintable()) else text


class PyTorchReader(Reader):
    """One PyTorch checkpoint file (zip, TorchScript zip or legacy pickle)."""

    format = "pytorch"

    def __init__(self, source: ByteSource | str | os.PathLike[str]) -> None:
        self._file = as_source(source)
        self.path = self._file.path
        self._size = self._file.size
        self._closed = False
        self._tensors: tuple[TensorInfo, ...] | None = None
        self._zip: ZipArchive | None = None
        self._entries: dict[str, _Entry] = {}
        self._unsupported: dict[str, str] = {}
        self._metadata: dict[str, Any] = {}
        self._placeholder_names: list[str] = []
        try:
            if self._size < 2:
                raise FormatError(self.path, f"file is {self._size} bytes, too short for a "
                                             "PyTorch checkpoint")
            with gc_paused():
                self._open()
        except BaseException:
            self.close()
            raise

    # -- containers --------------------------------------------------------------------------
    def _open(self) -> None:
        head = self._file.read(0, min(4, self._size))
        if head == b"PK\x03\x04":
            root, blob_of, little = self._open_zip()
        elif head[:1] == b"\x80":
            root, blob_of, little = self._open_legacy()
        else:
            raise FormatError(self.path, f"not a PyTorch checkpoint (starts with {head!r}; "
                                         "expected a zip archive or a pickle)", offset=0)
        self._build(root, blob_of, little)

    def _unpickle(self, fetch: Callable[[int], bytes], what: str, *, start: int = 0,
                  archive: str = "data") -> tuple[Any, RestrictedUnpickler, PickleStream]:
        """One pickle through the opcode checks; every failure is a FormatError naming
        ``what`` (and, for a legacy file, the byte where the pickle starts)."""
        stream = PickleStream(fetch, start=start, max_memory=max_pickle_memory())
        up = RestrictedUnpickler(stream, archive)
        at = start if self._zip is None else None
        try:
            root = up.load()
        except FormatError:
            raise
        except PickleRefused as e:
            raise FormatError(self.path, f"{what}: refused ({e})", offset=at) from None
        except RecursionError:
            raise FormatError(self.path, f"{what}: cannot unpickle (nested too deeply)",
                              offset=at) from None
        except MemoryError:
            raise FormatError(self.path, f"{what}: cannot unpickle (it asks for more memory "
                                         "than there is)", offset=at) from None
        except (EOFError, pickle.UnpicklingError) as e:
            if isinstance(e, EOFError) or "truncated" in str(e):
                raise FormatError(self.path, f"{what}: cannot unpickle (it ends before its "
                                             "STOP opcode: truncated?)", offset=at) from None
            raise FormatError(self.path, f"{what}: cannot unpickle (UnpicklingError: "
                                         f"{_one_line(str(e))})", offset=at) from None
        except ValueError as e:
            if "integer string conversion" in str(e):  # past sys.get_int_max_str_digits()
                raise FormatError(self.path, f"{what}: cannot unpickle (it holds an integer of "
                                             "more digits than Python converts)",
                                  offset=at) from None
            raise FormatError(self.path, f"{what}: cannot unpickle (ValueError: "
                                         f"{_one_line(str(e))})", offset=at) from None
        except Exception as e:  # any other failure of a hostile or broken pickle
            msg = _one_line(str(e) or type(e).__name__)
            raise FormatError(self.path, f"{what}: cannot unpickle ({type(e).__name__}: "
                                         f"{msg})", offset=at) from None
        return root, up, stream

    def _open_zip(self) -> tuple[Any, Callable[[StorageRef], _Bytes | None], bool]:
        p = self.path
        z = self._zip = ZipArchive(self._file, p, max_ratio=max_zip_ratio(),
                                   max_entries=max_zip_entries(), check_crc=check_crc())
        names = z.names
        pkls = [n for n in names if n == "data.pkl"
                or (n.endswith("/data.pkl") and n.count("/") == 1)]
        if not pkls:
            raise FormatError(p, "zip archive has no <archive>/data.pkl: not a PyTorch "
                                 "checkpoint")
        first_top = z.infos[0].filename.split("/")[0] + "/" if z.infos else ""
        pkl = next((n for n in pkls if n == first_top + "data.pkl"), pkls[0])
        prefix = pkl[: -len("data.pkl")]
        torchscript = any(n.startswith(prefix + "code/") for n in names) or (
            prefix + "constants.pkl" in names)
        what = ("TorchScript archive: " if torchscript else "") + _one_line(pkl, 200)
        little = True
        if prefix + "byteorder" in names:
            order = z.entry(prefix + "byteorder").read_small(_MAX_TEXT_ENTRY).strip()
            if order not in (b"little", b"big"):
                raise FormatError(p, f"{_one_line(prefix, 200)}byteorder is {order[:20]!r}, "
                                     "expected 'little' or 'big'")
            little = order == b"little"
        meta: dict[str, Any] = {"container": "torchscript" if torchscript else "zip",
                                "archive": prefix.rstrip("/"),
                                "byteorder": "little" if little else "big"}
        if prefix + "version" in names:
            version = z.entry(prefix + "version").read_small(_MAX_TEXT_ENTRY)
            meta["version"] = _one_line(version.decode("latin-1").strip(), 20)
        self._metadata.update(meta)
        root, up, stream = self._unpickle(z.entry(pkl).fetcher(), what)
        stream.drain()  # the rest of the entry, so that its CRC is checked
        self._placeholder_names = sorted(up.placeholders)

        def blob_of(st: StorageRef) -> _Bytes | None:
            name = f"{prefix}{st.archive}/{st.key}"
            return z.entry(name) if name in names else None

        return root, blob_of, little

    def _open_legacy(self) -> tuple[Any, Callable[[StorageRef], _Bytes | None], bool]:
        p, src, size = self.path, self._file, self._size
        pos = 0

        def next_pickle(what: str) -> tuple[Any, RestrictedUnpickler]:
            nonlocal pos
            at = pos

            def fetch(n: int) -> bytes:
                nonlocal at
                hi = min(size, at + n)
                data = src.read(at, hi)
                at = hi
                return data

            obj, up, stream = self._unpickle(fetch, what, start=pos)
            pos = stream.end
            return obj, up

        magic, _ = next_pickle("legacy pickle (magic number)")
        if magic != LEGACY_MAGIC:
            raise FormatError(p, "a pickle, but not a torch.save file (no PyTorch magic "
                                 "number)", offset=0)
        proto, _ = next_pickle("legacy pickle (protocol version)")
        if proto != LEGACY_PROTOCOL:
            raise FormatError(p, f"legacy protocol version {short(proto)}, expected "
                                 f"{LEGACY_PROTOCOL}")
        sys_info, _ = next_pickle("legacy pickle (sys_info)")
        root, up = next_pickle("legacy pickle")
        self._placeholder_names = sorted(up.placeholders)
        keys, _ = next_pickle("legacy pickle (storage keys)")
        if not isinstance(keys, list) or not all(isinstance(k, str) or _is_count(k)
                                                 for k in keys):
            raise FormatError(p, f"legacy storage key list {short(keys)} is not a list of "
                                 "keys", offset=pos)
        self._metadata.update({"container": "legacy", "byteorder": "little"})
        endian = dict.get(sys_info, "little_endian") if isinstance(sys_info, dict) else None
        if isinstance(endian, bool):
            self._metadata["writer_little_endian"] = endian
        records: dict[str, _Record] = {}
        for k in keys:
            key = str(k)
            st = up.storages.get(key)
            if st is None:
                raise FormatError(p, f"storage key {short(key)} listed but never referenced by "
                                     "the pickle", offset=pos)
            if st.dtype not in DTYPES:
                raise FormatError(p, f"storage {short(key)} is a {short(st.sclass)}, whose "
                                     "element size is unknown: the storages after it cannot be "
                                     "found", offset=pos)
            if pos + 8 > size:
                raise FormatError(p, f"storage {short(key)} header is past the end of the file "
                                     f"({size} bytes): truncated?", offset=pos)
            (numel,) = struct.unpack("<q", src.read(pos, pos + 8))
            itemsize = DTYPES[st.dtype][1]
            if numel < 0 or numel * itemsize != st.nbytes:
                raise FormatError(p, f"storage {short(key)} holds {numel} elements of "
                                     f"{st.dtype}, the pickle declares {st.nbytes // itemsize}",
                                  offset=pos)
            if pos + 8 + st.nbytes > size:
                raise FormatError(p, f"storage {short(key)} ({st.nbytes:,} bytes) runs past the "
                                     f"end of the file ({size} bytes): truncated?",
                                  offset=pos + 8)
            records[key] = _Record(src, pos + 8, st.nbytes)
            pos += 8 + st.nbytes
        return root, lambda st: records.get(st.key), True

    # -- tensors -----------------------------------------------------------------------------
    def _build(self, root: object, blob_of: Callable[[StorageRef], _Bytes | None],
               little: bool) -> None:
        found = find_tensors(root, self.path)
        meta = self._metadata
        meta["state_dict_key"] = ".".join(found.path)
        if found.stripped:
            meta["stripped_prefix"] = found.stripped
        duplicates: list[str] = []
        for name, t in found.tensors:
            if name in self._entries or name in self._unsupported:
                duplicates.append(name)
                continue
            if isinstance(t, Unsupported):
                self._unsupported[name] = t.reason
                continue
            why = self._add(name, t, blob_of, little)
            if why:
                self._unsupported[name] = why
        self._check_views()
        meta["tensor_count"] = len(self._entries)
        if found.other:
            meta["other_entries"] = found.other
        if self._unsupported:
            meta["unsupported_tensors"] = dict(self._unsupported)
        if duplicates:
            meta["duplicate_names"] = duplicates[:_MAX_LISTED]
        if self._placeholder_names:
            meta["placeholder_globals"] = [_one_line(n) for n in
                                           self._placeholder_names[:_MAX_LISTED]]

    def _add(self, name: str, t: TensorRef, blob_of: Callable[[StorageRef], _Bytes | None],
             little: bool) -> str | None:
        """Validate one tensor and register it; returns why it is unsupported, or None."""
        p = self.path
        st = t.storage
        if not isinstance(st, StorageRef):
            raise FormatError(p, f"tensor storage is {short(st)}, not a storage persistent id",
                              tensor=name)
        dname = t.dtype
        if not isinstance(dname, str) or dname not in DTYPES:
            what = _one_line(dname if isinstance(dname, str) else f"of {st.sclass}", 80)
            return f"element type {what} is not recognised"
        etname, itemsize, why = DTYPES[dname]
        if etname is None:
            return f"{dname}: {why}"
        size, stride, offset = t.size, t.stride, t.offset
        if (not isinstance(size, (tuple, list)) or len(size) > _MAX_RANK
                or not all(_is_count(s) for s in size)):
            raise FormatError(p, f"size {short(size)} is not a list of non-negative integers "
                                 f"(at most {_MAX_RANK}, each below 2^62)", tensor=name)
        if (not isinstance(stride, (tuple, list)) or len(stride) != len(size)
                or not all(_is_count(s) for s in stride)):
            raise FormatError(p, f"stride {short(stride)} does not match size {list(size)} "
                                 f"(needs {len(size)} non-negative integers below 2^62)",
                              tensor=name)
        if not _is_count(offset):
            raise FormatError(p, f"storage offset {short(offset)} is not a non-negative "
                                 "integer below 2^62", tensor=name)
        assert isinstance(offset, int)
        size, stride = tuple(size), tuple(stride)
        numel = math.prod(size)
        if numel >= MAX_NUMEL:
            raise FormatError(p, f"size {list(size)} makes {numel:,} elements, more than any "
                                 "storage holds", tensor=name)
        where = "storage " + _one_line(f"{st.archive}/{st.key}", 80)
        blob = blob_of(st)
        if blob is None:
            raise FormatError(p, f"{where} is missing from the file", tensor=name)
        if st.base + st.nbytes > blob.size:
            raise FormatError(p, f"{where} declares {st.nbytes} bytes (from byte {st.base}) "
                                 f"but the file holds {blob.size}", tensor=name)
        span = 0
        if numel:
            last = offset + sum((s - 1) * d for s, d in zip(size, stride, strict=True))
            if (last + 1) * itemsize > st.nbytes:
                raise FormatError(
                    p, f"{dname} elements {offset}..{last} (size {list(size)}, stride "
                       f"{list(stride)}) extend past the end of {where} "
                       f"({st.nbytes // itemsize} elements)", tensor=name)
            span = last - offset + 1
        etype = ELEMENT_TYPES[etname]
        sdt = etype.storage if little else etype.storage.newbyteorder(">")
        if len(size) == 0:
            rows, row_stride, trailing = 1, 0, [(1, 0)]
        elif len(size) == 1:
            rows, row_stride, trailing = 1, 0, _merge_trailing(size, stride)
        else:
            rows, row_stride = size[0], stride[0]
            trailing = _merge_trailing(size[1:], stride[1:])
        row_dims = view_row_dims(name, size) if len(size) > 2 else 1
        if row_dims == 2:  # a fused expert tensor: its view's rows span dims 0 and 1
            lead = _merge_trailing(size[:2], stride[:2])
            if len(lead) == 1:
                rows, row_stride = size[0] * size[1], lead[0][1]
                trailing = _merge_trailing(size[2:], stride[2:])
            else:  # strides that do not merge: the plain N-D view
                row_dims = 1
        info = TensorInfo(name, size, etname, self._file.name, row_dims)
        self._entries[name] = _Entry(info, etype, blob, st.base, offset, rows, row_stride,
                                     trailing, bool(t.neg), sdt, span)
        return None

    def _check_views(self) -> None:
        """The elements drawn against the bytes of the storages they view (module doc)."""
        drawn = sum(e.info.numel for e in self._entries.values())
        if drawn <= VIEW_ALLOWANCE:
            return
        stored = sum({id(e.blob): e.blob.size for e in self._entries.values()}.values())
        ratio = max_view_ratio()
        if drawn <= ratio * stored + VIEW_ALLOWANCE:
            return
        worst = max(self._entries.values(), key=lambda e: e.info.numel - e.span)
        raise FormatError(
            self.path, f"{worst.info.numel:,} elements (size {list(worst.info.shape)}) over "
                       f"{worst.span:,} of its storage; the tensors would draw {drawn:,} "
                       f"elements from {stored:,} bytes of storage, more than {ratio} per byte "
                       f"(+{VIEW_ALLOWANCE:,}): overlapping views past {VIEW_RATIO_ENV}",
            tensor=worst.info.name)

    # -- Reader ------------------------------------------------------------------------------
    def tensors(self) -> Sequence[TensorInfo]:
        got = self._tensors
        if got is None:
            got = self._tensors = tuple(e.info for e in self._entries.values())
        return got

    def info(self, name: str) -> TensorInfo:
        return self._entry(name).info

    @property
    def files(self) -> Sequence[Path]:
        return (self.path,)

    @property
    def metadata(self) -> Mapping[str, Any]:
        return self._metadata

    def _entry(self, name: str) -> _Entry:
        ent = self._entries.get(name)
        if ent is None:
            if name in self._unsupported:
                raise UnsupportedDtypeError(self.path, self._unsupported[name], tensor=name)
            raise KeyError(f"{self.path}: no tensor {name!r}")
        return ent

    def _strided(self, ent: _Entry, e_r0: int, e_r1: int, e_c0: int, e_c1: int
                 ) -> tuple[np.ndarray, int]:
        """A no-copy strided view (storage dtype) covering rows ``e_r0..e_r1-1`` and at least
        cols ``e_c0..e_c1-1`` of the 2-D view, and the column to start from once it is flattened
        to 2-D. With one trailing dim the view is exactly the block (skip 0); otherwise it spans
        the whole dim-1 slices the columns fall in: ``(rows, b - a, *trailing[1:])``."""
        isz = ent.etype.itemsize
        first = ent.offset + e_r0 * ent.row_stride
        trailing = ent.trailing
        skip = 0
        if len(trailing) == 1:
            (_n, t1), = trailing
            first += e_c0 * t1
            shape: tuple[int, ...] = (e_r1 - e_r0, e_c1 - e_c0)
            strides_e: tuple[int, ...] = (ent.row_stride, t1)
        else:
            inner = math.prod(s for s, _ in trailing[1:])
            a, b = e_c0 // inner, -(-e_c1 // inner)
            skip = e_c0 - a * inner
            first += a * trailing[0][1]
            shape = (e_r1 - e_r0, b - a) + tuple(s for s, _ in trailing[1:])
            strides_e = (ent.row_stride,) + tuple(d for _, d in trailing)
        last = first + sum((s - 1) * d for s, d in zip(shape, strides_e, strict=True))
        lo, hi = ent.base + first * isz, ent.base + (last + 1) * isz
        assert 0 <= lo <= hi <= ent.blob.size, (ent.info.name, lo, hi, ent.blob.size)
        if self._closed:
            raise ValueError(f"{self.path}: reader is closed")
        flat = ent.blob.read(lo, hi).view(ent.storage_dtype)
        arr = np.lib.stride_tricks.as_strided(
            flat, shape=shape, strides=tuple(d * isz for d in strides_e), writeable=False)
        return arr, skip

    def read(self, name: str, e_r0: int, e_r1: int, e_c0: int = 0,
             e_c1: int | None = None) -> np.ndarray:
        ent = self._entry(name)
        c1 = check_block(ent.info, e_r0, e_r1, e_c0, e_c1)
        if e_r1 == e_r0 or c1 == e_c0:
            return np.zeros((e_r1 - e_r0, c1 - e_c0), np.float32)
        arr, skip = self._strided(ent, e_r0, e_r1, e_c0, c1)
        if arr.ndim > 2:
            arr = arr.reshape(arr.shape[0], -1)[:, skip:skip + (c1 - e_c0)]
        out = np.ascontiguousarray(ent.etype.decode(arr), dtype=np.float32)
        if ent.neg:
            np.negative(out, out=out)
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
        self._zip = None
        self._file.close()
