"""Architectural layout: transformer blocks stacked on a grid, the same sub-tensor at the same
offset in every block; embeddings above, the rest below. Reads shapes and names only.

Geometry, all in canvas pixels at max zoom (1 px = 1 element):
- a *slot* per block sub-path (``self_attn.q_proj.weight``), sized to the largest view of that
  sub-path over all blocks; slots are arranged once, by kind (attention, MLP, norms, other) into
  shelves, 1-row tensors (biases, norms) stacked in a column at the end of their shelf;
- blocks on a column-major grid whose column count gives the canvas the aspect closest to 16:9;
- sections above/below the grid are shelf-packed by name prefix at the grid's width; a tensor wider
  than the canvas is folded into column chunks stacked downwards (whole convolution kernels per
  chunk), a tensor much taller than wide (embeddings, lm_head, an LSTM's input weights) into row
  chunks side by side, each chunk labelled with its range (``_fold``). Folding never rescales.
- without transformer blocks, the tensors are grouped by name prefix in natural order
  (``index.order_key``) at a width chosen for the canvas's aspect.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from ..index import SLOT_KINDS, NameIndex, is_embedding, natural_key, order_key, slot_kind
from ..types import Group, Placement, SceneLayout, TensorInfo

if TYPE_CHECKING:
    from ..moe.structure import MoEStructure

# names are parsed by the name index (weightvis.index); the layout only places them
__all__ = ["arch_layout", "natural_key"]

_TARGET_ASPECT = 16 / 9


# -- ordering of sub-paths (their kinds: index.slot_kind) ----------------------------------------
_KINDS = SLOT_KINDS

_RANK = {
    "self": 5, "self_attn": 5, "selfattention": 5,
    "q_proj": 10, "query": 10, "q": 10, "wq": 10, "attn_q": 10, "c_attn": 10, "qkv": 10,
    "qkv_proj": 10, "query_key_value": 10, "wqkv": 10, "attn_qkv": 10,
    "k_proj": 11, "key": 11, "k": 11, "wk": 11, "attn_k": 11,
    "v_proj": 12, "value": 12, "v": 12, "wv": 12, "attn_v": 12,
    "o_proj": 13, "out_proj": 13, "o": 13, "attn_output": 13, "c_proj": 13,
    "router": 15, "gate": 16, "ffn_gate_inp": 16,
    "gate_proj": 20, "w1": 20, "wi_0": 20, "wi": 20, "fc1": 20, "c_fc": 20, "ffn_gate": 20,
    "ffn_gate_exps": 20,
    "up_proj": 21, "w3": 21, "wi_1": 21, "ffn_up": 21, "ffn_up_exps": 21,
    "down_proj": 22, "w2": 22, "wo": 22, "fc2": 22, "ffn_down": 22, "ffn_down_exps": 22,
    "output": 30,
    "weight": 0, "bias": 1,
}


def _sub_key(sub: str) -> tuple[object, ...]:
    return (_KINDS.index(slot_kind(sub)),) + tuple(
        (_RANK.get(c.lower(), 50), natural_key(c)) for c in sub.split("."))


# -- packing helpers ---------------------------------------------------------------------------
class _Piece(NamedTuple):
    """Part of an item: an element block drawn at (dx, dy) inside the item; ``label`` names the
    part when the tensor is folded into several (``Placement.label``)."""

    e_r0: int
    e_r1: int
    e_c0: int
    e_c1: int
    dx: int
    dy: int
    label: str | None = None


class _Item(NamedTuple):
    name: str
    w: int
    h: int
    pieces: tuple[_Piece, ...]


def _short(name: str) -> str:
    """The end of a tensor's name that its pieces' labels repeat: the last dotted part, with the
    parts before it up to the first that is neither ``weight`` / ``bias`` nor a number
    (``conv2.weight``, ``weight_ih_l0``, ``model.1.weight`` of ``lin0.model.1.weight``)."""
    parts = name.split(".")
    k = len(parts) - 1
    while k > 0 and (parts[k] in ("weight", "bias") or parts[k].isdecimal()):
        k -= 1
    return ".".join(parts[k:])


def _kernel(t: TensorInfo) -> int:
    """Elements of one kernel in a row of an N-D tensor's view: the product of dims 2.. (a
    convolution's kh·kw taps, a Conv1d's k), stored contiguously; 1 for 1-D and 2-D tensors."""
    return math.prod(t.shape[2:]) if t.row_dims == 1 and len(t.shape) >= 3 else 1


def _fold(t: TensorInfo, c_max_w: int, gap: int, compact: bool = False) -> _Item:
    """One tensor as an item no wider than ``c_max_w`` (when it can be), folded, never scaled.

    A row wider than ``c_max_w`` is cut into column chunks stacked downwards, each a whole
    number of kernels (``_kernel``: a convolution's taps stay side by side in one row); a tensor
    more than 4x taller than wide into row chunks side by side. Every chunk is labelled with its
    range, then the end of the name (``rows 0–204 · weight_ih_l0``, ``cols 0–4095 · fc.weight``,
    ``[:, 0–127] · conv2.weight``: dim 1 of an N-D tensor; the viewer keeps the range when it
    must shorten a label). With
    ``compact`` (a canvas whose width is free: no transformer blocks) chunks are 1 px apart and
    a tall tensor makes a near-square block (about sqrt(rows / cols) chunks) instead of filling
    the width, so that its chunks read as one tensor."""
    rows, cols = t.e_rows, t.e_cols
    fgap = 1 if compact else gap
    short = _short(t.name)
    if cols > c_max_w:
        kern = _kernel(t)
        chunk = c_max_w // kern * kern if kern <= c_max_w else c_max_w
        k = math.ceil(cols / chunk)
        step = rows if rows == 1 else rows + fgap

        def span(c0: int, c1: int) -> str:
            if chunk % kern:
                return f"cols {c0}–{c1 - 1}"
            return f"[:, {c0 // kern}–{c1 // kern - 1}]" if kern > 1 else f"cols {c0}–{c1 - 1}"

        pieces = tuple(_Piece(0, rows, c0, c1, 0, i * step, f"{span(c0, c1)} · {short}")
                       for i in range(k)
                       for c0, c1 in [(i * chunk, min(cols, (i + 1) * chunk))])
        return _Item(t.name, chunk, (k - 1) * step + rows, pieces)
    if rows > 4 * cols:
        want = max(2, round(math.sqrt(rows / max(cols, 1)))) if compact \
            else math.ceil(rows / max(cols, 1))
        k = min((c_max_w + fgap) // (cols + fgap), want)
        if k >= 2:
            per = math.ceil(rows / k)
            k = math.ceil(rows / per)
            pieces = tuple(_Piece(r0, r1, 0, cols, i * (cols + fgap), 0,
                                  f"rows {r0}–{r1 - 1} · {short}")
                           for i in range(k)
                           for r0, r1 in [(i * per, min(rows, (i + 1) * per))])
            return _Item(t.name, k * cols + (k - 1) * fgap, per, pieces)
    return _Item(t.name, cols, rows, (_Piece(0, rows, 0, cols, 0, 0),))


def _shelf(sizes: Sequence[tuple[int, int]], c_max_w: int, gap: int
           ) -> tuple[list[tuple[int, int]], int, int]:
    """Shelf-pack rectangles in order; returns their offsets and the bounding (w, h)."""
    out: list[tuple[int, int]] = []
    x = y = shelf_h = width = 0
    for w, h in sizes:
        if x > 0 and x + w > c_max_w:
            y += shelf_h + gap
            x = shelf_h = 0
        out.append((x, y))
        x += w + gap
        shelf_h = max(shelf_h, h)
        width = max(width, x - gap)
    return out, width, (y + shelf_h if sizes else 0)


def _vector_stack(items: Sequence[_Item], gap: int) -> tuple[list[tuple[int, int]], int, int]:
    offs, y = [], 0
    for it in items:
        offs.append((0, y))
        y += it.h + gap
    return offs, max((it.w for it in items), default=0), max(0, y - gap)


# -- sections and blocks -----------------------------------------------------------------------
def _prefix_of(name: str, depth: int = 2) -> str:
    comps = name.split(".")
    return ".".join(comps[:min(depth, max(1, len(comps) - 1))])


class _Packed(NamedTuple):
    placements: list[Placement]
    groups: list[Group]
    w: int
    h: int


def _pack_section(tensors: Sequence[TensorInfo], c_w: int, gap: int, origin: tuple[int, int],
                  label: str | None, compact: bool = False) -> _Packed:
    """Tensors grouped by name prefix, each group shelf-packed, groups shelf-packed at width c_w;
    in ``index.order_key`` order (natural: ``layer2`` before ``layer10``). ``compact``: as
    ``_fold``'s."""
    by_prefix: dict[str, list[TensorInfo]] = defaultdict(list)
    for t in sorted(tensors, key=lambda t: order_key(t.name)):
        if t.numel > 0:
            by_prefix[_prefix_of(t.name)].append(t)
    boxes = []
    for prefix, ts in by_prefix.items():
        items = [_fold(t, c_w, gap, compact) for t in ts]
        mats = [it for it in items if it.h > 1 or len(it.pieces) > 1]
        vecs = [it for it in items if not (it.h > 1 or len(it.pieces) > 1)]
        offs, w, h = _shelf([(it.w, it.h) for it in mats], c_w, gap)
        voffs, vw, vh = _vector_stack(vecs, max(1, gap // 4))
        placed = list(zip(mats, offs, strict=False))
        if vecs:
            vx = w + gap if mats else 0
            if mats and vx + vw > c_w:  # vectors below the matrices
                vx, vy = 0, h + gap
            else:
                vy = 0
            placed += [(it, (vx + ox, vy + oy)) for it, (ox, oy) in zip(vecs, voffs, strict=False)]
            w, h = max(w, vx + vw), max(h, vy + vh)
        boxes.append((prefix, placed, w, h))
    goffs, w, h = _shelf([(b[2], b[3]) for b in boxes], c_w, 2 * gap)
    placements: list[Placement] = []
    groups: list[Group] = []
    ox, oy = origin
    for (prefix, placed, bw, bh), (gx, gy) in zip(boxes, goffs, strict=False):
        for it, (ix, iy) in placed:
            for p in it.pieces:
                placements.append(Placement(it.name, ox + gx + ix + p.dx, oy + gy + iy + p.dy,
                                            p.e_r0, p.e_r1, p.e_c0, p.e_c1, p.label))
        groups.append(Group(prefix, "prefix", ox + gx, oy + gy, bw, bh))
    if label and placements:
        groups.insert(0, Group(label, "section", ox, oy, w, h))
    return _Packed(placements, groups, w, h)


class _BlockPlan(NamedTuple):
    subs: list[str]
    offsets: dict[str, tuple[int, int]]
    w: int
    h: int


def _plan_block(slot_sizes: dict[str, tuple[int, int]], gap: int) -> _BlockPlan:
    subs = sorted(slot_sizes, key=_sub_key)
    area = sum(w * h for h, w in slot_sizes.values())
    widest = max((w for _, w in slot_sizes.values()), default=1)
    c_max_w = max(widest, int(2 * math.sqrt(area)))
    offsets: dict[str, tuple[int, int]] = {}
    y = bw = 0
    for kind in _KINDS:
        ks = [s for s in subs if slot_kind(s) == kind]
        if not ks:
            continue
        mats = [s for s in ks if slot_sizes[s][0] > 1]
        vecs = [s for s in ks if slot_sizes[s][0] <= 1]
        offs, w, h = _shelf([(slot_sizes[s][1], slot_sizes[s][0]) for s in mats], c_max_w, gap)
        for s, (ox, oy) in zip(mats, offs, strict=False):
            offsets[s] = (ox, y + oy)
        if vecs:
            vgap = max(1, gap // 4)
            vx = w + gap if mats else 0
            vw = max(slot_sizes[s][1] for s in vecs)
            if mats and vx + vw > c_max_w:
                vx, vy = 0, h + gap
            else:
                vy = 0
            for i, s in enumerate(vecs):
                offsets[s] = (vx, y + vy + i * (1 + vgap))
            w = max(w, vx + vw)
            h = max(h, vy + len(vecs) * (1 + vgap) - vgap)
        bw = max(bw, w)
        y += h + gap
    return _BlockPlan(subs, offsets, bw, max(0, y - gap))


def _gap_for(max_dim: int) -> int:
    return max(2, math.ceil(max_dim / 32))


def arch_layout(tensors: Sequence[TensorInfo], canonical: Mapping[str, str] | None = None,
                index: NameIndex | None = None, moe: MoEStructure | None = None
                ) -> SceneLayout:
    """The architectural scene for these tensors (shapes and names only). Blocks and slots come
    from the canonical names (weightvis.index), so two formats of one model share slots:
    ``index`` is the name index of exactly these tensors' names; without it, one is built from
    ``canonical`` (tensor name -> canonical name; a name it lacks is its own). With ``moe``
    (``moe.detect_moe`` of these tensors), routed experts form a grid in every MoE block
    (layout/experts.py)."""
    if index is None:
        index = NameIndex([t.name for t in tensors], canonical=canonical or {})
    assert all(t.name in index for t in tensors) and len(index) == len({t.name for t in tensors})
    if moe is not None:
        from .experts import experts_layout

        lay = experts_layout(tensors, index, moe)
        if lay is not None:
            return lay
    prefix = index.block_prefix
    if prefix is None:
        return _generic_layout(tensors)
    block_ts: dict[int, dict[str, TensorInfo]] = defaultdict(dict)
    outside: list[TensorInfo] = []
    for t in tensors:
        slot = index.slot(t.name)
        if slot is not None:
            block_ts[slot[0]][slot[1]] = t
        else:
            outside.append(t)
    slot_sizes: dict[str, tuple[int, int]] = {}
    for subs in block_ts.values():
        for sub, t in subs.items():
            if t.numel == 0:
                continue
            h0, w0 = slot_sizes.get(sub, (0, 0))
            slot_sizes[sub] = (max(h0, t.e_rows), max(w0, t.e_cols))
    max_dim = max((max(h, w) for h, w in slot_sizes.values()), default=1)
    gap = _gap_for(max_dim)
    plan = _plan_block(slot_sizes, gap)
    cell = _block_cells(sorted(block_ts))
    n_blocks = max(cell.values()) + 1
    head = [t for t in outside if is_embedding(index[t.name].canonical)]
    tail = [t for t in outside if not is_embedding(index[t.name].canonical)]
    bgap = 2 * gap
    sgap = 4 * gap

    def build(ncols: int, full: bool = True) -> tuple[list[Placement], list[Group], int, int]:
        """The canvas with ``ncols`` block columns; without ``full``, only its size and the
        sections (the block grid's placements are the bulk of a many-tensor model)."""
        nrows = math.ceil(n_blocks / ncols)
        grid_w = ncols * plan.w + (ncols - 1) * bgap
        grid_h = nrows * plan.h + (nrows - 1) * bgap
        c_w = max(grid_w, 1)
        hd = _pack_section(head, c_w, gap, (0, 0), "embeddings")
        grid_y = hd.h + sgap if hd.placements else 0
        placements = list(hd.placements)
        groups = list(hd.groups)
        for b, subs in sorted(block_ts.items()) if full else ():
            col, row = divmod(cell[b], nrows)
            bx, by = col * (plan.w + bgap), grid_y + row * (plan.h + bgap)
            groups.append(Group(f"block {b}", "block", bx, by, plan.w, plan.h))
            for sub, t in subs.items():
                if t.numel == 0:
                    continue
                ox, oy = plan.offsets[sub]
                placements.append(Placement(t.name, bx + ox, by + oy, 0, t.e_rows, 0, t.e_cols))
        tl_y = grid_y + grid_h + sgap
        tl = _pack_section(tail, c_w, gap, (0, tl_y), "other")
        placements += tl.placements
        groups += tl.groups
        width = max(grid_w, hd.w, tl.w)
        height = tl_y + tl.h if tl.placements else grid_y + grid_h
        return placements, groups, width, height

    best = None
    for ncols in range(1, n_blocks + 1):
        if ncols > 1 and math.ceil(n_blocks / ncols) == math.ceil(n_blocks / (ncols - 1)):
            continue  # same number of rows, only wider
        _p, _g, c_w_try, c_h_try = build(ncols, full=False)
        score = abs(math.log(max(c_w_try, 1) / max(c_h_try, 1) / _TARGET_ASPECT))
        if best is None or score < best[0] - 1e-9:
            best = (score, ncols)
    assert best is not None
    placements, groups, width, height = build(best[1])  # placements once, not per candidate
    slots: dict[str, tuple[int | None, str | None]] = {
        t.name: (b, sub) for b, subs in block_ts.items() for sub, t in subs.items()}
    return SceneLayout("arch", max(width, 1), max(height, 1), tuple(placements), tuple(groups),
                       slots)


MAX_GAP_FACTOR = 4
"""Missing blocks are drawn as holes in the grid while the grid has at most this many cells
per block present; a sparser numbering (``layers.0`` and ``layers.999999999``) puts the blocks
side by side in order instead, so the grid - and the layout's time - stays linear in the
number of tensors."""


def _block_cells(blocks: Sequence[int]) -> dict[int, int]:
    """Block index -> grid cell for the block indices present (ascending)."""
    if not blocks:
        return {}
    b_lo, span = blocks[0], blocks[-1] - blocks[0] + 1
    if span <= MAX_GAP_FACTOR * len(blocks):
        return {b: b - b_lo for b in blocks}
    return {b: i for i, b in enumerate(blocks)}


def _generic_layout(tensors: Sequence[TensorInfo]) -> SceneLayout:
    """No transformer blocks: groups by name prefix, the width chosen for a 16:9-ish canvas."""
    area = sum(t.numel for t in tensors)
    widest = max((min(t.e_cols, 1 << 62) for t in tensors if t.numel), default=1)
    gap = max(2, math.ceil(math.sqrt(max(area, 1)) / 100))
    ideal = math.sqrt(max(area, 1) * _TARGET_ASPECT)
    best = None
    for f in (0.5, 0.7, 0.85, 1.0, 1.2, 1.4, 1.7, 2.0, 2.5, 3.0):
        c_w = max(16, int(ideal * f))
        if c_w < min(widest, 16):
            continue
        pk = _pack_section(tensors, c_w, gap, (0, 0), None, compact=True)
        score = abs(math.log(max(pk.w, 1) / max(pk.h, 1) / _TARGET_ASPECT))
        if best is None or score < best[0] - 1e-9:
            best = (score, pk)
    assert best is not None
    pk = best[1]
    return SceneLayout("arch", max(pk.w, 1), max(pk.h, 1), tuple(pk.placements),
                       tuple(pk.groups), {})
