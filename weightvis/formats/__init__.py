"""Checkpoint formats behind one reader interface, and the detecting factory ``open_checkpoint``.

Inputs may be files, sharded sets (their ``*.index.json``) or directories. Formats are detected by
magic bytes, not by extension.

Over the ~450-line guide (~510 lines): detection, the multi-file reader and the rules for
indexes and directories are the one place where inputs are chosen.
"""

from __future__ import annotations

import errno
import functools
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from ..errors import FormatError, InputError
from ..hub.uri import is_hub_uri, looks_like_repo_id, ref_of_cached_path
from ..moe.quant import Decoding
from ..sources import ByteSource, LocalFileSource
from ..types import TensorInfo
from ..untrusted import json_safe, load_json
from .base import Reader, gc_paused
from .gguf_header import SHORT_STRING_MAX
from .limits import MAX_TENSORS_ENV, max_tensors
from .safetensors import CodeSpan, SafetensorsReader, looks_like_safetensors
from .sidecars import Enclosure, read_config, read_limited

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


MAX_INDEX_BYTES = 100 * 1024 * 1024
"""Bound of a sharded-checkpoint index (``*.index.json``): the same as a safetensors header's,
whose listing it replaces (DeepSeek-V3's, 91k tensors, is 9 MB)."""


_SHARDS_OF: dict[tuple[object, ...], list[str]] = {}
"""The ``weight_map`` shard names of the indexes read in this process, by (path, device, inode,
size, mtime) of the index: a worker forked after the parent opened the checkpoint does not parse
it again (45k tensors: a 4 MB index, ~0.02 s per open). The shards are checked every time."""
_SHARDS_OF_MAX = 64


def _from_index(index: Path) -> list[Path]:
    """The shard files an index's ``weight_map`` names, in order of first mention. Every shard
    must lie inside the index's folder (``sidecars.Enclosure``): no absolute path, no ``..``, no
    symbolic link leading out - an index is data, and must not make weightvis read (and put
    in a bundle the user may publish) a file the user did not name."""
    try:
        st = index.stat()
        key: tuple[object, ...] | None = (str(index), st.st_dev, st.st_ino, st.st_size,
                                          st.st_mtime_ns)
    except OSError:
        key = None  # (read_limited says what is wrong)
    shards = _SHARDS_OF.get(key) if key is not None else None
    if shards is None:
        shards = _index_shards(index)
        if key is not None:
            if len(_SHARDS_OF) >= _SHARDS_OF_MAX:
                _SHARDS_OF.clear()
            _SHARDS_OF[key] = shards
    enclosure = Enclosure(index.parent)
    return [_shard_path(index, shard, enclosure) for shard in shards]


def _index_shards(index: Path) -> list[str]:
    """The shard names of an index's ``weight_map``, in order of first mention, unchecked."""
    data = read_limited(index, "the index", MAX_INDEX_BYTES)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(index, "index is not UTF-8 text", offset=e.start) from None
    doc = load_json(text, index, what="index")
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict):
        raise FormatError(index, "not a sharded-checkpoint index (needs a 'weight_map' object)")
    for name, v in weight_map.items():
        if not isinstance(v, str):
            r = repr(v)
            raise FormatError(index, f"weight_map gives tensor {name!r} the file "
                                     f"{r if len(r) <= 80 else r[:77] + '...'}, not a file name")
    return list(dict.fromkeys(weight_map.values()))


def _shard_path(index: Path, shard: str, enclosure: Enclosure) -> Path:
    """The file a ``weight_map`` value names, checked (see ``_from_index``)."""
    def refuse(why: str) -> FormatError:
        return FormatError(index, f"shard {shard!r} listed in weight_map {why}: refused (pass "
                                  "the file itself to render it)")

    if not shard or "\x00" in shard:
        raise refuse("is not a file name")
    try:
        os.fsencode(shard)
    except UnicodeError:
        raise refuse("is not a file name this system can encode") from None
    if PurePosixPath(shard).is_absolute() or PureWindowsPath(shard).anchor:
        raise refuse("is an absolute path")
    if ".." in PurePosixPath(shard.replace("\\", "/")).parts:
        raise refuse("leads out of the index's folder ('..')")
    f = index.parent / shard
    if not f.is_file():
        raise InputError(f"{index}: shard {shard!r} listed in weight_map is missing")
    if not enclosure.holds(f):
        raise refuse(f"resolves outside {index.parent} (a symbolic link)")
    return f


