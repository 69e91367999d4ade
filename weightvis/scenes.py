"""Scenes: what a bundle shows, planned before any tile is drawn.

A ``Scene`` binds a reader (its picklable ``spec``), a layout and its tile geometry, a painter
(painters.py), a colormap, a key and a label, plus the colour scales known before the tiles. A
``Plan`` is a list of scenes and ``finish``, which turns their results into the manifest (and any
side document such as ``diff.json``). ``plan_render`` plans a render (``[main]``, or the Hilbert
scene; a Mixture-of-Experts' routed experts are laid out as grids, ``moe.detect_moe``);
``plan_diff`` (diff_plan.py) plans a diff (``[delta]`` or ``[delta, a, b]`` plus the diff
analysis). bundle.build_bundle runs any plan.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from . import color
from .errors import InputError
from .executors import Executor, InlineExecutor
from .formats import MultiReader
from .formats.base import gc_paused
from .formats.dtypes import CODE_DTYPES
from .gguf_names import detect_arch, gguf_names
from .index import NameIndex
from .layout import arch_layout, hilbert_layout
from .manifest import build_manifest, manifest_head, scene_json
from .manifest_text import StaticParts
from .moe.structure import detect_moe
from .options import MoEOptions, RenderOptions, sidecar_mode, value_width
from .painters import BytesPainter, Painter, ValuesPainter
from .tiling import CheckpointSpec, Geometry
from .types import SceneLayout, view_of
from .values import SORT_BELOW, global_scale, stats_json_many, tensor_scales

if TYPE_CHECKING:
    from .hub.xet import XetFile

__all__ = ["Scene", "Plan", "plan_render", "plan_moe_only", "tile_index", "source_json",
           "default_title", "file_name", "file_gguf_names", "Progress"]

Progress = Callable[[str, int, int], None]
"""progress(stage, advance, total): ``stage`` names the step, ``advance`` units were just done."""

SCALE_DOC = {"mode": "tensor", "quantile": 0.999, "sample_limit": 1 << 20}


class Scene(NamedTuple):
    key: str
    label: str
    layout: SceneLayout
    geometry: Geometry
    painter: Painter
    spec: Any
    """Picklable ``open() -> Reader`` for the workers."""
    scales: dict[str, float]
    """Colour scales known before the tiles (a values scene may leave some out)."""
    stage: str = "tiles"
    """The progress stage of its tiles."""
    prefetch: tuple[str, ...] = ()
    """Scales an executor may compute ahead (see tiling.SceneJob)."""
    meanwhile: Callable[[], None] | None = None
    """Work for this process while the executor renders this scene's tiles elsewhere."""
    sidecars: str = "none"
    """What its max-zoom tiles' sidecar scripts hold (tiling.SceneJob.sidecars)."""
    inline: bool = False
    """Draw its tiles in this process: a scene so small that starting the executor's workers
    (a fork each, and their start-up) costs more than its tiles (the MoE scenes of most
    models)."""
    prepare: Callable[[Executor, Callable[[str, str], None], Progress], None] | None = None
    """Work this scene needs done before its tiles, on the executor (the MoE numbers its
    grids show), given a function that writes a text file into the bundle (name, text: MoE
    sidecars, as they are made) and the progress callback. build_bundle runs it when the
    scenes before it are drawn, or overlaps it with an earlier scene's tiles (in a side
    thread, on a ``sidework.SideExecutor``: then it must read through ``executor.open``)."""

    def json(self, ext: str) -> dict[str, Any]:
        doc = scene_json(self.key, self.label, self.layout, self.geometry.max_zoom, ext,
                         self.painter.colormap, tile_index(self.geometry))
        if self.sidecars != "none":
            doc["sidecars"] = sidecars_json(self.key, self.geometry.max_zoom, self.sidecars)
        return doc


def sidecars_json(key: str, max_zoom: int, mode: str) -> dict[str, Any]:
    """A scene's optional ``sidecars`` field (README, "Values under the cursor"): where its
    max-zoom tiles' sidecar scripts are and whether they hold the element values."""
    from .sidecars import SIDECAR_EXT

    return {"tiles": f"tiles/{key}/{{z}}/{{x}}/{{y}}.{SIDECAR_EXT}", "zoom": max_zoom,
            "values": mode == "values"}


Finish = Callable[[Mapping[str, Any], Executor], tuple[dict[str, Any], dict[str, Any]]]
"""finish(scene results by key, executor) -> (manifest, side documents by file name)."""

Texts = Callable[[Mapping[str, Any]], Mapping[str, tuple[str, str]]]
"""texts(manifest) -> by top-level key of ``manifest``, its value's JSON text made along the way
(``manifest.compact``, and ``html.ascii_json`` of that): what bundle.build_bundle need not
encode again (manifest_text.compose). Empty for a manifest the plan's ``finish`` did not make
last."""


