"""Delta kernels (weightvis diff): two float32 blocks -> delta palette indices by
``color.DELTA_RULES``, the hatching of elements only one side has, and blocks whose 16-bit codes
are equal on both sides; their numbers go into an ``ACC_DELTA`` accumulator.

Kernels are private and pure: arrays in, results written into ``out=`` arrays; they take integer
constants (``METRIC_*``), never strings. The public wrappers validate and dispatch.
"""

from __future__ import annotations

import numba
import numpy as np

from .accumulators import _DA2, _DAB, _DB2, _DCHG, _DD2, _DMAX, _DN, _DNFI
from .constants import (
    D_BASE_ONLY,
    D_GAP,
    D_LEVELS,
    D_NONFINITE,
    D_ONLY_A,
    D_ONLY_B,
    METRIC_ABSLOG,
    METRIC_RMS,
    PAD,
    ZERO,
)

__all__ = ["ELEMENTS_CAP", "colorize_delta", "hatch", "identical_codes"]

ELEMENTS_CAP = 64
"""Changed elements a diff records per tensor (``colorize_delta``'s ``elems`` has one row more,
to tell "exactly 64" from "more")."""


@numba.njit(cache=True, nogil=True)
def _colorize_delta(  # type: ignore[no-untyped-def]
        a, b, s, metric, l0, l1, out, acc, row_flags, col_flags, e_r0, e_c0, elems, n_elems):
    """a, b float32[h, w] (element block rows e_r0.., cols e_c0.. of both tensors) -> out uint8
    delta indices (color.DELTA_RULES; metric METRIC_*, l0, l1 the abs-log decades); accumulates
    acc (ACC_DELTA) in place; sets
    row_flags[e_r0+i] / col_flags[e_c0+j] for changed elements; records up to
    elems.shape[0] changed elements (row, col, a, b) in elems, counting in n_elems[0]."""
    h, w = a.shape
    lv = float(D_LEVELS)
    for i in range(h):
        for j in range(w):
            av = np.float64(a[i, j])
            bv = np.float64(b[i, j])
            a_fin = abs(av) < np.inf
            b_fin = abs(bv) < np.inf
            if a_fin:
                acc[_DA2] += av * av
            if b_fin:
                acc[_DB2] += bv * bv
            if a_fin and b_fin:
                acc[_DAB] += av * bv
            acc[_DN] += 1.0
            if av == bv or (av != av and bv != bv):
                out[i, j] = ZERO
                continue
            acc[_DCHG] += 1.0
            row_flags[e_r0 + i] = True
            col_flags[e_c0 + j] = True
            k = n_elems[0]
            if k < elems.shape[0]:
                elems[k, 0] = e_r0 + i
                elems[k, 1] = e_c0 + j
                elems[k, 2] = av
                elems[k, 3] = bv
            n_elems[0] = k + 1
            if a_fin and not b_fin:
                acc[_DNFI] += 1.0
            d = bv - av
            if not (abs(d) < np.inf):
                out[i, j] = D_NONFINITE
                continue
            acc[_DD2] += d * d
            ad = abs(d)
            if ad > acc[_DMAX]:
                acc[_DMAX] = ad
            if metric == METRIC_RMS:
                x = ad / s
                if x > 1.0:
                    x = 1.0
                q = np.int64(np.floor(lv * np.sqrt(x) + 0.5))
            elif metric == METRIC_ABSLOG:
                q = np.int64(np.floor(lv * (np.log10(ad) - l0) / (l1 - l0) + 0.5))
            else:
                q = D_LEVELS
            if q < 1:
                q = 1
            if q > D_LEVELS:
                q = D_LEVELS
            out[i, j] = ZERO + q if d > 0 else ZERO - q


