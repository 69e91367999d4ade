"""The Xet xorb scene (``--show-xet-xorbs``): every byte of the files on one Hilbert curve, as the
byte scene lays them out, coloured by the xorb of the Hub's Xet storage that holds it.

Colour rule: xorbs are numbered in order of first appearance along the files (file order, then
byte order); xorb k takes colour ``k % 20`` of Tableau 20 (its ten strong hues first, then their
light companions, so that the first ten xorbs differ in hue), and the byte value sets the shade:
``index = 1 + colour * SHADES + byte * SHADES // 256``, the shade's brightness growing from 40 %
to 100 % of the colour, so the file's structure (headers, exponent bytes, padding) stays visible
inside each xorb. Index 0 is padding. Zoomed-out pixels take the first non-padding child, as the
byte scene does. The xorbs themselves (hash, byte ranges, share of the bytes) are listed in the
manifest's ``xet`` object (README, "Hugging Face Hub"); the terms come from hub/xet.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from . import color
from .errors import InputError
from .layout import hilbert_layout
from .painters import BytesPainter
from .tiling import Geometry

if TYPE_CHECKING:
    from .formats import MultiReader
    from .hub.xet import XetFile
    from .pyramid import TileWorker
    from .scenes import Scene

__all__ = ["XorbsPainter", "XorbScene", "plan_xorbs", "xorb_palette", "xorb_colormap",
           "TABLEAU_20", "SHADES", "SCENE_KEY"]

SCENE_KEY = "xorbs"
SHADES = 12
"""Shades per xorb colour (by byte value): 20 colours x 12 shades + padding fit 256 indices."""

TABLEAU_20: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
)
"""Tableau 20 (Tableau Software's categorical palette): the ten strong hues, then the light
ones in the same order."""

RULE = ("xorbs are numbered in order of first appearance (file order, then byte order); xorb k "
        f"has colour c = k % {len(TABLEAU_20)}; a byte b stored in it has index = 1 + c*{SHADES} "
        f"+ floor(b*{SHADES}/256); padding -> 0. Shade j of colour c is the colour scaled by "
        f"0.4 + 0.6*j/{SHADES - 1}. Zoomed-out pixels take the top-left non-padding child.")

_SHADE_OF_BYTE = (np.arange(256) * SHADES // 256).astype(np.uint8)


def xorb_palette() -> np.ndarray:
    """The (256, 3) uint8 palette of the xorb scene (unused indices: the padding colour)."""
    pal = np.tile(color.value_palette()[color.PAD], (256, 1))
    for c, rgb in enumerate(TABLEAU_20):
        for j in range(SHADES):
            f = 0.4 + 0.6 * j / (SHADES - 1)
            pal[1 + c * SHADES + j] = [int(round(v * f)) for v in rgb]
    return pal


def xorb_colormap() -> dict[str, Any]:
    return {"kind": "xorbs", "palette": xorb_palette().tolist(), "padding_index": color.PAD,
            "colours": len(TABLEAU_20), "shades": SHADES, "rule": RULE}


class XorbsPainter(BytesPainter):
    """A file's raw bytes shaded in the colour of the xorb that holds them (module doc).

    ``runs``: per file (its name in the scene's curve segments), the byte offsets where each
    run of one xorb starts (the first is 0; a run ends where the next starts) and its colour.
    """

    colormap = "xorbs"

    def __init__(self, runs: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]) -> None:
        self.runs = runs

    def palette(self) -> bytes:
        return color.palette_bytes(xorb_palette())

    def setup(self, w: TileWorker) -> None:
        super().setup(w)
        w.painter_state = {name: (np.array(starts, np.int64),
                                  (1 + np.array(colours, np.int64) * SHADES).astype(np.uint8))
                           for name, starts, colours in self.runs}

    def run(self, w: TileWorker, seg: Any, lo: int, hi: int, dst: np.ndarray) -> None:
        raw = w.reader.raw_bytes_of(w.file_bytes[seg.name])
        b0, b1 = lo - seg.h_start, hi - seg.h_start
        chunk = raw[b0:b1]
        starts, bases = w.painter_state[seg.name]
        i = int(np.searchsorted(starts, b0, side="right")) - 1
        at = b0
        while at < b1:
            end = int(starts[i + 1]) if i + 1 < len(starts) else b1
            stop = min(end, b1)
            dst[at - b0:stop - b0] = _SHADE_OF_BYTE[chunk[at - b0:stop - b0]] + bases[i]
            at, i = stop, i + 1
        w.put_run(lo, hi, chunk)


class XorbScene(NamedTuple):
    scene: Scene
    document: dict[str, Any]
    """The manifest's ``xet`` object."""


def _merged(f: XetFile) -> list[tuple[int, int, str]]:
    """The file's runs with neighbours of one xorb joined (consecutive terms of one xorb)."""
    out: list[tuple[int, int, str]] = []
    for r in f.runs:
        if out and out[-1][2] == r.xorb and out[-1][1] == r.start:
            out[-1] = (out[-1][0], r.end, r.xorb)
        else:
            out.append((r.start, r.end, r.xorb))
    return out


def xet_document(files: Sequence[XetFile]) -> dict[str, Any]:
    """The manifest's ``xet``: the files and their xorbs in order of first appearance, each
    with its colour, its byte ranges ``[file index, start, end)`` and its share of the bytes.

    >>> from weightvis.hub.xet import XetFile, XorbRun
    >>> a, b = "a" * 64, "b" * 64
    >>> f = XetFile("m.safetensors", "hf://o/m@" + "0" * 40 + "/m.safetensors", "c" * 64, 30,
    ...             (XorbRun(0, 10, b), XorbRun(10, 20, a), XorbRun(20, 30, b)))
    >>> [(x["colour"], x["ranges"], x["share"]) for x in xet_document([f])["xorbs"]]
    [(0, [[0, 0, 10], [0, 20, 30]], 0.6666666666666666), (1, [[0, 10, 20]], 0.3333333333333333)]
    """
    order: dict[str, dict[str, Any]] = {}
    for i, f in enumerate(files):
        for start, end, xorb in _merged(f):
            entry = order.get(xorb)
            if entry is None:
                entry = order[xorb] = {"hash": xorb, "colour": len(order) % len(TABLEAU_20),
                                       "bytes": 0, "share": 0.0, "ranges": []}
            entry["bytes"] += end - start
            entry["ranges"].append([i, start, end])
    total = sum(f.size for f in files) or 1
    for entry in order.values():
        entry["share"] = entry["bytes"] / total
    return {"scene": SCENE_KEY, "rule": RULE,
            "files": [{"file": Path(f.path).name, "path": f.path, "uri": f.uri,
                       "xet_hash": f.xet_hash, "size": f.size} for f in files],
            "xorbs": list(order.values())}


def plan_xorbs(reader: MultiReader, spec: Any, files: Sequence[XetFile], values: str
               ) -> XorbScene:
    """The xorb scene of the checkpoint ``reader`` (opened by ``spec`` in the workers), whose
    files are the Hub files ``files`` (matched by their pinned locations); ``values``: the
    render's sidecar option (a byte is one byte: its sidecar holds the bytes unless it is
    ``index`` or ``none``)."""
    from .scenes import Scene

    by_uri = {f.uri: f for f in files}
    origin = {p: o for r, o in zip(reader.readers, reader.origins, strict=True) for p in r.files}
    doc = xet_document(files)
    colour = {x["hash"]: x["colour"] for x in doc["xorbs"]}
    runs: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    for path in reader.files:
        f = by_uri.get(origin.get(path) or "")
        if f is None or f.size != path.stat().st_size:
            raise InputError(f"{path}: no Xet reconstruction matches this file (pinned at "
                             f"{origin.get(path)})")
        merged = _merged(f)
        runs.append((path.name, tuple(s for s, _, _ in merged),
                     tuple(colour[x] for _, _, x in merged)))
    lay = hilbert_layout((), unit="byte", file_sizes=[(p, p.stat().st_size) for p in reader.files])
    scene = Scene(SCENE_KEY, "Xet xorbs", lay, Geometry(lay), XorbsPainter(tuple(runs)), spec, {},
                  sidecars=values if values in ("index", "none") else "values")
    return XorbScene(scene, doc)
