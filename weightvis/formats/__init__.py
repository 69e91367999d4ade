"""Checkpoint formats behind one reader interface, and the detecting factory ``open_checkpoint``.

Inputs may be files, sharded sets (their ``*.index.json``) or directories. Formats are detected by
magic bytes, not by extension.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError, InputError
from ..hub.uri import is_hub_uri, looks_like_repo_id, ref_of_cached_path
from ..sources import ByteSource, LocalFileSource
from ..types import TensorInfo
from .base import Reader, gc_paused
from .safetensors import CodeSpan, SafetensorsReader, looks_like_safetensors

__all__ = ["Reader", "MultiReader", "open_checkpoint", "open_sources", "open_source",
           "detect_format", "resolve_inputs", "choose_checkpoint_files", "kind_of_head"]

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
    return kind_of_head(head)


def kind_of_head(head: bytes) -> str:
    """The detect_format kind of a file from its first 16 bytes."""
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
        kind = kind_of_head(source.read(0, min(16, source.size)))
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


_GGUF_PART = re.compile(r"-\d{5}-of-(\d{5})\.gguf$")


def choose_checkpoint_files(names: Sequence[str], kind_of: Callable[[str], str], where: str,
                            *, others: Sequence[str] = (),
                            size_of: Callable[[str], int] | None = None) -> list[str]:
    """The directory rules, on the names of one folder's files (a local directory, or a folder
    of a Hub repo): a ``*.safetensors.index.json`` wins (returned alone: the caller expands
    it); else the files whose magic bytes (``kind_of(name)``: a detect_format kind) say
    checkpoint, the safetensors ones when there are any. Several GGUF files that are not the
    parts of one split model are refused (a repo often holds one file per quantization: the
    user names one). ``others``: further names (subfolders) for the message when nothing is
    found; ``size_of`` adds sizes to the GGUF message."""
    indexes = sorted(n for n in names if n.endswith(".safetensors.index.json"))
    if indexes:
        return [indexes[0]]
    kinds: dict[str, str] = {}
    found = []
    for n in sorted(names, key=_natural_key):
        if n.startswith(".") or Path(n).suffix in _SKIP_SUFFIXES:
            continue
        kinds[n] = kind_of(n)
        if kinds[n] != "unknown":
            found.append(n)
    if not found:
        listed = sorted({n for n in (*names, *others) if not n.startswith(".")})
        what = f"only {', '.join(listed[:5])}" if listed else "it is empty"
        raise InputError(f"{where}: no checkpoint files found in this directory ({what})")
    st = [n for n in found if kinds[n] == "safetensors"]
    if st:
        return st
    ggufs = [n for n in found if kinds[n] == "gguf"]
    split_sets = {m.group(1) + n[:m.start()] for n in ggufs if (m := _GGUF_PART.search(n))}
    if len(ggufs) > 1 and (len(split_sets) != 1 or any(not _GGUF_PART.search(n) for n in ggufs)):
        def label(n: str) -> str:
            return f"{n} ({size_of(n) / 1e9:.2f} GB)" if size_of is not None else n
        shown = ", ".join(label(n) for n in ggufs[:8]) + (", …" if len(ggufs) > 8 else "")
        raise InputError(f"{where}: holds {len(ggufs)} GGUF files ({shown}); name one, e.g. "
                         f"{where.rstrip('/')}/{ggufs[0]}")
    return found


def _from_directory(d: Path) -> list[Path]:
    entries = list(d.iterdir())
    names = [f.name for f in entries if f.is_file()]
    kind = functools.lru_cache(None)(lambda n: detect_format(d / n))
    chosen = choose_checkpoint_files(names, kind, str(d),
                                     others=[f.name for f in entries if not f.is_file()])
    if chosen[0].endswith(".safetensors.index.json"):
        return _from_index(d / chosen[0])
    return [d / n for n in chosen]


def resolve_inputs(sources: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], dict[str, Any]]:
    """Expand user inputs to data files; returns (files, sidecar ``config.json`` or {})."""
    files: list[Path] = []
    config: dict[str, Any] = {}
    given = [os.fspath(s) for s in sources]
    if not given:
        raise InputError("no input checkpoint given")
    hub = [s for s in given if is_hub_uri(s)]
    if hub:
        raise InputError(f"{hub[0]}: a Hub location, not a local path (open_checkpoint reads it)")
    for s in map(Path, given):
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
            hint = ""
            if looks_like_repo_id(str(s)):
                hint = f"; for the Hugging Face Hub repo, write hf://{s}"
            raise InputError(f"{s}: no such file or directory{hint}")
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

    def __init__(self, readers: Sequence[Reader], config: Mapping[str, Any] | None = None,
                 origins: Sequence[str | None] | None = None):
        self.readers = list(readers)
        self.config = dict(config or {})
        self.origins: list[str | None] = list(origins or [None] * len(self.readers))
        """Per reader (one file each): the pinned ``hf://`` location its file came from, or
        None for a local file of the user's (the manifest's ``source.uris``)."""
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
        self._read_from: dict[int, Reader] = {}
        """Readers read since the last release (release() visits only those: callers release
        after every tensor, and a checkpoint may have hundreds of shards)."""

    def tensors(self) -> Sequence[TensorInfo]:
        return self._tensors

    def info(self, name: str) -> TensorInfo:
        return self._owner[name].info(name)

    _by_file: dict[Path, Reader] | None = None

    def read(self, name: str, e_r0: int, e_r1: int, e_c0: int = 0,
             e_c1: int | None = None) -> np.ndarray:
        r = self._owner[name]
        self._read_from[id(r)] = r
        return r.read(name, e_r0, e_r1, e_c0, e_c1)

    def read_codes(self, name: str, e_r0: int, e_r1: int, e_c0: int = 0,
                   e_c1: int | None = None) -> np.ndarray | None:
        r = self._owner[name]
        self._read_from[id(r)] = r
        return r.read_codes(name, e_r0, e_r1, e_c0, e_c1)

    def code_span(self, name: str) -> CodeSpan | None:
        """``SafetensorsReader.code_span`` of the tensor's file (None for other formats). A
        caller viewing the span's bytes reports it with ``reading``, so that ``release``
        drops them."""
        span = getattr(self._owner[name], "code_span", None)
        return span(name) if span is not None else None

    def reading(self, name: str) -> None:
        """Record that the file holding ``name`` was read (through a ``code_span``)."""
        r = self._owner[name]
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
    """Open files / directories / index files / ``hf://`` locations as one checkpoint (headers
    only). A Hub location is read by HTTP ranges, or from the Hugging Face cache where its files
    are (``weightvis.hub``); render and diff download them first (``hub.localize``)."""
    given = [os.fspath(s) for s in sources]
    if any(is_hub_uri(s) for s in given):
        return _open_with_hub(given)
    files, config = resolve_inputs(given)
    readers: list[Reader] = []
    with gc_paused():
        try:
            for f in files:
                readers.append(_open_file(f))
        except BaseException:
            for r in readers:
                r.close()
            raise
        return MultiReader(readers, config, [_cached_origin(f) for f in files])


def _cached_origin(path: Path) -> str | None:
    """The pinned ``hf://`` location of a file of the Hugging Face cache (None elsewhere)."""
    got = ref_of_cached_path(path)
    return None if got is None else got[0].pinned(got[1])


def _open_with_hub(given: Sequence[str]) -> MultiReader:
    from ..hub.remote import open_hub_input

    sources: list[ByteSource] = []
    origins: list[str | None] = []
    config: dict[str, Any] = {}
    try:
        for s in given:
            if is_hub_uri(s):
                got, cfg, uris = open_hub_input(s)
            else:
                files, cfg = resolve_inputs([s])
                got, uris = [LocalFileSource(f) for f in files], [_cached_origin(f) for f in files]
            sources += got
            origins += uris
            config = config or dict(cfg)
    except BaseException:
        for src in sources:
            src.close()
        raise
    with gc_paused():
        reader = open_sources(sources, config)
    reader.origins = origins
    return reader


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
