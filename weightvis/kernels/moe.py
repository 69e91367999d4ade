"""Expert kernels (weightvis.moe): one pass over an expert matrix for its moments, float64 dots
of two matrices, and two CountSketches of its rows or columns with its row and column sums in
one pass (Charikar, Chen & Farach-Colton 2002; as a sketch of matrix products: Clarkson &
Woodruff 2013).

Kernels are private and pure: arrays in, results written into ``out=`` arrays. The public
wrappers check shapes and dtypes. Every sum is float64 in a fixed order, so equal inputs give
equal bits (a copied expert scores exactly 1).
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

__all__ = ["moments", "stats_pass", "decode_stats_pass", "StatsPass", "dot64", "gram_apply",
           "sketch_pass", "SketchPass", "example_sums",
           "warm_up", "MOMENTS", "M_SUMSQ", "M_SUMABS", "M_MAXABS", "M_ZEROS", "M_NONFINITE"]

M_SUMSQ, M_SUMABS, M_MAXABS, M_ZEROS, M_NONFINITE = 0, 1, 2, 3, 4
MOMENTS = 5
"""Fields of ``moments``: sum of w², sum of |w|, max |w| (finite values), exact zeros, values
that are not finite."""


@numba.njit(inline="always", nogil=True, fastmath={"reassoc", "nsz"})
def _row_pass(w, bits, i, rows, row_sum, col_sq, col_sum):  # type: ignore[no-untyped-def]
    """Row i of w float32[h, c] (bits = w.view(uint32)): into rows[i] (float64[4]) its sum of
    w², sum of |w|, max |w| (as the uint32 bits of |w|: they order like the values) and count
    of exact zeros; into row_sum[i] its sum; added into col_sq and col_sum (float64[c]) its
    squares and values. Sums may be reassociated (vectorised) but their order is fixed by the
    shape, not by the address, nor by the caller: both kernels below inline this one in
    numba's IR (as a jitted callee it was optimised differently when compiled and when loaded
    from numba's cache: a Dask worker's bits differed from the local pool's; tested). A row
    holding Inf or NaN gets sums that are not finite (``_finish`` recomputes its moments:
    fast-math is not trusted with them)."""
    c = w.shape[1]
    rsq = 0.0
    rab = 0.0
    rs = 0.0
    for j in range(c):  # (the reassociated sums in a loop without stores: a loop that also
        v = np.float64(w[i, j])  # stores may be peeled to align them, and its sums' order
        rsq += v * v             # then depends on the arrays' addresses — seen: two
        rab += abs(v)            # processes' bits differed)
        rs += v
    rmx = np.uint32(0)
    rz = np.int64(0)
    for j in range(c):  # (each store's sum is one addition; integers in any order)
        v = np.float64(w[i, j])
        col_sq[j] += v * v
        col_sum[j] += v
        b = bits[i, j] & np.uint32(0x7FFFFFFF)
        rmx = max(rmx, b)
        rz += b == 0
    rows[i, 0] = rsq
    rows[i, 1] = rab
    rows[i, 2] = rmx
    rows[i, 3] = rz
    row_sum[i] = rs


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def _stats_rows(w, bits, rows, row_sum, col_sq, col_sum):  # type: ignore[no-untyped-def]
    """``_row_pass`` over every row of w (C-contiguous): one pass."""
    for i in range(w.shape[0]):
        _row_pass(w, bits, i, rows, row_sum, col_sq, col_sum)


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def _decode_stats_rows(codes, bits, out, rows, row_sum,  # type: ignore[no-untyped-def]
                       col_sq, col_sum):
    """BF16 codes uint16[h, c] decoded into out float32[h, c] (bits = out.view(uint32)), and
    ``_row_pass`` over each row while it is in cache: one pass, the same sums as
    ``_stats_rows`` over the decoded matrix, bit for bit."""
    h, c = codes.shape
    for i in range(h):
        for j in range(c):
            bits[i, j] = np.uint32(codes[i, j]) << 16
        _row_pass(out, bits, i, rows, row_sum, col_sq, col_sum)


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


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def _sketch_rows(w, b1, s1, b2, s2, z1, z2, sq, total):  # type: ignore[no-untyped-def]
    """One pass over the rows of w (the features): z{1,2}[b{1,2}[i], :] += s{1,2}[i] * w[i, :]
    (float32 [k, cols]); sq[j] += w[i, j]² and total[i] = Σ_j w[i, j] (float64)."""
    h, c = w.shape
    for i in range(h):
        o1 = z1[b1[i]]
        o2 = z2[b2[i]]
        a1 = s1[i]
        a2 = s2[i]
        acc = 0.0
        for j in range(c):
            x = w[i, j]
            o1[j] += a1 * x
            o2[j] += a2 * x
            sq[j] += np.float64(x) * x
            acc += x
        total[i] = acc


_COLS_BLOCK = 32
"""Examples (rows) ``_sketch_cols`` sketches before writing them out, transposed: 32 x k
float32 buffers, written 32 contiguous values at a time (measured 1024 x 3584, k = 512:
3.9 ms for both sketches and the sums, against 7.7 ms in separate passes and transposes)."""


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def _sketch_cols(w, b1, s1, b2, s2, z1, z2, sq, total):  # type: ignore[no-untyped-def]
    """One pass over the rows of w (the examples; its columns are the features):
    z{1,2}[b{1,2}[j], i] += s{1,2}[j] * w[i, j] (float32 [k, rows]); sq[i] = Σ_j w[i, j]² and
    total[j] += w[i, j] (float64)."""
    h, c = w.shape
    k = z1.shape[0]
    t1 = np.zeros((_COLS_BLOCK, k), np.float32)
    t2 = np.zeros((_COLS_BLOCK, k), np.float32)
    for i0 in range(0, h, _COLS_BLOCK):
        m = min(_COLS_BLOCK, h - i0)
        t1[:] = 0.0
        t2[:] = 0.0
        for r in range(m):
            i = i0 + r
            o1 = t1[r]
            o2 = t2[r]
            for j in range(c):
                x = w[i, j]
                o1[b1[j]] += s1[j] * x
                o2[b2[j]] += s2[j] * x
            acc = 0.0
            for j in range(c):
                x = w[i, j]
                acc += np.float64(x) * x
                total[j] += x
            sq[i] = acc
        for b in range(k):
            for r in range(m):
                z1[b, i0 + r] = t1[r, b]
                z2[b, i0 + r] = t2[r, b]


def _check(w: np.ndarray) -> np.ndarray:
    if w.dtype != np.float32 or w.ndim != 2:
        raise TypeError(f"expected a float32 matrix, got {w.dtype} with shape {w.shape}")
    return np.ascontiguousarray(w)


class StatsPass(NamedTuple):
    """One pass over an expert matrix (``stats_pass``, ``decode_stats_pass``)."""

    moments: np.ndarray
    """float64[MOMENTS] (see MOMENTS): finite values only."""
    row_sq: np.ndarray
    """float64 [rows]: each row's sum of squares (non-finite values included)."""
    row_sum: np.ndarray
    """float64 [rows]: each row's sum."""
    col_sq: np.ndarray
    """float64 [cols]: each column's sum of squares."""
    col_sum: np.ndarray
    """float64 [cols]: each column's sum."""

    def example_sums(self, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """(the examples' squared norms, the features' sums over the examples) when the
        features run along ``axis`` (as the function ``example_sums``)."""
        return (self.col_sq, self.row_sum) if axis == 0 else (self.row_sq, self.col_sum)


def _buffers(h: int, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (np.zeros((h, 4), np.float64), np.zeros(h, np.float64), np.zeros(c, np.float64),
            np.zeros(c, np.float64))


@np.errstate(invalid="ignore")  # (signalling NaNs among the values: no warning)
def _finish(w: np.ndarray, rows: np.ndarray, row_sum: np.ndarray, col_sq: np.ndarray,
            col_sum: np.ndarray) -> StatsPass:
    row_sq = rows[:, 0].copy()
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
    return StatsPass(out, row_sq, row_sum, col_sq, col_sum)


def stats_pass(w: np.ndarray) -> StatsPass:
    """The moments and the row and column sums of the float32 matrix ``w``, in one pass."""
    w = _check(w)
    bufs = _buffers(*w.shape)
    _stats_rows(w, w.view(np.uint32), *bufs)
    return _finish(w, *bufs)


def decode_stats_pass(codes: np.ndarray, out: np.ndarray) -> StatsPass:
    """BF16 ``codes`` (uint16 [rows, cols]) decoded into ``out`` (float32, C-contiguous, of
    that shape) and ``stats_pass(out)``, bit for bit, in one pass (measured 3584 x 1024:
    1.3 ms, against 2.1 ms decoding first)."""
    if codes.dtype != np.uint16 or codes.ndim != 2 or out.shape != codes.shape \
            or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise TypeError(f"decode_stats_pass: uint16 codes {codes.dtype} {codes.shape} into "
                        f"{out.dtype} {out.shape}")
    bufs = _buffers(*codes.shape)
    _decode_stats_rows(codes, out.view(np.uint32), out, *bufs)
    return _finish(out, *bufs)


def moments(w: np.ndarray) -> np.ndarray:
    """float64[MOMENTS] of the float32 matrix ``w`` (see MOMENTS); sums in float64
    (``stats_pass``'s)."""
    return stats_pass(w).moments


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


class SketchPass(NamedTuple):
    """``sketch_pass``: the two CountSketches of an expert's features and its sums."""

    z1: np.ndarray
    """float32 [k, n]: the first sketch, transposed (n examples)."""
    z2: np.ndarray
    """float32 [k, n]: the second."""
    sq: np.ndarray
    """float64 [n]: each example's squared norm."""
    total: np.ndarray
    """float64 [p]: each feature's sum over the examples."""


def sketch_pass(w: np.ndarray, axis: int, maps: tuple[tuple[np.ndarray, np.ndarray], ...],
                k: int) -> SketchPass:
    """In one pass over the float32 matrix ``w`` whose features (CKA: an expert's neurons)
    run along ``axis`` (0: its rows, 1: its columns): the two CountSketches of the features
    to ``k`` buckets — ``maps`` = ((bucket, sign), (bucket, sign)), int64 in [0, k) and
    float32 of +-1 per feature — the examples' squared norms and the features' sums."""
    w = _check(w)
    p = w.shape[axis]
    n = w.shape[1 - axis]
    (b1, s1), (b2, s2) = ((np.ascontiguousarray(b, np.int64), np.ascontiguousarray(s, np.float32))
                          for b, s in maps)
    if not all(a.shape == (p,) for a in (b1, s1, b2, s2)):
        raise ValueError(f"sketch_pass: {p} buckets and signs needed")
    out = SketchPass(np.zeros((k, n), np.float32), np.zeros((k, n), np.float32),
                     np.zeros(n, np.float64), np.zeros(p, np.float64))
    (_sketch_rows if axis == 0 else _sketch_cols)(w, b1, s1, b2, s2, *out)
    return out


def example_sums(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """In one pass over the float32 matrix ``w`` whose features run along ``axis`` (as
    ``sketch_pass``): the examples' squared norms (float64 [n]) and the features' sums over the
    examples (float64 [p])."""
    return stats_pass(w).example_sums(axis)


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel here, before processes fork."""
    w = np.ones((2, 3), np.float32)
    moments(w)
    decode_stats_pass(np.ones((2, 3), np.uint16), np.empty((2, 3), np.float32))
    dot64(w, w)
    gram_apply(w, np.ones(3))
    for axis in (0, 1):
        one = (np.zeros(w.shape[axis], np.int64), np.ones(w.shape[axis], np.float32))
        sketch_pass(w, axis, (one, one), 2)
        example_sums(w, axis)
