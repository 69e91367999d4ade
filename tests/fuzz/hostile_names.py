"""Hostile tensor names: fixed lists by family and a seeded generator that mixes them into the
name sets of the viewer's fuzz target (test_fuzz_viewer_names.py).

Every payload that could run would do three things, each caught by the test: set
``window.__pwned``, change ``document.title``, and request ``PWN_URL`` (a loopback port nothing
listens on; the page's request log must never show it, nor any URL off ``file://``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from weightvis.html import viewer_scripts
from weightvis.manifest import read_manifest

from ..test_viewer_browser import hover_canvas_pixel, set_view

PWN_URL = "http://127.0.0.1:9/wv-pwned"
JS = f"window.__pwned=1;document.title='pwned';new Image().src='{PWN_URL}'"

PROTO = [
    "__proto__", "constructor", "prototype", "toString", "valueOf", "hasOwnProperty",
    "isPrototypeOf", "propertyIsEnumerable", "toLocaleString", "__defineGetter__",
    "__lookupGetter__", "length", "name", "size", "then", "get", "set", "has", "call", "0", "-1",
    "NaN", "Infinity", "undefined", "null", "true", "[object Object]", "__proto__.__proto__",
    "a.__proto__.b", "constructor.prototype.polluted", "__proto__[polluted]",
    "constructor[prototype][polluted]",
]
HTML = [
    f'<img src=x onerror="{JS}">',
    f"</script><script>{JS}</script>",
    f"</SCRIPT ><script>{JS}</script>",
    f'"><svg onload="{JS}">',
    f"'><svg/onload={JS}>",
    f"javascript:{JS}",
    f'<iframe src="javascript:{JS}"></iframe>',
    f"<!--<script>{JS}</script>-->",
    "<!--", "-->", "<script>", "</script", "<![CDATA[", "]]>",
    f'<a href="javascript:{JS}">x</a>',
    f'<base href="{PWN_URL}/">',
    f'<meta http-equiv="refresh" content="0;url={PWN_URL}">',
    f'<link rel=stylesheet href="{PWN_URL}">',
    f'<object data="{PWN_URL}"></object>',
    f'<body onload="{JS}">',
    f'<details open ontoggle="{JS}">',
    f'<math><mtext><table><mglyph><style><img src=x onerror="{JS}">',
    f"<template><script>{JS}</script></template>",
    f'<noscript><p title="</noscript><img src=x onerror={JS}>">',
    "&lt;script&gt;", "&amp;", "&#60;script&#62;", "&#x3C;", "<?xml version='1.0'?>",
]
TEMPLATE = [
    "{{7*7}}", "${7*7}", "#{7*7}", "<%= 7*7 %>", "{% if 1 %}x{% endif %}", "{# c #}",
    "{{ constructor.constructor('" + JS + "')() }}", "${" + JS + "}", "{{ manifest_json }}",
    "{{ title|safe }}", "{z}/{x}/{y}", "{s}", "{r}", "%s%s%n", "{0}", "$&", "$'", "$`", "$1",
]
CSS = [
    f"x{{background:url({PWN_URL})}}",
    f"</style><style>*{{background:url({PWN_URL})}}</style>",
    "expression(alert(1))", f"@import '{PWN_URL}';", '\\";}body{display:none}',
    "url(javascript:alert(1))", "*{}", "wv-name", "#wv-map",
]
BIDI = [
    "\u202etxt.exe", "abc\u202edcba", "\u2066isolate\u2069", "\u200b", "a\u200bb", "\u200d\u200c",
    "\ufeffbom", "\u061c", "\u200f\u200e", "\u202e\u2066x\u2069", "\u202d\u202a\u202b\u202c",
]
EMOJI = [
    "\U0001f600", "\U0001f469\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
    "\U0001f1fa\U0001f1f3", "e\u0301", "Z\u0364\u0354\u0367\u0311\u0313a\u0308\u0356\u032d",
    "\U0001d568\U0001d556\U0001d55a", "名前.重み", "وزن.طبقة", "\ufdfa", "\U0010ffff",
]
PATHS = [
    "/", "\\", "..", "../../../../etc/passwd", "..\\..\\windows\\win.ini", "%2e%2e%2f",
    "%2e%2e/%2e%2e/x", "a/b/c", "C:\\x", "file:///etc/passwd", "//127.0.0.1:9/wv-pwned",
    PWN_URL, "tiles/main/0/0/0.png", "assets/js/wv.js", "index.html", "manifest.json",
    "diff.json", ".", "~", "con", "NUL", "a/../b", "?q=1#h", "#scene=a&z=0", "%00",
]
CONTROL = [
    "a\x00b", "\x00", "\x1b[31mred\x1b[0m", "line\nbreak", "cr\rlf", "tab\there", "\x7f", "\x85",
    "\u2028", "\u2029", "a\u2028b", "\ufffe", "\uffff", "\ud800", "x\udfff", "\udbff\udfff",
    "\ud800\ud800", "\b\f\v", "\x00\x00",
]
LAYER = [
    "model.layers.0.__proto__.weight", "model.layers.__proto__.0.weight",
    "model.layers.constructor.weight", "model.layers.-1.weight", "model.layers.1e3.weight",
    "model.layers.0x10.weight", "model.layers.\u0663.mlp.weight", "model.layers.\u00b2.weight",
    "model.layers." + "9" * 30 + ".weight", "model.layers." + "1" * 5000 + ".weight",
    "model.layers.9007199254740993.weight", "model.layers.00.weight", "model.layers. 1.weight",
    "model.layers.1.mlp.experts." + "7" * 5000 + ".up_proj.weight", "blk.\u0663.attn_q.weight",
    "h.0.__proto__", "model.layers.0.toString", "model.layers.0.<img src=x>.weight", "\u00b2",
]
OTHER = ["", " ", "  padded  ", "..weight", "weight.", "." * 100, "a" * 300]
LONG = [
    "x" * 10_000, "a." * 5_000, "model.layers.0." + "q" * 10_000, "<" * 10_000,
    ("\u202e" + "ab") * 3_000, (f"<img src=x onerror=\"{JS}\">" * 200)[:10_000],
]

FAMILIES: dict[str, list[str]] = {
    "proto": PROTO, "html": HTML, "template": TEMPLATE, "css": CSS, "bidi": BIDI, "emoji": EMOJI,
    "paths": PATHS, "control": CONTROL, "layer": LAYER, "other": OTHER, "long": LONG,
}
ALWAYS = [f"</script ><script>{JS}</script>", f"<!--<script>{JS}</script>-->", "__proto__",
          "\u2028\u2029", "\ud800"]
"""In every set: the ways out of the inlined manifest's <script> element, and a prototype."""

