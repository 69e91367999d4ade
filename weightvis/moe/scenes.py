"""The MoE scenes of a bundle: the **summary** (layers x experts heatmaps, a panel per statistic
and role, plus the router's row norms and selection bias and, when probed, routing frequency),
the same panels **relative to each layer's median**, and the **similarity** scene (per MoE layer
and role the E x E debiased CKA and flattened cosine, plus co-activation when probed).

Each panel is a ``grids.Grid`` (a small virtual tensor of computed numbers) placed on a
"panels" layout and drawn by ``grids.SequentialPainter`` through the ordinary pipeline: tiles,
tile index and manifest like every scene. A heatmap's rows are the stack's layers in order:
dense layers are drawn as dense (stripes), not as zeros; a dead expert (all-zero matrix) is
white with a black cross. Each scene's manifest entry gains ``moe`` (the kind, the cell size and
per panel what it shows and its colour range) and each placement a ``cell`` (pixels per cell;
its ``rows`` / ``cols`` count cells): the viewer maps a hovered pixel to a cell and reads the
exact number from the manifest's ``moe`` (or a sidecar, moe/document.py).

Over the ~450-line guide (~475 lines): the three MoE scenes share one panel plan, its layouts
and the streamed sidecars; apart, each would rebuild the plan.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import InputError, WeightvisError
from ..executors import Executor
from ..grids import (
    MARK_DEAD,
    MARK_DENSE,
    MARK_NONE,
    MARK_VALUE,
    Grid,
    GridReader,
    GridSpec,
    SequentialPainter,
)
from ..options import MoEOptions
from ..sidework import reader_for
from ..tiling import CheckpointSpec, Geometry
from ..types import Group, Placement, SceneLayout
from .document import layer_sidecar, moe_document, routing_rows, sidecar_name, similarity_numbers
from .stats import RELATIVE_KIND, STATS, relative_to_median
from .summary import MoENumbers, moe_numbers

__all__ = ["SUMMARY_KEY", "RELATIVE_KEY", "SIMILARITY_KEY", "MoEPlan", "plan_moe",
           "detect_structure", "STAT_LABELS"]

SUMMARY_KEY, RELATIVE_KEY, SIMILARITY_KEY = "moe-summary", "moe-relative", "moe-similarity"
STAT_LABELS = {"rms": "rms", "mean_abs": "mean |w|", "max_over_rms": "max|w| / rms",
               "zero_fraction": "zero fraction", "stable_rank": "stable rank",
               "row_norm": "router row norm", "bias": "selection bias",
               "freq": "routing frequency"}
METRIC_LABELS = {"cka": "CKA", "cosine": "cosine", "coact": "co-activation"}


class Panel(NamedTuple):
    grid: Grid
    info: dict[str, Any]
    """What the viewer needs to read a cell (scene JSON ``moe.panels[name]``)."""


class MoEPlan(NamedTuple):
    """The MoE part of a plan: its scenes and their manifest entries' extras and the ``moe``
    document (its sidecar files are written by ``prepare``, a layer at a time)."""

    scenes: list[Any]
    extras: dict[str, dict[str, Any]]
    """scene key -> {"moe": ..., "cells": {tensor: cell}} (filled by ``prepare``)."""
    document: dict[str, Any]
    """moe.json (filled by ``prepare``)."""


def detect_structure(reader: Any, required: bool) -> Any:
    """structure.detect_moe of the checkpoint, or None (no routed experts; or, unless
    ``required``, the structure module is not part of this build)."""
    try:
        from .structure import detect_moe
    except ImportError:
        if required:
            raise WeightvisError("MoE scenes need weightvis.moe.structure, which this build "
                                 "of weightvis does not have") from None
        return None
    config = getattr(reader, "config", None) or None
    return detect_moe(reader, config)


def _cell(rows: int, cols: int, target: int) -> int:
    """Pixels per cell edge: a panel about ``target`` px on its longer side, 1..32 px."""
    return max(1, min(32, target // max(1, rows, cols)))


FROM_ZERO = ("zero_fraction", "freq", "coact")
"""Panels whose colour range starts at 0 (a fraction or a count: 0 is the darkest)."""


def _range(values: np.ndarray, marks: np.ndarray, stat: str = "") -> tuple[float, float]:
    """The colour range of a panel: min and max of its finite numbers (dead experts and dense
    layers excluded); from 0 for FROM_ZERO panels (and then hi > 0)."""
    v = values[(marks == MARK_VALUE) & np.isfinite(values)]
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)
    if stat in FROM_ZERO:
        lo, hi = 0.0, hi if hi > 0 else 1.0
    return lo, hi


def _heat(name: str, rows: list[int], moe_rows: dict[int, int], values: np.ndarray,
          dead: np.ndarray | None, cell: int, rng: tuple[float, float] | None,
          info: dict[str, Any]) -> Panel:
    """A layers x experts panel: MoE rows from ``values`` / ``dead`` (rows = MoE layers),
    dense layers striped."""
    e = values.shape[1]
    full = np.full((len(rows), e), np.nan)
    marks = np.full((len(rows), e), MARK_DENSE, np.uint8)
    for i, layer in enumerate(rows):
        j = moe_rows.get(layer)
        if j is None:
            continue
        full[i] = values[j]
        marks[i] = MARK_VALUE
        if dead is not None:
            marks[i][dead[j]] = MARK_DEAD
    marks[(marks == MARK_VALUE) & ~np.isfinite(full)] = MARK_NONE
    lo, hi = rng if rng is not None else _range(full, marks, info.get("stat", ""))
    info = {**info, "rows": rows, "moe_rows": [moe_rows.get(x) for x in rows],
            "lo": lo, "hi": hi}
    return Panel(Grid(name, full, marks, lo, hi, cell), info)


def _relative(p_values: np.ndarray, dead: np.ndarray, stat: str
              ) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    kind = RELATIVE_KIND[stat]
    rel, med = relative_to_median(p_values, dead, kind)
    centre = 1.0 if kind == "ratio" else 0.0
    dev = np.abs(rel[np.isfinite(rel)] - centre)
    d = float(dev.max()) if dev.size else 0.0
    return rel, med, (centre - d, centre + d)


def summary_panels(numbers: MoENumbers, structure: Any, freq: np.ndarray | None, cell: int,
                   relative: bool) -> list[list[Panel]]:
    """Columns of panels: one per role (a panel per statistic), then the router's column."""
    rows = sorted({*numbers.layers, *(int(x) for x in structure.dense_layers)})
    moe_rows = {layer: i for i, layer in enumerate(numbers.layers)}
    prefix = "relative · " if relative else ""

    def panel(stat: str, role: str | None, values: np.ndarray, dead: np.ndarray | None
              ) -> Panel:
        title = STAT_LABELS[stat] + (f" · {role}" if role else "")
        info: dict[str, Any] = {"stat": stat, "role": role, "title": title}
        if not relative:
            return _heat(prefix + title, rows, moe_rows, values, dead, cell, None, info)
        no_dead = dead if dead is not None else np.zeros(values.shape, bool)
        rel, med, rng = _relative(values, no_dead, stat)
        info.update(relative=RELATIVE_KIND[stat], medians=[
            float(m) if math.isfinite(m) else None for m in med.tolist()])
        return _heat(prefix + title, rows, moe_rows, rel, dead, cell, rng, info)

    cols = [[panel(s, r, numbers.stats[s][r], numbers.dead[r]) for s in STATS]
            for r in numbers.roles]
    router = [panel("row_norm", None, numbers.row_norm, None)]
    if numbers.bias is not None:
        router.append(panel("bias", None, numbers.bias, None))
    if freq is not None:
        router.append(panel("freq", None, freq, np.nan_to_num(freq, nan=1.0) == 0))
    cols.append(router)
    return cols


