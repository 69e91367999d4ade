"""Packed tiles: a scene's tile files concatenated into a few archive shards that a browser reads
with HTTP ``Range`` requests (the idea of PMTiles, protomaps/PMTiles: one file, a directory, tiles
fetched by byte range; this format is simpler because the manifest's tile bitmaps already say
which tiles exist). For bundles over the Hub's file limits (< 100k files per repo): a 70B model's
~360k tiles become ~20 files. Browsers cannot ``fetch()`` from ``file://``, so packing is done
when publishing; a local bundle stays loose files.

A shard file (little-endian)::

    "WVPACK01"  u32 count  u32 0                 16 bytes
    count x (u32 z, u32 t_x, u32 t_y, u32 length)  the directory, 16 bytes per tile
    the tiles' bytes, in directory order           tile i starts at 16 + 16*count + sum(length[:i])

The scene's manifest entry gains ``pack``::

    {"format": "weightvis-pack-1", "split_zoom": s,
     "shards": [{"file": "tiles/<key>/pack-000.wvpack", "first": null | [t_x, t_y],
                 "tiles": n, "directory_bytes": 16 + 16 n, "bytes": size}, ...]}

Tiles of zoom < s are in the shard whose ``first`` is null (there is one when s > 0). A tile of
zoom z >= s belongs to its ancestor at zoom s, ``(t_x >> (z - s), t_y >> (z - s))``; ancestors
are ordered row-major (key = t_y * cols_s + t_x, cols_s from the scene's ``tile_index`` at zoom s)
and each other shard holds the ancestors from its ``first`` up to the next shard's. s is the
smallest zoom whose subtrees each fit in ``shard_bytes``. numpy-free.
"""

from __future__ import annotations

import base64
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import BundleError

__all__ = ["PACK_FORMAT", "MAGIC", "Tile", "present_tiles", "plan_pack", "write_pack",
           "read_pack_directory"]

PACK_FORMAT = "weightvis-pack-1"
MAGIC = b"WVPACK01"
_HEAD = struct.Struct("<8sII")
_ENTRY = struct.Struct("<IIII")


class Tile(NamedTuple):
    """A tile file of a bundle: zoom, tile column and row, size in bytes."""

    z: int
    t_x: int
    t_y: int
    nbytes: int


def present_tiles(bundle: Path, scene: dict[str, Any]) -> Iterator[Tile]:
    """The tiles a scene's ``tile_index`` lists, with their file sizes (a listed tile whose file
    is missing is a broken bundle)."""
    template = str(scene["tiles"])
    for level in scene["tile_index"]:
        z, cols, rows = int(level["z"]), int(level["cols"]), int(level["rows"])
        bits = base64.b64decode(level["bitmap"])
        for i in range(cols * rows):
            if (bits[i >> 3] >> (i & 7)) & 1:
                t_x, t_y = i % cols, i // cols
                path = bundle / template.format(z=z, x=t_x, y=t_y)
                try:
                    size = path.stat().st_size
                except OSError:
                    raise BundleError(f"{path}: listed in the tile index of scene "
                                      f"{scene['key']!r} but missing") from None
                yield Tile(z, t_x, t_y, size)


class ShardPlan(NamedTuple):
    first: tuple[int, int] | None
    tiles: list[Tile]


def plan_pack(tiles: list[Tile], scene: dict[str, Any], shard_bytes: int
              ) -> tuple[int, list[ShardPlan]]:
    """The split zoom and the shards (see the module's doc)."""
    max_zoom = int(scene["max_zoom"])
    cols = {int(lv["z"]): int(lv["cols"]) for lv in scene["tile_index"]}
    total = sum(t.nbytes for t in tiles)
    split = max_zoom
    if total <= shard_bytes:
        split = 0
    else:
        for s in range(1, max_zoom + 1):
            top = sum(t.nbytes for t in tiles if t.z < s)
            if top > shard_bytes:
                continue
            sub: dict[tuple[int, int], int] = {}
            for t in tiles:
                if t.z >= s:
                    k = (t.t_x >> (t.z - s), t.t_y >> (t.z - s))
                    sub[k] = sub.get(k, 0) + t.nbytes
            if max(sub.values(), default=0) <= shard_bytes:
                split = s
                break
    by_root: dict[tuple[int, int], list[Tile]] = {}
    top_tiles = []
    for t in tiles:
        if t.z < split:
            top_tiles.append(t)
        else:
            k = (t.t_x >> (t.z - split), t.t_y >> (t.z - split))
            by_root.setdefault(k, []).append(t)
    shards = [ShardPlan(None, top_tiles)] if top_tiles else []
    current: ShardPlan | None = None
    size = 0
    for root in sorted(by_root, key=lambda r: r[1] * cols[split] + r[0]):
        grown = sum(t.nbytes for t in by_root[root])
        if current is None or size + grown > shard_bytes:
            current = ShardPlan(root, [])
            shards.append(current)
            size = 0
        current.tiles.extend(by_root[root])
        size += grown
    for sh in shards:
        sh.tiles.sort(key=lambda t: (t.z, t.t_y, t.t_x))
    return split, shards


def write_pack(bundle: Path, scene: dict[str, Any], out: Path, shard_bytes: int
               ) -> dict[str, Any]:
    """Write the scene's tiles from ``bundle`` as shards under ``out`` (the staged bundle);
    returns the scene's ``pack`` entry."""
    key = str(scene["key"])
    template = str(scene["tiles"])
    split, shards = plan_pack(list(present_tiles(bundle, scene)), scene, shard_bytes)
    entries = []
    folder = out / "tiles" / key
    folder.mkdir(parents=True, exist_ok=True)
    for i, sh in enumerate(shards):
        rel = f"tiles/{key}/pack-{i:03d}.wvpack"
        tmp = out / f"{rel}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(_HEAD.pack(MAGIC, len(sh.tiles), 0))
            for t in sh.tiles:
                fh.write(_ENTRY.pack(t.z, t.t_x, t.t_y, t.nbytes))
            for t in sh.tiles:
                data = (bundle / template.format(z=t.z, x=t.t_x, y=t.t_y)).read_bytes()
                if len(data) != t.nbytes:
                    raise BundleError(f"{bundle}: tile {t.z}/{t.t_x}/{t.t_y} of scene {key!r} "
                                      "changed while it was packed")
                fh.write(data)
        os.replace(tmp, out / rel)
        entries.append({"file": rel, "first": None if sh.first is None else list(sh.first),
                        "tiles": len(sh.tiles), "directory_bytes": _HEAD.size +
                        _ENTRY.size * len(sh.tiles), "bytes": (out / rel).stat().st_size})
    return {"format": PACK_FORMAT, "split_zoom": split, "shards": entries}


def read_pack_directory(data: bytes) -> dict[tuple[int, int, int], tuple[int, int]]:
    """(z, t_x, t_y) -> (offset, length) from a shard's first bytes (tests and tools)."""
    magic, count, _ = _HEAD.unpack_from(data, 0)
    if magic != MAGIC:
        raise ValueError(f"not a weightvis pack (magic {magic!r})")
    out = {}
    offset = _HEAD.size + _ENTRY.size * count
    for i in range(count):
        z, t_x, t_y, n = _ENTRY.unpack_from(data, _HEAD.size + _ENTRY.size * i)
        out[(z, t_x, t_y)] = (offset, n)
        offset += n
    return out