class Plan(NamedTuple):
    scenes: list[Scene]
    finish: Finish
    reader: Any
    """This process's reader of the scenes (used for in-process work)."""
    tile_format: str
    png_deflate: str = "rle"
    """options.PngDeflate: how PNG tiles and sidecars are compressed."""
    texts: Texts | None = None
    """The manifest's texts ``finish`` made along the way (None: encode it whole)."""


def tile_index(geo: Geometry) -> list[dict[str, Any]]:
    """Per zoom, a bitmap of the tiles that exist (README, "tile_index")."""
    out = []
    for z, occ in enumerate(geo.occupied):
        cols, rows = geo.grid(z)
        present = np.zeros((rows, cols), bool)
        if occ:
            xy = np.array(list(occ), np.int64)
            present[xy[:, 1], xy[:, 0]] = True
        bits = np.packbits(present, axis=None, bitorder="little").tobytes()
        out.append({"z": z, "cols": cols, "rows": rows,
                    "bitmap": base64.b64encode(bits).decode("ascii")})
    return out


@functools.lru_cache(maxsize=4096)
@functools.lru_cache(maxsize=1 << 12)
def file_name(path: str) -> str:
    """The last part of a tensor's file path (one Path per file, not per tensor: 45k tensors'
    Paths cost 0.08 s)."""
    return Path(path).name


def source_json(reader: MultiReader) -> dict[str, Any]:
    """The manifest's ``source``; ``uris`` (beside ``files``, only when a file came from the
    Hub): each file's pinned location ``hf://NS/NAME@<commit>/<path>``, null for a local one."""
    out: dict[str, Any] = {"format": reader.format, "files": [f.name for f in reader.files],
                           "metadata": {Path(k).name: v for k, v in reader.metadata.items()},
                           "config": reader.config}
    if any(reader.origins):
        out["uris"] = list(reader.origins)
    return out


_GENERIC_NAMES = {"model", "models", "weights", "checkpoint", "checkpoints", "snapshot", "ckpt"}


def default_title(srcs: list[str]) -> str:
    """The input's name; for generic file names (model.safetensors, shards, index) its folder's,
    with the parent folder too when the folder's name alone says little. A Hub input (``hf://``,
    or a file of the Hugging Face cache) is named by its repo id."""
    hub = _hub_ref(srcs[0])
    if hub is not None:
        repo_id, path = hub
        name = path.rsplit("/", 1)[-1]
        stem = name.split("-")[0].split(".")[0]
        generic = stem in _GENERIC_FILES or name.endswith(".index.json")
        return repo_id if not path or generic else f"{repo_id}/{path}"
    p = Path(srcs[0]).resolve()
    if not p.is_dir():
        stem = p.name.split("-")[0].split(".")[0]
        if not (p.name.endswith(".index.json") or stem in _GENERIC_FILES):
            return p.name
        p = p.parent
    if p.name.lower() in _GENERIC_NAMES and p.parent.name:
        return f"{p.parent.name}/{p.name}"
    return p.name


_GENERIC_FILES = ("model", "pytorch_model", "consolidated", "diffusion_pytorch_model")


def _hub_ref(src: str) -> tuple[str, str] | None:
    """(repo id, path in the repo) of an ``hf://`` input or a cached Hub file, else None."""
    from .hub.uri import is_hub_uri, parse_hub_uri, ref_of_cached_path

    if is_hub_uri(src):
        ref = parse_hub_uri(src)
        return ref.repo_id, ref.path
    got = ref_of_cached_path(src)
    return None if got is None else (got[0].repo_id, got[0].path)


def file_gguf_names(reader: MultiReader, names: list[str]) -> dict[str, str]:
    """The manifest's optional ``gguf`` names: name -> GGUF name for the tensors of a Hugging
    Face-named checkpoint that gguf-py's map of its architecture knows (gguf_names.py); empty
    for a GGUF (its names are GGUF names) and for checkpoints no map fits."""
    if reader.format == "gguf":
        return {}
    arch = detect_arch(names, reader.config)
    got = gguf_names(names, arch) if arch is not None else {}
    return {n: g for n, g in got.items() if g != n}