_PREFIXES = ["model.layers.{k}.", "model.", "encoder.block.{k}.", "transformer.h.{k}.", ""]
_SUFFIXES = ["", ".weight", ".bias"]


def as_read(name: str) -> str:
    """The name as a reader gives it back from a JSON header: ``"\\udbff\\udfff"`` written as
    two lone surrogates comes back as one code point."""
    return str(json.loads(json.dumps(name)))


def name_set(rng: np.random.Generator, size: int) -> list[str]:
    """``size`` distinct names (as read back): ``ALWAYS``, one of every family, the rest drawn
    from all of them; some wrapped in a layer-like prefix and suffix or joined to another
    payload (``ALWAYS`` too, so a set may hold them only as parts of longer names)."""
    every = [n for names in FAMILIES.values() for n in names]
    picks = [*ALWAYS, *(names[int(rng.integers(len(names)))] for names in FAMILIES.values())]
    while len(picks) < 4 * size:
        picks.append(every[int(rng.integers(len(every)))])
    out: dict[str, None] = {}
    for raw in picks:
        name = raw
        roll = float(rng.random())
        if roll < 0.3:
            k = int(rng.integers(3))
            name = (_PREFIXES[int(rng.integers(len(_PREFIXES)))].format(k=k) + name
                    + _SUFFIXES[int(rng.integers(len(_SUFFIXES)))])
        elif roll < 0.45:
            name = name + every[int(rng.integers(len(every)))]
        name = as_read(name)
        if name == "__metadata__" or len(name) > 20_000:  # safetensors' own key; keep files small
            continue
        out[name] = None
        if len(out) == size:
            break
    return list(out)


