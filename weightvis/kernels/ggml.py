"""Compiled decoders of ggml's block-quantized types, bit-identical to ``gguf.quants``.

Each decoder turns ``raw`` — rows of whole blocks, ``(rows, n_blocks * type_size)`` uint8 — into
``(rows, n_blocks * block_size)`` float32, with the same float32 operations in the same order as
gguf-py's numpy reference (a product rounded, then a sum rounded: no fused multiply-add, which
numba never emits without ``fastmath``). Half-precision scales go through a 65,536-entry table
made by numpy itself, so they convert exactly as the reference's ``astype(np.float32)`` does.
``decode(raw, type_name)`` returns None for a type this module doesn't decode (gguf-py, the
reference, decodes it instead). Tested against ``gguf.quants.dequantize`` on every type with
random bytes, partial row ranges included (tests/test_ggml_kernels.py).
"""

from __future__ import annotations

from collections.abc import Callable

import numba as nb
import numpy as np

__all__ = ["decode", "DECODERS", "BLOCK"]

QK_K = 256

_F16 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
_IQ4 = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113],
                np.float32)
_MX = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.float32)

_jit = nb.njit(cache=True, nogil=True, boundscheck=False)


@_jit
def _b(raw: np.ndarray, r: int, i: int) -> np.int64:
    """Byte i of row r, as a signed machine integer (no unsigned-signed mixing below)."""
    v: np.int64 = np.int64(raw[r, i])
    return v


@_jit
def _h(raw: np.ndarray, r: int, o: int, f16: np.ndarray) -> np.float32:
    i = _b(raw, r, o) | (_b(raw, r, o + 1) << 8)
    return f16[i]  # type: ignore[no-any-return]


@_jit
def _nib(raw: np.ndarray, r: int, o: int, j: int) -> np.int64:
    """Element j (0..31) of a 32-element block of nibbles at byte o: low halves then high."""
    v: np.int64 = (_b(raw, r, o + j) & 0x0F) if j < 16 else (_b(raw, r, o + j - 16) >> 4)
    return v


