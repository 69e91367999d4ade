"""Painters and scanners: how a scene turns data into palette indices, chosen once per scene.

A **scanner** walks a leaf tile of a layout: ``PlacementScanner`` visits the rectangles of an
arch (or any placement) layout, ``CurveScanner`` the runs of a Hilbert curve. A **painter** turns
the elements (or bytes) a scanner hands it into palette indices and statistics, and reduces four
children into a parent: ``ValuesPainter`` (the diverging value palette, signed-RMS parents),
``BytesPainter`` (raw file bytes, first-child parents), ``DeltaPainter`` (B - A of a pair, the
diff's exact rule). The pyramid (pyramid.py) knows neither: it calls ``scanner.leaf`` and
``painter.reduce``.

Painters are small picklable values (their parameters); the per-process state they use (LUTs,
histograms, accumulators, the open reader) lives on the ``TileWorker`` passed to each call.
With value sidecars (sidecars.py) a painter also puts each element's value where
``TileWorker.values_at`` / ``put_run`` say. (Over ~450 lines: the painters and the scanners that
call them are one protocol with the TileWorker, read together.)

Over the ~450-line guide (~495 lines): the painters and scanners are the one interface the
pyramid calls, kept in one place so the contract reads whole.
"""

from __future__ import annotations

import math
from itertools import repeat
from typing import TYPE_CHECKING, Any

import numpy as np

from . import color
from .kernels.constants import (
    ACC_DELTA,
    ACC_VALUES,
    REDUCE_DELTA,
    REDUCE_FIRST,
    REDUCE_SIGNED_RMS,
)
from .types import SceneLayout, Segment

if TYPE_CHECKING:
    from .pyramid import TileWorker



class _LazyKernels:
    """``weightvis.kernels``, imported on first use and then bound in its place: a render
    forks its scale helper before the compiled kernels load (executors.LocalPoolExecutor)."""

    def __getattr__(self, name: str) -> Any:
        from . import kernels as loaded

        globals()["kernels"] = loaded
        return getattr(loaded, name)


kernels: Any = _LazyKernels()

__all__ = ["ValuesPainter", "BytesPainter", "DeltaPainter", "PlacementScanner", "CurveScanner",
           "scanner_for", "Painter"]


class Painter:
    """The interface (and the defaults) every painter implements."""

    colormap = "values"
    """The manifest colormap its indices refer to."""
    reduce_mode = REDUCE_SIGNED_RMS
    """Its parent rule (kernels.REDUCE_*; kernels/reduce.py has the table of rules)."""
    acc_kind = ACC_VALUES
    """Its statistics accumulator (kernels.ACC_*)."""
    value_sides = 1
    """Values kept per element for the sidecars (sidecars.py): 1, or 2 for a pair (A, B)."""
    value_dtype: Any = np.float32
    """Their dtype in the worker's buffers (TileWorker.values_at)."""

    def palette(self) -> bytes:
        raise NotImplementedError

    def setup(self, w: TileWorker) -> None:
        """Once per worker, before its first tile."""

    def new_acc(self) -> np.ndarray:
        acc: np.ndarray = kernels.new_accumulator(self.acc_kind)
        return acc

    def merge_acc(self, into: np.ndarray, other: np.ndarray) -> None:
        kernels.merge_accumulator(self.acc_kind, into, other)

    def rect(self, w: TileWorker, tensor: str, e_r0: int, e_r1: int, e_c0: int, e_c1: int,
             dst: np.ndarray, c_x0: int, c_y0: int) -> None:
        """Paint elements rows e_r0..e_r1-1, cols e_c0..e_c1-1 of ``tensor`` into ``dst``
        (whose top-left is canvas pixel c_x0, c_y0)."""
        raise TypeError(f"{type(self).__name__} cannot paint a placement layout")

    def rects(self, w: TileWorker, ids: np.ndarray, e_r0: np.ndarray, e_r1: np.ndarray,
              e_c0: np.ndarray, e_c1: np.ndarray, p_y0: np.ndarray, p_x0: np.ndarray,
              out: np.ndarray, c_x0: int, c_y0: int) -> None:
        """Paint, in order, the rectangles of one leaf tile ``out`` (whose top-left is canvas
        pixel c_x0, c_y0): placement ``ids[k]``'s elements rows e_r0[k]..e_r1[k]-1, cols
        e_c0[k]..e_c1[k]-1 at pixel (p_y0[k], p_x0[k]) of the tile. By default one ``rect``
        each."""
        placements = w.geo.layout.placements
        paint = self.rect
        for i, r0, r1, c0, c1, y0, x0 in zip(ids.tolist(), e_r0.tolist(), e_r1.tolist(),
                                             e_c0.tolist(), e_c1.tolist(), p_y0.tolist(),
                                             p_x0.tolist(), strict=True):
            paint(w, placements[i].tensor, r0, r1, c0, c1,
                  out[y0:y0 + r1 - r0, x0:x0 + c1 - c0], c_x0 + x0, c_y0 + y0)

    def run(self, w: TileWorker, seg: Segment, lo: int, hi: int, dst: np.ndarray) -> None:
        """Paint curve indices lo..hi-1 of segment ``seg`` into the flat ``dst``."""
        raise TypeError(f"{type(self).__name__} cannot paint a curve layout")

    def reduce(self, kid: np.ndarray, p_x0: int, p_y0: int, out: np.ndarray,
               at: tuple[int, int]) -> None:
        """Reduce child tile ``kid`` into the quadrant ``at`` (row, col offset) of ``out`` by
        the painter's rule; the quadrant's top-left is pixel p_x0, p_y0 of the parent's zoom."""
        kernels.reduce_tile(kid, self.reduce_mode, out, at, p_x0, p_y0)


