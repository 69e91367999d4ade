"""Tile pyramid: leaves rendered from the data, parents from their four children.

Work is split into subtrees rooted at a *split zoom*; each subtree is rendered depth-first by one
``TileWorker`` (leaves from the data, each parent reduced from its children as soon as they
exist), so memory is bounded by a few tiles per level per worker, not by the model. An executor
(executors.py) runs the subtrees; the levels above the split zoom are reduced here, in the
calling process, as the subtrees arrive.

The pyramid has no notion of what a scene shows: the job's painter and the layout's scanner
(painters.py), chosen once per scene, draw the leaves and reduce the parents.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .formats.dtypes import code_values
from .painters import scanner_for
from .tiling import Geometry, SceneJob
from .types import TileAddress
from .values import tensor_scale

if TYPE_CHECKING:
    from .executors import Executor
    from .resume import SubtreeRecords

__all__ = ["TileWorker", "SceneResult", "SubtreeResult", "render_scene", "render_subtree",
           "subtree_task", "iter_tiles", "warm_up_all"]

ProgressFn = Callable[[int], None]
RELEASE_EVERY = 16
"""Leaves between drops of the mapped pages they read (each leaf reads at most a few MB)."""

LeafAccs = dict[tuple[str, int, int], np.ndarray]
"""(tensor, leaf t_y, leaf t_x) -> accumulator of the tensor's elements in that leaf."""


class SceneResult(NamedTuple):
    accs: dict[str, np.ndarray]
    """Per-tensor statistics accumulators (the painter's kind)."""
    tiles_written: int
    bytes_written: int
    flags: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    """Per tensor, flagged rows and columns (delta: changed rows and columns of the overlap)."""
    elements: dict[str, np.ndarray] = {}
    """Per tensor, elements the painter listed (delta: changed (row, col, a, b), sorted)."""
    scales: dict[str, float] = {}
    """Per-tensor scales computed while rendering (tensors the job's ``scales`` left out)."""
    tiles_reused: int = 0
    """Of ``tiles_written``, those a killed run had written (resumed subtrees)."""


class PackedAccs(NamedTuple):
    """Per-leaf accumulators as they travel between processes: the keys (tensor, leaf t_y,
    leaf t_x) and one 2-D array of their rows (one pickled array, not one per key: 54k small
    arrays cost 0.3 s to pickle and unpickle, measured)."""

    keys: list[tuple[str, int, int]]
    rows: np.ndarray


class WorkerResult(NamedTuple):
    accs: PackedAccs
    tiles_written: int
    bytes_written: int
    flags: dict[str, tuple[np.ndarray, np.ndarray]]
    elems: dict[str, np.ndarray]
    scales: dict[str, float]


class SubtreeResult(NamedTuple):
    """What one subtree task returns (picklable): its root's tile and everything it found."""

    root: TileAddress
    tile: np.ndarray | None
    result: WorkerResult
    leaves: int


def pack_accs(accs: LeafAccs) -> PackedAccs:
    keys = list(accs)
    rows = np.stack([accs[k] for k in keys]) if keys else np.zeros((0, 0))
    return PackedAccs(keys, rows)


def merge_leaf_accs(parts: Sequence[PackedAccs], merge: Callable[[np.ndarray, np.ndarray], None]
                    ) -> dict[str, np.ndarray]:
    """Merge per-leaf accumulators in one canonical order (sorted by key), so that the
    statistics are the same bit for bit whatever the executor, the number of workers and the
    order they finish in."""
    keys = [key for part in parts for key in part.keys]
    if not keys:
        return {}
    # every row copied at once: the tensors of one leaf (45k tiny ones) keep a view of it
    rows = list(np.concatenate([part.rows for part in parts if part.keys]))
    out: dict[str, np.ndarray] = {}
    for j in sorted(range(len(keys)), key=keys.__getitem__):
        name = keys[j][0]
        if name in out:
            merge(out[name], rows[j])
        else:
            out[name] = rows[j]
    return out


