"""Expert kernels (weightvis.moe): one pass over an expert matrix for its moments, float64 dots
of two matrices, and the CountSketch of its rows or columns (Charikar, Chen & Farach-Colton
2002; as a sketch of matrix products: Clarkson & Woodruff 2013).

Kernels are private and pure: arrays in, results written into ``out=`` arrays. The public
wrappers check shapes and dtypes. Every sum is float64 in a fixed order, so equal inputs give
equal bits (a copied expert scores exactly 1).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["moments", "dot64", "gram_apply", "count_sketch", "warm_up", "MOMENTS", "M_SUMSQ",
           "M_SUMABS",
           "M_MAXABS", "M_ZEROS", "M_NONFINITE"]

M_SUMSQ, M_SUMABS, M_MAXABS, M_ZEROS, M_NONFINITE = 0, 1, 2, 3, 4
MOMENTS = 5
"""Fields of ``moments``: sum of w², sum of |w|, max |w| (finite values), exact zeros, values
that are not finite."""


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def _row_moments(w, bits, out):  # type: ignore[no-untyped-def]
    """w float32[h, c] (C-contiguous), bits = w.view(uint32) -> out float64[h, 4]: per row the
    sum of w², the sum of |w|, max |w| (as the uint32 bits of |w|: they order like the values)
    and the count of exact zeros. Sums may be reassociated (vectorised) but their order is
    fixed by the shape, not by the address. A row holding Inf or NaN gets a sum that is not
    finite (the wrapper recomputes it: fast-math is not trusted with them)."""
    h, c = w.shape
    for i in range(h):
        rsq = 0.0
        rab = 0.0
        for j in range(c):
            v = np.float64(w[i, j])
            rsq += v * v
            rab += abs(v)
        rmx = np.uint32(0)
        rz = np.int64(0)
        for j in range(c):
            b = bits[i, j] & np.uint32(0x7FFFFFFF)
            rmx = max(rmx, b)
            rz += b == 0
        out[i, 0] = rsq
        out[i, 1] = rab
        out[i, 2] = rmx
        out[i, 3] = rz


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def _dot64(a, b):  # type: ignore[no-untyped-def]
    """sum(a * b) in float64 for float32 a, b [h, c] (C-contiguous), row by row."""
    h, c = a.shape
    tot = 0.0
    for i in range(h):
        r = 0.0
        for j in range(c):
            r += np.float64(a[i, j]) * np.float64(b[i, j])
        tot += r
    return tot


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def _gram_apply(w, v, out):  # type: ignore[no-untyped-def]
    """out = Wᵀ(W v) for float32 w [h, c], v [c] -> out float32 [c] (zeroed here), in one
    pass over w: four rows' dots with v, then those rows scaled into out while they are in
    cache. float32 sums, reassociated (vectorised) in an order fixed by the shape."""
    h, c = w.shape
    for j in range(c):
        out[j] = 0.0
    i = 0
    while i + 4 <= h:
        t0 = np.float32(0.0)
        t1 = np.float32(0.0)
        t2 = np.float32(0.0)
        t3 = np.float32(0.0)
        for j in range(c):
            vj = v[j]
            t0 += w[i, j] * vj
            t1 += w[i + 1, j] * vj
            t2 += w[i + 2, j] * vj
            t3 += w[i + 3, j] * vj
        for j in range(c):
            out[j] += t0 * w[i, j] + t1 * w[i + 1, j] + t2 * w[i + 2, j] + t3 * w[i + 3, j]
        i += 4
    while i < h:
        t = np.float32(0.0)
        for j in range(c):
            t += w[i, j] * v[j]
        for j in range(c):
            out[j] += t * w[i, j]
        i += 1


@numba.njit(cache=True, nogil=True)
def _sketch_rows(w, bucket, sign, out):  # type: ignore[no-untyped-def]
    """out[bucket[i], :] += sign[i] * w[i, :] (out float32[k, c])."""
    h, c = w.shape
    for i in range(h):
        o = out[bucket[i]]
        s = sign[i]
        for j in range(c):
            o[j] += s * w[i, j]


@numba.njit(cache=True, nogil=True)
def _sketch_cols(w, bucket, sign, out):  # type: ignore[no-untyped-def]
    """out[:, bucket[j]] += sign[j] * w[:, j] (out float32[h, k])."""
    h, c = w.shape
    for i in range(h):
        row = w[i]
        o = out[i]
        for j in range(c):
            o[bucket[j]] += sign[j] * row[j]


def _check(w: np.ndarray) -> np.ndarray:
    if w.dtype != np.float32 or w.ndim != 2:
        raise TypeError(f"expected a float32 matrix, got {w.dtype} with shape {w.shape}")
    return np.ascontiguousarray(w)


def moments(w: np.ndarray) -> np.ndarray:
    """float64[MOMENTS] of the float32 matrix ``w`` (see MOMENTS); sums in float64."""
    w = _check(w)
    rows = np.zeros((w.shape[0], 4), np.float64)
    _row_moments(w, w.view(np.uint32), rows)
    rows[:, 2] = rows[:, 2].astype(np.uint32).view(np.float32)
    out = np.zeros(MOMENTS, np.float64)
    bad = ~np.isfinite(rows[:, 0])
    if bad.any():  # rows with Inf or NaN: their finite values only (no fast-math here)
        for i in np.flatnonzero(bad).tolist():
            row = w[i].astype(np.float64)
            fin = np.isfinite(row)
            a = np.abs(row[fin])
            rows[i, :3] = (a @ a, a.sum(), a.max() if a.size else 0.0)
            out[M_NONFINITE] += row.size - int(fin.sum())
    out[M_SUMSQ] = rows[:, 0].sum()
    out[M_SUMABS] = rows[:, 1].sum()
    out[M_MAXABS] = rows[:, 2].max() if len(rows) else 0.0
    out[M_ZEROS] = rows[:, 3].sum()
    return out


def dot64(a: np.ndarray, b: np.ndarray) -> float:
    """The float64 sum of a * b over two float32 matrices of one shape (flattened dot)."""
    a, b = _check(a), _check(b)
    if a.shape != b.shape:
        raise ValueError(f"dot64: shapes {a.shape} and {b.shape} differ")
    return float(_dot64(a, b))


def gram_apply(w: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Wᵀ(W v) (float32 [cols]) of the float32 matrix ``w`` and a vector ``v``: one pass over
    ``w`` (two products would read it twice), float32 sums."""
    w = _check(w)
    v = np.ascontiguousarray(v, np.float32)
    if v.shape != (w.shape[1],):
        raise ValueError(f"gram_apply: v of shape {v.shape} for a matrix {w.shape}")
    out = np.empty(w.shape[1], np.float32)
    _gram_apply(w, v, out)
    return out


