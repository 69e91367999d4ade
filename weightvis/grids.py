"""Grids of computed numbers drawn as scenes: the small virtual reader of heatmaps and matrices,
their sequential palette, and the painter that colours them.

A ``Grid`` is a rows x cols array of float64 numbers (a layers x experts heatmap, an E x E
similarity matrix) with a mark per cell (a value, a dense layer, a dead expert, no value), a
colour range [lo, hi] and a cell size in canvas pixels. ``GridSpec`` (picklable: every worker
opens its own) presents grids as a reader whose tensors are the grids **magnified**: the 2-D
view of grid g is (rows·cell) x (cols·cell), so the pipeline's placements, tile geometry and
pyramid draw them like any tensor at 1 px = 1 view element. ``SequentialPainter`` colours them
by SEQUENTIAL_RULE and reduces parents by SEQUENTIAL_PARENT_RULE.

The palette (``sequential_palette``) is built like the value palette, in OKLab (Ottosson 2020):
a path whose lightness rises from 0.22 to 0.90 while the hue turns from violet-blue through
teal and green to yellow at a moderate chroma (capped by the sRGB gamut), its 248 levels at
equal OKLab arc length — the design of viridis (van der Walt & Smith 2015): perceptually uniform
steps (tests/test_moe_scenes.py checks the OKLab distance between levels) and monotone
lightness, so the order survives every colour-vision
deficiency (checked under the Machado, Oliveira & Fernandes 2009 simulations of protanopia,
deuteranopia and tritanopia). Special cells use colours and patterns the levels never take.

(This module sits beside painters.py rather than in it: painters.py is at the module-size guide,
and the grid reader and its painter go together.)
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .color import palette_bytes, value_palette
from .painters import Painter
from .types import TensorInfo

if TYPE_CHECKING:
    from .pyramid import TileWorker

__all__ = ["Grid", "GridSpec", "GridReader", "SequentialPainter", "sequential_palette",
           "sequential_colormap", "sequential_index", "MARK_VALUE", "MARK_DENSE", "MARK_DEAD",
           "MARK_NONE", "S_PAD", "S_DENSE", "S_DENSE_GAP", "S_DEAD", "S_DEAD_LINE", "S_NONE",
           "S_NONE_GAP", "S_FIRST", "S_LEVELS"]

MARK_VALUE, MARK_DENSE, MARK_DEAD, MARK_NONE = 0, 1, 2, 3
"""What a cell holds: a number; a dense layer (no experts); a dead expert; no number."""

S_PAD = 0
S_DENSE, S_DENSE_GAP = 1, 2
S_DEAD, S_DEAD_LINE = 3, 4
S_NONE, S_NONE_GAP = 5, 6
S_FIRST = 8
S_LEVELS = 248
"""Palette indices: padding 0; dense-layer stripes 1 on 2; dead cells 3 (white) crossed by 4
(black); no-number stripes 5 on 6; levels 8..255."""

SEQUENTIAL_RULE = (
    "A cell with number v in a grid with range [lo, hi] (float64): a = (v - lo) / (hi - lo) "
    "clamped to [0, 1] (a = 0.5 when hi == lo); index = 8 + floor(247*a + 0.5). Other cells: "
    "a dense layer -> stripes of 1 on 2 where ((x + y) // 4) % 2 == 0 (x, y the pixel in its "
    "zoom level); a dead expert -> 3 (white), with a cross of 4 (black) along the diagonals of "
    "cells of at least 5 px; no number -> stripes of 5 on 6 where ((x - y) // 4) % 2 == 0; "
    "padding (no cell) -> 0. A cell covers cell x cell pixels at max zoom."
)
SEQUENTIAL_PARENT_RULE = (
    "A zoomed-out pixel from its 2x2 children: a dead child (3, 4) wins: 3; else the mean of "
    "the children's levels i - 8 (indices >= 8), rounded half up, + 8; else no number (5, 6) "
    "re-striped at the parent's pixel; else a dense layer (1, 2) re-striped; else padding."
)


def _stripe(x: np.ndarray, y: np.ndarray, back: bool) -> np.ndarray:
    out: np.ndarray = (((x - y) if back else (x + y)) // 4) % 2 == 0
    return out


_OKLAB_LMS = np.array([[1.0, 0.3963377774, 0.2158037573], [1.0, -0.1055613458, -0.0638541728],
                       [1.0, -0.0894841775, -1.2914855480]])
_LMS_RGB = np.array([[4.0767416621, -3.3077115913, 0.2309699292],
                     [-1.2684380046, 2.6097574011, -0.3413193965],
                     [-0.0041960863, -0.7034186147, 1.7076147010]])


def _linear_rgb(lum: np.ndarray, chroma: np.ndarray, hue: np.ndarray) -> np.ndarray:
    """OKLab (Ottosson 2020) L, C, h arrays -> linear sRGB [..., 3] (as color._oklab_to_srgb)."""
    lab = np.stack([lum, chroma * np.cos(hue), chroma * np.sin(hue)], axis=-1)
    out: np.ndarray = ((lab @ _OKLAB_LMS.T) ** 3) @ _LMS_RGB.T
    return out


def _max_chroma(lum: np.ndarray, hue: np.ndarray) -> np.ndarray:
    """The largest chroma in the sRGB gamut at each (L, h): bisection, as color._max_chroma,
    for arrays."""
    lo, hi = np.zeros(lum.shape), np.full(lum.shape, 0.4)
    for _ in range(40):
        mid = (lo + hi) / 2
        rgb = _linear_rgb(lum, mid, hue)
        ok = ((rgb >= -1e-6) & (rgb <= 1 + 1e-6)).all(axis=-1)
        lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
    return lo


def _srgb8(rgb: np.ndarray) -> np.ndarray:
    c = np.clip(rgb, 0.0, 1.0)
    enc = np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)
    out: np.ndarray = np.round(enc * 255).astype(np.uint8)
    return out


def _path(t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The palette's path at t in [0, 1]: (L, C, h) — lightness 0.22 -> 0.90, hue 290 -> 100
    degrees, chroma 0.125 capped at 90 % of the gamut's."""
    lum = 0.22 + 0.68 * t
    hue = math.radians(290.0) + (math.radians(100.0) - math.radians(290.0)) * t
    return lum, np.minimum(0.125, 0.9 * _max_chroma(lum, hue)), hue


