"""The viewer on diff bundles (docs/diff-manifest.md) in a real headless Chromium from file://.

Most tests use a hand-made diff bundle (tests/conftest_viewer.py ``make_diff_bundle``): the tiny
model as A, and B = A with planted edits (one element +0.5, a row zeroed, a tensor scaled x1.01,
a vocabulary resize, a tensor only in B, one only in A, and the hostile name changed). When the
engine exists (``weightvis.diff``), one test renders a real diff bundle from two safetensors files.

Every test asserts the page stayed clean: no console error, no page error, no dialog, no failed
request, and every request on file://. Set WEIGHTVIS_SCREENSHOTS=DIR to keep screenshots.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from weightvis.html import viewer_scripts

from .conftest_viewer import (  # noqa: F401  (fixtures)
    HOSTILE,
    RAMP,
    chromium_reusing,
    delta_index,
    make_diff_bundle,
    open_page,
    planted_diff_tensors,
    ramp_values,
    view2d,
)
from .test_viewer_browser import (
    Bundle,
    assert_rgb,
    hover_canvas_pixel,
    readout,
    screen_rgb,
    set_view,
    tile_urls_in_index,
    view_contains,
    wait_tiles,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MINUS = "\u2212"
UP = "model.layers.1.mlp.up_proj.weight"  # row 10 zeroed: 48 changes, values stored
SCALED = "model.layers.0.mlp.down_proj.weight"  # x1.01: 4608 changes, values not stored
SAME = "model.layers.0.self_attn.q_proj.weight"  # identical
ONLY_B = "model.extra_b.weight"
ONLY_A = "model.conv.weight"
EMBED = "model.embed_tokens.weight"  # 96 -> 100 rows


@pytest.fixture(scope="module")
def planted() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    return planted_diff_tensors()


@pytest.fixture(scope="module")
def diffb(planted: Any, tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    a, b = planted
    out = tmp_path_factory.mktemp("diff") / "bundle"
    manifest = make_diff_bundle(
        out,
        a,
        b,
        diagnosis=[
            "5 tensors differ: 4 changed, 1 changed shape (vocabulary 96 -> 100)",
            f"{ONLY_B} is new in B; {ONLY_A} was dropped",
        ],
    )
    return Bundle(out, manifest)


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """2,500 pairs, every one changed by a different number of elements (1..4)."""
    rng = np.random.default_rng(3)
    a = {f"t.{i:04d}.weight": rng.standard_normal((2, 4)).astype(np.float32) for i in range(2500)}
    b = {k: v.copy() for k, v in a.items()}
    for i, v in enumerate(b.values()):
        v.flat[: 1 + i % 4] += np.float32(1.0)
    out = tmp_path_factory.mktemp("many") / "bundle"
    return Bundle(out, make_diff_bundle(out, a, b, scenes=("delta",), c_max_w=1200))


# --------------------------------------------------------------------------- helpers


def shot(page: Any, name: str) -> None:
    """Keep a screenshot when WEIGHTVIS_SCREENSHOTS names a folder."""
    folder = os.environ.get("WEIGHTVIS_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"diff-{name}.png"))


def table_names(page: Any) -> list[str]:
    return page.eval_on_selector_all(
        "#wv-ct-rows tr.wv-ct-row td:first-child", "els => els.map(e => e.textContent)"
    )


def table_column(page: Any, index: int) -> list[str]:
    return page.eval_on_selector_all(
        "#wv-ct-rows tr.wv-ct-row", "(rows, i) => rows.map(r => r.children[i].textContent)", index
    )


def assert_only_listed_tiles_requested_any_scene(bundle: Bundle, log: Any) -> None:
    base = bundle.url.rsplit("/", 1)[0] + "/"
    listed = set().union(*(tile_urls_in_index(bundle, s["key"]) for s in bundle.manifest["scenes"]))
    tiles = [u[len(base) :] for u in log.requests if u.startswith(base + "tiles/")]
    assert tiles, "no tile was requested"
    assert set(tiles) <= listed, sorted(set(tiles) - listed)


def pairs_of(bundle: Bundle) -> list[dict[str, Any]]:
    return bundle.manifest["diff"]["pairs"]


def diff_readout(page: Any) -> dict[str, str]:
    r = readout(page)
    r.update(
        page.evaluate("""() => ({status: document.getElementById('wv-r-status').textContent,
        ab: document.getElementById('wv-r-ab').textContent,
        delta: document.getElementById('wv-r-delta').textContent})""")
    )
    return r


def parse_num(text: str) -> float:
    return float(text.replace(MINUS, "-").replace("+", ""))


def hover_element(
    page: Any, bundle: Bundle, tensor: str, e_row: int, e_col: int, scene: str = "delta"
) -> None:
    (p,) = [p for p in bundle.scene(scene)["placements"] if p["tensor"] == tensor]
    x, y = p["rect"][0], p["rect"][1]
    c_x, c_y = x + e_col - p["cols"][0], y + e_row - p["rows"][0]
    set_view(page, c_x + 0.5, c_y + 0.5, bundle.scene(scene)["max_zoom"] + 3)
    hover_canvas_pixel(page, c_x, c_y)


def stats_rows(page: Any) -> dict[str, str]:
    return dict(
        page.eval_on_selector_all(
            "#wv-s-table tr",
            "rows => rows.map(r => [r.children[0].textContent, r.children[1].textContent])",
        )
    )


def current_view(page: Any) -> tuple[float, float, float]:
    return tuple(
        page.evaluate(  # type: ignore[return-value]
            """(() => { const c = weightvis.app.cFromLl(weightvisMap.getCenter());
                return [c.x, c.y, weightvisMap.getZoom()]; })()"""
        )
    )


# --------------------------------------------------------------------------- tests


def test_delta_legend_and_values_legend(diffb: Bundle, open_page: Any) -> None:
    page, log = open_page(diffb.url)
    assert page.evaluate("weightvis.app.model.key") == "delta"
    cm = diffb.manifest["colormaps"]["delta"]
    assert page.text_content("#wv-legend-title") == f"Colour \u00b7 \u0394 = B {MINUS} A (rms)"
    ticks = page.eval_on_selector_all(
        "#wv-legend-ticks .wv-tick", "els => els.map(e => e.textContent)"
    )
    assert ticks == [f"{MINUS}s\u0394", f"{MINUS}s\u0394/4", "0", "+s\u0394/4", "+s\u0394"]
    lefts = page.eval_on_selector_all(
        "#wv-legend-ticks .wv-tick", "els => els.map(e => parseFloat(e.style.left))"
    )
    n = 2 * cm["levels"] + 1
    assert lefts[2] == pytest.approx(50, abs=0.3)
    # +s/4 is level floor(123 * sqrt(1/4) + 0.5) = 62
    assert lefts[3] - lefts[2] == pytest.approx(100 * 62 / n, abs=0.3)
    bar = page.evaluate("""(() => { const c = document.getElementById('wv-legend-bar');
        const d = c.getContext('2d').getImageData(0, 0, c.width, 1).data;
        const px = i => [d[4*i], d[4*i+1], d[4*i+2]];
        return [c.width, px(0), px((c.width - 1) / 2), px(c.width - 1)]; })()""")
    z, lv = cm["zero_index"], cm["levels"]
    assert bar == [n, cm["palette"][z - lv], cm["palette"][z], cm["palette"][z + lv]]
    assert page.is_visible("#wv-legend-ends")
    swatches = page.eval_on_selector_all(
        "#wv-legend-swatches .wv-swatch", "els => els.map(e => e.textContent)"
    )
    assert swatches == ["unchanged", "non-finite \u0394", "only in A", "only in B", "padding"]
    # the hatch swatches are drawn with the palette's hatch and gap colours, both directions
    hatches = page.eval_on_selector_all(
        "#wv-legend-swatches canvas.wv-swatch-hatch",
        """els => els.map(c => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const seen = new Set();
        for (let i = 0; i < d.length; i += 4) seen.add(d[i] + ',' + d[i+1] + ',' + d[i+2]);
        return [c.dataset.index, [...seen].sort(), [d[0], d[1], d[2]],
                [d[4*4], d[4*4+1], d[4*4+2]]]; })""",
    )
    gap = ",".join(map(str, cm["palette"][cm["hatch_gap_index"]]))
    wanted = [cm["only_a_index"], cm["only_b_index"]]
    for (index, colours, px0, px4), want in zip(hatches, wanted, strict=True):
        assert int(index) == want
        assert colours == sorted({",".join(map(str, cm["palette"][want])), gap})
        assert px0 == cm["palette"][want] and px4 == cm["palette"][cm["hatch_gap_index"]]
    # s_delta of the tensor under the cursor
    hover_element(page, diffb, RAMP, 3, 3)
    s = diffb.manifest["tensors"][RAMP]["scale"]
    values = page.text_content("#wv-legend-values")
    assert values.startswith("s\u0394 = ") and float(values.split()[2]) == pytest.approx(
        s, rel=1e-3
    )
    shot(page, "legend")
    # a values scene keeps the values legend, with scale_a of the tensor under the cursor
    page.keyboard.press("a")
    page.wait_for_function("weightvis.app.model.key === 'a'")
    ticks = page.eval_on_selector_all(
        "#wv-legend-ticks .wv-tick", "els => els.map(e => e.textContent)"
    )
    assert ticks == [f"{MINUS}s", f"{MINUS}s/4", "0", "+s/4", "+s"]
    assert page.text_content("#wv-legend-title") == "Colour"
    assert not page.is_visible("#wv-legend-ends")
    (pair,) = [p for p in pairs_of(diffb) if p["name"] == RAMP]
    assert float(page.text_content("#wv-legend-values").split()[2]) == pytest.approx(
        pair["scale_a"], rel=1e-3
    )
    assert page.text_content("#wv-r-scale-label") == "scale s (A)"
    log.assert_clean()


def test_table_lists_non_identical_pairs_and_filters(diffb: Bundle, open_page: Any) -> None:
    page, log = open_page(diffb.url)
    pairs = pairs_of(diffb)
    changed = {p["name"] for p in pairs if p["status"] != "identical"}
    assert len(changed) == 7
    assert page.is_visible("#wv-changes")
    names = table_names(page)
    assert sorted(names) == sorted(changed)
    # default order: shape-changed and one-sided first, then changed by ||delta||/||A||
    statuses = table_column(page, 1)
    assert statuses[:3] == ["shape changed", "only in B", "only in A"]
    assert set(statuses[3:]) == {"changed"}
    assert page.text_content("#wv-ct-count") == f"showing 7 of {len(pairs)}"
    summary = page.text_content("#wv-ct-summary")
    assert summary.startswith(
        f"{len(pairs)} pairs: 4 changed \u00b7 1 shape changed \u00b7 1 only in A"
        " \u00b7 1 only in B \u00b7 9 identical"
    )
    assert (
        page.eval_on_selector_all("#wv-ct-diagnosis li", "els => els.map(e => e.textContent)")
        == diffb.manifest["diff"]["diagnosis"]
    )
    # every pair with "identical" ticked; none with everything unticked
    page.check("#wv-ct-filters input[value=identical]")
    assert sorted(table_names(page)) == sorted(p["name"] for p in pairs)
    for box in page.query_selector_all("#wv-ct-filters input"):
        box.uncheck()
    assert table_names(page) == []
    assert page.text_content("#wv-ct-rows") == "no pair matches the filter"
    page.check("#wv-ct-filters input[value=changed]")
    assert sorted(table_names(page)) == sorted(p["name"] for p in pairs if p["status"] == "changed")
    page.fill("#wv-ct-name", "layers.1")
    assert table_names(page) == [UP]
    shot(page, "table-filtered")
    log.assert_clean()


def test_sort_by_changed_elements(diffb: Bundle, open_page: Any) -> None:
    page, log = open_page(diffb.url)
    page.check("#wv-ct-filters input[value=identical]")
    page.click("#wv-ct-headrow th:nth-child(7) button")
    assert page.get_attribute("#wv-ct-headrow th:nth-child(7)", "aria-sort") == "descending"
    counts = [None if t == "\u2014" else int(t.replace(",", "")) for t in table_column(page, 6)]
    known = [c for c in counts if c is not None]
    assert known == sorted(known, reverse=True) and known[0] == 4608
    assert counts[len(known) :] == [None] * (len(counts) - len(known)), (
        "one-sided pairs (no numbers) last"
    )
    assert table_names(page)[0] == SCALED
    page.click("#wv-ct-headrow th:nth-child(7) button")
    assert page.get_attribute("#wv-ct-headrow th:nth-child(7)", "aria-sort") == "ascending"
    counts = [None if t == "\u2014" else int(t.replace(",", "")) for t in table_column(page, 6)]
    known = [c for c in counts if c is not None]
    assert known == sorted(known) and known[-1] == 4608
    assert counts[len(known) :] == [None] * (len(counts) - len(known))
    # by name
    page.click("#wv-ct-headrow th:nth-child(1) button")
    names = table_names(page)
    assert names == sorted(names)
    log.assert_clean()


def test_row_click_and_keyboard_zoom_to_the_tensor(diffb: Bundle, open_page: Any) -> None:
    page, log = open_page(diffb.url)
    names = table_names(page)
    (rect,) = diffb.rects(UP)
    set_view(page, 5, 5, diffb.scene()["max_zoom"] + 3)
    assert not view_contains(page, rect)
    page.click(f"#wv-ct-rows tr.wv-ct-row >> nth={names.index(UP)}")
    assert view_contains(page, rect)
    assert page.evaluate("weightvisMap.getZoom()") >= diffb.scene()["max_zoom"]
    assert page.text_content("#wv-s-name") == UP
    assert page.evaluate("weightvis.app.selected.name") == UP
    assert page.eval_on_selector_all(
        "#wv-ct-rows tr.wv-ct-selected td:first-child", "els => els.map(e => e.textContent)"
    ) == [UP]
    stats = stats_rows(page)
    assert stats["status"] == "changed"
    assert stats["changed"].startswith("48 of 4,608")
    assert stats["rows"] == "1 row: 10"
    assert stats["bbox"] == "rows 10 \u00b7 cols 0\u201347"
    assert stats["rank (99 %)"].startswith("1  (top 1 100 %")  # one zeroed row: rank 1
    assert table_column(page, 7)[names.index(UP)] == "1"
    # keyboard: the focused row moves with the arrows, Enter zooms
    page.focus("#wv-ct-rows tr.wv-ct-row[tabindex='0']")
    page.keyboard.press("Home")
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.children[0].textContent") == names[1]
    page.keyboard.press("Enter")
    target = names[1]
    assert page.text_content("#wv-s-name") == target
    for r in diffb.rects(target):
        assert view_contains(page, r)
    assert not view_contains(page, rect)
    # a click on the map selects that tensor's row
    (ramp_rect,) = diffb.rects(RAMP)
    set_view(page, ramp_rect[0] + 10, ramp_rect[1] + 10, diffb.scene()["max_zoom"] + 2)
    hover_canvas_pixel(page, ramp_rect[0] + 10, ramp_rect[1] + 10)
    page.mouse.down()
    page.mouse.up()
    page.wait_for_function(
        "weightvis.app.selected && weightvis.app.selected.name === 'model.ramp.weight'"
    )
    assert page.eval_on_selector_all(
        "#wv-ct-rows tr.wv-ct-selected td:first-child", "els => els.map(e => e.textContent)"
    ) == [RAMP]
    log.assert_clean()


def test_readout_values_and_statuses(diffb: Bundle, planted: Any, open_page: Any) -> None:
    a, b = planted
    page, log = open_page(diffb.url)
    hover_element(page, diffb, RAMP, 7, 42)
    r = diff_readout(page)
    assert (r["name"], r["element"]) == (RAMP, "[7, 42]")
    assert r["status"] == "changed \u00b7 this element changed"
    a_text, b_text = r["ab"].split(" \u2192 ")
    want_a, want_b = float(ramp_values()[7, 42]), float(b[RAMP][7, 42])
    assert parse_num(a_text) == pytest.approx(want_a, rel=1e-6)
    assert parse_num(b_text) == pytest.approx(want_b, rel=1e-6)
    assert r["delta"] == "+0.5"
    assert r["scale"] == page.evaluate(
        "(s) => String(Number(s.toPrecision(4)))", diffb.manifest["tensors"][RAMP]["scale"]
    )
    wait_tiles(page, diffb.scene()["max_zoom"])
    shot(page, "readout-element")
    # the pixel is the rule's green, and its neighbour is black
    (p,) = [p for p in diffb.scene()["placements"] if p["tensor"] == RAMP]
    cm = diffb.manifest["colormaps"]["delta"]
    s = diffb.manifest["tensors"][RAMP]["scale"]
    want = int(delta_index(a[RAMP][7:8, 42:43], b[RAMP][7:8, 42:43], s)[0, 0])
    assert want > cm["zero_index"]
    assert_rgb(screen_rgb(page, p["rect"][0] + 42, p["rect"][1] + 7), cm["palette"][want])
    assert_rgb(
        screen_rgb(page, p["rect"][0] + 43, p["rect"][1] + 7), cm["palette"][cm["zero_index"]]
    )
    # another element of the same tensor: every change is listed, so this one is known unchanged
    hover_element(page, diffb, RAMP, 0, 0)
    r = diff_readout(page)
    assert (r["status"], r["ab"], r["delta"]) == ("changed", "unchanged (B = A)", "0")
    # an identical tensor
    hover_element(page, diffb, SAME, 5, 6)
    r = diff_readout(page)
    assert (r["name"], r["status"], r["ab"], r["delta"]) == (SAME, "identical", "unchanged", "0")
    # a zeroed row: B = 0
    hover_element(page, diffb, UP, 10, 3)
    r = diff_readout(page)
    assert parse_num(r["ab"].split(" \u2192 ")[0]) == pytest.approx(float(a[UP][10, 3]), rel=1e-6)
    assert r["ab"].endswith(" \u2192 0")
    # more than 64 changes: values not stored
    hover_element(page, diffb, SCALED, 2, 2)
    r = diff_readout(page)
    assert (r["status"], r["ab"], r["delta"]) == (
        "changed",
        "not stored (more than 64 changes)",
        "\u2014",
    )
    # one-sided and shape-changed
    hover_element(page, diffb, ONLY_B, 1, 1)
    assert diff_readout(page)["ab"] == "only in B"
    hover_element(page, diffb, ONLY_A, 1, 1)
    assert diff_readout(page)["ab"] == "only in A"
    hover_element(page, diffb, EMBED, 98, 1)
    r = diff_readout(page)
    assert (r["status"], r["ab"]) == ("shape changed", "only in B (outside A\u2019s shape)")
    hover_element(page, diffb, EMBED, 5, 1)
    assert diff_readout(page)["ab"] == "unchanged (B = A)"  # the overlap of an unchanged resize
    log.assert_clean()


def test_hostile_name_in_a_diff_stays_text(diffb: Bundle, open_page: Any) -> None:
    page, log = open_page(diffb.url)
    names = table_names(page)
    assert HOSTILE in names
    page.click(f"#wv-ct-rows tr.wv-ct-row >> nth={names.index(HOSTILE)}")
    (rect,) = diffb.rects(HOSTILE)
    assert view_contains(page, rect)
    assert page.text_content("#wv-s-name") == HOSTILE
    hover_canvas_pixel(page, rect[0] + 4, rect[1] + 3)
    r = diff_readout(page)
    assert r["name"] == HOSTILE and parse_num(r["delta"]) == pytest.approx(0.25, abs=1e-6)
    page.fill("#wv-ct-name", "onerror")
    assert table_names(page) == [HOSTILE]
    assert page.get_attribute("#wv-ct-rows tr.wv-ct-row td:first-child", "title") == HOSTILE
    page.wait_for_timeout(300)
    assert log.dialogs == []
    assert (
        page.evaluate("[...document.images].filter(i => i.getAttribute('src') === 'x').length") == 0
    )
    # the manifest, leaflet and the viewer's scripts: no name became a <script>
    assert page.evaluate("document.scripts.length") == 2 + len(viewer_scripts(diffb.manifest))
    log.assert_clean()


def test_map_is_measured_above_the_change_table(diffb: Bundle, open_page: Any) -> None:
    """Leaflet reads its size once the change table is laid out below the map: a size read
    before put the view's centre, and the fitted content, under the table."""
    page, log = open_page(diffb.url)
    size = page.evaluate("[weightvisMap.getSize().x, weightvisMap.getSize().y]")
    box = page.evaluate("(() => { const r = document.getElementById('wv-map')"
                        ".getBoundingClientRect(); return [r.width, r.height]; })()")
    assert size == pytest.approx(box, abs=1) and box[1] < 800 * 0.7
    # the fitted content lies inside the visible map
    c_w, c_h = diffb.scene()["width"], diffb.scene()["height"]
    for cx, cy in [(0, 0), (c_w, c_h)]:
        x, y = page.evaluate("([cx, cy]) => { const p = weightvisMap.latLngToContainerPoint("
                             "weightvis.llFromC(cx, cy)); return [p.x, p.y]; }", [cx, cy])
        assert 0 <= x <= box[0] and 0 <= y <= box[1]
    log.assert_clean()


