"""Value kernels: float32 values or 16-bit codes -> palette indices by ``color.VALUE_RULE``,
with their statistics accumulated in the same pass (an ``ACC_VALUES`` accumulator).

Kernels are private and pure: arrays in, results written into ``out=`` arrays; they take integer
constants, never strings. The public wrappers validate shapes/dtypes and dispatch.
"""

from __future__ import annotations

import numba
import numpy as np

from .accumulators import _INFS, _MAX, _MIN, _N, _NANS, _SUM, _SUMSQ, _ZEROS
from .constants import LEVELS, NAN, NEGINF, POSINF, ZERO

__all__ = ["colorize", "colorize_codes", "colorize_codes_small", "colorize_code_blocks",
           "code_lut", "code_counts", "SMALL_BLOCK", "BLOCK_FIELDS", "BlockScratch"]


@numba.njit(cache=True, nogil=True, inline="always")
def _index_of(v, s):  # type: ignore[no-untyped-def]
    """The palette index of one value v (float64) with scale s by VALUE_RULE. Exact: float64
    division, sqrt and floor as the rule says."""
    a = abs(v) / s
    if a < 1.0:
        q = np.int64(np.floor(LEVELS * np.sqrt(a) + 0.5))
    elif a >= 1.0:
        q = LEVELS
    else:  # NaN
        return NAN
    if v > 0:
        return POSINF if v == np.inf else ZERO + q
    if v < 0:
        return NEGINF if v == -np.inf else ZERO - q
    return ZERO


@numba.njit(cache=True, nogil=True)
def _index_values(src, s, out):  # type: ignore[no-untyped-def]
    """src float32[h, w] (any strides) -> out uint8[h, w] palette indices by VALUE_RULE with
    scale s (float64 > 0)."""
    h, w = src.shape
    for i in range(h):
        for j in range(w):
            out[i, j] = _index_of(np.float64(src[i, j]), s)


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


@numba.njit(cache=True, nogil=True, inline="always")
def _acc_add(acc, v, k):  # type: ignore[no-untyped-def]
    """Add k elements of value v (float64) to the statistics acc float64[ACC_SIZE]."""
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


@numba.njit(cache=True, nogil=True)
def _acc_from_hist(hist, values, acc):  # type: ignore[no-untyped-def]
    """Accumulate the statistics of a code histogram (values float32[65536]: each code's value)
    into acc float64[ACC_SIZE] in place, and zero the histogram."""
    for c in range(hist.shape[0]):
        k = hist[c]
        if k == 0:
            continue
        hist[c] = 0
        _acc_add(acc, np.float64(values[c]), k)


@numba.njit(cache=True, nogil=True)
def _colorize_codes_sorted(src, values, s, out, acc, scratch):  # type: ignore[no-untyped-def]
    """colorize_codes for a small block, without a 65,536-entry LUT or histogram: each
    element's index from its value, the statistics from the sorted codes, added in ascending
    code order with their multiplicities - the very operations _acc_from_hist performs, so the
    accumulator is the same to the last bit. scratch uint16[>= 2*h*w]."""
    h, w = src.shape
    n = 0
    for i in range(h):
        for j in range(w):
            c = src[i, j]
            scratch[n] = c
            n += 1
            out[i, j] = _index_of(np.float64(values[c]), s)
    codes = scratch[:n]
    _sort_codes(codes, scratch[n:2 * n], np.empty(257, np.int64))
    i = 0
    while i < n:
        c = codes[i]
        k = 0
        while i < n and codes[i] == c:
            k += 1
            i += 1
        _acc_add(acc, np.float64(values[c]), np.int32(k))


SMALL_BLOCK = 1 << 12
"""Blocks of at most this many 16-bit codes are coloured by colorize_codes_small: a per-tensor
65,536-entry LUT and a 65,536-bin histogram pass cost ~80 us, which dominated checkpoints of
many tiny tensors."""


def colorize_codes_small(src: np.ndarray, values: np.ndarray, s: float, out: np.ndarray,
                         acc: np.ndarray) -> None:
    """``colorize_codes`` of a block of at most SMALL_BLOCK codes, the same indices and the
    same statistics bit for bit, with no LUT: ``values`` float32[65536] is each code's value,
    ``s`` the tensor's scale."""
    if src.dtype != np.uint16 or out.dtype != np.uint8 or src.shape != out.shape \
            or src.size > SMALL_BLOCK or values.shape != (1 << 16,):
        raise ValueError("colorize_codes_small: uint16 src of at most SMALL_BLOCK codes, "
                         "uint8 out of one shape, 65536 values")
    if not (s > 0 and np.isfinite(s)):
        raise ValueError(f"colorize_codes_small: scale must be finite and > 0, got {s}")
    if not src.flags.c_contiguous:
        # (a small copy; and numba 0.6x reloads a read-only strided specialisation from its
        # disk cache on every call instead of keeping it: ~2 ms a call, measured)
        src = np.ascontiguousarray(src)
    _colorize_codes_sorted(src, values, float(s), out, acc,
                           np.empty(2 * SMALL_BLOCK, np.uint16))


