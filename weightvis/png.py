"""Fast palette-PNG encoder: run-length-only deflate with dynamic Huffman blocks, in numba.

The deflate stream (RFC 1951) is what zlib makes with ``strategy=Z_RLE``: literals, and matches of
distance 1 only (a run of the previous byte, length 3..258, found as in zlib's ``deflate_rle``); no
hash chains. The PNG (colour type 3, bit depth 8, filter type 0 on every row) wraps it in a zlib
stream (RFC 1950: 2-byte header, deflate, big-endian Adler-32).

The filtered rows are split into blocks of about ``BLOCK_BYTES`` input bytes. Each block gets the
cheapest of a dynamic-Huffman block (code lengths from the block's own histogram, literal/length
codes limited to 15 bits and code-length codes to 7), a fixed-Huffman block, or stored blocks, so
the output is never much larger than the raw rows. Code lengths: the in-place minimum-redundancy
algorithm of Moffat & Katajainen, "In-place calculation of minimum-redundancy codes" (WADS 1995),
then overlong codes are folded back by the Kraft-sum adjustment of miniz
(``tdefl_huffman_enforce_max_code_size``). Bits go out through a 64-bit accumulator stored
unaligned into a byte buffer, three literal codes per store.

Speed (benchmarks/png_bench.py): about 0.5 ms per 512x512 tile of weight-like noise on one core,
5-6x faster than Pillow with zlib level 1 + Z_RLE, and 0.1-0.2 % smaller.
"""

# mypy: disallow-untyped-calls=False

from __future__ import annotations

import struct
import sys
import threading
import zlib
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = ["encode_png_palette", "png_parts", "BLOCK_BYTES", "warm_up"]

BLOCK_BYTES = 1 << 18
"""Input bytes per deflate block (one histogram and Huffman code each; the input is split into
equal blocks, a 512x512 tile into two). Measured with ``benchmarks/png_bench.py --block-sizes``:
sizes from 32 KiB to whole tiles are within 0.3 % of each other on noise, demo weight tiles and
half-padding tiles (32-64 KiB best on weight tiles, whole tiles on noise); each block costs about
20 us of code building, and blocks below 32 KiB pay more for headers than they gain."""

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_ZLIB_HEADER = b"\x78\x01"  # deflate, 32 KiB window, FLEVEL 0 (fastest); 0x7801 % 31 == 0
_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_IDAT_CRC0 = zlib.crc32(b"IDAT" + _ZLIB_HEADER)
_IDAT_MAX = 1 << 30

_MAX_LIT_BITS = 15
_MAX_CL_BITS = 7
_N_LITLEN = 286  # 0..255 literals, 256 end of block, 257..285 lengths
_STORED_MAX = 65535