def test_scene_keys_keep_the_view(diffb: Bundle, open_page: Any) -> None:
    page, log = open_page(diffb.url)
    hint = page.text_content("#wv-keys")
    assert hint == f"keys a A \u00b7 b B \u00b7 d \u0394 B {MINUS} A \u2014 same view"
    (rect,) = diffb.rects(RAMP)
    mz = diffb.scene()["max_zoom"]
    page.click(f"#wv-ct-rows tr.wv-ct-row >> nth={table_names(page).index(RAMP)}")
    set_view(page, rect[0] + 42.5, rect[1] + 7.5, mz + 2.25)
    hover_canvas_pixel(page, rect[0] + 42, rect[1] + 7)
    view = current_view(page)
    for key, scene in [("a", "a"), ("b", "b"), ("d", "delta"), ("b", "b")]:
        page.keyboard.press(key)
        page.wait_for_function("(k) => weightvis.app.model.key === k", arg=scene)
        assert current_view(page) == pytest.approx(view, abs=1e-6)
        assert page.evaluate("document.getElementById('wv-scene').value") == scene
        page.wait_for_function("(k) => location.hash.startsWith('#scene=' + k + '&')", arg=scene)
        srcs = wait_tiles(page, mz)
        assert srcs and all(src.startswith(f"tiles/{scene}/") for src, *_ in srcs)
        # selection and readout carry over: same tensor, same element
        assert page.evaluate("weightvis.app.selected.name") == RAMP
        r = diff_readout(page)
        assert (r["name"], r["element"], r["delta"]) == (RAMP, "[7, 42]", "+0.5")
        shot(page, f"scene-{scene}")
    # the B scene draws B's value there by the values rule with scale_b
    (pair,) = [p for p in pairs_of(diffb) if p["name"] == RAMP]
    assert page.text_content("#wv-r-scale-label") == "scale s (B)"
    assert float(page.text_content("#wv-r-scale")) == pytest.approx(pair["scale_b"], rel=1e-3)
    # keys typed into a text field do not switch scenes
    page.fill("#wv-search", "")
    page.focus("#wv-search")
    page.keyboard.press("d")
    assert page.evaluate("weightvis.app.model.key") == "b"
    # the select keeps the view too (the scenes share geometry)
    page.select_option("#wv-scene", "delta")
    assert current_view(page) == pytest.approx(view, abs=1e-6)
    assert_only_listed_tiles_requested_any_scene(diffb, log)
    log.assert_clean()


