"""The viewer in a real headless Chromium, opened from file:// with no network.

Bundles are rendered by ``weightvis.render`` from tiny safetensors checkpoints (a ramp whose every
element is predictable, two transformer blocks, a tensor with a hostile name); a hand-made bundle
(tests/conftest_viewer.py) covers two scenes and tiles that were not written.

Every test asserts the page stayed clean: no console error, no page error, no dialog, no failed
request, and every request on file://.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from weightvis.html import viewer_scripts

from .conftest_viewer import (  # noqa: F401  (fixtures)
    HOSTILE,
    RAMP,
    RAMP_SHAPE,
    _d2xy,
    chromium,
    make_handmade_bundle,
    open_page,
    ramp_values,
    tiny_model_tensors,
    write_tiny_checkpoint,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TEXTS = "els => els.map(e => e.textContent)"
CENTRE = ("(() => { const c = weightvis.app.cFromLl(weightvisMap.getCenter());"
          " return [c.x, c.y]; })()")


class Bundle:
    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self.url = (path / "index.html").resolve().as_uri()

    def scene(self, key: str | None = None) -> dict[str, Any]:
        scenes = self.manifest["scenes"]
        return scenes[0] if key is None else next(s for s in scenes if s["key"] == key)

    def rects(self, tensor: str, key: str | None = None) -> list[list[int]]:
        return [p["rect"] for p in self.scene(key)["placements"] if p["tensor"] == tensor]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.safetensors")


@pytest.fixture(scope="module")
def arch(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    import weightvis

    out = tmp_path_factory.mktemp("arch") / "bundle"
    result = weightvis.render([checkpoint], out, workers=1, quiet=True, title=HOSTILE)
    manifest = json.loads((Path(result.out) / "manifest.json").read_text("utf-8"))
    return Bundle(Path(result.out), manifest)


@pytest.fixture(scope="module")
def hilbert(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    import weightvis

    out = tmp_path_factory.mktemp("hilbert") / "bundle"
    result = weightvis.render([checkpoint], out, workers=1, quiet=True, layout="hilbert")
    manifest = json.loads((Path(result.out) / "manifest.json").read_text("utf-8"))
    return Bundle(Path(result.out), manifest)


@pytest.fixture(scope="module")
def handmade(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    out = tmp_path_factory.mktemp("handmade") / "bundle"
    tensors = {k: v for k, v in tiny_model_tensors().items() if k != "lm_head.weight"}
    manifest = make_handmade_bundle(out, tensors, c_min_size=(1400, 600))
    return Bundle(out, manifest)


# --------------------------------------------------------------------------- helpers


def set_view(page: Any, cx: float, cy: float, z: float) -> None:
    """Centre the map on canvas pixel (cx, cy) at zoom z, without animation."""
    page.evaluate(
        "([cx, cy, z]) => weightvisMap.setView(weightvis.llFromC(cx, cy), z, {animate: false})",
        [cx, cy, z],
    )


def wait_tiles(page: Any, z: int) -> list[str]:
    """Wait until every current tile of zoom z is loaded; the src of those that are images."""
    page.wait_for_function(
        """(z) => {
            const tiles = Object.values(weightvis.app.tiles._tiles).filter(t => t.current);
            return tiles.length > 0 && tiles.every(t => t.coords.z === z && t.loaded &&
                (t.el.tagName !== 'IMG' || (t.el.complete && t.el.naturalWidth > 0)));
        }""",
        arg=z,
    )
    return page.evaluate(
        """() => Object.values(weightvis.app.tiles._tiles)
                 .filter(t => t.current && t.el.tagName === 'IMG')
                 .map(t => [t.el.getAttribute('src'), t.el.complete, t.el.naturalWidth,
                            t.el.naturalHeight])"""
    )


def screen_point(page: Any, cx: float, cy: float) -> tuple[float, float]:
    """Page coordinates of canvas point (cx, cy)."""
    x, y = page.evaluate(
        """([cx, cy]) => {
            const p = weightvisMap.latLngToContainerPoint(weightvis.llFromC(cx, cy));
            const r = weightvisMap.getContainer().getBoundingClientRect();
            return [r.left + p.x, r.top + p.y];
        }""",
        [cx, cy],
    )
    return float(x), float(y)


def hover_canvas_pixel(page: Any, cx: int, cy: int) -> None:
    x, y = screen_point(page, cx + 0.5, cy + 0.5)
    page.mouse.move(x, y)
    page.wait_for_function(
        "(t) => document.getElementById('wv-r-canvas').textContent.startsWith(t)",
        arg=f"({cx}, {cy})",
    )


def readout(page: Any) -> dict[str, str]:
    ids = {"name": "wv-r-name", "element": "wv-r-element", "index": "wv-r-index",
           "dtype": "wv-r-dtype", "shape": "wv-r-shape", "scale": "wv-r-scale",
           "stats_name": "wv-s-name"}
    return page.evaluate(
        "(ids) => Object.fromEntries(Object.entries(ids).map(([k, id]) =>"
        " [k, document.getElementById(id).textContent]))",
        ids,
    )


def screen_rgb(page: Any, cx: int, cy: int) -> tuple[int, int, int]:
    """The colour on screen at the centre of canvas pixel (cx, cy), with the mouse off the map."""
    from io import BytesIO

    from PIL import Image

    page.mouse.move(5, 5)
    x, y = screen_point(page, cx + 0.5, cy + 0.5)
    png = page.screenshot(clip={"x": x - 1, "y": y - 1, "width": 3, "height": 3})
    return Image.open(BytesIO(png)).convert("RGB").getpixel((1, 1))  # type: ignore[no-any-return]


def expected_rgb(manifest: dict[str, Any], value: float, s: float) -> list[int]:
    """The palette colour of a finite value by the rule of README "The bundle and its manifest"."""
    a = min(abs(value) / s, 1.0)
    q = math.floor(125 * math.sqrt(a) + 0.5)
    index = 129 + q if value > 0 else 129 - q if value < 0 else 129
    return list(manifest["colormaps"]["values"]["palette"][index])


def assert_rgb(got: tuple[int, int, int], want: list[int]) -> None:
    assert all(abs(g - w) <= 2 for g, w in zip(got, want, strict=True)), (got, want)


def view_contains(page: Any, rect: list[int]) -> bool:
    return bool(page.evaluate(
        "(r) => weightvisMap.getBounds().contains(weightvis.app.llBoundsFromCRect(r))", rect))


def tile_urls_in_index(bundle: Bundle, key: str | None = None) -> set[str]:
    """Relative URLs of every tile the manifest lists (and of the max-zoom tiles' sidecars)."""
    scene = bundle.scene(key)
    index = scene["tile_index"]
    urls = set()
    if isinstance(index, dict):  # {"z": [[x, y], ...]}
        for z, xys in index.items():
            for x, y in xys:
                urls.add(scene["tiles"].format(z=z, x=x, y=y))
    else:  # [{"z", "cols", "rows", "bitmap"}]
        import base64

        for lv in index:
            raw = np.frombuffer(base64.b64decode(lv["bitmap"]), np.uint8)
            bits = np.unpackbits(raw, bitorder="little")
            for i in np.flatnonzero(bits[: lv["cols"] * lv["rows"]]):
                t_x, t_y = int(i) % lv["cols"], int(i) // lv["cols"]
                urls.add(scene["tiles"].format(z=lv["z"], x=t_x, y=t_y))
                if scene.get("sidecars") and scene["sidecars"]["zoom"] == lv["z"]:
                    urls.add(scene["sidecars"]["tiles"].format(z=lv["z"], x=t_x, y=t_y))
    return urls


def assert_only_listed_tiles_requested(bundle: Bundle, log: Any, key: str | None = None) -> None:
    base = bundle.url.rsplit("/", 1)[0] + "/"
    listed = tile_urls_in_index(bundle, key)
    tiles = [u[len(base):] for u in log.requests if u.startswith(base + "tiles/")]
    assert tiles, "no tile was requested"
    assert set(tiles) <= listed, sorted(set(tiles) - listed)


def boxes_overlap(a: list[float], b: list[float]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


# --------------------------------------------------------------------------- tests


def test_opens_clean_and_tiles_load_at_zoom_0_and_max(arch: Bundle, open_page: Any) -> None:
    page, log = open_page(arch.url)
    assert page.evaluate("weightvis.manifest") == arch.manifest  # the inlined JSON, exactly
    scene = arch.scene()
    mz = scene["max_zoom"]
    assert mz >= 1, "the fixture should need more than one zoom level"
    assert page.evaluate("weightvisMap.getMaxZoom()") == mz + 3
    set_view(page, scene["width"] / 2, scene["height"] / 2, 0)
    tiles0 = wait_tiles(page, 0)
    assert tiles0 and all(src.startswith("tiles/main/0/") and ok and w == 512 == h
                          for src, ok, w, h in tiles0)
    x, y, w, h = arch.rects(RAMP)[0]
    set_view(page, x + w / 2, y + h / 2, mz)
    tiles_max = wait_tiles(page, mz)
    assert tiles_max and all(src.startswith(f"tiles/main/{mz}/") and ok and w == 512 == h
                             for src, ok, w, h in tiles_max)
    # past max_zoom: max-zoom tiles scaled up, pixelated
    set_view(page, x + w / 2, y + h / 2, mz + 3)
    wait_tiles(page, mz)
    rendering = page.evaluate(
        "getComputedStyle(document.querySelector('.wv-tiles img.leaflet-tile')).imageRendering")
    assert rendering == "pixelated"
    background = page.evaluate(
        "getComputedStyle(document.getElementById('wv-map')).backgroundColor")
    cm = arch.manifest["colormaps"][scene.get("colormap", "values")]
    assert background == "rgb({}, {}, {})".format(*cm["palette"][cm["padding_index"]])
    assert_only_listed_tiles_requested(arch, log)
    log.assert_clean()


def test_missing_tiles_are_never_requested(handmade: Bundle, open_page: Any) -> None:
    scene = handmade.scene("main")
    mz = scene["max_zoom"]
    listed = tile_urls_in_index(handmade, "main")
    all_tiles = {f"tiles/main/{mz}/{x}/{y}.png"
                 for x in range(math.ceil(scene["width"] / 512))
                 for y in range(math.ceil(scene["height"] / 512))}
    assert all_tiles - listed, "the fixture should leave some tiles unwritten"
    page, log = open_page(handmade.url)
    for x, y in [(scene["width"] - 10, scene["height"] - 10), (scene["width"] - 10, 10), (10, 10)]:
        set_view(page, x, y, mz + 1)
        wait_tiles(page, mz)
    set_view(page, scene["width"] / 2, scene["height"] / 2, 0)
    wait_tiles(page, 0)
    page.wait_for_timeout(200)
    assert page.evaluate("document.querySelectorAll('.wv-tiles img').length") > 0
    assert_only_listed_tiles_requested(handmade, log, "main")
    log.assert_clean()


def test_search_jumps_to_a_tensor(arch: Bundle, open_page: Any) -> None:
    page, log = open_page(arch.url)
    x, y, w, h = arch.rects(RAMP)[0]
    page.fill("#wv-search", "ramp")
    items = page.eval_on_selector_all("#wv-results li.wv-result", TEXTS)
    assert items == [RAMP]
    assert page.text_content("#wv-results mark") == "ramp"
    page.press("#wv-search", "Enter")
    assert view_contains(page, [x, y, w, h])
    assert page.evaluate("weightvisMap.getZoom()") >= arch.scene()["max_zoom"] - 1
    assert page.text_content("#wv-s-name") == RAMP
    # a click on a result, among several matches, for a tensor elsewhere on the canvas
    target = "model.layers.1.mlp.down_proj.weight"
    page.fill("#wv-search", "proj")
    names = page.eval_on_selector_all("#wv-results li.wv-result", TEXTS)
    assert target in names and len(names) == 8
    page.click(f"#wv-results li.wv-result >> nth={names.index(target)}")
    assert view_contains(page, arch.rects(target)[0])
    assert not view_contains(page, [x, y, w, h])
    assert page.text_content("#wv-s-name") == target
    page.fill("#wv-search", "no such tensor")
    assert page.text_content("#wv-results") == "no tensor matches"
    log.assert_clean()


def test_readout_names_the_element_under_the_cursor(arch: Bundle, open_page: Any) -> None:
    page, log = open_page(arch.url)
    scene = arch.scene()
    mz = scene["max_zoom"]
    (p,) = [p for p in scene["placements"] if p["tensor"] == RAMP]
    x, y, w, h = p["rect"]
    info = arch.manifest["tensors"][RAMP]
    set_view(page, x + w / 2, y + h / 2, mz + 2)
    wait_tiles(page, mz)
    for e_row, e_col in [(0, 0), (7, 48), (39, 69), (20, 35)]:
        c_x = x + e_col - p["cols"][0]
        c_y = y + e_row - p["rows"][0]
        hover_canvas_pixel(page, c_x, c_y)
        r = readout(page)
        assert r["name"] == RAMP
        assert r["element"] == f"[{e_row}, {e_col}]"
        assert r["index"] == f"[{e_row}, {e_col}]"
        assert r["dtype"] == info["dtype"] == "F32"
        assert r["shape"] == "[40, 70]"
        assert float(r["scale"]) == pytest.approx(info["scale"], rel=1e-3)
        assert r["stats_name"] == RAMP
    assert page.text_content("#wv-s-table").startswith("min-0.5max0.4996")
    # the colour on screen at that element is the palette entry of its value (sqrt rule)
    rgb = screen_rgb(page, x + 35 - p["cols"][0], y + 20 - p["rows"][0])
    assert_rgb(rgb, expected_rgb(arch.manifest, float(ramp_values()[20, 35]), info["scale"]))
    # padding: nothing named
    hover_canvas_pixel(page, x - 2, y + 3)
    assert readout(page)["name"] == "—"
    log.assert_clean()


def test_element_of_n_d_tensor(arch: Bundle, open_page: Any) -> None:
    """[8, 3, 5] has the 2-D view 8 x 15: view column 7 is index [r, 1, 2]."""
    page, log = open_page(arch.url)
    scene = arch.scene()
    (p,) = [p for p in scene["placements"] if p["tensor"] == "model.conv.weight"]
    x, y, w, h = p["rect"]
    set_view(page, x + w / 2, y + h / 2, scene["max_zoom"] + 3)
    hover_canvas_pixel(page, x + 7 - p["cols"][0], y + 6 - p["rows"][0])
    r = readout(page)
    assert (r["name"], r["element"], r["index"], r["shape"]) == (
        "model.conv.weight", "[6, 7]", "[6, 1, 2]", "[8, 3, 5]")
    log.assert_clean()


def test_hostile_name_stays_text(arch: Bundle, open_page: Any) -> None:
    page, log = open_page(arch.url)
    assert page.title() == f"{HOSTILE} · weightvis"
    assert page.text_content("#wv-title") == HOSTILE
    page.fill("#wv-search", "onerror")
    assert page.eval_on_selector_all("#wv-results li.wv-result", TEXTS) == [HOSTILE]
    page.press("#wv-search", "Enter")
    (rect,) = arch.rects(HOSTILE)
    assert view_contains(page, rect)
    assert page.text_content("#wv-s-name") == HOSTILE
    hover_canvas_pixel(page, rect[0] + 3, rect[1] + 4)
    assert readout(page)["name"] == HOSTILE
    labels = page.evaluate("weightvis.labels()")
    assert any(lab["name"] == HOSTILE for lab in labels)
    page.wait_for_timeout(300)
    assert log.dialogs == []
    assert page.evaluate("document.querySelectorAll('img[src=\"x\"]').length") == 0
    assert page.evaluate(
        "[...document.images].filter(i => i.getAttribute('src') === 'x').length") == 0
    # the manifest, leaflet and the viewer's scripts: no name became a <script>
    assert page.evaluate("document.scripts.length") == 2 + len(viewer_scripts(arch.manifest))
    log.assert_clean()


def test_hash_round_trips(arch: Bundle, open_page: Any) -> None:
    page, log = open_page(arch.url)
    scene = arch.scene()
    set_view(page, 100.25, 300.5, scene["max_zoom"] + 1.25)
    page.wait_for_function("location.hash.includes('z=2.25')")
    hash_ = page.evaluate("location.hash")
    assert hash_ == "#scene=main&z=2.25&x=100.25&y=300.5"
    page2, log2 = open_page(arch.url + hash_)
    assert page2.evaluate("weightvisMap.getZoom()") == 2.25
    cx, cy = page2.evaluate(CENTRE)
    assert (cx, cy) == pytest.approx((100.25, 300.5), abs=0.01)
    assert page2.evaluate("location.hash") == hash_
    # a hash edited by hand moves the view
    page2.evaluate("location.hash = '#scene=main&z=3&x=40&y=60'")
    page2.wait_for_function("weightvisMap.getZoom() === 3")
    assert page2.evaluate(CENTRE) == pytest.approx([40, 60], abs=0.01)
    # a hash naming no scene opens the content fitted, without errors
    page3, log3 = open_page(arch.url + "#scene=nope&z=abc")
    assert page3.evaluate("weightvisMap.getBounds().contains(weightvis.app.contentBounds)")
    for lg in (log, log2, log3):
        lg.assert_clean()


def test_labels_do_not_overlap(arch: Bundle, open_page: Any) -> None:
    page, log = open_page(arch.url)
    scene = arch.scene()
    views = [None, (75, 180, scene["max_zoom"] + 1), (150, 500, scene["max_zoom"] + 2)]
    seen_tensor_label = seen_block_label = False
    for view in views:
        if view:
            set_view(page, *view)
        page.wait_for_timeout(100)
        labels = page.evaluate("weightvis.labels()")
        size = page.evaluate("[weightvisMap.getSize().x, weightvisMap.getSize().y]")
        for i, a in enumerate(labels):
            ax, ay, aw, ah = a["box"]
            assert aw > 0 and ah >= 14
            assert -20 <= ax and ax + aw <= size[0] + 20 and -20 <= ay <= size[1]
            for b in labels[i + 1:]:
                assert not boxes_overlap(a["box"], b["box"]), (a, b)
        seen_tensor_label |= any(lab["kind"] == "tensor" for lab in labels)
        seen_block_label |= any(lab["kind"] == "group" and lab["text"] == "block 0"
                                for lab in labels)
        names = [lab["name"] for lab in labels if lab["kind"] == "tensor"]
        assert len(names) == len(set(names)), "one label per tensor"
        for lab in labels:
            if lab["kind"] == "tensor":
                info = arch.manifest["tensors"][lab["name"]]
                slotted = info.get("block") is not None and info.get("slot")
                full = info["slot"] if slotted else lab["name"]
                t = lab["text"]
                assert (t == full or t.rstrip("\u2026") in full
                        or t.lstrip("\u2026") in full), (t, full)
    assert seen_tensor_label and seen_block_label
    # blocks show the short slot name
    set_view(page, 75, 180, scene["max_zoom"] + 2)
    page.wait_for_timeout(100)
    texts = {lab["name"]: lab["text"] for lab in page.evaluate("weightvis.labels()")}
    tensors = arch.manifest["tensors"]
    slot_labelled = [n for n in texts if tensors.get(n, {}).get("block") is not None]
    assert slot_labelled and all(not texts[n].startswith("model.layers") for n in slot_labelled)
    log.assert_clean()


def test_legend(arch: Bundle, open_page: Any) -> None:
    page, log = open_page(arch.url)
    cm = arch.manifest["colormaps"]["values"]
    ticks = page.eval_on_selector_all("#wv-legend-ticks .wv-tick", TEXTS)
    assert ticks == ["\u2212s", "\u2212s/4", "0", "+s/4", "+s"]
    lefts = page.eval_on_selector_all("#wv-legend-ticks .wv-tick",
                                      "els => els.map(e => parseFloat(e.style.left))")
    # the tick at +-s/4 sits at level floor(125 * sqrt(1/4) + 0.5) = 63 of 125
    assert lefts[2] == pytest.approx(50, abs=0.3)
    assert lefts[3] - lefts[2] == pytest.approx(100 * 63 / 251, abs=0.3)
    bar = page.evaluate("""(() => { const c = document.getElementById('wv-legend-bar');
        const d = c.getContext('2d').getImageData(0, 0, c.width, 1).data;
        return [c.width, [d[0], d[1], d[2]], [d[4 * 125], d[4 * 125 + 1], d[4 * 125 + 2]],
                [d[4 * 250], d[4 * 250 + 1], d[4 * 250 + 2]]]; })()""")
    assert bar == [251, cm["palette"][4], cm["palette"][129], cm["palette"][254]]
    swatches = page.eval_on_selector_all("#wv-legend-swatches .wv-swatch", TEXTS)
    assert swatches == ["padding", "NaN", "+Inf", "\u2212Inf"]
    log.assert_clean()


def test_hilbert_readout(hilbert: Bundle, open_page: Any) -> None:
    scene = hilbert.scene()
    curve = scene["curve"]
    n = 2 ** curve["order"]
    (seg,) = [s for s in curve["segments"] if s.get("tensor") == RAMP]
    page, log = open_page(hilbert.url)
    # the viewer's Hilbert functions agree with the Wikipedia algorithm (and the pipeline's)
    rng = np.random.default_rng(1)
    hs = [0, 1, 2, 3, n * n - 1] + [int(v) for v in rng.integers(0, n * n, 50)]
    xys = page.evaluate("([n, hs]) => hs.map(h => weightvis.cFromH(n, h))", [n, hs])
    assert [tuple(v) for v in xys] == [_d2xy(n, h) for h in hs]
    assert page.evaluate("([n, xys]) => xys.map(([x, y]) => weightvis.hFromC(n, x, y))",
                         [n, xys]) == hs
    try:
        from weightvis.kernels import hilbert_d2xy
    except ImportError:
        hilbert_d2xy = None
    if hilbert_d2xy is not None:
        assert [tuple(int(c) for c in hilbert_d2xy(n, h)) for h in hs] == [_d2xy(n, h) for h in hs]
    mz = scene["max_zoom"]
    for e_row, e_col in [(0, 0), (12, 34), (39, 69)]:
        c_x, c_y = _d2xy(n, seg["start"] + e_row * RAMP_SHAPE[1] + e_col)
        set_view(page, c_x + 0.5, c_y + 0.5, mz + 3)
        hover_canvas_pixel(page, c_x, c_y)
        r = readout(page)
        assert (r["name"], r["element"], r["shape"]) == (RAMP, f"[{e_row}, {e_col}]", "[40, 70]")
        wait_tiles(page, mz)
        value = float(ramp_values()[e_row, e_col])
        assert_rgb(screen_rgb(page, c_x, c_y),
                   expected_rgb(hilbert.manifest, value,
                                hilbert.manifest["tensors"][RAMP]["scale"]))
    page.fill("#wv-search", "ramp")
    page.press("#wv-search", "Enter")
    corners = [_d2xy(n, seg["start"]), _d2xy(n, seg["start"] + seg["length"] - 1)]
    for c_x, c_y in corners:
        assert view_contains(page, [c_x, c_y, 1, 1])
    wait_tiles(page, mz)
    assert_only_listed_tiles_requested(hilbert, log)
    log.assert_clean()


def test_scene_switcher(handmade: Bundle, open_page: Any) -> None:
    page, log = open_page(handmade.url)
    options = page.eval_on_selector_all("#wv-scene option",
                                        "els => els.map(e => [e.value, e.textContent])")
    assert options == [["main", "Weights"], ["curve", "Hilbert curve"]]
    assert page.is_visible("#wv-scene")
    page.select_option("#wv-scene", "curve")
    page.wait_for_function("location.hash.startsWith('#scene=curve&')")
    curve = handmade.scene("curve")
    wait_tiles(page, curve["max_zoom"])
    assert page.evaluate("weightvisMap.getBounds().contains(weightvis.app.contentBounds)")
    srcs = page.evaluate(
        "[...document.querySelectorAll('.wv-tiles img')].map(i => i.getAttribute('src'))")
    assert srcs and all(s.startswith("tiles/curve/") for s in srcs)
    hash_ = page.evaluate("location.hash")
    page2, log2 = open_page(handmade.url + hash_)
    assert page2.evaluate("weightvis.app.model.key") == "curve"
    assert page2.evaluate("document.getElementById('wv-scene').value") == "curve"
    (seg,) = [s for s in curve["curve"]["segments"] if s["tensor"] == RAMP]
    c_x, c_y = _d2xy(2 ** curve["curve"]["order"], seg["start"] + 75)
    set_view(page2, c_x, c_y, curve["max_zoom"] + 3)
    hover_canvas_pixel(page2, c_x, c_y)
    assert readout(page2)["element"] == "[1, 5]"
    log.assert_clean()
    log2.assert_clean()


def test_hilbert_bytes_readout(checkpoint: Path, tmp_path: Path, open_page: Any) -> None:
    import weightvis

    result = weightvis.render([checkpoint], tmp_path / "bytes", workers=1, layout="hilbert",
                              hilbert_unit="byte")
    manifest = json.loads((Path(result.out) / "manifest.json").read_text("utf-8"))
    bundle = Bundle(Path(result.out), manifest)
    scene = bundle.scene()
    curve = scene["curve"]
    assert curve["unit"] == "byte"
    (seg,) = curve["segments"]
    n = 2 ** curve["order"]
    page, log = open_page(bundle.url)
    offset = min(1000, seg["length"] - 1)
    c_x, c_y = _d2xy(n, seg["start"] + offset)
    set_view(page, c_x + 0.5, c_y + 0.5, scene["max_zoom"] + 3)
    hover_canvas_pixel(page, c_x, c_y)
    r = readout(page)
    assert r["name"] == seg["file"]
    assert r["element"] == f"byte {offset:,}"
    assert r["dtype"] == r["shape"] == "\u2014"
    log.assert_clean()
