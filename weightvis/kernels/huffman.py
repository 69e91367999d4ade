"""Huffman code construction for deflate (RFC 1951): length-limited code lengths, canonical
codes, and the run-length coding of a code-length sequence.

Code lengths: the in-place minimum-redundancy algorithm of Moffat & Katajainen, "In-place
calculation of minimum-redundancy codes" (WADS 1995), then overlong codes are folded back by the
Kraft-sum adjustment of miniz (``tdefl_huffman_enforce_max_code_size``).
"""

from __future__ import annotations

import numba
import numpy as np


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
    _min_redundancy(a, np.int64(cnt))
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