@functools.lru_cache(maxsize=1)
def _sequential_palette() -> np.ndarray:
    pal = np.tile(value_palette()[S_PAD], (256, 1))
    pal[S_DENSE], pal[S_DENSE_GAP] = (150, 150, 160), (40, 40, 46)
    pal[S_DEAD], pal[S_DEAD_LINE] = (255, 255, 255), (0, 0, 0)
    pal[S_NONE], pal[S_NONE_GAP] = (112, 84, 84), (40, 40, 46)
    # the levels sit at equal OKLab arc length along the path (equal perceptual steps)
    t = np.linspace(0.0, 1.0, 1025)
    lum, chroma, hue = _path(t)
    lab = np.stack([lum, chroma * np.cos(hue), chroma * np.sin(hue)], axis=1)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(lab, axis=0), axis=1))])
    lum, chroma, hue = _path(np.interp(np.linspace(0.0, arc[-1], S_LEVELS), arc, t))
    pal[S_FIRST:S_FIRST + S_LEVELS] = _srgb8(_linear_rgb(lum, chroma, hue))
    pal.setflags(write=False)
    return pal


def sequential_palette() -> np.ndarray:
    """The (256, 3) uint8 sequential palette (a fresh copy)."""
    pal: np.ndarray = _sequential_palette().copy()
    return pal


