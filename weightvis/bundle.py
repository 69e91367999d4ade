"""``render()``: the one orchestration entry. Inputs -> reader -> layout -> scales -> tiles ->
manifest + viewer, written into a temporary folder beside ``out`` and moved into place only when
complete (a failed run leaves nothing half-written, and never touches a folder that is not ours).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from . import __version__, color
from .encode import check_format
from .errors import BundleError, InputError, OutputError
from .formats import MultiReader, open_checkpoint
from .index import canonical_names
from .kernels import new_acc
from .layout import arch_layout, hilbert_layout
from .pyramid import Geometry, SceneJob, render_scene
from .types import TILE_SIZE, HilbertUnit, LayoutKind, ScaleMode, SceneLayout, TileFormat
from .values import global_scale, robust_scale, sample, stats_from_acc, thin

__all__ = ["render", "regen_html", "RenderResult", "MANIFEST_VERSION", "is_bundle",
           "read_manifest"]

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
    canonical = canonical_names([t.name for t in tensors], gguf_arch=_gguf_arch(reader))
    if layout == "arch":
        lay, key, label = arch_layout(tensors, canonical), "main", "Weights"
    elif unit == "element":
        lay, key, label = hilbert_layout(tensors), "hilbert", "Hilbert (elements)"
    else:
        sizes = [(f, f.stat().st_size) for f in reader.files]
        lay, key, label = hilbert_layout(tensors, unit="byte", file_sizes=sizes), "bytes", \
            "Hilbert (file bytes)"
    geo = Geometry(lay)

    # value pass: scales from samples
    scales: dict[str, float] = {}
    kept = []  # for --scale global: every tensor's sample, thinned to bound memory
    for t in tensors:
        smp = sample(reader, t)
        reader.release()
        scales[t.name] = robust_scale(smp)
        if scale == "global":
            kept.append((thin(smp), t.numel))
        tick("scales", 1, len(tensors))
    robust = dict(scales)
    if scale == "global":
        g = global_scale(kept)
        scales = {k: g for k in scales}
    del kept

    # output goes to a temporary sibling, moved into place at the end
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.weightvis-tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        total_leaves = len(geo.occupied[geo.max_zoom])
        job = SceneJob(tuple(srcs), key, geo, scales, str(tmp), tile_format,
                       "bytes" if unit == "byte" and layout == "hilbert" else "values")
        res = render_scene(job, workers, lambda n: tick("tiles", n, total_leaves), reader)
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
            "format": BUNDLE_FORMAT,
            "version": MANIFEST_VERSION,
            "generator": f"weightvis {__version__}",
            "title": title or _default_title(srcs),
            "tile_size": TILE_SIZE,
            "tile_format": tile_format,
            "source": {
                "format": reader.format,
                "files": [f.name for f in reader.files],
                "metadata": {Path(k).name: v for k, v in reader.metadata.items()},
                "config": reader.config,
            },
            "scale": {"mode": scale, "quantile": 0.999, "sample_limit": 1 << 20},
            "colormaps": {colormap: color.byte_colormap() if colormap == "bytes"
                          else color.values_colormap()},
            "scenes": [_scene_json(key, label, lay, geo, tile_format, colormap)],
            "tensors": tensors_json,
        }
        _write_manifest(tmp, manifest)
        _write_html(tmp, manifest)
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return RenderResult(out_dir, manifest, res.tiles_written, res.bytes_written,
                        time.perf_counter() - t0, sum(t.numel for t in tensors))


_GENERIC_NAMES = {"model", "models", "weights", "checkpoint", "checkpoints", "snapshot", "ckpt"}


def _gguf_arch(reader: MultiReader) -> str | None:
    for meta in reader.metadata.values():
        arch = meta.get("general.architecture") if isinstance(meta, dict) else None
        if isinstance(arch, str):
            return arch
    return None


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
