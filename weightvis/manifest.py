"""The bundle's manifest (README, "The bundle and its manifest"): built, read and validated here.

numpy-free on purpose: ``weightvis --regen-html`` reads a manifest and writes ``index.html`` with
no numerical library loaded. The key order of every object is part of the output (bundles are
compared byte for byte), so the builders below fix it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

from . import __version__
from .errors import BundleError
from .types import TILE_SIZE, Placement, SceneLayout

__all__ = ["MANIFEST_VERSION", "BUNDLE_FORMAT", "READABLE_VERSIONS", "ManifestHead",
           "manifest_head", "scene_json", "placements_json", "build_manifest", "compact", "dumps",
           "dumps_utf8", "encodable", "is_bundle", "read_manifest", "validate"]

MANIFEST_VERSION = 1
BUNDLE_FORMAT = "weightvis-bundle"
READABLE_VERSIONS = (1,)
"""Manifest versions this weightvis reads (``--regen-html`` keeps working on all of them)."""

_BUNDLE_HEAD = re.compile(rb'\s*\{\s*"format"\s*:\s*"' + BUNDLE_FORMAT.encode() + rb'"')
_HEAD_BYTES = 4096
_REQUIRED = ("format", "version", "tile_size", "scenes", "tensors", "colormaps")
_SCENE_REQUIRED = ("key", "label", "max_zoom", "width", "height", "tiles", "colormap")


class ManifestHead(TypedDict):
    format: str
    version: int
    generator: str
    title: str
    tile_size: int
    tile_format: str


def manifest_head(title: str, tile_format: str) -> ManifestHead:
    return {"format": BUNDLE_FORMAT, "version": MANIFEST_VERSION,
            "generator": f"weightvis {__version__}", "title": title, "tile_size": TILE_SIZE,
            "tile_format": tile_format}


def scene_json(key: str, label: str, lay: SceneLayout, max_zoom: int, ext: str,
               colormap: str, tile_index: list[dict[str, Any]]) -> dict[str, Any]:
    """One entry of ``scenes``: geometry, placements or curve, groups and the tile bitmap."""
    scene: dict[str, Any] = {
        "key": key, "label": label, "layout": lay.layout, "max_zoom": max_zoom,
        "width": lay.c_width, "height": lay.c_height,
        "tiles": f"tiles/{key}/{{z}}/{{x}}/{{y}}.{ext}", "colormap": colormap,
        "placements": placements_json(lay.placements),
        "groups": [g.to_json() for g in lay.groups],
        "tile_index": tile_index,
        "curve": None,
    }
    if lay.layout == "hilbert":
        field = "tensor" if lay.curve_unit == "element" else "file"
        scene["curve"] = {"order": lay.curve_order, "unit": lay.curve_unit,
                          "segments": [{field: s.name, "start": s.h_start, "length": s.length}
                                       for s in lay.segments]}
    return scene


def placements_json(placements: Sequence[Placement]) -> list[dict[str, object]]:
    """``[p.to_json() for p in placements]``, without a method call per placement (a checkpoint
    of 45k tensors has as many)."""
    out: list[dict[str, object]] = []
    add = out.append
    for name, c_x, c_y, e_r0, e_r1, e_c0, e_c1, label in placements:
        doc: dict[str, object] = {"tensor": name, "rect": [c_x, c_y, e_c1 - e_c0, e_r1 - e_r0],
                                  "rows": [e_r0, e_r1], "cols": [e_c0, e_c1]}
        if label is not None:
            doc["label"] = label
        add(doc)
    return out


def build_manifest(head: ManifestHead, *, source: Mapping[str, Any], scale: Mapping[str, Any],
                   colormaps: Mapping[str, Any], scenes: Sequence[Mapping[str, Any]],
                   tensors: Mapping[str, Any], extra: Mapping[str, Any] | None = None,
                   ) -> dict[str, Any]:
    """The whole manifest, keys in their documented order; ``extra`` (``diff``, …) last."""
    doc: dict[str, Any] = {**head, "source": dict(source), "scale": dict(scale),
                           "colormaps": dict(colormaps), "scenes": list(scenes),
                           "tensors": dict(tensors)}
    doc.update(extra or {})
    validate(doc, "manifest")
    return doc


_COMPILED_ABOVE = 1 << 20
"""Compact JSON longer than this is indented by a compiled kernel (kernels/jsontext.py): Python's
indenting encoder is pure Python, ~5 s for the manifest of a 45k-tensor checkpoint."""


_SURROGATE = re.compile("[\ud800-\udfff]")


def encodable(text: str) -> str:
    """JSON text with every lone surrogate written as its ``\\uXXXX`` escape.

    A tensor name may hold one (a JSON header's ``"\\ud800"``, a pickle's str, a file name's
    undecodable byte): UTF-8 cannot encode it, so the bundle could not be written. JSON text has
    non-ASCII characters only inside strings, where the escape means the same code unit, so
    ``json.loads`` and the viewer's ``JSON.parse`` give back the very same string.

    >>> encodable('{"a\\ud800":1}')
    '{"a\\\\ud800":1}'
    """
    if text.isascii():
        return text
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def compact(doc: Any) -> str:
    """The document (any JSON value) as compact JSON (no NaN: JSON has none), by the C encoder;
    UTF-8-encodable (:func:`encodable`)."""
    return encodable(json.dumps(doc, allow_nan=False, ensure_ascii=False, separators=(",", ":")))


def dumps_utf8(doc: Mapping[str, Any], compact_utf8: bytes) -> bytes:
    """``dumps(doc).encode("utf-8")`` from ``compact_utf8``, ``compact(doc)`` in UTF-8 (a big
    document is indented as bytes, never decoded)."""
    if len(compact_utf8) <= _COMPILED_ABOVE:
        return dumps(doc).encode("utf-8")
    from .kernels.jsontext import indent_json  # numpy + numba: only for big documents

    return indent_json(compact_utf8, 1)


def dumps(doc: Mapping[str, Any]) -> str:
    """JSON as bundles store it: ``json.dumps(doc, indent=1, ensure_ascii=False)``, no NaN
    (JSON has none), lone surrogates escaped (:func:`encodable`)."""
    text = compact(doc)
    if len(text) <= _COMPILED_ABOVE:
        return encodable(json.dumps(doc, indent=1, allow_nan=False, ensure_ascii=False))
    return dumps_utf8(doc, text.encode("utf-8")).decode("utf-8")


def validate(doc: Any, where: str) -> dict[str, Any]:
    """Check the manifest's shape (not every value); raises BundleError naming what is wrong."""
    if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{where}: not a weightvis manifest")
    if doc.get("version") not in READABLE_VERSIONS:
        raise BundleError(f"{where}: manifest version {doc.get('version')!r}, this weightvis "
                          f"reads version {', '.join(map(str, READABLE_VERSIONS))}")
    missing = [k for k in _REQUIRED if k not in doc]
    if missing:
        raise BundleError(f"{where}: manifest lacks {', '.join(missing)}")
    if not isinstance(doc["scenes"], list) or not isinstance(doc["tensors"], dict):
        raise BundleError(f"{where}: manifest 'scenes' must be a list and 'tensors' an object")
    for i, sc in enumerate(doc["scenes"]):
        gone = [k for k in _SCENE_REQUIRED if not isinstance(sc, dict) or k not in sc]
        if gone:
            raise BundleError(f"{where}: scene {i} lacks {', '.join(gone)}")
    return doc


def is_bundle(path: Path) -> bool:
    """True when ``path`` holds a weightvis manifest (any version).

    A manifest weightvis wrote opens with its ``format`` (``manifest_head``): its first bytes
    decide, as for a published bundle (``hub/publish.py``). A 45k-tensor manifest is 40 MB, and
    parsing it took 0.4 s each of the two times ``--overwrite`` checks the folder. A manifest
    opening otherwise is parsed."""
    try:
        with open(path / "manifest.json", "rb") as f:
            if _BUNDLE_HEAD.match(f.read(_HEAD_BYTES)):
                return True
        doc = json.loads((path / "manifest.json").read_text("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and doc.get("format") == BUNDLE_FORMAT


def read_manifest(bundle: Path | str) -> dict[str, Any]:
    """The validated manifest of the bundle folder ``bundle``."""
    p = Path(bundle) / "manifest.json"
    try:
        doc = json.loads(p.read_text("utf-8"))
    except OSError as e:
        raise BundleError(f"{p}: cannot read ({e.strerror}); is {bundle} a weightvis bundle?"
                          ) from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise BundleError(f"{p}: not valid JSON ({e})") from None
    return validate(doc, str(p))
