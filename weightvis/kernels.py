"""Every @njit kernel: colour, statistics, tile reduction, Hilbert curve.

Kernels are private and pure: arrays in, results written into ``out=`` arrays; they take integer
constants, never strings. The public wrappers below validate shapes/dtypes and dispatch.
"""

from __future__ import annotations

import numba
import numpy as np

from .color import LEVELS, NAN, NEGINF, PAD, POSINF, ZERO, level_values

__all__ = [
    "ACC_SIZE", "new_acc", "merge_acc", "colorize", "reduce_tile", "REDUCE_SIGNED_RMS",
    "REDUCE_FIRST", "hilbert_xy2d", "hilbert_d2xy", "hilbert_tile_offsets", "warm_up",
]

# accumulator layout: count of finite, sum, sum of squares, min, max, zeros, NaN, Inf
ACC_SIZE = 8
_N, _SUM, _SUMSQ, _MIN, _MAX, _ZEROS, _NANS, _INFS = range(ACC_SIZE)

REDUCE_SIGNED_RMS = 0
REDUCE_FIRST = 1

_LEVELS_U = level_values()


def new_acc() -> np.ndarray:
    acc = np.zeros(ACC_SIZE, np.float64)
    acc[_MIN] = np.inf
    acc[_MAX] = -np.inf
    return acc


def merge_acc(into: np.ndarray, other: np.ndarray) -> None:
    """Merge accumulator ``other`` into ``into`` in place."""
    into[_N] += other[_N]
    into[_SUM] += other[_SUM]
    into[_SUMSQ] += other[_SUMSQ]
    into[_MIN] = min(into[_MIN], other[_MIN])
    into[_MAX] = max(into[_MAX], other[_MAX])
    into[_ZEROS] += other[_ZEROS]
    into[_NANS] += other[_NANS]
    into[_INFS] += other[_INFS]


@numba.njit(cache=True, nogil=True)
def _index_values(src, s, out):  # type: ignore[no-untyped-def]
    """src float32[h, w] (any strides) -> out uint8[h, w] palette indices by VALUE_RULE with
    scale s (float64 > 0). Exact: float64 division, sqrt and floor as the rule says."""
    h, w = src.shape
    for i in range(h):
        for j in range(w):
            v = np.float64(src[i, j])
            a = abs(v) / s
            if a < 1.0:
                q = np.int64(np.floor(LEVELS * np.sqrt(a) + 0.5))
            elif a >= 1.0:
                q = LEVELS
            else:  # NaN
                out[i, j] = NAN
                continue
            if v > 0:
                out[i, j] = POSINF if v == np.inf else ZERO + q
            elif v < 0:
                out[i, j] = NEGINF if v == -np.inf else ZERO - q
            else:
                out[i, j] = ZERO


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def _accumulate_stats(src, acc):  # type: ignore[no-untyped-def]
    """Accumulate statistics of src float32[h, w] into acc float64[ACC_SIZE] in place (sums may
    be reassociated: vectorised; min/max/counts are exact)."""
    h, w = src.shape
    n = 0.0
    tot = 0.0
    tot2 = 0.0
    lo = acc[_MIN]
    hi = acc[_MAX]
    zeros = 0.0
    nans = 0.0
    for i in range(h):
        for j in range(w):
            v = np.float64(src[i, j])
            fin = abs(v) < np.inf
            vv = v if fin else 0.0
            n += 1.0 if fin else 0.0
            nans += 1.0 if v != v else 0.0
            tot += vv
            tot2 += vv * vv
            lo = min(lo, v) if fin else lo
            hi = max(hi, v) if fin else hi
            zeros += 1.0 if v == 0.0 else 0.0
    acc[_N] += n
    acc[_SUM] += tot
    acc[_SUMSQ] += tot2
    acc[_MIN] = lo
    acc[_MAX] = hi
    acc[_ZEROS] += zeros
    acc[_NANS] += nans
    acc[_INFS] += h * w - n - nans


@numba.njit(cache=True, nogil=True)
def _index_codes(src, lut, out, hist):  # type: ignore[no-untyped-def]
    """src uint16[h, w] codes (any strides) -> out uint8[h, w] = lut[code]; hist int32[65536]
    counts the codes (statistics come from it: _acc_from_hist)."""
    h, w = src.shape
    for i in range(h):
        for j in range(w):
            c = src[i, j]
            out[i, j] = lut[c]
            hist[c] += 1