def _length_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """RFC 1951 3.2.5: for each match length 3..258 its symbol (257..285), number of extra bits and
    extra value; and the extra-bit count of each literal/length symbol."""
    base = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99,
            115, 131, 163, 195, 227, 258]
    ebits = [0] * 8 + [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4 + [5] * 4 + [0]
    lsym = np.zeros(259, np.int64)
    lext = np.zeros(259, np.int64)
    lval = np.zeros(259, np.int64)
    for k in range(len(base)):
        hi = base[k + 1] if k + 1 < len(base) else 259  # 227..257 is 284; 258 alone is 285
        for length in range(base[k], hi):
            lsym[length] = 257 + k
            lext[length] = ebits[k]
            lval[length] = length - base[k]
    sym_ebits = np.zeros(_N_LITLEN, np.int64)
    sym_ebits[257:] = ebits
    return lsym, lext, lval, sym_ebits


_LSYM, _LEXT, _LVAL, _SYM_EBITS = _length_tables()
_CL_ORDER = np.array([16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15], np.int64)
_CL_EBITS = np.array([0] * 16 + [2, 3, 7], np.int64)
_FIXED_LENS = np.array([8] * 144 + [9] * 112 + [7] * 24 + [8] * 8, np.int64)  # all 288 symbols


# -- kernels ---------------------------------------------------------------------------------
# The bit writer's state is (bb, nb, op): bb holds nb < 8 pending bits (LSB first) of out[op].
# Codes are ORed into bb above its nb bits, then all 8 bytes of bb are stored at out[op] unaligned
# (little-endian: byte order = deflate bit order), op advances by the whole bytes and bb keeps
# the rest. out needs 8 bytes of slack. All three are uint64 (numba turns int64 op uint64 into
# float64, so every constant below is a uint64 too).

_U1 = np.uint64(1)
_U2 = np.uint64(2)
_U3 = np.uint64(3)
_U7 = np.uint64(7)
_U56 = np.uint64(56)


def _store_u64_typer(typingctx, arr, idx, val):  # type: ignore[no-untyped-def]
    """arr[idx:idx + 8] = val (arr uint8, val a 64-bit integer stored in native byte order), one
    unaligned store; no bounds check."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.uint8 and arr.layout == "C"
            and isinstance(idx, types.Integer) and isinstance(val, types.Integer)
            and getattr(val, "bitwidth", 0) == 64):
        return None
    sig = types.void(arr, idx, val)

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), ir.IntType(64).as_pointer())
        builder.store(args[2], ptr).align = 1
        return context.get_dummy_value()

    return sig, codegen


_store_u64: Any = intrinsic(_store_u64_typer)


def _load_u64_typer(typingctx, arr, idx):  # type: ignore[no-untyped-def]
    """arr[idx:idx + 8] as one uint64 (arr uint8, native byte order), one unaligned load; no
    bounds check."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.uint8 and arr.layout == "C"
            and isinstance(idx, types.Integer)):
        return None
    sig = types.uint64(arr, idx)

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), ir.IntType(64).as_pointer())
        v = builder.load(ptr)
        v.align = 1
        return v

    return sig, codegen


_load_u64: Any = intrinsic(_load_u64_typer)
_LOW7 = np.uint64(0x7F7F7F7F7F7F7F7F)
_U0x80 = np.uint64(0x80)
_U8 = np.uint64(8)


@numba.njit(cache=True, nogil=True)
def _zero_bytes(d):  # type: ignore[no-untyped-def]
    """0x80 in each byte of the uint64 d that is zero, 0 in the others (exact: no carries)."""
    return ~(((d & _LOW7) + _LOW7) | d | _LOW7)


@numba.njit(cache=True, nogil=True)
def _filter_rows(idx, raw):  # type: ignore[no-untyped-def]
    """idx uint8[h, w] (any strides) -> raw uint8[h * (w + 1)]: each row preceded by filter type 0.
    Returns the Adler-32 (RFC 1950) of raw."""
    h, w = idx.shape
    s1 = np.int64(1)
    s2 = np.int64(0)
    p = 0
    for i in range(h):
        raw[p] = 0
        s2 = (s2 + s1) % 65521
        p += 1
        j0 = 0
        while j0 < w:
            # chunks of <= 4096 bytes: the index-weighted sum fits a uint32 (vectorizes)
            m = min(w - j0, 4096)
            src = idx[i, j0:j0 + m]
            dst = raw[p:p + m]
            a = np.uint32(0)
            wsum = np.uint32(0)
            k = np.uint32(0)
            for j in range(m):
                b = src[j]
                dst[j] = b
                a += np.uint32(b)
                wsum += k * np.uint32(b)
                k += np.uint32(1)
            # s2 gains sum over the chunk of the running s1 = m * s1 + sum (m - j) * b_j
            s2 = (s2 + m * s1 + m * np.int64(a) - np.int64(wsum)) % 65521
            s1 = (s1 + np.int64(a)) % 65521
            p += m
            j0 += m
    return (s2 << 16) | s1


