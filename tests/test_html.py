"""Unit tests of weightvis/html.py: the inlined manifest survives hostile tensor names exactly, the
template autoescapes, and the viewer assets are copied (vendored Leaflet pinned and licensed)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from weightvis.html import (
    ALL_VIEWER_SCRIPTS,
    LEAFLET_VERSION,
    copy_viewer_assets,
    manifest_script_json,
    render_index_html,
    viewer_scripts,
)

VIEWER = Path(__file__).resolve().parent.parent / "viewer"

HOSTILE_NAMES = [
    "</script><img src=x onerror=alert(1)>",
    "</SCRIPT >",
    "<!--<script>",
    "a\u2028b\u2029c",
    "&amp; &lt; & <>",
    '"quoted" \\back\\slash',
    "]]> ${x} `tpl`",
    "emoji \U0001f600 and \u00e9",
    "tab\tnew\nline\rcr\x00nul",
    "lone \ud800 and \udfff surrogates",
    "</script/x>", "<script", "<\x00/script>",
]


def _manifest(names: list[str], title: str = "t") -> dict[str, Any]:
    return {
        "format": "weightvis-bundle", "version": 1, "title": title, "tile_size": 512,
        "scenes": [{
            "key": "main", "label": "Weights", "layout": "arch", "max_zoom": 0, "width": 10,
            "height": 10 * len(names), "tiles": "tiles/main/{z}/{x}/{y}.png",
            "placements": [{"tensor": n, "rect": [0, 10 * i, 4, 3], "rows": [0, 3], "cols": [0, 4]}
                           for i, n in enumerate(names)],
            "groups": [{"label": n, "kind": "prefix", "rect": [0, 10 * i, 4, 3]}
                       for i, n in enumerate(names)],
        }],
        "tensors": {n: {"shape": [3, 4], "dtype": "F32", "view": [3, 4], "file": n, "scale": 1.5,
                        "stats": {"min": -1.0, "max": None, "nan_count": 0}} for n in names},
    }


class _Scripts(HTMLParser):
    """Collects every <script> element the way a browser's tokenizer would split them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._attrs: dict[str, str | None] | None = None
        self._data: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "script":
            self._attrs, self._data = dict(attrs), []

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._attrs is not None:
            self.scripts.append((self._attrs, "".join(self._data)))
            self._attrs = None

    def handle_data(self, data: str) -> None:
        if self._attrs is not None:
            self._data.append(data)


def _parse(html: str) -> _Scripts:
    p = _Scripts()
    p.feed(html)
    p.close()
    return p


def test_inlined_manifest_round_trips_hostile_names() -> None:
    manifest = _manifest(HOSTILE_NAMES)
    html = render_index_html(manifest)
    parsed = _parse(html)
    inline = [s for a, s in parsed.scripts if a.get("id") == "weightvis-manifest"]
    assert len(inline) == 1
    assert json.loads(inline[0]) == manifest
    # The script data holds no character that HTML or JS could treat specially.
    for ch in "<>&\u2028\u2029":
        assert ch not in inline[0]
    assert inline[0].isascii() and "\x00" not in inline[0]  # every odd character escaped
    # Exactly the manifest, leaflet and the viewer's scripts; no name produced an element.
    assert [a.get("src") for a, _ in parsed.scripts] == [None, "assets/leaflet.js"] + [
        f"assets/js/{s}" for s in viewer_scripts(manifest)]
    assert "img" not in parsed.tags


def test_manifest_script_json_is_exact_json() -> None:
    manifest = _manifest(HOSTILE_NAMES)
    text = manifest_script_json(manifest)
    assert json.loads(text) == manifest
    assert re.search(r"</|<!--|<script", text, re.IGNORECASE) is None


def test_non_finite_numbers_are_refused() -> None:
    manifest = _manifest(["w"])
    manifest["tensors"]["w"]["scale"] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        render_index_html(manifest)


