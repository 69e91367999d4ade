"""The deflate bit writer: unaligned 64-bit loads and stores (numba intrinsics) and code output.

The bit writer's state is (bb, nb, op): bb holds nb < 8 pending bits (LSB first) of out[op].
Codes are ORed into bb above its nb bits, then all 8 bytes of bb are stored at out[op] unaligned
(little-endian: byte order = deflate bit order), op advances by the whole bytes and bb keeps
the rest. out needs 8 bytes of slack. All three are uint64 (numba turns int64 op uint64 into
float64, so every constant below is a uint64 too).
"""

from __future__ import annotations

import sys
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

if sys.byteorder != "little":  # _store_u64 writes native uint64s
    raise ImportError("weightvis.kernels.bits needs a little-endian machine")

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
        bb, nb, op = _put(out, bb, nb, op, np.uint64(ctab[t0]), np.uint64(ltab[t0]))
        k += _U1
    return bb, nb, op
