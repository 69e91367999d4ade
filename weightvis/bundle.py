"""``render()``: the one orchestration entry. Inputs -> reader -> layout -> scales -> tiles ->
manifest + viewer, written into a temporary folder beside ``out`` and moved into place only when
complete (a failed run leaves nothing half-written, and never touches a folder that is not ours).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from . import __version__, color
from .encode import check_format
from .errors import BundleError, InputError, OutputError
from .formats import MultiReader, open_checkpoint
from .index import canonical_names
from .info import tensor_kind
from .layout import arch_layout, detect_blocks, hilbert_layout
from .tiling import CheckpointSpec, Geometry, SceneJob
from .types import TILE_SIZE, HilbertUnit, LayoutKind, ScaleMode, SceneLayout, TileFormat
from .values import SharedScales, global_scale, start_scale_helper, stats_from_acc, tensor_scales

__all__ = ["render", "render_diff", "regen_html", "RenderResult", "DiffResult",
           "MANIFEST_VERSION", "is_bundle", "read_manifest"]

MANIFEST_VERSION = 1
BUNDLE_FORMAT = "weightvis-bundle"

Progress = Callable[[str, int, int], None]
"""progress(stage, advance, total): ``stage`` names the step, ``advance`` units were just done."""


class RenderResult(NamedTuple):
    out: Path
    manifest: dict[str, Any]
    tiles_written: int
    bytes_written: int
    seconds: float
    elements: int


def is_bundle(path: Path) -> bool:
    try:
        doc = json.loads((path / "manifest.json").read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(doc, dict) and doc.get("format") == BUNDLE_FORMAT


def read_manifest(bundle: Path) -> dict[str, Any]:
    p = Path(bundle) / "manifest.json"
    try:
        doc = json.loads(p.read_text("utf-8"))
    except OSError as e:
        raise BundleError(f"{p}: cannot read ({e.strerror}); is {bundle} a weightvis bundle?"
                          ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{p}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{p}: not a weightvis manifest")
    if doc.get("version") != MANIFEST_VERSION:
        raise BundleError(f"{p}: manifest version {doc.get('version')!r}, this weightvis reads "
                          f"version {MANIFEST_VERSION}")
    return doc


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a directory; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if not is_bundle(out):
            raise OutputError(f"{out}: exists and is not a weightvis bundle; weightvis never "
                              "overwrites it - choose another --out")
        if not overwrite:
            raise OutputError(f"{out}: a weightvis bundle is already there; pass --overwrite to "
                              "replace it")


def _write_html(bundle_dir: Path, manifest: dict[str, Any]) -> None:
    from .html import copy_viewer_assets, render_index_html

    copy_viewer_assets(bundle_dir)
    html = render_index_html(manifest, title=manifest.get("title"))
    tmp = bundle_dir / ".index.html.tmp"
    tmp.write_text(html, "utf-8")
    os.replace(tmp, bundle_dir / "index.html")


def _write_manifest(bundle_dir: Path, manifest: dict[str, Any]) -> None:
    tmp = bundle_dir / ".manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, allow_nan=False, ensure_ascii=False), "utf-8")
    os.replace(tmp, bundle_dir / "manifest.json")


def regen_html(bundle: str | os.PathLike[str]) -> Path:
    """Rebuild ``index.html`` (and the viewer assets) of an existing bundle from its manifest."""
    b = Path(bundle)
    manifest = read_manifest(b)
    _write_html(b, manifest)
    return b / "index.html"


def _tile_index(geo: Geometry) -> list[dict[str, Any]]:
    """Per zoom, a bitmap of the tiles that exist (README, "tile_index")."""
    out = []
    for z, occ in enumerate(geo.occupied):
        cols, rows = geo.grid(z)
        present = np.zeros((rows, cols), bool)
        for x, y in occ:
            present[y, x] = True
        bits = np.packbits(present, axis=None, bitorder="little").tobytes()
        out.append({"z": z, "cols": cols, "rows": rows,
                    "bitmap": base64.b64encode(bits).decode("ascii")})
    return out


def _scene_json(key: str, label: str, lay: SceneLayout, geo: Geometry, ext: str,
                colormap: str) -> dict[str, Any]:
    scene: dict[str, Any] = {
        "key": key, "label": label, "layout": lay.layout, "max_zoom": geo.max_zoom,
        "width": lay.c_width, "height": lay.c_height,
        "tiles": f"tiles/{key}/{{z}}/{{x}}/{{y}}.{ext}", "colormap": colormap,
        "placements": [p.to_json() for p in lay.placements],
        "groups": [g.to_json() for g in lay.groups],
        "tile_index": _tile_index(geo),
        "curve": None,
    }
    if lay.layout == "hilbert":
        field = "tensor" if lay.curve_unit == "element" else "file"
        scene["curve"] = {"order": lay.curve_order, "unit": lay.curve_unit,
                          "segments": [{field: s.name, "start": s.h_start, "length": s.length}
                                       for s in lay.segments]}
    return scene


def render(
    sources: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    layout: LayoutKind = "arch",
    hilbert_unit: HilbertUnit = "element",
    tile_format: TileFormat = "png",
    scale: ScaleMode = "tensor",
    title: str | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    quiet: bool = True,
    progress: Progress | None = None,
) -> RenderResult:
    """Render a checkpoint (files, a sharded index, or directories) into a bundle at ``out``."""
    t0 = time.perf_counter()
    if layout not in ("arch", "hilbert"):
        raise ValueError(f"layout must be 'arch' or 'hilbert', not {layout!r}")
    if hilbert_unit not in ("element", "byte"):
        raise ValueError(f"hilbert_unit must be 'element' or 'byte', not {hilbert_unit!r}")
    if scale not in ("tensor", "global"):
        raise ValueError(f"scale must be 'tensor' or 'global', not {scale!r}")
    check_format(tile_format)
    n_workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    out_dir = Path(out)
    _check_out(out_dir, overwrite)
    srcs = [str(s) for s in sources]
    reader = open_checkpoint(srcs)
    try:
        return _render(reader, srcs, out_dir, layout, hilbert_unit, tile_format, scale, title,
                       n_workers, progress, t0)
    finally:
        reader.close()


@contextlib.contextmanager
def _reaped(proc: Any) -> Iterator[None]:
    """Join the helper process ``proc`` (or None) when the block completes; stop it first when
    the block fails or is interrupted (its results are not needed then)."""
    try:
        yield
    except BaseException:
        if proc is not None:
            proc.terminate()
            proc.join()
        raise
    if proc is not None:
        proc.join()


@contextlib.contextmanager
def _staged(out_dir: Path) -> Iterator[Path]:
    """A temporary folder beside ``out_dir``, moved into its place when the block completes,
    removed when it fails: a failed run leaves nothing half-written."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.weightvis-tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _manifest_head(title: str, tile_format: str) -> dict[str, Any]:
    return {"format": BUNDLE_FORMAT, "version": MANIFEST_VERSION,
            "generator": f"weightvis {__version__}", "title": title, "tile_size": TILE_SIZE,
            "tile_format": tile_format}


