"""Parent reduction: four child tiles (or one child into its quadrant) -> a zoomed-out tile, by
one table of rules keyed by a mode constant chosen once per scene.

==================  ========================  ===========================================
mode                scenes                    rule
==================  ========================  ===========================================
REDUCE_SIGNED_RMS   values (element colours)  ``color.PARENT_RULE``: signed RMS of levels
REDUCE_FIRST        bytes (byte classes)      first non-padding child (TL, TR, BL, BR)
REDUCE_DELTA        diffs (delta colours)     ``color.DELTA_PARENT_RULE``
==================  ========================  ===========================================

``reduce_tile(kids, mode, out, at, p_x0, p_y0)`` is the one public entry; ``p_x0, p_y0`` (the
pixel of ``out[at]`` in its zoom level, for the hatch phase) only matter to REDUCE_DELTA.
"""

from __future__ import annotations

from collections.abc import Callable

import numba
import numpy as np

from .constants import (
    D_GAP,
    D_LEVELS,
    D_NONFINITE,
    LEVELS,
    NEGINF,
    PAD,
    REDUCE_DELTA,
    REDUCE_FIRST,
    REDUCE_SIGNED_RMS,
    ZERO,
    level_values,
)
from .delta import _stripe

__all__ = ["reduce_tile", "reduce_delta", "REDUCE_SIGNED_RMS", "REDUCE_FIRST", "REDUCE_DELTA"]

_LEVELS_U = level_values()


@numba.njit(cache=True, nogil=True)
def _rms_pixel(k0, k1, k2, k3, levels):  # type: ignore[no-untyped-def]
    """PARENT_RULE for one pixel from its children TL, TR, BL, BR, in float64 as written."""
    cnt = 0
    tot = 0.0
    tot2 = 0.0
    special = 0
    for k in (k0, k1, k2, k3):
        if k == PAD:
            continue
        if k <= NEGINF:
            if special == 0:
                special = k
            continue
        u = levels[k]
        cnt += 1
        tot += u
        tot2 += u * u
    if special != 0:
        return special
    if cnt == 0:
        return PAD
    a = np.sqrt(tot2 / cnt)
    if a > 1.0:
        a = 1.0
    q = np.int64(np.floor(LEVELS * np.sqrt(a) + 0.5))
    return ZERO - q if tot < 0 else ZERO + q


_F = np.float32


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _rms_row_fast(a, b, o, flag):  # type: ignore[no-untyped-def]
    """One row of parents o[j] from child rows a (top) and b (bottom), for pixels whose four
    children are value indices (or all padding), in float32 so that it vectorises; flag[j] = 1
    where the float32 answer may differ from PARENT_RULE and _rms_pixel must decide.

    With q_k = |k - 129|, PARENT_RULE's level is exactly (S/4)^(1/4) for S = sum q_k^4, and the
    sign is that of T = sum sign_k q_k^2 (u_k = sign_k q_k^2 / 125^2). T is exact in float32
    (|T| <= 4 * 125^2); S/4 is within ~1.5e-7 of the truth, so floor((S/4)^(1/4) + 0.5) is exact
    unless the fraction lands within 1e-4 of a rounding boundary, which is flagged, as are an
    exactly cancelling sign (T == 0, where PARENT_RULE's float64 sum decides), partial padding
    and non-finite children."""
    z = _F(ZERO)
    zero = _F(0.0)
    half = _F(0.5)
    quarter = _F(0.25)
    lo = _F(1e-4)
    hi = _F(1.0 - 1e-4)
    for j in range(o.shape[0]):
        k0 = a[2 * j]
        k1 = a[2 * j + 1]
        k2 = b[2 * j]
        k3 = b[2 * j + 1]
        d0 = _F(k0) - z
        d1 = _F(k1) - z
        d2 = _F(k2) - z
        d3 = _F(k3) - z
        e0 = d0 * d0
        e1 = d1 * d1
        e2 = d2 * d2
        e3 = d3 * d3
        t = (d0 * abs(d0) + d1 * abs(d1)) + (d2 * abs(d2) + d3 * abs(d3))
        s = (e0 * e0 + e1 * e1) + (e2 * e2 + e3 * e3)
        x = np.sqrt(np.sqrt(s * quarter)) + half
        qf = np.floor(x)
        frac = x - qf
        r = z + qf if t >= zero else z - qf
        mn = min(min(k0, k1), min(k2, k3))
        mx = max(max(k0, k1), max(k2, k3))
        o[j] = np.uint8(np.int32(r)) if mx > 0 else np.uint8(PAD)
        flag[j] = np.uint8(((mn <= NEGINF) & (mx > 0)) | ((t == zero) & (qf > zero))
                           | (frac < lo) | (frac > hi))