def plan_render(reader: MultiReader, srcs: list[str], opts: RenderOptions, executor: Executor,
                tick: Progress, moe_options: MoEOptions | None = None,
                xet: Sequence[XetFile] = ()) -> Plan:
    """The scenes of a render and how its manifest is made. Reads no tensor data, except the
    value pass when the scales must be known before the tiles (``--scale global``, or tiles
    rendered in this process). ``moe_options``: an MoE checkpoint's summary and similarity
    scenes (their numbers are computed on ``executor`` just before their tiles). ``xet``: the
    Hub's Xet terms of the files, drawn as one more scene (xorbs.py)."""
    tensors = list(reader.tensors())
    if not tensors:
        raise InputError(f"{', '.join(srcs)}: the checkpoint holds no tensors")
    spec = CheckpointSpec(tuple(srcs))
    names = [t.name for t in tensors]
    numels = list(map(math.prod, map(operator.attrgetter("shape"), tensors)))  # (t.numel, 3x)
    # Per-tensor scales need no pass before the tiles when the tiles render in other
    # processes: the executor's helper and the tile workers compute them as they need them
    # (the same deterministic function), and this process computes what is left afterwards
    # (all of them for a byte scene, meanwhile, as its workers draw no values).
    overlap = opts.scale != "global" and executor.in_other_processes
    prefetch = tuple(names) if overlap and not opts.bytes_scene else ()
    if prefetch:  # the tiny tensors' scales, from now on (while this plans)
        executor.start_scales(spec, prefetch, [t.name for t, n in zip(tensors, numels, strict=True)
                                               if t.dtype in CODE_DTYPES and 0 < n < SORT_BELOW])
    index = NameIndex(names, gguf_arch=reader.gguf_architecture())
    with_moe = moe_options is not None and moe_options.enabled
    structure = None
    if opts.layout == "arch" or with_moe:
        with gc_paused():  # tens of thousands of small objects: see formats.base.gc_paused
            structure = detect_moe(reader, reader.config, index=index)
    moe_plan = None
    if with_moe and structure is not None:
        from .moe.scenes import plan_moe

        assert moe_options is not None
        moe_plan = plan_moe(reader, srcs, moe_options, executor, tick, structure)
    if opts.layout == "arch":
        with gc_paused():
            lay = arch_layout(tensors, index=index, moe=structure)
    elif not opts.bytes_scene:
        lay = hilbert_layout(tensors, index=index)
    else:
        lay = hilbert_layout(tensors, unit="byte",
                             file_sizes=[(f, f.stat().st_size) for f in reader.files])
    geo = Geometry(lay)
    painter: Painter = BytesPainter() if opts.bytes_scene else ValuesPainter()
    sidecars: str
    if opts.bytes_scene:  # a byte is one byte: its sidecar always holds the bytes
        sidecars = opts.values if opts.values in ("index", "none") else "values"
    else:
        dtypes = [t.dtype for t in tensors]
        width = {d: value_width(d) for d in set(dtypes)}  # (45k tensors, a few dtypes)
        sidecars = sidecar_mode(opts.values, sum(map(operator.mul, numels,
                                                     map(width.__getitem__, dtypes))),
                                opts.values_limit_mb)
    robust: dict[str, float] = {}
    scales: dict[str, float] = {}

    def value_pass(ex: Executor, names: list[str] = names) -> None:
        got, kept, _ = tensor_scales(reader, spec, names, executor=ex,
                                     keep_samples=opts.scale == "global",
                                     tick=lambda: tick("scales", 1, len(tensors)))
        robust.update(got)
        if opts.scale == "global":
            g = global_scale([kept[t.name] for t in tensors if t.name in kept])
            scales.update({k: g for k in got})

    if not overlap:
        value_pass(executor)
        if opts.scale != "global":
            scales.update(robust)
    early: dict[str, Any] = {}
    """What ``static_parts`` made while the tiles were drawn (empty: not made yet)."""
    made: dict[str, Any] = {}
    """The manifest ``finish`` made last ("doc") and its ``texts``."""

    def static_parts() -> StaticParts:
        """The manifest's parts the tiles do not change: the scene (placements, groups, tile
        bitmap) and each tensor's entry up to its ``slot`` (``scale`` and ``stats`` follow),
        with their JSON texts (a 45k-tensor checkpoint's are ~28 MB: made here, while the
        tiles are drawn, not after them)."""
        slots = lay.slots
        gguf_of = file_gguf_names(reader, names)
        entries: dict[str, Any] = {}
        no_slot = (None, None)
        for t in tensors:  # (45k tensors: no call it can spare)
            name = t.name
            block, slot = slots.get(name, no_slot)
            e_rows, e_cols = view_of(t.shape, t.row_dims)
            entry: dict[str, Any] = {
                "shape": list(t.shape), "dtype": t.dtype, "view": [e_rows, e_cols],
                "file": file_name(t.file), "canonical": index[name].canonical,
            }
            gguf = gguf_of.get(name)
            if gguf is not None:
                entry["gguf"] = gguf
            entry["block"] = block
            entry["slot"] = slot
            entries[name] = entry
        return StaticParts.of(scene.json(opts.tile_format), entries)

    def meanwhile() -> None:
        """In this process while other processes draw the tiles (a thread of it): the byte
        scene's value pass, and the manifest's ``static_parts``. A failure here is left to
        ``finish``, which does the same again and reports it."""
        if opts.bytes_scene:
            value_pass(InlineExecutor())
        try:
            early["static"] = static_parts()
        except Exception:  # noqa: BLE001 - (finish raises it, with its words)
            early.clear()

    scene = Scene(opts.scene_key, opts.scene_label, lay, geo, painter, spec, dict(scales),
                  prefetch=prefetch, meanwhile=meanwhile if overlap else None,
                  sidecars=sidecars)

    xorbs = None
    if xet:
        from .xorbs import plan_xorbs

        xorbs = plan_xorbs(reader, spec, xet, opts.values)

    def finish(results: Mapping[str, Any], _executor: Executor) -> tuple[dict[str, Any],
                                                                          dict[str, Any]]:
        from .kernels import new_acc

        res = results[scene.key]
        if overlap:  # (a scale the helper is still computing is computed here too: the same)
            robust.update(res.scales)
            missing = [n for n in names if n not in robust]
            if missing:
                value_pass(InlineExecutor(), missing)
            scales.update(robust)
        stats: list[Any] = [None] * len(tensors)
        if not opts.bytes_scene:
            empty = new_acc()
            get = res.accs.get
            stats = stats_json_many(
                # (one concatenation of the rows: np.stack's Python loops cost 0.02 s on 45k)
                np.concatenate([get(n, empty) for n in names]).reshape(len(names), -1),
                np.array(numels, np.int64),
                np.array(list(map(robust.__getitem__, names)), np.float64))
        static: StaticParts = early.pop("static", None) or static_parts()
        scene_doc, tensors_json = static.scene, static.entries
        for t, st in zip(tensors, stats, strict=True):
            entry = tensors_json[t.name]
            entry["scale"] = float(scales[t.name])
            if st is not None:
                entry["stats"] = st
        colormap = painter.colormap
        colormaps = {colormap: color.byte_colormap() if colormap == "bytes"
                     else color.values_colormap()}
        scenes_json = [scene_doc]
        extra: dict[str, Any] = {}
        documents: dict[str, Any] = {}
        if xorbs is not None:
            from .xorbs import xorb_colormap

            colormaps["xorbs"] = xorb_colormap()
            scenes_json.append(xorbs.scene.json(opts.tile_format))
            extra["xet"] = xorbs.document
        if moe_plan is not None:
            from .grids import sequential_colormap
            from .moe.scenes import scene_json as moe_scene_json

            colormaps["sequential"] = sequential_colormap()
            scenes_json += [moe_scene_json(s, opts.tile_format, moe_plan.extras[s.key])
                            for s in moe_plan.scenes]
            extra["moe"] = moe_plan.document
            documents = {"moe.json": moe_plan.document}
        manifest = build_manifest(
            manifest_head(opts.title or default_title(srcs), opts.tile_format),
            source=source_json(reader),
            scale={**SCALE_DOC, "mode": opts.scale},
            colormaps=colormaps, scenes=scenes_json, tensors=tensors_json, extra=extra)
        made.clear()
        made.update(doc=manifest, texts=static.texts(scenes_json[1:], tensors_json))
        return manifest, documents

    def texts(manifest: Mapping[str, Any]) -> Mapping[str, tuple[str, str]]:
        return made["texts"] if made.get("doc") is manifest else {}

    return Plan([scene, *([xorbs.scene] if xorbs else []),
                 *(moe_plan.scenes if moe_plan else [])], finish, reader, opts.tile_format,
                texts=texts)


