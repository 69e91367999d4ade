"""The bundle's size before any tile is drawn, and the free space it needs.

``estimate_bytes(plan)`` predicts a bundle's size from its scenes' layouts alone (no weights):
tiles hold palette indices, so a tile costs about a fixed number of bytes per pixel a tensor
covers (padding compresses to nearly nothing), and the levels above max zoom cover a quarter of
the pixels per level. The factors (``SizeModel``) were measured on rendered bundles
(benchmarks/disk_estimate.py: synthetic noise-like checkpoints, which compress least, and real
ones, which compress better), so the estimate is an upper bound for most checkpoints;
the README ("Disk") gives its error on each. A diff's delta of unchanged tensors compresses
to almost nothing, which the layout can't know: for a diff the estimate is an upper bound
(1.2-2.7x on pairs with half the tensors changed, tests/test_disk.py).

``check_space(where, needed, reclaimable)`` refuses a render whose destination's filesystem
can't hold it, before the first tile (``--no-space-check`` skips it).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from .errors import OutputError
from .types import SceneLayout

if TYPE_CHECKING:
    from .scenes import Plan

__all__ = ["SizeModel", "SIZE_MODEL", "estimate_bytes", "check_space", "folder_bytes",
           "human_bytes"]


class SizeModel(NamedTuple):
    """Bytes of a bundle per unit of its layout (measured: benchmarks/disk_estimate.py)."""

    leaf_px: float
    """PNG bytes per covered pixel of a max-zoom tile."""
    upper_px: float
    """PNG bytes per covered pixel of a tile above max zoom."""
    tile: float
    """Bytes per tile whatever it covers (PNG chunks, palette, file-system rounding aside)."""
    index_ratio: float
    """A sidecar's index: bytes per byte of its leaf tile (base64 of the same deflate stream)."""
    value_byte: float
    """A values sidecar: bytes per byte of stored values (deflate, then base64)."""
    tensor: float
    """manifest.json, index.html (which inlines it) per tensor."""
    fixed: float
    """The viewer's assets and the rest of the page."""


SIZE_MODEL = SizeModel(leaf_px=0.96, upper_px=0.85, tile=200.0, index_ratio=1.34,
                       value_byte=1.12, tensor=1500.0, fixed=300_000.0)
"""Measured on bundles of all-MiniLM-L6-v2 (f32 safetensors, values sidecars), SmolLM2-135M
(Q4_1 GGUF) and synthetic Llamas (bf16), benchmarks/disk_estimate.py: a max-zoom tile of
weights compresses to 0.94-0.96 bytes per pixel, one above it (reduced, smoother) to ~0.8;
a sidecar's index is the tile's deflate stream in base64 (4/3); values of f32 weights deflate
to ~0.84 of their bytes, times 4/3; the manifest (inlined again in index.html) takes 1.2-1.8 kB
per tensor; the viewer's assets ~270 kB."""


def _sizes(lay: SceneLayout) -> tuple[np.ndarray, np.ndarray]:
    """int64 widths and heights (canvas pixels) of the placements, made once per scene (45k
    placements: ~0.01 s a pass)."""
    n = len(lay.placements)
    return (np.fromiter((p.c_w for p in lay.placements), np.int64, n),
            np.fromiter((p.c_h for p in lay.placements), np.int64, n))


def _covered(lay: SceneLayout, zoom_out: int, sizes: tuple[np.ndarray, np.ndarray]) -> int:
    """Pixels the tensors cover ``zoom_out`` levels above max zoom (``sizes``: ``_sizes``)."""
    f = 1 << zoom_out
    if lay.layout == "hilbert":
        total = sum(s.length for s in lay.segments)
        return -(-total // (f * f))
    if not lay.placements:
        return 0
    w, h = sizes
    return int(((-(-w // f)) * (-(-h // f))).sum())


def estimate_bytes(plan: Plan, model: SizeModel = SIZE_MODEL) -> int:
    """The bundle's expected size in bytes (module docstring)."""
    from .options import value_width

    total = model.fixed
    tensors: set[str] = set()
    # (an MoE-only plan has no reader: its panels hold numbers, 4 bytes each)
    widths = ({t.name: value_width(t.dtype) for t in plan.reader.tensors()}
              if plan.reader is not None else {})
    for scene in plan.scenes:
        geo = scene.geometry
        lay = geo.layout
        names = [p.tensor for p in lay.placements]
        tensors.update(names)
        sizes = _sizes(lay)
        leaf_bytes = (model.leaf_px * _covered(lay, 0, sizes)
                      + model.tile * len(geo.occupied[-1]))
        total += leaf_bytes
        for d in range(1, geo.max_zoom + 1):
            total += (model.upper_px * _covered(lay, d, sizes)
                      + model.tile * len(geo.occupied[geo.max_zoom - d]))
        if scene.sidecars != "none":
            total += model.index_ratio * leaf_bytes
        if scene.sidecars == "values":
            sides = 2 if scene.key == "delta" else 1
            w, h = sizes
            width = np.fromiter((widths.get(n, 4) for n in names), np.int64, len(names))
            stored = int((w * h * width).sum())
            total += model.value_byte * stored * sides
    total += model.tensor * len(tensors)
    return int(total)


def folder_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (0 if missing)."""
    n = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                n += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                continue
    return n


def human_bytes(n: float) -> str:
    """``1.3 GB``-style (powers of 1000, as disk sizes are sold and df -H shows them)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


FreeSpace = Callable[[str], int]


def _free(path: str) -> int:
    return shutil.disk_usage(path).free


def check_space(where: Path, needed: int, shown: object, *, reclaimable: int = 0,
                free: FreeSpace | None = None) -> int:
    """Raise OutputError unless the filesystem of ``where`` (a folder that exists) has room
    for ``needed`` bytes, counting ``reclaimable`` bytes already there that the run reuses or
    removes (a killed run's staging folder). Returns the free bytes. ``free(path)``: the
    free bytes of the filesystem of ``path`` (default: ``shutil.disk_usage``)."""
    have = (free or _free)(os.fspath(where))
    if have + reclaimable < needed:
        raise OutputError(
            f"{shown}: the bundle needs about {human_bytes(needed)} and {where} has "
            f"{human_bytes(have + reclaimable)} free; free some space, choose another --out, "
            "or pass --no-space-check to try anyway")
    return have