@numba.njit(cache=True, nogil=True)
def _flagged(flag, w, cols):  # type: ignore[no-untyped-def]
    """The j < w with flag[j] != 0 into cols (in order), eight flags per test; returns how many.
    flag is uint8 with a length that is a multiple of 8, zero beyond w."""
    words = flag.view(np.uint64)
    n = 0
    for wi in range(words.shape[0]):
        if words[wi] != 0:
            for j in range(8 * wi, min(8 * wi + 8, w)):
                if flag[j]:
                    cols[n] = j
                    n += 1
    return n


@numba.njit(cache=True, nogil=True)
def _reduce_signed_rms(kids, levels, out, oy, ox):  # type: ignore[no-untyped-def]
    """kids uint8[2h, 2w] -> out[oy:oy+h, ox:ox+w] (uint8) by PARENT_RULE (signed RMS of
    levels): the float32 row kernel, then the float64 rule for the pixels it flags (exact:
    checked against _rms_pixel on all 255^4 combinations of four children)."""
    h, w = kids.shape[0] // 2, kids.shape[1] // 2
    flag = np.zeros((w + 7) // 8 * 8, np.uint8)
    cols = np.empty(w, np.int64)
    for i in range(h):
        a = kids[2 * i]
        b = kids[2 * i + 1]
        o = out[oy + i, ox:ox + w]
        _rms_row_fast(a, b, o, flag)
        for t in range(_flagged(flag, w, cols)):
            j = cols[t]
            o[j] = _rms_pixel(a[2 * j], a[2 * j + 1], b[2 * j], b[2 * j + 1], levels)


@numba.njit(cache=True, nogil=True)
def _reduce_first(kids, out, oy, ox):  # type: ignore[no-untyped-def]
    """kids uint8[2h, 2w] -> out[oy:oy+h, ox:ox+w]: the first non-padding child (TL, TR, BL,
    BR)."""
    h, w = kids.shape[0] // 2, kids.shape[1] // 2
    for i in range(h):
        for j in range(w):
            r = PAD
            for di in range(2):
                for dj in range(2):
                    k = kids[2 * i + di, 2 * j + dj]
                    if r == PAD and k != PAD:
                        r = k
            out[oy + i, ox + j] = r


@numba.njit(cache=True, nogil=True)
def _delta_pixel(k0, k1, k2, k3, c_x, c_y):  # type: ignore[no-untyped-def]
    """DELTA_PARENT_RULE for one pixel (pixel (c_x, c_y) of its zoom level) from its children
    TL, TR, BL, BR."""
    lv = float(D_LEVELS)
    cnt = 0
    tot = 0.0
    tot2 = 0.0
    special = 0
    hatch = 0
    changed = False
    for k in (k0, k1, k2, k3):
        if k == PAD:
            continue
        if k == D_NONFINITE:
            special = 1
        elif k <= D_GAP:
            if hatch == 0 and k != D_GAP:
                hatch = k
            elif hatch == 0:
                hatch = -1
        else:
            q = abs(np.int64(k) - ZERO)
            u = (q / lv) ** 2
            if k < ZERO:
                u = -u
            if q > 0:
                changed = True
            cnt += 1
            tot += u
            tot2 += u * u
    if special:
        return D_NONFINITE
    if cnt > 0:
        q = np.int64(np.floor(lv * np.sqrt(np.sqrt(tot2 / cnt)) + 0.5))
        if changed and q < 1:
            q = 1
        if q > D_LEVELS:
            q = D_LEVELS
        return ZERO - q if tot < 0 else ZERO + q
    if hatch > 0:
        return _stripe(hatch, c_x, c_y)
    if hatch < 0:
        return D_GAP
    return PAD


@numba.njit(cache=True, nogil=True)
def _delta_row_fast(a, b, o, flag):  # type: ignore[no-untyped-def]
    """Parents o[j] whose four children are all unchanged (-> unchanged) or all padding
    (-> padding), the bulk of most diffs; flag[j] = 1 for every other pixel."""
    for j in range(o.shape[0]):
        k0 = a[2 * j]
        k1 = a[2 * j + 1]
        k2 = b[2 * j]
        k3 = b[2 * j + 1]
        same = (k0 == ZERO) & (k1 == ZERO) & (k2 == ZERO) & (k3 == ZERO)
        pad = (k0 | k1 | k2 | k3) == PAD
        o[j] = np.uint8(ZERO) if same else np.uint8(PAD)
        flag[j] = np.uint8(not (same | pad))


@numba.njit(cache=True, nogil=True)
def _reduce_delta(kids, p_x0, p_y0, out, oy, ox):  # type: ignore[no-untyped-def]
    """kids uint8[2h, 2w] delta indices -> out[oy:oy+h, ox:ox+w] by color.DELTA_PARENT_RULE;
    out[oy, ox] is pixel (p_x0, p_y0) of its zoom level."""
    h, w = kids.shape[0] // 2, kids.shape[1] // 2
    flag = np.zeros((w + 7) // 8 * 8, np.uint8)
    cols = np.empty(w, np.int64)
    for i in range(h):
        a = kids[2 * i]
        b = kids[2 * i + 1]
        o = out[oy + i, ox:ox + w]
        _delta_row_fast(a, b, o, flag)
        for t in range(_flagged(flag, w, cols)):
            j = cols[t]
            o[j] = _delta_pixel(a[2 * j], a[2 * j + 1], b[2 * j], b[2 * j + 1],
                                p_x0 + j, p_y0 + i)


# -- the table of rules ---------------------------------------------------------------------------
# Each entry: (kids, out, oy, ox, p_x0, p_y0) -> None, kids C-contiguous and shapes checked.

_Rule = Callable[[np.ndarray, np.ndarray, int, int, int, int], None]


def _rule_signed_rms(kids: np.ndarray, out: np.ndarray, oy: int, ox: int, p_x0: int,
                     p_y0: int) -> None:
    _reduce_signed_rms(kids, _LEVELS_U, out, oy, ox)


def _rule_first(kids: np.ndarray, out: np.ndarray, oy: int, ox: int, p_x0: int,
                p_y0: int) -> None:
    _reduce_first(kids, out, oy, ox)


def _rule_delta(kids: np.ndarray, out: np.ndarray, oy: int, ox: int, p_x0: int,
                p_y0: int) -> None:
    _reduce_delta(kids, p_x0, p_y0, out, oy, ox)


_RULES: dict[int, _Rule] = {
    REDUCE_SIGNED_RMS: _rule_signed_rms,
    REDUCE_FIRST: _rule_first,
    REDUCE_DELTA: _rule_delta,
}


def reduce_tile(kids: np.ndarray, mode: int, out: np.ndarray, at: tuple[int, int] = (0, 0),
                p_x0: int = 0, p_y0: int = 0) -> None:
    """Reduce the uint8 children ``kids`` (2h, 2w) to the parent pixels
    ``out[p_y:p_y + h, p_x:p_x + w]`` for ``at = (p_y, p_x)`` by the rule of ``mode`` (a
    ``REDUCE_*`` constant): a (2n, 2n) mosaic of four children into a whole (n, n) parent, or
    one child into its quadrant of the parent. ``out[at]`` is pixel ``(p_x0, p_y0)`` of its
    zoom level (REDUCE_DELTA re-hatches there; the other rules ignore it)."""
    rule = _RULES.get(mode)
    if rule is None:
        raise ValueError(f"reduce_tile: unknown mode {mode!r} (one of REDUCE_SIGNED_RMS, "
                         f"REDUCE_FIRST, REDUCE_DELTA)")
    p_y, p_x = at
    h, w = kids.shape[0] // 2, kids.shape[1] // 2
    if kids.dtype != np.uint8 or out.dtype != np.uint8 or kids.ndim != 2 or out.ndim != 2 \
            or kids.shape != (2 * h, 2 * w) or not (0 <= p_y and p_y + h <= out.shape[0]
                                                 and 0 <= p_x and p_x + w <= out.shape[1]):
        raise ValueError(f"reduce_tile: bad shapes {kids.shape} -> {out.shape} at {at}")
    rule(np.ascontiguousarray(kids), out, p_y, p_x, int(p_x0), int(p_y0))


def reduce_delta(kids: np.ndarray, p_x0: int, p_y0: int, out: np.ndarray,
                 at: tuple[int, int] = (0, 0)) -> None:
    """``reduce_tile(kids, REDUCE_DELTA, out, at, p_x0, p_y0)`` (the older spelling)."""
    reduce_tile(kids, REDUCE_DELTA, out, at, p_x0, p_y0)