def _source_json(reader: MultiReader) -> dict[str, Any]:
    return {"format": reader.format, "files": [f.name for f in reader.files],
            "metadata": {Path(k).name: v for k, v in reader.metadata.items()},
            "config": reader.config}


def _render(reader: MultiReader, srcs: list[str], out_dir: Path, layout: str, unit: str,
            tile_format: str, scale: str, title: str | None, workers: int,
            progress: Progress | None, t0: float) -> RenderResult:
    tensors = list(reader.tensors())
    if not tensors:
        raise InputError(f"{', '.join(srcs)}: the checkpoint holds no tensors")

    def tick(stage: str, n: int, total: int) -> None:
        if progress is not None:
            progress(stage, n, total)

    # geometry (no data read)
    canonical = canonical_names([t.name for t in tensors],
                                gguf_arch=reader.gguf_architecture())
    if layout == "arch":
        lay, key, label = arch_layout(tensors, canonical), "main", "Weights"
    elif unit == "element":
        lay, key, label = hilbert_layout(tensors), "hilbert", "Hilbert (elements)"
    else:
        sizes = [(f, f.stat().st_size) for f in reader.files]
        lay, key, label = hilbert_layout(tensors, unit="byte", file_sizes=sizes), "bytes", \
            "Hilbert (file bytes)"
    geo = Geometry(lay)

    # value pass: each tensor's scale from its sample. Per-tensor scales need no pass before
    # the tiles: a helper process computes them (numpy only) while this one loads the
    # compiled kernels, in the order the tiles will need them; a tile worker that draws a
    # tensor the helper has not reached computes its scale itself (the same deterministic
    # function) and returns it. This process computes the others afterwards (all of them for
    # byte scenes, meanwhile, as those workers draw no values).
    spec = CheckpointSpec(tuple(srcs))
    names = [t.name for t in tensors]
    robust: dict[str, float] = {}
    mode = "bytes" if unit == "byte" and layout == "hilbert" else "values"
    overlap = scale != "global" and workers > 1
    shared = helper = None
    if overlap and mode == "values":
        shared = SharedScales(names)
        helper = start_scale_helper(spec, _drawing_order(lay, geo, workers, names), shared)

    def value_pass(workers: int, names: list[str] = names) -> None:
        got, kept, _ = tensor_scales(reader, spec, names, workers=workers,
                                     keep_samples=scale == "global",
                                     tick=lambda: tick("scales", 1, len(tensors)))
        robust.update(got)
        if scale == "global":
            g = global_scale([(kept[t.name], t.numel) for t in tensors if t.name in kept])
            scales.update({k: g for k in got})

    # the compiled kernels load now, while the helper works (numba's import: ~0.16 s)
    from .kernels import new_acc
    from .pyramid import render_scene

    scales: dict[str, float] = {}
    if not overlap:
        value_pass(workers)
        if scale != "global":
            scales.update(robust)

    with _reaped(helper), _staged(out_dir) as tmp:
        total_leaves = len(geo.occupied[geo.max_zoom])
        job = SceneJob(spec, key, geo, dict(scales), str(tmp), tile_format, mode, shared=shared)
        res = render_scene(job, workers, lambda n: tick("tiles", n, total_leaves), reader,
                           meanwhile=(lambda: value_pass(1)) if overlap and mode == "bytes"
                           else None)
        if overlap:  # (a scale the helper is still computing is computed here too: the same)
            robust.update(res.scales)
            if shared is not None:
                robust.update((n, v) for n in names if (v := shared.get(n)) is not None)
            missing = [n for n in names if n not in robust]
            if missing:
                value_pass(1, missing)
            scales.update(robust)
        colormap = "bytes" if job.mode == "bytes" else "values"
        tensors_json: dict[str, Any] = {}
        for t in tensors:
            acc = res.accs.get(t.name, new_acc())
            block, slot = lay.slots.get(t.name, (None, None))
            entry: dict[str, Any] = {
                "shape": list(t.shape), "dtype": t.dtype, "view": [t.e_rows, t.e_cols],
                "file": Path(t.file).name, "canonical": canonical[t.name],
                "block": block, "slot": slot,
                "scale": float(scales[t.name]),
            }
            if job.mode == "values":
                entry["stats"] = stats_from_acc(acc, t.numel, robust[t.name]).to_json()
            tensors_json[t.name] = entry
        manifest: dict[str, Any] = {
            **_manifest_head(title or _default_title(srcs), tile_format),
            "source": _source_json(reader),
            "scale": {"mode": scale, "quantile": 0.999, "sample_limit": 1 << 20},
            "colormaps": {colormap: color.byte_colormap() if colormap == "bytes"
                          else color.values_colormap()},
            "scenes": [_scene_json(key, label, lay, geo, tile_format, colormap)],
            "tensors": tensors_json,
        }
        _write_manifest(tmp, manifest)
        _write_html(tmp, manifest)
    return RenderResult(out_dir, manifest, res.tiles_written, res.bytes_written,
                        time.perf_counter() - t0, sum(t.numel for t in tensors))


