"""Palettes as 256-entry LUTs, the exact value -> palette-index rule, and the manifest's colormap.

The value palette is dark-centred and diverging: palette index 129 is black (zero), lightness in
OKLab grows linearly with the level q = 0..125 on either side, hue gives the sign (warm = positive,
cool = negative). OKLab: Bjoern Ottosson, "A perceptual color space for image processing" (2020).
The transfer from value to level is ``q = floor(125*sqrt(min(|v|/s, 1)) + 0.5)``; see RULE.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import numpy as np

from .kernels.constants import (
    D_BASE_ONLY,
    D_GAP,
    D_LEVELS,
    D_NONFINITE,
    D_ONLY_A,
    D_ONLY_B,
    LEVELS,
    NAN,
    NEGINF,
    PAD,
    POSINF,
    ZERO,
    level_values,
)

__all__ = [
    "PAD", "NAN", "POSINF", "NEGINF", "ZERO", "LEVELS",
    "VALUE_RULE", "PARENT_RULE", "value_palette", "value_index", "level_values",
    "values_colormap", "byte_colormap", "BYTE_LUT", "BYTE_CLASSES", "ByteClass", "palette_bytes",
    "delta_palette",
    "delta_colormap", "D_NONFINITE", "D_ONLY_A", "D_ONLY_B", "D_BASE_ONLY", "D_GAP", "D_LEVELS",
]

# Palette indices (PAD, NAN, POSINF, NEGINF, ZERO, LEVELS, D_*) and level_values() are defined
# once, in weightvis.kernels.constants (numpy only), with a table of what each index means.

VALUE_RULE = (
    "For a finite value v of a tensor with scale s (float64): a = min(|v|/s, 1); "
    "q = floor(125*sqrt(a) + 0.5); index = 129+q if v > 0, 129-q if v < 0, 129 if v == 0. "
    "NaN -> 1, +Inf -> 2, -Inf -> 3, padding (no element) -> 0. Index 255 is never used."
)
PARENT_RULE = (
    "A zoomed-out pixel is made from its 2x2 children: padding children are ignored (all padding "
    "-> padding); if any child is non-finite (index 1-3) the parent takes the first such child in "
    "the order top-left, top-right, bottom-left, bottom-right; otherwise each child index i gives "
    "the level u = sign(i-129)*((|i-129|)/125)^2 and the parent is the index of "
    "sign(sum u)*sqrt(mean(u^2)) by the value rule with s = 1 (signed RMS)."
)

_POS_HUE = math.radians(40.0)   # warm orange-red
_NEG_HUE = math.radians(245.0)  # blue
_L_MAX = 0.92
_C_PEAK = 0.19


def _oklab_to_srgb(L: float, a: float, b: float) -> tuple[float, float, float]:
    l_ = L + 0.3963377774 * a + 0.2158037573 * b
    m_ = L - 0.1055613458 * a - 0.0638541728 * b
    s_ = L - 0.0894841775 * a - 1.2914855480 * b
    l, m, s = l_ ** 3, m_ ** 3, s_ ** 3
    rgb_lin = (
        4.0767416621 * l - 3.3077115913 * m + 0.2309699292 * s,
        -1.2684380046 * l + 2.6097574011 * m - 0.3413193965 * s,
        -0.0041960863 * l - 0.7034186147 * m + 1.7076147010 * s,
    )
    return rgb_lin  # linear, may be out of gamut


def _encode(c: float) -> float:
    c = min(max(c, 0.0), 1.0)
    return 12.92 * c if c <= 0.0031308 else 1.055 * c ** (1 / 2.4) - 0.055


def _in_gamut(L: float, C: float, h: float) -> bool:
    r, g, b = _oklab_to_srgb(L, C * math.cos(h), C * math.sin(h))
    return all(-1e-6 <= v <= 1 + 1e-6 for v in (r, g, b))


def _max_chroma(L: float, h: float) -> float:
    lo, hi = 0.0, 0.4
    for _ in range(40):
        mid = (lo + hi) / 2
        if _in_gamut(L, mid, h):
            lo = mid
        else:
            hi = mid
    return lo


def _lch_to_rgb8(L: float, C: float, h: float) -> tuple[int, int, int]:
    r, g, b = _oklab_to_srgb(L, C * math.cos(h), C * math.sin(h))
    return tuple(int(round(_encode(v) * 255)) for v in (r, g, b))  # type: ignore[return-value]


@functools.lru_cache(maxsize=1)
def _value_palette() -> np.ndarray:
    pal = np.zeros((256, 3), np.uint8)
    pal[PAD] = (84, 84, 92)        # slate grey: no value has a neutral mid-grey colour
    pal[NAN] = (255, 0, 255)       # magenta
    pal[POSINF] = (255, 255, 0)    # yellow
    pal[NEGINF] = (0, 255, 255)    # cyan
    for q in range(LEVELS + 1):
        L = _L_MAX * q / LEVELS
        for sign, h in ((1, _POS_HUE), (-1, _NEG_HUE)):
            # chroma rises with lightness, kept inside the sRGB gamut
            C = min(_C_PEAK * (q / LEVELS) ** 0.7, 0.92 * _max_chroma(L, h))
            pal[ZERO + sign * q] = _lch_to_rgb8(L, C, h)
    pal[255] = pal[PAD]
    pal.setflags(write=False)
    return pal


def value_palette() -> np.ndarray:
    """The (256, 3) uint8 value palette (a fresh, writable copy)."""
    pal: np.ndarray = _value_palette().copy()
    return pal


def palette_bytes(pal: np.ndarray) -> bytes:
    """The palette as the flat RGB byte string Pillow's ``putpalette`` takes."""
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    return pal.tobytes()