def similarity_panels(numbers: MoENumbers, routing: Mapping[str, Any] | None, cell: int
                      ) -> list[list[Panel]]:
    """Rows of panels, one row per MoE layer: CKA per role, cosine per role, co-activation."""
    out = []
    coact = (routing or {}).get("coact") or {}
    for layer in numbers.layers:
        i = numbers.layers.index(layer)
        row = []
        for metric in ("cka", "cosine"):
            for role in numbers.roles:
                m = numbers.similarity[metric][role].get(layer)
                if m is None:
                    continue
                dead = numbers.dead[role][i]
                marks = np.full(m.shape, MARK_VALUE, np.uint8)
                marks[~np.isfinite(m)] = MARK_NONE
                marks[dead, :] = MARK_DEAD
                marks[:, dead] = MARK_DEAD
                title = f"{role} · {METRIC_LABELS[metric]} · layer {layer}"
                row.append(Panel(Grid(title, m, marks, 0.0, 1.0, cell), {
                    "metric": metric, "role": role, "layer": layer, "title": title,
                    "lo": 0.0, "hi": 1.0,
                    "mode": numbers.modes[role].get(layer) if metric == "cka" else None,
                    "k": numbers.sketch_size if metric == "cka"
                    and numbers.modes[role].get(layer) == "sketch" else None,
                    "estimator": numbers.estimator if metric == "cka"
                    and numbers.modes[role].get(layer) == "sketch" else None,
                    "step": numbers.cosine_steps[role].get(layer) if metric == "cosine"
                    else None}))
        if routing is not None:  # (a layer the probe did not report: no numbers)
            m = np.asarray(coact.get(str(layer), np.full((numbers.experts,) * 2, np.nan)),
                           np.float64)
            if m.shape != (numbers.experts,) * 2:
                raise InputError(f"routing probe: co-activation of layer {layer} has shape "
                                 f"{m.shape}, expected {(numbers.experts,) * 2}")
            marks = np.where(np.isfinite(m), MARK_VALUE, MARK_NONE).astype(np.uint8)
            lo, hi = _range(m, marks, "coact")
            title = f"{METRIC_LABELS['coact']} · layer {layer}"
            row.append(Panel(Grid(title, m, marks, lo, hi, cell), {
                "metric": "coact", "role": None, "layer": layer, "title": title,
                "lo": lo, "hi": hi}))
        out.append(row)
    return out