def _drawing_order(lay: SceneLayout, geo: Geometry, workers: int,
                   names: list[str]) -> list[str]:
    """Tensor names about in the order the tile workers first draw them: by the subtree
    (in the order render_scene hands them out) holding a tensor's first pixel, then by position
    (along the curve for a Hilbert layout)."""
    split, roots = geo.subtree_roots(workers)
    f = geo.tile << (geo.max_zoom - split)
    rank = {(a.t_x, a.t_y): i for i, a in enumerate(roots)}
    first: dict[str, tuple[int, ...]] = {}
    if lay.layout == "arch":
        for p in lay.placements:
            k = (rank.get((p.c_x // f, p.c_y // f), len(rank)), p.c_y, p.c_x)
            if p.tensor not in first or k < first[p.tensor]:
                first[p.tensor] = k
    else:
        first = {sg.name: (sg.h_start,) for sg in lay.segments}
    last = (1 << 62,) * 4
    return sorted(names, key=lambda n: first.get(n, last))


_GENERIC_NAMES = {"model", "models", "weights", "checkpoint", "checkpoints", "snapshot", "ckpt"}


def _default_title(srcs: list[str]) -> str:
    """The input's name; for generic file names (model.safetensors, shards, index) its folder's,
    with the parent folder too when the folder's name alone says little."""
    p = Path(srcs[0]).resolve()
    if not p.is_dir():
        stem = p.name.split("-")[0].split(".")[0]
        generic = ("model", "pytorch_model", "consolidated", "diffusion_pytorch_model")
        if not (p.name.endswith(".index.json") or stem in generic):
            return p.name
        p = p.parent
    if p.name.lower() in _GENERIC_NAMES and p.parent.name:
        return f"{p.parent.name}/{p.name}"
    return p.name


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    if out_dir.exists():
        # only an empty folder or one of our bundles gets here (checked before rendering)
        if out_dir.is_dir() and any(out_dir.iterdir()) and not is_bundle(out_dir):
            raise OutputError(f"{out_dir}: appeared during rendering and is not a bundle")
        old = out_dir.parent / f".{out_dir.name}.weightvis-old-{os.getpid()}"
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


# -- diff bundles -------------------------------------------------------------------------------
DiffMetric = Literal["rms", "abs-log", "exact"]
_METRICS = {"rms": 0, "abs-log": 1, "exact": 2}


class DiffResult(NamedTuple):
    out: Path
    manifest: dict[str, Any]
    diff: dict[str, Any]
    tiles_written: int
    bytes_written: int
    seconds: float


def _clip_layout(lay: SceneLayout, pairs: dict[str, Any], side: str) -> SceneLayout:
    """The delta geometry restricted to one side's elements (for the A and B scenes)."""
    placements = []
    for p in lay.placements:
        pair = pairs[p.tensor]
        view = pair.view_a if side == "a" else pair.view_b
        if view is None:
            continue
        r1, c1 = min(p.e_r1, view[0]), min(p.e_c1, view[1])
        if r1 > p.e_r0 and c1 > p.e_c0:
            placements.append(p._replace(e_r1=r1, e_c1=c1))
    return lay._replace(placements=tuple(placements))


def render_diff(
    a_sources: Sequence[str | os.PathLike[str]],
    b_sources: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    metric: DiffMetric = "rms",
    palette: Literal["default", "cvd"] = "default",
    scenes: Sequence[str] = ("delta",),
    svd: bool = True,
    finetune: bool | None = None,
    tile_format: TileFormat = "png",
    title: str | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> DiffResult:
    """Render the element-wise difference B - A of two checkpoints into a bundle at ``out``,
    with per-tensor numbers (``diff.json`` and ``manifest["diff"]``)."""
    from . import delta as wdiff

    t0 = time.perf_counter()
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {', '.join(_METRICS)}, not {metric!r}")
    if palette not in ("default", "cvd"):
        raise ValueError(f"palette must be 'default' or 'cvd', not {palette!r}")
    bad = [s for s in scenes if s not in ("a", "b", "delta")]
    if bad or "delta" not in scenes:
        raise ValueError(f"scenes must include 'delta' and be among a, b, delta; got "
                         f"{','.join(scenes)}")
    check_format(tile_format)
    n_workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    out_dir = Path(out)
    _check_out(out_dir, overwrite)
    a_srcs, b_srcs = [str(s) for s in a_sources], [str(s) for s in b_sources]
    ra = open_checkpoint(a_srcs)
    try:
        rb = open_checkpoint(b_srcs)
    except BaseException:
        ra.close()
        raise
    reader = wdiff.DiffReader(ra, rb)
    try:
        return _render_diff(reader, a_srcs, b_srcs, out_dir, metric, palette, list(scenes), svd,
                            finetune, tile_format, title, n_workers, progress, t0)
    finally:
        reader.close()


def _render_diff(reader: Any, a_srcs: list[str], b_srcs: list[str], out_dir: Path, metric: str,
                 palette: str, scenes: list[str], svd: bool, finetune: bool | None,
                 tile_format: str, title: str | None, workers: int,
                 progress: Progress | None, t0: float) -> DiffResult:
    from . import delta as wdiff
    from .kernels import DELTA_CHANGED, ELEMENTS_CAP, new_delta_acc
    from .pyramid import render_scene, warm_up_all

    def tick(stage: str, n: int, total: int) -> None:
        if progress is not None:
            progress(stage, n, total)

    pairs = reader.pairs
    if not pairs:
        raise InputError("neither checkpoint holds any tensor")
    by_name = {p.name: p for p in pairs}
    reason = wdiff.detect_finetune(a_srcs, b_srcs)
    mode = "finetune" if (finetune if finetune is not None else reason is not None) \
        else "compare"
    canon_b = canonical_names([t.name for t in reader.b.tensors()],
                              gguf_arch=reader.b.gguf_architecture())
    canon_a = canonical_names([t.name for t in reader.a.tensors()],
                              gguf_arch=reader.a.gguf_architecture())
    canonical = {p.name: canon_b[p.b.name] if p.b is not None else canon_a[p.a.name]
                 for p in pairs}
    infos = list(reader.tensors())
    lay = arch_layout(infos, canonical)
    block_prefix = detect_blocks(list(canonical.values()))

    # scales: s_delta = 0.5 * rms of A's sample (then B's, then 1); each side's robust scale
    n_pairs = len(pairs)
    robust_a, _, rms_a = tensor_scales(reader.a, CheckpointSpec(tuple(a_srcs)),
                                       [p.a.name for p in pairs if p.a is not None],
                                       workers=workers, want_rms=True, meanwhile=warm_up_all,
                                       tick=lambda: tick("scales A", 1, n_pairs))
    robust_b, _, rms_b = tensor_scales(reader.b, CheckpointSpec(tuple(b_srcs)),
                                       [p.b.name for p in pairs if p.b is not None],
                                       workers=workers, want_rms=True,
                                       tick=lambda: tick("scales B", 1, n_pairs))
    scales: dict[str, float] = {}
    side_scales: dict[str, dict[str, float]] = {"a": {}, "b": {}}
    for p in pairs:
        rms = (rms_a.get(p.a.name, 0.0) if p.a else 0.0) or (
            rms_b.get(p.b.name, 0.0) if p.b else 0.0)
        scales[p.name] = 0.5 * rms if rms > 0 else 1.0
        if p.a is not None:
            side_scales["a"][p.name] = robust_a[p.a.name]
        if p.b is not None:
            side_scales["b"][p.name] = robust_b[p.b.name]

    params = {"metric": _METRICS[metric], "decades": color.ABSLOG_DECADES, "palette": palette,
              "base_only": mode == "finetune"}
    spec = wdiff.DiffSpec(tuple(a_srcs), tuple(b_srcs), tuple(pairs))
    with _staged(out_dir) as tmp:
        geo = Geometry(lay)
        leaves = len(geo.occupied[geo.max_zoom])
        res = render_scene(SceneJob(spec, "delta", geo, scales, str(tmp), tile_format, "delta",
                                    params), workers, lambda n: tick("tiles", n, leaves), reader)
        scene_list = [_scene_json("delta", "Δ = B − A", lay, geo, tile_format, "delta")]
        written, nbytes = res.tiles_written, res.bytes_written
        for side in ("a", "b"):
            if side not in scenes:
                continue
            side_lay = _clip_layout(lay, by_name, side)
            side_geo = Geometry(side_lay._replace(c_width=lay.c_width, c_height=lay.c_height))
            n_side = len(side_geo.occupied[side_geo.max_zoom])
            side_res = render_scene(
                SceneJob(spec._replace(side=side), side, side_geo, side_scales[side], str(tmp),
                         tile_format, "values"),
                workers, functools.partial(_tick_stage, tick, f"tiles {side.upper()}", n_side))
            written += side_res.tiles_written
            nbytes += side_res.bytes_written
            scene_list.append(_scene_json(side, f"{side.upper()}", side_lay, side_geo,
                                          tile_format, "values"))

        # numbers; the low-rank summaries of the changed pairs in parallel
        svds = wdiff.svd_summaries(reader, spec, [
            p.name for p in pairs if svd and p.a is not None and p.b is not None
            and min(p.overlap) >= 2 and res.accs.get(p.name, new_delta_acc())[DELTA_CHANGED]
        ], workers=workers)
        pair_rows: list[dict[str, Any]] = []
        for p in pairs:
            block, slot = lay.slots.get(p.name, (None, None))
            row: dict[str, Any] = {
                "name": p.name, "a": p.a.name if p.a else None, "b": p.b.name if p.b else None,
                "shape_a": list(p.a.shape) if p.a else None,
                "shape_b": list(p.b.shape) if p.b else None,
                "dtype_a": p.a.dtype if p.a else None, "dtype_b": p.b.dtype if p.b else None,
                "paired_by": p.paired_by, "transform": p.transform, "block": block,
                "kind": tensor_kind(canonical[p.name], block_prefix),
                "scale": scales[p.name],
                "scale_a": side_scales["a"].get(p.name), "scale_b": side_scales["b"].get(p.name),
                "numbers": None, "elements": None,
            }
            if p.a is not None and p.b is not None:
                acc = res.accs.get(p.name, new_delta_acc())
                rows_f, cols_f = res.flags.get(p.name, (np.zeros(p.overlap[0], bool),
                                                        np.zeros(p.overlap[1], bool)))
                row["numbers"] = _pair_numbers(acc, rows_f, cols_f)
                changed = row["numbers"]["changed"]
                if p.shape_status == "shape-changed":
                    row["status"] = "shape-changed"
                else:
                    row["status"] = "changed" if changed else "identical"
                el = res.elements.get(p.name)
                if changed and el is not None and changed <= ELEMENTS_CAP:
                    row["elements"] = [[int(e[0]), int(e[1]), _num(e[2]), _num(e[3])]
                                       for e in el]
                if p.name in svds:
                    row["numbers"]["svd"] = svds[p.name]
                tick("numbers", 1, len(pairs))
            else:
                row["status"] = p.shape_status
            pair_rows.append(row)
        summary = {s.replace("-", "_"): sum(r["status"] == s for r in pair_rows)
                   for s in wdiff.STATUSES}
        summary["elements_changed"] = sum(r["numbers"]["changed"] for r in pair_rows
                                          if r["numbers"])
        summary["elements_compared"] = sum(r["numbers"]["compared"] for r in pair_rows
                                           if r["numbers"])
        blocks: dict[str, dict[str, Any]] = {}
        for r in pair_rows:
            if r["block"] is None or not r["numbers"]:
                continue
            b = blocks.setdefault(str(r["block"]), {"changed_tensors": 0, "delta_sq": 0.0,
                                                    "a_sq": 0.0})
            b["changed_tensors"] += r["status"] != "identical"
            b["delta_sq"] += r["numbers"]["delta_norm"] ** 2
            b["a_sq"] += r["numbers"]["a_norm"] ** 2
        for b in blocks.values():
            b["delta_norm"] = math.sqrt(b.pop("delta_sq"))
            b["a_norm"] = math.sqrt(b.pop("a_sq"))
            b["rel"] = b["delta_norm"] / b["a_norm"] if b["a_norm"] else None
        diff_doc: dict[str, Any] = {
            "a": {"title": _default_title(a_srcs), "format": reader.a.format,
                  "files": [f.name for f in reader.a.files]},
            "b": {"title": _default_title(b_srcs), "format": reader.b.format,
                  "files": [f.name for f in reader.b.files]},
            "mode": mode, "finetune_reason": reason if mode == "finetune" else None,
            "metric": metric, "palette": palette, "summary": summary,
            "diagnosis": wdiff.diagnose(pair_rows, mode),
            "blocks": dict(sorted(blocks.items(), key=lambda kv: int(kv[0]))),
            "pairs": pair_rows,
        }
        tensors_json: dict[str, Any] = {}
        for p, r in zip(pairs, pair_rows, strict=True):
            t = reader.info(p.name)
            tensors_json[p.name] = {
                "shape": list(t.shape), "dtype": t.dtype, "view": [t.e_rows, t.e_cols],
                "file": Path(t.file).name, "canonical": canonical[p.name],
                "block": r["block"], "slot": lay.slots.get(p.name, (None, None))[1],
                "scale": scales[p.name], "stats": None, "status": r["status"],
            }
        manifest: dict[str, Any] = {
            **_manifest_head(title or f"{diff_doc['a']['title']} → {diff_doc['b']['title']}",
                             tile_format),
            "source": {"a": _source_json(reader.a), "b": _source_json(reader.b)},
            "scale": {"mode": "tensor", "quantile": 0.999, "sample_limit": 1 << 20},
            "colormaps": {"delta": color.delta_colormap(metric, palette),
                          **({"values": color.values_colormap()} if len(scene_list) > 1 else {})},
            "scenes": scene_list,
            "tensors": tensors_json,
            "diff": diff_doc,
        }
        (tmp / "diff.json").write_text(json.dumps(diff_doc, indent=1, allow_nan=False,
                                                  ensure_ascii=False), "utf-8")
        _write_manifest(tmp, manifest)
        _write_html(tmp, manifest)
    return DiffResult(out_dir, manifest, diff_doc, written, nbytes, time.perf_counter() - t0)


def _tick_stage(tick: Callable[[str, int, int], None], stage: str, total: int, n: int) -> None:
    tick(stage, n, total)


def _num(x: float) -> float | str:
    """JSON has no NaN/Inf: those become the strings "nan", "inf", "-inf"."""
    x = float(x)
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def _first_indices(flags: np.ndarray, limit: int = 32) -> dict[str, Any]:
    idx = np.flatnonzero(flags)
    return {"count": int(idx.size), "first": [int(i) for i in idx[:limit]]}


def _pair_numbers(acc: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> dict[str, Any]:
    n, a2, b2, d2, ab, dmax, changed, nfi = (float(x) for x in acc)
    a_norm, b_norm, d_norm = math.sqrt(a2), math.sqrt(b2), math.sqrt(d2)
    r_idx, c_idx = np.flatnonzero(rows), np.flatnonzero(cols)
    return {
        "compared": int(n),
        "a_norm": a_norm, "b_norm": b_norm, "delta_norm": d_norm,
        "rel": d_norm / a_norm if a_norm else None,
        "cosine": ab / (a_norm * b_norm) if a_norm and b_norm else None,
        "max_abs_delta": dmax,
        "changed": int(changed),
        "changed_rows": _first_indices(rows), "changed_cols": _first_indices(cols),
        "bbox": [int(r_idx[0]), int(r_idx[-1]) + 1, int(c_idx[0]), int(c_idx[-1]) + 1]
        if r_idx.size else None,
        "nonfinite_introduced": int(nfi),
        "svd": None,
    }