def test_thousands_of_pairs_render_lazily(many: Bundle, open_page: Any) -> None:
    page, log = open_page(many.url)
    assert page.text_content("#wv-ct-count") == "showing 2,500 of 2,500"
    rendered = page.eval_on_selector_all("#wv-ct-rows tr.wv-ct-row", "els => els.length")
    assert 0 < rendered < 120
    # the scroll height is that of all rows
    heights = page.evaluate("""(() => { const s = document.getElementById('wv-ct-scroll');
        const r = document.querySelector('#wv-ct-rows tr.wv-ct-row').getBoundingClientRect().height;
        return [s.scrollHeight, r]; })()""")
    assert heights[0] == pytest.approx(2500 * heights[1], rel=0.02)
    # keyboard to the end: the last row is rendered, focused and in view
    page.focus("#wv-ct-rows tr.wv-ct-row[tabindex='0']")
    page.keyboard.press("End")
    last = page.evaluate("""(() => { const a = document.activeElement;
        const s = document.getElementById('wv-ct-scroll');
        const ra = a.getBoundingClientRect(), rs = s.getBoundingClientRect();
        return [a.getAttribute('data-index'),
                ra.top >= rs.top - 1 && ra.bottom <= rs.bottom + 1]; })()""")
    assert last == ["2499", True]
    assert page.eval_on_selector_all("#wv-ct-rows tr.wv-ct-row", "els => els.length") < 120
    page.keyboard.press("PageUp")
    assert int(page.evaluate("document.activeElement.getAttribute('data-index')")) < 2499
    # sorting by changed elements still orders every row (read through the table's model)
    page.click("#wv-ct-headrow th:nth-child(7) button")
    counts = page.evaluate("weightvis.table.rows.map(p => p.numbers.changed)")
    assert len(counts) == 2500 and counts == sorted(counts, reverse=True) and counts[0] == 4
    # scrolling to the middle renders the rows there
    page.evaluate("document.getElementById('wv-ct-scroll').scrollTop = 1200 * weightvis.table.rowH")
    page.wait_for_function(
        "document.querySelector('#wv-ct-rows tr.wv-ct-row[data-index=\"1210\"]') !== null"
    )
    name = page.evaluate(
        "document.querySelector('#wv-ct-rows tr.wv-ct-row[data-index=\"1210\"] td').textContent"
    )
    assert name == page.evaluate("weightvis.table.rows[1210].name")
    page.click("#wv-ct-rows tr.wv-ct-row[data-index='1210']")
    assert view_contains(page, many.rects(name)[0])
    shot(page, "many")
    log.assert_clean()