class ValuesPainter(Painter):
    """Tensor values through the per-tensor scale (color.VALUE_RULE); parents by signed RMS."""

    def palette(self) -> bytes:
        return color.palette_bytes(color.value_palette())

    def rect(self, w: TileWorker, tensor: str, e_r0: int, e_r1: int, e_c0: int, e_c1: int,
             dst: np.ndarray, c_x0: int, c_y0: int) -> None:
        s = w.scale(tensor)  # first: computing it reads a sample and releases pages
        codes = w.reader.read_codes(tensor, e_r0, e_r1, e_c0, e_c1)
        keep = w.values_at(c_x0, c_y0, e_r1 - e_r0, e_c1 - e_c0)
        if codes is not None and codes.size <= kernels.SMALL_BLOCK and tensor not in w.luts:
            # a small block (a tiny tensor): no 65,536-entry LUT for it; the same result
            values = w.code_values(w.reader.info(tensor).dtype)
            kernels.colorize_codes_small(codes, values, s, dst, w.acc(tensor))
        elif codes is not None:  # 16-bit fast path: a LUT, stats from a code histogram
            lut, values = w.code_lut(tensor)
            kernels.colorize_codes(codes, lut, values, dst, w.acc(tensor), w.hist)
        else:
            block = w.reader.read(tensor, e_r0, e_r1, e_c0, e_c1)
            kernels.colorize(block, s, dst, w.acc(tensor))
            if keep is not None:
                keep[...] = block
            return
        if keep is not None:
            np.take(values, codes, out=keep)

    def rects(self, w: TileWorker, ids: np.ndarray, e_r0: np.ndarray, e_r1: np.ndarray,
              e_c0: np.ndarray, e_c1: np.ndarray, p_y0: np.ndarray, p_x0: np.ndarray,
              out: np.ndarray, c_x0: int, c_y0: int) -> None:
        """Small blocks of BF16/F16 tensors a reader can locate (``code_span``) are coloured in
        one compiled call per run of them (kernels.colorize_code_blocks: the same bits as
        ``rect``); the others go through ``rect``, in order."""
        st = w.painter_state
        if st is None:
            st = w.painter_state = _SmallBlocks(w)
        h, wd = e_r1 - e_r0, e_c1 - e_c0
        small = h * wd <= kernels.SMALL_BLOCK
        if not st.spans or not small.any():
            super().rects(w, ids, e_r0, e_r1, e_c0, e_c1, p_y0, p_x0, out, c_x0, c_y0)
            return
        if not st.kind[ids].all():
            st.resolve(w, ids)
        small &= st.kind[ids] == _BATCH
        tids, slot = np.unique(st.tid[ids], return_inverse=True)
        t_x, t_y = w.leaf_at
        accs = w.accs
        # (per tensor of the leaf, in C loops: a leaf holds hundreds of 45k tiny tensors)
        keys = list(zip(map(st.names.__getitem__, tids.tolist()), repeat(t_y), repeat(t_x)))
        if not accs.keys().isdisjoint(keys):  # (a leaf is rendered once: not expected)
            super().rects(w, ids, e_r0, e_r1, e_c0, e_c1, p_y0, p_x0, out, c_x0, c_y0)
            return
        pool = np.empty((len(keys), kernels.ACC_SIZE), np.float64)
        pool[:] = self.new_acc()
        accs.update(zip(keys, pool, strict=True))  # (each a row of pool)
        blocks = np.empty((len(ids), kernels.BLOCK_FIELDS), np.int64)
        blocks[:, 1] = st.cols[ids]
        blocks[:, 2] = e_c0
        blocks[:, 3] = h
        blocks[:, 4] = wd
        blocks[:, 5] = p_y0
        blocks[:, 6] = p_x0
        blocks[:, 7] = st.tab[ids]
        blocks[:, 8] = slot
        lo = st.start[ids] + e_r0 * st.row_bytes[ids]
        hi = lo + h * st.row_bytes[ids]
        if small.all():
            st.paint(w, ids, blocks, lo, hi, out, pool)
            return
        k, n = 0, len(ids)
        while k < n:
            if small[k]:
                e = k + 1
                while e < n and small[e]:
                    e += 1
                st.paint(w, ids[k:e], blocks[k:e], lo[k:e], hi[k:e], out, pool)
                k = e
                continue
            r0, r1, c0, c1 = int(e_r0[k]), int(e_r1[k]), int(e_c0[k]), int(e_c1[k])
            y0, x0 = int(p_y0[k]), int(p_x0[k])
            self.rect(w, st.names[st.tid[ids[k]]], r0, r1, c0, c1,
                      out[y0:y0 + r1 - r0, x0:x0 + c1 - c0], c_x0 + x0, c_y0 + y0)
            k += 1

    def run(self, w: TileWorker, seg: Segment, lo: int, hi: int, dst: np.ndarray) -> None:
        cols = w.reader.info(seg.name).e_cols
        vals = _flat_read(w.reader, seg.name, cols, lo - seg.h_start, hi - lo)
        kernels.colorize(vals.reshape(1, -1), w.scale(seg.name), dst.reshape(1, -1),
                         w.acc(seg.name))
        w.put_run(lo, hi, vals)