@numba.njit(cache=True, nogil=True)
def _scan(raw, start, end, lsym, rpos, rlen, hist):  # type: ignore[no-untyped-def]
    """Tokenize raw from position start until at least end as zlib's deflate_rle does: at each
    token boundary p, if raw[p-1] == raw[p] == raw[p+1] == raw[p+2] the token is a run of that byte
    (distance 1), as long as it goes (<= 258, may cross end); otherwise it is the literal raw[p].
    Writes the runs' offsets from start and lengths to rpos / rlen int32 (in order) and the
    literal/length symbol counts (end of block included) to hist int64[286].
    Returns (number of runs, position after the last token)."""
    n = raw.shape[0]
    h = np.zeros((4, 256), np.int64)  # 4 histograms: repeated bytes don't wait on each other
    for s in range(hist.shape[0]):
        hist[s] = 0
    nr = 0
    k = start
    while k < end:
        if k >= 1 and k + 8 <= end and k + 10 <= n:
            # 8 positions at a time (SWAR): byte j of mask is 0x80 iff a run starts at k + j,
            # i.e. raw[k+j-1] == raw[k+j] == raw[k+j+1] == raw[k+j+2]
            w0 = _load_u64(raw, k - 1)
            w1 = _load_u64(raw, k)
            w2 = _load_u64(raw, k + 1)
            w3 = _load_u64(raw, k + 2)
            mask = _zero_bytes(w0 ^ w1) & _zero_bytes(w1 ^ w2) & _zero_bytes(w2 ^ w3)
            if mask == 0:
                h[0, raw[k]] += 1
                h[1, raw[k + 1]] += 1
                h[2, raw[k + 2]] += 1
                h[3, raw[k + 3]] += 1
                h[0, raw[k + 4]] += 1
                h[1, raw[k + 5]] += 1
                h[2, raw[k + 6]] += 1
                h[3, raw[k + 7]] += 1
                k += 8
                continue
            while (mask & _U0x80) == 0:  # literals before the run
                h[k & 3, raw[k]] += 1
                k += 1
                mask >>= _U8
        elif not (k >= 1 and k + 2 < n and raw[k - 1] == raw[k] and raw[k + 1] == raw[k]
                  and raw[k + 2] == raw[k]):
            h[k & 3, raw[k]] += 1  # near the ends: one literal
            k += 1
            continue
        b = raw[k]  # a run starts at k
        m = k + 3
        lim = min(k + 258, n)
        while m < lim and raw[m] == b:
            m += 1
        rpos[nr] = k - start
        rlen[nr] = m - k
        nr += 1
        hist[lsym[m - k]] += 1
        k = m
    for s in range(256):
        hist[s] = h[0, s] + h[1, s] + h[2, s] + h[3, s]
    hist[256] += 1
    return nr, k


@numba.njit(cache=True, nogil=True)
def _min_redundancy(a, n):  # type: ignore[no-untyped-def]
    """a int64[n], ascending symbol weights (n >= 2) -> a[i] = Huffman code length of weight i, in
    place (Moffat & Katajainen 1995, as in miniz's tdefl_calculate_minimum_redundancy)."""
    a[0] += a[1]
    root = 0
    leaf = 2
    for nxt in range(1, n - 1):
        if leaf >= n or a[root] < a[leaf]:
            a[nxt] = a[root]
            a[root] = nxt
            root += 1
        else:
            a[nxt] = a[leaf]
            leaf += 1
        if leaf >= n or (root < nxt and a[root] < a[leaf]):
            a[nxt] += a[root]
            a[root] = nxt
            root += 1
        else:
            a[nxt] += a[leaf]
            leaf += 1
    a[n - 2] = 0
    for nxt in range(n - 3, -1, -1):
        a[nxt] = a[a[nxt]] + 1
    avbl = 1
    used = 0
    dpth = 0
    root = n - 2
    nxt = n - 1
    while avbl > 0:
        while root >= 0 and a[root] == dpth:
            used += 1
            root -= 1
        while avbl > used:
            a[nxt] = dpth
            nxt -= 1
            avbl -= 1
        avbl = 2 * used
        dpth += 1
        used = 0


