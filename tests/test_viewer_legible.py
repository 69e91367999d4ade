"""Issue 14.7's viewer items, in headless Chromium from file://: the byte legend lists the byte
classes the byte painter uses (from the manifest); the readout's group names the sections and
prefix groups around a tensor outside the blocks; names wrap after their separators and numbers
stay whole; the readout follows keyboard zooms, keyboard pans and wheel zooms under a still
cursor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import weightvis
from weightvis import color

from .conftest_viewer import chromium_reusing as chromium  # noqa: F401
from .conftest_viewer import open_page, tiny_model_tensors, write_tiny_checkpoint  # noqa: F401
from .test_viewer_browser import Bundle, hover_canvas_pixel, screen_point, set_view

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LONG = "model.vision_tower.encoder.layers.11.self_attention_output_projection.weight"
SEPARATORS = "._/:-"

LINES = """(id) => {
    // the text of a node as laid out, one string per line box (by each character's top)
    const node = document.getElementById(id);
    const walk = document.createTreeWalker(node, NodeFilter.SHOW_TEXT);
    const lines = [];
    let top = null;
    while (walk.nextNode()) {
        const t = walk.currentNode;
        for (let i = 0; i < t.data.length; i++) {
            const r = document.createRange();
            r.setStart(t, i);
            r.setEnd(t, i + 1);
            const rects = r.getClientRects();
            if (!rects.length) continue;
            const y = Math.round(rects[rects.length - 1].top);
            if (top === null || y > top + 2) { lines.push(""); top = y; }
            lines[lines.length - 1] += t.data[i];
        }
    }
    return lines;
}"""


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Bundle]:
    tensors = tiny_model_tensors()
    rng = np.random.default_rng(1)
    tensors["encoder.conv1.weight"] = rng.standard_normal((16, 8, 3)).astype(np.float32)
    tensors[LONG] = rng.standard_normal((32, 48)).astype(np.float32)
    base = tmp_path_factory.mktemp("legible")
    ckpt = write_tiny_checkpoint(base / "model.safetensors", tensors)
    out: dict[str, Bundle] = {}
    for key, kw in (("arch", {}), ("bytes", {"layout": "hilbert", "hilbert_unit": "byte"})):
        res = weightvis.render([ckpt], base / key, workers=1, quiet=True, **kw)
        manifest = json.loads((Path(res.out) / "manifest.json").read_text("utf-8"))
        out[key] = Bundle(Path(res.out), manifest)
    return out


def hover_element(page: Any, bundle: Bundle, name: str, e_row: int, e_col: int) -> None:
    scene = bundle.scene()
    (p,) = [p for p in scene["placements"] if p["tensor"] == name]
    x, y = p["rect"][:2]
    set_view(page, x + e_col + 20, y + e_row + 10, scene["max_zoom"] + 1)
    hover_canvas_pixel(page, x + e_col, y + e_row)


def groups_at(scene: dict[str, Any], c_x: int, c_y: int) -> list[str]:
    """The labels of the scene's groups around canvas pixel (c_x, c_y), biggest first."""
    inside = [g for g in scene["groups"]
              if g["rect"][0] <= c_x < g["rect"][0] + g["rect"][2]
              and g["rect"][1] <= c_y < g["rect"][1] + g["rect"][3]]
    return [g["label"] for g in sorted(inside, key=lambda g: -g["rect"][2] * g["rect"][3])]


# --------------------------------------------------------------------------- (a) byte legend


def test_byte_legend_lists_the_byte_painters_classes(bundles: dict[str, Bundle],
                                                     open_page: Any) -> None:
    bundle = bundles["bytes"]
    cm = bundle.manifest["colormaps"]["bytes"]
    lut = cm["byte_to_index"]
    # the manifest's classes are the painter's: every byte of a class is painted with one of
    # the class's palette entries, and the classes cover every byte once
    assert [c["label"] for c in cm["classes"]] == [c.label for c in color.BYTE_CLASSES]
    covered = []
    for cls in cm["classes"]:
        lo, hi = cls["index"]
        for first, last in cls["bytes"]:
            for b in range(first, last + 1):
                assert lo <= lut[b] <= hi, (cls["label"], b)
                assert lut[b] == color.BYTE_LUT[b]
                covered.append(b)
    assert sorted(covered) == list(range(256))
    page, log = open_page(bundle.url)
    assert page.is_hidden("#wv-legend-bar")  # no colour bar: bytes have no scale
    assert page.eval_on_selector_all("#wv-legend-ticks .wv-tick", "els => els.length") == 0
    rows = page.eval_on_selector_all(
        "#wv-legend-swatches .wv-swatch",
        "els => els.map(e => [e.firstChild.nextSibling.textContent,"
        " e.querySelector('.wv-class-bytes') ? e.querySelector('.wv-class-bytes').textContent"
        " : null, getComputedStyle(e.firstChild).backgroundImage,"
        " getComputedStyle(e.firstChild).backgroundColor])")
    assert [r[0] for r in rows] == [c["label"] for c in cm["classes"]] + ["padding"]

    def rgb(i: int) -> str:
        return "rgb({}, {}, {})".format(*cm["palette"][i])

    for (label, bytes_text, image, flat), cls in zip(rows, cm["classes"], strict=False):
        lo, hi = cls["index"]
        if lo == hi:
            assert flat == rgb(lo) and image == "none", label
        else:  # the class's shades, darkest to brightest
            assert image == f"linear-gradient(to right, {rgb(lo)}, {rgb(hi)})", label
        runs = ", ".join(f"0x{a:02X}" if a == b else f"0x{a:02X}\u20130x{b:02X}"
                         for a, b in cls["bytes"])
        assert bytes_text == (None if runs == label else runs)
    assert page.text_content("#wv-legend-title") == "Colour \u00b7 byte class"
    log.assert_clean()


