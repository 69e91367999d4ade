"""Tile writers: palette PNG (exact colours; the only tile format, options.TILE_FORMAT_GONE
says why AVIF went); atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["encode_tile", "encode_tile_parts", "write_parts", "write_atomic"]


def encode_tile(idx: np.ndarray, palette: bytes, fmt: str) -> bytes:
    """Encode a uint8 palette-index tile as a palette PNG: the indices (colour type 3, the given
    palette; png.py: deflate with run-length matches and dynamic Huffman codes, like zlib's
    Z_RLE strategy, in numba - 4-5x faster than Pillow at the same size). ``fmt``: "png"."""
    return b"".join(encode_tile_parts(idx, palette, fmt))


def encode_tile_parts(idx: np.ndarray, palette: bytes, fmt: str, png_deflate: str = "rle"
                      ) -> list[bytes | memoryview]:
    """``encode_tile`` as buffers for ``write_parts``, valid until this thread's next call
    (``png_deflate``: options.PngDeflate)."""
    assert idx.dtype == np.uint8 and idx.ndim == 2 and fmt == "png", (idx.dtype, fmt)
    from .png import png_parts  # compiled kernels, loaded on first use (see tiling)

    return png_parts(idx, palette, deflate=png_deflate)


def write_parts(path: str, parts: list[bytes | memoryview]) -> int:
    """Create (or truncate) ``path`` and write the buffers in order; returns the bytes written.
    (No rename: tiles go into a staged folder that is renamed into place when complete.)"""
    total = sum(len(p) for p in parts)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        done = os.writev(fd, parts)
        while done < total:  # a short write (signal, nearly full disk): write the rest
            rest = b"".join(bytes(p) for p in parts)[done:]
            done += os.write(fd, rest)
    finally:
        os.close(fd)
    return total


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary name beside ``path`` and rename over it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