class BytesPainter(Painter):
    """A file's raw bytes (color.BYTE_LUT); a parent pixel is its first child's."""

    colormap = "bytes"
    reduce_mode = REDUCE_FIRST
    value_dtype = np.uint8

    def palette(self) -> bytes:
        return color.palette_bytes(color.byte_palette())

    def setup(self, w: TileWorker) -> None:
        w.file_bytes = {p.name: p for p in w.reader.files}

    def run(self, w: TileWorker, seg: Segment, lo: int, hi: int, dst: np.ndarray) -> None:
        raw = w.reader.raw_bytes_of(w.file_bytes[seg.name])
        dst[:] = color.BYTE_LUT[raw[lo - seg.h_start:hi - seg.h_start]]
        w.put_run(lo, hi, raw[lo - seg.h_start:hi - seg.h_start])



class DeltaPainter(Painter):
    """B - A of a pair (color.DELTA_RULES): black only for exact equality, NaN = NaN, hatching
    where one side has no element; exact parents (color.DELTA_PARENT_RULE)."""

    colormap = "delta"
    reduce_mode = REDUCE_DELTA
    acc_kind = ACC_DELTA
    value_sides = 2

    def __init__(self, metric: int, decades: tuple[float, float], palette: str,
                 base_only: bool) -> None:
        self.metric, self.decades, self.palette_name = metric, decades, palette
        self.base_only = base_only

    def palette(self) -> bytes:
        return color.palette_bytes(color.delta_palette(self.palette_name))

    def setup(self, w: TileWorker) -> None:
        kernels.warm_up_delta()


    def rect(self, w: TileWorker, tensor: str, e_r0: int, e_r1: int, e_c0: int, e_c1: int,
             dst: np.ndarray, c_x0: int, c_y0: int) -> None:
        pair = w.reader.pair(tensor)
        va, vb = pair.view_a or (0, 0), pair.view_b or (0, 0)
        if va != vb:
            kernels.hatch(dst, e_r0, e_c0, va, vb, self.base_only, c_x0, c_y0)
        orows, ocols = pair.overlap
        ro1, co1 = min(e_r1, orows), min(e_c1, ocols)
        if ro1 <= e_r0 or co1 <= e_c0:
            return
        fl = w.flags.get(tensor)
        if fl is None:
            fl = w.flags[tensor] = (np.zeros(orows, np.bool_), np.zeros(ocols, np.bool_))
        part = dst[:ro1 - e_r0, :co1 - e_c0]
        keep_a = w.values_at(c_x0, c_y0, ro1 - e_r0, co1 - e_c0, 0)
        keep_b = w.values_at(c_x0, c_y0, ro1 - e_r0, co1 - e_c0, 1)
        if pair.a.dtype == pair.b.dtype:
            ca = w.reader.read_side_codes("a", tensor, e_r0, ro1, e_c0, co1)
            cb = w.reader.read_side_codes("b", tensor, e_r0, ro1, e_c0, co1) \
                if ca is not None else None
            if ca is not None and cb is not None and np.array_equal(ca, cb):
                # unchanged block: black, numbers from a code histogram, no decode
                kernels.identical_codes(ca, w.code_values(pair.a.dtype), w.hist, part,
                                        w.acc(tensor))
                if keep_a is not None and keep_b is not None:
                    np.take(w.code_values(pair.a.dtype), ca, out=keep_a)
                    keep_b[...] = keep_a
                return
        a = w.reader.read_side("a", tensor, e_r0, ro1, e_c0, co1)
        b = w.reader.read_side("b", tensor, e_r0, ro1, e_c0, co1)
        if keep_a is not None and keep_b is not None:
            keep_a[...] = a
            keep_b[...] = b
        buf = np.zeros((kernels.ELEMENTS_CAP + 1, 4), np.float64)
        n = np.zeros(1, np.int64)
        kernels.colorize_delta(a, b, w.job.scales.get(tensor, 1.0), self.metric, part,
                               w.acc(tensor), fl[0], fl[1], e_r0, e_c0, buf, n, self.decades)
        if n[0]:
            w.elems.setdefault(tensor, []).append(buf[:min(int(n[0]), len(buf))])