def test_real_diff_bundle(tmp_path: Path, open_page: Any) -> None:
    """A diff rendered by the engine from two tiny safetensors files with planted edits."""
    import weightvis

    if not hasattr(weightvis, "diff"):
        pytest.skip("weightvis.diff (the diff engine) is not available yet")
    from safetensors.numpy import save_file

    rng = np.random.default_rng(5)
    a = {
        "model.layers.0.self_attn.q_proj.weight": rng.standard_normal((64, 64)).astype(np.float32)
        * 0.02,
        "model.layers.0.mlp.up_proj.weight": rng.standard_normal((96, 64)).astype(np.float32)
        * 0.02,
        "model.layers.0.input_layernorm.weight": np.ones(64, np.float32),
        "model.layers.1.self_attn.q_proj.weight": rng.standard_normal((64, 64)).astype(np.float32)
        * 0.02,
        "model.dropped.weight": rng.standard_normal((8, 64)).astype(np.float32),
    }
    b = {k: v.copy() for k, v in a.items()}
    plus, zeroed, new = (
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.mlp.up_proj.weight",
        "model.added.weight",
    )
    b[plus][7, 42] += np.float32(0.5)
    b[zeroed][10, :] = 0
    del b["model.dropped.weight"]
    b[new] = rng.standard_normal((8, 64)).astype(np.float32)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    save_file(a, str(tmp_path / "a" / "model.safetensors"))
    save_file(b, str(tmp_path / "b" / "model.safetensors"))
    result = weightvis.diff(
        [str(tmp_path / "a" / "model.safetensors")],
        [str(tmp_path / "b" / "model.safetensors")],
        tmp_path / "bundle",
        scenes=("delta", "a", "b"),
    )
    out = Path(result.out)
    bundle = Bundle(out, json.loads((out / "manifest.json").read_text("utf-8")))
    pairs = {p["name"]: p for p in bundle.manifest["diff"]["pairs"]}
    assert pairs[plus]["status"] == pairs[zeroed]["status"] == "changed"
    assert pairs["model.dropped.weight"]["status"] == "only-in-a"
    assert pairs[new]["status"] == "only-in-b"

    page, log = open_page(bundle.url)
    assert page.evaluate("weightvis.app.model.key") == "delta"
    assert sorted(table_names(page)) == sorted(
        n for n, p in pairs.items() if p["status"] != "identical"
    )
    ticks = page.eval_on_selector_all(
        "#wv-legend-ticks .wv-tick", "els => els.map(e => e.textContent)"
    )
    assert ticks[0] == f"{MINUS}s\u0394" and ticks[-1] == "+s\u0394"
    # the +0.5 element: readout and colour
    names = table_names(page)
    page.click(f"#wv-ct-rows tr.wv-ct-row >> nth={names.index(plus)}")
    hover_element(page, bundle, plus, 7, 42)
    r = diff_readout(page)
    assert r["element"] == "[7, 42]" and r["delta"] == "+0.5"
    assert parse_num(r["ab"].split(" \u2192 ")[0]) == pytest.approx(float(a[plus][7, 42]), rel=1e-6)
    cm = bundle.manifest["colormaps"]["delta"]
    (p,) = [p for p in bundle.scene("delta")["placements"] if p["tensor"] == plus]
    wait_tiles(page, bundle.scene("delta")["max_zoom"])
    rgb = screen_rgb(page, p["rect"][0] + 42 - p["cols"][0], p["rect"][1] + 7 - p["rows"][0])
    s = bundle.manifest["tensors"][plus]["scale"]
    q = min(cm["levels"], max(1, int(np.floor(cm["levels"] * np.sqrt(min(0.5 / s, 1.0)) + 0.5))))
    assert_rgb(rgb, cm["palette"][cm["zero_index"] + q])
    shot(page, "real")
    # the zeroed row: B = 0 there, and the stats name the row
    hover_element(page, bundle, zeroed, 10, 3)
    r = diff_readout(page)
    assert r["ab"].endswith(" \u2192 0") or r["ab"] == "not stored (more than 64 changes)"
    page.click(f"#wv-ct-rows tr.wv-ct-row >> nth={names.index(zeroed)}")
    assert re.match(r"1 row: 10$", stats_rows(page)["rows"])
    # the scenes flip in place
    view = current_view(page)
    page.keyboard.press("a")
    page.wait_for_function("weightvis.app.model.key === 'a'")
    assert current_view(page) == pytest.approx(view, abs=1e-6)
    page.keyboard.press("d")
    page.wait_for_function("weightvis.app.model.key === 'delta'")
    log.assert_clean()


