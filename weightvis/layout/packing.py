"""Packing rectangles for the expert-aware layout (layout/experts.py): an expert's matrices into a
cell (guillotine arrangements, or two experts mirrored), small tensors on shelves below it, and
a block's top slots by a skyline. Sizes in canvas pixels at max zoom; every result is a plan of
offsets, computed once per layout."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from .arch import _shelf, _sub_key, natural_key

__all__ = ["Cell", "band", "extras_below", "plan_cell", "skyline", "PAIR_GAIN", "SKYLINE_MAX"]

PAIR_GAIN = 0.85
"""Two experts share a cell when that takes at most this share of the area of two cells."""
SKYLINE_MAX = 256
"""Slots of a block's top packed by the skyline (O(n²)); more go on shelves (arch's, O(n))."""
_INPUT_ROLES = ("gate", "up", "gate_up")


class Cell(NamedTuple):
    """A cell plan: ``k`` experts; offset of (expert within the cell, key); size."""

    k: int
    offsets: dict[tuple[int, str], tuple[int, int]]
    w: int
    h: int


def _arrangements(pieces: Sequence[tuple[str, int, int]], g: int
                  ) -> list[tuple[int, int, dict[str, tuple[int, int]]]]:
    """Guillotine arrangements of ``pieces`` (key, h, w) in order: each a (w, h, offsets)."""
    if len(pieces) == 1:
        key, h, w = pieces[0]
        return [(w, h, {key: (0, 0)})]
    out: dict[tuple[int, int], dict[str, tuple[int, int]]] = {}
    for i in range(1, len(pieces)):
        for aw, ah, ao in _arrangements(pieces[:i], g):
            for bw, bh, bo in _arrangements(pieces[i:], g):
                side = {**ao, **{k: (x + aw + g, y) for k, (x, y) in bo.items()}}
                over = {**ao, **{k: (x, y + ah + g) for k, (x, y) in bo.items()}}
                out.setdefault((aw + g + bw, max(ah, bh)), side)
                out.setdefault((max(aw, bw), ah + g + bh), over)
    pareto = [(w, h, o) for (w, h), o in out.items()
              if not any(w2 <= w and h2 <= h and (w2, h2) != (w, h) for (w2, h2) in out)]
    return sorted(pareto, key=lambda a: (a[0] * a[1], max(a[0], a[1])))


def extras_below(cell: Cell, extras: Sequence[tuple[str, int, int]], g: int) -> Cell:
    """Each expert's small tensors shelf-packed below the cell's matrices."""
    if not extras:
        return cell
    items = [(j, k, h, w) for j in range(cell.k) for k, h, w in extras]
    offs, w, h = _shelf([(w, h) for _j, _k, h, w in items], max(cell.w, 1), g)
    offsets = dict(cell.offsets)
    for (j, k, _h, _w), (x, y) in zip(items, offs, strict=True):
        offsets[(j, k)] = (x, cell.h + g + y)
    return Cell(cell.k, offsets, max(cell.w, w), cell.h + g + h)


def plan_cell(main: Sequence[tuple[str, int, int]], extras: Sequence[tuple[str, int, int]],
               g: int, pairs: bool) -> Cell:
    """The cell: one expert by its best arrangement, or two mirrored (module doc)."""
    w, h, offs = _arrangements(main, g)[0]
    best = Cell(1, {(0, k): xy for k, xy in offs.items()}, w, h)
    downs = [p for p in main if p[0] not in _INPUT_ROLES]
    inputs = [p for p in main if p[0] in _INPUT_ROLES]
    if pairs and len(downs) == 1 and inputs:
        dk, dh, dw = downs[0]
        for bw, bh, bo in _arrangements(inputs, g):
            for vertical in (True, False):
                if vertical:  # [A0][B0 / B1][A1]
                    cw, ch = 2 * dw + bw + 2 * g, max(2 * bh + g, dh)
                    o0, o1 = (dw + g, 0), (dw + g, bh + g)
                    a0, a1 = (0, 0), (dw + bw + 2 * g, ch - dh)
                else:  # [A0] / [B0 | B1] / [A1]
                    cw, ch = max(2 * bw + g, dw), 2 * dh + bh + 2 * g
                    o0, o1 = (0, dh + g), (bw + g, dh + g)
                    a0, a1 = (0, 0), (cw - dw, dh + bh + 2 * g)
                if cw * ch <= PAIR_GAIN * 2 * best.w * best.h:
                    offsets = {(0, dk): a0, (1, dk): a1}
                    for k, (x, y) in bo.items():
                        offsets[(0, k)] = (o0[0] + x, o0[1] + y)
                        offsets[(1, k)] = (o1[0] + x, o1[1] + y)
                    if best.k == 1 or cw * ch < best.w * best.h:
                        best = Cell(2, offsets, cw, ch)
    return extras_below(best, extras, g)


def band(sizes: Mapping[str, tuple[int, int]], subs: Sequence[str], c_w: int, gap: int
          ) -> tuple[dict[str, tuple[int, int]], int, int]:
    """Slots shelf-packed at width ``c_w``, 1-row ones stacked after them (as arch's blocks)."""
    mats = [s for s in subs if sizes[s][0] > 1]
    vecs = [s for s in subs if sizes[s][0] <= 1]
    offs, w, h = _shelf([(sizes[s][1], sizes[s][0]) for s in mats], c_w, gap)
    out = dict(zip(mats, offs, strict=True))
    if vecs:
        vgap = max(1, gap // 4)
        vx = w + gap if mats else 0
        vw = max(sizes[s][1] for s in vecs)
        vy = 0
        if mats and vx + vw > c_w:
            vx, vy = 0, h + gap
        for i, s in enumerate(vecs):
            out[s] = (vx, vy + i * (1 + vgap))
        w, h = max(w, vx + vw), max(h, vy + len(vecs) * (1 + vgap) - vgap)
    return out, w, h


class Sky(NamedTuple):
    """A skyline pack: offsets by key, the skyline (x0, x1, y below which all is taken; items
    are inflated by the gap on their right and bottom) and the bottom of the lowest item."""

    offsets: dict[str, tuple[int, int]]
    sky: tuple[tuple[int, int, int], ...]
    h: int


def skyline(items: Sequence[tuple[str, int, int]], c_w: int, gap: int,
             start: Sky | None = None) -> Sky:
    """Items (key, h, w) packed bottom-left at width ``c_w``, tallest first (Jylänki 2010, "A
    thousand ways to pack the bin", skyline bottom-left), continuing ``start``'s skyline."""
    if len(items) > SKYLINE_MAX:  # quadratic in the items: shelves beyond a block's worth
        offs, _w, h = band({k: (ih, iw) for k, ih, iw in items}, sorted(
            (k for k, _h, _w in items), key=_sub_key), c_w, gap)
        y0 = start.h + gap if start is not None and start.h else 0
        return Sky({k: (x, y0 + y) for k, (x, y) in offs.items()},
                    ((0, c_w + gap, y0 + h + gap),), y0 + h)
    sky = list(start.sky) if start is not None else [(0, c_w + gap, 0)]
    offsets: dict[str, tuple[int, int]] = {}
    bottom = start.h if start is not None else 0
    for key, h, w in sorted(items, key=lambda it: (-it[1], -it[2], natural_key(it[0]))):
        best: tuple[int, int] | None = None
        for x0, _x1, _y in sky:
            if x0 + w + gap > c_w + gap and x0 > 0:
                continue
            top = max(y for a, b, y in sky if a < x0 + w + gap and b > x0)
            if best is None or (top + h, x0) < (best[1] + h, best[0]):
                best = (x0, top)
        assert best is not None
        x, y = best
        offsets[key] = (x, y)
        bottom = max(bottom, y + h)
        x1 = x + w + gap
        new = [(a, min(b, x), yy) for a, b, yy in sky if a < x]
        new.append((x, x1, y + h + gap))
        new += [(max(a, x1), b, yy) for a, b, yy in sky if b > x1]
        sky = [seg for seg in new if seg[1] > seg[0]]
    return Sky(offsets, tuple(sky), bottom)
