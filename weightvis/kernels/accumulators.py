"""Statistics accumulators: small float64 arrays that leaf kernels add to and that merge in a
fixed order (so the numbers are the same bit for bit whatever the worker count).

One table: ``new_accumulator(kind)`` / ``merge_accumulator(kind, into, other)`` for ``kind`` in
``ACC_VALUES`` (``colorize``, ``colorize_codes``) and ``ACC_DELTA`` (``colorize_delta``,
``identical_codes``). numpy only: no numba.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .constants import ACC_DELTA, ACC_VALUES

__all__ = [
    "ACC_SIZE", "new_acc", "merge_acc", "DELTA_ACC_SIZE", "DELTA_CHANGED", "new_delta_acc",
    "merge_delta_acc", "new_accumulator", "merge_accumulator",
]

# values: count of finite, sum, sum of squares, min, max, zeros, NaN, Inf
ACC_SIZE = 8
_N, _SUM, _SUMSQ, _MIN, _MAX, _ZEROS, _NANS, _INFS = range(ACC_SIZE)

# deltas: elements in both, sum a^2, sum b^2, sum d^2, sum a*b (finite pairs), max |d|, changed
# elements, non-finite introduced (finite in A, not in B)
DELTA_ACC_SIZE = 8
_DN, _DA2, _DB2, _DD2, _DAB, _DMAX, _DCHG, _DNFI = range(DELTA_ACC_SIZE)
DELTA_CHANGED = _DCHG
"""Index of the changed-element count in a delta accumulator."""


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


def new_delta_acc() -> np.ndarray:
    return np.zeros(DELTA_ACC_SIZE, np.float64)


def merge_delta_acc(into: np.ndarray, other: np.ndarray) -> None:
    """Merge delta accumulator ``other`` into ``into`` in place."""
    into[:_DMAX] += other[:_DMAX]
    into[_DMAX] = max(into[_DMAX], other[_DMAX])
    into[_DCHG:] += other[_DCHG:]


_ACCUMULATORS: dict[int, tuple[Callable[[], np.ndarray],
                               Callable[[np.ndarray, np.ndarray], None]]] = {
    ACC_VALUES: (new_acc, merge_acc),
    ACC_DELTA: (new_delta_acc, merge_delta_acc),
}


def _entry(kind: int) -> tuple[Callable[[], np.ndarray], Callable[[np.ndarray, np.ndarray], None]]:
    got = _ACCUMULATORS.get(kind)
    if got is None:
        raise ValueError(f"unknown accumulator kind {kind!r} (ACC_VALUES or ACC_DELTA)")
    return got


def new_accumulator(kind: int) -> np.ndarray:
    """A fresh accumulator of ``kind`` (``ACC_VALUES`` or ``ACC_DELTA``)."""
    return _entry(kind)[0]()


def merge_accumulator(kind: int, into: np.ndarray, other: np.ndarray) -> None:
    """Merge accumulator ``other`` of ``kind`` into ``into`` in place."""
    _entry(kind)[1](into, other)
