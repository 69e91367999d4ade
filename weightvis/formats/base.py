"""The one reader interface every checkpoint format implements.

A reader lists tensors (no data read) and decodes element blocks of a tensor's 2-D view to
float32. Readers are cheap to open (headers only) so that every worker process opens its own.
"""

from __future__ import annotations

import abc
import mmap
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..types import TensorInfo

__all__ = ["Reader", "check_block", "MappedFile"]


class Reader(abc.ABC):
    """Abstract checkpoint reader (one file, or several files presented as one checkpoint)."""

    format: str = "?"
    """Short format name shown to users: ``safetensors``, ``gguf``, ``pytorch``."""

    @abc.abstractmethod
    def tensors(self) -> Sequence[TensorInfo]:
        """Every tensor, in file order. Reads headers only."""

    @abc.abstractmethod
    def read(self, name: str, e_r0: int, e_r1: int, e_c0: int = 0,
             e_c1: int | None = None) -> np.ndarray:
        """Rows ``e_r0..e_r1-1``, cols ``e_c0..e_c1-1`` of the tensor's 2-D view as a C-contiguous
        float32 array of shape (e_r1-e_r0, e_c1-e_c0). Touches only the bytes of those rows."""

    def read_codes(self, name: str, e_r0: int, e_r1: int, e_c0: int = 0,
                   e_c1: int | None = None) -> np.ndarray | None:
        """The block's raw 16-bit codes (uint16) for BF16 and F16 tensors, without decoding (the
        renderer's fast path: a palette index is a function of the code); None when the reader
        or the dtype has no such form - callers then use ``read``."""
        return None

    @property
    def files(self) -> Sequence[Path]:
        """The files holding tensor data (for ``--hilbert-unit byte`` and the manifest)."""
        return ()

    @property
    def metadata(self) -> Mapping[str, Any]:
        """Format metadata kept for the manifest (safetensors ``__metadata__``, GGUF KV, ...)."""
        return {}

    def release(self) -> None:
        """Drop any resident pages this reader has mapped (keeps process RSS bounded)."""

    def close(self) -> None:
        """Release file handles; the reader is unusable afterwards."""

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def info(self, name: str) -> TensorInfo:
        for t in self.tensors():
            if t.name == name:
                return t
        raise KeyError(name)

    def read_all(self, name: str) -> np.ndarray:
        """The whole 2-D view (tests and small tensors only)."""
        t = self.info(name)
        return self.read(name, 0, t.e_rows, 0, t.e_cols)


def check_block(t: TensorInfo, e_r0: int, e_r1: int, e_c0: int, e_c1: int | None) -> int:
    """Validate a block request against the tensor's view; returns the resolved ``e_c1``."""
    rows, cols = t.e_rows, t.e_cols
    c1 = cols if e_c1 is None else e_c1
    if not (0 <= e_r0 <= e_r1 <= rows and 0 <= e_c0 <= c1 <= cols):
        raise ValueError(
            f"block rows [{e_r0}, {e_r1}) cols [{e_c0}, {c1}) outside tensor {t.name!r} "
            f"view {rows}x{cols}")
    return c1



class MappedFile:
    """A checkpoint file opened for reading, memory-mapped on first use, with the byte range
    that reads have touched since the last ``release`` (dropped from this process's resident
    pages by ``madvise(MADV_DONTNEED)``: the page cache keeps them, RSS stays bounded)."""

    def __init__(self, path: Path) -> None:
        from ..errors import FormatError

        self.path = path
        try:
            self.fh = open(path, "rb")
        except OSError as e:
            raise FormatError(path, f"cannot open: {e.strerror}") from None
        self.size = os.fstat(self.fh.fileno()).st_size
        self.mm: mmap.mmap | None = None
        self._buf: np.ndarray | None = None
        self._touched: tuple[int, int] | None = None

    def buffer(self) -> np.ndarray:
        """The whole file as a read-only uint8 array."""
        if self._buf is None:
            if self.size == 0:
                self._buf = np.zeros(0, np.uint8)
            else:
                self.mm = mmap.mmap(self.fh.fileno(), 0, access=mmap.ACCESS_READ)
                self._buf = np.frombuffer(self.mm, dtype=np.uint8)
        return self._buf

    @property
    def touched(self) -> tuple[int, int] | None:
        """Byte range read since the last release (None: nothing)."""
        return self._touched

    def touch(self, lo: int, hi: int) -> None:
        """Record that bytes lo..hi-1 were read."""
        t = self._touched
        self._touched = (lo, hi) if t is None else (min(lo, t[0]), max(hi, t[1]))

    def release(self) -> None:
        if self.mm is not None and self._touched is not None and hasattr(self.mm, "madvise"):
            lo = (self._touched[0] // mmap.PAGESIZE) * mmap.PAGESIZE
            hi = min(self.size, self._touched[1])
            if hi > lo:
                self.mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
        self._touched = None

    def close(self) -> None:
        self._buf = None
        if self.mm is not None:
            try:
                self.mm.close()
            except BufferError:  # a caller still holds a view; the mapping dies with it
                pass
            self.mm = None
        self.fh.close()