def plan_moe_only(reader: MultiReader, srcs: list[str], opts: RenderOptions,
                  executor: Executor, tick: Progress, moe_options: MoEOptions) -> Plan:
    """The MoE scenes alone (``weightvis moe``): summary, relative summary and similarity; the
    manifest lists no tensors (no weight scene draws them)."""
    from .grids import sequential_colormap
    from .moe.scenes import plan_moe
    from .moe.scenes import scene_json as moe_scene_json

    moe_plan = plan_moe(reader, srcs,
                        dataclasses.replace(moe_options, enabled=True, only=True), executor,
                        tick)
    assert moe_plan is not None  # (only: no experts is an error)

    def finish(results: Mapping[str, Any], _executor: Executor) -> tuple[dict[str, Any],
                                                                          dict[str, Any]]:
        manifest = build_manifest(
            manifest_head(opts.title or default_title(srcs), opts.tile_format),
            source=source_json(reader), scale=SCALE_DOC,
            colormaps={"sequential": sequential_colormap()},
            scenes=[moe_scene_json(s, opts.tile_format, moe_plan.extras[s.key])
                    for s in moe_plan.scenes],
            tensors={}, extra={"moe": moe_plan.document})
        return manifest, {"moe.json": moe_plan.document}

    return Plan(moe_plan.scenes, finish, None, opts.tile_format)
