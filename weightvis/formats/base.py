"""The one reader interface every checkpoint format implements.

A reader lists tensors (no data read) and decodes element blocks of a tensor's 2-D view to
float32. Readers are cheap to open (headers only) so that every worker process opens its own.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..types import TensorInfo

__all__ = ["Reader", "check_block"]


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