def _natural_key(s: str) -> list[object]:
    """Digit runs compare as numbers (by length, then digits: no int() of a long run)."""
    import re
    return [(len(t.lstrip("0")), t.lstrip("0")) if t.isdecimal() else t
            for t in re.split(r"(\d+)", s)]


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
    enclosure = Enclosure(d)
    for n in chosen:
        if not enclosure.holds(d / n):
            raise InputError(f"{d / n}: resolves outside {d} (a symbolic link): refused (pass "
                             "the file itself to render it)")
    return [d / n for n in chosen]


def resolve_inputs(sources: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], dict[str, Any]]:
    """Expand user inputs to data files; returns (files, sidecar ``config.json`` or {}).

    Files the user names are read wherever they are; files found through a directory or an
    index must lie inside it (``sidecars.Enclosure``). The sidecar is read with a size bound
    and checked (``sidecars.read_config``); a broken one is ignored with a warning."""
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
        if not config and os.path.lexists(cfg):
            config = read_config(cfg, Enclosure(cfg.parent))
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
        self.config: dict[str, Any] = json_safe(dict(config or {}), "config", what="config")
        self.origins: list[str | None] = list(origins or [None] * len(self.readers))
        """Per reader (one file each): the pinned ``hf://`` location its file came from, or
        None for a local file of the user's (the manifest's ``source.uris``)."""
        self._owner: dict[str, Reader] = {}
        self._tensors: list[TensorInfo] = []
        bound = max_tensors()
        for r in self.readers:
            if len(self._tensors) + len(r.tensors()) > bound:
                raise InputError(f"{r.files[0] if r.files else '?'}: the checkpoint holds more "
                                 f"than {bound} tensors ({MAX_TENSORS_ENV} raises the bound)")
            listed = r.tensors()
            owned = dict.fromkeys([t.name for t in listed], r)
            if len(owned) == len(listed) and self._owner.keys().isdisjoint(owned):
                self._owner.update(owned)  # (45k tensors: whole lists at a time)
                self._tensors += listed
                continue
            for t in listed:  # (which name, of which file)
                if t.name in self._owner:
                    other = self._owner[t.name].info(t.name).file
                    raise FormatError(t.file, f"tensor name also present in {other}",
                                      tensor=t.name)
                self._owner[t.name] = r
                self._tensors.append(t)
        formats = sorted({r.format for r in self.readers})
        self.format = "+".join(formats) if formats else "?"
        # checked now, not when the manifest is written after every tile: JSON has no NaN and
        # no unbounded nesting (untrusted.json_safe); a long string (a thumbnail ...) is kept
        # as its length, like a GGUF reader's
        self._metadata: dict[str, Any] = {
            str(f): json_safe(dict(r.metadata), f, max_string=SHORT_STRING_MAX)
            for r in self.readers for f in r.files[:1]}
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
        """Each file's format metadata, JSON-safe (non-finite numbers as strings)."""
        return self._metadata

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
    _allow_open_files(len(files))
    readers: list[Reader] = []
    with gc_paused():
        try:
            for f in files:
                readers.append(_open_file(f))
            return MultiReader(readers, config, [_cached_origin(f) for f in files])
        except BaseException as e:
            for r in readers:
                r.close()
            if isinstance(e, OSError) and e.errno == errno.EMFILE:
                raise InputError(f"{_first_source(sources)}: {len(files)} checkpoint files, "
                                 f"more than a process may keep open here (ulimit -n: "
                                 f"{_open_file_limit()}); raise the limit, or render with "
                                 "--workers 1") from None
            raise


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


def _first_source(sources: Iterable[str | os.PathLike[str]]) -> str:
    return next((str(s) for s in sources), "?")


def _open_file_limit() -> str:
    try:
        import resource
    except ImportError:  # pragma: no cover (not POSIX)
        return "?"
    return str(resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def _allow_open_files(n_files: int) -> None:
    """Raise this process's soft limit on open files up to its hard limit when a checkpoint of
    ``n_files`` files needs it: each open file keeps one descriptor (its memory mapping's), and
    a forked worker opens its own beside those it inherits."""
    try:
        import resource
    except ImportError:  # pragma: no cover (not POSIX)
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * n_files + 256  # + the interpreter, numba, the worker pipes
    if soft != resource.RLIM_INFINITY and soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        if new > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


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
