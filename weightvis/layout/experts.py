"""The architectural layout of a Mixture-of-Experts model: in every MoE block the routed experts
form a grid (MOE.md §1; DESIGN.md "expert grids"). Reads shapes and names only.

A block, top to bottom at the block width: its top - attention, then in an MoE block the router,
selection bias, other MLP tensors and the shared-expert cell beside them (skyline-packed,
layout/packing.py), in a dense block its MLP - then, in an MoE block, the expert grid; then
norms, then the rest. Attention sits at one offset in every block, dense or MoE; every other
sub-tensor at one offset in every block of its kind; the norms below both kinds' MLP.

The grid: a **cell** holds one expert's matrices - gate, up, down (or gpt-oss' interleaved
gate_up, and down) arranged by the guillotine cut of least area, then its own small tensors
(biases, FP8 block scales) - or two experts mirrored, ``[down₀ | gate/up₀ over gate/up₁ |
down₁]`` (or its transpose), when that packs at least ``packing.PAIR_GAIN`` tighter
(DeepSeek-V3: down is 7168 × 2048, gate/up 2048 × 7168: one expert per cell fills 67 %, two
95 %). Expert e sits in cell e // k, at the same offset in every MoE block; every placement is
labelled ``expert 17 · gate``. A fused tensor is placed per expert: row ranges of its stacked
2-D view (``[E, r, c]`` viewed (E·r) × c, ``types.view_of``), so 1 px is still 1 element and the
viewer's readout index is the element's. The grid's column count is chosen with the block
grid's for the smallest canvas whose aspect is within a factor ``_ASPECT_SLACK`` of 16:9.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from ..index import SLOT_KINDS, NameIndex, expert_rest, is_embedding, slot_kind
from ..types import Group, Placement, SceneLayout, TensorInfo
from .arch import _gap_for, _pack_section, _Packed, _sub_key, natural_key
from .packing import Cell, band, extras_below, plan_cell, skyline

if TYPE_CHECKING:
    from ..moe.structure import ExpertSlice, MoEStructure

__all__ = ["experts_layout"]

_TARGET_ASPECT = 16 / 9
_ASPECT_SLACK = 2.0
"""Canvases whose aspect is within this factor of 16:9 compete on area alone."""
_SHARED = "\x00shared experts"
"""The key of the shared-expert cell among the slots of an MoE block's top."""
_SECTION_CANDIDATES = 12
"""Layouts (by the block grid's fit alone) whose canvas is then scored with the sections."""


class _Draw(NamedTuple):
    """One rectangle of one tensor's view, drawn at a keyed position of a cell."""

    key: str
    tensor: str
    e_r0: int
    e_r1: int
    e_c0: int
    e_c1: int
    label: str


def _slice_rect(t: TensorInfo, s: ExpertSlice) -> tuple[int, int, int, int] | None:
    """The rectangle of ``t``'s 2-D view covering slice ``s`` (interleaved columns: all of
    them), or None when the view does not hold it as one rectangle."""
    (r0, r1), (c0, c1) = s.rows, s.cols
    if s.col_step != 1:
        c0 = 0
    if s.expert_axis_index is None:
        return (r0, r1, c0, c1)
    if t.row_dims != 2 or len(t.shape) != 3:
        return None
    base = s.expert_axis_index * t.shape[1]
    return (base + r0, base + r1, c0, c1)


class _Plan(NamedTuple):
    """A block: size; the lower bands (slot offsets and their y); the top's slot offsets in an
    MoE block (attention, router, shared-expert cell) and in a dense one (attention, MLP); the
    expert grid's rect and columns."""

    w: int
    h: int
    bands: dict[str, tuple[dict[str, tuple[int, int]], int]]
    router: dict[str, tuple[int, int]]
    dense: dict[str, tuple[int, int]]
    grid: tuple[int, int, int, int]
    cols: int


class _Model(NamedTuple):
    """Per MoE block: expert -> drawings, shared drawings; tensors they place; leftovers."""

    cells: dict[int, dict[int, list[_Draw]]]
    shared: dict[int, list[_Draw]]
    claimed: set[str]
    rest: dict[int, dict[str, Placement]]
    """Rows of fused tensors beyond the routed experts (LongCat's zero experts), by sub."""


