"""The value under the cursor, in headless Chromium, from file:// and over http (a loopback server
that stops itself): random max-zoom elements of a real checkpoint's bundle show their exact stored
value and an interval that contains it (compared with safetensors.numpy / torch in float64); a
diff of two real checkpoints with thousands of changes shows A, B and Δ of random elements; the
readout follows a zoom under a still cursor; a sidecar URL that is not the bundle's own template
is never loaded."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import weightvis

from .conftest import index_of, real_checkpoint, view2d
from .conftest_viewer import chromium_reusing as chromium  # noqa: F401
from .conftest_viewer import make_handmade_bundle, open_page  # noqa: F401
from .test_viewer_browser import screen_point, set_view

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MINUS = "\u2212"
N_ELEMENTS = 14


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def serve(root: Path, seconds: float = 600) -> Iterator[str]:
    """Serve ``root`` on 127.0.0.1 (an ephemeral port) until the block ends or ``seconds``
    pass, whichever is first."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                          functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    watchdog = threading.Timer(seconds, srv.shutdown)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield f"http://127.0.0.1:{srv.server_port}/"
    finally:
        watchdog.cancel()
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def hover(page: Any, c_x: int, c_y: int, z: float, settle: bool = True) -> dict[str, str]:
    """Centre canvas pixel (c_x, c_y) at zoom z, put the mouse on it and wait for its value."""
    set_view(page, c_x + 0.5, c_y + 0.5, z)
    x, y = screen_point(page, c_x + 0.5, c_y + 0.5)
    page.mouse.move(x, y)
    page.wait_for_function(
        "(t) => document.getElementById('wv-r-canvas').textContent.startsWith(t)",
        arg=f"({c_x}, {c_y})")
    if settle:
        page.wait_for_function(
            """() => ['wv-r-value', 'wv-r-range'].every(id => {
                const t = document.getElementById(id).textContent;
                return !t.startsWith('loading') && t !== '\u2014'; }) &&
                !(document.getElementById('wv-r-ab') || {textContent: ''}).textContent
                    .startsWith('loading')""",
            timeout=15000)
    return page.evaluate(
        """() => Object.fromEntries(['element', 'value', 'range', 'ab', 'delta', 'name']
            .map(k => [k, (document.getElementById('wv-r-' + k) || {textContent: null})
                          .textContent]))""")


def num(text: str) -> float:
    return float(text.replace(MINUS, "-").replace("+", ""))


def parse_interval(text: str, name: str) -> tuple[int, float, float]:
    """(palette index, low, high) of the readout's colour row (closed bounds: the edges are
    printed to 6 significant digits, so containment is checked with a tolerance)."""
    m = re.fullmatch(r"(.*?)\s+\(index (\d+)\)", text)
    assert m, text
    body, index = m.group(1).replace(MINUS, "-"), int(m.group(2))
    n = re.escape(name)
    if mm := re.fullmatch(rf"\|{n}\| < (\S+)", body):
        return index, -float(mm.group(1)), float(mm.group(1))
    if mm := re.fullmatch(rf"{n} ≥ (\S+)", body):
        return index, float(mm.group(1)), np.inf
    if mm := re.fullmatch(rf"{n} ≤ (\S+)", body):
        return index, -np.inf, float(mm.group(1))
    mm = re.fullmatch(rf"(\S+) [<≤] {n} [<≤] (\S+)", body)
    assert mm, text
    return index, float(mm.group(1)), float(mm.group(2))


def assert_inside(v: float, lo: float, hi: float) -> None:
    tol = 1e-5
    assert lo - tol * abs(lo) <= v <= hi + tol * abs(hi), (v, lo, hi)


def random_elements(manifest: dict[str, Any], key: str, rng: np.random.Generator,
                    n: int, names: set[str] | None = None) -> list[tuple[str, int, int, int, int]]:
    """n random (tensor, row, col, c_x, c_y) of a scene's placements."""
    scene = next(s for s in manifest["scenes"] if s["key"] == key)
    placements = [p for p in scene["placements"] if names is None or p["tensor"] in names]
    out = []
    for i in rng.choice(len(placements), n).tolist():
        p = placements[i]
        (r0, r1), (c0, c1) = p["rows"], p["cols"]
        r, c = int(rng.integers(r0, r1)), int(rng.integers(c0, c1))
        out.append((p["tensor"], r, c, p["rect"][0] + c - c0, p["rect"][1] + r - r0))
    return out


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    src = real_checkpoint("minilm")
    out = tmp_path_factory.mktemp("values") / "minilm"
    res = weightvis.render([src], out, workers=2, values="values")
    return out, res.manifest