def test_title_is_autoescaped() -> None:
    title = "<b>bold</b> & 'q' \"dq\" </title><script>alert(1)</script>"
    html = render_index_html(_manifest(["w"]), title=title)
    assert "<b>" not in html and "</title><script>" not in html
    assert "&lt;b&gt;bold&lt;/b&gt; &amp;" in html
    parsed = _parse(html)
    assert len(parsed.scripts) == 2 + len(viewer_scripts(_manifest(["w"])))


def test_lone_surrogates_in_names_and_title() -> None:
    """A lone surrogate (a name's "\\ud800", a file name's undecodable byte) cannot be UTF-8:
    the inlined manifest escapes it, exactly; the title shows U+FFFD."""
    manifest = _manifest(["a\ud800b", "\udcff"], title="model\udcff.safetensors")
    html = render_index_html(manifest)
    html.encode("utf-8")
    (inline,) = [s for a, s in _parse(html).scripts if a.get("id") == "weightvis-manifest"]
    assert json.loads(inline) == manifest
    assert "<title>model\ufffd.safetensors · weightvis</title>" in html


def test_title_defaults_to_manifest_title() -> None:
    html = render_index_html(_manifest(["w"], title="all-MiniLM <x>"))
    assert "<title>all-MiniLM &lt;x&gt; · weightvis</title>" in html
    assert '<h1 id="wv-title">all-MiniLM &lt;x&gt;</h1>' in html


def test_copy_viewer_assets(tmp_path: Path) -> None:
    copy_viewer_assets(tmp_path)
    assets = tmp_path / "assets"
    names = sorted(p.relative_to(assets).as_posix() for p in assets.rglob("*") if p.is_file())
    assert names == [
        "LICENSE-leaflet.txt", "images/layers-2x.png", "images/layers.png",
        "images/marker-icon-2x.png", "images/marker-icon.png", "images/marker-shadow.png",
        *(f"js/{s}" for s in sorted(ALL_VIEWER_SCRIPTS)), "leaflet.css", "leaflet.js", "viewer.css",
    ]
    assert f'version="{LEAFLET_VERSION}"' in (assets / "leaflet.js").read_text("utf-8")
    assert "BSD" in (assets / "LICENSE-leaflet.txt").read_text("utf-8") or \
        "Redistribution and use" in (assets / "LICENSE-leaflet.txt").read_text("utf-8")
    for script in ALL_VIEWER_SCRIPTS:
        assert (assets / "js" / script).read_bytes() == (VIEWER / "js" / script).read_bytes()
    assert (assets / "viewer.css").read_bytes() == (VIEWER / "viewer.css").read_bytes()
    copy_viewer_assets(tmp_path)  # idempotent, no temporary files left behind
    assert not [p for p in assets.rglob("*.tmp")]


def test_every_local_reference_of_index_html_exists(tmp_path: Path) -> None:
    copy_viewer_assets(tmp_path)
    html = render_index_html(_manifest(["w"]))
    refs = re.findall(r'(?:src|href)="([^"#]+)"', html)
    assert refs, "the page references its assets"
    for ref in refs:
        assert not re.match(r"[a-z]+:", ref), f"non-local reference {ref}"
        assert (tmp_path / ref).is_file(), ref
    css = (tmp_path / "assets" / "leaflet.css").read_text("utf-8")
    for ref in re.findall(r"url\(([^)]+)\)", css):
        ref = ref.strip("'\"")
        if ref.startswith(("data:", "#")):  # "#default#VML" is an old-IE behaviour, not a file
            continue
        assert (tmp_path / "assets" / ref).is_file(), ref


def test_vendor_pin_matches() -> None:
    script = (VIEWER / "vendor" / "refresh.sh").read_text("utf-8")
    assert f'LEAFLET_VERSION="{LEAFLET_VERSION}"' in script
    assert re.search(r'LEAFLET_SHA256="[0-9a-f]{64}"', script)
    assert (VIEWER / "vendor" / f"leaflet-{LEAFLET_VERSION}" / "LICENSE").is_file()


