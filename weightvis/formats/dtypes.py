"""Element types shared by the formats: numpy storage dtype + exact decode to float32.

Floating types decode exactly (every F16/BF16/F8 value is representable in float32). Integer types
convert with ``astype(float32)``: exact up to |v| <= 2**24, round-to-nearest-even beyond
(I64/U64/I32/U32 values that large cannot be shown more precisely as float32 anyway).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["ELEMENT_TYPES", "ElementType", "decode_f8_table", "f8_e8m0_table", "CODE_DTYPES",
           "code_values"]


def decode_f8_table(exp_bits: int, man_bits: int, bias: int, *, ieee_specials: bool) -> np.ndarray:
    """The 256 float32 values of an 8-bit float encoding, by formula.

    ``ieee_specials``: all-ones exponent means Inf (mantissa 0) / NaN (E5M2). Otherwise (E4M3FN,
    "finite") only S.1111.111 is NaN and there is no Inf (OCP FP8 spec, 2023).
    """
    out = np.empty(256, np.float64)
    e_max = (1 << exp_bits) - 1
    for b in range(256):
        sign = -1.0 if b & 0x80 else 1.0
        e = (b >> man_bits) & e_max
        m = b & ((1 << man_bits) - 1)
        if ieee_specials and e == e_max:
            out[b] = sign * np.inf if m == 0 else np.nan
        elif not ieee_specials and e == e_max and m == (1 << man_bits) - 1:
            out[b] = np.nan
        elif e == 0:
            out[b] = sign * (m / (1 << man_bits)) * 2.0 ** (1 - bias)
        else:
            out[b] = sign * (1 + m / (1 << man_bits)) * 2.0 ** (e - bias)
    return out.astype(np.float32)


def f8_e8m0_table() -> np.ndarray:
    """E8M0 (OCP MX scale type): 2**(b-127), 0xFF is NaN."""
    b = np.arange(256, dtype=np.float64)
    out = np.exp2(b - 127)
    out[255] = np.nan
    return out.astype(np.float32)


_F8_E4M3 = decode_f8_table(4, 3, 7, ieee_specials=False)
_F8_E5M2 = decode_f8_table(5, 2, 15, ieee_specials=True)
_F8_E8M0 = f8_e8m0_table()


def _lut(table: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    def dec(a: np.ndarray) -> np.ndarray:
        out: np.ndarray = table[a]
        return out
    return dec


def _bf16(a: np.ndarray) -> np.ndarray:
    out = np.empty(a.shape, np.uint32)
    np.left_shift(a, 16, out=out, dtype=np.uint32)
    return out.view(np.float32)


def _astype(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32)


def _f64(a: np.ndarray) -> np.ndarray:
    """F64 beyond float32's range becomes +-Inf (drawn as such), without numpy's warning."""
    with np.errstate(over="ignore"):
        return a.astype(np.float32)


class ElementType:
    """Storage dtype (little-endian numpy) and the decode from a stored block to float32."""

    __slots__ = ("name", "storage", "decode")

    def __init__(self, name: str, storage: str, decode: Callable[[np.ndarray], np.ndarray]):
        self.name = name
        self.storage = np.dtype(storage)
        self.decode = decode

    @property
    def itemsize(self) -> int:
        return self.storage.itemsize


ELEMENT_TYPES: dict[str, ElementType] = {
    t.name: t for t in [
        ElementType("F64", "<f8", _f64),
        ElementType("F32", "<f4", _astype),
        ElementType("F16", "<f2", _astype),
        ElementType("BF16", "<u2", _bf16),
        ElementType("F8_E4M3", "u1", _lut(_F8_E4M3)),
        ElementType("F8_E5M2", "u1", _lut(_F8_E5M2)),
        ElementType("F8_E8M0", "u1", _lut(_F8_E8M0)),
        ElementType("I64", "<i8", _astype),
        ElementType("I32", "<i4", _astype),
        ElementType("I16", "<i2", _astype),
        ElementType("I8", "i1", _astype),
        ElementType("U64", "<u8", _astype),
        ElementType("U32", "<u4", _astype),
        ElementType("U16", "<u2", _astype),
        ElementType("U8", "u1", _astype),
        ElementType("BOOL", "u1", lambda a: (a != 0).astype(np.float32)),
    ]
}


CODE_DTYPES = ("BF16", "F16")
"""16-bit types whose every value is one of 65,536 codes (see ``code_values``)."""


def code_values(name: str) -> np.ndarray:
    """float32[65536]: the value of every 16-bit code of a type in CODE_DTYPES."""
    codes = np.arange(1 << 16, dtype=np.uint16)
    if name == "BF16":
        return _bf16(codes)
    if name == "F16":
        out: np.ndarray = codes.view("<f2").astype(np.float32)
        return out
    raise ValueError(f"{name} has no 16-bit code table")
