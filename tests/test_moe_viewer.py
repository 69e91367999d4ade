"""The MoE scenes in the viewer, from file:// in headless Chromium: the scene picker and keys
switch scenes and each scene keeps its view; hovering a cell shows its exact number, layer,
expert and statistic (from the manifest, or from a sidecar script loaded on demand); dense
layers and dead experts say so; nothing leaves file://. Set WEIGHTVIS_SCREENSHOTS=DIR to keep
screenshots."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import weightvis
from weightvis.executors import InlineExecutor
from weightvis.options import MoEOptions

from .conftest_viewer import chromium_reusing, open_page  # noqa: F401
from .moe_fakes import Planted, write_moe_checkpoint

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("moe-viewer")
    ckpt = write_moe_checkpoint(base / "ckpt")
    inline = weightvis.render([ckpt], base / "inline", executor=InlineExecutor())
    side = weightvis.render([ckpt], base / "side", executor=InlineExecutor(),
                            moe=MoEOptions(inline_max=0))
    return {"inline": inline, "side": side}


def keep(page: Any, name: str) -> None:
    folder = os.environ.get("WEIGHTVIS_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"moe-{name}.png"))


def hover_cell(page: Any, manifest: dict[str, Any], key: str, tensor: str, row: int,
               col: int) -> None:
    """Move the mouse to the centre of cell (row, col) of panel ``tensor`` of scene ``key``
    (zooming there first, so the cell is big on screen)."""
    scene = next(s for s in manifest["scenes"] if s["key"] == key)
    p = next(p for p in scene["placements"] if p["tensor"] == tensor)
    cell = p["cell"]
    cx, cy = p["rect"][0] + (col + 0.5) * cell, p["rect"][1] + (row + 0.5) * cell
    page.evaluate(f"(() => {{ const app = weightvis.app; app.map.setView(app.llFromC({cx}, "
                  f"{cy}), {scene['max_zoom'] + 1}, {{animate: false}}); }})()")
    xy = page.evaluate(f"(() => {{ const s = weightvisMap.latLngToContainerPoint("
                       f"weightvis.app.llFromC({cx}, {cy})); const r = document."
                       f"getElementById('wv-map').getBoundingClientRect(); "
                       f"return [s.x + r.left, s.y + r.top]; }})()")
    page.mouse.move(xy[0] + 1, xy[1] + 1)
    page.mouse.move(xy[0], xy[1])


def readout(page: Any) -> dict[str, str]:
    """The MoE rows of the readout, label -> text."""
    return page.evaluate("""() => { const out = {}; const box = document.getElementById('wv-r-moe');
        const dts = box.querySelectorAll('dt');
        dts.forEach(dt => { out[dt.textContent] = dt.nextElementSibling.textContent; });
        return out; }""")


def js_number(v: float) -> str:
    """How the viewer writes a number: JavaScript's String(v), minus as U+2212."""
    text = repr(float(v))
    if text.endswith(".0"):
        text = text[:-2]
    return text.replace("-", "\u2212")


def test_switching_scenes_keeps_each_view(bundles: dict[str, Any], open_page: Any) -> None:
    res = bundles["inline"]
    page, log = open_page((res.out / "index.html").resolve().as_uri())
    keys = [s["key"] for s in res.manifest["scenes"]]
    assert page.eval_on_selector_all("#wv-scene option", "os => os.map(o => o.value)") == keys
    assert "MoE summary" in page.text_content("#wv-keys")
    page.select_option("#wv-scene", "moe-summary")
    assert page.evaluate("weightvis.app.model.key") == "moe-summary"
    assert page.evaluate("weightvis.app.model.kind.name") == "sequential"
    page.evaluate("weightvis.app.map.setView(weightvis.app.llFromC(200, 300), 2, "
                  "{animate: false})")
    view = page.evaluate("(() => { const c = weightvis.app.cFromLl(weightvisMap.getCenter());"
                         " return [weightvisMap.getZoom(), Math.round(c.x), Math.round(c.y)];"
                         " })()")
    page.keyboard.press("c")
    assert page.evaluate("weightvis.app.model.key") == "moe-similarity"
    assert page.text_content(".wv-sub") == "weightvis · 1 px = 1 number at full zoom"
    page.keyboard.press("w")
    assert page.evaluate("weightvis.app.model.key") == "main"
    assert page.text_content(".wv-sub") == "weightvis · 1 px = 1 element at full zoom"
    page.keyboard.press("s")
    assert page.evaluate("weightvis.app.model.key") == "moe-summary"
    again = page.evaluate("(() => { const c = weightvis.app.cFromLl(weightvisMap.getCenter());"
                          " return [weightvisMap.getZoom(), Math.round(c.x), Math.round(c.y)];"
                          " })()")
    assert again == view
    assert "scene=moe-summary" in page.evaluate("location.hash")
    # the relative scene shares the summary's geometry: the same view
    page.keyboard.press("r")
    assert page.evaluate("weightvis.app.model.key") == "moe-relative"
    rel = page.evaluate("(() => { const c = weightvis.app.cFromLl(weightvisMap.getCenter());"
                        " return [weightvisMap.getZoom(), Math.round(c.x), Math.round(c.y)];"
                        " })()")
    assert rel == view
    swatches = page.eval_on_selector_all("#wv-legend-swatches .wv-swatch",
                                         "els => els.map(e => e.textContent)")
    assert swatches == ["dense layer", "dead expert", "no number", "padding"]
    log.assert_clean()