def test_viewer_builds_no_markup_and_uses_no_network() -> None:
    scripts = sorted((VIEWER / "js").glob("*.js"))
    assert [p.name for p in scripts] == sorted(ALL_VIEWER_SCRIPTS)  # no file left unlisted
    # the packed-tile reader fetches byte ranges: it is only in bundles packed for publishing
    # (weightvis/hub/pack.py), which are served over http(s); a rendered bundle never lists it
    web_only = {"tiles-packed.js": ("fetch(", ".src =")}  # (a blob: URL of fetched bytes)
    assert "tiles-packed.js" not in viewer_scripts({"scenes": [{"tiles": "t"}], "diff": {}})
    for path in scripts:
        js = path.read_text("utf-8")
        code = re.sub(r"/\*.*?\*/|//[^\n]*", "", js, flags=re.DOTALL)
        for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "fetch(",
                       "XMLHttpRequest", "import(", "eval(", "new Function", "bindTooltip",
                       "bindPopup", "http://", "https://", "export ", "import ",
                       # no markup, handler or URL from a string either
                       'setAttribute("on', "srcdoc", "javascript:", "window.open", "DOMParser",
                       "createContextualFragment", "setTimeout(", "setInterval(", ".src =",
                       ".href =", "cssText"):
            if banned not in web_only.get(path.name, ()):
                assert banned not in code, (path.name, banned)
    template = (VIEWER / "index.html.j2").read_text("utf-8")
    assert "http://" not in template and "https://" not in template
    assert 'type="module"' not in template
    # Only the manifest is marked safe, and only as the pre-escaped JSON from manifest_script_json.
    assert "|safe" not in template.replace(" ", "")


def _diff_manifest() -> dict[str, Any]:
    manifest = _manifest(["w"])
    manifest["scenes"][0]["colormap"] = "delta"
    manifest["diff"] = {"pairs": [], "summary": {}}
    return manifest


def test_viewer_scripts_are_what_the_bundle_needs() -> None:
    plain, diff = viewer_scripts(_manifest(["w"])), viewer_scripts(_diff_manifest())
    assert plain[0] == "wv.js" and plain[-1] == "start.js" and diff[-1] == "start.js"
    assert not [s for s in plain if "diff" in s or "change" in s]
    assert {"diff-model.js", "diff-kinds.js", "change-table.js"} <= set(diff)
    assert set(plain) < set(diff) <= set(ALL_VIEWER_SCRIPTS)
    assert len(set(ALL_VIEWER_SCRIPTS)) == len(ALL_VIEWER_SCRIPTS)
    # the page of each lists exactly its scripts, in order
    for manifest in (_manifest(["w"]), _diff_manifest()):
        srcs = [a.get("src") for a, _ in _parse(render_index_html(manifest)).scripts]
        assert srcs[2:] == [f"assets/js/{s}" for s in viewer_scripts(manifest)]


def test_copy_viewer_assets_for_a_manifest(tmp_path: Path) -> None:
    copy_viewer_assets(tmp_path, _manifest(["w"]))
    copied = sorted(p.name for p in (tmp_path / "assets" / "js").iterdir())
    assert copied == sorted(viewer_scripts(_manifest(["w"])))
    html = render_index_html(_manifest(["w"]))
    for ref in re.findall(r'src="(assets/[^"]+)"', html):
        assert (tmp_path / ref).is_file(), ref


def test_viewer_scripts_are_short() -> None:
    for path in (VIEWER / "js").glob("*.js"):
        lines = path.read_text("utf-8").count("\n")
        assert lines <= 350, (path.name, lines)


def test_html_module_imports_no_numpy() -> None:
    import subprocess
    import sys

    code = ("import sys; sys.modules['numpy'] = None; import weightvis.html as h; "
            "print(h.render_index_html({'scenes': [], 'diff': {}})[:15])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith("<!doctype html>")