def _layout(lines: list[list[Panel]], by_column: bool, gap: int
            ) -> tuple[SceneLayout, list[Panel]]:
    """Panels in columns (``by_column``) or rows of panels, ``gap`` px apart, each line as wide
    (or tall) as its biggest panel."""
    placements, groups, panels = [], [], []
    c_main = 0
    for line in lines:
        c_cross = 0
        extent = 0
        for p in line:
            g = p.grid
            c_x, c_y = (c_main, c_cross) if by_column else (c_cross, c_main)
            placements.append(Placement(g.name, c_x, c_y, 0, g.e_rows, 0, g.e_cols))
            panels.append(p)
            step = g.e_rows if by_column else g.e_cols
            c_cross += step + gap
            extent = max(extent, g.e_cols if by_column else g.e_rows)
        if line and not by_column:
            layer = line[0].info.get("layer")
            top = min(pl.c_y for pl in placements[-len(line):])
            groups.append(Group(f"layer {layer}", "block", 0, top, c_cross - gap, extent))
        c_main += extent + gap
    width = max((p.c_x + p.c_w for p in placements), default=1)
    height = max((p.c_y + p.c_h for p in placements), default=1)
    return SceneLayout("panels", width, height, tuple(placements), tuple(groups), {}), panels


SCENE_ASPECT = 1.5
"""Width / height the similarity scene's wrapped grid aims at (a landscape viewport beside the
viewer's side panel)."""