def test_hover_shows_the_exact_numbers(bundles: dict[str, Any], open_page: Any) -> None:
    res = bundles["inline"]
    m, doc = res.manifest, res.manifest["moe"]
    page, log = open_page((res.out / "index.html").resolve().as_uri() + "#scene=moe-summary")
    # a value cell: layer 3 (row 3 of the panel: dense layer 0 first), expert 1, rms of down
    hover_cell(page, m, "moe-summary", "rms · down", 3, 1)
    got = readout(page)
    want = doc["stats"]["rms"]["down"][doc["layers"].index(3)][1]
    assert got["layer"] == "3" and got["expert"] == "1"
    assert got["statistic"] == "rms · down" and got["value"] == js_number(want)
    assert "rms · down: lo" in page.text_content("#wv-legend-values")
    keep(page, "summary-hover")
    # a dense layer
    hover_cell(page, m, "moe-summary", "stable rank · gate", 0, 2)
    got = readout(page)
    assert got["layer"] == "0" and got["value"].startswith("dense layer")
    # the dead expert
    layer, dead = Planted.dead
    hover_cell(page, m, "moe-summary", "mean |w| · up", layer, dead)
    got = readout(page)
    assert got["value"] == "0" and got["status"] == "dead expert (all zeros)"
    # relative to the layer median
    page.keyboard.press("r")
    hover_cell(page, m, "moe-relative", "relative · rms · gate", 1, 3)
    got = readout(page)
    rms = doc["stats"]["rms"]["gate"][0]
    med = sorted(rms)[1] / 2 + sorted(rms)[2] / 2
    assert got["value"] == js_number(rms[3]) and got["layer median"] == js_number(med)
    assert got["\u00f7 median"] == js_number(rms[3] / med)
    keep(page, "relative-hover")
    # similarity: the copy scores exactly 1, the permuted copy CKA 1 and cosine near 0
    page.keyboard.press("c")
    layer, copy, src = Planted.copy
    hover_cell(page, m, "moe-similarity", f"gate · CKA · layer {layer}", copy, src)
    got = readout(page)
    assert got["value"] == "1" and got["experts"] == f"{copy} and {src}"
    assert got["CKA"] == "exact"
    _, perm, _ = Planted.permuted
    hover_cell(page, m, "moe-similarity", f"down · cosine · layer {layer}", perm, src)
    want = doc["similarity"]["cosine"]["down"][str(layer)][perm][src]
    assert readout(page)["value"] == js_number(want) and abs(want) < 0.1
    layer, dead = Planted.dead
    hover_cell(page, m, "moe-similarity", f"up · CKA · layer {layer}", dead, 0)
    assert readout(page)["value"].startswith(f"none: expert {dead} is dead")
    keep(page, "similarity-hover")
    log.assert_clean()


def test_similarity_numbers_from_sidecars(bundles: dict[str, Any], open_page: Any) -> None:
    res = bundles["side"]
    m, doc = res.manifest, res.manifest["moe"]
    assert doc["similarity"]["cka"]["gate"]["3"] == {"sidecar": "moe/layer-3.js"}
    page, log = open_page((res.out / "index.html").resolve().as_uri() + "#scene=moe-similarity")
    hover_cell(page, m, "moe-similarity", "gate · cosine · layer 3", 2, 0)
    page.wait_for_function("document.getElementById('wv-r-moe-value') && "
                           "document.getElementById('wv-r-moe-value').textContent !== "
                           "'loading\u2026'")
    from weightvis.moe.document import read_sidecar

    side = read_sidecar((res.out / "moe" / "layer-3.js").read_text())
    # the sidecar's float32, as its shortest decimal (what reads back to the same float32)
    want = side["similarity"]["cosine"]["gate"][2][0]
    assert readout(page)["value"] == js_number(float(str(want)))
    # the sidecar was loaded once, by a <script> element, from file://
    assert sum(u.endswith("moe/layer-3.js") for u in log.requests) == 1
    hover_cell(page, m, "moe-similarity", "up · CKA · layer 3", 1, 2)
    want = side["similarity"]["cka"]["up"][1][2]
    assert readout(page)["value"] == js_number(float(str(want)))
    exact = bundles["inline"].manifest["moe"]["similarity"]["cka"]["up"]["3"][1][2]
    assert float(want) == float(np.float32(exact))  # the inline bundle's number, as float32
    assert sum(u.endswith("moe/layer-3.js") for u in log.requests) == 1
    keep(page, "sidecar-hover")
    log.assert_clean()


