"""``weightvis info --scan``: read every tensor once, in row blocks, and list what the eye finds on
the map: NaN / Inf elements, all-zero and constant tensors, and all-zero rows and columns of a
matrix's 2-D view (a dead attention head is a band of zero rows in q_proj and of zero columns in
o_proj; a dead channel, a zero column through every block).

Memory is bounded: one block of at most ``SCAN_BLOCK_ELEMENTS`` elements (whole rows) at a time,
plus one flag per column of the tensor being read, plus at most ``MAX_RUNS`` stored runs of zero
rows per tensor (the count goes on beyond them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .types import TensorInfo

__all__ = ["scan_tensors", "zero_runs", "SCAN_BLOCK_ELEMENTS", "MAX_RUNS"]

SCAN_BLOCK_ELEMENTS = 1 << 22
"""Elements read per block (whole rows; a single row may be longer)."""
MAX_RUNS = 32
"""Runs of zero rows / columns listed per tensor (the count covers them all)."""

Found = dict[str, list[dict[str, Any]]]


def zero_runs(zero: np.ndarray, offset: int = 0, limit: int = MAX_RUNS) -> list[list[int]]:
    """[start, stop) runs of True in the 1-D bool array ``zero`` (indices + ``offset``), at most
    ``limit`` of them.

    >>> zero_runs(np.array([0, 1, 1, 0, 1], bool))
    [[1, 3], [4, 5]]
    """
    edges = np.flatnonzero(np.diff(zero.astype(np.int8), prepend=0, append=0))
    starts, stops = edges[0::2][:limit], edges[1::2][:limit]
    return [[int(a) + offset, int(b) + offset] for a, b in zip(starts, stops, strict=True)]


def _merge(runs: list[list[int]], new: list[list[int]]) -> None:
    """Append ``new`` runs to ``runs``, joining a run that continues the last one."""
    for r in new:
        if runs and runs[-1][1] == r[0]:
            runs[-1][1] = r[1]
        elif len(runs) < MAX_RUNS:
            runs.append(r)


def scan_tensors(reader: Any, tensors: Sequence[TensorInfo],
                 progress: Callable[[str, int, int], None] | None = None) -> Found:
    """What the scan finds, by kind: ``nan`` / ``inf`` (with counts), ``all_zero``,
    ``constant`` (every element one finite value, not zero; tensors of 2+ elements, with the
    value), ``zero_rows`` / ``zero_cols`` (matrices, 2+ rows and columns, not all zero: the count,
    the rows or columns of the 2-D view, and the first ``MAX_RUNS`` runs)."""
    found: Found = {"nan": [], "inf": [], "all_zero": [], "constant": [], "zero_rows": [],
                    "zero_cols": []}
    for t in tensors:
        _scan_one(reader, t, found)
        if progress is not None:
            progress("scan", 1, len(tensors))
    return found


def _scan_one(reader: Any, t: TensorInfo, found: Found) -> None:
    rows, cols = t.e_rows, t.e_cols
    matrix = len(t.shape) >= 2 and rows > 1 and cols > 1
    nan = inf = nonzero = zero_row_count = 0
    lo, hi = np.inf, -np.inf
    col_nonzero = np.zeros(cols if matrix else 0, np.bool_)
    row_runs: list[list[int]] = []
    step = max(1, SCAN_BLOCK_ELEMENTS // max(cols, 1))
    for r0 in range(0, rows, step):
        block = reader.read(t.name, r0, min(rows, r0 + step)).reshape(-1, cols)
        nan += int(np.isnan(block).sum())
        inf += int(np.isinf(block).sum())
        if block.size:
            lo, hi = min(lo, float(np.nanmin(block, initial=np.inf))), \
                max(hi, float(np.nanmax(block, initial=-np.inf)))
        nz = block != 0  # NaN counts as not zero
        nonzero += int(np.count_nonzero(nz))
        if matrix:
            col_nonzero |= nz.any(axis=0)
            zero_row = ~nz.any(axis=1)
            zero_row_count += int(np.count_nonzero(zero_row))
            _merge(row_runs, zero_runs(zero_row, r0))
        del block, nz
        reader.release()
    name = t.name
    if nan:
        found["nan"].append({"name": name, "count": nan})
    if inf:
        found["inf"].append({"name": name, "count": inf})
    if t.numel and nonzero == 0:
        found["all_zero"].append({"name": name})
        return
    if t.numel >= 2 and not nan and not inf and lo == hi:
        found["constant"].append({"name": name, "value": lo})
        return
    if matrix and zero_row_count:
        found["zero_rows"].append({"name": name, "count": zero_row_count, "of": rows,
                                   "runs": row_runs})
    zero_col = ~col_nonzero
    if matrix and zero_col.any():
        found["zero_cols"].append({"name": name, "count": int(np.count_nonzero(zero_col)),
                                   "of": cols, "runs": zero_runs(zero_col)})