def file_name(rng: np.random.Generator) -> str:
    """A hostile checkpoint file name: a name of ``name_set`` a file system takes (no ``/``,
    no NUL, UTF-8, at most 200 bytes), ending ``.safetensors``."""
    while True:
        (name,) = name_set(rng, 1)
        name = name.replace("/", "_").replace("\x00", "_")
        try:
            raw = name.encode("utf-8")
        except UnicodeEncodeError:
            continue
        if 0 < len(raw) <= 200 and name not in (".", ".."):
            return name + ".safetensors"


def tensors_for(names: list[str], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Small tensors (0-D to 3-D, at most 60 elements) of seeded values, one per name."""
    shapes = [(), (7,), (1, 1), (3, 4), (6, 10), (2, 2, 3), (5, 1), (1, 9)]
    return {n: rng.standard_normal(shapes[int(rng.integers(len(shapes)))]).astype(np.float32)
            for n in names}


def utf16_escaped(s: str) -> str:
    """``s`` as printable ASCII, its UTF-16 code units outside ``' '..'~'`` (and ``\\``) as
    ``\\uXXXX``: names compared this way with the page's survive any transport."""
    units = s.encode("utf-16-le", "surrogatepass")
    out = []
    for i in range(0, len(units), 2):
        u = units[i] | units[i + 1] << 8
        out.append(chr(u) if 0x20 <= u < 0x7F and u != 0x5C else f"\\u{u:04x}")
    return "".join(out)


# --------------------------------------------------------------------------- a page's checks

# In-page helpers: the same escaping as utf16_escaped, and a search query for a name (its longest
# run without control characters, trimmed: a type=search input drops CR and LF, search trims).
_JS_HELPERS = r"""() => {
window.__wvEsc = (s) => Array.from({length: s.length}, (_, i) => s.charCodeAt(i)).map(
  (u) => u >= 0x20 && u < 0x7f && u !== 0x5c ? String.fromCharCode(u)
       : "\\u" + u.toString(16).padStart(4, "0")).join("");
window.__wvQuery = (name) => {
  const runs = name.split(/[\x00-\x1f\x7f]/).map((s) => s.trim()).filter(Boolean);
  runs.sort((a, b) => b.length - a.length);
  return runs.length ? runs[0] : null;
};
}"""

_CHECK_NAME = r"""(i) => {
  const name = weightvis.app.model.items[i].name;
  const out = {name: __wvEsc(name)};
  const q = __wvQuery(name);
  if (q !== null) {
    const box = document.getElementById("wv-search");
    box.value = q;
    box.dispatchEvent(new Event("input"));
    const lis = [...document.querySelectorAll("#wv-results li.wv-result")];
    const hit = lis.find((li) => li.textContent === name);
    out.found = !!hit;
    if (hit) hit.dispatchEvent(new MouseEvent("mousedown", {bubbles: true, cancelable: true}));
  } else {
    out.found = null;   // nothing to type: select as a click on the map would
    weightvis.app.zoomTo(weightvis.app.model.item(name));
  }
  out.selected = !!weightvis.app.selected && weightvis.app.selected.name === name;
  out.stats = document.getElementById("wv-s-name").textContent === name;
  out.boxHeight = document.getElementById("wv-s-name").clientHeight;
  const item = weightvis.app.model.item(name);
  out.rect = item ? item.rects[0] : null;
  return out;
}"""

_CLEAN = r"""(scripts) => ({
  pwned: window.__pwned !== undefined,
  title: document.title,
  onAttributes: [...document.querySelectorAll("*")].flatMap((e) =>
      [...e.attributes].filter((a) => a.name.toLowerCase().startsWith("on"))
                       .map((a) => e.tagName + " " + a.name)),
  foreign: [...document.querySelectorAll(
      "iframe, frame, object, embed, base, svg, math, style, template, noscript, form, video," +
      " audio, source, meta[http-equiv], a[href]:not([href=\"#\"])")].map((e) => e.tagName),
  images: [...document.images].filter((i) => !i.classList.contains("leaflet-tile"))
                              .map((i) => i.getAttribute("src")),
  scripts: document.scripts.length === scripts,
  links: document.querySelectorAll("link").length,
  longestMeasured: Math.max(0, ...[...weightvis.app.overlay.widthCache.keys()].map(
      (k) => k.length - k.indexOf("\u0000") - 1)),
})"""


def check_page(page: Any, log: Any, names: list[str], out: Path, *, diff: bool,
               items: list[str] | None = None, title: str | None = None) -> None:
    """Assert, on the opened bundle ``out`` whose tensors are ``names``: the inlined manifest
    holds every name exactly; search finds each, selecting it shows it in the stats box and
    hovering it in the readout (a diff's change table lists it), always as text; no label
    measured is longer than the overlay's cap; no payload ran (no ``window.__pwned``, title
    unchanged, no ``on*`` attribute, no element a payload could add, no extra script or
    image); no error, dialog or request off ``file://`` (``PWN_URL`` above all). ``items``: the
    names of the first scene's items when they are not the tensors (a byte curve's files);
    ``title``: the title the page must show."""
    manifest = read_manifest(out)
    title0 = page.title()
    page.evaluate(_JS_HELPERS)
    # (as sets: JavaScript lists the keys that are array indices, "0", first)
    got = page.evaluate("Object.keys(weightvis.manifest.tensors).map(__wvEsc)")
    want = [utf16_escaped(n) for n in manifest["tensors"]]
    assert sorted(got) == sorted(want), "the inlined manifest changed a name"
    assert sorted(want) == sorted(utf16_escaped(n) for n in names)
    items = names if items is None else items
    got = page.evaluate("weightvis.app.model.items.map((it) => __wvEsc(it.name))")
    assert sorted(got) == sorted(utf16_escaped(n) for n in items)
    if title is not None:  # the HTML parser reads CR and CR LF as LF
        shown = title.replace("\r\n", "\n").replace("\r", "\n")
        assert page.evaluate("__wvEsc(document.getElementById('wv-title').textContent)") == \
            utf16_escaped(shown)
    scene = manifest["scenes"][0]
    for i in range(len(items)):
        r = page.evaluate(_CHECK_NAME, i)
        assert r["found"] is not False, f"search did not find {r['name'][:300]}"
        assert r["selected"] and r["stats"], f"not selected / shown: {r['name'][:300]}"
        assert r["rect"] is not None, r["name"][:300]
        assert r["boxHeight"] < 150, f"a long name pushes the side panel away: {r['name'][:300]}"
        c_x, c_y = r["rect"][0], r["rect"][1]
        set_view(page, c_x + 0.5, c_y + 0.5, scene["max_zoom"] + 3)  # the deepest zoom
        hover_canvas_pixel(page, c_x, c_y)
        shown = page.evaluate(
            "(i) => document.getElementById('wv-r-name').textContent"
            " === weightvis.app.model.items[i].name", i)
        assert shown, f"readout does not show {r['name'][:300]}"
        if diff:
            listed = page.evaluate(r"""(i) => {
              const name = weightvis.app.model.items[i].name;
              const box = document.getElementById("wv-ct-name");
              box.value = __wvQuery(name) || "";
              box.dispatchEvent(new Event("input"));
              return [...document.querySelectorAll("#wv-ct-rows tr.wv-ct-row td:first-child")]
                .some((td) => td.textContent === name);
            }""", i)
            assert listed, f"change table does not list {r['name'][:300]}"
    page.evaluate("weightvis.app.overlay.draw()")
    set_view(page, 0, 0, 0)
    page.evaluate("weightvis.app.overlay.draw()")
    page.wait_for_timeout(300)  # an onerror / onload would have fired by now
    state = page.evaluate(_CLEAN, 2 + len(viewer_scripts(manifest)))
    assert not state["pwned"], "a payload ran"
    assert state["title"] == title0 != "pwned"
    assert state["onAttributes"] == [], state["onAttributes"]
    assert state["foreign"] == [], state["foreign"]
    assert state["images"] == [], state["images"]
    assert state["scripts"], "a name became a <script>"
    assert state["links"] == 2
    assert state["longestMeasured"] <= 200, state["longestMeasured"]  # overlay.js LABEL_MAX_CHARS
    assert not any(PWN_URL in u for u in log.requests)
    log.assert_clean()