@numba.njit(cache=True, nogil=True)
def _acc_from_hist(hist, values, acc):  # type: ignore[no-untyped-def]
    """Accumulate the statistics of a code histogram (values float32[65536]: each code's value)
    into acc float64[ACC_SIZE] in place, and zero the histogram."""
    for c in range(hist.shape[0]):
        k = hist[c]
        if k == 0:
            continue
        hist[c] = 0
        v = np.float64(values[c])
        if v != v:
            acc[_NANS] += k
        elif v == np.inf or v == -np.inf:
            acc[_INFS] += k
        else:
            acc[_N] += k
            acc[_SUM] += k * v
            acc[_SUMSQ] += k * v * v
            if v < acc[_MIN]:
                acc[_MIN] = v
            if v > acc[_MAX]:
                acc[_MAX] = v
            if v == 0.0:
                acc[_ZEROS] += k


def code_lut(values: np.ndarray, s: float) -> np.ndarray:
    """uint8[65536]: the palette index of every 16-bit code by VALUE_RULE (the value of each
    code through the same kernel as float tensors; every code is checked against the rule)."""
    if values.shape != (1 << 16,) or values.dtype != np.float32:
        raise ValueError("code_lut: need the float32 value of each of the 65536 codes")
    if not (s > 0 and np.isfinite(s)):
        raise ValueError(f"code_lut: scale must be finite and > 0, got {s}")
    out = np.empty(1 << 16, np.uint8)
    _index_values(values.reshape(1, -1), float(s), out.reshape(1, -1))
    return out


@numba.njit(cache=True, nogil=True)
def _code_counts(codes, mask, counts):  # type: ignore[no-untyped-def]
    for i in range(codes.shape[0]):
        counts[codes[i] & mask] += 1


def code_counts(codes: np.ndarray, magnitude: bool = False) -> np.ndarray:
    """int64 histogram of 1-D uint16 codes: 65536 bins, or with ``magnitude`` 32768 bins of
    ``code & 0x7FFF`` (the sign bit cleared; for BF16/F16 the order of |v|)."""
    if codes.dtype != np.uint16 or codes.ndim != 1:
        raise ValueError("code_counts: need 1-D uint16 codes")
    counts = np.zeros(1 << (15 if magnitude else 16), np.int64)
    _code_counts(codes, np.uint16(0x7FFF if magnitude else 0xFFFF), counts)
    return counts


def colorize_codes(src: np.ndarray, lut: np.ndarray, values: np.ndarray, out: np.ndarray,
                   acc: np.ndarray, hist: np.ndarray) -> None:
    """Colour a block of 16-bit codes through ``lut`` into ``out`` and accumulate its stats.
    ``hist`` is an int32[65536] scratch array, all zero on entry and on return (a block holds
    fewer than 2**31 elements)."""
    if src.dtype != np.uint16 or out.dtype != np.uint8 or src.shape != out.shape \
            or lut.shape != (1 << 16,) or hist.shape != (1 << 16,):
        raise ValueError("colorize_codes: uint16 src, uint8 out of one shape, 65536-entry lut")
    _index_codes(src, lut, out, hist)
    _acc_from_hist(hist, values, acc)


def colorize(src: np.ndarray, s: float, out: np.ndarray, acc: np.ndarray) -> None:
    """Colour a float32 block into ``out`` (uint8, same shape) and accumulate its stats."""
    if src.dtype != np.float32 or out.dtype != np.uint8 or src.shape != out.shape:
        raise ValueError(f"colorize: need float32 src and uint8 out of one shape, got "
                         f"{src.dtype}{src.shape} -> {out.dtype}{out.shape}")
    if not (s > 0 and np.isfinite(s)):
        raise ValueError(f"colorize: scale must be finite and > 0, got {s}")
    _index_values(src, float(s), out)
    _accumulate_stats(src, acc)


@numba.njit(cache=True, nogil=True)
def _rms_pixel(k0, k1, k2, k3, levels):  # type: ignore[no-untyped-def]
    """PARENT_RULE for one pixel from its children TL, TR, BL, BR, in float64 as written."""
    cnt = 0
    tot = 0.0
    tot2 = 0.0
    special = 0
    for k in (k0, k1, k2, k3):
        if k == PAD:
            continue
        if k <= NEGINF:
            if special == 0:
                special = k
            continue
        u = levels[k]
        cnt += 1
        tot += u
        tot2 += u * u
    if special != 0:
        return special
    if cnt == 0:
        return PAD
    a = np.sqrt(tot2 / cnt)
    if a > 1.0:
        a = 1.0
    q = np.int64(np.floor(LEVELS * np.sqrt(a) + 0.5))
    return ZERO - q if tot < 0 else ZERO + q


