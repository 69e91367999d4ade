"""Fixtures for the browser tests of the viewer (imported by tests/test_viewer_browser.py).

* ``chromium``: one headless Chromium per session, through Playwright; skipped with a reason when
  no ``chromium`` is on PATH.
* ``open_page``: opens a ``file://`` URL in a fresh context and records console errors, page
  errors, dialogs and every request URL, so a test can assert none went wrong / off ``file://``.
* tiny checkpoints written with ``safetensors.numpy.save_file``, and ``make_handmade_bundle``: a
  bundle built without the pipeline (palette PNG tiles + a manifest per README "The bundle and its manifest"), for the
  viewer paths the pipeline's tiny fixtures don't reach (two scenes, byte-unit curves).
"""

from __future__ import annotations

import base64
import json
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

HOSTILE = "</script><img src=x onerror=alert(1)>"
"""A tensor name that must stay text: it would end the inlined JSON and run script as markup."""

RAMP = "model.ramp.weight"
RAMP_SHAPE = (40, 70)


def ramp_values(shape: tuple[int, int] = RAMP_SHAPE) -> np.ndarray:
    """Element [r, c] = (r * cols + c) / (rows * cols) - 0.5: every element is predictable."""
    rows, cols = shape
    return (np.arange(rows * cols, dtype=np.float64).reshape(rows, cols) / (rows * cols) - 0.5).astype(np.float32)


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
        page.on("console", lambda m: log.console_errors.append(m.text) if m.type == "error" else None)
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
        "min": float(f.min()), "max": float(f.max()), "mean": float(f.mean()), "std": float(f.std()),
        "rms": float(np.sqrt(np.mean(f * f))), "zero_fraction": float(np.mean(a == 0)),
        "nan_count": int(np.isnan(a).sum()), "inf_count": int(np.isinf(a).sum()),
        "robust": float(np.quantile(np.abs(f), 0.999)),
    }


def _bitmap(present: np.ndarray) -> str:
    return base64.b64encode(np.packbits(present, axis=None, bitorder="little").tobytes()).decode("ascii")


def _write_pyramid(out: Path, key: str, canvas: np.ndarray, palette: list[list[int]]) -> tuple[int, list[dict[str, Any]]]:
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
        placements.append({"tensor": name, "rect": [c_x, c_y, cols, rows], "rows": [0, rows], "cols": [0, cols]})
        block = None
        parts = name.split(".")
        if "layers" in parts and parts.index("layers") + 1 < len(parts):
            block = int(parts[parts.index("layers") + 1])
            r = block_rects.setdefault(block, [c_x, c_y, c_x + cols, c_y + rows])
            r[0], r[1] = min(r[0], c_x), min(r[1], c_y)
            r[2], r[3] = max(r[2], c_x + cols), max(r[3], c_y + rows)
        stats = _stats(v)
        tinfo[name] = {
            "shape": list(a.shape), "dtype": "F32", "view": [rows, cols], "file": "model.safetensors",
            "block": block, "slot": ".".join(parts[parts.index("layers") + 2:]) if block is not None else None,
            "scale": stats["robust"] or 1.0, "stats": stats,
        }
        c_x += cols + gap
        shelf_h = max(shelf_h, rows)
    c_w = max(c_min_size[0], max(p["rect"][0] + p["rect"][2] for p in placements))
    c_h = max(c_min_size[1], max(p["rect"][1] + p["rect"][3] for p in placements))
    canvas = np.zeros((c_h, c_w), dtype=np.uint8)
    for p in placements:
        x, y, w, h = p["rect"]
        canvas[y:y + h, x:x + w] = value_index(view2d(tensors[p["tensor"]]), tinfo[p["tensor"]]["scale"])
    max_zoom, tile_index = _write_pyramid(out, "main", canvas, palette)
    scenes: list[dict[str, Any]] = [{
        "key": "main", "label": "Weights", "layout": "arch", "max_zoom": max_zoom,
        "width": c_w, "height": c_h, "tiles": "tiles/main/{z}/{x}/{y}.png", "colormap": "values",
        "placements": placements,
        "groups": [{"label": f"block {b}", "kind": "block", "rect": [r[0], r[1], r[2] - r[0], r[3] - r[1]]}
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
        "source": {"format": "safetensors", "files": ["model.safetensors"], "metadata": {}, "config": {}},
        "colormaps": {"values": {
            "palette": palette, "padding_index": 0, "nan_index": 1, "posinf_index": 2,
            "neginf_index": 3, "zero_index": 129, "levels": 125, "transfer": "sqrt", "rule": "see docs",
        }},
        "scale": {"mode": "tensor", "quantile": 0.999, "sample_limit": 1048576},
        "scenes": scenes,
        "tensors": tinfo,
    }
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (out / "index.html").write_text(render_index_html(manifest, title=title), encoding="utf-8")
    copy_viewer_assets(out)
    return manifest