def value_index(v: np.ndarray, s: float) -> np.ndarray:
    """Reference (numpy, float64) implementation of VALUE_RULE; the kernels must agree with it."""
    with np.errstate(invalid="ignore"):  # signalling NaN codes are quieted by the cast
        v64 = np.asarray(v, dtype=np.float64)
    out = np.full(v64.shape, ZERO, np.uint8)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.minimum(np.abs(v64) / s, 1.0)
        q = np.floor(LEVELS * np.sqrt(a) + 0.5)
    fin = np.isfinite(v64)
    pos = fin & (v64 > 0)
    neg = fin & (v64 < 0)
    out[pos] = (ZERO + q[pos]).astype(np.uint8)
    out[neg] = (ZERO - q[neg]).astype(np.uint8)
    out[np.isnan(v64)] = NAN
    out[np.isposinf(v64)] = POSINF
    out[np.isneginf(v64)] = NEGINF
    return out


def values_colormap() -> dict[str, Any]:
    return {
        "kind": "values",
        "palette": value_palette().tolist(),
        "padding_index": PAD, "nan_index": NAN, "posinf_index": POSINF, "neginf_index": NEGINF,
        "zero_index": ZERO, "levels": LEVELS, "transfer": "sqrt",
        "rule": VALUE_RULE, "parent_rule": PARENT_RULE,
    }


# -- raw bytes (--hilbert-unit byte) ----------------------------------------------------------
# Byte classes after binvis (Aldo Cortesi, "Visualizing binaries with space-filling curves"):
# 0x00 black, 0xFF white, printable ASCII blue, other control/whitespace green, high bytes red;
# brightness within a class grows with the byte value.

class ByteClass(NamedTuple):
    """One byte class: its name, its bytes, the colours of its darkest and brightest shade and
    how many shades it has (palette entries, in byte order; bytes share a shade evenly).

    >>> BYTE_CLASSES[0]
    ByteClass(label='0x00', byte_values=(0,), darkest=(0, 0, 0), brightest=(0, 0, 0), shades=1)
    """

    label: str
    byte_values: tuple[int, ...]
    darkest: tuple[int, int, int]
    brightest: tuple[int, int, int]
    shades: int


BYTE_CLASSES: tuple[ByteClass, ...] = (
    ByteClass("0x00", (0x00,), (0, 0, 0), (0, 0, 0), 1),
    ByteClass("0xFF", (0xFF,), (255, 255, 255), (255, 255, 255), 1),
    ByteClass("printable ASCII", tuple(range(0x20, 0x7F)), (30, 70, 150), (70, 150, 255), 95),
    ByteClass("other control", tuple(range(0x01, 0x20)) + (0x7F,), (20, 110, 40), (60, 230, 80),
              32),
    ByteClass("0x80\u20130xFE", tuple(range(0x80, 0xFF)), (110, 25, 25), (255, 75, 65), 64),
)
"""The byte classes, in palette order (index 0 is padding, then each class's shades)."""


def _byte_tables() -> tuple[np.ndarray, np.ndarray]:
    """(byte -> palette index LUT, palette). Index 0 is padding."""
    lut = np.zeros(256, np.uint8)
    pal = np.tile(value_palette()[PAD], (256, 1))
    nxt = 1
    for cls in BYTE_CLASSES:
        for j in range(cls.shades):
            t = j / max(cls.shades - 1, 1)
            pal[nxt + j] = [int(a + (b - a) * t) for a, b in zip(cls.darkest, cls.brightest,
                                                                  strict=True)]
        for i, b in enumerate(cls.byte_values):
            lut[b] = nxt + i * cls.shades // len(cls.byte_values)
        nxt += cls.shades
    return lut, pal


def _runs(byte_values: tuple[int, ...]) -> list[list[int]]:
    """Byte values as inclusive [first, last] runs: (1, 2, 3, 127) -> [[1, 3], [127, 127]]."""
    runs: list[list[int]] = []
    for b in sorted(byte_values):
        if runs and runs[-1][1] == b - 1:
            runs[-1][1] = b
        else:
            runs.append([b, b])
    return runs


