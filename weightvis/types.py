"""Small frozen value types shared by every stage of the pipeline.

Coordinate planes (see STYLE.md): ``e_`` element (row, col) in a tensor's 2-D view, ``c_`` canvas
pixel at max zoom, ``t_`` tile index at zoom z, ``p_`` pixel inside a tile, ``h_`` Hilbert index.
"""

from __future__ import annotations

import functools
import math
from typing import Literal, NamedTuple

__all__ = [
    "TensorInfo",
    "Placement",
    "TileAddress",
    "TensorStats",
    "LayoutKind",
    "HilbertUnit",
    "TileFormat",
    "ScaleMode",
    "view_of",
    "TILE_SIZE",
    "Group",
    "Segment",
    "SceneLayout",
]

TILE_SIZE = 512
"""Tile edge in pixels (DESIGN.md: 512-px tiles keep the file count low)."""

LayoutKind = Literal["arch", "hilbert"]
HilbertUnit = Literal["element", "byte"]
TileFormat = Literal["png"]
"""Tiles are palette PNG. (AVIF was an option until issue 14: options.TILE_FORMAT_GONE says
why it went.)"""
ScaleMode = Literal["tensor", "global"]


@functools.lru_cache(maxsize=1 << 16)
def view_of(shape: tuple[int, ...], row_dims: int = 1) -> tuple[int, int]:
    """The 2-D view (rows, cols) of a tensor shape.

    0-D -> 1x1, 1-D [n] -> 1xn, 2-D as is, N-D [a, b, ...] -> a x (b*...). With ``row_dims``
    2 (fused expert tensors, ``index.view_row_dims``), N-D [E, r, c, ...] -> (E*r) x (c*...):
    the E experts' r x (c*...) views stacked, so one expert's matrix is a row range.

    >>> view_of(()), view_of((5,)), view_of((3, 4)), view_of((258, 1, 256))
    ((1, 1), (1, 5), (3, 4), (258, 256))
    >>> view_of((8, 6, 4), 2)
    (48, 4)
    """
    if len(shape) == 0:
        return (1, 1)
    if len(shape) == 1:
        return (1, int(shape[0]))
    k = max(1, min(row_dims, len(shape) - 1))
    return (int(math.prod(shape[:k])), int(math.prod(shape[k:])))


class TensorInfo(NamedTuple):
    """One tensor as listed by a reader; no data.

    >>> TensorInfo("w", (3, 4), "F32", "m.safetensors").e_rows
    3
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    """Format-level element type name, upper case (``F32``, ``BF16``, ``I64``, ``Q4_K``...)."""
    file: str
    """Path of the file holding the tensor's data (as given by the user, resolved)."""
    row_dims: int = 1
    """Leading dims that the rows of the 2-D view span (``view_of``): 2 for a fused expert
    tensor (readers set it from ``index.view_row_dims``), else 1."""

    @property
    def e_rows(self) -> int:
        return view_of(self.shape, self.row_dims)[0]

    @property
    def e_cols(self) -> int:
        return view_of(self.shape, self.row_dims)[1]

    @property
    def numel(self) -> int:
        return int(math.prod(self.shape))


class Placement(NamedTuple):
    """Element block rows ``e_r0..e_r1-1``, cols ``e_c0..e_c1-1`` of a tensor's 2-D view, drawn at
    1 px = 1 element with its top-left at canvas pixel (``c_x``, ``c_y``) of max zoom.

    >>> p = Placement("w", 10, 20, 0, 3, 0, 4)
    >>> p.c_w, p.c_h
    (4, 3)
    """

    tensor: str
    c_x: int
    c_y: int
    e_r0: int
    e_r1: int
    e_c0: int
    e_c1: int
    label: str | None = None
    """What the block is when the tensor's name does not say it (``expert 17 · gate``: one
    expert's matrix, perhaps of a fused tensor); None: the tensor's own label."""

    @property
    def c_w(self) -> int:
        return self.e_c1 - self.e_c0

    @property
    def c_h(self) -> int:
        return self.e_r1 - self.e_r0

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "tensor": self.tensor,
            "rect": [self.c_x, self.c_y, self.c_w, self.c_h],
            "rows": [self.e_r0, self.e_r1],
            "cols": [self.e_c0, self.e_c1],
        }
        if self.label is not None:
            out["label"] = self.label
        return out


class TileAddress(NamedTuple):
    """Tile (``t_x``, ``t_y``) at zoom ``z`` of a scene; zoom 0 is the whole canvas in one tile.

    >>> TileAddress(2, 1, 3).children()[0]
    TileAddress(z=3, t_x=2, t_y=6)
    """

    z: int
    t_x: int
    t_y: int

    def children(self) -> tuple[TileAddress, TileAddress, TileAddress, TileAddress]:
        z, x, y = self.z + 1, 2 * self.t_x, 2 * self.t_y
        return (TileAddress(z, x, y), TileAddress(z, x + 1, y),
                TileAddress(z, x, y + 1), TileAddress(z, x + 1, y + 1))


class TensorStats(NamedTuple):
    """Per-tensor statistics from the value pass (finite elements only, float64 accumulation)."""

    min: float
    max: float
    mean: float
    std: float
    rms: float
    zero_fraction: float
    nan_count: int
    inf_count: int
    robust: float
    """99.9th percentile of |v| over a deterministic sample (see color.py) - the default scale."""

    def to_json(self) -> dict[str, float | int | None]:
        def num(v: float) -> float | None:
            return None if not math.isfinite(v) else float(v)
        return {
            "min": num(self.min), "max": num(self.max), "mean": num(self.mean),
            "std": num(self.std), "rms": num(self.rms), "zero_fraction": float(self.zero_fraction),
            "nan_count": int(self.nan_count), "inf_count": int(self.inf_count),
            "robust": num(self.robust),
        }


class Group(NamedTuple):
    """A labelled canvas rectangle (a transformer block, a section, a name-prefix group)."""

    label: str
    kind: str
    """``block``, ``section`` or ``prefix``."""
    c_x: int
    c_y: int
    c_w: int
    c_h: int

    def to_json(self) -> dict[str, object]:
        return {"label": self.label, "kind": self.kind,
                "rect": [self.c_x, self.c_y, self.c_w, self.c_h]}


class Segment(NamedTuple):
    """A run of the Hilbert curve: ``length`` consecutive indices from ``h_start`` hold the elements
    (row-major in the 2-D view) of a tensor, or the bytes of a file."""

    name: str
    h_start: int
    length: int


class SceneLayout(NamedTuple):
    """The data-free geometry of one scene: what is drawn where at max zoom."""

    layout: str
    """``arch`` or ``hilbert``."""
    c_width: int
    c_height: int
    placements: tuple[Placement, ...]
    groups: tuple[Group, ...]
    slots: dict[str, tuple[int | None, str | None]]
    """tensor name -> (block index, sub-path) for tensors inside transformer blocks."""
    curve_order: int | None = None
    curve_unit: str | None = None
    segments: tuple[Segment, ...] = ()