@numba.njit(cache=True, nogil=True)
def _sort_codes(a, tmp, count):  # type: ignore[no-untyped-def]
    """Sort uint16 codes ``a`` in place: insertion sort for a few, else an LSD radix sort (two
    byte passes, O(n + 512)) through ``tmp`` (same length) with ``count`` int64[257] as
    scratch. A comparison sort of a few thousand codes cost 10x more."""
    n = a.shape[0]
    if n <= 32:
        for i in range(1, n):
            c = a[i]
            j = i - 1
            while j >= 0 and a[j] > c:
                a[j + 1] = a[j]
                j -= 1
            a[j + 1] = c
        return
    for shift in (0, 8):
        count[:] = 0
        for i in range(n):
            count[((a[i] >> shift) & 0xFF) + 1] += 1
        for b in range(256):
            count[b + 1] += count[b]
        for i in range(n):
            b = (a[i] >> shift) & 0xFF
            tmp[count[b]] = a[i]
            count[b] += 1
        for i in range(n):
            a[i] = tmp[i]


@numba.njit(cache=True, nogil=True)
def _colorize_blocks(codes, blocks, scales, values, out, accs,  # type: ignore[no-untyped-def]
                     hist, lut, distinct, tmp, count, bits, dvals, dindex):
    """Colour many blocks of 16-bit codes into one tile and accumulate each block's statistics,
    in the order given - for each block exactly what _colorize_codes_sorted does, so the tile
    and every accumulator are the same to the last bit.

    codes uint16[:] (the blocks' rows, concatenated); blocks int64[m, BLOCK_FIELDS] rows
    (offset into codes, row stride in codes, first column, height, width, tile row, tile
    column, values row, accumulator row); scales float64[m] (> 0); values float32[k, 65536];
    out uint8[t, t]; accs float64[a, ACC_SIZE] (updated in place). Scratch: hist int32[65536]
    all zero on entry and on return; lut uint8[65536]; distinct uint16[65537] (one past the
    distinct codes is written); tmp uint16[65536]; count int64[257]; bits uint64[1024] all
    zero on entry and on return; dvals float64[65536]; dindex uint8[65536]. The block's
    histogram and distinct codes in ascending order first (a sort of the distinct codes for a
    block of at most BITMAP_ABOVE elements, else a bitmap of the codes present, read in
    order); then the values of the distinct codes, their indices (a loop that stores by
    position only), and per distinct code, ascending, its statistics with its multiplicity;
    then each element's index looked up."""
    for b in range(blocks.shape[0]):
        off = blocks[b, 0]
        stride = blocks[b, 1]
        c0 = blocks[b, 2]
        h = blocks[b, 3]
        w = blocks[b, 4]
        py = blocks[b, 5]
        px = blocks[b, 6]
        vals = values[blocks[b, 7]]
        acc = accs[blocks[b, 8]]
        s = scales[b]
        nd = 0
        if h * w <= BITMAP_ABOVE:
            for i in range(h):  # the block's histogram and its distinct codes
                row = off + i * stride + c0
                for j in range(w):
                    c = codes[row + j]
                    k = hist[c]
                    # without a branch: "is c new" is a coin toss per element, and its
                    # mispredictions were ~70% of the kernel's time (measured); a code seen
                    # before is overwritten
                    distinct[nd] = c
                    nd += k == 0
                    hist[c] = k + 1
            _sort_codes(distinct[:nd], tmp[:nd], count)
        else:
            for i in range(h):  # the histogram and a bitmap of the codes present
                row = off + i * stride + c0
                for j in range(w):
                    c = codes[row + j]
                    hist[c] += 1
                    bits[c >> 6] |= np.uint64(1) << np.uint64(c & 63)
            for word in range(1024):  # the set bits, ascending: the distinct codes, sorted
                x = bits[word]
                if x:
                    bits[word] = 0
                    while x:
                        # the lowest set bit's position: popcount(lowest bit - 1)
                        y = (x & (~x + np.uint64(1))) - np.uint64(1)
                        y = y - ((y >> np.uint64(1)) & np.uint64(0x5555555555555555))
                        y = ((y & np.uint64(0x3333333333333333))
                             + ((y >> np.uint64(2)) & np.uint64(0x3333333333333333)))
                        y = (y + (y >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
                        low = np.int64((y * np.uint64(0x0101010101010101)) >> np.uint64(56))
                        distinct[nd] = word * 64 + low
                        nd += 1
                        x &= x - np.uint64(1)
        d = distinct[:nd]
        for i in range(nd):
            dvals[i] = np.float64(vals[d[i]])
        for i in range(nd):  # _index_of, as selects
            v = dvals[i]
            a = abs(v) / s
            q = np.floor(LEVELS * np.sqrt(a) + 0.5) if a < 1.0 else np.float64(LEVELS)
            r = ZERO + q if v > 0 else (ZERO - q if v < 0 else np.float64(ZERO))
            r = POSINF if v == np.inf else (NEGINF if v == -np.inf else r)
            dindex[i] = np.uint8(NAN) if v != v else np.uint8(r)
        # per distinct code, ascending: its index, and its statistics (_acc_add's operations in
        # the same order, on locals)
        n, tot, tot2 = acc[_N], acc[_SUM], acc[_SUMSQ]
        lo, hi, zeros, nans, infs = acc[_MIN], acc[_MAX], acc[_ZEROS], acc[_NANS], acc[_INFS]
        for i in range(nd):
            c = d[i]
            v = dvals[i]
            lut[c] = dindex[i]
            k = hist[c]
            hist[c] = 0
            if v != v:
                nans += k
            elif v == np.inf or v == -np.inf:
                infs += k
            else:
                n += k
                tot += k * v
                tot2 += k * v * v
                if v < lo:
                    lo = v
                if v > hi:
                    hi = v
                if v == 0.0:
                    zeros += k
        acc[_N], acc[_SUM], acc[_SUMSQ] = n, tot, tot2
        acc[_MIN], acc[_MAX], acc[_ZEROS], acc[_NANS], acc[_INFS] = lo, hi, zeros, nans, infs
        for i in range(h):
            row = off + i * stride + c0
            o = out[py + i]
            for j in range(w):
                o[px + j] = lut[codes[row + j]]


BITMAP_ABOVE = 64
"""Blocks of more elements than this find their distinct codes, in order, from a bitmap of the
codes present (1,024 words read per block) rather than by sorting them (a 2,048-element block of
~1,000 distinct codes: 5.3 us instead of 7.8, measured, with the indices computed apart); the
smaller ones sort (an 8-element block: 0.14 us, 0.33 with the bitmap)."""


BLOCK_FIELDS = 9
"""Columns of ``colorize_code_blocks``' block table (see ``_colorize_blocks``)."""


class BlockScratch:
    """The scratch arrays of ``colorize_code_blocks`` (one per worker; reused: ~1 MB)."""

    def __init__(self) -> None:
        self.hist = np.zeros(1 << 16, np.int32)
        self.lut = np.zeros(1 << 16, np.uint8)
        self.distinct = np.zeros((1 << 16) + 1, np.uint16)
        self.tmp = np.zeros(1 << 16, np.uint16)
        self.count = np.zeros(257, np.int64)
        self.bits = np.zeros(1 << 10, np.uint64)
        self.dvals = np.zeros(1 << 16, np.float64)
        self.dindex = np.zeros(1 << 16, np.uint8)


def colorize_code_blocks(codes: np.ndarray, blocks: np.ndarray, scales: np.ndarray,
                         values: np.ndarray, out: np.ndarray, accs: np.ndarray,
                         scratch: BlockScratch, check: bool = True) -> None:
    """``colorize_codes`` of many blocks of one tile in one call, the same indices and the same
    statistics bit for bit, with no per-tensor LUT. ``codes`` uint16[n]: the blocks' codes;
    ``blocks`` int64[m, BLOCK_FIELDS]: per block (offset into ``codes``, row stride, first
    column, height, width, row and column in ``out``, row of ``values``, row of ``accs``);
    ``scales`` float64[m]: each block's scale (finite, > 0); ``values`` float32[k, 65536]: each
    code's value, per table; ``out`` uint8[t, t] and ``accs`` float64[a, ACC_SIZE] written in
    place, blocks in order. ``check=False`` skips the validation (a caller that built the table
    itself, from geometry validated once)."""
    if check:
        if codes.dtype != np.uint16 or codes.ndim != 1 or blocks.dtype != np.int64 \
                or blocks.ndim != 2 or blocks.shape[1] != BLOCK_FIELDS \
                or scales.dtype != np.float64 or scales.shape != (blocks.shape[0],) \
                or values.dtype != np.float32 or values.ndim != 2 \
                or values.shape[1] != 1 << 16 or out.dtype != np.uint8 or out.ndim != 2 \
                or accs.dtype != np.float64 or accs.ndim != 2:
            raise ValueError("colorize_code_blocks: uint16 codes[n], int64 blocks[m, "
                             f"{BLOCK_FIELDS}], float64 scales[m], float32 values[k, 65536], "
                             "uint8 out[h, w], float64 accs[a, ACC_SIZE]")
        if len(blocks):
            off, stride, c0, h, w, py, px, tab, slot = blocks.T
            last = off + np.maximum(h - 1, 0) * stride + c0 + w
            if (blocks < 0).any() or ((w > 0) & (c0 + w > stride)).any() \
                    or ((h > 0) & (w > 0) & (last > len(codes))).any() \
                    or (py + h > out.shape[0]).any() or (px + w > out.shape[1]).any() \
                    or (tab >= values.shape[0]).any() or (slot >= accs.shape[0]).any():
                raise ValueError("colorize_code_blocks: a block lies outside codes, out, "
                                 "values or accs")
            if not (np.isfinite(scales).all() and (scales > 0).all()):
                raise ValueError("colorize_code_blocks: scales must be finite and > 0")
    _colorize_blocks(codes, blocks, scales, values, out, accs, scratch.hist, scratch.lut,
                     scratch.distinct, scratch.tmp, scratch.count, scratch.bits, scratch.dvals,
                     scratch.dindex)


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
