"""Hand-made PyTorch checkpoints, written without torch: a tiny protocol-2 pickle emitter and the
zip / legacy container writers (layout of torch/serialization.py), so tests can build files torch
would never write (bad extents, missing storages, hostile globals, bad opcodes)."""

from __future__ import annotations

import contextlib
import io
import pickle
import struct
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class G:
    """A global ``module.name`` (emitted as GLOBAL; nothing is imported when writing)."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name


class Call:
    """``fn(*args)`` (REDUCE)."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args


class Build:
    """``obj`` then BUILD with ``state``."""

    def __init__(self, obj: Any, state: Any) -> None:
        self.obj, self.state = obj, state


class PID:
    """A persistent id (BINPERSID of a tuple)."""

    def __init__(self, *items: Any) -> None:
        self.items = items


class Raw:
    """Raw opcode bytes spliced into the stream (for malformed pickles)."""

    def __init__(self, data: bytes) -> None:
        self.data = data


def _emit(obj: Any, out: io.BytesIO) -> None:
    w = out.write
    if obj is None:
        w(b"N")
    elif obj is True:
        w(b"\x88")
    elif obj is False:
        w(b"\x89")
    elif isinstance(obj, int):
        if 0 <= obj < 256:
            w(b"K" + bytes([obj]))
        elif -(1 << 31) <= obj < (1 << 31):
            w(b"J" + struct.pack("<i", obj))
        else:
            b = obj.to_bytes((obj.bit_length() + 8) // 8, "little", signed=True)
            w(b"\x8a" + bytes([len(b)]) + b if len(b) < 256
              else b"\x8b" + struct.pack("<i", len(b)) + b)
    elif isinstance(obj, float):
        w(b"G" + struct.pack(">d", obj))
    elif isinstance(obj, str):
        b = obj.encode("utf-8", "surrogatepass")
        w(b"X" + struct.pack("<I", len(b)) + b)
    elif isinstance(obj, bytes):
        w((b"C" + bytes([len(obj)]) if len(obj) < 256 else b"B" + struct.pack("<I", len(obj)))
          + obj)
    elif isinstance(obj, tuple):
        w(b"(")
        for v in obj:
            _emit(v, out)
        w(b"t")
    elif isinstance(obj, list):
        w(b"]")
        if obj:
            w(b"(")
            for v in obj:
                _emit(v, out)
            w(b"e")
    elif isinstance(obj, dict):
        w(b"}")
        if obj:
            w(b"(")
            for k, v in obj.items():
                _emit(k, out)
                _emit(v, out)
            w(b"u")
    elif isinstance(obj, G):
        w(b"c" + obj.module.encode() + b"\n" + obj.name.encode() + b"\n")
    elif isinstance(obj, Call):
        _emit(obj.fn, out)
        _emit(tuple(obj.args), out)
        w(b"R")
    elif isinstance(obj, Build):
        _emit(obj.obj, out)
        _emit(obj.state, out)
        w(b"b")
    elif isinstance(obj, PID):
        _emit(tuple(obj.items), out)
        w(b"Q")
    elif isinstance(obj, Raw):
        w(obj.data)
    else:
        raise TypeError(type(obj))


def dumps(obj: Any) -> bytes:
    """Protocol-2 pickle of a tree of plain values and G / Call / Build / PID / Raw nodes."""
    out = io.BytesIO()
    out.write(b"\x80\x02")
    _emit(obj, out)
    out.write(b".")
    return out.getvalue()


def ordered_dict(items: Mapping[str, Any]) -> Any:
    """``collections.OrderedDict()`` filled by SETITEMS, as torch writes state dicts."""
    return Raw(_ordered_dict_bytes(items))


def _ordered_dict_bytes(items: Mapping[str, Any]) -> bytes:
    out = io.BytesIO()
    _emit(Call(G("collections", "OrderedDict")), out)
    if items:
        out.write(b"(")
        for k, v in items.items():
            _emit(k, out)
            _emit(v, out)
        out.write(b"u")
    return out.getvalue()


def tensor(key: str, storage: str, numel: int, offset: int, size: Sequence[int],
           stride: Sequence[int], *, legacy_view: tuple[str, int, int] | None = None) -> Call:
    """``torch._utils._rebuild_tensor_v2`` over storage ``key`` of class ``torch.<storage>``."""
    pid = ("storage", G("torch", storage), key, "cpu", numel)
    if legacy_view is not None:
        pid = pid + (legacy_view,)
    return Call(G("torch._utils", "_rebuild_tensor_v2"), PID(*pid), offset, tuple(size),
                tuple(stride), False, Call(G("collections", "OrderedDict")))


def write_zip(path: Path, data_pkl: bytes, storages: Mapping[str, bytes], *,
              prefix: str = "archive", compress: bool = False, byteorder: str = "little",
              extra: Mapping[str, bytes] | None = None) -> Path:
    """A torch-style zip checkpoint (``<prefix>/data.pkl``, ``<prefix>/data/<key>``), the same
    bytes for the same arguments (entries dated 1980-01-01)."""
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED

    def put(name: str, data: bytes | str, how: int = zipfile.ZIP_STORED) -> None:
        info = zipfile.ZipInfo(f"{prefix}/{name}", (1980, 1, 1, 0, 0, 0))
        info.compress_type = how
        z.writestr(info, data)

    with zipfile.ZipFile(path, "w") as z:
        put("data.pkl", data_pkl)
        put("byteorder", byteorder)
        for key, data in storages.items():
            put(f"data/{key}", data, method)
        put("version", "3\n")
        for name, data in (extra or {}).items():
            put(name, data)
    return path


def write_legacy(path: Path, main_pkl: bytes, storages: Sequence[tuple[str, int, bytes]]) -> Path:
    """A legacy (non-zip) torch.save file; ``storages`` are (key, element size, bytes)."""
    with open(path, "wb") as fh:
        fh.write(pickle.dumps(LEGACY_MAGIC, protocol=2))
        fh.write(pickle.dumps(1001, protocol=2))
        fh.write(pickle.dumps({"protocol_version": 1001, "little_endian": True,
                               "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2))
        fh.write(main_pkl)
        fh.write(pickle.dumps([k for k, _, _ in storages], protocol=2))
        for _key, itemsize, data in storages:
            fh.write(struct.pack("<q", len(data) // itemsize))
            fh.write(data)
    return path


def rewrite_zip(src: Path, dst: Path, *, compress: bool = False,
                replace: Mapping[str, bytes] | None = None) -> Path:
    """Copy a zip checkpoint entry by entry, optionally deflating the storages and replacing
    entries by their name after the archive prefix (``data.pkl``, ``byteorder``, ``data/0``)."""
    replace = dict(replace or {})
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w") as zo:
        for info in zi.infolist():
            rel = info.filename.split("/", 1)[1] if "/" in info.filename else info.filename
            data = replace.get(rel, zi.read(info))
            method = (zipfile.ZIP_DEFLATED if compress and rel.startswith("data/")
                      else zipfile.ZIP_STORED)
            zo.writestr(info.filename, data, compress_type=method)
    return dst


def bomb_zip(path: Path, *, bomb: str = "storage", size: int = 1 << 30,
             shape: Sequence[int] = (4, 4)) -> Path:
    """A zip checkpoint with one entry deflated from ``size`` bytes of one repeated byte (a
    zip bomb: ~1,000 to 1): the storage ``data/0`` under a small float32 tensor of ``shape``
    (``bomb="storage"``), or ``data.pkl`` (the pickle, then zeros) or ``byteorder`` ("little",
    then spaces). Written in 16 MiB steps with zlib's run-length strategy (~1 s per GiB)."""
    numel = 1
    for s in shape:
        numel *= s
    stride = tuple(int(x) for x in _strides(shape))
    storage_numel = size // 4 if bomb == "storage" else numel
    pkl = dumps(ordered_dict({"w": tensor("0", "FloatStorage", storage_numel, 0, shape,
                                          stride)}))
    heads = {"data.pkl": pkl, "byteorder": b"little",
             "data/0": b"" if bomb == "storage" else b"\0" * (numel * 4)}
    fill = {"data.pkl": b"\0", "byteorder": b" ", "data/0": b"\0"}
    target = {"storage": "data/0", "pkl": "data.pkl", "byteorder": "byteorder"}[bomb]
    with _run_length_deflate(), zipfile.ZipFile(path, "w") as z:
        for rel in ("data.pkl", "byteorder", "data/0"):
            zi = zipfile.ZipInfo(f"archive/{rel}")
            zi.compress_type = zipfile.ZIP_DEFLATED if rel == target else zipfile.ZIP_STORED
            with z.open(zi, "w", force_zip64=True) as fh:
                fh.write(heads[rel])
                if rel == target:
                    left = size - len(heads[rel])
                    step = fill[rel] * (1 << 24)
                    while left > 0:
                        fh.write(step[:left])
                        left -= len(step)
        z.writestr("archive/version", "3\n")
    return path


@contextlib.contextmanager
def _run_length_deflate() -> Iterator[None]:
    """zipfile deflating with zlib's Z_RLE strategy: the same stream of a run, twice as fast
    (patches zipfile's private compressor factory for the block)."""
    real = zipfile._get_compressor  # type: ignore[attr-defined]

    def rle(compress_type: int, compresslevel: int | None = None) -> Any:
        if compress_type == zipfile.ZIP_DEFLATED:
            return zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_RLE)
        return real(compress_type, compresslevel)

    zipfile._get_compressor = rle  # type: ignore[attr-defined]
    try:
        yield
    finally:
        zipfile._get_compressor = real  # type: ignore[attr-defined]


def _strides(shape: Sequence[int]) -> list[int]:
    out, acc = [], 1
    for s in reversed(shape):
        out.append(acc)
        acc *= s
    return out[::-1]


_LOCAL = {"method": (8, "<H"), "crc": (14, "<I"), "csize": (18, "<I"), "usize": (22, "<I")}
_CENTRAL = {"method": (10, "<H"), "crc": (16, "<I"), "csize": (20, "<I"), "usize": (24, "<I")}


def edit_headers(src: Path, dst: Path, entry: str, where: str = "both",
                 **fields: int) -> Path:
    """Copy of zip ``src`` with fields (``method``, ``crc``, ``csize``, ``usize``) of the entry
    whose name ends with ``entry`` changed in its local header, its central directory record
    or ``both``."""
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(entry))
    name = info.filename.encode()
    spots = []
    if where in ("local", "both"):
        spots.append((info.header_offset, _LOCAL))
    if where in ("central", "both"):
        at = data.index(b"PK\x01\x02")
        while data[at + 46:at + 46 + len(name)] != name or struct.unpack_from(
                "<H", data, at + 28)[0] != len(name):
            at = data.index(b"PK\x01\x02", at + 4)
        spots.append((at, _CENTRAL))
    for at, table in spots:
        for field, value in fields.items():
            off, fmt = table[field]
            struct.pack_into(fmt, data, at + off, value)
    dst.write_bytes(bytes(data))
    return dst


def entry_data_offset(path: Path, entry: str) -> tuple[int, int]:
    """(first byte of the data of the entry whose name ends with ``entry``, its compressed
    size)."""
    data = path.read_bytes()
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(entry))
    n, e = struct.unpack_from("<HH", data, info.header_offset + 26)
    return info.header_offset + 30 + n + e, info.compress_size
