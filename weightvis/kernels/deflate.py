"""PNG row filtering and run-length-only deflate, in numba.

The deflate stream (RFC 1951) is what zlib makes with ``strategy=Z_RLE``: literals, and matches of
distance 1 only (a run of the previous byte, length 3..258, found as in zlib's ``deflate_rle``); no
hash chains. Rows are filtered with PNG filter type 0 and summed with Adler-32 (RFC 1950) in the
same pass.

The filtered rows are split into blocks of about ``block_bytes`` input bytes. Each block gets the
cheapest of a dynamic-Huffman block (code lengths from the block's own histogram, literal/length
codes limited to 15 bits and code-length codes to 7; see ``huffman``), a fixed-Huffman block, or
stored blocks, so the output is never much larger than the raw rows. Bits go out through a 64-bit
accumulator stored unaligned into a byte buffer, three literal codes per store (``bits``).

Public wrappers (``filter_rows``, ``deflate_rle``, ``deflate_bound``) check nothing beyond what
``weightvis.png``, their caller, has validated; they only supply the tables.
"""

from __future__ import annotations

import numba
import numpy as np

from .bits import _U8, _load_u64, _put, _put_codes, _U0x80, _zero_bytes
from .huffman import _canonical_codes, _cl_tokens, _huffman_lengths

__all__ = ["filter_rows", "deflate_rle", "deflate_bound", "deflate_scratch_runs"]

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
def _deflate_rle(raw, block_bytes, lsym, lext, lval, sym_ebits,  # type: ignore[no-untyped-def]
                 cl_order, cl_ebits, fixed_lens, rpos, rlen, out):
    """raw uint8[n] (n >= 1) -> out uint8[...]: a complete raw deflate stream (RFC 1951; runs of
    distance 1 only) in blocks of about block_bytes input bytes (n split evenly), each the
    cheapest of dynamic Huffman, fixed Huffman or stored. rpos, rlen are int32 scratch of
    (min(block_bytes, n) + 2) // 3 + 2 entries; out must hold deflate_bound(n, block_bytes)
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
        nr, pos = _scan(raw, np.int64(start), np.int64(min(start + size, n)), lsym, rpos, rlen,
                        hist)
        final = 1 if pos >= n else 0
        nruns = 0
        for s in range(257, _N_LITLEN):
            nruns += hist[s]
        # dynamic: literal/length code, distance code = two 1-bit codes (only distance 1 is used)
        _huffman_lengths(hist, np.int64(_MAX_LIT_BITS), lens)
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
        _huffman_lengths(cl_hist, np.int64(_MAX_CL_BITS), cl_lens)
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
                bb, nb, op = _put(out, bb, nb, op, np.uint64(last), np.uint64(3))
                bb, nb, op = _put(out, bb, nb, op, np.uint64(0), np.uint64((-np.int64(nb)) % 8))
                lens_word = m | ((0xFFFF ^ m) << 16)
                bb, nb, op = _put(out, bb, nb, op, np.uint64(lens_word), np.uint64(32))
                for q in range(p, p + m):
                    bb, nb, op = _put(out, bb, nb, op, np.uint64(raw[q]), np.uint64(8))
                p += m
            expect = stored_bits
        else:
            if dyn_bits <= fix_bits:
                bb, nb, op = _put(out, bb, nb, op, np.uint64(final | (2 << 1)), np.uint64(3))
                head = (nlit - 257) | (1 << 5) | ((nclen - 4) << 10)
                bb, nb, op = _put(out, bb, nb, op, np.uint64(head), np.uint64(14))
                for k in range(nclen):
                    bb, nb, op = _put(out, bb, nb, op, np.uint64(cl_lens[cl_order[k]]),
                                      np.uint64(3))
                _canonical_codes(cl_lens, cl_codes)
                for k in range(ncl):
                    s = cl_sym[k]
                    code = cl_codes[s] | (cl_extra[k] << cl_lens[s])
                    bb, nb, op = _put(out, bb, nb, op, np.uint64(code),
                                      np.uint64(cl_lens[s] + cl_ebits[s]))
                _canonical_codes(lens, codes)
                dist_len = 1
                expect = dyn_bits
                use_lens = lens
                use_codes = codes
            else:
                bb, nb, op = _put(out, bb, nb, op, np.uint64(final | (1 << 1)), np.uint64(3))
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
                bb, nb, op = _put(out, bb, nb, op, np.uint64(run_code[length]),
                                  np.uint64(run_len[length]))
                p = q + np.uint64(length)
            bb, nb, op = _put_codes(raw, p, np.uint64(pos), lit_code, lit_len, out, bb, nb, op)
            bb, nb, op = _put(out, bb, nb, op, np.uint64(use_codes[256]),
                              np.uint64(use_lens[256]))
        if np.int64(op) * 8 + np.int64(nb) - bits0 != expect:
            return -1
    return np.int64(op) + (np.int64(nb) + 7) // 8


def deflate_bound(n: int, block_bytes: int) -> int:
    """Bytes _deflate_rle may touch for n input bytes: every block is at most its stored size
    (<= 6 bytes of headers per block and per 65535 bytes, plus the bytes), and 8 of slack for the
    last unaligned store."""
    return n + 6 * (n // block_bytes + n // _STORED_MAX + 3) + 16


def deflate_scratch_runs(n: int, block_bytes: int) -> int:
    """Entries of the int32 run scratch arrays ``deflate_rle`` needs for n input bytes."""
    return (min(block_bytes, n) + 2) // 3 + 2


def filter_rows(idx: np.ndarray, raw: np.ndarray) -> int:
    """idx uint8[h, w] (any strides) -> raw uint8[h * (w + 1)] (each row preceded by filter type
    0), in place; returns the Adler-32 of raw."""
    return int(_filter_rows(idx, raw))


def deflate_rle(raw: np.ndarray, block_bytes: int, rpos: np.ndarray, rlen: np.ndarray,
                out: np.ndarray) -> int:
    """raw uint8[n] (n >= 1, C-contiguous) -> a raw deflate stream in out uint8
    [>= deflate_bound(n, block_bytes)]; rpos, rlen int32[>= deflate_scratch_runs(n,
    block_bytes)] are scratch. Returns the stream's length in bytes, or -1 on a block whose size
    differs from its computed cost (a bug)."""
    return int(_deflate_rle(raw, block_bytes, _LSYM, _LEXT, _LVAL, _SYM_EBITS, _CL_ORDER,
                            _CL_EBITS, _FIXED_LENS, rpos, rlen, out))