@numba.njit(cache=True, nogil=True)
def _huffman_lengths(freq, maxbits, lens):  # type: ignore[no-untyped-def]
    """freq int64[n] symbol counts -> lens int64[n] code lengths (0 for unused symbols), at most
    maxbits, forming a complete prefix code (Kraft sum 1). One used symbol gets a 1-bit code with a
    1-bit partner, so that every decoder accepts the code."""
    n = freq.shape[0]
    syms = np.empty(n, np.int64)
    cnt = 0
    for s in range(n):
        lens[s] = 0
        if freq[s] > 0:
            syms[cnt] = s
            cnt += 1
    if cnt == 0:
        return
    if cnt == 1:
        lens[syms[0]] = 1
        lens[1 if syms[0] == 0 else 0] = 1
        return
    # sort (count, symbol) ascending: LSD radix sort on the count bytes, stable, so equal counts
    # stay in symbol order (keys = count << 9 | symbol; the symbols are already ascending)
    keys = np.empty(cnt, np.int64)
    tmp = np.empty(cnt, np.int64)
    top = 0
    for i in range(cnt):
        keys[i] = (freq[syms[i]] << 9) | syms[i]
        top = max(top, freq[syms[i]])
    shift = 9
    cnts = np.empty(257, np.int64)
    while (top << 9) >> shift > 0:
        cnts[:] = 0
        for i in range(cnt):
            cnts[((keys[i] >> shift) & 255) + 1] += 1
        for d in range(256):
            cnts[d + 1] += cnts[d]
        for i in range(cnt):
            d = (keys[i] >> shift) & 255
            tmp[cnts[d]] = keys[i]
            cnts[d] += 1
        keys, tmp = tmp, keys
        shift += 8
    a = np.empty(cnt, np.int64)
    for i in range(cnt):
        a[i] = keys[i] >> 9
    _min_redundancy(a, cnt)
    longest = a[0]
    num = np.zeros(max(longest, maxbits) + 1, np.int64)
    for i in range(cnt):
        num[a[i]] += 1
    if longest > maxbits:
        # miniz tdefl_huffman_enforce_max_code_size: move overlong codes to maxbits, then while
        # the Kraft sum (in units of 2^-maxbits) exceeds 1, take a code off the longest length and
        # split a shorter code into two one bit longer
        for ln in range(maxbits + 1, longest + 1):
            num[maxbits] += num[ln]
            num[ln] = 0
        total = np.int64(0)
        for ln in range(maxbits, 0, -1):
            total += num[ln] << (maxbits - ln)
        while total != (np.int64(1) << maxbits):
            num[maxbits] -= 1
            for ln in range(maxbits - 1, 0, -1):
                if num[ln] != 0:
                    num[ln] -= 1
                    num[ln + 1] += 2
                    break
            total -= 1
    j = cnt  # the most frequent symbols (end of keys) get the shortest codes
    for ln in range(1, maxbits + 1):
        for _ in range(num[ln]):
            j -= 1
            lens[keys[j] & 511] = ln


@numba.njit(cache=True, nogil=True)
def _canonical_codes(lens, codes):  # type: ignore[no-untyped-def]
    """lens int64[n] -> codes int64[n]: canonical Huffman codes (RFC 1951 3.2.2), bit-reversed so
    they can be written LSB first."""
    bl_count = np.zeros(16, np.int64)
    for s in range(lens.shape[0]):
        bl_count[lens[s]] += 1
    bl_count[0] = 0
    next_code = np.zeros(16, np.int64)
    code = 0
    for b in range(1, 16):
        code = (code + bl_count[b - 1]) << 1
        next_code[b] = code
    for s in range(lens.shape[0]):
        ln = lens[s]
        codes[s] = 0
        if ln != 0:
            c = next_code[ln]
            next_code[ln] += 1
            c = ((c & 0x5555) << 1) | ((c >> 1) & 0x5555)  # reverse 16 bits, keep the top ln
            c = ((c & 0x3333) << 2) | ((c >> 2) & 0x3333)
            c = ((c & 0x0F0F) << 4) | ((c >> 4) & 0x0F0F)
            c = ((c & 0x00FF) << 8) | ((c >> 8) & 0x00FF)
            codes[s] = c >> (16 - ln)


