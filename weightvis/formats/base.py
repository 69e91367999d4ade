"""The one reader interface every checkpoint format implements.

A reader lists tensors (no data read) and decodes element blocks of a tensor's 2-D view to
float32. Readers are cheap to open (headers only) so that every worker process opens its own.
"""

from __future__ import annotations

import abc
import contextlib
import gc
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..types import TensorInfo

__all__ = ["Reader", "check_block", "gc_paused", "MAX_NAME_LENGTH"]

MAX_NAME_LENGTH = 1 << 16
"""Longest tensor name a reader accepts, in characters (llama.cpp refuses names over 64; a real
checkpoint's longest are ~150): a longer one is a corrupt or hostile header."""


class Reader(abc.ABC):
    """Abstract checkpoint reader (one file, or several files presented as one checkpoint)."""

    format: str = "?"
    """Short format name shown to users: ``safetensors``, ``gguf``, ``pytorch``."""

    _info_by_name: dict[str, TensorInfo] | None = None

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
        """The tensor called ``name`` (KeyError if none). A name -> info map is built on the
        first call: ``tensors()`` is fixed once a reader is open."""
        by_name = self._info_by_name
        if by_name is None:
            by_name = self._info_by_name = {t.name: t for t in self.tensors()}
        try:
            return by_name[name]
        except KeyError:
            raise KeyError(name) from None

    def read_all(self, name: str) -> np.ndarray:
        """The whole 2-D view (tests and small tensors only)."""
        t = self.info(name)
        return self.read(name, 0, t.e_rows, 0, t.e_cols)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a header is parsed: parsing allocates an object
    or more per tensor and keeps them, and the collections those allocations trigger traverse
    everything allocated so far (measured: a 32k-tensor PyTorch file opened in 2.9 s instead of
    1.1 s, and the cost grew faster than the tensor count)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def check_block(t: TensorInfo, e_r0: int, e_r1: int, e_c0: int, e_c1: int | None) -> int:
    """Validate a block request against the tensor's view; returns the resolved ``e_c1``."""
    rows, cols = t.e_rows, t.e_cols
    c1 = cols if e_c1 is None else e_c1
    if not (0 <= e_r0 <= e_r1 <= rows and 0 <= e_c0 <= c1 <= cols):
        raise ValueError(
            f"block rows [{e_r0}, {e_r1}) cols [{e_c0}, {c1}) outside tensor {t.name!r} "
            f"view {rows}x{cols}")
    return c1
