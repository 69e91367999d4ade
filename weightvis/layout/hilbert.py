"""Hilbert layout: every element (or every raw byte) of the checkpoint along one Hilbert curve.

Locality of the curve keeps each tensor a compact blob; each aligned T x T tile is one contiguous
run of T*T curve indices, so a leaf tile reads one contiguous range of the element stream.
Curve: D. Hilbert (1891); indexing as in the classic xy2d/d2xy algorithm (kernels.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from ..types import TILE_SIZE, SceneLayout, Segment, TensorInfo

__all__ = ["hilbert_layout", "curve_order_for"]


def curve_order_for(count: int) -> int:
    """Smallest order k >= log2(TILE_SIZE) with 4**k >= count."""
    k = max(int(math.log2(TILE_SIZE)), math.ceil(math.log2(max(count, 1)) / 2))
    while 4 ** k < count:
        k += 1
    return k


def hilbert_layout(tensors: Sequence[TensorInfo], *, unit: str = "element",
                   file_sizes: Sequence[tuple[Path, int]] = ()) -> SceneLayout:
    """Elements of ``tensors`` in the given order (unit ``element``), or the bytes of the files
    (unit ``byte``), one after another along the curve."""
    segments: list[Segment] = []
    h = 0
    if unit == "element":
        for t in tensors:
            if t.numel:
                segments.append(Segment(t.name, h, t.numel))
                h += t.numel
    elif unit == "byte":
        for path, size in file_sizes:
            if size:
                segments.append(Segment(path.name, h, size))
                h += size
    else:
        raise ValueError(f"unknown Hilbert unit {unit!r}")
    k = curve_order_for(h)
    side = 1 << k
    # content height: rows of tiles actually touched would need the curve; report the full square
    return SceneLayout("hilbert", side, side, (), (), {}, curve_order=k, curve_unit=unit,
                       segments=tuple(segments))