def _wrapped_layout(lines: list[list[Panel]]) -> tuple[SceneLayout, list[Panel]]:
    """The similarity scene: each layer's panels side by side (a "layer N" group), the layers
    wrapped column-major into as many columns as bring the scene's aspect nearest
    SCENE_ASPECT. Above every row of panels a strip a third of a panel tall holds the labels (the
    viewer's "sequential" kind puts them outside the panels), and layers are half a panel
    apart across."""
    lines = [ln for ln in lines if ln]
    if not lines:
        return SceneLayout("panels", 1, 1, (), (), {}), []
    side = max(max(p.grid.e_rows, p.grid.e_cols) for ln in lines for p in ln)
    strip, across, between = max(24, side // 3), max(8, side // 8), max(24, side // 2)
    widths = [sum(p.grid.e_cols for p in ln) + across * (len(ln) - 1) for ln in lines]
    block_w = max(widths)
    heights = [max(p.grid.e_rows for p in ln) for ln in lines]
    row_h = max(heights) + strip

    def aspect(cols: int) -> float:
        rows = -(-len(lines) // cols)
        return (cols * block_w + (cols - 1) * between) / (rows * row_h)

    cols = min(range(1, len(lines) + 1), key=lambda c: abs(math.log(aspect(c) / SCENE_ASPECT)))
    rows = -(-len(lines) // cols)
    placements, groups, panels = [], [], []
    for n, line in enumerate(lines):   # column-major: layers read down, then across
        c_x0 = (n // rows) * (block_w + between)
        c_y0 = (n % rows) * row_h + strip
        c_x = c_x0
        for p in line:
            g = p.grid
            placements.append(Placement(g.name, c_x, c_y0, 0, g.e_rows, 0, g.e_cols))
            panels.append(p)
            c_x += g.e_cols + across
        groups.append(Group(f"layer {line[0].info.get('layer')}", "block", c_x0, c_y0,
                            widths[n], heights[n]))
    width = max(p.c_x + p.c_w for p in placements)
    height = max(p.c_y + p.c_h for p in placements)
    return SceneLayout("panels", width, height, tuple(placements), tuple(groups), {}), panels


INLINE_TILES = 64
"""An MoE scene with at most this many max-zoom tiles is drawn in the main process (measured on
a Mixtral-shaped model: its three scenes' 60 tiles cost 0.5 s of CPU in forked workers)."""


class GridHolder:
    """The spec of an MoE scene: its grids, filled in by the plan's ``prepare`` before the
    scene's tiles are drawn (picklable: a worker gets the filled holder)."""

    def __init__(self) -> None:
        self.grids: tuple[Grid, ...] | None = None

    def open(self) -> GridReader:
        assert self.grids is not None, "MoE grids read before they were computed"
        return GridSpec(self.grids).open()


def _scene(key: str, label: str, lines: list[list[Panel]], by_column: bool, cell: int
           ) -> tuple[Any, GridHolder, list[Panel]]:
    """A scene laid out from (skeleton) panels; its grids come later (GridHolder)."""
    from ..scenes import Scene

    lay, panels = (_wrapped_layout(lines) if key == SIMILARITY_KEY
                   else _layout(lines, by_column, max(2 * cell, 24)))
    holder = GridHolder()
    geo = Geometry(lay)
    scene = Scene(key, label, lay, geo, SequentialPainter(), holder, {},
                  stage=f"tiles {label}",
                  inline=len(geo.occupied[geo.max_zoom]) <= INLINE_TILES)
    return scene, holder, panels


def _extra(kind: str, cell: int, panels: list[Panel]) -> dict[str, Any]:
    return {"moe": {"kind": kind, "cell": cell,
                    "panels": {p.grid.name: p.info for p in panels}},
            "cells": {p.grid.name: p.grid.cell for p in panels}}


def scene_json(scene: Any, ext: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest entry of an MoE scene: the usual one, its placements in cells (``cell``
    pixels each) and its ``moe`` description."""
    d: dict[str, Any] = scene.json(ext)
    cells = extra["cells"]
    for p in d["placements"]:
        c = cells[p["tensor"]]
        p["rows"] = [p["rows"][0] // c, p["rows"][1] // c]
        p["cols"] = [p["cols"][0] // c, p["cols"][1] // c]
        p["cell"] = c
    d["moe"] = extra["moe"]
    return d


def _probe_function() -> Callable[..., dict[str, Any]]:
    """weightvis.moe.probe.probe_routing, or a clear error (checked before any tile is drawn)."""
    try:
        from .probe import probe_routing
    except ImportError as e:
        name = str(getattr(e, "name", "") or "")
        if name and not name.startswith("weightvis"):
            from ..errors import MissingExtraError

            raise MissingExtraError(name, "probe", "the routing probe") from None
        raise WeightvisError("the routing probe (weightvis.moe.probe) is not part of this build "
                             "of weightvis") from None
    return probe_routing


def _probe(probe: Callable[..., dict[str, Any]], srcs: list[str], structure: Any,
           opts: MoEOptions, tick: Callable[[str, int, int], None]) -> dict[str, Any]:
    """Run the probe on the checkpoint's folder (its config and tokenizer)."""
    src = Path(srcs[0])
    model_dir = src if src.is_dir() else src.parent
    got = probe(model_dir, text=opts.probe_text,
                tokens=list(opts.probe_tokens) if opts.probe_tokens is not None else None,
                moe_layers=list(structure.moe_layers), progress=tick)
    if not isinstance(got, dict) or "freq" not in got or "coact" not in got:
        raise WeightvisError("routing probe: expected a dict with freq and coact")
    return got


def _skeleton(structure: Any, opts: MoEOptions) -> tuple[MoENumbers, dict[str, Any] | None]:
    """Numbers of the right shapes, all NaN: the scenes' geometry, known before any number
    (it depends on the structure and the options only)."""
    layers = tuple(int(x) for x in structure.moe_layers)
    roles = tuple(r for r in structure.roles
                  if any(structure.slices.get((layer, r)) for layer in layers))
    e = int(structure.experts)
    rows = np.full((len(layers), e), np.nan)
    sq = {layer: np.full((e, e), np.nan) for layer in layers
          if any(structure.slices.get((layer, r)) for r in roles)}
    numbers = MoENumbers(
        layers, roles, e, {s: {r: rows for r in roles} for s in STATS},
        {r: np.zeros(rows.shape, bool) for r in roles},
        {m: {r: {layer: sq[layer] for layer in sq if structure.slices.get((layer, r))}
             for r in roles} for m in ("cka", "cosine")},
        {r: {} for r in roles}, {r: {} for r in roles}, rows,
        rows if structure.router_bias else None, 0, 0, 0)
    routing = ({"layers": list(layers), "freq": rows.tolist(),
                "coact": {str(layer): sq[layer] for layer in sq}} if opts.probe else None)
    return numbers, routing  # (the probe's co-activation: a matrix per MoE layer, NaN if none)


def _lines(numbers: MoENumbers, structure: Any, routing: Mapping[str, Any] | None,
           cell: int, sim_cell: int, similarity: list[list[Panel]] | None = None
           ) -> dict[str, list[list[Panel]]]:
    """Each scene's lines of panels (``similarity``: the similarity scene's, when made
    already)."""
    freq = routing_rows(routing, numbers.layers, numbers.experts) if routing else None
    return {SUMMARY_KEY: summary_panels(numbers, structure, freq, cell, False),
            RELATIVE_KEY: summary_panels(numbers, structure, freq, cell, True),
            SIMILARITY_KEY: similarity if similarity is not None
            else similarity_panels(numbers, routing, sim_cell)}


_SCENES = ((SUMMARY_KEY, "MoE summary", True, "summary"),
           (RELATIVE_KEY, "MoE summary ÷ layer median", True, "relative"),
           (SIMILARITY_KEY, "Expert similarity", False, "similarity"))


def plan_moe(reader: Any, srcs: list[str], opts: MoEOptions, executor: Executor,
             tick: Callable[[str, int, int], None], structure: Any = None) -> MoEPlan | None:
    """The MoE scenes of a checkpoint, or None when it has no routed experts. The routing probe
    runs now, and their geometry is planned (from the structure); the numbers of every group
    are computed on the executor by the first scene's ``prepare``, which the bundle
    runs just before that scene's tiles (after the weights scene: its workers' compiled
    kernels are loaded by then, and the tasks' processes inherit them), or in a side thread
    during the weights scene's tiles (on a ``SideExecutor``: build_bundle). ``structure``: the
    checkpoint's ``detect_moe`` result when the caller has it (detected here otherwise)."""
    if structure is None:
        structure = detect_structure(reader, opts.only)
    if structure is None:
        if opts.only:
            raise InputError(f"{', '.join(srcs)}: no routed experts found (not a "
                             f"Mixture-of-Experts checkpoint?)")
        return None
    # the probe first: it is what the user asked for that most often fails (no tokenizer, no
    # torch), and it needs no executor
    routing = (_probe(_probe_function(), srcs, structure, opts, tick) if opts.probe
               else None)
    skeleton, skeleton_routing = _skeleton(structure, opts)
    rows = len({*skeleton.layers, *structure.dense_layers})
    cell = _cell(rows, skeleton.experts, 512)
    sim_cell = _cell(skeleton.experts, skeleton.experts, 256)
    lines = _lines(skeleton, structure, skeleton_routing, cell, sim_cell)
    scenes, holders, extras = [], {}, {}
    for key, label, by_column, _kind in _SCENES:
        if not any(lines[key]):
            continue
        scene, holder, _ = _scene(key, label, lines[key], by_column,
                                  sim_cell if key == SIMILARITY_KEY else cell)
        scenes.append(scene)
        holders[key] = holder
    document: dict[str, Any] = {}
    total = sum(1 for layer in structure.moe_layers for r in structure.roles
                if structure.slices.get((layer, r)))
    big = similarity_numbers(skeleton, routing) > opts.inline_max
    del lines, skeleton, skeleton_routing

    def prepare(ex: Executor, write: Callable[[str, str], None],
                progress: Callable[[str, int, int], None]) -> None:
        from ..pyramid import warm_up_all

        if ex.in_other_processes:  # the tasks' processes inherit the compiled kernels
            from ..kernels.moe import warm_up

            warm_up_all()
            warm_up()
        rows: dict[int, list[Panel]] = {}

        def on_layer(part: MoENumbers) -> None:
            """A layer's numbers are complete: its sidecar is written now, and its similarity
            panels keep their colours only (their numbers are in the sidecar or moe.json)."""
            layer = part.layers[0]
            if big:
                write(sidecar_name(layer), layer_sidecar(part, routing))
            (row,) = similarity_panels(part, routing, sim_cell)
            rows[layer] = [p._replace(grid=p.grid.compact()) for p in row]

        spec = CheckpointSpec(tuple(srcs))
        with reader_for(ex, spec, reader) as r:  # (a side thread's own)
            numbers = moe_numbers(r, spec, structure, opts, ex,
                                  lambda: progress("moe", 1, total), on_layer,
                                  keep_similarity=not big)
        real = _lines(numbers, structure, routing, cell, sim_cell,
                      [rows[layer] for layer in numbers.layers])
        for key, _label, by_column, kind in _SCENES:
            if key not in holders:
                continue
            _, panels = (_wrapped_layout(real[key]) if key == SIMILARITY_KEY
                         else _layout(real[key], by_column, 0))
            planned = next(sc for sc in scenes if sc.key == key).layout.placements
            assert [(p.grid.name, p.grid.e_rows, p.grid.e_cols) for p in panels] == \
                [(q.tensor, q.c_h, q.c_w) for q in planned], "MoE panels differ from the plan"
            holders[key].grids = tuple(p.grid for p in panels)
            extras[key] = _extra(kind, sim_cell if key == SIMILARITY_KEY else cell, panels)
        document.update(moe_document(numbers, structure, routing, big))

    scenes[0] = scenes[0]._replace(prepare=prepare)
    return MoEPlan(scenes, extras, document)