_BATCH, _SINGLE = 1, 2
"""How a placement's blocks are painted: in a batch of small blocks, or one ``rect`` each
(0: not looked at yet)."""


class _SmallBlocks:
    """A worker's per-placement facts for ``ValuesPainter.rects``, found once per tensor: where
    its codes lie (source, byte offset, row stride), its values table and scale, the tensor id
    its accumulators are keyed by; and the kernel's scratch arrays."""

    def __init__(self, w: TileWorker) -> None:
        placements = w.geo.layout.placements
        n = len(placements)
        self.spans = hasattr(w.reader, "code_span") and hasattr(w.reader, "reading")
        self.kind = np.zeros(n, np.int8)
        self.start = np.zeros(n, np.int64)
        self.row_bytes = np.zeros(n, np.int64)
        self.cols = np.zeros(n, np.int64)
        self.tab = np.zeros(n, np.int64)
        self.scale = np.ones(n, np.float64)
        self.tid = np.zeros(n, np.int64)
        self.owner = np.zeros(n, np.int64)
        self.src: list[Any] = [None] * n
        self.owners: dict[int, int] = {}
        """id of a source -> owner index"""
        self.owner_names: list[str] = []
        """per owner index, a tensor of that source (``reading`` takes a name)"""
        self.buf = np.empty(1 << 16, np.uint8)
        self.names: list[str] = []
        self.tensor: dict[str, int] = {}
        """name -> tensor id (an index into ``names``)"""
        self.dtypes: dict[str, int] = {}
        self.values = np.zeros((0, 1 << 16), np.float32)
        self.scratch = kernels.BlockScratch()

    def resolve(self, w: TileWorker, ids: np.ndarray) -> None:
        """Look up the placements ``ids`` not seen yet (the scale first: computing it reads a
        sample and releases pages). Geometry is checked here, once per placement."""
        placements, tensor, names = w.geo.layout.placements, self.tensor, self.names
        code_span, scale, src = w.reader.code_span, w.scale, self.src
        new = ids[self.kind[ids] == 0].tolist()
        if not new:
            return
        # a column per field, the placements' fields unpacked (45k placements: no call or
        # attribute read that can be spared); a placement left _SINGLE keeps the defaults
        n = len(new)
        tid_, kind, start, row_bytes = [0] * n, [_SINGLE] * n, [0] * n, [0] * n
        cols, scale_, tab_, own_ = [0] * n, [1.0] * n, [0] * n, [0] * n
        for k, i in enumerate(new):
            # (little is kept per tensor, and nothing the garbage collector tracks: with 45k
            # tensors its collections cost more than the look-ups)
            name, _x, _y, e_r0, e_r1, e_c0, e_c1, _label = placements[i]
            tid = tensor.get(name)
            if tid is None:
                tid = tensor[name] = len(names)
                names.append(name)
            tid_[k] = tid
            s = scale(name)
            span = code_span(name)
            if span is None or not (s > 0 and math.isfinite(s)):
                continue  # (rect paints it, or reports the bad scale, naming the tensor)
            source, at, stride, rows, width, dtype = span
            if not (0 <= e_r0 <= e_r1 <= rows and 0 <= e_c0 <= e_c1 <= width):
                continue  # (rect reports the bad block)
            tab = self.dtypes.get(dtype)
            if tab is None:
                tab = self.dtypes[dtype] = len(self.dtypes)
                self.values = np.concatenate([self.values, w.code_values(dtype)[None]])
            own = self.owners.get(id(source))
            if own is None:  # (a file: release() drops what its views covered)
                own = self.owners[id(source)] = len(self.owner_names)
                self.owner_names.append(name)
            kind[k], start[k], row_bytes[k], cols[k] = _BATCH, at, stride, width
            scale_[k], tab_[k], own_[k] = s, tab, own
            src[i] = source
        at_ = np.array(new, np.int64)
        self.tid[at_], self.kind[at_], self.start[at_] = tid_, kind, start
        self.row_bytes[at_], self.cols[at_], self.scale[at_] = row_bytes, cols, scale_
        self.tab[at_], self.owner[at_] = tab_, own_

    def paint(self, w: TileWorker, ids: np.ndarray, blocks: np.ndarray, lo: np.ndarray,
              hi: np.ndarray, out: np.ndarray, accs: np.ndarray) -> None:
        """One compiled call for the small blocks of placements ``ids`` (bytes lo..hi-1 of
        their sources); ``blocks`` is their table but for the offsets, filled in here."""
        src = self.src
        views = [src[i].view(a, b) for i, a, b in
                 zip(ids.tolist(), lo.tolist(), hi.tolist(), strict=True)]
        sizes = hi - lo
        n = int(sizes.sum())
        if n > len(self.buf):
            self.buf = np.empty(max(n, 2 * len(self.buf)), np.uint8)
        codes = np.concatenate(views, out=self.buf[:n])
        blocks[1:, 0] = np.cumsum(sizes[:-1] // 2)
        blocks[0, 0] = 0
        kernels.colorize_code_blocks(codes.view(np.uint16), blocks, self.scale[ids],
                                     self.values, out, accs, self.scratch, check=False)
        if w.vals:  # each element's value for the sidecar: block k holds h whole rows
            c16, keep = codes.view(np.uint16), w.vals[0]
            for off, cols, c0, h, wd, y0, x0, tab in blocks[:, :8].tolist():
                np.take(self.values[tab], c16[off:off + h * cols].reshape(h, cols)[:, c0:c0 + wd],
                        out=keep[y0:y0 + h, x0:x0 + wd])
        own = self.owner[ids]
        first = int(own[0])
        w.reader.reading(self.owner_names[first])
        if (own != first).any():
            for o in np.unique(own).tolist():
                w.reader.reading(self.owner_names[o])


def _flat_read(reader: Any, name: str, cols: int, start: int, count: int) -> np.ndarray:
    r0, c0 = divmod(start, cols)
    if c0 + count <= cols:
        return reader.read(name, r0, r0 + 1, c0, c0 + count).reshape(-1)  # type: ignore
    r1 = -(-(start + count) // cols)
    return reader.read(name, r0, r1).reshape(-1)[c0:c0 + count]  # type: ignore


FEW_RECTS = 2
"""Leaves of at most this many rectangles are painted one ``painter.rect`` each; more, by one
``painter.rects`` call."""


class PlacementScanner:
    """Leaves of a placement layout: each rectangle a leaf intersects, painted in order (the
    rectangles of a leaf of many found with array arithmetic, painted by ``painter.rects``)."""

    def __init__(self) -> None:
        self._geo: np.ndarray | None = None

    def _placements(self, w: TileWorker) -> np.ndarray:
        """int64[placements, 6]: c_x, c_y, c_w, c_h, e_r0, e_c0 of each placement."""
        if self._geo is None:
            placements = w.geo.layout.placements
            if not placements:
                self._geo = np.zeros((0, 6), np.int64)
                return self._geo
            # a field at a time (45k placements: 0.012 s, not 0.038 as a tuple each)
            fields = list(zip(*placements, strict=True))  # (Placement's fields, in order)
            c_x, c_y, e_r0, e_r1, e_c0, e_c1 = (np.array(f, np.int64) for f in fields[1:7])
            self._geo = np.stack([c_x, c_y, e_c1 - e_c0, e_r1 - e_r0, e_r0, e_c0], axis=1)
        return self._geo

    def leaf(self, w: TileWorker, t_x: int, t_y: int, out: np.ndarray) -> None:
        t = w.t
        out.fill(color.PAD)
        found = w.geo.leaf_placements.get((t_x, t_y))
        if not found:
            return
        c_x0, c_y0 = t_x * t, t_y * t
        if len(found) <= FEW_RECTS:  # (a leaf of a big tensor: array arithmetic costs more)
            placements = w.geo.layout.placements
            paint = w.painter.rect
            for i in found:
                p = placements[i]
                x0, x1 = max(p.c_x, c_x0), min(p.c_x + p.c_w, c_x0 + t)
                y0, y1 = max(p.c_y, c_y0), min(p.c_y + p.c_h, c_y0 + t)
                paint(w, p.tensor, p.e_r0 + (y0 - p.c_y), p.e_r0 + (y1 - p.c_y),
                      p.e_c0 + (x0 - p.c_x), p.e_c0 + (x1 - p.c_x),
                      out[y0 - c_y0:y1 - c_y0, x0 - c_x0:x1 - c_x0], x0, y0)
            return
        ids = np.array(found, np.int64)
        g = self._placements(w)[ids]
        c_x, c_y = g[:, 0], g[:, 1]
        x0, x1 = np.maximum(c_x, c_x0), np.minimum(c_x + g[:, 2], c_x0 + t)
        y0, y1 = np.maximum(c_y, c_y0), np.minimum(c_y + g[:, 3], c_y0 + t)
        w.painter.rects(w, ids, g[:, 4] + (y0 - c_y), g[:, 4] + (y1 - c_y),
                        g[:, 5] + (x0 - c_x), g[:, 5] + (x1 - c_x), y0 - c_y0, x0 - c_x0,
                        out, c_x0, c_y0)


class CurveScanner:
    """Leaves of a Hilbert layout: the curve runs a leaf covers, painted along the curve, then
    permuted into the tile by the curve's offsets."""

    def __init__(self, lay: SceneLayout, tile: int) -> None:
        self.n = 1 << (lay.curve_order or 0)
        self.seg_starts = np.array([s.h_start for s in lay.segments], np.int64)
        self.offsets = np.zeros((tile, tile), np.int64)

    def leaf(self, w: TileWorker, t_x: int, t_y: int, out: np.ndarray) -> None:
        t = w.t
        base = kernels.hilbert_tile_offsets(self.n, t_x * t, t_y * t, self.offsets)
        flat = np.full(t * t, color.PAD, np.uint8)
        if w.vals:  # values kept for the sidecars, along the curve, then permuted like flat
            w.curve_vals = [np.zeros(t * t, v.dtype) for v in w.vals]
            w.curve_base = base
        segs = w.geo.layout.segments
        first = max(0, int(np.searchsorted(self.seg_starts, base, side="right")) - 1)
        for s in segs[first:]:
            if s.h_start >= base + t * t:
                break
            lo, hi = max(s.h_start, base), min(s.h_start + s.length, base + t * t)
            if hi > lo:
                w.painter.run(w, s, lo, hi, flat[lo - base:hi - base])
        np.take(flat, self.offsets, out=out)
        for along, v in zip(w.curve_vals, w.vals, strict=True):
            np.take(along, self.offsets, out=v)
        w.curve_vals = []


def scanner_for(lay: SceneLayout, tile: int) -> PlacementScanner | CurveScanner:
    """The scanner of a layout (chosen once per scene)."""
    return CurveScanner(lay, tile) if lay.layout == "hilbert" else PlacementScanner()