_F = np.float32


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _rms_row_fast(a, b, o, flag):  # type: ignore[no-untyped-def]
    """One row of parents o[j] from child rows a (top) and b (bottom), for pixels whose four
    children are value indices (or all padding), in float32 so that it vectorises; flag[j] = 1
    where the float32 answer may differ from PARENT_RULE and _rms_pixel must decide.

    With q_k = |k - 129|, PARENT_RULE's level is exactly (S/4)^(1/4) for S = sum q_k^4, and the
    sign is that of T = sum sign_k q_k^2 (u_k = sign_k q_k^2 / 125^2). T is exact in float32
    (|T| <= 4 * 125^2); S/4 is within ~1.5e-7 of the truth, so floor((S/4)^(1/4) + 0.5) is exact
    unless the fraction lands within 1e-4 of a rounding boundary, which is flagged, as are an
    exactly cancelling sign (T == 0, where PARENT_RULE's float64 sum decides), partial padding
    and non-finite children."""
    z = _F(ZERO)
    zero = _F(0.0)
    half = _F(0.5)
    quarter = _F(0.25)
    lo = _F(1e-4)
    hi = _F(1.0 - 1e-4)
    for j in range(o.shape[0]):
        k0 = a[2 * j]
        k1 = a[2 * j + 1]
        k2 = b[2 * j]
        k3 = b[2 * j + 1]
        d0 = _F(k0) - z
        d1 = _F(k1) - z
        d2 = _F(k2) - z
        d3 = _F(k3) - z
        e0 = d0 * d0
        e1 = d1 * d1
        e2 = d2 * d2
        e3 = d3 * d3
        t = (d0 * abs(d0) + d1 * abs(d1)) + (d2 * abs(d2) + d3 * abs(d3))
        s = (e0 * e0 + e1 * e1) + (e2 * e2 + e3 * e3)
        x = np.sqrt(np.sqrt(s * quarter)) + half
        qf = np.floor(x)
        frac = x - qf
        r = z + qf if t >= zero else z - qf
        mn = min(min(k0, k1), min(k2, k3))
        mx = max(max(k0, k1), max(k2, k3))
        o[j] = np.uint8(np.int32(r)) if mx > 0 else np.uint8(PAD)
        flag[j] = np.uint8(((mn <= NEGINF) & (mx > 0)) | ((t == zero) & (qf > zero))
                           | (frac < lo) | (frac > hi))


@numba.njit(cache=True, nogil=True)
def _flagged(flag, w, cols):  # type: ignore[no-untyped-def]
    """The j < w with flag[j] != 0 into cols (in order), eight flags per test; returns how many.
    flag is uint8 with a length that is a multiple of 8, zero beyond w."""
    words = flag.view(np.uint64)
    n = 0
    for wi in range(words.shape[0]):
        if words[wi] != 0:
            for j in range(8 * wi, min(8 * wi + 8, w)):
                if flag[j]:
                    cols[n] = j
                    n += 1
    return n