# --------------------------------------------------------------------------- (b) group


@pytest.mark.parametrize("name", ["model.embed_tokens.weight", "lm_head.weight",
                                  "encoder.conv1.weight", LONG])
def test_group_of_a_tensor_outside_the_blocks(bundles: dict[str, Bundle], open_page: Any,
                                              name: str) -> None:
    bundle = bundles["arch"]
    scene = bundle.scene()
    assert bundle.manifest["tensors"][name]["block"] is None
    page, log = open_page(bundle.url)
    hover_element(page, bundle, name, 2, 1)
    (p,) = [p for p in scene["placements"] if p["tensor"] == name]
    want = groups_at(scene, p["rect"][0] + 1, p["rect"][1] + 2)
    assert want, f"{name}: no group around it in the manifest"
    assert page.text_content("#wv-r-group") == " \u00b7 ".join(want)
    # a block's tensor still shows its block
    hover_element(page, bundle, "model.layers.1.mlp.up_proj.weight", 0, 0)
    assert page.text_content("#wv-r-group") == "block 1"
    log.assert_clean()


# --------------------------------------------------------------------------- (c) wrapping


def test_names_wrap_after_separators_and_numbers_stay_whole(bundles: dict[str, Bundle],
                                                            open_page: Any) -> None:
    bundle = bundles["arch"]
    page, log = open_page(bundle.url, width=1000, height=700)
    hover_element(page, bundle, LONG, 3, 3)
    page.fill("#wv-search", "self_attention")
    page.wait_for_selector("#wv-results li.wv-result")
    page.evaluate("() => document.querySelector('#wv-results li.wv-result').id = 'wv-t-first'")
    for node in ("wv-r-name", "wv-s-name", "wv-t-first"):
        lines = page.evaluate(LINES, node)
        assert "".join(lines) == LONG, (node, lines)
        assert len(lines) >= 2, (node, lines)  # the name is wider than the panel
        for line in lines[:-1]:
            assert line[-1] in SEPARATORS, (node, lines)  # broken after a separator only
    assert page.text_content("#wv-r-name") == LONG  # the <wbr>s add no text
    # numbers and words wrap whole (spaces are the only breaks in the colour interval)
    hover_element(page, bundle, "model.embed_tokens.weight", 3, 3)
    page.wait_for_function("document.getElementById('wv-r-range').textContent.includes('index')")
    text = page.text_content("#wv-r-range")
    lines = page.evaluate(LINES, "wv-r-range")
    assert "".join(lines) == text and len(lines) >= 2, lines
    for a, b in zip(lines, lines[1:], strict=False):
        assert a.endswith(" ") or b.startswith(" "), lines
    log.assert_clean()


# --------------------------------------------------------------------------- (d) still cursor

UNDER_MOUSE = """([x, y]) => {
    const r = weightvisMap.getContainer().getBoundingClientRect();
    const c = weightvis.app.cFromLl(weightvisMap.containerPointToLatLng([x - r.left, y - r.top]));
    return '(' + Math.floor(c.x) + ', ' + Math.floor(c.y) + ')';
}"""


def test_readout_follows_keyboard_and_wheel_under_a_still_cursor(bundles: dict[str, Bundle],
                                                                 open_page: Any) -> None:
    """The mouse never moves after the first hover: Leaflet's own keyboard zoom (about the
    view's centre, animated), keyboard pan and wheel zoom move the map under it."""
    bundle = bundles["arch"]
    scene = bundle.scene()
    (p,) = [p for p in scene["placements"] if p["tensor"] == "lm_head.weight"]
    x, y, w, h = p["rect"]
    page, log = open_page(bundle.url)
    set_view(page, x + w / 2, y + h / 2, scene["max_zoom"] + 2)
    c_x, c_y = x + w // 2 + 60, y + h // 2 + 40  # off the centre: a zoom moves it
    m_x, m_y = screen_point(page, c_x + 0.5, c_y + 0.5)
    page.mouse.move(m_x, m_y)
    shown = "document.getElementById('wv-r-canvas').textContent"
    page.wait_for_function(f"(t) => {shown}.startsWith(t)", arg=f"({c_x}, {c_y})")
    page.focus("#wv-map")
    seen = {f"({c_x}, {c_y})"}
    for key in ("Minus", "Minus", "Equal", "ArrowLeft", "ArrowUp", "wheel"):
        if key == "wheel":
            page.mouse.wheel(0, 240)
        else:
            page.keyboard.press(key)
        page.wait_for_timeout(700)  # Leaflet's zoom / pan animation (250 ms) and its *end event
        want = page.evaluate(UNDER_MOUSE, [m_x, m_y])
        page.wait_for_function(f"(t) => {shown}.startsWith(t)", arg=want, timeout=5000)
        seen.add(want)
        r = page.text_content("#wv-r-name")
        hit = page.evaluate("(xy) => { const h = weightvis.app.model.hitAt(xy[0], xy[1]);"
                            " return h && h.item ? h.item.name : '\u2014'; }",
                            [int(v) for v in want.strip("()").split(", ")])
        assert r == hit, (key, r, hit)
    assert len(seen) >= 4, seen  # the map really moved under the cursor
    log.assert_clean()