def _model(moe: MoEStructure, index: NameIndex, infos: Mapping[str, TensorInfo]
           ) -> _Model | None:
    cells: dict[int, dict[int, list[_Draw]]] = defaultdict(lambda: defaultdict(list))
    claimed: set[str] = set()
    seen: set[tuple[int, int, str]] = set()
    n_exp: dict[int, int] = defaultdict(int)
    new = tuple.__new__  # _Draw(...) without its Python-level __new__ (44k slices)
    for (b, role), ss in moe.slices.items():
        n_exp[b] = max(n_exp[b], len(ss))
        cb = cells[b]
        for e, s in enumerate(ss):
            if s.expert_axis_index is None and s.col_step == 1:  # a 2-D tensor: the slice
                (r0, r1), (c0, c1) = s.rows, s.cols
                cb[e].append(new(_Draw, (role, s.tensor, r0, r1, c0, c1,
                                         f"expert {e} · {role}")))
                claimed.add(s.tensor)
                continue
            rect = _slice_rect(infos[s.tensor], s)
            if rect is None:
                return None
            key = "gate_up" if s.col_step != 1 else role
            if (b, e, key) not in seen:
                seen.add((b, e, key))
                cb[e].append(_Draw(key, s.tensor, *rect, f"expert {e} · {key}"))
                claimed.add(s.tensor)
    shared: dict[int, list[_Draw]] = defaultdict(list)
    rest: dict[int, dict[str, Placement]] = defaultdict(dict)
    moe_blocks = set(moe.moe_layers)
    shared_roles = {n: r for lay in moe.shared.values() for r, n in lay.items()}
    for tn in index:
        if tn.prefix != moe.stack or tn.block not in moe_blocks or tn.moe is None:
            continue
        b, sub, t = tn.block, tn.sub or "", infos[tn.name]
        if tn.moe == "shared":
            s_role = shared_roles.get(tn.name)
            label = f"shared expert · {s_role}" if s_role else sub
            shared[b].append(_Draw(s_role or sub, t.name, 0, t.e_rows, 0, t.e_cols, label))
            claimed.add(t.name)
            continue
        if tn.moe == "expert" and tn.name not in claimed and tn.expert is not None:
            rest_name = expert_rest(sub)
            if tn.expert < n_exp[b] and rest_name is not None:
                cells[b][tn.expert].append(_Draw(
                    "x:" + rest_name, t.name, 0, t.e_rows, 0, t.e_cols,
                    f"expert {tn.expert} · {rest_name}"))
                claimed.add(t.name)
            continue
        if tn.moe != "fused" or len(t.shape) < 2 or t.numel == 0:
            continue
        n = min(n_exp[b], t.shape[0])
        per = t.shape[1] if len(t.shape) > 2 and t.row_dims == 2 else 1
        if len(t.shape) > 2 and t.row_dims != 2:
            continue
        if t.name not in claimed:
            short = sub.rsplit(".", 1)[-1]
            for e in range(n):
                cells[b][e].append(_Draw("x:" + sub, t.name, e * per, (e + 1) * per, 0,
                                         t.e_cols, f"expert {e} · {short}"))
            claimed.add(t.name)
        if t.shape[0] > n:  # rows past the routed experts: drawn in the router band
            rest[b][sub + " (rest)"] = Placement(t.name, 0, 0, n * per, t.e_rows, 0, t.e_cols)
    return _Model(cells, shared, claimed, rest)


def _fit_score(c_w: int, c_h: int) -> float:
    off = abs(math.log(max(c_w, 1) / max(c_h, 1) / _TARGET_ASPECT))
    return c_w * c_h * (1.0 + max(0.0, off - math.log(_ASPECT_SLACK)))