@numba.njit(cache=True, nogil=True)
def _reduce_signed_rms(kids, levels, out, oy, ox):  # type: ignore[no-untyped-def]
    """kids uint8[2h, 2w] -> out[oy:oy+h, ox:ox+w] (uint8) by PARENT_RULE (signed RMS of
    levels): the float32 row kernel, then the float64 rule for the pixels it flags (exact:
    checked against _rms_pixel on all 255^4 combinations of four children)."""
    h, w = kids.shape[0] // 2, kids.shape[1] // 2
    flag = np.zeros((w + 7) // 8 * 8, np.uint8)
    cols = np.empty(w, np.int64)
    for i in range(h):
        a = kids[2 * i]
        b = kids[2 * i + 1]
        o = out[oy + i, ox:ox + w]
        _rms_row_fast(a, b, o, flag)
        for t in range(_flagged(flag, w, cols)):
            j = cols[t]
            o[j] = _rms_pixel(a[2 * j], a[2 * j + 1], b[2 * j], b[2 * j + 1], levels)


@numba.njit(cache=True, nogil=True)
def _reduce_first(kids, out, oy, ox):  # type: ignore[no-untyped-def]
    """kids uint8[2h, 2w] -> out[oy:oy+h, ox:ox+w]: the first non-padding child (TL, TR, BL,
    BR)."""
    h, w = kids.shape[0] // 2, kids.shape[1] // 2
    for i in range(h):
        for j in range(w):
            r = PAD
            for di in range(2):
                for dj in range(2):
                    k = kids[2 * i + di, 2 * j + dj]
                    if r == PAD and k != PAD:
                        r = k
            out[oy + i, ox + j] = r


def reduce_tile(kids: np.ndarray, mode: int, out: np.ndarray, at: tuple[int, int] = (0, 0)
                ) -> None:
    """Reduce the uint8 children ``kids`` (2h, 2w) to the parent pixels
    ``out[p_y:p_y + h, p_x:p_x + w]`` for ``at = (p_y, p_x)``: a (2n, 2n) mosaic of four
    children into a whole (n, n) parent, or one child into its quadrant of the parent."""
    p_y, p_x = at
    h, w = kids.shape[0] // 2, kids.shape[1] // 2
    if kids.dtype != np.uint8 or out.dtype != np.uint8 or kids.ndim != 2 or out.ndim != 2 \
            or kids.shape != (2 * h, 2 * w) or not (0 <= p_y and p_y + h <= out.shape[0]
                                                 and 0 <= p_x and p_x + w <= out.shape[1]):
        raise ValueError(f"reduce_tile: bad shapes {kids.shape} -> {out.shape} at {at}")
    kids = np.ascontiguousarray(kids)
    if mode == REDUCE_SIGNED_RMS:
        _reduce_signed_rms(kids, _LEVELS_U, out, p_y, p_x)
    elif mode == REDUCE_FIRST:
        _reduce_first(kids, out, p_y, p_x)
    else:
        raise ValueError(f"reduce_tile: unknown mode {mode}")


# -- Hilbert curve (Wikipedia "Hilbert curve", xy2d / d2xy / rot) ----------------------------

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
    return int(_xy2d(np.int64(n), np.int64(c_x), np.int64(c_y)))


def hilbert_d2xy(n: int, h: int) -> tuple[int, int]:
    x, y = _d2xy(np.int64(n), np.int64(h))
    return int(x), int(y)


def hilbert_tile_offsets(n: int, c_x0: int, c_y0: int, out: np.ndarray) -> int:
    """Fill ``out`` (int64[T, T]) with per-pixel curve offsets; returns the tile's first index."""
    t = out.shape[0]
    if out.shape != (t, t) or out.dtype != np.int64 or c_x0 % t or c_y0 % t or n % t:
        raise ValueError("hilbert_tile_offsets: tile must be square, int64 and aligned")
    return int(_tile_offsets(np.int64(n), np.int64(c_x0), np.int64(c_y0), out))


def warm_up() -> None:
    """Compile every kernel once (before worker processes fork)."""
    a = np.zeros((2, 2), np.float32)
    o = np.zeros((2, 2), np.uint8)
    colorize(a, 1.0, o, new_acc())
    colorize(a[:, :1], 1.0, o[:, :1], new_acc())
    lut = np.zeros(1 << 16, np.uint8)
    vals = np.zeros(1 << 16, np.float32)
    hist = np.zeros(1 << 16, np.int32)
    codes = np.zeros((2, 2), np.uint16)
    colorize_codes(codes, lut, vals, o, new_acc(), hist)
    colorize_codes(codes[:, :1], lut, vals, o[:, :1], new_acc(), hist)
    code_lut(vals, 1.0)
    code_counts(codes.reshape(-1), True)
    reduce_tile(np.zeros((2, 2), np.uint8), REDUCE_SIGNED_RMS, np.zeros((1, 1), np.uint8))
    reduce_tile(np.zeros((2, 2), np.uint8), REDUCE_FIRST, np.zeros((1, 1), np.uint8))
    hilbert_tile_offsets(2, 0, 0, np.zeros((2, 2), np.int64))
    hilbert_d2xy(4, 3)


# -- deltas (weightvis diff) ----------------------------------------------------------------------
# delta accumulator: elements in both, sum a^2, sum b^2, sum d^2, sum a*b (finite pairs),
# max |d|, changed elements, non-finite introduced (finite in A, not in B)
DELTA_ACC_SIZE = 8
_DN, _DA2, _DB2, _DD2, _DAB, _DMAX, _DCHG, _DNFI = range(DELTA_ACC_SIZE)
DELTA_CHANGED = _DCHG
"""Index of the changed-element count in a delta accumulator."""
METRIC_RMS, METRIC_ABSLOG, METRIC_EXACT = 0, 1, 2
HATCH_A, HATCH_B, HATCH_BASE = 2, 3, 4
ELEMENTS_CAP = 64


def new_delta_acc() -> np.ndarray:
    return np.zeros(DELTA_ACC_SIZE, np.float64)


def merge_delta_acc(into: np.ndarray, other: np.ndarray) -> None:
    into[:_DMAX] += other[:_DMAX]
    into[_DMAX] = max(into[_DMAX], other[_DMAX])
    into[_DCHG:] += other[_DCHG:]


@numba.njit(cache=True, nogil=True)
def _colorize_delta(  # type: ignore[no-untyped-def]
        a, b, s, metric, l0, l1, out, acc, row_flags, col_flags, e_r0, e_c0, elems, n_elems):
    """a, b float32[h, w] (element block rows e_r0.., cols e_c0.. of both tensors) -> out uint8
    delta indices (color.DELTA_RULES); accumulates acc (DELTA_ACC_SIZE) in place; sets
    row_flags[e_r0+i] / col_flags[e_c0+j] for changed elements; records up to
    elems.shape[0] changed elements (row, col, a, b) in elems, counting in n_elems[0]."""
    h, w = a.shape
    lv = 123.0
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
                out[i, j] = NAN  # index 1: non-finite delta
                continue
            acc[_DD2] += d * d
            ad = abs(d)
            if ad > acc[_DMAX]:
                acc[_DMAX] = ad
            if metric == 0:
                x = ad / s
                if x > 1.0:
                    x = 1.0
                q = np.int64(np.floor(lv * np.sqrt(x) + 0.5))
            elif metric == 1:
                q = np.int64(np.floor(lv * (np.log10(ad) - l0) / (l1 - l0) + 0.5))
            else:
                q = 123
            if q < 1:
                q = 1
            if q > 123:
                q = 123
            out[i, j] = ZERO + q if d > 0 else ZERO - q


@numba.njit(cache=True, nogil=True)
def _stripe(kind, x, y):  # type: ignore[no-untyped-def]
    if kind == 3:
        on = ((x - y + (1 << 40)) // 4) % 2 == 0
    else:
        on = ((x + y) // 4) % 2 == 0
    return kind if on else 5


@numba.njit(cache=True, nogil=True)
def _hatch(out, e_r0, e_c0, ra, ca, rb, cb, base_only, c_x0, c_y0):  # type: ignore[no-untyped-def]
    """Write the one-sided elements of a block (element rows e_r0.., cols e_c0..; tensor A is
    ra x ca, B is rb x cb): hatch 2 (4 if base_only) where only A has the element, 3 where only
    B has it, padding where neither; elements in both are left as they are. The stripe phase
    comes from the canvas pixel (c_x0 + j, c_y0 + i)."""
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
                out[i, j] = _stripe(4 if base_only else 2, c_x0 + j, c_y0 + i)
            elif in_b:
                out[i, j] = _stripe(3, c_x0 + j, c_y0 + i)
            else:
                out[i, j] = PAD


@numba.njit(cache=True, nogil=True)
def _delta_pixel(k0, k1, k2, k3, c_x, c_y):  # type: ignore[no-untyped-def]
    """DELTA_PARENT_RULE for one pixel (pixel (c_x, c_y) of its zoom level) from its children
    TL, TR, BL, BR."""
    lv = 123.0
    cnt = 0
    tot = 0.0
    tot2 = 0.0
    special = 0
    hatch = 0
    changed = False
    for k in (k0, k1, k2, k3):
        if k == PAD:
            continue
        if k == 1:
            special = 1
        elif k <= 5:
            if hatch == 0 and k != 5:
                hatch = k
            elif hatch == 0:
                hatch = -1
        else:
            q = abs(np.int64(k) - ZERO)
            u = (q / lv) ** 2
            if k < ZERO:
                u = -u
            if q > 0:
                changed = True
            cnt += 1
            tot += u
            tot2 += u * u
    if special:
        return 1
    if cnt > 0:
        q = np.int64(np.floor(lv * np.sqrt(np.sqrt(tot2 / cnt)) + 0.5))
        if changed and q < 1:
            q = 1
        if q > 123:
            q = 123
        return ZERO - q if tot < 0 else ZERO + q
    if hatch > 0:
        return _stripe(hatch, c_x, c_y)
    if hatch < 0:
        return 5
    return PAD


@numba.njit(cache=True, nogil=True)
def _delta_row_fast(a, b, o, flag):  # type: ignore[no-untyped-def]
    """Parents o[j] whose four children are all unchanged (-> unchanged) or all padding
    (-> padding), the bulk of most diffs; flag[j] = 1 for every other pixel."""
    for j in range(o.shape[0]):
        k0 = a[2 * j]
        k1 = a[2 * j + 1]
        k2 = b[2 * j]
        k3 = b[2 * j + 1]
        same = (k0 == ZERO) & (k1 == ZERO) & (k2 == ZERO) & (k3 == ZERO)
        pad = (k0 | k1 | k2 | k3) == PAD
        o[j] = np.uint8(ZERO) if same else np.uint8(PAD)
        flag[j] = np.uint8(not (same | pad))


@numba.njit(cache=True, nogil=True)
def _reduce_delta(kids, p_x0, p_y0, out, oy, ox):  # type: ignore[no-untyped-def]
    """kids uint8[2h, 2w] delta indices -> out[oy:oy+h, ox:ox+w] by color.DELTA_PARENT_RULE;
    out[oy, ox] is pixel (p_x0, p_y0) of its zoom level."""
    h, w = kids.shape[0] // 2, kids.shape[1] // 2
    flag = np.zeros((w + 7) // 8 * 8, np.uint8)
    cols = np.empty(w, np.int64)
    for i in range(h):
        a = kids[2 * i]
        b = kids[2 * i + 1]
        o = out[oy + i, ox:ox + w]
        _delta_row_fast(a, b, o, flag)
        for t in range(_flagged(flag, w, cols)):
            j = cols[t]
            o[j] = _delta_pixel(a[2 * j], a[2 * j + 1], b[2 * j], b[2 * j + 1],
                                     p_x0 + j, p_y0 + i)


@numba.njit(cache=True, nogil=True)
def _identical_codes(src, values, hist, out, acc):  # type: ignore[no-untyped-def]
    """A block whose 16-bit codes are the same in A and B: out = unchanged (129); accumulate
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
    _hatch(out, int(e_r0), int(e_c0), int(shape_a[0]), int(shape_a[1]), int(shape_b[0]),
           int(shape_b[1]), bool(base_only), int(c_x0), int(c_y0))


def reduce_delta(kids: np.ndarray, p_x0: int, p_y0: int, out: np.ndarray,
                 at: tuple[int, int] = (0, 0)) -> None:
    """Delta parents of ``kids`` (2h, 2w) into ``out[p_y:p_y + h, p_x:p_x + w]`` for
    ``at = (p_y, p_x)``; ``out[at]`` is pixel (p_x0, p_y0) of its zoom level (hatch phase)."""
    p_y, p_x = at
    h, w = kids.shape[0] // 2, kids.shape[1] // 2
    if kids.dtype != np.uint8 or out.dtype != np.uint8 or kids.ndim != 2 or out.ndim != 2 \
            or kids.shape != (2 * h, 2 * w) or not (0 <= p_y and p_y + h <= out.shape[0]
                                                 and 0 <= p_x and p_x + w <= out.shape[1]):
        raise ValueError(f"reduce_delta: bad shapes {kids.shape} -> {out.shape} at {at}")
    _reduce_delta(np.ascontiguousarray(kids), int(p_x0), int(p_y0), out, p_y, p_x)


def warm_up_delta() -> None:
    a = np.zeros((2, 2), np.float32)
    o = np.zeros((2, 2), np.uint8)
    f = np.zeros(4, np.bool_)
    e = np.zeros((ELEMENTS_CAP + 1, 4), np.float64)
    colorize_delta(a, a, 1.0, METRIC_RMS, o, new_delta_acc(), f, f, 0, 0, e,
                   np.zeros(1, np.int64))
    colorize_delta(a[:, :1], a[:, :1], 1.0, METRIC_RMS, o[:, :1], new_delta_acc(), f, f, 0, 0,
                   e, np.zeros(1, np.int64))
    hatch(o, 0, 0, (1, 1), (2, 2), False, 0, 0)
    hatch(o[:, :1], 0, 0, (1, 1), (2, 2), False, 0, 0)
    reduce_delta(np.zeros((2, 2), np.uint8), 0, 0, np.zeros((1, 1), np.uint8))
    codes = np.zeros((2, 2), np.uint16)
    hist = np.zeros(1 << 16, np.int32)
    vals = np.zeros(1 << 16, np.float32)
    identical_codes(codes, vals, hist, o, new_delta_acc())
    identical_codes(codes[:, :1], vals, hist, o[:, :1], new_delta_acc())