@numba.njit(cache=True, nogil=True)
def _put(out, bb, nb, op, value, nbits):  # type: ignore[no-untyped-def]
    """Append nbits (<= 56) of value (no higher bits set) to the bit writer (bb, nb, op); returns
    its new state."""
    bb |= np.uint64(value) << nb
    nb += np.uint64(nbits)
    _store_u64(out, op, bb)
    op += nb >> _U3
    bb >>= nb & _U56
    nb &= _U7
    return bb, nb, op


@numba.njit(cache=True, nogil=True)
def _put_codes(raw, p, q, ctab, ltab, out, bb, nb, op):  # type: ignore[no-untyped-def]
    """The hot loop: append code ctab[t] of ltab[t] <= 15 bits for each literal t of raw[p:q]
    (p, q uint64). Three codes (<= 7 + 45 bits) per store; no branches but the loop's."""
    k = p
    while k + _U3 <= q:
        t0 = raw[k]
        t1 = raw[k + _U1]
        t2 = raw[k + _U2]
        bb |= np.uint64(ctab[t0]) << nb
        nb += np.uint64(ltab[t0])
        bb |= np.uint64(ctab[t1]) << nb
        nb += np.uint64(ltab[t1])
        bb |= np.uint64(ctab[t2]) << nb
        nb += np.uint64(ltab[t2])
        _store_u64(out, op, bb)
        op += nb >> _U3
        bb >>= nb & _U56
        nb &= _U7
        k += _U3
    while k < q:
        t0 = raw[k]
        bb, nb, op = _put(out, bb, nb, op, ctab[t0], ltab[t0])
        k += _U1
    return bb, nb, op


@numba.njit(cache=True, nogil=True)
def _cl_tokens(seq, nseq, cl_sym, cl_extra):  # type: ignore[no-untyped-def]
    """Run-length code a code-length sequence (RFC 1951 3.2.7: 16 repeats the previous length 3-6
    times, 17 / 18 repeat a zero 3-10 / 11-138 times). Returns the number of code-length tokens."""
    k = 0
    i = 0
    while i < nseq:
        ln = seq[i]
        run = 1
        while i + run < nseq and seq[i + run] == ln:
            run += 1
        i += run
        if ln == 0:
            while run >= 11:
                r = min(run, 138)
                cl_sym[k] = 18
                cl_extra[k] = r - 11
                k += 1
                run -= r
            if run >= 3:
                cl_sym[k] = 17
                cl_extra[k] = run - 3
                k += 1
                run = 0
        else:
            cl_sym[k] = ln
            cl_extra[k] = 0
            k += 1
            run -= 1
            while run >= 3:
                r = min(run, 6)
                cl_sym[k] = 16
                cl_extra[k] = r - 3
                k += 1
                run -= r
        while run > 0:
            cl_sym[k] = ln
            cl_extra[k] = 0
            k += 1
            run -= 1
    return k