@pytest.fixture(scope="module")
def minilm_truth() -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(real_checkpoint("minilm")))


def check_values_bundle(page: Any, manifest: dict[str, Any], truth: dict[str, np.ndarray],
                        exact: bool, seed: int) -> None:
    scene = manifest["scenes"][0]
    rng = np.random.default_rng(seed)
    names = {n for n, t in truth.items() if t.dtype.kind == "f"}
    for name, r, c, c_x, c_y in random_elements(manifest, scene["key"], rng, N_ELEMENTS, names):
        got = hover(page, c_x, c_y, scene["max_zoom"] + 2)
        true = float(view2d(truth[name])[r, c])  # float32 -> float64 exactly
        assert got["element"] == f"[{r}, {c}]"
        s = manifest["tensors"][name]["scale"]
        index, lo, hi = parse_interval(got["range"], "v")
        assert index == index_of(true, s), (name, r, c)
        assert_inside(true, lo, hi)
        if exact:
            assert np.float32(num(got["value"])) == np.float32(true), (name, r, c, got)
        else:
            assert got["value"].startswith("not stored")


# --------------------------------------------------------------------------- tests


def test_real_checkpoint_values_from_file(minilm: Any, minilm_truth: Any, open_page: Any) -> None:
    out, manifest = minilm
    page, log = open_page((out / "index.html").as_uri())
    check_values_bundle(page, manifest, minilm_truth, exact=True, seed=1)
    log.assert_clean()
    sidecars = [u for u in log.requests if u.endswith(".js") and "/tiles/" in u]
    assert sidecars and all(u.startswith((out / "tiles").as_uri()) for u in sidecars)


