"""A bundle of ~47,000 tensors (DeepSeek-V3's expert names, 61 layers x 256 experts x 3
projections, tiny 8x4 shapes) opens in headless Chromium from file:// in under 3 s, and search,
hover and jump work on it: nothing the viewer builds per tensor (scene model, grid index, search
keys, the tensors map) may be quadratic."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .conftest_viewer import chromium_reusing, write_tiny_checkpoint  # noqa: F401  (fixtures)
from .test_viewer_browser import Bundle, hover_canvas_pixel, readout, set_view

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LAYERS, EXPERTS, PROJ = 61, 256, ("gate", "up", "down")
OPEN_SECONDS = 3.0


def expert(layer: int, e: int, proj: str) -> str:
    return f"model.layers.{layer}.mlp.experts.{e}.{proj}_proj.weight"


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    import weightvis

    root = tmp_path_factory.mktemp("big")
    tensors = {"model.embed_tokens.weight": np.zeros((16, 8), np.float32)}
    for layer in range(LAYERS):
        for e in range(EXPERTS):
            for proj in PROJ:
                tensors[expert(layer, e, proj)] = np.full((8, 4), (layer + e) / 320, np.float32)
    ckpt = write_tiny_checkpoint(root / "model.safetensors", tensors)
    result = weightvis.render([ckpt], root / "bundle", workers=1, quiet=True)
    manifest = json.loads((Path(result.out) / "manifest.json").read_text("utf-8"))
    return Bundle(Path(result.out), manifest)


def test_45k_tensors_open_fast_and_search_works(big: Bundle, chromium: Any) -> None:
    n = len(big.manifest["tensors"])
    assert n == 1 + LAYERS * EXPERTS * len(PROJ)
    ctx = chromium.new_context(viewport={"width": 1280, "height": 800})
    try:
        errors: list[str] = []
        timings = []
        for _ in range(2):  # the better of two opens: the machine may be busy with other work
            page = ctx.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            t0 = time.perf_counter()
            page.goto(big.url)
            page.wait_for_function("window.weightvis && window.weightvis.ready === true",
                                   timeout=30000, polling=20)
            timings.append(time.perf_counter() - t0)
            if timings[-1] < OPEN_SECONDS:
                break
            page.close()
        print(f"opened {n} tensors in {min(timings):.2f} s")
        assert min(timings) < OPEN_SECONDS, timings
        assert page.evaluate("weightvis.app.model.items.length") == n

        # search: every layer's expert 255 down_proj, exact matches first, in layer order
        t0 = time.perf_counter()
        page.fill("#wv-search", "experts.255.down")
        found = page.eval_on_selector_all("#wv-results li.wv-result",
                                          "els => els.map(e => e.textContent)")
        assert time.perf_counter() - t0 < 1.0
        assert found == [expert(layer, 255, "down") for layer in range(LAYERS)]
        page.fill("#wv-search", "experts.")
        more = page.text_content("#wv-results li.wv-result-none")
        assert more == f"… {n - 1 - 100:,} more".replace(",", "")
        # jump, then hover an element of the tensor
        target = expert(60, 255, "down")
        page.fill("#wv-search", target)
        page.press("#wv-search", "Enter")
        assert page.evaluate("weightvis.app.selected.name") == target
        (rect,) = big.rects(target)
        set_view(page, rect[0] + 2, rect[1] + 4, big.scene()["max_zoom"] + 2)
        hover_canvas_pixel(page, rect[0] + 3, rect[1] + 7)
        r = readout(page)
        assert r["name"] == target and r["element"] == "[7, 3]" and r["shape"] == "[8, 4]"
        assert errors == []
    finally:
        ctx.close()
