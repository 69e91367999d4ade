"""Resuming a killed render: each finished tile subtree's result is kept in the staging folder,
and a run with the same fingerprint loads those results instead of rendering them again.

A subtree's result (pyramid.SubtreeResult: its root tile, its per-leaf statistics
accumulators, flags, listed elements, scales, counts) is written by the main process after
the worker wrote the subtree's tiles, as one ``.npz`` file renamed into place: a record
exists only for a subtree whose tiles are all written. The files are data, read back with
``allow_pickle=False``: the JSON part (names, counts, scales) is a UTF-8 byte array, every
other part a plain array. The root tile's palette indices are read back from its PNG (they
are its pixels; 256 kB a subtree not kept twice).
A record is trusted only if its subtree's tile files are all there with the sizes it
recorded; anything else (a torn or foreign file, a missing tile) is rendered again.

Records are only ever read from a staging folder whose fingerprint (outdir.fingerprint: the
weightvis version, the options, the input files) is the run's own.

The levels above the subtrees and the manifest are cheap and are always made again.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .pyramid import PackedAccs, SubtreeResult, WorkerResult
from .store import writing
from .tiling import SceneJob
from .types import TileAddress

__all__ = ["SubtreeRecords", "RECORD_VERSION"]

RECORD_VERSION = 1


class SubtreeRecords:
    """The kept results of one scene's subtrees, in ``folder`` (one file per subtree root)."""

    def __init__(self, folder: Path, job: SceneJob, out: object) -> None:
        self.folder = folder
        self.job = job
        self.out = out
        """The bundle's final place, named in error messages."""
        with writing(out, "the resume records"):
            folder.mkdir(parents=True, exist_ok=True)

    def _path(self, a: TileAddress) -> Path:
        return self.folder / f"{a.z}-{a.t_x}-{a.t_y}.npz"

    def keep(self, sub: SubtreeResult) -> None:
        """Write ``sub``'s record (its tiles are written): under a temporary name, renamed."""
        r = sub.result
        meta = {"version": RECORD_VERSION, "root": list(sub.root), "leaves": sub.leaves,
                "tiles_written": r.tiles_written, "bytes_written": r.bytes_written,
                "acc_keys": [list(k) for k in r.accs.keys], "flags": list(r.flags),
                "elems": list(r.elems), "scales": r.scales,
                "tile": None if sub.tile is None else "png"}
        arrays: dict[str, Any] = {
            "meta": np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8),
            "acc_rows": r.accs.rows}
        for i, (rows, cols) in enumerate(r.flags.values()):
            arrays[f"flag_rows_{i}"], arrays[f"flag_cols_{i}"] = rows, cols
        for i, e in enumerate(r.elems.values()):
            arrays[f"elems_{i}"] = e
        path = self._path(sub.root)
        tmp = path.with_name(f".{path.name}.tmp")
        with writing(self.out, "the resume records"):
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, path)

    def load(self, roots: Sequence[TileAddress]) -> dict[TileAddress, SubtreeResult]:
        """The kept results among ``roots`` whose tiles are all on disk as recorded."""
        found = {}
        for a in roots:
            if self._path(a).is_file():
                sub = self._read(a)
                if sub is not None:
                    found[a] = sub
        sizes = self._tile_sizes(found)
        return {a: s for a, s in found.items() if sizes.get(a) == s.result.bytes_written}

    def _read(self, a: TileAddress) -> SubtreeResult | None:
        t = self.job.geometry.tile
        try:
            with np.load(self._path(a), allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode("utf-8"))
                if meta["version"] != RECORD_VERSION or meta["root"] != list(a):
                    return None
                tile = self._png_tile(a) if meta["tile"] == "png" else None
                if (tile is None) != (meta["tile"] is None):
                    return None
                if tile is not None and (tile.shape != (t, t) or tile.dtype != np.uint8):
                    return None
                keys = [(str(n), int(y), int(x)) for n, y, x in meta["acc_keys"]]
                rows = z["acc_rows"]
                if len(keys) != (len(rows) if keys else 0):
                    return None
                flags = {n: (z[f"flag_rows_{i}"], z[f"flag_cols_{i}"])
                         for i, n in enumerate(meta["flags"])}
                elems = {n: z[f"elems_{i}"] for i, n in enumerate(meta["elems"])}
                scales = {str(n): float(v) for n, v in meta["scales"].items()}
                res = WorkerResult(PackedAccs(keys, rows), int(meta["tiles_written"]),
                                   int(meta["bytes_written"]), flags, elems, scales)
                return SubtreeResult(a, tile, res, int(meta["leaves"]))
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
            return None  # torn or not ours: rendered again

    def _png_tile(self, a: TileAddress) -> np.ndarray | None:
        """The palette indices of tile ``a`` as written (None if it is not a palette PNG)."""
        from PIL import Image

        job = self.job
        path = os.path.join(job.sink.tile_dir(job.key, a.z, a.t_x), f"{a.t_y}.png")
        try:
            with Image.open(path) as img:
                if img.format != "PNG" or img.mode != "P":
                    return None
                tile: np.ndarray = np.array(img, np.uint8)
                return tile
        except (OSError, SyntaxError, ValueError):
            return None

    def _tile_sizes(self, subs: Mapping[TileAddress, SubtreeResult]) -> dict[TileAddress, int]:
        """Total size of the tile files (and max-zoom sidecars) on disk under each root (-1
        where one is missing)."""
        if not subs:
            return {}
        geo, job = self.job.geometry, self.job
        split = next(iter(subs)).z
        sizes: dict[TileAddress, int] = defaultdict(int)
        for z in range(split, geo.max_zoom + 1):
            s = z - split
            for t_x, t_y in geo.occupied[z]:
                a = TileAddress(split, t_x >> s, t_y >> s)
                if a not in subs or sizes[a] < 0:
                    continue
                d = job.sink.tile_dir(job.key, z, t_x)
                names = [f"{t_y}.{job.tile_format}"]
                if z == geo.max_zoom and job.writes_sidecars:  # counted in bytes_written too
                    from .sidecars import SIDECAR_EXT

                    names.append(f"{t_y}.{SIDECAR_EXT}")
                try:
                    sizes[a] += sum(os.stat(os.path.join(d, n)).st_size for n in names)
                except OSError:
                    sizes[a] = -1
        return sizes
