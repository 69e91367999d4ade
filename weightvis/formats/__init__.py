"""Checkpoint formats behind one reader interface, and the detecting factory ``open_checkpoint``.

Inputs may be files, sharded sets (their ``*.index.json``) or directories. Formats are detected by
magic bytes, not by extension.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError, InputError
from ..moe.quant import Decoding
from ..sources import ByteSource, LocalFileSource
from ..types import TensorInfo
from .base import Reader, gc_paused
from .safetensors import CodeSpan, SafetensorsReader, looks_like_safetensors

__all__ = ["Reader", "MultiReader", "open_checkpoint", "open_sources", "open_source",
           "detect_format", "resolve_inputs"]

_SKIP_SUFFIXES = {".json", ".md", ".txt", ".model", ".py", ".yaml", ".yml", ".gitattributes",
                  ".tiktoken", ".jinja", ".png", ".jpg"}


def detect_format(path: Path) -> str:
    """``safetensors``, ``gguf``, ``pytorch-zip``, ``pytorch-pickle`` or ``unknown``, by magic
    bytes."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None
    return _kind_of(head)


def _kind_of(head: bytes) -> str:
    if head[:4] == b"GGUF":
        return "gguf"
    if head[:4] == b"PK\x03\x04":
        return "pytorch-zip"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "pytorch-pickle"
    if looks_like_safetensors(head):
        return "safetensors"
    return "unknown"


def open_source(source: ByteSource) -> Reader:
    """A reader of the checkpoint file behind a byte source (format by magic bytes, then by the
    name's extension); the reader owns the source (closed with it, or here on failure)."""
    try:
        kind = _kind_of(source.read(0, min(16, source.size)))
        suffix = source.path.suffix
        if kind == "safetensors" or (kind == "unknown" and suffix == ".safetensors"):
            return SafetensorsReader(source)  # the reader says precisely what is wrong
        if kind == "gguf" or (kind == "unknown" and suffix == ".gguf"):
            from .gguf import GGUFReader

            return GGUFReader(source)
        if kind in ("pytorch-zip", "pytorch-pickle"):
            from .pytorch import PyTorchReader

            return PyTorchReader(source)
    except BaseException:
        source.close()
        raise
    source.close()
    where = source.path if isinstance(source, LocalFileSource) else source.name
    raise FormatError(where, "not a recognised checkpoint format (expected safetensors, GGUF "
                             "or a PyTorch .bin/.pt/.pth/.ckpt)")


def _open_file(path: Path) -> Reader:
    detect_format(path)  # an unreadable input is an InputError
    return open_source(LocalFileSource(path))


def _from_index(index: Path) -> list[Path]:
    try:
        doc = json.loads(index.read_text("utf-8"))
        weight_map = doc["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise FormatError(index, "not a sharded-checkpoint index (needs a 'weight_map' object)"
                          ) from None
    files: list[Path] = []
    for shard in dict.fromkeys(weight_map.values()):
        f = index.parent / str(shard)
        if not f.is_file():
            raise InputError(f"{index}: shard {shard!r} listed in weight_map is missing")
        files.append(f)
    return files


def _natural_key(s: str) -> list[object]:
    import re
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _from_directory(d: Path) -> list[Path]:
    indexes = sorted(d.glob("*.safetensors.index.json"))
    if indexes:
        return _from_index(indexes[0])
    found = [f for f in sorted(d.iterdir(), key=lambda f: _natural_key(f.name))
             if f.is_file() and not f.name.startswith(".") and f.suffix not in _SKIP_SUFFIXES
             and detect_format(f) != "unknown"]
    if not found:
        others = [f.name for f in d.iterdir() if not f.name.startswith(".")]
        what = f"only {', '.join(sorted(others)[:5])}" if others else "it is empty"
        raise InputError(f"{d}: no checkpoint files found in this directory ({what})")
    st = [f for f in found if detect_format(f) == "safetensors"]
    return st or found


def resolve_inputs(sources: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], dict[str, Any]]:
    """Expand user inputs to data files; returns (files, sidecar ``config.json`` or {})."""
    files: list[Path] = []
    config: dict[str, Any] = {}
    srcs = [Path(s) for s in sources]
    if not srcs:
        raise InputError("no input checkpoint given")
    for s in srcs:
        if s.is_dir():
            files += _from_directory(s)
            cfg = s / "config.json"
        elif s.is_file():
            if s.name.endswith(".index.json"):
                files += _from_index(s)
            else:
                files.append(s)
            cfg = s.parent / "config.json"
        else:
            raise InputError(f"{s}: no such file or directory")
        if not config and cfg.is_file():
            try:
                loaded = json.loads(cfg.read_text("utf-8"))
                config = loaded if isinstance(loaded, dict) else {}
            except (UnicodeDecodeError, json.JSONDecodeError):
                config = {}  # a sidecar is optional; a broken one is ignored
    seen: set[Path] = set()
    unique = []
    for f in files:
        r = f.resolve()
        if r not in seen:
            seen.add(r)
            unique.append(f)
    return unique, config


