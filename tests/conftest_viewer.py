"""Fixtures for the browser tests of the viewer (imported by tests/test_viewer_browser.py).

* ``chromium``: one headless Chromium per session, through Playwright; skipped with a reason when
  no ``chromium`` is on PATH.
* ``open_page``: opens a ``file://`` URL in a fresh context and records console errors, page
  errors, dialogs and every request URL, so a test can assert none went wrong / off ``file://``.
* tiny checkpoints written with ``safetensors.numpy.save_file``, and ``make_handmade_bundle``: a
  bundle built without the pipeline (palette PNG tiles + a manifest per README "The bundle and
  its manifest"), for the viewer paths the pipeline's tiny fixtures don't reach (two scenes,
  byte-unit curves).
"""

from __future__ import annotations

import base64
import json
import math
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

HOSTILE = "</script><img src=x onerror=alert(1)>"
"""A tensor name that must stay text: it would end the inlined JSON and run script as markup."""

RAMP = "model.ramp.weight"
RAMP_SHAPE = (40, 70)


def ramp_values(shape: tuple[int, int] = RAMP_SHAPE) -> np.ndarray:
    """Element [r, c] = (r * cols + c) / (rows * cols) - 0.5: every element is predictable."""
    rows, cols = shape
    ramp = np.arange(rows * cols, dtype=np.float64).reshape(rows, cols) / (rows * cols) - 0.5
    return ramp.astype(np.float32)


def tiny_model_tensors() -> dict[str, np.ndarray]:
    """Two transformer blocks, an embedding, a 3-D tensor, a ramp and the hostile name."""
    rng = np.random.default_rng(0)
    t: dict[str, np.ndarray] = {
        "model.embed_tokens.weight": rng.standard_normal((96, 48)).astype(np.float32) * 0.05,
        RAMP: ramp_values(),
        HOSTILE: rng.standard_normal((24, 24)).astype(np.float32),
        "model.norm.weight": np.ones(48, dtype=np.float32),
        "model.conv.weight": rng.standard_normal((8, 3, 5)).astype(np.float32),
        "lm_head.weight": rng.standard_normal((640, 256)).astype(np.float32) * 0.05,
    }
    for i in range(2):
        p = f"model.layers.{i}."
        t[p + "self_attn.q_proj.weight"] = rng.standard_normal((48, 48)).astype(np.float32) * 0.02
        t[p + "self_attn.k_proj.weight"] = rng.standard_normal((48, 48)).astype(np.float32) * 0.02
        t[p + "mlp.up_proj.weight"] = rng.standard_normal((96, 48)).astype(np.float32) * 0.02
        t[p + "mlp.down_proj.weight"] = rng.standard_normal((48, 96)).astype(np.float32) * 0.02
        t[p + "input_layernorm.weight"] = np.ones(48, dtype=np.float32)
    return t


def write_tiny_checkpoint(path: Path, tensors: dict[str, np.ndarray] | None = None) -> Path:
    from safetensors.numpy import save_file

    save_file(tensors if tensors is not None else tiny_model_tensors(), str(path))
    return path


# --------------------------------------------------------------------------- browser


def chromium_args() -> list[str]:
    return ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    exe = shutil.which("chromium")
    if exe is None:
        msg = "chromium is not on PATH (.ci/run installs Debian's chromium)"
        if os.environ.get("WEIGHTVIS_REQUIRE_BROWSER"):
            pytest.fail(msg)
        pytest.skip(msg)
    from playwright import sync_api
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=chromium_args())
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class PageLog:
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert self.console_errors == [], self.console_errors
        assert self.page_errors == [], self.page_errors
        assert self.dialogs == [], self.dialogs
        assert self.failed == [], self.failed
        off = [u for u in self.requests if not u.startswith("file://")]
        assert off == [], f"requests left file://: {off}"


