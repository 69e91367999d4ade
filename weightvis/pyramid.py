"""Tile pyramid: grid geometry, leaves rendered from the data, parents from their four children.

Work is split into subtrees rooted at a *split zoom*; each subtree is rendered depth-first by one
worker (leaves from memory-mapped data, each parent reduced from its children as soon as they
exist), so memory is bounded by a few tiles per level per worker, not by the model. The levels
above the split zoom are reduced in the calling process from the subtree roots.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

from . import color, kernels
from .encode import encode_tile_parts, write_parts
from .formats import MultiReader
from .formats.dtypes import code_values
from .png import warm_up as png_warm_up
from .tiling import CheckpointSpec, Geometry, SceneJob
from .types import TileAddress
from .values import tensor_scale

__all__ = ["Geometry", "SceneJob", "CheckpointSpec", "render_scene", "SceneResult"]

ProgressFn = Callable[[int], None]
RELEASE_EVERY = 16
"""Leaves between drops of the mapped pages they read (each leaf reads at most a few MB)."""


class SceneResult(NamedTuple):
    accs: dict[str, np.ndarray]
    """Per-tensor statistics accumulators (delta accumulators in delta scenes)."""
    tiles_written: int
    bytes_written: int
    flags: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    """delta scenes: per pair, changed rows and changed columns of the overlap."""
    elements: dict[str, np.ndarray] = {}
    """delta scenes: per pair, changed elements (row, col, a, b), sorted, when few."""
    scales: dict[str, float] = {}
    """Per-tensor scales the workers computed (tensors the job's ``scales`` left out)."""


LeafAccs = dict[tuple[str, int, int], np.ndarray]


class WorkerResult(NamedTuple):
    accs: LeafAccs
    tiles_written: int
    bytes_written: int
    flags: dict[str, tuple[np.ndarray, np.ndarray]]
    elems: dict[str, np.ndarray]
    scales: dict[str, float]
"""(tensor, leaf t_y, leaf t_x) -> accumulator of the tensor's elements in that leaf."""


def merge_leaf_accs(parts: LeafAccs, delta: bool = False) -> dict[str, np.ndarray]:
    """Merge per-leaf accumulators in one canonical order, so that the statistics are the same
    bit for bit whatever the number of workers and the order in which they finish."""
    merge = kernels.merge_delta_acc if delta else kernels.merge_acc
    out: dict[str, np.ndarray] = {}
    for key in sorted(parts):
        name = key[0]
        if name in out:
            merge(out[name], parts[key])
        else:
            out[name] = parts[key].copy()
    return out


class _Worker:
    """Renders subtrees of one scene; one instance per process."""

    def __init__(self, job: SceneJob, reader: MultiReader | None = None) -> None:
        self.job = job
        self.geo = job.geometry
        self.t = job.geometry.tile
        self.reader: Any = reader if reader is not None else job.spec.open()
        self.ext = job.tile_format
        if job.mode == "bytes":
            self.palette = color.palette_bytes(color.byte_palette())
            self.reduce_mode = kernels.REDUCE_FIRST
            self.file_bytes = {p.name: p for p in self.reader.files}
        elif job.mode == "delta":
            self.palette = color.palette_bytes(color.delta_palette(job.params["palette"]))
            self.reduce_mode = -1
            kernels.warm_up_delta()
        else:
            self.palette = color.palette_bytes(color.value_palette())
            self.reduce_mode = kernels.REDUCE_SIGNED_RMS
        self.made_dirs: set[str] = set()
        self.spare: list[np.ndarray] = []
        self.own_scales: dict[str, float] = {}
        self.new_scales: dict[str, float] = {}
        self.luts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.value_tables: dict[str, np.ndarray] = {}
        self.hist = np.zeros(1 << 16, np.int32)
        self.since_release = 0
        self.accs: LeafAccs = {}
        self.flags: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.elems: dict[str, list[np.ndarray]] = {}
        self.leaf_at: tuple[int, int] = (0, 0)
        self.leaves = 0
        self.tiles_written = 0
        self.bytes_written = 0
        lay = self.geo.layout
        if lay.layout == "hilbert":
            self.n = 1 << (lay.curve_order or 0)
            self.seg_starts = np.array([s.h_start for s in lay.segments], np.int64)
            self.offsets = np.zeros((self.t, self.t), np.int64)

    # -- output ------------------------------------------------------------------------------
    def write(self, a: TileAddress, idx: np.ndarray) -> None:
        d = os.path.join(self.job.out_dir, "tiles", self.job.key, str(a.z), str(a.t_x))
        if d not in self.made_dirs:
            os.makedirs(d, exist_ok=True)
            self.made_dirs.add(d)
        # the bundle is staged in a temporary folder moved into place when complete
        # (bundle._staged), so a tile needs no rename of its own
        n = write_parts(os.path.join(d, f"{a.t_y}.{self.ext}"),
                        encode_tile_parts(idx, self.palette, self.ext))
        self.tiles_written += 1
        self.bytes_written += n

    def acc(self, name: str) -> np.ndarray:
        key = (name, self.leaf_at[1], self.leaf_at[0])
        a = self.accs.get(key)
        if a is None:
            a = self.accs[key] = (kernels.new_delta_acc() if self.job.mode == "delta"
                                  else kernels.new_acc())
        return a

    # -- leaves ------------------------------------------------------------------------------
    def leaf(self, t_x: int, t_y: int) -> np.ndarray | None:
        if (t_x, t_y) not in self.geo.occupied[self.geo.max_zoom]:
            return None
        self.leaf_at = (t_x, t_y)
        if self.job.mode == "delta":
            out = self._leaf_delta(t_x, t_y)
        elif self.geo.layout.layout == "arch":
            out = self._leaf_arch(t_x, t_y)
        else:
            out = self._leaf_hilbert(t_x, t_y)
        self.leaves += 1
        self.since_release += 1
        if self.since_release >= RELEASE_EVERY:
            self.reader.release()
            self.since_release = 0
        return out

    def _leaf_arch(self, t_x: int, t_y: int) -> np.ndarray:
        t = self.t
        out = self.buffer()
        out.fill(color.PAD)
        c_x0, c_y0 = t_x * t, t_y * t
        placements = self.geo.layout.placements
        for i in self.geo.leaf_placements[(t_x, t_y)]:
            p = placements[i]
            x0, x1 = max(p.c_x, c_x0), min(p.c_x + p.c_w, c_x0 + t)
            y0, y1 = max(p.c_y, c_y0), min(p.c_y + p.c_h, c_y0 + t)
            block = (p.tensor, p.e_r0 + (y0 - p.c_y), p.e_r0 + (y1 - p.c_y),
                     p.e_c0 + (x0 - p.c_x), p.e_c0 + (x1 - p.c_x))
            dst = out[y0 - c_y0:y1 - c_y0, x0 - c_x0:x1 - c_x0]
            self.scale(p.tensor)  # first: computing it reads a sample and releases pages
            codes = self.reader.read_codes(*block)
            if codes is not None:  # 16-bit fast path: a LUT, stats from a code histogram
                lut, values = self.code_lut(p.tensor)
                kernels.colorize_codes(codes, lut, values, dst, self.acc(p.tensor), self.hist)
            else:
                kernels.colorize(self.reader.read(*block), self.scale(p.tensor), dst,
                                 self.acc(p.tensor))
        return out

    def code_lut(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(palette index, value) of every 16-bit code of a BF16/F16 tensor, built once."""
        got = self.luts.get(name)
        if got is None:
            values = self.code_values(self.reader.info(name).dtype)
            got = self.luts[name] = (kernels.code_lut(values, self.scale(name)), values)
        return got

    def scale(self, name: str) -> float:
        s = self.job.scales.get(name)
        if s is None:
            s = self.own_scales.get(name)
        if s is None:
            s = self.job.shared.get(name) if self.job.shared is not None else None
            if s is None:
                s = self.new_scales[name] = tensor_scale(self.reader, name)
            self.own_scales[name] = s
        return s

    def code_values(self, dtype: str) -> np.ndarray:
        v = self.value_tables.get(dtype)
        if v is None:
            v = self.value_tables[dtype] = code_values(dtype)
        return v

    def _leaf_delta(self, t_x: int, t_y: int) -> np.ndarray:
        t = self.t
        out = self.buffer()
        out.fill(color.PAD)
        c_x0, c_y0 = t_x * t, t_y * t
        prm = self.job.params
        for i in self.geo.leaf_placements[(t_x, t_y)]:
            p = self.geo.layout.placements[i]
            pair = self.reader.pair(p.tensor)
            x0, x1 = max(p.c_x, c_x0), min(p.c_x + p.c_w, c_x0 + t)
            y0, y1 = max(p.c_y, c_y0), min(p.c_y + p.c_h, c_y0 + t)
            r0, r1 = p.e_r0 + (y0 - p.c_y), p.e_r0 + (y1 - p.c_y)
            c0, c1 = p.e_c0 + (x0 - p.c_x), p.e_c0 + (x1 - p.c_x)
            dst = out[y0 - c_y0:y1 - c_y0, x0 - c_x0:x1 - c_x0]
            va, vb = pair.view_a or (0, 0), pair.view_b or (0, 0)
            if va != vb:
                kernels.hatch(dst, r0, c0, va, vb, prm["base_only"], x0, y0)
            orows, ocols = pair.overlap
            ro1, co1 = min(r1, orows), min(c1, ocols)
            if ro1 <= r0 or co1 <= c0:
                continue
            fl = self.flags.get(p.tensor)
            if fl is None:
                fl = self.flags[p.tensor] = (np.zeros(orows, np.bool_), np.zeros(ocols, np.bool_))
            if pair.a.dtype == pair.b.dtype:
                ca = self.reader.read_side_codes("a", p.tensor, r0, ro1, c0, co1)
                cb = self.reader.read_side_codes("b", p.tensor, r0, ro1, c0, co1) \
                    if ca is not None else None
                if ca is not None and cb is not None and np.array_equal(ca, cb):
                    # unchanged block: black, numbers from a code histogram, no decode
                    kernels.identical_codes(ca, self.code_values(pair.a.dtype),
                                            self.hist, dst[:ro1 - r0, :co1 - c0],
                                            self.acc(p.tensor))
                    continue
            a = self.reader.read_side("a", p.tensor, r0, ro1, c0, co1)
            b = self.reader.read_side("b", p.tensor, r0, ro1, c0, co1)
            buf = np.zeros((kernels.ELEMENTS_CAP + 1, 4), np.float64)
            n = np.zeros(1, np.int64)
            kernels.colorize_delta(a, b, self.job.scales.get(p.tensor, 1.0), prm["metric"],
                                   dst[:ro1 - r0, :co1 - c0], self.acc(p.tensor), fl[0], fl[1],
                                   r0, c0, buf, n, prm["decades"])
            if n[0]:
                self.elems.setdefault(p.tensor, []).append(buf[:min(int(n[0]), len(buf))])
        return out

    def _leaf_hilbert(self, t_x: int, t_y: int) -> np.ndarray:
        t = self.t
        base = kernels.hilbert_tile_offsets(self.n, t_x * t, t_y * t, self.offsets)
        flat = np.full(t * t, color.PAD, np.uint8)
        segs = self.geo.layout.segments
        first = max(0, int(np.searchsorted(self.seg_starts, base, side="right")) - 1)
        for s in segs[first:]:
            if s.h_start >= base + t * t:
                break
            lo, hi = max(s.h_start, base), min(s.h_start + s.length, base + t * t)
            if hi <= lo:
                continue
            dst = flat[lo - base:hi - base]
            if self.job.mode == "bytes":
                raw = self.reader.raw_bytes_of(self.file_bytes[s.name])
                dst[:] = color.BYTE_LUT[raw[lo - s.h_start:hi - s.h_start]]
            else:
                info = self.reader.info(s.name)
                vals = _flat_read(self.reader, s.name, info.e_cols, lo - s.h_start, hi - lo)
                kernels.colorize(vals.reshape(1, -1), self.scale(s.name),
                                 dst.reshape(1, -1), self.acc(s.name))
        return np.take(flat, self.offsets, out=self.buffer())

    # -- subtrees ----------------------------------------------------------------------------
    def subtree(self, a: TileAddress) -> np.ndarray | None:
        """Render and write every tile under ``a`` (inclusive); returns ``a``'s own tile."""
        if (a.t_x, a.t_y) not in self.geo.occupied[a.z]:
            return None
        if a.z == self.geo.max_zoom:
            idx = self.leaf(a.t_x, a.t_y)
        else:
            idx = self.parent([self.subtree(c) for c in a.children()], a)
        if idx is not None:
            self.write(a, idx)
        return idx

    def parent(self, kids: Sequence[np.ndarray | None], a: TileAddress) -> np.ndarray | None:
        """Tile ``a`` reduced from its children (TL, TR, BL, BR; None where absent), each
        into its quadrant; the children's buffers are recycled."""
        if all(k is None for k in kids):
            return None
        t, h = self.t, self.t // 2
        out = self.buffer()
        for k, (oy, ox) in zip(kids, ((0, 0), (0, h), (h, 0), (h, h)), strict=True):
            if k is None:
                out[oy:oy + h, ox:ox + h] = color.PAD
            elif self.job.mode == "delta":
                kernels.reduce_delta(k, a.t_x * t + ox, a.t_y * t + oy, out, (oy, ox))
            else:
                kernels.reduce_tile(k, self.reduce_mode, out, (oy, ox))
        for k in kids:
            if k is not None:
                self.spare.append(k)
        return out

    def buffer(self) -> np.ndarray:
        """A (tile, tile) uint8 buffer, recycled: fresh pages cost a fault and a clear each."""
        return self.spare.pop() if self.spare else np.empty((self.t, self.t), np.uint8)

    def take_results(self) -> WorkerResult:
        self.reader.release()
        self.since_release = 0
        r = WorkerResult(self.accs, self.tiles_written, self.bytes_written, self.flags,
                         {k: np.concatenate(v) for k, v in self.elems.items()}, self.new_scales)
        self.accs, self.tiles_written, self.bytes_written = {}, 0, 0
        self.flags, self.elems, self.new_scales = {}, {}, {}
        return r


def _flat_read(reader: MultiReader, name: str, cols: int, start: int, count: int) -> np.ndarray:
    r0, c0 = divmod(start, cols)
    if c0 + count <= cols:
        return reader.read(name, r0, r0 + 1, c0, c0 + count).reshape(-1)
    r1 = -(-(start + count) // cols)
    return reader.read(name, r0, r1).reshape(-1)[c0:c0 + count]


# -- process pool ------------------------------------------------------------------------------
_WORKER: _Worker | None = None


def _init_worker(job: SceneJob) -> None:
    global _WORKER
    # everything inherited from the parent lives as long as the worker: keep it out of the
    # collector's full passes (measured: 3 % of the worker's time went to gc over it)
    gc.freeze()
    _WORKER = _Worker(job)


def _run_subtree(a: TileAddress) -> tuple[TileAddress, np.ndarray | None, WorkerResult, int]:
    assert _WORKER is not None
    idx = _WORKER.subtree(a)
    leaves, _WORKER.leaves = _WORKER.leaves, 0
    return a, idx, _WORKER.take_results(), leaves


def _pool_context() -> mp.context.BaseContext:
    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if "fork" in methods else "spawn")


_WARM = False


def warm_up_all() -> None:
    """Compile (or load from numba's cache) every kernel the tiles need, once per process."""
    global _WARM
    if not _WARM:
        kernels.warm_up()
        png_warm_up()
        _WARM = True


def render_scene(job: SceneJob, workers: int, progress: ProgressFn | None = None,
                 reader: MultiReader | None = None,
                 meanwhile: Callable[[], None] | None = None) -> SceneResult:
    """Render and write every tile of a scene; returns merged per-tensor accumulators.
    ``meanwhile`` runs in this process while the workers render (before any result is taken)."""
    geo = job.geometry
    # before forking: numba's first load costs ~0.2 s per process, the workers inherit it
    warm_up_all()
    split, roots = geo.subtree_roots(workers)
    parts: LeafAccs = {}
    written = nbytes = 0
    # tiles at and above the split zoom not yet reduced into their parent
    waiting: list[dict[tuple[int, int], np.ndarray | None]] = [{} for _ in range(split + 1)]
    top = _Worker(job, reader)
    flags: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    elems: dict[str, list[np.ndarray]] = {}
    scales: dict[str, float] = {}

    def arrive(z: int, x: int, y: int, idx: np.ndarray | None) -> None:
        """Reduce the levels above the split here, each parent as soon as its children are in
        (while the workers go on), so little is left to do after the last subtree."""
        waiting[z][(x, y)] = idx
        while z > 0:
            a = TileAddress(z - 1, x // 2, y // 2)
            kids = [(c.t_x, c.t_y) for c in a.children()]
            if any(k in geo.occupied[z] and k not in waiting[z] for k in kids):
                return
            idx = top.parent([waiting[z].pop(k, None) for k in kids], a)
            if idx is not None:
                top.write(a, idx)
            z, x, y = a.z, a.t_x, a.t_y
            waiting[z][(x, y)] = idx

    def collect(a: TileAddress, idx: np.ndarray | None, res: WorkerResult, leaves: int) -> None:
        nonlocal written, nbytes
        parts.update(res.accs)
        scales.update(res.scales)
        written += res.tiles_written
        nbytes += res.bytes_written
        for name, (rows, cols) in res.flags.items():
            if name in flags:
                flags[name][0][:] |= rows
                flags[name][1][:] |= cols
            else:
                flags[name] = (rows, cols)
        for name, e in res.elems.items():
            elems.setdefault(name, []).append(e)
        if progress is not None:
            progress(leaves)
        arrive(a.z, a.t_x, a.t_y, idx)

    if workers <= 1:
        if meanwhile is not None:
            meanwhile()
        for a in roots:
            idx = top.subtree(a)
            leaves, top.leaves = top.leaves, 0
            collect(a, idx, top.take_results(), leaves)
    else:
        with _pool_context().Pool(workers, initializer=_init_worker, initargs=(job,)) as pool:
            results = pool.imap_unordered(_run_subtree, roots)
            if meanwhile is not None:
                meanwhile()
            for a, idx, res, leaves in results:
                collect(a, idx, res, leaves)
    top_res = top.take_results()
    merged_elems = {}
    for name, es in elems.items():
        e = np.concatenate(es)
        merged_elems[name] = e[np.lexsort((e[:, 1], e[:, 0]))]
    return SceneResult(merge_leaf_accs(parts, job.mode == "delta"),
                       written + top_res.tiles_written, nbytes + top_res.bytes_written, flags,
                       merged_elems, scales)


def iter_tiles(geo: Geometry) -> Iterator[TileAddress]:
    for z, occ in enumerate(geo.occupied):
        for x, y in sorted(occ):
            yield TileAddress(z, x, y)