class MultiReader(Reader):
    """Several files presented as one checkpoint (shards, or a directory)."""

    def __init__(self, readers: Sequence[Reader], config: Mapping[str, Any] | None = None):
        self.readers = list(readers)
        self.config = dict(config or {})
        self._owner: dict[str, Reader] = {}
        self._tensors: list[TensorInfo] = []
        for r in self.readers:
            for t in r.tensors():
                if t.name in self._owner:
                    other = self._owner[t.name].info(t.name).file
                    raise FormatError(t.file, f"tensor name also present in {other}",
                                      tensor=t.name)
                self._owner[t.name] = r
                self._tensors.append(t)
        formats = sorted({r.format for r in self.readers})
        self.format = "+".join(formats) if formats else "?"
        # true values of block-scaled storage (FP8 + weight_scale_inv, MXFP4 blocks + scales)
        self._decoding = Decoding(self._tensors, self.config)
        self._decoded = self._decoding.scaled.keys() | self._decoding.virtual.keys()
        if self._decoding.virtual:
            self._tensors = self._decoding.listing(self._tensors)
        self._read_from: dict[int, Reader] = {}
        """Readers read since the last release (release() visits only those: callers release
        after every tensor, and a checkpoint may have hundreds of shards)."""

    def tensors(self) -> Sequence[TensorInfo]:
        return self._tensors

    def info(self, name: str) -> TensorInfo:
        mx = self._decoding.virtual.get(name)
        return mx.info if mx is not None else self._owner[name].info(name)

    _by_file: dict[Path, Reader] | None = None

    def read(self, name: str, e_r0: int, e_r1: int, e_c0: int = 0,
             e_c1: int | None = None) -> np.ndarray:
        if name in self._decoded:  # true values: block scales applied, MXFP4 decoded
            return self._decoding.read(self, self._read_stored, name, e_r0, e_r1, e_c0, e_c1)
        r = self._owner[name]
        self._read_from[id(r)] = r
        return r.read(name, e_r0, e_r1, e_c0, e_c1)

    def _read_stored(self, name: str, e_r0: int, e_r1: int, e_c0: int = 0,
                     e_c1: int | None = None) -> np.ndarray:
        r = self._owner[name]
        self._read_from[id(r)] = r
        return r.read(name, e_r0, e_r1, e_c0, e_c1)

    def read_codes(self, name: str, e_r0: int, e_r1: int, e_c0: int = 0,
                   e_c1: int | None = None) -> np.ndarray | None:
        if name in self._decoded:
            return None
        r = self._owner[name]
        self._read_from[id(r)] = r
        return r.read_codes(name, e_r0, e_r1, e_c0, e_c1)

    def code_span(self, name: str) -> CodeSpan | None:
        """``SafetensorsReader.code_span`` of the tensor's file (None for other formats). A
        caller viewing the span's bytes reports it with ``reading``, so that ``release``
        drops them."""
        if name in self._decoded:
            return None
        span = getattr(self._owner[name], "code_span", None)
        return span(name) if span is not None else None

    def reading(self, name: str) -> None:
        """Record that the file holding ``name`` was read (through a ``code_span``)."""
        mx = self._decoding.virtual.get(name)
        r = self._owner[mx.blocks.name if mx is not None else name]
        self._read_from[id(r)] = r

    @property
    def files(self) -> Sequence[Path]:
        return [f for r in self.readers for f in r.files]

    @property
    def metadata(self) -> Mapping[str, Any]:
        return {str(f): dict(r.metadata) for r in self.readers for f in r.files[:1]}

    def gguf_architecture(self) -> str | None:
        """``general.architecture`` of the first GGUF file, if any (``llama``, ``qwen2moe``…)."""
        for meta in self.metadata.values():
            arch = meta.get("general.architecture") if isinstance(meta, dict) else None
            if isinstance(arch, str):
                return arch
        return None

    def raw_bytes_of(self, path: Path) -> np.ndarray:
        by_file = self._by_file
        if by_file is None:
            by_file = self._by_file = {}
            for r in self.readers:
                if hasattr(r, "raw_bytes"):
                    for f in r.files:
                        by_file.setdefault(f, r)
        owner = by_file.get(path)
        if owner is None:
            raise KeyError(str(path))
        return owner.raw_bytes()  # type: ignore[attr-defined, no-any-return]

    def release(self) -> None:
        readers, self._read_from = self._read_from, {}
        for r in readers.values():
            r.release()

    def close(self) -> None:
        self._read_from = {}
        for r in self.readers:
            r.close()


def open_checkpoint(sources: Iterable[str | os.PathLike[str]]) -> MultiReader:
    """Open files / directories / index files as one checkpoint (headers only)."""
    files, config = resolve_inputs(sources)
    readers: list[Reader] = []
    with gc_paused():
        try:
            for f in files:
                readers.append(_open_file(f))
        except BaseException:
            for r in readers:
                r.close()
            raise
        return MultiReader(readers, config)


def open_sources(sources: Sequence[ByteSource],
                 config: Mapping[str, Any] | None = None) -> MultiReader:
    """Byte sources (local files, HTTP ranges ...) as one checkpoint (headers only); the
    readers own the sources."""
    readers: list[Reader] = []
    try:
        for i, src in enumerate(sources):
            try:
                readers.append(open_source(src))
            except BaseException:
                for rest in sources[i + 1:]:
                    rest.close()
                raise
    except BaseException:
        for r in readers:
            r.close()
        raise
    return MultiReader(readers, config)