@pytest.fixture
def open_page(chromium: Any) -> Iterator[Callable[..., tuple[Any, PageLog]]]:
    contexts: list[Any] = []

    def open_(url: str, *, width: int = 1280, height: int = 800) -> tuple[Any, PageLog]:
        ctx = chromium.new_context(viewport={"width": width, "height": height})
        contexts.append(ctx)
        page = ctx.new_page()
        log = PageLog()
        page.on("console",
                lambda m: log.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: log.page_errors.append(str(e)))

        def on_dialog(d: Any) -> None:
            log.dialogs.append(f"{d.type}: {d.message}")
            d.dismiss()

        page.on("dialog", on_dialog)
        page.on("request", lambda r: log.requests.append(r.url))
        page.on("requestfailed", lambda r: log.failed.append(f"{r.url} {r.failure}"))
        page.goto(url)
        page.wait_for_function("window.weightvis && window.weightvis.ready === true")
        return page, log

    yield open_
    for ctx in contexts:
        ctx.close()


# --------------------------------------------------------------------------- hand-made bundle

_TILE = 512


def _palette() -> list[list[int]]:
    pal = [[0, 0, 0]] * 256
    pal = [list(p) for p in pal]
    pal[0] = [38, 42, 52]       # padding
    pal[1] = [255, 255, 255]    # NaN
    pal[2] = [255, 0, 255]      # +Inf
    pal[3] = [0, 255, 0]        # -Inf
    for q in range(126):
        f = q / 125
        pal[129 + q] = [round(255 * f), round(140 * f), round(40 * f)]
        pal[129 - q] = [round(40 * f), round(120 * f), round(255 * f)]
    pal[255] = [255, 0, 0]
    return pal


def value_index(v: np.ndarray, s: float) -> np.ndarray:
    """The palette rule of README "The bundle and its manifest" (finite values)."""
    v = v.astype(np.float64)
    a = np.minimum(np.abs(v) / s, 1.0)
    q = np.floor(125 * np.sqrt(a) + 0.5).astype(np.int64)
    idx = np.where(v > 0, 129 + q, np.where(v < 0, 129 - q, 129))
    idx = np.where(np.isnan(v), 1, idx)
    idx = np.where(np.isposinf(v), 2, idx)
    idx = np.where(np.isneginf(v), 3, idx)
    return idx.astype(np.uint8)


def view2d(a: np.ndarray) -> np.ndarray:
    if a.ndim == 0:
        return a.reshape(1, 1)
    if a.ndim == 1:
        return a.reshape(1, -1)
    return a.reshape(a.shape[0], -1)


def _stats(a: np.ndarray) -> dict[str, Any]:
    f = a[np.isfinite(a)].astype(np.float64)
    return {
        "min": float(f.min()), "max": float(f.max()),
        "mean": float(f.mean()), "std": float(f.std()),
        "rms": float(np.sqrt(np.mean(f * f))), "zero_fraction": float(np.mean(a == 0)),
        "nan_count": int(np.isnan(a).sum()), "inf_count": int(np.isinf(a).sum()),
        "robust": float(np.quantile(np.abs(f), 0.999)),
    }


def _bitmap(present: np.ndarray) -> str:
    bits = np.packbits(present, axis=None, bitorder="little").tobytes()
    return base64.b64encode(bits).decode("ascii")


def _write_pyramid(out: Path, key: str, canvas: np.ndarray, palette: list[list[int]]
                   ) -> tuple[int, list[dict[str, Any]]]:
    from PIL import Image

    c_h, c_w = canvas.shape
    max_zoom = max(0, math.ceil(math.log2(max(c_w, c_h) / _TILE)))
    flat_pal = [c for rgb in palette for c in rgb]
    index = []
    for z in range(max_zoom + 1):
        f = 2 ** (max_zoom - z)
        # take the first non-padding child of each f x f cell (good enough for a test bundle)
        small = canvas[::f, ::f].copy()
        cols, rows = math.ceil(c_w / (_TILE * f)), math.ceil(c_h / (_TILE * f))
        present = np.zeros((rows, cols), dtype=bool)
        for t_y in range(rows):
            for t_x in range(cols):
                tile = np.zeros((_TILE, _TILE), dtype=np.uint8)
                part = small[t_y * _TILE:(t_y + 1) * _TILE, t_x * _TILE:(t_x + 1) * _TILE]
                tile[:part.shape[0], :part.shape[1]] = part
                if not tile.any():
                    continue
                present[t_y, t_x] = True
                img = Image.fromarray(tile, mode="P")
                img.putpalette(flat_pal)
                path = out / "tiles" / key / str(z) / str(t_x) / f"{t_y}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                img.save(path)
        index.append({"z": z, "cols": cols, "rows": rows, "bitmap": _bitmap(present)})
    return max_zoom, index


