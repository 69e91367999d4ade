"""Hilbert layout: every element (or every raw byte) of the checkpoint along one Hilbert curve.

Tensors follow the arch layout's reading order (embeddings, blocks, the rest; names compared
naturally), not the file's. Locality of the curve keeps each tensor a compact blob; each aligned
T x T tile is one contiguous run of T*T curve indices, so a leaf tile reads one contiguous range
of the element stream.
Curve: D. Hilbert (1891); indexing as in the classic xy2d/d2xy algorithm (kernels.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from ..index import NameIndex, is_embedding, order_key
from ..types import TILE_SIZE, SceneLayout, Segment, TensorInfo
from .arch import _sub_key

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
    """Elements of ``tensors`` (unit ``element``) in the arch layout's reading order: embeddings,
    then the blocks of the dominant stack in block order (each block's sub-tensors in the order
    of its slots: attention, MLP, norms), then the rest; names compare naturally
    (``index.order_key``: ``layer2`` before ``layer10``, an LSTM's parameters by layer),
    whatever the file's order. Or the bytes of the files in the given order (unit ``byte``),
    one after another along the curve. ``index`` (the name index of these tensors; built when
    None) gives the blocks and the layout's ``slots``, which the viewer's labels carry
    (``block 3 · self_attn.q_proj.weight``) as the arch layout's block frames do."""
    segments: list[Segment] = []
    slots: dict[str, tuple[int | None, str | None]] = {}
    h = 0
    if unit == "element":
        names = index if index is not None else NameIndex([t.name for t in tensors])
        for t in tensors:
            slot = names.slot(t.name)
            if slot is not None:
                slots[t.name] = slot

        sub_keys: dict[str, tuple[object, ...]] = {}  # a few distinct sub-paths, many blocks

        def reading(t: TensorInfo) -> tuple[object, ...]:
            slot = slots.get(t.name)
            if slot is not None:  # (a sub-path is unique within its block)
                b, sub = slot
                assert b is not None and sub is not None
                key = sub_keys.get(sub)
                if key is None:
                    key = sub_keys[sub] = _sub_key(sub)
                return (1, b, key)
            return (0 if is_embedding(names[t.name].canonical) else 2, order_key(t.name))

        for t in sorted(tensors, key=reading):
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
