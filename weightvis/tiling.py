"""Tile geometry and the description of a scene's tile job: what the pipeline decides before
any tile is drawn. Imports no compiled kernel, so a render can start its helper processes
before it loads them (see values.start_scale_helper)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Container
from typing import Any, NamedTuple

from .formats import MultiReader, open_checkpoint
from .types import TILE_SIZE, SceneLayout, TileAddress
from .values import SharedScales

__all__ = ["Geometry", "CheckpointSpec", "SceneJob", "TASKS_PER_WORKER"]

TASKS_PER_WORKER = 8
"""Subtrees per worker, handed out biggest first (the levels above them are reduced in the
calling process as they arrive)."""


class Geometry:
    """Tile grid of one scene, computed once: zoom range, which tiles hold content, and which
    placements each leaf tile intersects."""

    def __init__(self, layout: SceneLayout, tile: int = TILE_SIZE) -> None:
        self.layout = layout
        self.tile = tile
        self.max_zoom = max(0, math.ceil(math.log2(max(layout.c_width, layout.c_height) / tile)))
        self.leaf_placements: dict[tuple[int, int], list[int]] = defaultdict(list)
        if layout.layout != "hilbert":  # placements: "arch", MoE "panels"
            at = self.leaf_placements
            # (45k placements: the fields unpacked, not read by property; one tile, one append)
            for i, (_n, c_x, c_y, e_r0, e_r1, e_c0, e_c1, _l) in enumerate(layout.placements):
                y0, y1 = c_y // tile, (c_y + e_r1 - e_r0 - 1) // tile
                x0, x1 = c_x // tile, (c_x + e_c1 - e_c0 - 1) // tile
                if y0 == y1 and x0 == x1:
                    at[(x0, y0)].append(i)
                    continue
                for t_y in range(y0, y1 + 1):
                    for t_x in range(x0, x1 + 1):
                        at[(t_x, t_y)].append(i)
            leaves = set(at)
        else:
            from .kernels import hilbert_d2xy  # compiled: only Hilbert layouts load it here

            total = sum(s.length for s in layout.segments)
            n = 1 << (layout.curve_order or 0)
            leaves = set()
            for h in range(0, total, tile * tile):
                c_x, c_y = hilbert_d2xy(n, h)
                leaves.add((c_x // tile, c_y // tile))
        self.occupied: list[set[tuple[int, int]]] = [set() for _ in range(self.max_zoom + 1)]
        self.occupied[self.max_zoom] = leaves
        for z in range(self.max_zoom, 0, -1):
            self.occupied[z - 1] = {(x // 2, y // 2) for x, y in self.occupied[z]}

    def grid(self, z: int) -> tuple[int, int]:
        """Number of tile columns and rows at zoom z."""
        f = 2 ** (self.max_zoom - z) * self.tile
        return (math.ceil(self.layout.c_width / f), math.ceil(self.layout.c_height / f))

    def count(self) -> int:
        return sum(len(o) for o in self.occupied)

    def split_zoom(self, tasks_wanted: int) -> int:
        for z in range(self.max_zoom + 1):
            if len(self.occupied[z]) >= tasks_wanted:
                return z
        return self.max_zoom

    def subtree_roots(self, workers: int) -> tuple[int, list[TileAddress]]:
        """The split zoom and the roots of the subtrees the tile workers take, biggest first
        (so the last tasks are small and no worker is left alone with a big one at the end).
        One worker splits too: a subtree is also what a resumed run does not render again."""
        split = self.split_zoom(TASKS_PER_WORKER * max(1, workers))
        f = 2 ** (self.max_zoom - split)
        size = Counter((x // f, y // f) for x, y in self.occupied[self.max_zoom])
        roots = sorted(self.occupied[split], key=lambda a: (-size[a], a[1], a[0]))
        return split, [TileAddress(split, x, y) for x, y in roots]


class CheckpointSpec(NamedTuple):
    """How a worker opens the checkpoint it draws (picklable; every worker opens its own)."""

    sources: tuple[str, ...]

    def open(self) -> MultiReader:
        return open_checkpoint(self.sources)


class SceneJob(NamedTuple):
    """Everything a worker needs to render a scene's tiles (picklable, explicit: a task needs no
    state of the process that made it)."""

    spec: Any
    """Has ``open() -> Reader`` (CheckpointSpec, or diff.DiffSpec for pair and side scenes)."""
    key: str
    geometry: Geometry
    scales: dict[str, float]
    """Colour scale per tensor; a values scene may leave tensors out: a worker then computes
    the per-tensor scale itself (values.tensor_scale: deterministic, the manifest's value)."""
    sink: Any
    """store.TileSink: where tiles are written."""
    tile_format: str
    painter: Any
    """painters.Painter: turns data into palette indices and reduces parents."""
    shared: SharedScales | None = None
    """Scales a helper process is computing meanwhile (values.start_scale_helper); a worker
    uses those already written and computes the others itself."""
    prefetch: tuple[str, ...] = ()
    """Tensors whose scales an executor may compute ahead in a helper process (those the job's
    ``scales`` leave out, when the painter needs them)."""
    sidecars: str = "none"
    """What the max-zoom tiles' sidecar scripts hold (sidecars.py): ``none`` (no sidecars),
    ``index`` (palette indices), ``values`` (indices and element values)."""
    png_deflate: str = "rle"
    """options.PngDeflate: how PNG tiles and sidecars are compressed."""

    @property
    def writes_sidecars(self) -> bool:
        return self.sidecars != "none"

    @property
    def keeps_values(self) -> bool:
        """The painters keep each leaf's element values for its sidecar."""
        return self.sidecars == "values"

    def drawing_order(self, workers: int, leave_out: Container[str] = frozenset()) -> list[str]:
        """``prefetch`` about in the order the tile workers first draw them: by the subtree
        (in the order they are handed out) holding a tensor's first pixel, then by position
        (along the curve for a Hilbert layout); without the names in ``leave_out`` (the
        same order for the others: 45k tiny tensors a helper has are not ordered first)."""
        geo, lay = self.geometry, self.geometry.layout
        split, roots = geo.subtree_roots(workers)
        f = geo.tile << (geo.max_zoom - split)
        rank = {(a.t_x, a.t_y): i for i, a in enumerate(roots)}
        first: dict[str, tuple[int, ...]] = {}
        if lay.layout == "hilbert":
            first = {sg.name: (sg.h_start,) for sg in lay.segments}
        else:
            for p in lay.placements:
                if p.tensor in leave_out:
                    continue
                k = (rank.get((p.c_x // f, p.c_y // f), len(rank)), p.c_y, p.c_x)
                if p.tensor not in first or k < first[p.tensor]:
                    first[p.tensor] = k
        last = (1 << 62,) * 4
        return sorted((n for n in self.prefetch if n not in leave_out),
                      key=lambda n: first.get(n, last))