@pytest.mark.parametrize("metric", ["abs-log", "exact"])
def test_legend_of_other_metrics_and_finetune(
    metric: str, planted: Any, tmp_path: Path, open_page: Any
) -> None:
    """abs-log: ticks at the colormap's decades; exact: shrank / unchanged / grew; finetune mode
    shows the base-only hatch instead of only-in-A. (Tiles stay rms: only the legend is read.)"""
    from weightvis.html import render_index_html

    a, b = planted
    manifest = make_diff_bundle(tmp_path / "bundle", a, b, scenes=("delta",), mode="finetune")
    cm = manifest["colormaps"]["delta"]
    cm["metric"] = manifest["diff"]["metric"] = metric
    cm["abs_log_decades"] = [-8, 0] if metric == "abs-log" else None
    (tmp_path / "bundle" / "index.html").write_text(render_index_html(manifest), encoding="utf-8")
    page, log = open_page((tmp_path / "bundle" / "index.html").resolve().as_uri())
    ticks = page.eval_on_selector_all(
        "#wv-legend-ticks .wv-tick", "els => els.map(e => e.textContent)"
    )
    bar = page.evaluate("""(() => { const c = document.getElementById('wv-legend-bar');
        const d = c.getContext('2d').getImageData(0, 0, c.width, 1).data;
        return [...Array(c.width).keys()].map(i => [d[4*i], d[4*i+1], d[4*i+2]]); })()""")
    z, lv = cm["zero_index"], cm["levels"]
    if metric == "abs-log":
        assert ticks == [f"{MINUS}1", f"{MINUS}10{MINUS}4", "0", "+10\u22124", "+1"]
        lefts = page.eval_on_selector_all(
            "#wv-legend-ticks .wv-tick", "els => els.map(e => parseFloat(e.style.left))"
        )
        # 1e-4 is level floor(123 * 4/8 + 0.5) = 62
        assert lefts[3] - lefts[2] == pytest.approx(100 * 62 / (2 * lv + 1), abs=0.3)
        assert len(bar) == 2 * lv + 1
        assert "1e-8" in page.text_content("#wv-legend-values")
    else:
        assert ticks == ["shrank", "unchanged", "grew"]
        assert bar == [cm["palette"][z - lv], cm["palette"][z], cm["palette"][z + lv]]
        assert page.text_content("#wv-legend-values") == "any change at full brightness"
    swatches = page.eval_on_selector_all(
        "#wv-legend-swatches .wv-swatch", "els => els.map(e => e.textContent)"
    )
    assert swatches == ["unchanged", "non-finite \u0394", "base only (A)", "only in B", "padding"]
    assert page.get_attribute("#wv-legend-swatches canvas.wv-swatch-hatch", "data-index") == str(
        cm["base_only_index"]
    )
    assert page.text_content("#wv-ct-sides").endswith(f"finetune of Ametric {metric}")
    # hovering a tensor does not replace the fixed text of these metrics
    hover_element(page, Bundle(tmp_path / "bundle", manifest), RAMP, 7, 42)
    assert "s\u0394 =" not in page.text_content("#wv-legend-values")
    log.assert_clean()