def _d2xy(n: int, d: int) -> tuple[int, int]:
    """Wikipedia "Hilbert curve", d2xy."""
    x = y = 0
    s, t = 1, d
    while s < n:
        rx = 1 & (t // 2)
        ry = 1 & (t ^ rx)
        if ry == 0:
            if rx == 1:
                x, y = s - 1 - x, s - 1 - y
            x, y = y, x
        x += s * rx
        y += s * ry
        t //= 4
        s *= 2
    return x, y


def make_handmade_bundle(out: Path, tensors: dict[str, np.ndarray], *, title: str = "hand-made",
                         hilbert_scene: bool = True, c_min_size: tuple[int, int] = (0, 0)
                         ) -> dict[str, Any]:
    """A bundle of ``tensors`` without the pipeline: an arch-like scene (shelf packing, one group
    per ``layers.N``) and optionally a Hilbert scene, rendered by the manifest's rule.
    ``c_min_size`` (w, h) widens the content with padding, so that some tiles are not written."""
    from weightvis.html import copy_viewer_assets, render_index_html

    out.mkdir(parents=True, exist_ok=True)
    palette = _palette()
    gap, c_max_w = 12, 640
    placements, tinfo = [], {}
    c_x = c_y = shelf_h = 0
    block_rects: dict[int, list[int]] = {}
    for name, a in tensors.items():
        v = view2d(a)
        rows, cols = v.shape
        if c_x and c_x + cols > c_max_w:
            c_x, c_y, shelf_h = 0, c_y + shelf_h + 2 * gap, 0
        placements.append({"tensor": name, "rect": [c_x, c_y, cols, rows], "rows": [0, rows],
                           "cols": [0, cols]})
        block = None
        parts = name.split(".")
        if "layers" in parts and parts.index("layers") + 1 < len(parts):
            block = int(parts[parts.index("layers") + 1])
            r = block_rects.setdefault(block, [c_x, c_y, c_x + cols, c_y + rows])
            r[0], r[1] = min(r[0], c_x), min(r[1], c_y)
            r[2], r[3] = max(r[2], c_x + cols), max(r[3], c_y + rows)
        stats = _stats(v)
        tinfo[name] = {
            "shape": list(a.shape), "dtype": "F32", "view": [rows, cols],
            "file": "model.safetensors", "block": block,
            "slot": ".".join(parts[parts.index("layers") + 2:]) if block is not None else None,
            "scale": stats["robust"] or 1.0, "stats": stats,
        }
        c_x += cols + gap
        shelf_h = max(shelf_h, rows)
    c_w = max(c_min_size[0], max(p["rect"][0] + p["rect"][2] for p in placements))
    c_h = max(c_min_size[1], max(p["rect"][1] + p["rect"][3] for p in placements))
    canvas = np.zeros((c_h, c_w), dtype=np.uint8)
    for p in placements:
        x, y, w, h = p["rect"]
        t_name = p["tensor"]
        canvas[y:y + h, x:x + w] = value_index(view2d(tensors[t_name]), tinfo[t_name]["scale"])
    max_zoom, tile_index = _write_pyramid(out, "main", canvas, palette)
    scenes: list[dict[str, Any]] = [{
        "key": "main", "label": "Weights", "layout": "arch", "max_zoom": max_zoom,
        "width": c_w, "height": c_h, "tiles": "tiles/main/{z}/{x}/{y}.png", "colormap": "values",
        "placements": placements,
        "groups": [{"label": f"block {b}", "kind": "block",
                    "rect": [r[0], r[1], r[2] - r[0], r[3] - r[1]]}
                   for b, r in sorted(block_rects.items())],
        "curve": None, "tile_index": tile_index,
    }]
    if hilbert_scene:
        total = sum(a.size for a in tensors.values())
        order = max(1, math.ceil(math.log2(math.sqrt(total))))
        n = 2 ** order
        hcanvas = np.zeros((n, n), dtype=np.uint8)
        segments, h0 = [], 0
        for name, a in tensors.items():
            idx = value_index(view2d(a), tinfo[name]["scale"]).ravel()
            for i, val in enumerate(idx):
                x, y = _d2xy(n, h0 + i)
                hcanvas[y, x] = val
            segments.append({"tensor": name, "start": h0, "length": int(a.size)})
            h0 += int(a.size)
        hz, hindex = _write_pyramid(out, "curve", hcanvas, palette)
        scenes.append({
            "key": "curve", "label": "Hilbert curve", "layout": "hilbert", "max_zoom": hz,
            "width": n, "height": n, "tiles": "tiles/curve/{z}/{x}/{y}.png", "colormap": "values",
            "placements": [], "groups": [], "tile_index": hindex,
            "curve": {"order": order, "unit": "element", "segments": segments},
        })
    manifest = {
        "format": "weightvis-bundle", "version": 1, "generator": "weightvis tests", "title": title,
        "tile_size": _TILE, "tile_format": "png",
        "source": {"format": "safetensors", "files": ["model.safetensors"], "metadata": {},
                   "config": {}},
        "colormaps": {"values": {
            "palette": palette, "padding_index": 0, "nan_index": 1, "posinf_index": 2,
            "neginf_index": 3, "zero_index": 129, "levels": 125, "transfer": "sqrt",
            "rule": "see docs",
        }},
        "scale": {"mode": "tensor", "quantile": 0.999, "sample_limit": 1048576},
        "scenes": scenes,
        "tensors": tinfo,
    }
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (out / "index.html").write_text(render_index_html(manifest, title=title), encoding="utf-8")
    copy_viewer_assets(out)
    return manifest



# --------------------------------------------------------------------------- hand-made diff bundle
# A diff bundle per docs/diff-manifest.md, built without the engine: pairs with their numbers,
# colormaps.delta, scenes delta / a / b sharing one geometry. Used by tests/test_viewer_diff.py.

D_ZERO, D_LEVELS = 129, 123
D_NONFINITE, D_ONLY_A, D_ONLY_B, D_BASE_ONLY, D_GAP = 1, 2, 3, 4, 5


def diff_palette() -> list[list[int]]:
    """colormaps.delta's palette: the engine's when weightvis.color has it, else a stand-in."""
    try:
        from weightvis.color import delta_palette

        return [[int(c) for c in rgb] for rgb in delta_palette("default")]
    except (ImportError, AttributeError, TypeError, ValueError):
        pal = [[38, 42, 52] for _ in range(256)]
        pal[D_NONFINITE], pal[D_ONLY_A], pal[D_ONLY_B] = (
            [255, 255, 255],
            [196, 120, 255],
            [255, 196, 64],
        )
        pal[D_BASE_ONLY], pal[D_GAP] = [150, 150, 150], [36, 36, 42]
        for q in range(D_LEVELS + 1):
            f = 0.3 + 0.7 * q / D_LEVELS if q else 0.0
            pal[D_ZERO + q] = [round(40 * f), round(230 * f), round(80 * f)]
            pal[D_ZERO - q] = [round(240 * f), round(50 * f), round(40 * f)]
        return pal


def delta_index(a: np.ndarray, b: np.ndarray, s: float) -> np.ndarray:
    """The rms delta rule of docs/diff-manifest.md (levels 123 around 129)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    d = b64 - a64
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.floor(D_LEVELS * np.sqrt(np.minimum(np.abs(d) / s, 1.0)) + 0.5)
    q = np.clip(np.nan_to_num(q, nan=1.0), 1, D_LEVELS).astype(np.int64)
    idx = np.where(d > 0, D_ZERO + q, D_ZERO - q)
    same = (a64 == b64) | (np.isnan(a64) & np.isnan(b64))
    idx = np.where(same, D_ZERO, np.where(np.isfinite(d), idx, D_NONFINITE))
    return idx.astype(np.uint8)


def hatch_index(kind: int, c_x: int, c_y: int, w: int, h: int) -> np.ndarray:
    """Hatch `kind` on the gap index, phase from the canvas pixel (c_x, c_y) of the top-left."""
    ys, xs = np.mgrid[c_y : c_y + h, c_x : c_x + w]
    k = (xs - ys) // 4 if kind == D_ONLY_B else (xs + ys) // 4
    return np.where(k % 2 == 0, kind, D_GAP).astype(np.uint8)


def _json_value(v: float) -> float | str:
    if np.isnan(v):
        return "nan"
    if np.isinf(v):
        return "inf" if v > 0 else "-inf"
    return float(v)


def _index_list(flags: np.ndarray) -> dict[str, Any]:
    where = np.flatnonzero(flags)
    return {"count": int(where.size), "first": [int(i) for i in where[:32]]}


def diff_numbers(a: np.ndarray, b: np.ndarray) -> tuple[dict[str, Any], list[list[Any]] | None]:
    """numbers and elements of a pair over the overlapping part of the 2-D views."""
    va, vb = view2d(a).astype(np.float64), view2d(b).astype(np.float64)
    rows, cols = min(va.shape[0], vb.shape[0]), min(va.shape[1], vb.shape[1])
    oa, ob = va[:rows, :cols], vb[:rows, :cols]
    d = ob - oa
    changed = ~((oa == ob) | (np.isnan(oa) & np.isnan(ob)))
    a_norm, b_norm = float(np.linalg.norm(oa)), float(np.linalg.norm(ob))
    d_norm = float(np.linalg.norm(np.where(changed, d, 0.0)))
    svd = None
    if a.ndim == 2 and changed.any() and min(rows, cols) >= 2:
        sv = np.linalg.svd(np.where(changed, d, 0.0), compute_uv=False)[:64]
        share = np.cumsum(sv**2) / np.sum(np.where(changed, d, 0.0) ** 2)
        hit = np.flatnonzero(share >= 0.99)
        svd = {
            "rank_99": int(hit[0]) + 1 if hit.size else None,
            "top_share": {
                str(k): float(share[k - 1]) for k in (1, 2, 4, 8, 16, 32, 64) if k <= len(sv)
            },
            "rows_used": int(rows),
        }
    r_idx, c_idx = np.nonzero(changed)
    numbers = {
        "a_norm": a_norm,
        "b_norm": b_norm,
        "delta_norm": d_norm,
        "rel": d_norm / a_norm if a_norm else None,
        "cosine": float((oa * ob).sum() / (a_norm * b_norm)) if a_norm and b_norm else None,
        "max_abs_delta": float(np.abs(d[changed]).max()) if changed.any() else 0.0,
        "changed": int(changed.sum()),
        "changed_rows": _index_list(changed.any(axis=1)),
        "changed_cols": _index_list(changed.any(axis=0)),
        "bbox": [int(r_idx.min()), int(r_idx.max()) + 1, int(c_idx.min()), int(c_idx.max()) + 1]
        if changed.any()
        else None,
        "nonfinite_introduced": int((np.isfinite(oa) & ~np.isfinite(ob)).sum()),
        "compared": int(rows * cols),
        "svd": svd,
    }
    elements = None
    if changed.sum() <= 64:
        elements = [
            [int(r), int(c), _json_value(oa[r, c]), _json_value(ob[r, c])]
            for r, c in zip(r_idx, c_idx, strict=True)
        ]
    return numbers, elements


def planted_diff_tensors() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A (the tiny model without lm_head) and B = A with planted edits:

    * RAMP [7, 42] += 0.5 (one element; its values are stored in the manifest);
    * model.layers.1.mlp.up_proj.weight row 10 zeroed (48 changes, stored);
    * model.layers.0.mlp.down_proj.weight scaled x1.01 (4608 changes, not stored);
    * HOSTILE [3, 4] += 0.25;
    * model.embed_tokens.weight grows from 96 to 100 rows (shape-changed);
    * model.extra_b.weight only in B; model.conv.weight only in A.
    """
    a = {k: v for k, v in tiny_model_tensors().items() if k != "lm_head.weight"}
    b = {k: v.copy() for k, v in a.items()}
    b[RAMP][7, 42] += np.float32(0.5)
    b["model.layers.1.mlp.up_proj.weight"][10, :] = 0
    b["model.layers.0.mlp.down_proj.weight"] *= np.float32(1.01)
    b[HOSTILE][3, 4] += np.float32(0.25)
    rng = np.random.default_rng(7)
    b["model.embed_tokens.weight"] = np.concatenate(
        [a["model.embed_tokens.weight"], rng.standard_normal((4, 48)).astype(np.float32) * 0.05]
    )
    del b["model.conv.weight"]
    b["model.extra_b.weight"] = rng.standard_normal((16, 24)).astype(np.float32)
    return a, b


def make_diff_bundle(
    out: Path,
    a: dict[str, np.ndarray],
    b: dict[str, np.ndarray],
    *,
    scenes: tuple[str, ...] = ("delta", "a", "b"),
    mode: str = "compare",
    title: str = "hand-made diff",
    diagnosis: list[str] | None = None,
    c_max_w: int = 640,
) -> dict[str, Any]:
    """A diff bundle of A -> B (pairs by exact name) by docs/diff-manifest.md, metric rms."""
    from weightvis.html import copy_viewer_assets, render_index_html

    out.mkdir(parents=True, exist_ok=True)
    names = list(a) + [n for n in b if n not in a]
    gap = 12
    pairs: list[dict[str, Any]] = []
    placements: list[dict[str, Any]] = []
    tinfo: dict[str, Any] = {}
    block_rects: dict[int, list[int]] = {}
    c_x = c_y = shelf_h = 0
    summary = {
        "identical": 0,
        "changed": 0,
        "shape_changed": 0,
        "only_in_a": 0,
        "only_in_b": 0,
        "elements_changed": 0,
        "elements_compared": 0,
    }
    drawn: list[tuple[str, list[int]]] = []
    for name in names:
        ta, tb = a.get(name), b.get(name)
        va = view2d(ta).shape if ta is not None else None
        vb = view2d(tb).shape if tb is not None else None
        if ta is None:
            status = "only-in-b"
        elif tb is None:
            status = "only-in-a"
        elif ta.shape != tb.shape:
            status = "shape-changed"
        else:
            same = np.array_equal(ta, tb, equal_nan=True)
            status = "identical" if same else "changed"
        rows = max(v[0] for v in (va, vb) if v is not None)
        cols = max(v[1] for v in (va, vb) if v is not None)
        numbers = elements = None
        if ta is not None and tb is not None:
            numbers, elements = diff_numbers(ta, tb)
            summary["elements_changed"] += numbers["changed"]
            summary["elements_compared"] += min(va[0], vb[0]) * min(va[1], vb[1])  # type: ignore[index]
        summary[status.replace("-", "_")] += 1
        parts = name.split(".")
        block = (
            int(parts[parts.index("layers") + 1])
            if "layers" in parts and parts.index("layers") + 1 < len(parts)
            else None
        )
        rms_a = (
            float(np.sqrt(np.mean(view2d(ta).astype(np.float64) ** 2))) if ta is not None else 0.0
        )
        s_delta = 0.5 * rms_a if rms_a > 0 else 1.0
        pair = {
            "name": name,
            "a": name if ta is not None else None,
            "b": name if tb is not None else None,
            "status": status,
            "shape_a": list(ta.shape) if ta is not None else None,
            "shape_b": list(tb.shape) if tb is not None else None,
            "dtype_a": "F32" if ta is not None else None,
            "dtype_b": "F32" if tb is not None else None,
            "paired_by": "exact",
            "transform": None,
            "block": block,
            "numbers": numbers,
            "elements": elements,
            "scale_a": float(np.quantile(np.abs(ta), 0.999)) or 1.0 if ta is not None else None,
            "scale_b": float(np.quantile(np.abs(tb), 0.999)) or 1.0 if tb is not None else None,
        }
        pairs.append(pair)
        if c_x and c_x + cols > c_max_w:
            c_x, c_y, shelf_h = 0, c_y + shelf_h + 2 * gap, 0
        rect = [c_x, c_y, cols, rows]
        placements.append({"tensor": name, "rect": rect, "rows": [0, rows], "cols": [0, cols]})
        drawn.append((name, rect))
        if block is not None:
            r = block_rects.setdefault(block, [c_x, c_y, c_x + cols, c_y + rows])
            r[0], r[1] = min(r[0], c_x), min(r[1], c_y)
            r[2], r[3] = max(r[2], c_x + cols), max(r[3], c_y + rows)
        tinfo[name] = {
            "shape": [rows, cols]
            if status == "shape-changed"
            else list((ta if ta is not None else tb).shape),  # type: ignore[union-attr]
            "view": [rows, cols],
            "dtype": ("F32" if ta is not None else "\u2014")
            + "\u2192"
            + ("F32" if tb is not None else "\u2014"),
            "file": "model.safetensors",
            "block": block,
            "slot": ".".join(parts[parts.index("layers") + 2 :]) if block is not None else None,
            "scale": s_delta,
            "stats": None,
        }
        c_x += cols + gap
        shelf_h = max(shelf_h, rows)
    c_w = max(r[0] + r[2] for _, r in drawn)
    c_h = max(r[1] + r[3] for _, r in drawn)
    delta = np.zeros((c_h, c_w), dtype=np.uint8)
    sides = {"a": np.zeros((c_h, c_w), dtype=np.uint8), "b": np.zeros((c_h, c_w), dtype=np.uint8)}
    for (name, (x, y, _, _)), pair in zip(drawn, pairs, strict=True):
        ta, tb = a.get(name), b.get(name)
        if ta is not None and tb is not None:
            oa, ob = view2d(ta), view2d(tb)
            rows, cols = min(oa.shape[0], ob.shape[0]), min(oa.shape[1], ob.shape[1])
            delta[y : y + rows, x : x + cols] = delta_index(
                oa[:rows, :cols], ob[:rows, :cols], tinfo[name]["scale"]
            )
        for side, t, kind in (
            ("a", ta, D_BASE_ONLY if mode == "finetune" else D_ONLY_A),
            ("b", tb, D_ONLY_B),
        ):
            if t is None:
                continue
            v = view2d(t)
            sides[side][y : y + v.shape[0], x : x + v.shape[1]] = value_index(
                v, pair["scale_" + side]
            )
            other = tb if side == "a" else ta
            ov = view2d(other).shape if other is not None else (0, 0)
            hatch = hatch_index(kind, x, y, v.shape[1], v.shape[0])
            outside = np.ones(v.shape, dtype=bool)
            outside[: ov[0], : ov[1]] = False
            region = delta[y : y + v.shape[0], x : x + v.shape[1]]
            region[outside] = hatch[outside]
    palette = diff_palette()
    scene_list: list[dict[str, Any]] = []
    groups = [
        {"label": f"block {k}", "kind": "block", "rect": [r[0], r[1], r[2] - r[0], r[3] - r[1]]}
        for k, r in sorted(block_rects.items())
    ]
    labels = {"delta": "\u0394 B \u2212 A", "a": "A", "b": "B"}
    for key in scenes:
        canvas = delta if key == "delta" else sides[key]
        max_zoom, tile_index = _write_pyramid(
            out, key, canvas, palette if key == "delta" else _palette()
        )
        scene_list.append(
            {
                "key": key,
                "label": labels[key],
                "layout": "arch",
                "max_zoom": max_zoom,
                "width": c_w,
                "height": c_h,
                "tiles": f"tiles/{key}/{{z}}/{{x}}/{{y}}.png",
                "colormap": "delta" if key == "delta" else "values",
                "placements": placements,
                "groups": groups,
                "curve": None,
                "tile_index": tile_index,
            }
        )
    if diagnosis is None:
        diagnosis = [
            f"{summary['changed']} tensors changed, {summary['shape_changed']} changed shape",
            f"{summary['only_in_b']} tensor only in B, {summary['only_in_a']} only in A",
        ]
    manifest = {
        "format": "weightvis-bundle",
        "version": 1,
        "generator": "weightvis tests",
        "title": title,
        "tile_size": _TILE,
        "tile_format": "png",
        "source": {
            "format": "safetensors",
            "files": ["b/model.safetensors"],
            "metadata": {},
            "config": {},
        },
        "colormaps": {
            "values": {
                "palette": _palette(),
                "padding_index": 0,
                "nan_index": 1,
                "posinf_index": 2,
                "neginf_index": 3,
                "zero_index": 129,
                "levels": 125,
                "transfer": "sqrt",
                "rule": "see docs",
            },
            "delta": {
                "kind": "delta",
                "metric": "rms",
                "palette_name": "default",
                "palette": palette,
                "padding_index": 0,
                "nonfinite_index": D_NONFINITE,
                "only_a_index": D_ONLY_A,
                "only_b_index": D_ONLY_B,
                "base_only_index": D_BASE_ONLY,
                "hatch_gap_index": D_GAP,
                "zero_index": D_ZERO,
                "levels": D_LEVELS,
                "abs_log_decades": None,
                "rule": "rms: q = floor(123*sqrt(min(|d|/s, 1)) + 0.5), at least 1 when b != a",
                "parent_rule": "first child (test bundle)",
            },
        },
        "scale": {"mode": "tensor", "quantile": 0.999, "sample_limit": 1048576},
        "scenes": scene_list,
        "tensors": tinfo,
        "diff": {
            "a": {"title": "tiny-A", "format": "safetensors", "files": ["a/model.safetensors"]},
            "b": {"title": "tiny-B", "format": "safetensors", "files": ["b/model.safetensors"]},
            "mode": mode,
            "metric": "rms",
            "palette": "default",
            "summary": summary,
            "diagnosis": diagnosis,
            "blocks": {},
            "pairs": pairs,
        },
    }
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (out / "index.html").write_text(render_index_html(manifest, title=title), encoding="utf-8")
    copy_viewer_assets(out)
    return manifest


@pytest.fixture(scope="module", name="chromium")
def chromium_reusing() -> Iterator[Any]:
    """``chromium`` for modules that run beside tests/test_viewer_browser.py.

    pytest registers an imported fixture once per module, so two modules importing the
    session-scoped ``chromium`` would start two sync Playwrights in one thread, which Playwright
    refuses. This one reuses a browser another module's fixture has launched (it stays theirs to
    close), else launches its own for this module only, closed before any later module starts.
    """
    import gc

    exe = shutil.which("chromium")
    if exe is None:
        msg = "chromium is not on PATH (.ci/run installs Debian's chromium)"
        if os.environ.get("WEIGHTVIS_REQUIRE_BROWSER"):
            pytest.fail(msg)
        pytest.skip(msg)
    from playwright import sync_api

    # type(), not isinstance(): some objects (torch's deprecated aliases) warn when asked for
    # their __class__
    browser_type = sync_api.Browser
    running = [o for o in gc.get_objects() if type(o) is browser_type and o.is_connected()]
    if running:
        yield running[0]
        return
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=chromium_args())
        try:
            yield browser
        finally:
            browser.close()