def count_sketch(w: np.ndarray, bucket: np.ndarray, sign: np.ndarray, axis: int,
                 k: int) -> np.ndarray:
    """The CountSketch of ``w``'s rows (axis 0: float32[k, cols], row ``bucket[i]`` gains
    ``sign[i] * w[i]``) or columns (axis 1: float32[rows, k]). ``bucket`` int64 in [0, k),
    ``sign`` float32 of +-1, one per row (axis 0) or column (axis 1)."""
    w = _check(w)
    n = w.shape[axis]
    if bucket.shape != (n,) or sign.shape != (n,):
        raise ValueError(f"count_sketch: {n} buckets and signs needed")
    bucket = np.ascontiguousarray(bucket, np.int64)
    sign = np.ascontiguousarray(sign, np.float32)
    if axis == 0:
        out = np.zeros((k, w.shape[1]), np.float32)
        _sketch_rows(w, bucket, sign, out)
    else:
        out = np.zeros((w.shape[0], k), np.float32)
        _sketch_cols(w, bucket, sign, out)
    return out


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel here, before processes fork."""
    w = np.ones((2, 3), np.float32)
    moments(w)
    dot64(w, w)
    gram_apply(w, np.ones(3))
    count_sketch(w, np.zeros(2, np.int64), np.ones(2, np.float32), 0, 2)
    count_sketch(w, np.zeros(3, np.int64), np.ones(3, np.float32), 1, 2)
