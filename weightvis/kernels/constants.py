"""Palette indices and kernel mode constants, defined once (``weightvis.color`` imports them).

Importing this module loads numpy only, never numba: ``color``, the manifest and the CLI use
these numbers without the compiled kernels.

Palette indices (uint8, one byte per tile pixel; every palette has 256 entries):

===========  =====  ======================================================================
name         index  meaning
===========  =====  ======================================================================
PAD          0      padding: no element here (every palette; a colour no value can take)
**values**
NAN          1      NaN
POSINF       2      +Inf
NEGINF       3      -Inf
ZERO         129    exactly zero; level q of a finite value v is ZERO + q (v > 0) or
                    ZERO - q (v < 0), q = 0..LEVELS
LEVELS       125    levels on each side: value indices 4..254; 255 is never used
**deltas**
D_NONFINITE  1      the delta b - a is not finite
D_ONLY_A     2      hatch: the element is only in A
D_ONLY_B     3      hatch: the element is only in B
D_BASE_ONLY  4      hatch: only in A, finetune mode (A is the base model)
D_GAP        5      the gaps between the stripes of a hatch
ZERO         129    unchanged (b == a, or both NaN); grew ZERO + q, shrank ZERO - q
D_LEVELS     123    levels on each side, q = 1..D_LEVELS when b != a: indices 6..252
**bytes**
PAD          0      padding; byte classes use 1..193 (``color.BYTE_LUT``)
===========  =====  ======================================================================

The exact rules are text in ``weightvis.color`` (``VALUE_RULE``, ``PARENT_RULE``,
``DELTA_RULES``, ``DELTA_PARENT_RULE``) and are written into the manifest.

Mode constants (kernels take integers, never strings):

- ``REDUCE_*``: how four child pixels make a parent pixel (``kernels.reduce.reduce_tile``).
- ``METRIC_*``: how a delta becomes a level (``kernels.delta.colorize_delta``).
- ``ACC_*``: which statistics a leaf tile accumulates (``kernels.accumulators``).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "PAD", "NAN", "POSINF", "NEGINF", "ZERO", "LEVELS",
    "D_NONFINITE", "D_ONLY_A", "D_ONLY_B", "D_BASE_ONLY", "D_GAP", "D_LEVELS",
    "REDUCE_SIGNED_RMS", "REDUCE_FIRST", "REDUCE_DELTA",
    "METRIC_RMS", "METRIC_ABSLOG", "METRIC_EXACT", "ACC_VALUES", "ACC_DELTA",
    "level_values",
]

PAD = 0

NAN, POSINF, NEGINF = 1, 2, 3
ZERO = 129
LEVELS = 125

D_NONFINITE, D_ONLY_A, D_ONLY_B, D_BASE_ONLY, D_GAP = 1, 2, 3, 4, 5
D_LEVELS = 123

REDUCE_SIGNED_RMS = 0
"""Value scenes: ``color.PARENT_RULE`` (signed RMS of the children's levels)."""
REDUCE_FIRST = 1
"""Byte scenes: the first non-padding child (TL, TR, BL, BR); byte classes do not average."""
REDUCE_DELTA = 2
"""Diff scenes: ``color.DELTA_PARENT_RULE`` (signed RMS of delta levels, re-hatched gaps)."""

METRIC_RMS, METRIC_ABSLOG, METRIC_EXACT = 0, 1, 2
"""``color.DELTA_RULES``: "rms", "abs-log", "exact"."""

ACC_VALUES = 0
"""Statistics of values: count, sum, sum of squares, min, max, zeros, NaN, Inf."""
ACC_DELTA = 1
"""Numbers of a delta: pairs, sums of a^2, b^2, d^2, a*b, max |d|, changed, non-finite made."""


def level_values() -> np.ndarray:
    """float64[256]: the signed level u = sign * (q / LEVELS)^2 of each value index ZERO +- q
    (0 for the indices that are not values), as ``color.PARENT_RULE`` averages them."""
    u = np.zeros(256, np.float64)
    for q in range(LEVELS + 1):
        u[ZERO + q] = (q / LEVELS) ** 2
        u[ZERO - q] = -((q / LEVELS) ** 2)
    return u
