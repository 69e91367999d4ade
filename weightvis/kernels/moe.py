"""Expert kernels (weightvis.moe): one pass over an expert matrix for its moments, float64 dots
of two matrices, and two CountSketches of its rows or columns with its row and column sums in
one pass (Charikar, Chen & Farach-Colton 2002; as a sketch of matrix products: Clarkson &
Woodruff 2013).

Kernels are private and pure: arrays in, results written into ``out=`` arrays. The public
wrappers check shapes and dtypes. Every sum is float64 in a fixed order, so equal inputs give
equal bits (a copied expert scores exactly 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic, overload
from numba.np.numpy_support import carray

__all__ = ["moments", "stats_pass", "decode_stats_pass", "StatsPass", "dot64", "gram_apply",
           "bf16_codes", "pair_dots",
           "sketch_pass", "SketchPass", "example_sums",
           "warm_up", "MOMENTS", "M_SUMSQ", "M_SUMABS", "M_MAXABS", "M_ZEROS", "M_NONFINITE"]

M_SUMSQ, M_SUMABS, M_MAXABS, M_ZEROS, M_NONFINITE = 0, 1, 2, 3, 4
MOMENTS = 5
"""Fields of ``moments``: sum of w², sum of |w|, max |w| (finite values), exact zeros, values
that are not finite."""


@numba.njit(inline="always", nogil=True, fastmath={"reassoc", "nsz"})
def _row_pass(w, bits, i, rows, row_sum, col_sq, col_sum):  # type: ignore[no-untyped-def]
    """Row i of w float32[h, c] (bits = w.view(uint32)): into rows[i] (float64[5]) its sum of
    w², sum of |w|, max |w| (as the uint32 bits of |w|: they order like the values), count
    of exact zeros and the OR of its values' low 16 bits (0: every value a bfloat16); into
    row_sum[i] its sum; added into col_sq and col_sum (float64[c]) its
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
    low = np.uint32(0)
    for j in range(c):  # (each store's sum is one addition; integers in any order)
        v = np.float64(w[i, j])
        col_sq[j] += v * v
        col_sum[j] += v
        b = bits[i, j] & np.uint32(0x7FFFFFFF)
        rmx = max(rmx, b)
        rz += b == 0
        low |= b & np.uint32(0xFFFF)
    rows[i, 0] = rsq
    rows[i, 1] = rab
    rows[i, 2] = rmx
    rows[i, 3] = rz
    rows[i, 4] = low
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


def _value(x):  # type: ignore[no-untyped-def]
    """A matrix element as float32: itself, or a bfloat16 code (uint16) widened exactly."""
    raise NotImplementedError("only called from numba")


def _f32_from_bits_typer(typingctx, x):  # type: ignore[no-untyped-def]
    """The float32 whose bits are the uint32 ``x`` (a bit cast, no conversion)."""
    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], context.get_value_type(types.float32))
    return types.float32(types.uint32), codegen


_f32_from_bits: Any = intrinsic(_f32_from_bits_typer)


def _pointer_typer(typingctx, addr, like):  # type: ignore[no-untyped-def]
    """A pointer to elements of ``like``'s type at the address ``addr`` (int64)."""
    ptr = types.CPointer(like.dtype)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.inttoptr(args[0], context.get_value_type(ptr))
    return ptr(types.int64, like), codegen


_pointer: Any = intrinsic(_pointer_typer)


@overload(_value, inline="always")
def _value_overload(x):  # type: ignore[no-untyped-def]
    if isinstance(x, types.Float):
        return lambda x: x
    if x == types.uint16:
        return lambda x: _f32_from_bits(np.uint32(x) << np.uint32(16))
    return None


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def _gram_apply(w, v, out):  # type: ignore[no-untyped-def]
    """out = Wᵀ(W v) for w [h, c] (float32, or bfloat16 codes as uint16: half the bytes read,
    measured 2x faster right after the decoding pass), v float32 [c] -> out float32 [c]
    (zeroed here), in one pass over w: four rows' dots with v, then those rows scaled into out
    while they are in cache. float32 sums, reassociated (vectorised) in an order fixed by the
    shape and the element type (the two types' compiled loops differ: a matrix whose values
    are all bfloat16 is always given as codes, whatever its storage)."""
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
            t0 += _value(w[i, j]) * vj
            t1 += _value(w[i + 1, j]) * vj
            t2 += _value(w[i + 2, j]) * vj
            t3 += _value(w[i + 3, j]) * vj
        for j in range(c):
            out[j] += (t0 * _value(w[i, j]) + t1 * _value(w[i + 1, j])
                       + t2 * _value(w[i + 2, j]) + t3 * _value(w[i + 3, j]))
        i += 4
    while i < h:
        t = np.float32(0.0)
        for j in range(c):
            t += _value(w[i, j]) * v[j]
        for j in range(c):
            out[j] += t * _value(w[i, j])
        i += 1


@numba.njit(inline="always", nogil=True, fastmath={"reassoc", "nsz"})
def _dot32(a, b):  # type: ignore[no-untyped-def]
    """sum(a * b) of two vectors (float32, or bfloat16 codes) in float32, reassociated
    (vectorised) in a loop without stores (its order fixed by the length and the element
    type; inlined in numba's IR, see _row_pass)."""
    t = np.float32(0.0)
    for j in range(a.size):
        t += _value(a[j]) * _value(b[j])
    return t