@_jit
def _q8_0(raw: np.ndarray, out: np.ndarray, f16: np.ndarray) -> None:
    for r in range(raw.shape[0]):
        for b in range(raw.shape[1] // 34):
            o = b * 34
            d = _h(raw, r, o, f16)
            for j in range(32):
                v = _b(raw, r, o + 2 + j)
                out[r, b * 32 + j] = np.float32(v - 256 if v > 127 else v) * d


@_jit
def _q4_0(raw: np.ndarray, out: np.ndarray, f16: np.ndarray) -> None:
    for r in range(raw.shape[0]):
        for b in range(raw.shape[1] // 18):
            o = b * 18
            d = _h(raw, r, o, f16)
            for j in range(32):
                out[r, b * 32 + j] = d * np.float32(_nib(raw, r, o + 2, j) - 8)


@_jit
def _q4_1(raw: np.ndarray, out: np.ndarray, f16: np.ndarray) -> None:
    for r in range(raw.shape[0]):
        for b in range(raw.shape[1] // 20):
            o = b * 20
            d = _h(raw, r, o, f16)
            m = _h(raw, r, o + 2, f16)
            for j in range(32):
                out[r, b * 32 + j] = d * np.float32(_nib(raw, r, o + 4, j)) + m


@_jit
def _qh32(raw: np.ndarray, r: int, o: int) -> np.int64:
    v: np.int64 = (_b(raw, r, o) | (_b(raw, r, o + 1) << 8) | (_b(raw, r, o + 2) << 16)
                   | (_b(raw, r, o + 3) << 24))
    return v


@_jit
def _q5_0(raw: np.ndarray, out: np.ndarray, f16: np.ndarray) -> None:
    for r in range(raw.shape[0]):
        for b in range(raw.shape[1] // 22):
            o = b * 22
            d = _h(raw, r, o, f16)
            qh = _qh32(raw, r, o + 2)
            for j in range(32):
                q = _nib(raw, r, o + 6, j) | (((qh >> j) & 1) << 4)
                out[r, b * 32 + j] = d * np.float32(q - 16)


@_jit
def _q5_1(raw: np.ndarray, out: np.ndarray, f16: np.ndarray) -> None:
    for r in range(raw.shape[0]):
        for b in range(raw.shape[1] // 24):
            o = b * 24
            d = _h(raw, r, o, f16)
            m = _h(raw, r, o + 2, f16)
            qh = _qh32(raw, r, o + 4)
            for j in range(32):
                q = _nib(raw, r, o + 8, j) | (((qh >> j) & 1) << 4)
                out[r, b * 32 + j] = d * np.float32(q) + m


@_jit
def _q2_k(raw: np.ndarray, out: np.ndarray, f16: np.ndarray) -> None:
    for r in range(raw.shape[0]):
        for b in range(raw.shape[1] // 84):
            o = b * 84
            d = _h(raw, r, o + 80, f16)
            dmin = _h(raw, r, o + 82, f16)
            for f in range(QK_K):
                g, s, k = f // 128, (f // 32) % 4, f % 32
                q = (_b(raw, r, o + 16 + g * 32 + k) >> (2 * s)) & 3
                sc = _b(raw, r, o + f // 16)
                dl = d * np.float32(sc & 0xF)
                ml = dmin * np.float32(sc >> 4)
                out[r, b * QK_K + f] = dl * np.float32(q) - ml


@_jit
def _q3_k(raw: np.ndarray, out: np.ndarray, f16: np.ndarray) -> None:
    dl = np.empty(16, np.float32)
    for r in range(raw.shape[0]):
        for b in range(raw.shape[1] // 110):
            o = b * 110
            d = _h(raw, r, o + 108, f16)
            for i in range(16):
                lo = (_b(raw, r, o + 96 + i) & 0x0F) if i < 8 else _b(raw, r, o + 88 + i) >> 4
                hi = (_b(raw, r, o + 104 + i % 4) >> (2 * (i // 4))) & 3
                sc = (lo | (hi << 4)) & 0xFF
                dl[i] = d * np.float32((sc - 256 if sc > 127 else sc) - 32)
            for f in range(QK_K):
                g, s, k = f // 128, (f // 32) % 4, f % 32
                ql = (_b(raw, r, o + 32 + g * 32 + k) >> (2 * s)) & 3
                qh = ((_b(raw, r, o + k) >> (f // 32)) & 1) ^ 1
                out[r, b * QK_K + f] = dl[f // 16] * np.float32(ql - (qh << 2))


@_jit
def _scale_min_k4(raw: np.ndarray, r: int, o: int, j: int) -> tuple[np.int64, np.int64]:
    """Q4_K / Q5_K: the 6-bit scale and min of sub-block j from the 12 bytes at o."""
    if j < 4:
        return _b(raw, r, o + j) & 0x3F, _b(raw, r, o + 4 + j) & 0x3F
    md = _b(raw, r, o + 8 + j - 4)
    sc = (md & 0x0F) | ((_b(raw, r, o + j - 4) >> 2) & 0x30)
    mn = (md >> 4) | ((_b(raw, r, o + 4 + j - 4) >> 2) & 0x30)
    return sc, mn


@_jit
def _q4_k(raw: np.ndarray, out: np.ndarray, f16: np.ndarray) -> None:
    for r in range(raw.shape[0]):
        for b in range(raw.shape[1] // 144):
            o = b * 144
            d = _h(raw, r, o, f16)
            dmin = _h(raw, r, o + 2, f16)
            for j in range(8):
                sc, mn = _scale_min_k4(raw, r, o + 4, j)
                d8 = d * np.float32(sc)
                m8 = dmin * np.float32(mn)
                g, h = j // 2, j % 2
                for k in range(32):
                    q = (_b(raw, r, o + 16 + g * 32 + k) >> (4 * h)) & 0x0F
                    out[r, b * QK_K + j * 32 + k] = d8 * np.float32(q) - m8


@_jit
def _q5_k(raw: np.ndarray, out: np.ndarray, f16: np.ndarray) -> None:
    for r in range(raw.shape[0]):
        for b in range(raw.shape[1] // 176):
            o = b * 176
            d = _h(raw, r, o, f16)
            dmin = _h(raw, r, o + 2, f16)
            for j in range(8):
                sc, mn = _scale_min_k4(raw, r, o + 4, j)
                d8 = d * np.float32(sc)
                m8 = dmin * np.float32(mn)
                g, h = j // 2, j % 2
                for k in range(32):
                    ql = (_b(raw, r, o + 48 + g * 32 + k) >> (4 * h)) & 0x0F
                    qh = (_b(raw, r, o + 16 + k) >> j) & 1
                    out[r, b * QK_K + j * 32 + k] = d8 * np.float32(ql | (qh << 4)) - m8


@_jit
def _q6_k(raw: np.ndarray, out: np.ndarray, f16: np.ndarray) -> None:
    for r in range(raw.shape[0]):
        for b in range(raw.shape[1] // 210):
            o = b * 210
            d = _h(raw, r, o + 208, f16)
            for f in range(QK_K):
                g, h, k = f // 128, (f // 64) % 2, f % 64
                ql = (_b(raw, r, o + g * 64 + k) >> (4 * h)) & 0x0F
                s, k2 = (f // 32) % 4, f % 32
                qh = (_b(raw, r, o + 128 + g * 32 + k2) >> (2 * s)) & 3
                sc = _b(raw, r, o + 192 + f // 16)
                di = d * np.float32(sc - 256 if sc > 127 else sc)
                out[r, b * QK_K + f] = di * np.float32((ql | (qh << 4)) - 32)


@_jit
def _iq4_nl(raw: np.ndarray, out: np.ndarray, f16: np.ndarray, kv: np.ndarray) -> None:
    for r in range(raw.shape[0]):
        for b in range(raw.shape[1] // 18):
            o = b * 18
            d = _h(raw, r, o, f16)
            for j in range(32):
                out[r, b * 32 + j] = d * kv[_nib(raw, r, o + 2, j)]


@_jit
def _iq4_xs(raw: np.ndarray, out: np.ndarray, f16: np.ndarray, kv: np.ndarray) -> None:
    for r in range(raw.shape[0]):
        for b in range(raw.shape[1] // 136):
            o = b * 136
            d = _h(raw, r, o, f16)
            sh = _b(raw, r, o + 2) | (_b(raw, r, o + 3) << 8)
            for j in range(8):
                lo = (_b(raw, r, o + 4 + j // 2) >> (4 * (j % 2))) & 0x0F
                hi = (sh >> (2 * j)) & 3
                sc = (lo | (hi << 4)) & 0xFF
                dl = d * np.float32((sc - 256 if sc > 127 else sc) - 32)
                for k in range(32):
                    q = (_b(raw, r, o + 8 + j * 16 + k % 16) >> (4 * (k // 16))) & 0x0F
                    out[r, b * QK_K + j * 32 + k] = dl * kv[q]


@_jit
def _mxfp4(raw: np.ndarray, out: np.ndarray, f16: np.ndarray, kv: np.ndarray) -> None:
    bits = np.empty(1, np.uint32)
    as_f = bits.view(np.float32)
    for r in range(raw.shape[0]):
        for b in range(raw.shape[1] // 17):
            o = b * 17
            e = np.uint32(raw[r, o])
            bits[0] = (np.uint32(0x00200000) << e) if e < 2 else ((e - np.uint32(1))
                                                                 << np.uint32(23))
            d = as_f[0]
            for j in range(32):
                out[r, b * 32 + j] = d * kv[_nib(raw, r, o + 1, j)]


BLOCK: dict[str, tuple[int, int]] = {
    "Q8_0": (32, 34), "Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24),
    "Q2_K": (256, 84), "Q3_K": (256, 110), "Q4_K": (256, 144), "Q5_K": (256, 176),
    "Q6_K": (256, 210), "IQ4_NL": (32, 18), "IQ4_XS": (256, 136), "MXFP4": (32, 17),
}
"""Elements and bytes per block of each type decoded here."""

DECODERS: dict[str, Callable[[np.ndarray, np.ndarray], None]] = {
    "Q8_0": lambda raw, out: _q8_0(raw, out, _F16),
    "Q4_0": lambda raw, out: _q4_0(raw, out, _F16),
    "Q4_1": lambda raw, out: _q4_1(raw, out, _F16),
    "Q5_0": lambda raw, out: _q5_0(raw, out, _F16),
    "Q5_1": lambda raw, out: _q5_1(raw, out, _F16),
    "Q2_K": lambda raw, out: _q2_k(raw, out, _F16),
    "Q3_K": lambda raw, out: _q3_k(raw, out, _F16),
    "Q4_K": lambda raw, out: _q4_k(raw, out, _F16),
    "Q5_K": lambda raw, out: _q5_k(raw, out, _F16),
    "Q6_K": lambda raw, out: _q6_k(raw, out, _F16),
    "IQ4_NL": lambda raw, out: _iq4_nl(raw, out, _F16, _IQ4),
    "IQ4_XS": lambda raw, out: _iq4_xs(raw, out, _F16, _IQ4),
    "MXFP4": lambda raw, out: _mxfp4(raw, out, _F16, _MX),
}


def decode(raw: np.ndarray, type_name: str) -> np.ndarray | None:
    """``raw`` (rows of whole blocks of ``type_name``) as float32 values, or None when this
    module has no decoder for the type."""
    fn = DECODERS.get(type_name)
    if fn is None:
        return None
    bs, ts = BLOCK[type_name]
    if raw.ndim != 2 or raw.shape[1] % ts:
        raise ValueError(f"{type_name}: rows of {raw.shape[1]} bytes are not whole blocks")
    out = np.empty((raw.shape[0], raw.shape[1] // ts * bs), np.float32)
    fn(np.ascontiguousarray(raw), out)
    return out