def _byte_class_entries() -> list[dict[str, Any]]:
    """colormaps.bytes "classes": each class's label, byte runs and palette index range."""
    entries, nxt = [], 1
    for cls in BYTE_CLASSES:
        entries.append({"label": cls.label, "bytes": _runs(cls.byte_values),
                        "index": [nxt, nxt + cls.shades - 1]})
        nxt += cls.shades
    return entries


BYTE_LUT, _BYTE_PAL = _byte_tables()


def byte_colormap() -> dict[str, Any]:
    return {
        "kind": "bytes",
        "palette": _BYTE_PAL.tolist(),
        "padding_index": PAD,
        "byte_to_index": BYTE_LUT.tolist(),
        "classes": _byte_class_entries(),
        "rule": "index = byte_to_index[byte]; 0x00 black, 0xFF white, printable ASCII blue, "
                "other control bytes green, 0x80-0xFE red (pairs share a shade); padding -> 0. "
                "Zoomed-out pixels take the top-left non-padding child (byte classes do not "
                "average).",
    }


def byte_palette() -> np.ndarray:
    return _BYTE_PAL


# -- deltas (weightvis diff) --------------------------------------------------------------------
ABSLOG_DECADES = (-8.0, 0.0)
"""abs-log metric: |delta| from 1e-8 to 1 spans the levels (raw magnitude, same for all)."""

DELTA_RULES = {
    "rms": ("d = float64(b) - float64(a); s = 0.5 * rms(A) (rms over A's deterministic sample, "
            "see scale); q = floor(123*sqrt(min(|d|/s, 1)) + 0.5), at least 1 when b != a"),
    "abs-log": ("d = float64(b) - float64(a); q = floor(123*(log10|d| + 8)/8 + 0.5) clamped to "
                "1..123 when b != a (|d| = 1e-8 -> 1, |d| >= 1 -> 123); the same for every tensor"),
    "exact": "q = 123 when b != a",
}
DELTA_COMMON = (" Unchanged (b == a, or both NaN) -> 129 (black); grew (d > 0) -> 129+q; shrank "
                "(d < 0) -> 129-q; non-finite d -> 1 (white). Elements only in A -> hatch of 2 "
                "(4 in finetune mode), only in B -> hatch of 3, on 5: index 2/3/4 where "
                "((x + y) // 4) % 2 == 0 (only in B: ((x - y) // 4) % 2 == 0), x, y the pixel in "
                "its zoom level, else 5.")
DELTA_PARENT_RULE = (
    "A zoomed-out pixel from its 2x2 children: padding ignored; a non-finite child wins; else "
    "value children (6..252) give levels u = sign*(q/123)^2 and the parent is "
    "sign(sum u)*sqrt(mean u^2) through q = floor(123*sqrt(.) + 0.5), at least 1 if any child "
    "changed; with no value child, the first hatch class among 2, 3, 4 is re-hatched at the "
    "parent's pixel; all padding -> padding.")


def _delta_palette(pos_hue: float, neg_hue: float) -> np.ndarray:
    pal = np.tile(value_palette()[PAD], (256, 1))
    pal[D_NONFINITE] = (255, 255, 255)
    pal[D_ONLY_A] = (196, 120, 255)
    pal[D_ONLY_B] = (255, 196, 64)
    pal[D_BASE_ONLY] = (150, 150, 150)
    pal[D_GAP] = (36, 36, 42)
    for q in range(D_LEVELS + 1):
        L = 0.30 + 0.62 * q / D_LEVELS if q else 0.0  # level 1 is already visible
        for sign, h in ((1, math.radians(pos_hue)), (-1, math.radians(neg_hue))):
            C = min(0.20, 0.92 * _max_chroma(L, h)) if q else 0.0
            pal[ZERO + sign * q] = _lch_to_rgb8(L, C, h)
    return pal


@functools.lru_cache(maxsize=2)
def _delta_palette_cached(name: str) -> np.ndarray:
    if name == "cvd":  # blue / orange: distinct for deuteranopia and protanopia
        return _delta_palette(250.0, 60.0)
    return _delta_palette(142.0, 27.0)  # green grew, red shrank


def delta_palette(name: str = "default") -> np.ndarray:
    if name not in ("default", "cvd"):
        raise ValueError(f"unknown diff palette {name!r} (default or cvd)")
    pal: np.ndarray = _delta_palette_cached(name).copy()
    return pal


def delta_colormap(metric: str, palette: str) -> dict[str, Any]:
    return {
        "kind": "delta", "metric": metric, "palette_name": palette,
        "palette": delta_palette(palette).tolist(),
        "padding_index": PAD, "nonfinite_index": D_NONFINITE, "only_a_index": D_ONLY_A,
        "only_b_index": D_ONLY_B, "base_only_index": D_BASE_ONLY, "hatch_gap_index": D_GAP,
        "zero_index": ZERO, "levels": D_LEVELS,
        "abs_log_decades": list(ABSLOG_DECADES) if metric == "abs-log" else None,
        "rule": DELTA_RULES[metric] + "." + DELTA_COMMON, "parent_rule": DELTA_PARENT_RULE,
    }