PAIR_BLOCK = 8192
"""Elements of each row ``_pair_dots`` sums in float32 before adding into float64: the
group's rows of one block (8 x 32 KiB for 8 float32 experts) stay in L2 while its pairs are
formed."""


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def _pair_dots(addrs, n, like, out):  # type: ignore[no-untyped-def]
    """out[a, b] (float64 [e, e], zeroed by the caller) = sum(k_a * k_b) for b <= a, k_a the
    ``n`` elements at address addrs[a] (int64 [e]) of ``like``'s type (float32, or bfloat16
    codes; the caller keeps them alive), by blocks of PAIR_BLOCK elements. (Addresses, not a
    numba typed list: its first use in a process compiled for 0.17 s.)"""
    e = addrs.size
    for j0 in range(0, n, PAIR_BLOCK):
        j1 = min(n, j0 + PAIR_BLOCK)
        for a in range(e):
            ka = carray(_pointer(addrs[a], like), n)[j0:j1]
            for b in range(a + 1):
                out[a, b] += _dot32(ka, carray(_pointer(addrs[b], like), n)[j0:j1])


@numba.njit(cache=True, nogil=True)
def _to_codes(bits, out):  # type: ignore[no-untyped-def]
    """out[i, j] = the high 16 bits of bits[i, j] (uint32 [h, c] -> uint16); returns whether
    every low half was zero (the float32 values all bfloat16)."""
    low = np.uint32(0)
    h, c = bits.shape
    for i in range(h):
        for j in range(c):
            b = bits[i, j]
            out[i, j] = np.uint16(b >> np.uint32(16))
            low |= b & np.uint32(0xFFFF)
    return low == 0


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
    bf16: bool
    """Every value is a bfloat16 (the low 16 bits of each float32 are zero): the stable
    rank's passes then read the codes (``gram_apply``)."""

    def example_sums(self, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """(the examples' squared norms, the features' sums over the examples) when the
        features run along ``axis`` (as the function ``example_sums``)."""
        return (self.col_sq, self.row_sum) if axis == 0 else (self.row_sq, self.col_sum)


def _buffers(h: int, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (np.zeros((h, 5), np.float64), np.zeros(h, np.float64), np.zeros(c, np.float64),
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
    return StatsPass(out, row_sq, row_sum, col_sq, col_sum, not rows[:, 4].any())


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


def pair_dots(k: Sequence[np.ndarray]) -> np.ndarray:
    """float64 [e, e]: the dot products of every pair of ``k`` — e arrays of one shape and
    type, float32 or bfloat16 codes (uint16; half the bytes read), flattened — float32 sums
    over blocks of PAIR_BLOCK elements, float64 across them: one pass over ``k`` (measured
    8 x 3.7 M float32 elements: 8.6 ms, against 11.6 ms for ``k @ k.T``, whose float32 sums
    are also 1000x less accurate). The two types give different last bits for the same
    values (as ``gram_apply``)."""
    rows = []
    for a in k:
        a = np.ascontiguousarray(a)
        if a.dtype not in (np.float32, np.uint16) or a.shape != k[0].shape \
                or a.dtype != k[0].dtype:
            raise TypeError(f"pair_dots: {a.dtype} {a.shape} among {k[0].dtype} {k[0].shape}")
        rows.append(a.reshape(-1))
    out = np.zeros((len(rows), len(rows)), np.float64)
    if rows:
        addrs = np.array([a.ctypes.data for a in rows], np.int64)
        _pair_dots(addrs, rows[0].size, rows[0][:0], out)
    low = np.tril_indices(len(rows), -1)
    out[low[1], low[0]] = out[low]
    return out


def gram_apply(w: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Wᵀ(W v) (float32 [cols]) of the matrix ``w`` — float32, or bfloat16 codes (uint16) —
    and a vector ``v``: one pass over ``w`` (two products would read it twice), float32 sums.
    The two element types give different last bits for the same values: give a matrix whose
    values are all bfloat16 as codes (``bf16_codes``)."""
    if w.dtype == np.uint16 and w.ndim == 2:
        w = np.ascontiguousarray(w)
    else:
        w = _check(w)
    v = np.ascontiguousarray(v, np.float32)
    if v.shape != (w.shape[1],):
        raise ValueError(f"gram_apply: v of shape {v.shape} for a matrix {w.shape}")
    out = np.empty(w.shape[1], np.float32)
    _gram_apply(w, v, out)
    return out


def bf16_codes(w: np.ndarray, out: np.ndarray | None = None) -> np.ndarray | None:
    """The bfloat16 codes (uint16, in ``out`` where given) of the float32 matrix ``w`` when
    every value is a bfloat16, else None: one pass."""
    w = _check(w)
    if out is None:
        out = np.empty(w.shape, np.uint16)
    elif out.shape != w.shape or out.dtype != np.uint16 or not out.flags.c_contiguous:
        raise TypeError(f"bf16_codes: out {out.dtype} {out.shape} for a matrix {w.shape}")
    return out if _to_codes(w.view(np.uint32), out) else None


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
    gram_apply(bf16_codes(w), np.ones(3))  # type: ignore[arg-type]
    pair_dots([w, w])
    pair_dots([bf16_codes(w)] * 2)  # type: ignore[list-item]
    for axis in (0, 1):
        one = (np.zeros(w.shape[axis], np.int64), np.ones(w.shape[axis], np.float32))
        sketch_pass(w, axis, (one, one), 2)
        example_sums(w, axis)
