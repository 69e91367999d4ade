"""Hilbert curve kernels (Wikipedia "Hilbert curve": xy2d / d2xy / rot; D. Hilbert, 1891).

``n`` is the side of the square canvas (a power of two); ``c_x, c_y`` a canvas pixel at max zoom;
``h`` an index along the curve.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["hilbert_xy2d", "hilbert_d2xy", "hilbert_tile_offsets"]


@numba.njit(cache=True, nogil=True)
def _xy2d(n, x, y):  # type: ignore[no-untyped-def]
    d = np.int64(0)
    s = n // 2
    while s > 0:
        rx = 1 if (x & s) > 0 else 0
        ry = 1 if (y & s) > 0 else 0
        d += np.int64(s) * np.int64(s) * ((3 * rx) ^ ry)
        if ry == 0:
            if rx == 1:
                x = n - 1 - x
                y = n - 1 - y
            x, y = y, x
        s //= 2
    return d


@numba.njit(cache=True, nogil=True)
def _d2xy(n, d):  # type: ignore[no-untyped-def]
    t = d
    x = np.int64(0)
    y = np.int64(0)
    s = np.int64(1)
    while s < n:
        rx = 1 & (t // 2)
        ry = 1 & (t ^ rx)
        if ry == 0:
            if rx == 1:
                x = s - 1 - x
                y = s - 1 - y
            x, y = y, x
        x += s * rx
        y += s * ry
        t //= 4
        s *= 2
    return x, y


@numba.njit(cache=True, nogil=True)
def _tile_offsets(n, c_x0, c_y0, out):  # type: ignore[no-untyped-def]
    """out int64[T, T]: Hilbert index of canvas pixel (c_x0 + j, c_y0 + i) minus the tile's first
    index (an aligned T x T tile is one contiguous range of T*T indices)."""
    t = out.shape[0]
    base = _xy2d(n, c_x0, c_y0)
    base -= base % (t * t)
    for i in range(t):
        for j in range(t):
            out[i, j] = _xy2d(n, c_x0 + j, c_y0 + i) - base
    return base


def hilbert_xy2d(n: int, c_x: int, c_y: int) -> int:
    """The curve index of canvas pixel (c_x, c_y) on an n x n canvas."""
    return int(_xy2d(np.int64(n), np.int64(c_x), np.int64(c_y)))


def hilbert_d2xy(n: int, h: int) -> tuple[int, int]:
    """The canvas pixel (c_x, c_y) of curve index h on an n x n canvas."""
    x, y = _d2xy(np.int64(n), np.int64(h))
    return int(x), int(y)


def hilbert_tile_offsets(n: int, c_x0: int, c_y0: int, out: np.ndarray) -> int:
    """Fill ``out`` (int64[T, T]) with per-pixel curve offsets; returns the tile's first index."""
    t = out.shape[0]
    if out.shape != (t, t) or out.dtype != np.int64 or c_x0 % t or c_y0 % t or n % t:
        raise ValueError("hilbert_tile_offsets: tile must be square, int64 and aligned")
    return int(_tile_offsets(np.int64(n), np.int64(c_x0), np.int64(c_y0), out))
