"""Hilbert layout: every element (or every raw byte) of the checkpoint along one Hilbert curve.

Locality of the curve keeps each tensor a compact blob; each aligned T x T tile is one contiguous
run of T*T curve indices, so a leaf tile reads one contiguous range of the element stream.
Curve: D. Hilbert (1891); indexing as in the classic xy2d/d2xy algorithm (kernels.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from ..index import NameIndex, order_key
from ..types import TILE_SIZE, SceneLayout, Segment, TensorInfo

__all__ = ["hilbert_layout", "curve_order_for"]


def curve_order_for(count: int) -> int:
    """Smallest order k >= log2(TILE_SIZE) with 4**k >= count."""
    k = max(int(math.log2(TILE_SIZE)), math.ceil(math.log2(max(count, 1)) / 2))
    while 4 ** k < count:
        k += 1
    return k


def hilbert_layout(tensors: Sequence[TensorInfo], *, unit: str = "element",
                   file_sizes: Sequence[tuple[Path, int]] = (),
                   index: NameIndex | None = None) -> SceneLayout:
    """Elements of ``tensors`` in natural order of their names (unit ``element``:
    ``index.order_key``, so ``layer2`` comes before ``layer10`` whatever the file's order), or
    the bytes of the files in the given order (unit ``byte``), one after another along the
    curve. ``index`` (the name index of these tensors; built when None) gives the layout's
    ``slots``: the block and sub-path of each tensor in the dominant block stack, which the
    viewer's labels carry (``block 3 · self_attn.q_proj.weight``) as the arch layout's block
    frames do."""
    segments: list[Segment] = []
    slots: dict[str, tuple[int | None, str | None]] = {}
    h = 0
    if unit == "element":
        if index is None:
            index = NameIndex([t.name for t in tensors])
        for t in tensors:
            slot = index.slot(t.name)
            if slot is not None:
                slots[t.name] = slot
        for t in sorted(tensors, key=lambda t: order_key(t.name)):
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
    return SceneLayout("hilbert", side, side, (), (), slots, curve_order=k, curve_unit=unit,
                       segments=tuple(segments))