@numba.njit(cache=True, nogil=True)
def _stripe(kind, x, y):  # type: ignore[no-untyped-def]
    """The hatch index at pixel (x, y) of its zoom level: kind (D_ONLY_A, D_ONLY_B or
    D_BASE_ONLY) on the stripes, D_GAP between them (only-in-B stripes run the other way)."""
    if kind == D_ONLY_B:
        on = ((x - y + (1 << 40)) // 4) % 2 == 0
    else:
        on = ((x + y) // 4) % 2 == 0
    return kind if on else D_GAP


@numba.njit(cache=True, nogil=True)
def _hatch(out, e_r0, e_c0, ra, ca, rb, cb, base_only, c_x0, c_y0):  # type: ignore[no-untyped-def]
    """Write the one-sided elements of a block (element rows e_r0.., cols e_c0..; tensor A is
    ra x ca, B is rb x cb): hatch D_ONLY_A (D_BASE_ONLY if base_only) where only A has the
    element, D_ONLY_B where only B has it, padding where neither; elements in both are left as
    they are. The stripe phase comes from the canvas pixel (c_x0 + j, c_y0 + i)."""
    h, w = out.shape
    for i in range(h):
        r = e_r0 + i
        for j in range(w):
            c = e_c0 + j
            in_a = r < ra and c < ca
            in_b = r < rb and c < cb
            if in_a and in_b:
                continue
            if in_a:
                out[i, j] = _stripe(D_BASE_ONLY if base_only else D_ONLY_A, c_x0 + j, c_y0 + i)
            elif in_b:
                out[i, j] = _stripe(D_ONLY_B, c_x0 + j, c_y0 + i)
            else:
                out[i, j] = PAD


@numba.njit(cache=True, nogil=True)
def _identical_codes(src, values, hist, out, acc):  # type: ignore[no-untyped-def]
    """A block whose 16-bit codes are the same in A and B: out = unchanged (ZERO); accumulate
    the delta numbers (b == a everywhere) from a code histogram; hist int32[65536] is zero on
    entry and on return."""
    h, w = src.shape
    for i in range(h):
        for j in range(w):
            hist[src[i, j]] += 1
            out[i, j] = ZERO
    for c in range(hist.shape[0]):
        k = hist[c]
        if k == 0:
            continue
        hist[c] = 0
        v = np.float64(values[c])
        acc[_DN] += k
        if abs(v) < np.inf:
            acc[_DA2] += k * v * v
            acc[_DB2] += k * v * v
            acc[_DAB] += k * v * v


def identical_codes(codes: np.ndarray, values: np.ndarray, hist: np.ndarray, out: np.ndarray,
                    acc: np.ndarray) -> None:
    """Delta of a block equal in A and B, given as its 16-bit codes (see _identical_codes)."""
    if codes.dtype != np.uint16 or codes.shape != out.shape or hist.shape != (1 << 16,):
        raise ValueError("identical_codes: uint16 codes and uint8 out of one shape")
    _identical_codes(codes, values, hist, out, acc)


def colorize_delta(a: np.ndarray, b: np.ndarray, s: float, metric: int, out: np.ndarray,
                   acc: np.ndarray, row_flags: np.ndarray, col_flags: np.ndarray, e_r0: int,
                   e_c0: int, elems: np.ndarray, n_elems: np.ndarray,
                   decades: tuple[float, float] = (-8.0, 0.0)) -> None:
    """Delta colours of an element block present in both tensors (see _colorize_delta)."""
    if a.shape != b.shape or a.shape != out.shape or a.dtype != np.float32 \
            or b.dtype != np.float32 or out.dtype != np.uint8:
        raise ValueError("colorize_delta: a, b float32 and out uint8 of one shape")
    if metric == METRIC_RMS and not (s > 0 and np.isfinite(s)):
        raise ValueError(f"colorize_delta: scale must be finite and > 0, got {s}")
    _colorize_delta(a, b, float(s), int(metric), float(decades[0]), float(decades[1]), out, acc,
                    row_flags, col_flags, int(e_r0), int(e_c0), elems, n_elems)


def hatch(out: np.ndarray, e_r0: int, e_c0: int, shape_a: tuple[int, int],
          shape_b: tuple[int, int], base_only: bool, c_x0: int, c_y0: int) -> None:
    """Hatch the elements of ``out`` (the block at element row, col ``e_r0, e_c0``; canvas pixel
    ``c_x0, c_y0``) that only one of tensors A (``shape_a``) and B (``shape_b``) has."""
    _hatch(out, int(e_r0), int(e_c0), int(shape_a[0]), int(shape_a[1]), int(shape_b[0]),
           int(shape_b[1]), bool(base_only), int(c_x0), int(c_y0))
