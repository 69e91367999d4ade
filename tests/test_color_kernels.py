"""Kernels against their numpy references; palette properties the manifest promises."""

from __future__ import annotations

import numpy as np
import pytest

from weightvis import color, kernels
from weightvis.kernels import delta as kernels_delta

RNG = np.random.default_rng(11)


def test_colorize_matches_reference_rule_including_bin_edges() -> None:
    s = 0.37
    q = np.arange(126, dtype=np.float64)
    edges = s * ((q + 0.5) / 125) ** 2  # exact bin boundaries of the sqrt transfer
    v = np.concatenate([[0.0, -0.0, s, -s, 10 * s, 1e-30, np.nan, np.inf, -np.inf], edges,
                        np.nextafter(edges, 0), np.nextafter(edges, 1), -edges,
                        RNG.standard_normal(5000) * s]).astype(np.float32)
    v = v[: (v.size // 7) * 7].reshape(7, -1)
    out = np.zeros(v.shape, np.uint8)
    acc = kernels.new_acc()
    kernels.colorize(v, s, out, acc)
    np.testing.assert_array_equal(out, color.value_index(v, s))
    # strided destination (a tile sub-rectangle) gives the same
    big = np.zeros((9, v.shape[1] + 5), np.uint8)
    kernels.colorize(v, s, big[1:8, 2:2 + v.shape[1]], kernels.new_acc())
    np.testing.assert_array_equal(big[1:8, 2:2 + v.shape[1]], out)
    fin = v[np.isfinite(v)].astype(np.float64)
    n, tot, tot2, lo, hi, zeros, nans, infs = acc
    assert n == fin.size and lo == fin.min() and hi == fin.max()
    assert tot == pytest.approx(fin.sum()) and tot2 == pytest.approx((fin * fin).sum())
    assert zeros == np.count_nonzero(fin == 0) and nans == 1 and infs == 2


def test_colorize_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        kernels.colorize(np.zeros((2, 2), np.float64), 1.0, np.zeros((2, 2), np.uint8),
                         kernels.new_acc())
    with pytest.raises(ValueError, match="scale"):
        kernels.colorize(np.zeros((2, 2), np.float32), 0.0, np.zeros((2, 2), np.uint8),
                         kernels.new_acc())


def test_signed_rms_reduction() -> None:
    u = color.level_values()
    kids = RNG.integers(4, 255, (64, 64)).astype(np.uint8)
    kids[0, 0] = 0
    kids[0:2, 2:4] = 0          # all padding
    kids[2, 2] = 1              # NaN wins
    out = np.zeros((32, 32), np.uint8)
    kernels.reduce_tile(kids, kernels.REDUCE_SIGNED_RMS, out)
    assert out[0, 1] == color.PAD  # all four children are padding
    assert out[1, 1] == color.NAN  # a non-finite child stays visible
    for i in range(32):
        for j in range(32):
            block = [int(k) for k in kids[2 * i:2 * i + 2, 2 * j:2 * j + 2].reshape(-1)]
            real = [k for k in block if k != 0]
            if not real:
                want = 0
            elif any(k in (1, 2, 3) for k in real):
                want = next(k for k in real if k in (1, 2, 3))
            else:
                lv = np.array([u[k] for k in real])
                val = np.sign(lv.sum()) * np.sqrt(np.mean(lv ** 2))
                want = int(color.value_index(np.array([val]), 1.0)[0]) if val != 0 else \
                    129 + int(np.floor(125 * np.sqrt(np.sqrt(np.mean(lv ** 2))) + 0.5))
            assert out[i, j] == want, (i, j, block)


def parent_rule_numpy(kids: np.ndarray) -> np.ndarray:
    """PARENT_RULE in float64 numpy, children summed TL, TR, BL, BR as the rule is written
    (a vectorised copy of the per-pixel reference above, for millions of pixels)."""
    u = color.level_values()
    k = np.stack([kids[0::2, 0::2], kids[0::2, 1::2], kids[1::2, 0::2], kids[1::2, 1::2]])
    value = k >= 4
    lv = np.where(value, u[k], 0.0)
    cnt = value.sum(axis=0)
    tot = ((lv[0] + lv[1]) + lv[2]) + lv[3]
    tot2 = ((lv[0] ** 2 + lv[1] ** 2) + lv[2] ** 2) + lv[3] ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.minimum(np.sqrt(tot2 / cnt), 1.0)
        q = np.floor(125 * np.sqrt(a) + 0.5)
    out = np.where(tot < 0, 129 - q, 129 + q)
    out = np.where(cnt == 0, 0, out)
    special = np.zeros(cnt.shape, np.int64)
    for c in k[::-1]:  # the first non-finite child in TL, TR, BL, BR order wins
        special = np.where((c >= 1) & (c <= 3), c, special)
    return np.where(special > 0, special, out).astype(np.uint8)


def test_fast_reduction_matches_the_rule_on_hard_cases() -> None:
    """The float32 fast path must defer to the float64 rule wherever it could differ: signs
    that cancel exactly (+q, -q pairs), levels next to a rounding boundary, partial padding,
    non-finite children. Checked on 4 M random children drawn from such cases."""
    n = 1024
    q = RNG.integers(0, 126, (4, n, n))
    sign = np.where(RNG.random((4, n, n)) < 0.5, -1, 1)
    cancel = RNG.random((n, n)) < 0.3  # second pair mirrors the first: sum u == 0 exactly
    q[2:, cancel] = q[:2, cancel]
    sign[2:, cancel] = -sign[:2, cancel]
    idx = (129 + sign * q).astype(np.uint8)
    special = RNG.random((4, n, n))
    idx[special < 0.01] = 0                      # partial padding
    idx[(special >= 0.01) & (special < 0.012)] = RNG.integers(1, 4)  # non-finite
    kids = np.empty((2 * n, 2 * n), np.uint8)
    kids[0::2, 0::2], kids[0::2, 1::2], kids[1::2, 0::2], kids[1::2, 1::2] = idx
    want = parent_rule_numpy(kids)
    out = np.zeros((n, n), np.uint8)
    kernels.reduce_tile(kids, kernels.REDUCE_SIGNED_RMS, out)
    np.testing.assert_array_equal(out, want)
    # one child into its quadrant of a parent: the same pixels, nothing outside written
    half = np.full((n, n), 77, np.uint8)
    kernels.reduce_tile(kids[:n, n:], kernels.REDUCE_SIGNED_RMS, half, (0, n // 2))
    np.testing.assert_array_equal(half[:n // 2, n // 2:], want[:n // 2, n // 2:])
    assert (half[:, :n // 2] == 77).all() and (half[n // 2:] == 77).all()
    with pytest.raises(ValueError, match="bad shapes"):
        kernels.reduce_tile(kids[:n, :n], kernels.REDUCE_SIGNED_RMS, half, (n // 2 + 1, 0))


def test_noise_neither_fades_nor_saturates_when_zoomed_out() -> None:
    v = RNG.standard_normal((1024, 1024)).astype(np.float32)
    idx = np.zeros(v.shape, np.uint8)
    kernels.colorize(v, float(np.quantile(np.abs(v), 0.999)), idx, kernels.new_acc())
    levels = [np.abs(idx.astype(int) - 129).mean()]
    for _ in range(4):
        h = idx.shape[0] // 2
        out = np.zeros((h, h), np.uint8)
        kernels.reduce_tile(idx, kernels.REDUCE_SIGNED_RMS, out)
        idx = out
        levels.append(np.abs(idx.astype(int) - 129).mean())
        assert (idx > 129).mean() == pytest.approx(0.5, abs=0.05)  # both hues stay
    # brightness stays within a band (a plain mean would drop by ~2x per level)
    assert min(levels) > 0.8 * levels[0] and max(levels) < 1.5 * levels[0]


def test_palette_contract() -> None:
    pal = color.value_palette().astype(int)
    assert tuple(pal[color.ZERO]) == (0, 0, 0)
    lum = pal[color.ZERO:color.ZERO + 126].sum(axis=1)
    assert (np.diff(lum) >= 0).all()  # brightness grows with |v|
    assert (np.diff(pal[color.ZERO - 125:color.ZERO + 1][::-1].sum(axis=1)) >= 0).all()
    pos, neg = pal[color.ZERO + 60], pal[color.ZERO - 60]
    assert pos[0] > pos[2] and neg[2] > neg[0]  # hue gives the sign
    values = pal[4:255]
    for special in (color.PAD, color.NAN, color.POSINF, color.NEGINF):
        d = np.abs(values - pal[special]).sum(axis=1)
        assert d.min() > 40, special  # no value colour is near padding / NaN / Inf


def test_hilbert_roundtrip_and_tile_contiguity() -> None:
    n = 2048
    for h in RNG.integers(0, n * n, 500):
        x, y = kernels.hilbert_d2xy(n, int(h))
        assert kernels.hilbert_xy2d(n, x, y) == h
    off = np.zeros((512, 512), np.int64)
    for tx, ty in ((0, 0), (3, 1), (2, 3)):
        base = kernels.hilbert_tile_offsets(n, tx * 512, ty * 512, off)
        assert base % (512 * 512) == 0
        assert np.array_equal(np.sort(off.reshape(-1)), np.arange(512 * 512))


@pytest.mark.parametrize("dtype", ["BF16", "F16"])
def test_percentile_from_code_histogram_equals_sorting(dtype: str) -> None:
    from weightvis.formats.dtypes import code_values
    from weightvis.values import numpy_code_counts, robust_scale, robust_scale_codes

    rng = np.random.default_rng(21)
    vals = code_values(dtype)
    cases = [rng.integers(0, 1 << 16, 50_001).astype(np.uint16),        # every kind of code
             np.zeros(7, np.uint16), np.array([0x7FC0, 0x8000, 1], np.uint16)]
    normal = rng.standard_normal(100_000).astype(np.float32)
    cases.append((normal.view(np.uint32) >> 16).astype(np.uint16) if dtype == "BF16"
                 else normal.astype(np.float16).view(np.uint16))
    for codes in cases:
        assert robust_scale_codes(codes, dtype) == robust_scale(vals[codes])
        # the scale helper's numpy-only histogram gives the same counts and the same scale
        for magnitude in (False, True):
            assert np.array_equal(numpy_code_counts(codes, magnitude),
                                  kernels.code_counts(codes, magnitude))
        assert robust_scale_codes(codes, dtype, numpy_code_counts) == robust_scale(vals[codes])


def delta_parent_reference(kids: list[int], c_x: int, c_y: int) -> int:
    """color.DELTA_PARENT_RULE from its text (hatch stripes through the kernels' _stripe)."""
    real = [k for k in kids if k != color.PAD]
    if not real:
        return color.PAD
    if color.D_NONFINITE in real:
        return color.D_NONFINITE
    values = [k for k in real if k >= 6]
    if values:
        u = [np.sign(k - 129) * (abs(k - 129) / 123) ** 2 for k in values]
        q = int(np.floor(123 * np.sqrt(np.sqrt(np.mean(np.square(u)))) + 0.5))
        if any(k != 129 for k in values):
            q = max(q, 1)
        q = min(q, 123)
        return 129 - q if sum(u) < 0 else 129 + q
    hatch = [k for k in real if k in (2, 3, 4)]
    return int(kernels_delta._stripe(hatch[0], c_x, c_y)) if hatch else color.D_GAP


def test_delta_reduction_matches_the_rule() -> None:
    n = 96
    kids = RNG.integers(1, 253, (2 * n, 2 * n)).astype(np.uint8)
    pick = RNG.random(kids.shape)
    kids[pick < 0.6] = color.ZERO                   # mostly unchanged, as in most diffs
    kids[(pick >= 0.6) & (pick < 0.75)] = color.PAD
    kids[: 2 * n // 3, : 2 * n // 3] = color.ZERO   # whole unchanged and padding regions
    kids[-2 * n // 3:, -2 * n // 3:] = color.PAD
    out = np.full((n, n), 77, np.uint8)
    p_x0, p_y0 = 512 * 5, 512 * 3
    kernels.reduce_delta(kids, p_x0, p_y0, out)
    want = np.array([[delta_parent_reference(
        [int(k) for k in kids[2 * i:2 * i + 2, 2 * j:2 * j + 2].reshape(-1)], p_x0 + j, p_y0 + i)
        for j in range(n)] for i in range(n)])
    np.testing.assert_array_equal(out, want)
    quad = np.full((2 * n, 2 * n), 77, np.uint8)   # one child into the bottom-right quadrant
    kernels.reduce_delta(kids, p_x0 + n, p_y0 + n, quad, (n, n))
    np.testing.assert_array_equal(quad[n:, n:], want)
    assert (quad[:n] == 77).all() and (quad[n:, :n] == 77).all()


@pytest.mark.parametrize("dtype", ["BF16", "F16"])
def test_small_blocks_colour_and_count_like_the_lut_path(dtype: str) -> None:
    """colorize_codes_small (no LUT, sorted codes) gives the LUT path's indices and the very
    same accumulator, bit for bit, on random blocks with NaN, Inf, zeros and repeats."""
    from weightvis import kernels
    from weightvis.formats.dtypes import code_values

    values = code_values(dtype)
    rng = np.random.default_rng(3)
    specials = np.array([0x0000, 0x8000, 0x7F80 if dtype == "BF16" else 0x7C00,
                         0xFF80 if dtype == "BF16" else 0xFC00, 0x7FC0 if dtype == "BF16"
                         else 0x7E00], np.uint16)
    for trial in range(60):
        h, w = rng.integers(1, 40, 2)
        pool = rng.integers(0, 1 << 16, rng.integers(1, 50), dtype=np.uint16)
        codes = rng.choice(np.concatenate([pool, specials]), (h, w)).astype(np.uint16)
        if trial % 3 == 0:
            codes = np.ascontiguousarray(codes.T)[:, ::2]  # a strided view
        s = float(rng.choice([1e-3, 0.05, 1.0, 300.0]))
        lut = kernels.code_lut(values, s)
        out_a, out_b = np.empty(codes.shape, np.uint8), np.empty(codes.shape, np.uint8)
        acc_a, acc_b = kernels.new_acc(), kernels.new_acc()
        hist = np.zeros(1 << 16, np.int32)
        kernels.colorize_codes(codes, lut, values, out_a, acc_a, hist)
        kernels.colorize_codes_small(codes, values, s, out_b, acc_b)
        assert np.array_equal(out_a, out_b)
        assert acc_a.tobytes() == acc_b.tobytes()
        assert not hist.any()