LABELS_OVER_PIECES = """(() => { const app = weightvis.app, ov = app.overlay, v = ov.view();
  const pieces = app.model.pieces.map(p => [v.ox + v.k * p.rect[0], v.oy + v.k * p.rect[1],
                                            v.k * p.rect[2], v.k * p.rect[3]]);
  const over = [];
  for (const l of ov.labels) for (const p of pieces) { const b = l.box;
    if (b[0] < p[0] + p[2] && p[0] < b[0] + b[2] && b[1] < p[1] + p[3] && p[1] < b[1] + b[3])
      over.push(l.text); }
  return {over: over, groups: ov.labels.filter(l => l.kind === 'group').map(l => l.text),
          titles: ov.labels.filter(l => l.kind === 'tensor').map(l => l.text)}; })()"""


@pytest.mark.parametrize(("layers", "experts"), [(58, 8), (8, 64), (2, 256)])
def test_similarity_grid_labels_never_cover_a_panel(tmp_path: Path, open_page: Any,
                                                    layers: int, experts: int) -> None:
    """Many MoE layers wrap into columns (the scene about as wide as a landscape viewport, not
    a thin column); at every zoom from the overview in, no label's box meets a panel's; the
    readout names the layer, both experts and the value."""
    ckpt = write_moe_checkpoint(tmp_path / "ckpt", layers=layers, dense=(0,), experts=experts,
                                hidden=16, inter=8, shared=False)
    res = weightvis.render([ckpt], tmp_path / "out", executor=InlineExecutor(),
                           moe=MoEOptions(only=True, inline_max=1 << 22))
    scene = next(s for s in res.manifest["scenes"] if s["key"] == "moe-similarity")
    assert 0.9 <= scene["width"] / scene["height"] <= 3.0, (scene["width"], scene["height"])
    page, log = open_page((res.out / "index.html").resolve().as_uri() + "#scene=moe-similarity")
    seen_groups, seen_titles = set(), set()
    for step in range(4):
        if step:
            page.evaluate("weightvis.app.map.setZoom(weightvis.app.map.getZoom() + 1, "
                          "{animate: false})")
        # (the view's tiles loaded before the next zoom: none is aborted half-way)
        page.wait_for_function("!weightvis.app.tiles.isLoading()")
        page.evaluate("weightvis.app.overlay.draw()")
        got = page.evaluate(LABELS_OVER_PIECES)
        assert got["over"] == [], (step, got["over"][:5])
        seen_groups.update(got["groups"])
        seen_titles.update(got["titles"])
        keep(page, f"similarity-{layers}x{experts}-z{step}")
    assert seen_groups and all(g.startswith("layer ") for g in seen_groups)
    assert seen_titles   # panel titles appear above their panels once there is room
    layer = res.manifest["moe"]["layers"][-1]
    cka = res.manifest["moe"]["similarity"]["cka"]["up"][str(layer)]
    i, j = next((i, j) for i in range(1, experts) for j in range(i)
                if cka[i][j] is not None)    # (not a dead expert's)
    hover_cell(page, res.manifest, "moe-similarity", f"up · CKA · layer {layer}", i, j)
    got = readout(page)
    want = cka[i][j]
    assert got["layer"] == str(layer) and got["experts"] == f"{i} and {j}"
    assert got["value"] == js_number(want)
    assert page.evaluate(LABELS_OVER_PIECES)["over"] == []
    log.assert_clean()


def test_readout_names_the_sampled_estimate(tmp_path: Path, open_page: Any) -> None:
    """A sampled CKA panel says how its numbers were estimated: exact Gram rows at the
    sampled hidden coordinates (``--cka sketch --cka-sample 6``), and the value is the
    manifest's."""
    ckpt = write_moe_checkpoint(tmp_path / "ckpt", layers=2, dense=(), experts=4, hidden=16,
                                inter=8, shared=False)
    res = weightvis.render([ckpt], tmp_path / "out", executor=InlineExecutor(),
                           moe=MoEOptions(only=True, cka="sketch", cka_sample=6))
    scene = next(s for s in res.manifest["scenes"] if s["key"] == "moe-similarity")
    assert scene  # (the similarity scene is there)
    page, log = open_page((res.out / "index.html").resolve().as_uri() + "#scene=moe-similarity")
    layer = res.manifest["moe"]["layers"][0]
    hover_cell(page, res.manifest, "moe-similarity", f"gate · CKA · layer {layer}", 2, 1)
    got = readout(page)
    assert got["CKA"] == "sampled (exact Gram rows at 6 hidden coordinates)"
    assert got["value"] == js_number(res.manifest["moe"]["similarity"]["cka"]["gate"]
                                     [str(layer)][2][1])
    log.assert_clean()