def experts_layout(tensors: Sequence[TensorInfo], index: NameIndex, moe: MoEStructure
                   ) -> SceneLayout | None:
    """The MoE block layout (module doc), or None when the structure cannot be drawn this way
    (its stack is not the dominant one, or a fused tensor's view holds no expert as a
    rectangle): the caller then lays the model out as a dense one."""
    prefix = index.block_prefix
    if prefix is None or moe.stack != prefix:
        return None
    infos = {t.name: t for t in tensors}
    model = _model(moe, index, infos)
    if model is None:
        return None
    moe_blocks = set(moe.moe_layers)
    block_ts: dict[int, dict[str, TensorInfo]] = defaultdict(dict)
    outside: list[TensorInfo] = []
    slots: dict[str, tuple[int | None, str | None]] = {}
    claimed = model.claimed
    for t in tensors:
        tn = index[t.name]
        if tn.prefix != prefix:
            outside.append(t)
            continue
        slots[t.name] = (tn.block, tn.sub)
        if t.name not in claimed and t.numel > 0:
            block_ts[tn.block][tn.sub] = t  # type: ignore[index]
    for b in moe_blocks:
        block_ts.setdefault(b, {})
    # slot sizes: bands common to all blocks; MLP region per variant
    sizes: dict[str, tuple[int, int]] = {}
    region: dict[bool, set[str]] = {True: set(), False: set()}
    common: set[str] = set()
    for b, subs in block_ts.items():
        for sub, t in subs.items():
            h0, w0 = sizes.get(sub, (0, 0))
            sizes[sub] = (max(h0, t.e_rows), max(w0, t.e_cols))
            (region[b in moe_blocks] if slot_kind(sub) == "mlp" else common).add(sub)
    for rests in model.rest.values():
        for sub, p in rests.items():
            h0, w0 = sizes.get(sub, (0, 0))
            sizes[sub] = (max(h0, p.c_h), max(w0, p.c_w))
            region[True].add(sub)
    gap = _gap_for(max((max(hw) for hw in sizes.values()), default=1))
    # the cell and the shared-expert column
    key_sizes: dict[str, tuple[int, int]] = {}
    for experts in model.cells.values():
        for draws in experts.values():
            for d in draws:
                h0, w0 = key_sizes.get(d.key, (0, 0))
                key_sizes[d.key] = (max(h0, d.e_r1 - d.e_r0), max(w0, d.e_c1 - d.e_c0))
    order = {k: i for i, k in enumerate(("gate", "up", "gate_up", "down"))}
    main = [(k, *key_sizes[k]) for k in sorted(key_sizes, key=lambda k: order.get(k, 9))
            if k in order]
    extras = [(k, *key_sizes[k]) for k in sorted(key_sizes, key=natural_key) if k not in order]
    m = max((max(h, w) for _k, h, w in main), default=1)
    g_in, g_cell = max(1, math.ceil(m / 256)), max(2, math.ceil(m / 64))
    cell = plan_cell(main, extras, g_in, pairs=True) if main else Cell(1, {}, 0, 0)
    sh_sizes: dict[str, tuple[int, int]] = {}
    for draws in model.shared.values():
        for d in draws:
            h0, w0 = sh_sizes.get(d.key, (0, 0))
            sh_sizes[d.key] = (max(h0, d.e_r1 - d.e_r0), max(w0, d.e_c1 - d.e_c0))
    sh_main = [(k, *sh_sizes[k]) for k in ("gate", "up", "gate_up", "down") if k in sh_sizes]
    sh_extra = [(k, *sh_sizes[k]) for k in sorted(sh_sizes, key=natural_key)
                if k not in order]
    shared = (plan_cell(sh_main, sh_extra, g_in, pairs=False) if sh_main
              else extras_below(Cell(1, {}, 0, 0), sh_extra, g_in) if sh_extra else None)
    n_cells = -(-max(moe.experts, 1) // cell.k)
    by_kind = {k: sorted((s for s in common if slot_kind(s) == k), key=_sub_key)
               for k in SLOT_KINDS if k != "mlp"}
    att_items = [(sub, *sizes[sub]) for sub in by_kind["attention"]]
    moe_items = [(sub, *sizes[sub]) for sub in region[True]]
    if shared is not None:
        moe_items.append((_SHARED, shared.h, shared.w))
    dense_items = [(sub, *sizes[sub]) for sub in region[False]]
    widest = max((w for _h, w in sizes.values()), default=1)
    b_lo, b_hi = min(block_ts), max(block_ts)
    n_blocks = b_hi - b_lo + 1
    head = [t for t in outside if is_embedding(index[t.name].canonical)]
    tail = [t for t in outside if not is_embedding(index[t.name].canonical)]
    sections: dict[int, tuple[_Packed, _Packed]] = {}

    def plan(cols: int) -> _Plan:
        """The block plan with ``cols`` grid columns."""
        grid_w = cols * cell.w + (cols - 1) * g_cell
        grid_h = -(-n_cells // cols) * (cell.h + g_cell) - g_cell
        c_w = max(grid_w, widest, shared.w if shared else 0)
        top = skyline(att_items, c_w, gap)
        moe_top = skyline(moe_items, c_w, gap, top)
        dense = skyline(dense_items, c_w, gap, top)
        grid_y = moe_top.h + gap if moe_top.h else 0
        after = max(grid_y + grid_h, dense.h) + gap
        bands: dict[str, tuple[dict[str, tuple[int, int]], int]] = {}
        for kind in ("norm", "other"):
            if by_kind[kind]:
                offs, _w, h = band(sizes, by_kind[kind], c_w, gap)
                bands[kind], after = (offs, after), after + h + gap
        return _Plan(c_w, after - gap, bands, {**top.offsets, **moe_top.offsets},
                     {**top.offsets, **dense.offsets}, (0, grid_y, grid_w, grid_h), cols)

    def canvas(bw: int, bh: int, ncols: int) -> tuple[int, int, int, _Packed, _Packed]:
        """(width, height, y of the block grid, head, tail at y 0) with ``ncols`` columns."""
        nrows = -(-n_blocks // ncols)
        grid_w, grid_h = ncols * bw + (ncols - 1) * 2 * gap, nrows * bh + (nrows - 1) * 2 * gap
        key = max(grid_w, 1)
        if key not in sections:
            sections[key] = (_pack_section(head, key, gap, (0, 0), "embeddings"),
                             _pack_section(tail, key, gap, (0, 0), "other"))
        hd, tl = sections[key]
        grid_y = hd.h + 4 * gap if hd.placements else 0
        height = grid_y + grid_h + 4 * gap + tl.h if tl.placements else grid_y + grid_h
        return max(grid_w, hd.w, tl.w), height, grid_y, hd, tl

    # candidates by the block grid alone, then the best few with the sections above/below
    grids: list[tuple[float, int, int, int, int]] = []
    tried: set[int] = set()
    for cols in range(1, n_cells + 1):
        if -(-n_cells // cols) in tried:
            continue  # the same rows, only wider
        tried.add(-(-n_cells // cols))
        pl = plan(cols)
        for ncols in range(1, n_blocks + 1):
            nrows = -(-n_blocks // ncols)
            if ncols > 1 and nrows == -(-n_blocks // (ncols - 1)):
                continue
            w, h = ncols * (pl.w + 2 * gap), nrows * (pl.h + 2 * gap)
            grids.append((_fit_score(w, h), cols, ncols, pl.w, pl.h))
    grids.sort()
    best = min(grids[:_SECTION_CANDIDATES],
               key=lambda c: (_fit_score(*canvas(c[3], c[4], c[2])[:2]), c[0]))
    pl = plan(best[1])
    ncols = best[2]
    width, height, top, hd, tl = canvas(pl.w, pl.h, ncols)
    nrows = -(-n_blocks // ncols)
    placements: list[Placement] = list(hd.placements)
    groups: list[Group] = list(hd.groups)
    gx0, gy0, grid_w, grid_h = pl.grid
    offsets, add, new = cell.offsets, placements.append, tuple.__new__
    for b in range(b_lo, b_hi + 1):
        if b not in block_ts:
            continue
        col, row = divmod(b - b_lo, nrows)
        bx, by = col * (pl.w + 2 * gap), top + row * (pl.h + 2 * gap)
        groups.append(Group(f"block {b}", "block", bx, by, pl.w, pl.h))
        is_moe = b in moe_blocks
        tops = pl.router if is_moe else pl.dense
        for sub, t in sorted(block_ts[b].items()):
            kind_band = pl.bands.get(slot_kind(sub))
            if kind_band is not None and sub in kind_band[0]:
                (ox, oy), y0 = kind_band[0][sub], kind_band[1]
            else:
                (ox, oy), y0 = tops[sub], 0
            placements.append(Placement(t.name, bx + ox, by + y0 + oy, 0, t.e_rows, 0,
                                        t.e_cols))
        if not is_moe:
            continue
        for sub, p in sorted(model.rest.get(b, {}).items()):
            ox, oy = tops[sub]
            placements.append(p._replace(c_x=bx + ox, c_y=by + oy))
        groups.append(Group("routed experts", "section", bx + gx0, by + gy0, grid_w, grid_h))
        for e, draws in sorted(model.cells.get(b, {}).items()):
            ci, j = divmod(e, cell.k)
            cr, cc = divmod(ci, pl.cols)
            cx, cy = bx + gx0 + cc * (cell.w + g_cell), by + gy0 + cr * (cell.h + g_cell)
            for key, tensor, r0, r1, c0, c1, label in draws:  # (44k: Placement's fast __new__)
                ox, oy = offsets[(j, key)]
                add(new(Placement, (tensor, cx + ox, cy + oy, r0, r1, c0, c1, label)))
        if shared is not None and model.shared.get(b):
            sx, sy = bx + tops[_SHARED][0], by + tops[_SHARED][1]
            groups.append(Group("shared experts", "section", sx, sy, shared.w, shared.h))
            for d in model.shared[b]:
                ox, oy = shared.offsets[(0, d.key)]
                placements.append(Placement(d.tensor, sx + ox, sy + oy, d.e_r0, d.e_r1,
                                            d.e_c0, d.e_c1, d.label))
    tl_y = top + nrows * pl.h + (nrows - 1) * 2 * gap + 4 * gap
    placements += [p._replace(c_y=p.c_y + tl_y) for p in tl.placements]
    groups += [g._replace(c_y=g.c_y + tl_y) for g in tl.groups]
    return SceneLayout("arch", max(width, 1), max(height, 1), tuple(placements),
                       tuple(groups), slots)