def sequential_colormap() -> dict[str, Any]:
    return {
        "kind": "sequential", "palette": sequential_palette().tolist(),
        "padding_index": S_PAD, "dense_index": S_DENSE, "dense_gap_index": S_DENSE_GAP,
        "dead_index": S_DEAD, "dead_line_index": S_DEAD_LINE, "none_index": S_NONE,
        "none_gap_index": S_NONE_GAP, "first_index": S_FIRST, "levels": S_LEVELS,
        "rule": SEQUENTIAL_RULE, "parent_rule": SEQUENTIAL_PARENT_RULE,
    }


def sequential_index(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Palette indices of finite numbers ``v`` in the range [lo, hi] (SEQUENTIAL_RULE)."""
    v = np.asarray(v, np.float64)
    if hi > lo:
        a = np.clip((v - lo) / (hi - lo), 0.0, 1.0)
    else:
        a = np.full(v.shape, 0.5)
    out: np.ndarray = (S_FIRST + np.floor((S_LEVELS - 1) * a + 0.5)).astype(np.uint8)
    return out


class Grid(NamedTuple):
    """One heatmap or matrix: ``values`` float64 [rows, cols] (NaN where there is no number),
    ``marks`` uint8 [rows, cols] (MARK_*), the colour range and the cell size in pixels.
    ``cell_indices``: the cells' palette indices, when computed ahead (``compact``)."""

    name: str
    values: np.ndarray
    marks: np.ndarray
    lo: float
    hi: float
    cell: int
    cell_indices: np.ndarray | None = None

    @property
    def e_rows(self) -> int:
        return int(self.values.shape[0]) * self.cell

    @property
    def e_cols(self) -> int:
        return int(self.values.shape[1]) * self.cell

    def indices(self) -> np.ndarray:
        """uint8 [rows, cols]: each value cell's palette index; a mark's first index elsewhere
        (a value cell without a finite number has no number)."""
        if self.cell_indices is not None:
            return self.cell_indices
        marks = np.where((self.marks == MARK_VALUE) & ~np.isfinite(self.values), MARK_NONE,
                         self.marks)
        out = np.full(marks.shape, S_NONE, np.uint8)
        fin = marks == MARK_VALUE
        out[fin] = sequential_index(self.values[fin], self.lo, self.hi)
        out[marks == MARK_DENSE] = S_DENSE
        out[marks == MARK_DEAD] = S_DEAD
        return out

    def compact(self) -> Grid:
        """The same drawing from one byte per cell: ``cell_indices`` computed now, ``values`` and
        ``marks`` replaced by read-only placeholders of the grid's shape (NaN, MARK_NONE) that
        take no memory. For the similarity scene of a big model (DeepSeek-V3: 348 matrices of
        256 x 256, 182 MB as numbers, 23 MB as indices), whose numbers are in sidecar files."""
        idx = self.indices()
        return self._replace(values=np.broadcast_to(np.float64(np.nan), idx.shape),
                             marks=np.broadcast_to(np.uint8(MARK_NONE), idx.shape),
                             cell_indices=idx)


class GridSpec(NamedTuple):
    """How a worker opens the grids of a scene (picklable)."""

    grids: tuple[Grid, ...]

    def open(self) -> GridReader:
        return GridReader(self.grids)


class GridReader:
    """The grids of a scene as a reader of magnified tensors (no file behind it)."""

    format = "grid"

    def __init__(self, grids: tuple[Grid, ...]) -> None:
        self.by_name = {g.name: g for g in grids}
        self._indices: dict[str, np.ndarray] = {}

    def tensors(self) -> list[TensorInfo]:
        return [self.info(name) for name in self.by_name]

    def info(self, name: str) -> TensorInfo:
        g = self.by_name[name]
        return TensorInfo(name, (g.e_rows, g.e_cols), "F64", "")

    def grid(self, name: str) -> Grid:
        return self.by_name[name]

    def indices(self, name: str) -> np.ndarray:
        got = self._indices.get(name)
        if got is None:
            got = self._indices[name] = self.by_name[name].indices()
        return got

    def read(self, name: str, e_r0: int, e_r1: int, e_c0: int = 0,
             e_c1: int | None = None) -> np.ndarray:
        """The magnified view's numbers (float32; NaN where a cell has no number)."""
        g = self.by_name[name]
        if g.cell_indices is not None:
            raise ValueError(f"grid {name!r} is compact: it keeps its colours, not its numbers")
        c1 = g.e_cols if e_c1 is None else e_c1
        rows = np.arange(e_r0, e_r1) // g.cell
        cols = np.arange(e_c0, c1) // g.cell
        out: np.ndarray = g.values[np.ix_(rows, cols)].astype(np.float32)
        return out

    def read_codes(self, *args: Any) -> None:
        return None

    def release(self) -> None:
        pass

    def close(self) -> None:
        pass


class SequentialPainter(Painter):
    """Grid cells by SEQUENTIAL_RULE (each grid's own range); parents by
    SEQUENTIAL_PARENT_RULE. Grids are tiny, so this is numpy, not a compiled kernel."""

    colormap = "sequential"

    def palette(self) -> bytes:
        return palette_bytes(sequential_palette())

    def rect(self, w: TileWorker, tensor: str, e_r0: int, e_r1: int, e_c0: int, e_c1: int,
             dst: np.ndarray, c_x0: int, c_y0: int) -> None:
        reader: GridReader = w.reader
        cell = reader.grid(tensor).cell
        e_r = np.arange(e_r0, e_r1)
        e_c = np.arange(e_c0, e_c1)
        out = reader.indices(tensor)[np.ix_(e_r // cell, e_c // cell)]  # (a new array)
        y = (c_y0 + np.arange(e_r1 - e_r0))[:, None]
        x = (c_x0 + np.arange(e_c1 - e_c0))[None, :]
        # (each pattern only where its cells are: most tiles hold numbers only)
        dense = out == S_DENSE
        if dense.any():
            out[dense & ~_stripe(x, y, False)] = S_DENSE_GAP
        none = out == S_NONE
        if none.any():
            out[none & ~_stripe(x, y, True)] = S_NONE_GAP
        dead = out == S_DEAD
        if cell >= 5 and dead.any():  # a cross along the diagonals of a dead cell
            ry, rx = (e_r % cell)[:, None], (e_c % cell)[None, :]
            out[dead & ((ry == rx) | (ry == cell - 1 - rx))] = S_DEAD_LINE
        dst[:] = out

    def reduce(self, kid: np.ndarray, p_x0: int, p_y0: int, out: np.ndarray,
               at: tuple[int, int]) -> None:
        h, wd = kid.shape[0] // 2, kid.shape[1] // 2
        k = np.stack([kid[0::2, 0::2], kid[0::2, 1::2], kid[1::2, 0::2], kid[1::2, 1::2]])
        is_level = k >= S_FIRST
        n = is_level.sum(axis=0, dtype=np.int16)
        # (int16: at most 2 * 4 * 247 + 4)
        total = np.where(is_level, k.astype(np.int16) - S_FIRST, 0).sum(axis=0, dtype=np.int16)
        y = (p_y0 + np.arange(h))[:, None]
        x = (p_x0 + np.arange(wd))[None, :]
        res = np.full((h, wd), S_PAD, np.uint8)
        dense = ((k == S_DENSE) | (k == S_DENSE_GAP)).any(axis=0)
        if dense.any():
            res[dense] = np.where(_stripe(x, y, False), S_DENSE, S_DENSE_GAP)[dense]
        none = ((k == S_NONE) | (k == S_NONE_GAP)).any(axis=0)
        if none.any():
            res[none] = np.where(_stripe(x, y, True), S_NONE, S_NONE_GAP)[none]
        val = n > 0
        # mean rounded half up, in integers: floor((2*total + n) / (2*n))
        res[val] = (S_FIRST + (2 * total[val] + n[val]) // (2 * n[val])).astype(np.uint8)
        dead = ((k == S_DEAD) | (k == S_DEAD_LINE)).any(axis=0)
        res[dead] = S_DEAD
        oy, ox = at
        out[oy:oy + h, ox:ox + wd] = res