@numba.njit(cache=True, nogil=True)
def _deflate_rle(raw, block_bytes, lsym, lext, lval, sym_ebits,  # type: ignore[no-untyped-def]
                 cl_order, cl_ebits, fixed_lens, rpos, rlen, out):
    """raw uint8[n] (n >= 1) -> out uint8[...]: a complete raw deflate stream (RFC 1951; runs of
    distance 1 only) in blocks of about block_bytes input bytes (n split evenly), each the
    cheapest of dynamic Huffman, fixed Huffman or stored. rpos, rlen are int32 scratch of
    (min(block_bytes, n) + 2) // 3 + 2 entries; out must hold _deflate_bound(n, block_bytes)
    bytes. Returns the stream's length in bytes, or -1 if a block's size differs from its
    computed cost (a bug; checked after every block)."""
    n = raw.shape[0]
    hist = np.zeros(_N_LITLEN, np.int64)
    lens = np.zeros(_N_LITLEN, np.int64)
    codes = np.zeros(_N_LITLEN, np.int64)
    seq = np.zeros(_N_LITLEN + 2, np.int64)
    cl_sym = np.zeros(_N_LITLEN + 2, np.int64)
    cl_extra = np.zeros(_N_LITLEN + 2, np.int64)
    cl_hist = np.zeros(19, np.int64)
    cl_lens = np.zeros(19, np.int64)
    cl_codes = np.zeros(19, np.int64)
    fixed_codes = np.zeros(fixed_lens.shape[0], np.int64)
    _canonical_codes(fixed_lens, fixed_codes)
    lit_code = np.zeros(256, np.uint32)
    lit_len = np.zeros(256, np.uint8)
    run_code = np.zeros(259, np.uint32)
    run_len = np.zeros(259, np.uint8)
    nblocks = (n + block_bytes - 1) // block_bytes
    size = (n + nblocks - 1) // nblocks  # even split: no tiny last block
    bb = np.uint64(0)
    nb = np.uint64(0)
    op = np.uint64(0)
    pos = 0
    while pos < n:
        start = pos
        nr, pos = _scan(raw, start, min(start + size, n), lsym, rpos, rlen, hist)
        final = 1 if pos >= n else 0
        nruns = 0
        for s in range(257, _N_LITLEN):
            nruns += hist[s]
        # dynamic: literal/length code, distance code = two 1-bit codes (only distance 1 is used)
        _huffman_lengths(hist, _MAX_LIT_BITS, lens)
        nlit = _N_LITLEN
        while nlit > 257 and lens[nlit - 1] == 0:
            nlit -= 1
        for s in range(nlit):
            seq[s] = lens[s]
        seq[nlit] = 1
        seq[nlit + 1] = 1
        ncl = _cl_tokens(seq, nlit + 2, cl_sym, cl_extra)
        for s in range(19):
            cl_hist[s] = 0
        for k in range(ncl):
            cl_hist[cl_sym[k]] += 1
        _huffman_lengths(cl_hist, _MAX_CL_BITS, cl_lens)
        nclen = 19
        while nclen > 4 and cl_lens[cl_order[nclen - 1]] == 0:
            nclen -= 1
        dyn_bits = 3 + 5 + 5 + 4 + 3 * nclen + nruns
        for s in range(19):
            dyn_bits += cl_hist[s] * (cl_lens[s] + cl_ebits[s])
        fix_bits = 3 + 5 * nruns
        for s in range(_N_LITLEN):
            dyn_bits += hist[s] * (lens[s] + sym_ebits[s])
            fix_bits += hist[s] * (fixed_lens[s] + sym_ebits[s])
        nbytes = pos - start
        nstored = (nbytes + _STORED_MAX - 1) // _STORED_MAX
        # header, pad to a byte, LEN/NLEN, bytes; later sub-blocks start byte-aligned
        stored_bits = 3 + (-(np.int64(nb) + 3)) % 8 + 32 + 8 * nbytes + (nstored - 1) * (8 + 32)
        bits0 = np.int64(op) * 8 + np.int64(nb)
        if stored_bits < dyn_bits and stored_bits < fix_bits:
            p = start
            for k in range(nstored):
                m = min(_STORED_MAX, pos - p)
                last = final if k == nstored - 1 else 0
                bb, nb, op = _put(out, bb, nb, op, last, 3)
                bb, nb, op = _put(out, bb, nb, op, 0, (-np.int64(nb)) % 8)
                bb, nb, op = _put(out, bb, nb, op, m | ((0xFFFF ^ m) << 16), 32)
                for q in range(p, p + m):
                    bb, nb, op = _put(out, bb, nb, op, raw[q], 8)
                p += m
            expect = stored_bits
        else:
            if dyn_bits <= fix_bits:
                bb, nb, op = _put(out, bb, nb, op, final | (2 << 1), 3)
                bb, nb, op = _put(out, bb, nb, op, (nlit - 257) | (1 << 5) | ((nclen - 4) << 10),
                                  14)
                for k in range(nclen):
                    bb, nb, op = _put(out, bb, nb, op, cl_lens[cl_order[k]], 3)
                _canonical_codes(cl_lens, cl_codes)
                for k in range(ncl):
                    s = cl_sym[k]
                    bb, nb, op = _put(out, bb, nb, op, cl_codes[s] | (cl_extra[k] << cl_lens[s]),
                                      cl_lens[s] + cl_ebits[s])
                _canonical_codes(lens, codes)
                dist_len = 1
                expect = dyn_bits
                use_lens = lens
                use_codes = codes
            else:
                bb, nb, op = _put(out, bb, nb, op, final | (1 << 1), 3)
                dist_len = 5
                expect = fix_bits
                use_lens = fixed_lens
                use_codes = fixed_codes
            for t in range(256):
                lit_code[t] = use_codes[t]
                lit_len[t] = use_lens[t]
            for length in range(3, 259):  # length code, extra bits, distance code 0 (all zeros)
                s = lsym[length]
                run_code[length] = use_codes[s] | (lval[length] << use_lens[s])
                run_len[length] = use_lens[s] + lext[length] + dist_len
            p = np.uint64(start)
            for r in range(nr):
                q = np.uint64(start + rpos[r])
                bb, nb, op = _put_codes(raw, p, q, lit_code, lit_len, out, bb, nb, op)
                length = rlen[r]
                bb, nb, op = _put(out, bb, nb, op, run_code[length], run_len[length])
                p = q + np.uint64(length)
            bb, nb, op = _put_codes(raw, p, np.uint64(pos), lit_code, lit_len, out, bb, nb, op)
            bb, nb, op = _put(out, bb, nb, op, use_codes[256], use_lens[256])
        if np.int64(op) * 8 + np.int64(nb) - bits0 != expect:
            return -1
    return np.int64(op) + (np.int64(nb) + 7) // 8


