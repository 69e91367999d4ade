"""The bundle's web page: ``index.html`` rendered from ``viewer/index.html.j2`` and its assets.

The manifest is inlined as JSON in ``<script type="application/json" id="weightvis-manifest">``
because browsers refuse ``fetch()`` of local files from ``file://``. Tensor names are data: the JSON
is escaped so that no name can end the script element (``<``, ``>``, ``&``, U+2028, U+2029 become
``\\u003c``...), and every other value reaches the page through jinja2 autoescaping (the approach of
openslide-python's ``examples/deepzoom``).

The viewer files live in the top-level ``viewer/`` folder of a source checkout (or editable install)
and in the package ``weightvis._viewer`` of a wheel (see ``pyproject.toml``). The viewer is classic
scripts in ``viewer/js/`` under one namespace (``window.WV``): a core every bundle loads, plug-ins
that register scene kinds and panels, and ``start.js`` last. :func:`viewer_scripts` says which a
bundle needs (the diff plug-ins only when the manifest has ``diff``, the MoE ones only with
``moe``); the page lists only those.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from markupsafe import Markup

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = [
    "render_index_html",
    "index_html_parts",
    "copy_viewer_assets",
    "manifest_script_json",
    "ascii_json",
    "viewer_scripts",
    "ALL_VIEWER_SCRIPTS",
    "LEAFLET_VERSION",
]

LEAFLET_VERSION = "1.9.4"
"""The vendored Leaflet (``viewer/vendor/leaflet-<version>/``, see ``vendor/refresh.sh``)."""

_TEMPLATE = "index.html.j2"

_CORE_SCRIPTS: tuple[str, ...] = (
    "wv.js",            # the namespace, helpers, the registries (sceneKinds, panels)
    "hilbert.js",       # Hilbert curve conversions
    "tiles.js",         # tile index, indexed Leaflet tile layer
    "sidecars.js",      # max-zoom tiles' sidecar scripts: the index and values under the cursor
    "scene-model.js",   # one scene's geometry and point lookups
    "label-fit.js",     # labels shortened to the room they have
    "overlay.js",       # outlines, highlights, labels over the map
    "legend.js",        # the colour legend (filled by the scene kind)
    "readout.js",       # under-the-cursor readout and stats box
    "search.js",        # find a tensor
    "hash.js",          # the view in the URL
    "app.js",           # the core: map, scenes, hover, selection, panels
    "kind-values.js",   # scene kind "values"
)
_BYTES_SCRIPTS: tuple[str, ...] = ("kind-bytes.js",)  # scene kind "bytes"
_XORBS_SCRIPTS: tuple[str, ...] = ("kind-xorbs.js",)  # scene kind "xorbs", panel "xorbs"
_PACKED_SCRIPTS: tuple[str, ...] = ("tiles-packed.js",)  # tile source "packed" (hub/pack.py)
_DIFF_SCRIPTS: tuple[str, ...] = (
    "diff-model.js",        # pairs by name, formatting, change panel markup; panel "diff"
    "diff-kinds.js",        # scene kinds "delta" and "side" (a / b)
    "diff-readout.js",      # panel "diff-readout": status, A -> B, pair numbers
    "diff-summary.js",      # panel "diff-summary": A -> B, counts, diagnosis
    "change-table.js",      # the change table (columns, filter, sort, lazy rows)
    "change-table-nav.js",  # its keyboard, selection, resizing; panel "changes"
    "diff-keys.js",         # panel "scene-keys": a / b / d
)
_MOE_SCRIPTS: tuple[str, ...] = (
    "moe-model.js",     # WV.moe: the numbers behind a cell (manifest, sidecars); panel "moe"
    "moe-kind.js",      # scene kind "sequential" (heatmaps, similarity matrices)
    "moe-readout.js",   # panel "moe-readout": the cell's numbers, panel stats, keys w/s/r/c
)
_START_SCRIPT = "start.js"

_PLUGINS: tuple[tuple[str, Callable[[dict[str, Any]], bool], tuple[str, ...]], ...] = (
    ("bytes", lambda m: any(isinstance(s, dict) and s.get("colormap") in ("bytes", "xorbs")
                            for s in m.get("scenes") or ()), _BYTES_SCRIPTS),
    ("xorbs", lambda m: isinstance(m.get("xet"), dict), _XORBS_SCRIPTS),
    ("diff", lambda m: isinstance(m.get("diff"), dict), _DIFF_SCRIPTS),
    ("moe", lambda m: isinstance(m.get("moe"), dict), _MOE_SCRIPTS),
    ("packed", lambda m: any(isinstance(s, dict) and isinstance(s.get("pack"), dict)
                             for s in m.get("scenes") or ()), _PACKED_SCRIPTS),
)
"""Plug-in script sets: (name, does a manifest need it, its scripts in load order)."""

ALL_VIEWER_SCRIPTS: tuple[str, ...] = (
    *_CORE_SCRIPTS, *(s for _, _, scripts in _PLUGINS for s in scripts), _START_SCRIPT
)
"""Every script any bundle can list (files of ``viewer/js/``), in load order."""

# Escapes that keep JSON valid and identical after JSON.parse, but make it inert inside a
# <script> element: no "</script", no "<!--", no HTML entity, no JS line terminator.
_SCRIPT_SAFE = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def viewer_scripts(manifest: dict[str, Any]) -> list[str]:
    """The viewer scripts (names in ``viewer/js/``) a bundle's page loads, in load order.

    >>> viewer_scripts({"scenes": []})[0], viewer_scripts({"scenes": []})[-1]
    ('wv.js', 'start.js')
    >>> "diff-model.js" in viewer_scripts({"diff": {"pairs": []}})
    True
    """
    scripts = list(_CORE_SCRIPTS)
    for _, needed, plugin in _PLUGINS:
        if needed(manifest):
            scripts.extend(plugin)
    scripts.append(_START_SCRIPT)
    return scripts


def _viewer_dir() -> Path | Traversable:
    """The folder holding ``index.html.j2``, ``js/``, ``viewer.css`` and ``vendor/``."""
    # This file is weightvis/html.py, so this is Path(weightvis.__file__).parent.parent / "viewer"
    # without importing the package from inside itself.
    checkout = Path(__file__).resolve().parent.parent / "viewer"
    if (checkout / _TEMPLATE).is_file():
        return checkout
    packaged = importlib.resources.files("weightvis") / "_viewer"
    if not (packaged / _TEMPLATE).is_file():
        raise FileNotFoundError(
            f"weightvis viewer files not found (looked in {checkout} and weightvis/_viewer)"
        )
    return packaged


def _leaflet_dir(viewer: Path | Traversable) -> Path | Traversable:
    return viewer / "vendor" / f"leaflet-{LEAFLET_VERSION}"


def manifest_script_json(manifest: dict[str, Any], compact: str | Sequence[str] | None = None
                         ) -> str:
    """The manifest as JSON text safe to place verbatim inside a ``<script>`` element.

    ``JSON.parse`` of the result gives back exactly ``manifest``. Non-finite floats are refused
    (JSON has no NaN; the manifest stores them as ``null``). ``compact``: the manifest already
    encoded by manifest.compact, or the parts that text is the concatenation of.

    >>> manifest_script_json({"a": "</script>&\\u2028"})
    '{"a":"\\\\u003c/script\\\\u003e\\\\u0026\\\\u2028"}'
    """
    return "".join(_script_parts(manifest, compact))


def _script_parts(manifest: dict[str, Any], compact: str | Sequence[str] | None) -> list[str]:
    """``manifest_script_json``'s text in parts (those of ``compact``): each converted alone,
    as every conversion here is character by character (a 45k-tensor manifest's ~28 MB part
    holding none of those characters is not copied)."""
    if compact is None:
        return [_script_safe(_ascii_json(manifest))]
    # the ensure_ascii=True encoding is the ensure_ascii=False one with every character
    # past "~" (only ever inside a string: DEL and non-ASCII) escaped: no second encoding
    return [_script_safe(ascii_json(part))
            for part in ([compact] if isinstance(compact, str) else compact)]


def _script_safe(text: str) -> str:
    # ensure_ascii already escapes U+2028/U+2029; the table keeps this correct if that changes.
    # (one str.replace per character: str.translate with a table is ~40x slower on 30 MB)
    for char, escaped in _SCRIPT_SAFE.items():
        if char in text:
            text = text.replace(char, escaped)
    return text


_NON_ASCII = re.compile(r"[^\x00-\x7e]")


def ascii_json(text: str) -> str:
    """JSON text written with ``ensure_ascii=False`` as ``ensure_ascii=True`` writes it: every
    character past ``~`` escaped (only ever inside a string: DEL and non-ASCII). Character by
    character, so a document's parts may be converted one by one (manifest.compose).

    >>> ascii_json('{"é":"~"}')
    '{"\\\\u00e9":"~"}'
    """
    return text if text.isascii() and "\x7f" not in text else _escape_non_ascii(text)


_ASCII_BELOW_DEL = bytes(range(0x7f))
_FEW_CHARACTERS = 32


def _escape_non_ascii(text: str) -> str:
    """``_NON_ASCII.sub(_json_escape, text)``: when few distinct characters need it (a
    manifest's ``·`` in labels), one ``str.replace`` each, found with C-speed byte operations
    (30 MB: ~0.03 s instead of the regex's ~0.1 s)."""
    odd = text.encode("utf-8", "surrogatepass").translate(None, _ASCII_BELOW_DEL)
    chars = set(odd.decode("utf-8", "surrogatepass"))
    if len(chars) > _FEW_CHARACTERS:
        return _NON_ASCII.sub(_json_escape, text)
    for c in sorted(chars):
        text = text.replace(c, _json_escape_char(c))
    return text


def _json_escape(m: re.Match[str]) -> str:
    return _json_escape_char(m.group())


def _json_escape_char(ch: str) -> str:
    """``\\uXXXX`` as ``json.dumps(ensure_ascii=True)`` writes the character (a surrogate
    pair above U+FFFF)."""
    c = ord(ch)
    if c < 0x10000:
        return f"\\u{c:04x}"
    c -= 0x10000
    return f"\\u{0xd800 | (c >> 10):04x}\\u{0xdc00 | (c & 0x3ff):04x}"


def _ascii_json(manifest: dict[str, Any]) -> str:
    try:
        return json.dumps(manifest, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    except ValueError as exc:
        raise ValueError(f"manifest is not valid JSON (NaN/Inf must be null): {exc}") from exc


def _environment(viewer: Path | Traversable) -> jinja2.Environment:
    def load(name: str) -> str:
        return (viewer / name).read_text(encoding="utf-8")

    return jinja2.Environment(
        loader=jinja2.FunctionLoader(load),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def render_index_html(manifest: dict[str, Any], *, title: str | None = None,
                      compact: str | Sequence[str] | None = None) -> str:
    """The bundle's ``index.html`` with ``manifest`` inlined.

    ``title`` defaults to the manifest's ``title``; it is escaped like every other value.
    ``compact``: the manifest already encoded by manifest.compact (reused when it is ASCII), or
    the parts that text is the concatenation of (manifest_text.compose_parts).
    """
    return "".join(index_html_parts(manifest, title=title, compact=compact))


def index_html_parts(manifest: dict[str, Any], *, title: str | None = None,
                     compact: str | Sequence[str] | None = None) -> list[str]:
    """``render_index_html``'s page in parts (the manifest's among them), for a writer that
    need not join them."""
    if title is None:
        title = str(manifest.get("title") or "weightvis")
    template = _environment(_viewer_dir()).get_template(_TEMPLATE)
    page = template.render(
        title=_displayable(title),
        manifest_json=Markup(_MANIFEST_SLOT),
        scripts=viewer_scripts(manifest),
        generator=_displayable(str(manifest.get("generator") or "weightvis")),
    )
    # the manifest (tens of MB) goes in after the template: not copied by escape and join
    head, slot, tail = page.partition(_MANIFEST_SLOT)
    assert slot and _MANIFEST_SLOT not in tail
    return [head, *_script_parts(manifest, compact), tail]


_MANIFEST_SLOT = "<weightvis-manifest/>"
"""Where the manifest goes in the rendered template: markup, so no value (autoescaped) can
spell it."""


def _displayable(text: str) -> str:
    """``text`` with lone surrogates (a file name's undecodable bytes) as U+FFFD: the page is
    UTF-8, which cannot hold them. The manifest keeps the exact string (escaped in JSON)."""
    return text if text.isascii() else re.sub("[\ud800-\udfff]", "\ufffd", text)


def _copy_file(src: Path | Traversable, dst: Path) -> None:
    """Copy one file by writing a temporary name beside ``dst`` and renaming it."""
    data = src.read_bytes()
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def copy_viewer_assets(out_dir: Path, manifest: dict[str, Any] | None = None) -> None:
    """Copy the viewer's static files into ``out_dir/assets/``.

    ``leaflet.js``, ``leaflet.css``, ``images/*.png`` (referenced by ``leaflet.css``),
    ``LICENSE-leaflet.txt`` (Leaflet's BSD-2-Clause licence), ``viewer.css`` and ``js/<script>``:
    the scripts ``manifest`` needs (:func:`viewer_scripts`), or every script when it is None.
    """
    viewer = _viewer_dir()
    leaflet = _leaflet_dir(viewer)
    assets = Path(out_dir) / "assets"
    (assets / "images").mkdir(parents=True, exist_ok=True)
    (assets / "js").mkdir(exist_ok=True)
    _copy_file(leaflet / "leaflet.js", assets / "leaflet.js")
    _copy_file(leaflet / "leaflet.css", assets / "leaflet.css")
    _copy_file(leaflet / "LICENSE", assets / "LICENSE-leaflet.txt")
    for image in sorted((leaflet / "images").iterdir(), key=lambda t: t.name):
        if image.is_file() and image.name.endswith(".png"):
            _copy_file(image, assets / "images" / image.name)
    scripts = ALL_VIEWER_SCRIPTS if manifest is None else viewer_scripts(manifest)
    for script in scripts:
        _copy_file(viewer / "js" / script, assets / "js" / script)
    _copy_file(viewer / "viewer.css", assets / "viewer.css")
