"""Packed tiles (weightvis/hub/pack.py): a bundle's tiles in a few archive shards, every tile
once and byte for byte; and the viewer reading them with HTTP Range requests in headless
Chromium, served over http by a loopback server, with no tile missing."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from weightvis.hub.pack import PACK_FORMAT, present_tiles, read_pack_directory
from weightvis.hub.publish import _stage_packed

from .conftest_viewer import chromium_reusing, open_page  # noqa: F401  (fixtures)
from .hub_fixtures import llama_tensors, sharded_files, write_files

SHARD = 800_000
"""Bytes per shard in these tests: a top shard and a few others from a ~2.3 MB bundle."""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import weightvis
    from weightvis.executors import InlineExecutor

    tmp = tmp_path_factory.mktemp("packed")
    ckpt = write_files(tmp / "ckpt", sharded_files(llama_tensors(5, vocab=2500, hidden=256)))
    res = weightvis.render([ckpt], tmp / "bundle", executor=InlineExecutor())
    return res.out


@pytest.fixture(scope="module")
def packed(bundle: Path) -> Path:
    from weightvis.manifest import read_manifest

    stage = bundle.parent / "stage"
    _stage_packed(bundle, read_manifest(bundle), stage, SHARD)
    return stage


def _loose(bundle: Path) -> dict[tuple[str, int, int, int], bytes]:
    man = json.loads((bundle / "manifest.json").read_text())
    out = {}
    for sc in man["scenes"]:
        for t in present_tiles(bundle, sc):
            path = bundle / sc["tiles"].format(z=t.z, x=t.t_x, y=t.t_y)
            out[(sc["key"], t.z, t.t_x, t.t_y)] = path.read_bytes()
    return out


def test_every_tile_is_in_one_shard_byte_for_byte(bundle: Path, packed: Path) -> None:
    loose = _loose(bundle)
    assert len(loose) > 20
    man = json.loads((packed / "manifest.json").read_text())
    assert not list((packed / "tiles").rglob("*.png")), "loose tiles in the packed bundle"
    got: dict[tuple[str, int, int, int], bytes] = {}
    for sc in man["scenes"]:
        pack = sc["pack"]
        assert pack["format"] == PACK_FORMAT and len(pack["shards"]) >= 3
        assert pack["shards"][0]["first"] is None and pack["split_zoom"] > 0  # a top shard
        cols = next(lv["cols"] for lv in sc["tile_index"] if lv["z"] == pack["split_zoom"])
        keys = [sh["first"][1] * cols + sh["first"][0] for sh in pack["shards"][1:]]
        assert keys == sorted(keys)
        for sh in pack["shards"]:
            data = (packed / sh["file"]).read_bytes()
            assert len(data) == sh["bytes"] <= SHARD + sh["directory_bytes"]
            directory = read_pack_directory(data)
            assert len(directory) == sh["tiles"]
            for (z, x, y), (off, n) in directory.items():
                key = (sc["key"], z, x, y)
                assert key not in got, "a tile in two shards"
                got[key] = data[off:off + n]
                # the routing rule of the manifest finds this shard
                s = pack["split_zoom"]
                if z < s:
                    assert sh["first"] is None
                else:
                    k = (y >> (z - s)) * cols + (x >> (z - s))
                    owner = max(i for i, kk in enumerate(keys) if kk <= k)
                    assert pack["shards"][owner + 1] is sh
    assert got == loose
    # index.html loads the pack reader; everything else is the bundle's
    html = (packed / "index.html").read_text()
    assert "assets/js/tiles-packed.js" in html and (packed / "assets/js/tiles-packed.js").exists()
    assert "tiles-packed.js" not in (bundle / "index.html").read_text()


class _RangeHandler(SimpleHTTPRequestHandler):
    """Static files with single-range support (what the Hub's CDN and Spaces answer)."""

    log: list[tuple[str, str | None]]

    def log_message(self, *args: Any) -> None:
        pass

    def send_head(self) -> Any:
        rng = self.headers.get("Range")
        self.log.append((self.path, rng))
        if self.path == "/favicon.ico":  # what a browser asks of any http site: not the bundle's
            self.send_response(204)
            self.end_headers()
            return None
        m = re.fullmatch(r"bytes=(\d+)-(\d+)", rng or "")
        path = Path(self.translate_path(self.path))
        if m is None or not path.is_file():
            return super().send_head()
        data = path.read_bytes()
        a, b = int(m.group(1)), min(int(m.group(2)), len(data) - 1)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {a}-{b}/{len(data)}")
        self.send_header("Content-Length", str(b - a + 1))
        self.end_headers()
        import io

        return io.BytesIO(data[a:b + 1])


@pytest.fixture
def served(packed: Path) -> Iterator[tuple[str, list[tuple[str, str | None]]]]:
    log: list[tuple[str, str | None]] = []
    handler = type("H", (_RangeHandler,), {"log": log})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(packed)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    timer = threading.Timer(300, server.shutdown)  # bounded: stops by itself
    timer.daemon = True
    timer.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        timer.cancel()
        server.shutdown()
        server.server_close()


_EVERY_TILE = """async () => {
  const m = weightvis.manifest, out = {};
  for (const sc of m.scenes) {
    const reader = new WV.PackReader(m, sc), index = new WV.TileIndex(sc.tile_index);
    for (const lv of sc.tile_index) {
      for (let y = 0; y < lv.rows; y++) for (let x = 0; x < lv.cols; x++) {
        if (!index.has(lv.z, x, y)) continue;
        const buf = await (await reader.tile(lv.z, x, y)).arrayBuffer();
        const d = new Uint8Array(await crypto.subtle.digest("SHA-256", buf));
        out[sc.key + "/" + lv.z + "/" + x + "/" + y] =
          Array.from(d, b => b.toString(16).padStart(2, "0")).join("");
      }
    }
  }
  return out;
}"""


@pytest.mark.browser
@pytest.mark.slow
def test_viewer_reads_every_packed_tile_over_http(bundle: Path, served: tuple[str, Any],
                                                  chromium: Any) -> None:  # noqa: F811
    url, log = served
    ctx = chromium.new_context(viewport={"width": 1000, "height": 700})
    try:
        page = ctx.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("requestfailed", lambda r: errors.append(f"{r.url} {r.failure}"))
        page.goto(f"{url}/index.html")
        page.wait_for_function("window.weightvis && window.weightvis.ready === true")
        # the map shows its tiles from the pack
        page.wait_for_function("""() => {
          const imgs = Array.from(document.querySelectorAll('.wv-tiles img'));
          return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);
        }""", timeout=30_000)
        assert page.evaluate("document.querySelectorAll('.wv-tiles img')[0].src")\
            .startswith("blob:")
        got = page.evaluate(_EVERY_TILE)
        assert errors == [], errors
    finally:
        ctx.close()
    want = {f"{k[0]}/{k[1]}/{k[2]}/{k[3]}": hashlib.sha256(v).hexdigest()
            for k, v in _loose(bundle).items()}
    assert got == want  # every tile, and each equal to its loose file
    packs = [(p, r) for p, r in log if p.endswith(".wvpack")]
    assert packs and all(r is not None for _, r in packs), "a pack read without Range"
    assert not [p for p, _ in log if p.endswith(".png") and "/tiles/" in p]


@pytest.mark.browser
@pytest.mark.slow
def test_packed_bundle_from_file_says_to_use_http(packed: Path, open_page: Any) -> None:  # noqa: F811
    page, log = open_page((packed / "index.html").as_uri())
    note = page.evaluate("document.querySelector('.wv-pack-note').textContent")
    assert "packed for the web: open it over http(s)" in note
    assert page.evaluate("document.querySelectorAll('.wv-tiles img').length") == 0
    log.assert_clean()  # no failed fetch, no error: the tiles are simply not drawn