def _deflate_bound(n: int, block_bytes: int) -> int:
    """Bytes _deflate_rle may touch for n input bytes: every block is at most its stored size
    (<= 6 bytes of headers per block and per 65535 bytes, plus the bytes), and 8 of slack for the
    last unaligned store."""
    return n + 6 * (n // block_bytes + n // _STORED_MAX + 3) + 16


# -- public wrapper --------------------------------------------------------------------------

_LOCAL = threading.local()


def _scratch(n: int, block_bytes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Work arrays for n filtered bytes (raw rows, deflate output, run positions and lengths),
    kept per thread for the last size asked: a tile pyramid encodes thousands of images of one
    size, and fresh arrays cost page faults and clearing each time."""
    key = (n, block_bytes)
    got = getattr(_LOCAL, "scratch", None)
    if got is None or got[0] != key:
        nruns = (min(block_bytes, n) + 2) // 3 + 2
        got = (key, (np.empty(n, np.uint8), np.empty(_deflate_bound(n, block_bytes), np.uint8),
                     np.empty(nruns, np.int32), np.empty(nruns, np.int32)))
        _LOCAL.scratch = got
    return got[1]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data,
                                                                                   zlib.crc32(kind)))


def encode_png_palette(idx: np.ndarray, palette: bytes, *, block_bytes: int = BLOCK_BYTES) -> bytes:
    """A palette PNG (colour type 3, bit depth 8, no interlace, filter type 0) of the uint8 index
    image ``idx`` (shape (h, w), h, w >= 1, any strides) with ``palette`` (flat RGB bytes, 1-256
    entries; every index must name an entry). The compressed data is RLE-only deflate with the
    same literals and runs as zlib's Z_RLE strategy and per-block Huffman codes: about the size
    of zlib level 1 + Z_RLE, several times faster. ``block_bytes``: see BLOCK_BYTES.
    Releases the GIL in the kernels and in zlib.crc32, so threads can encode tiles in parallel.

    >>> data = encode_png_palette(np.zeros((2, 3), np.uint8), bytes(768))
    >>> data[:8], data[12:16], data[16:24]
    (b'\\x89PNG\\r\\n\\x1a\\n', b'IHDR', b'\\x00\\x00\\x00\\x03\\x00\\x00\\x00\\x02')
    """
    return b"".join(png_parts(idx, palette, block_bytes=block_bytes))


def png_parts(idx: np.ndarray, palette: bytes, *,
              block_bytes: int = BLOCK_BYTES) -> list[bytes | memoryview]:
    """``encode_png_palette`` as buffers to write one after the other (``os.writev``): the
    compressed data is a view of this thread's scratch memory, valid until its next call, so
    a tile costs no fresh allocation of its size (measured: fresh 250 KB objects per tile
    doubled the kernel time of writing a bundle, in page faults)."""
    if not isinstance(idx, np.ndarray) or idx.dtype != np.uint8 or idx.ndim != 2:
        raise ValueError(f"encode_png_palette: need a 2-D uint8 array, got "
                         f"{getattr(idx, 'dtype', type(idx))}{getattr(idx, 'shape', '')}")
    h, w = idx.shape
    if not (1 <= h < 1 << 31 and 1 <= w < 1 << 31):
        raise ValueError(f"encode_png_palette: image size {w}x{h} outside 1..2^31-1")
    palette = bytes(palette)
    if len(palette) % 3 or not 3 <= len(palette) <= 768:
        raise ValueError(f"encode_png_palette: palette must be 1-256 RGB triples, got "
                         f"{len(palette)} bytes")
    if len(palette) < 768 and int(idx.max()) >= len(palette) // 3:
        raise ValueError(f"encode_png_palette: index {int(idx.max())} beyond the "
                         f"{len(palette) // 3}-entry palette")
    if not 1 <= block_bytes <= 1 << 30:
        raise ValueError(f"encode_png_palette: block_bytes must be in 1..2^30, got {block_bytes}")
    n = h * (w + 1)
    raw, out, rpos, rlen = _scratch(n, block_bytes)
    adler = _filter_rows(idx, raw)
    nbytes = _deflate_rle(raw, block_bytes, _LSYM, _LEXT, _LVAL, _SYM_EBITS, _CL_ORDER, _CL_EBITS,
                          _FIXED_LENS, rpos, rlen, out)
    if nbytes < 0:
        raise RuntimeError("encode_png_palette: deflate block size differs from its cost (bug)")
    body = out[:nbytes].data
    tail = struct.pack(">I", adler)
    head = (_SIGNATURE + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
            + _chunk(b"PLTE", palette))
    if nbytes + 6 > _IDAT_MAX:  # (not for tiles) a chunk holds < 2^31 bytes: several IDATs
        stream = _ZLIB_HEADER + bytes(body) + tail
        idats = [_chunk(b"IDAT", stream[i:i + _IDAT_MAX])
                 for i in range(0, len(stream), _IDAT_MAX)]
        return [head + b"".join(idats) + _IEND]
    crc = zlib.crc32(tail, zlib.crc32(body, _IDAT_CRC0))
    return [head + struct.pack(">I", nbytes + 6) + b"IDAT" + _ZLIB_HEADER, body,
            tail + struct.pack(">I", crc) + _IEND]


if sys.byteorder != "little":  # _store_u64 writes native uint64s
    raise ImportError("weightvis.png needs a little-endian machine")


def warm_up() -> None:
    """Compile the kernels (C-contiguous and strided input) once."""
    a = np.zeros((2, 4), np.uint8)
    pal = bytes(768)
    encode_png_palette(a, pal)
    encode_png_palette(a[:, ::2], pal)