def test_real_checkpoint_values_over_http(minilm: Any, minilm_truth: Any, chromium: Any) -> None:
    out, manifest = minilm
    with serve(out) as url:
        ctx = chromium.new_context(viewport={"width": 1280, "height": 800})
        try:
            page = ctx.new_page()
            errors: list[str] = []
            requests: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("response", lambda r: errors.append(f"{r.status} {r.url}")
                    if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
            page.on("request", lambda r: requests.append(r.url))
            page.goto(url + "index.html")
            page.wait_for_function("window.weightvis && window.weightvis.ready === true")
            check_values_bundle(page, manifest, minilm_truth, exact=True, seed=2)
            assert errors == []
            assert all(u.startswith(url) for u in requests)  # (and no other host)
            assert any(u.endswith(".js") and "/tiles/" in u for u in requests)
        finally:
            ctx.close()


def test_intervals_only(tmp_path: Path, minilm_truth: Any, open_page: Any) -> None:
    res = weightvis.render([real_checkpoint("minilm")], tmp_path / "b", workers=2,
                           values="index")
    assert res.manifest["scenes"][0]["sidecars"]["values"] is False
    page, log = open_page((tmp_path / "b" / "index.html").as_uri())
    check_values_bundle(page, res.manifest, minilm_truth, exact=False, seed=3)
    log.assert_clean()


def test_readout_follows_a_zoom_under_a_still_cursor(minilm: Any, open_page: Any) -> None:
    out, manifest = minilm
    scene = manifest["scenes"][0]
    page, _ = open_page((out / "index.html").as_uri())
    name, r, c, c_x, c_y = random_elements(manifest, "main", np.random.default_rng(4), 1)[0]
    # the mouse off the view's centre, so a zoom about the centre moves the map under it
    set_view(page, c_x + 40.5, c_y + 30.5, scene["max_zoom"] + 2)
    x, y = screen_point(page, c_x + 0.5, c_y + 0.5)
    page.mouse.move(x, y)
    page.wait_for_function("(t) => document.getElementById('wv-r-canvas').textContent"
                           ".startsWith(t)", arg=f"({c_x}, {c_y})")
    page.evaluate("() => weightvisMap.setZoom(weightvisMap.getZoom() - 1, {animate: false})")
    want = page.evaluate(
        """([x, y]) => { const r = weightvisMap.getContainer().getBoundingClientRect();
            const c = weightvis.app.cFromLl(weightvisMap.containerPointToLatLng([x - r.left,
                                                                                 y - r.top]));
            return '(' + Math.floor(c.x) + ', ' + Math.floor(c.y) + ')'; }""", [x, y])
    assert want != f"({c_x}, {c_y})"
    page.wait_for_function("(t) => document.getElementById('wv-r-canvas').textContent"
                           ".startsWith(t)", arg=want, timeout=5000)


def test_real_diff_with_thousands_of_changes(tmp_path: Path, open_page: Any) -> None:
    torch = pytest.importorskip("torch")
    a_src, b_src = real_checkpoint("pocketnet0"), real_checkpoint("pocketnet1")
    res = weightvis.render_diff([a_src], [b_src], tmp_path / "d", workers=2,
                                scenes=("delta", "a", "b"))
    delta = next(s for s in res.manifest["scenes"] if s["key"] == "delta")
    assert delta["sidecars"]["values"] is True  # small: values by default
    ta = {k: v.double().numpy() for k, v in torch.load(a_src, map_location="cpu",
                                                      weights_only=True).items()}
    tb = {k: v.double().numpy() for k, v in torch.load(b_src, map_location="cpu",
                                                      weights_only=True).items()}
    pairs = {p["name"]: p for p in res.manifest["diff"]["pairs"]}
    many = {n for n, p in pairs.items() if p["status"] == "changed"
            and p["numbers"]["changed"] >= 1000 and n in ta and n in tb}
    assert many, "no pair with thousands of changes"
    page, log = open_page((tmp_path / "d" / "index.html").as_uri())
    rng = np.random.default_rng(6)
    cm = res.manifest["colormaps"]["delta"]
    for k, (name, r, c, c_x, c_y) in enumerate(random_elements(res.manifest, "delta", rng,
                                                                N_ELEMENTS, many)):
        if k == N_ELEMENTS // 2:  # the rest from scene A: A -> B still read from the delta's
            page.keyboard.press("a")
            page.wait_for_function("weightvis.app.model.key === 'a'")
        got = hover(page, c_x, c_y, delta["max_zoom"] + 2)
        if got["ab"] == "\u2014":  # (the pair's readout not written yet: wait for it)
            page.wait_for_function("document.getElementById('wv-r-ab').textContent"
                                   " !== '\u2014'", timeout=15000)
            got = hover(page, c_x, c_y, delta["max_zoom"] + 2)
        va, vb = view2d(ta[name])[r, c], view2d(tb[name])[r, c]
        if va == vb:
            assert got["ab"].startswith("unchanged: ") and got["delta"] == "0"
            continue
        assert " \u2192 " in got["ab"], (name, r, c, va, vb, got)
        a_text, b_text = got["ab"].split(" \u2192 ")
        assert np.float32(num(a_text)) == np.float32(va), (name, r, c, got)
        assert np.float32(num(b_text)) == np.float32(vb), (name, r, c, got)
        assert num(got["delta"]) == pytest.approx(vb - va, rel=1e-6), (name, r, c, got)
        if k < N_ELEMENTS // 2:  # the delta scene: the colour's Δ interval holds Δ
            index, lo, hi = parse_interval(got["range"], "\u0394")
            s = res.manifest["tensors"][name]["scale"]
            q = max(1, int(np.floor(cm["levels"] * np.sqrt(min(abs(vb - va) / s, 1)) + 0.5)))
            assert index == cm["zero_index"] + (q if vb > va else -q)
            assert_inside(vb - va, lo, hi)
        else:  # scene A: its own value and interval
            index, lo, hi = parse_interval(got["range"], "v")
            assert index == index_of(va, pairs[name]["scale_a"])
            assert np.float32(num(got["value"])) == np.float32(va)
    log.assert_clean()


def test_a_foreign_sidecar_url_is_never_loaded(tmp_path: Path, open_page: Any) -> None:
    from weightvis.html import render_index_html

    rng = np.random.default_rng(7)
    tensors = {"w": rng.standard_normal((30, 40)).astype(np.float32)}
    for bad in ("https://example.invalid/{z}/{x}/{y}.js", "../../../x/{z}/{x}/{y}.js",
                "javascript:alert(1)//{z}{x}{y}", "tiles/main/{z}/{x}/{y}.png"):
        out = tmp_path / f"b{len(list(tmp_path.iterdir()))}"
        manifest = make_handmade_bundle(out, tensors, hilbert_scene=False)
        manifest["scenes"][0]["sidecars"] = {"tiles": bad, "zoom": 0, "values": True}
        (out / "index.html").write_text(render_index_html(manifest), encoding="utf-8")
        (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
        page, log = open_page((out / "index.html").as_uri())
        got = hover(page, 5, 5, manifest["scenes"][0]["max_zoom"] + 2, settle=False)
        page.wait_for_timeout(400)
        assert got["name"] == "w"
        assert page.evaluate("() => document.getElementById('wv-r-value').textContent") == \
            "\u2014"
        assert not [u for u in log.requests if u.endswith(".js") and "/assets/" not in u], bad
        log.assert_clean()