class TileWorker:
    """Renders subtrees of one scene; one per process. Holds the per-process state the
    painter uses: the open reader, scales, LUTs, histogram, accumulators, recycled buffers."""

    def __init__(self, job: SceneJob, reader: Any = None) -> None:
        self.job = job
        self.geo = job.geometry
        self.t = job.geometry.tile
        self._reader = reader
        self.painter = job.painter
        self.scanner = scanner_for(self.geo.layout, self.t)
        self.palette = self.painter.palette()
        self.made_dirs: set[str] = set()
        self.spare: list[np.ndarray] = []
        self.own_scales: dict[str, float] = {}
        self.new_scales: dict[str, float] = {}
        self.luts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.value_tables: dict[str, np.ndarray] = {}
        self.file_bytes: dict[str, Any] = {}
        self.painter_state: Any = None
        """What the painter keeps per worker (ValuesPainter: facts per placement)."""
        self.hist = np.zeros(1 << 16, np.int32)
        self.since_release = 0
        self.accs: LeafAccs = {}
        self.flags: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.elems: dict[str, list[np.ndarray]] = {}
        self.leaf_at: tuple[int, int] = (0, 0)
        self.vals: list[np.ndarray] = []
        """The values of the leaf being drawn, one (tile, tile) buffer per side (sidecars
        ``values``; painters.Painter.value_sides); empty otherwise."""
        self._val_bufs: list[np.ndarray] = []
        self.curve_vals: list[np.ndarray] = []
        self.curve_base = 0
        self.leaves = 0
        self.tiles_written = 0
        self.bytes_written = 0
        self._set_up = False
        self.before_leaf: Callable[[], None] | None = None
        """Called before each leaf tile; raises to end the task there (a cluster's task whose
        run was aborted: it stops writing within a tile, not at the end of its subtree)."""

    @property
    def reader(self) -> Any:
        """The scene's reader, opened on first use (the top levels never read data)."""
        if self._reader is None:
            self._reader = self.job.spec.open()
        return self._reader

    # -- per-tensor state the painters use -------------------------------------------------
    def acc(self, name: str) -> np.ndarray:
        key = (name, self.leaf_at[1], self.leaf_at[0])
        a = self.accs.get(key)
        if a is None:
            a = self.accs[key] = self.painter.new_acc()
        return a

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

    def code_lut(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(palette index, value) of every 16-bit code of a BF16/F16 tensor, built once."""
        from . import kernels

        got = self.luts.get(name)
        if got is None:
            values = self.code_values(self.reader.info(name).dtype)
            got = self.luts[name] = (kernels.code_lut(values, self.scale(name)), values)
        return got

    def code_values(self, dtype: str) -> np.ndarray:
        v = self.value_tables.get(dtype)
        if v is None:
            v = self.value_tables[dtype] = code_values(dtype)
        return v

    # -- element values (sidecars) ----------------------------------------------------------
    def values_at(self, c_x0: int, c_y0: int, h: int, w: int, side: int = 0
                  ) -> np.ndarray | None:
        """Where a painter puts the values of the (h, w) block whose top-left is canvas pixel
        (c_x0, c_y0) of the leaf being drawn; None when the scene keeps no values."""
        if not self.vals:
            return None
        p_x0, p_y0 = c_x0 - self.leaf_at[0] * self.t, c_y0 - self.leaf_at[1] * self.t
        return self.vals[side][p_y0:p_y0 + h, p_x0:p_x0 + w]

    def put_run(self, lo: int, hi: int, values: np.ndarray, side: int = 0) -> None:
        """The values of curve indices lo..hi-1 of the leaf being drawn (a Hilbert layout)."""
        if self.curve_vals:
            self.curve_vals[side][lo - self.curve_base:hi - self.curve_base] = values

    def _start_values(self) -> None:
        if not self.job.keeps_values:
            return
        if not self._val_bufs:
            self._val_bufs = [np.empty((self.t, self.t), self.painter.value_dtype)
                              for _ in range(self.painter.value_sides)]
        for b in self._val_bufs:
            b.fill(0)
        self.vals = self._val_bufs

    # -- tiles -----------------------------------------------------------------------------
    def write(self, a: TileAddress, idx: np.ndarray) -> None:
        from .encode import encode_tile_parts

        sink = self.job.sink
        d = sink.tile_dir(self.job.key, a.z, a.t_x)
        if d not in self.made_dirs:
            sink.make_dir(self.job.key, a.z, a.t_x)
            self.made_dirs.add(d)
        parts = encode_tile_parts(idx, self.palette, self.job.tile_format,
                                  self.job.png_deflate)
        self.bytes_written += sink.write(d, a.t_y, self.job.tile_format, parts)
        self.tiles_written += 1
        if a.z == self.geo.max_zoom and self.job.writes_sidecars:
            from .sidecars import SIDECAR_EXT, encode_sidecar

            side = encode_sidecar(self.job.key, a.z, a.t_x, a.t_y, idx, parts, self.vals or None,
                                  self.job.png_deflate)
            self.bytes_written += sink.write(d, a.t_y, SIDECAR_EXT, side)

    def leaf(self, t_x: int, t_y: int) -> np.ndarray | None:
        if (t_x, t_y) not in self.geo.occupied[self.geo.max_zoom]:
            return None
        if not self._set_up:
            self.painter.setup(self)
            self._set_up = True
        self.leaf_at = (t_x, t_y)
        self._start_values()
        out = self.buffer()
        self.scanner.leaf(self, t_x, t_y, out)
        self.leaves += 1
        self.since_release += 1
        if self.since_release >= RELEASE_EVERY:
            self.reader.release()
            self.since_release = 0
        return out

    def subtree(self, a: TileAddress) -> np.ndarray | None:
        """Render and write every tile under ``a`` (inclusive); returns ``a``'s own tile."""
        if (a.t_x, a.t_y) not in self.geo.occupied[a.z]:
            return None
        if a.z == self.geo.max_zoom:
            if self.before_leaf is not None:
                self.before_leaf()
            idx = self.leaf(a.t_x, a.t_y)
        else:
            idx = self.parent([self.subtree(c) for c in a.children()], a)
        if idx is not None:
            self.write(a, idx)
        return idx

    def parent(self, kids: Sequence[np.ndarray | None], a: TileAddress) -> np.ndarray | None:
        """Tile ``a`` reduced from its children (TL, TR, BL, BR; None where absent), each
        into its quadrant; the children's buffers are recycled."""
        from .color import PAD

        if all(k is None for k in kids):
            return None
        t, h = self.t, self.t // 2
        out = self.buffer()
        reduce = self.painter.reduce
        for k, (oy, ox) in zip(kids, ((0, 0), (0, h), (h, 0), (h, h)), strict=True):
            if k is None:
                out[oy:oy + h, ox:ox + h] = PAD
            else:
                reduce(k, a.t_x * t + ox, a.t_y * t + oy, out, (oy, ox))
        for k in kids:
            if k is not None:
                self.spare.append(k)
        return out

    def buffer(self) -> np.ndarray:
        """A (tile, tile) uint8 buffer, recycled: fresh pages cost a fault and a clear each."""
        return self.spare.pop() if self.spare else np.empty((self.t, self.t), np.uint8)

    def take_results(self) -> WorkerResult:
        if self._reader is not None:
            self._reader.release()
        self.since_release = 0
        r = WorkerResult(pack_accs(self.accs), self.tiles_written, self.bytes_written,
                         self.flags,
                         {k: np.concatenate(v) for k, v in self.elems.items()}, self.new_scales)
        self.accs, self.tiles_written, self.bytes_written = {}, 0, 0
        self.flags, self.elems, self.new_scales = {}, {}, {}
        return r

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def render_subtree(worker: TileWorker, root: TileAddress) -> SubtreeResult:
    """One task: the subtree under ``root`` rendered and written by ``worker``."""
    idx = worker.subtree(root)
    leaves, worker.leaves = worker.leaves, 0
    return SubtreeResult(root, idx, worker.take_results(), leaves)


def subtree_task(job: SceneJob, root: TileAddress) -> SubtreeResult:
    """A self-contained task (explicit, picklable inputs and output; no process state): what a
    distributed executor sends to a worker."""
    worker = TileWorker(job)
    try:
        return render_subtree(worker, root)
    finally:
        worker.close()


_WARM = False


def warm_up_all() -> None:
    """Compile (or load from numba's cache) every kernel the tiles need, once per process."""
    global _WARM
    if not _WARM:
        from . import compiling

        compiling.warm_all()  # but the groups this run deferred (compiling.start's ``needed``)
        _WARM = True


def render_scene(job: SceneJob, executor: Executor, progress: ProgressFn | None = None,
                 reader: Any = None, meanwhile: Callable[[], None] | None = None,
                 records: SubtreeRecords | None = None) -> SceneResult:
    """Render and write every tile of a scene with ``executor``; returns merged per-tensor
    results. ``meanwhile`` runs in this process while the workers render. With ``records``,
    subtrees kept by a killed run are taken from there instead of rendered, and each subtree
    rendered now is kept there (resume.py)."""
    geo = job.geometry
    split, roots = geo.subtree_roots(executor.workers)
    done = records.load(roots) if records is not None else {}
    reused = sum(s.result.tiles_written for s in done.values())
    parts: list[PackedAccs] = []
    written = nbytes = 0
    # tiles at and above the split zoom not yet reduced into their parent
    waiting: list[dict[tuple[int, int], np.ndarray | None]] = [{} for _ in range(split + 1)]
    top = TileWorker(job, reader)
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

    todo = [a for a in roots if a not in done]
    running = executor.run_subtrees(job, todo, reader=reader, meanwhile=meanwhile)
    try:
        for sub in itertools.chain(done.values(), running):
            if records is not None and sub.root not in done:
                records.keep(sub)
            res = sub.result
            parts.append(res.accs)
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
                progress(sub.leaves)
            arrive(sub.root.z, sub.root.t_x, sub.root.t_y, sub.tile)
    finally:  # a failure here (writing a record, reducing) stops the workers now
        close = getattr(running, "close", None)
        if close is not None:
            close()
    top_res = top.take_results()
    if job.shared is not None:  # scales a helper computed ahead (executors.LocalPoolExecutor)
        scales.update(job.shared.known())
    # scales an executor computed ahead into the job (dask_executor.DaskExecutor)
    scales.update((n, job.scales[n]) for n in job.prefetch if n in job.scales)
    merged_elems = {}
    for name, es in elems.items():
        e = np.concatenate(es)
        merged_elems[name] = e[np.lexsort((e[:, 1], e[:, 0]))]
    return SceneResult(merge_leaf_accs(parts, job.painter.merge_acc),
                       written + top_res.tiles_written, nbytes + top_res.bytes_written, flags,
                       merged_elems, scales, reused)


def iter_tiles(geo: Geometry) -> Iterator[TileAddress]:
    for z, occ in enumerate(geo.occupied):
        for x, y in sorted(occ):
            yield TileAddress(z, x, y)
