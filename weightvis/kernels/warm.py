"""Compile every kernel once (or load it from numba's cache), before worker processes fork."""

from __future__ import annotations

import numpy as np

from .accumulators import new_acc, new_delta_acc
from .constants import METRIC_RMS, REDUCE_DELTA, REDUCE_FIRST, REDUCE_SIGNED_RMS
from .delta import ELEMENTS_CAP, colorize_delta, hatch, identical_codes
from .hilbert import hilbert_d2xy, hilbert_tile_offsets
from .reduce import reduce_tile
from .values import (
    BLOCK_FIELDS,
    BlockScratch,
    code_counts,
    code_lut,
    colorize,
    colorize_code_blocks,
    colorize_codes,
    colorize_codes_small,
)

__all__ = ["warm_up", "warm_values", "warm_codes", "warm_codes_small", "warm_reduce",
           "warm_up_delta"]


def warm_up() -> None:
    """Compile the value, byte and Hilbert kernels (C-contiguous and strided arrays)."""
    warm_values()
    warm_codes()
    warm_codes_small()
    warm_reduce()


def warm_values() -> None:
    """Compile the kernels that turn float32 values into palette indices (C-contiguous and
    strided inputs)."""
    a = np.zeros((2, 2), np.float32)
    o = np.zeros((2, 2), np.uint8)
    colorize(a, 1.0, o, new_acc())
    colorize(a[:, :1], 1.0, o[:, :1], new_acc())
    colorize(np.zeros((2, 1), np.float32), 1.0, o[:, :1], new_acc())  # a decoded block


def warm_codes() -> None:
    """Compile the kernels that turn 16-bit codes into palette indices: C-contiguous, strided
    and read-only (memory-mapped) inputs."""
    o = np.zeros((2, 2), np.uint8)
    lut = np.zeros(1 << 16, np.uint8)
    vals = np.zeros(1 << 16, np.float32)
    hist = np.zeros(1 << 16, np.int32)
    codes = np.zeros((2, 2), np.uint16)
    colorize_code_blocks(codes.reshape(-1), np.zeros((1, BLOCK_FIELDS), np.int64),
                         np.ones(1), vals.reshape(1, -1), o, new_acc().reshape(1, -1),
                         BlockScratch())
    readonly = codes.copy()  # a memory-mapped file's codes: compiled here, not in each worker
    readonly.flags.writeable = False
    o_column = np.zeros((2, 1), np.uint8)
    for src in (codes, readonly):
        code_counts(src.reshape(-1), True)
        colorize_codes(src, lut, vals, o, new_acc(), hist)
        for out in (o[:, :1], o_column):
            colorize_codes(src[:, :1], lut, vals, out, new_acc(), hist)
    code_lut(vals, 1.0)


def warm_codes_small() -> None:
    """Compile the kernel for a small block of 16-bit codes painted on its own (a tiny tensor
    outside a batch of small blocks), C-contiguous and strided."""
    o = np.zeros((2, 2), np.uint8)
    vals = np.zeros(1 << 16, np.float32)
    codes = np.zeros((2, 2), np.uint16)
    colorize_codes_small(codes, vals, 1.0, o, new_acc())
    colorize_codes_small(codes[:, :1], vals, 1.0, o[:, :1], new_acc())


def warm_reduce() -> None:
    """Compile the reduction (children -> parent tile) and Hilbert kernels."""
    reduce_tile(np.zeros((2, 2), np.uint8), REDUCE_SIGNED_RMS, np.zeros((1, 1), np.uint8))
    reduce_tile(np.zeros((2, 2), np.uint8), REDUCE_FIRST, np.zeros((1, 1), np.uint8))
    hilbert_tile_offsets(2, 0, 0, np.zeros((2, 2), np.int64))
    hilbert_d2xy(4, 3)


def warm_up_delta() -> None:
    """Compile the diff kernels."""
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
    reduce_tile(np.zeros((2, 2), np.uint8), REDUCE_DELTA, np.zeros((1, 1), np.uint8))
    codes = np.zeros((2, 2), np.uint16)
    hist = np.zeros(1 << 16, np.int32)
    vals = np.zeros(1 << 16, np.float32)
    readonly = codes.copy()  # a memory-mapped file's codes
    readonly.flags.writeable = False
    o_column = np.zeros((2, 1), np.uint8)
    for src in (codes, readonly):
        identical_codes(src, vals, hist, o, new_delta_acc())
        for out in (o[:, :1], o_column):
            identical_codes(src[:, :1], vals, hist, out, new_delta_acc())
