"""Per-expert statistics (weightvis.moe.stats, kernels.moe) against float64 numpy references:
moments over finite values, dead (all-zero) experts, stable rank against numpy.linalg.svd,
router row norms, the "relative to the layer's median" view."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from weightvis.kernels.moe import M_MAXABS, M_NONFINITE, M_SUMABS, M_SUMSQ, M_ZEROS, moments
from weightvis.moe.stats import (
    StableRankOptions,
    expert_stats,
    relative_to_median,
    router_row_norms,
    top_singular_value,
)


def reference(w: np.ndarray) -> dict[str, float]:
    """The statistics by their definitions (MOE.md §2), float64, over finite values."""
    v = w.astype(np.float64)
    f = v[np.isfinite(v)]
    rms = math.sqrt(float(np.mean(f * f)))
    out = {"rms": rms, "mean_abs": float(np.mean(np.abs(f))),
           "max_over_rms": float(np.abs(f).max()) / rms, "zero_fraction": float(np.mean(v == 0))}
    if np.isfinite(v).all():
        s = np.linalg.svd(v, compute_uv=False)
        out["stable_rank"] = float((s * s).sum() / s[0] ** 2)
    return out


def matrices() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    low = (rng.standard_normal((300, 8)) @ rng.standard_normal((8, 200)) / 4
           + 0.3 * rng.standard_normal((300, 200)))
    decay = ((np.linalg.qr(rng.standard_normal((384, 192)))[0] * np.exp(-np.arange(192) / 20))
             @ np.linalg.qr(rng.standard_normal((192, 192)))[0])
    sparse = rng.standard_normal((128, 96)) * (rng.random((128, 96)) < 0.3)
    outlier = rng.standard_normal((200, 150))
    outlier[:, 7] *= 40
    return {"gaussian": rng.standard_normal((400, 160)), "low-rank+noise": low,
            "decaying spectrum": decay, "70% exact zeros": sparse, "outlier column": outlier,
            "one row": rng.standard_normal((1, 50)), "rank one": np.outer(np.arange(1.0, 9.0),
                                                                           np.arange(1.0, 7.0))}


@pytest.mark.parametrize("name", list(matrices()))
def test_statistics_against_numpy(name: str) -> None:
    w = matrices()[name].astype(np.float32)
    got = expert_stats(w, StableRankOptions(tol=1e-7, max_iter=200))
    ref = reference(w)
    assert not got.dead
    for key in ("rms", "mean_abs", "max_over_rms", "zero_fraction"):
        assert getattr(got, key) == pytest.approx(ref[key], rel=1e-12), key
    # σ₁ from float32 products: tight, but not to the last bit
    assert got.stable_rank == pytest.approx(ref["stable_rank"], rel=2e-5)


@pytest.mark.parametrize("name", ["gaussian", "low-rank+noise", "decaying spectrum"])
def test_default_tolerance_is_a_lower_bound_on_sigma(name: str) -> None:
    """At the default tolerance σ₁ is within 4 % and never above the truth (Ritz values of
    Lanczos are lower bounds), so the stable rank is within 8 % and never below it."""
    w = matrices()[name].astype(np.float32)
    s1 = float(np.linalg.svd(w.astype(np.float64), compute_uv=False)[0])
    sigma, steps = top_singular_value(w)
    assert sigma <= s1 * (1 + 1e-6)
    assert sigma == pytest.approx(s1, rel=4e-2)
    assert 1 <= steps <= StableRankOptions().max_iter
    again = top_singular_value(w)
    assert again == (sigma, steps)  # fixed seed: the same bits


def test_tolerance_trades_steps_for_accuracy() -> None:
    w = matrices()["gaussian"].astype(np.float32)
    s1 = float(np.linalg.svd(w.astype(np.float64), compute_uv=False)[0])
    loose, n_loose = top_singular_value(w, StableRankOptions(tol=1e-1))
    tight, n_tight = top_singular_value(w, StableRankOptions(tol=1e-6, max_iter=200))
    assert n_loose < n_tight
    assert abs(tight / s1 - 1) < abs(loose / s1 - 1) + 1e-12
    assert tight == pytest.approx(s1, rel=1e-5)
    capped, n_capped = top_singular_value(w, StableRankOptions(tol=1e-9, max_iter=3))
    assert n_capped == 3 and capped < s1


def test_dead_expert_is_zero_cells() -> None:
    st = expert_stats(np.zeros((32, 16), np.float32))
    assert st.dead
    assert (st.rms, st.mean_abs, st.max_over_rms, st.stable_rank) == (0.0, 0.0, 0.0, 0.0)
    assert st.zero_fraction == 1.0
    # one non-zero element: not dead
    w = np.zeros((32, 16), np.float32)
    w[3, 4] = -2.0
    st = expert_stats(w)
    assert not st.dead and st.stable_rank == pytest.approx(1.0)
    assert st.rms == pytest.approx(2.0 / math.sqrt(32 * 16), rel=1e-12)


def test_non_finite_values_are_left_out() -> None:
    w = matrices()["gaussian"].astype(np.float32)
    w[5, 5], w[7, 1], w[9, 9] = np.nan, np.inf, -np.inf
    got = expert_stats(w)
    ref = reference(w)
    for key in ("rms", "mean_abs", "max_over_rms", "zero_fraction"):
        assert getattr(got, key) == pytest.approx(ref[key], rel=1e-12), key
    assert math.isnan(got.stable_rank)
    m = moments(w)
    assert m[M_NONFINITE] == 3
    w[:] = np.nan
    got = expert_stats(w)
    assert math.isnan(got.rms) and not got.dead


def test_moments_kernel() -> None:
    rng = np.random.default_rng(8)
    w = rng.standard_normal((333, 77)).astype(np.float32)
    w[rng.random(w.shape) < 0.1] = 0
    w[4, 0] = -0.0
    w[10, 3] = np.inf
    w[11, :] = np.nan
    f = w.astype(np.float64)
    fin = np.isfinite(f)
    m = moments(w)
    assert m[M_SUMSQ] == pytest.approx((f[fin] ** 2).sum(), rel=1e-13)
    assert m[M_SUMABS] == pytest.approx(np.abs(f[fin]).sum(), rel=1e-13)
    assert m[M_MAXABS] == np.abs(f[fin]).max()
    assert m[M_ZEROS] == (w == 0).sum()
    assert m[M_NONFINITE] == (~fin).sum()
    with pytest.raises(TypeError):
        moments(w.astype(np.float64))


def test_router_row_norms() -> None:
    r = np.random.default_rng(1).standard_normal((8, 40)).astype(np.float32)
    assert router_row_norms(r) == pytest.approx(np.linalg.norm(r.astype(np.float64), axis=1),
                                                 rel=1e-14)


def test_relative_to_the_layer_median() -> None:
    v = np.array([[1.0, 2.0, 4.0, 0.0], [3.0, 3.0, 6.0, np.nan], [0.0, 0.0, 0.0, 5.0]])
    dead = np.array([[False, False, False, True], [False, False, False, False],
                     [False, False, False, False]])
    rel, med = relative_to_median(v, dead, "ratio")
    assert med.tolist() == [2.0, 3.0, 0.0]
    assert rel[0].tolist()[:3] == [0.5, 1.0, 2.0] and math.isnan(rel[0, 3])   # dead: no value
    assert rel[1].tolist()[:3] == [1.0, 1.0, 2.0] and math.isnan(rel[1, 3])   # NaN stays
    assert np.isnan(rel[2]).all()                                              # median 0
    diff, med = relative_to_median(v, dead, "difference")
    assert diff[2].tolist() == [0.0, 0.0, 0.0, 5.0]
    assert diff[0].tolist()[:3] == [-1.0, 0.0, 2.0]


def test_small_matrices_get_sigma_exactly() -> None:
    """At most SMALL rows or columns: σ₁ from the smaller Gram, exact (a Lanczos start nearly
    orthogonal to the top direction stopped at σ₂ on such a 32 x 64 matrix: 11 % low)."""
    from weightvis.moe.stats import SMALL

    for shape in ((32, 64), (64, 32), (SMALL, 3 * SMALL), (1, 40)):
        for seed in range(6):
            w = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
            s1 = float(np.linalg.svd(w.astype(np.float64), compute_uv=False)[0])
            sigma, steps = top_singular_value(w)
            assert steps == 0 and sigma == pytest.approx(s1, rel=1e-12)
    w = np.random.default_rng(5).standard_normal((SMALL + 1, 2 * SMALL)).astype(np.float32)
    assert top_singular_value(w)[1] > 0


@pytest.mark.parametrize("shape", [(1, 1), (3, 700), (700, 3), (257, 129)])
def test_decoding_bf16_makes_the_same_pass(shape: tuple[int, int]) -> None:
    """decode_stats_pass (BF16 codes decoded and summed in one pass) = stats_pass over the
    decoded matrix, bit for bit, with zeros, -0, Inf and NaN among the values; its sums
    against float64 numpy."""
    from weightvis.kernels.moe import decode_stats_pass, stats_pass

    rng = np.random.default_rng(shape[0])
    codes = rng.integers(0, 1 << 16, shape, dtype=np.uint16)
    codes[rng.random(shape) < 0.1] = 0
    codes.flat[::7] = 0x8000  # -0
    w = (codes.astype(np.uint32) << 16).view(np.float32)
    out = np.full(shape, np.nan, np.float32)
    got, ref = decode_stats_pass(codes, out), stats_pass(w)
    assert np.array_equal(out.view(np.uint32), w.view(np.uint32))
    for a, b in zip(got, ref, strict=True):
        assert np.array_equal(a, b, equal_nan=True)
    with np.errstate(invalid="ignore"):
        f = w.astype(np.float64)
    fin = np.isfinite(f)
    assert got.moments[M_NONFINITE] == (~fin).sum()
    assert got.moments[M_ZEROS] == (w == 0).sum()
    assert got.moments[M_SUMSQ] == pytest.approx((f[fin] ** 2).sum(), rel=1e-12)
    ok = np.isfinite(f).all(axis=1)  # rows and columns without Inf / NaN
    np.testing.assert_allclose(got.row_sum[ok], f[ok].sum(axis=1), rtol=1e-12, atol=1e-300)
    ok = np.isfinite(f).all(axis=0)
    np.testing.assert_allclose(got.col_sq[ok], (f[:, ok] ** 2).sum(axis=0), rtol=1e-12)
    with pytest.raises(TypeError):
        decode_stats_pass(codes, np.empty(shape, np.float64))


PASS_DIGEST = """
import hashlib, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from tests.moe_fakes import moe_tensors
from weightvis.kernels.moe import (bf16_codes, decode_stats_pass, gram_apply, pair_dots,
                                   stats_pass)
h = hashlib.sha256()
rng = np.random.default_rng(0)
for name, w in sorted(moe_tensors()[0].items()):  # (where the bits once differed)
    if w.ndim == 2:
        codes = (w.view(np.uint32) >> 16).astype(np.uint16)
        for p in (stats_pass(w), decode_stats_pass(codes, np.empty(w.shape, np.float32))):
            for field in p:
                h.update(np.asarray(field).tobytes())
        v = rng.standard_normal(w.shape[1]).astype(np.float32)
        h.update(gram_apply(w, v).tobytes())
        h.update(gram_apply(codes, v).tobytes())
        h.update(pair_dots(np.stack([w.reshape(-1), w.reshape(-1)[::-1]])).tobytes())
print(h.hexdigest())
"""


@pytest.mark.slow
def test_the_pass_has_the_same_bits_compiled_or_loaded(tmp_path: Path) -> None:
    """The one-pass kernels, the stable rank's step (float32 and bfloat16 codes) and the
    cosines' dots give the same bits in a process that compiles them and in one that loads
    them from numba's cache (a jitted helper they called was once optimised differently in the
    two: the local pool and a Dask worker then wrote different moe.json)."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    root = str(Path(__file__).resolve().parent.parent)
    runs = [subprocess.run([sys.executable, "-c", PASS_DIGEST, root], capture_output=True,
                           text=True, env=env, timeout=300, check=True).stdout.strip()
            for _ in range(2)]
    assert len(runs[0]) == 64 and runs[0] == runs[1]
    assert any((tmp_path / "numba").rglob("*.nbc"))  # (the second run loaded them)


def _bf16(shape: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(codes, float32 values) of a random bfloat16 matrix."""
    w = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    codes = (w.view(np.uint32) >> 16).astype(np.uint16)
    return codes, (codes.astype(np.uint32) << 16).view(np.float32)


@pytest.mark.parametrize("shape", [(1, 1), (3, 700), (257, 129), (130, 513)])
def test_the_stable_rank_step_reads_bfloat16_codes(shape: tuple[int, int]) -> None:
    """gram_apply over the codes = Wᵀ(W v) in float64 within float32 rounding, as over the
    float32 values; bf16_codes gives the codes of a bfloat16-valued matrix and None for any
    other (one low bit set is enough); the one-pass kernels say which it is."""
    from weightvis.kernels.moe import bf16_codes, decode_stats_pass, gram_apply, stats_pass

    codes, w = _bf16(shape, shape[1])
    v = np.random.default_rng(1).standard_normal(shape[1]).astype(np.float32)
    ref = w.astype(np.float64).T @ (w.astype(np.float64) @ v.astype(np.float64))
    scale = np.abs(w.astype(np.float64)).T @ np.abs(w.astype(np.float64) @ v)
    for got in (gram_apply(codes, v), gram_apply(w, v)):
        assert got.dtype == np.float32 and got.shape == (shape[1],)
        assert np.all(np.abs(got - ref) <= 1e-5 * scale + 1e-30)
    got_codes = bf16_codes(w)
    assert got_codes is not None and np.array_equal(got_codes, codes)
    assert stats_pass(w).bf16 and decode_stats_pass(codes, np.empty_like(w)).bf16
    off = w.copy()
    off.view(np.uint32)[shape[0] // 2, shape[1] - 1] |= 1
    assert bf16_codes(off) is None and not stats_pass(off).bf16


def test_a_bfloat16_matrix_has_one_stable_rank_however_it_is_given() -> None:
    """A matrix whose values are all bfloat16 gets the same bits of σ₁ from its codes, from
    its float32 values told it is bfloat16, and from its float32 values alone (found in a
    pass) — so BF16 and F32 storage of one expert agree — and σ₁ within the tolerance of the
    SVD's."""
    from weightvis.kernels.moe import stats_pass

    codes, w = _bf16((600, 300), 7)
    s1 = float(np.linalg.svd(w.astype(np.float64), compute_uv=False)[0])
    got = {top_singular_value(w, codes=codes), top_singular_value(w, bf16=True),
           top_singular_value(w)}
    assert len(got) == 1
    sigma, steps = got.pop()
    assert steps > 0 and s1 * (1 - 0.05) <= sigma <= s1 * (1 + 1e-6)
    assert expert_stats(w, sums=stats_pass(w)) == expert_stats(w, codes=codes) \
        == expert_stats(w)


@pytest.mark.parametrize("shape", [(1, 5), (2, 8192), (8, 3 * 8192 + 17), (5, 100)])
def test_pair_dots_against_float64(shape: tuple[int, int]) -> None:
    """pair_dots = k kᵀ in float64 within float32 rounding of each block, symmetric, with the
    squared norms on the diagonal."""
    from weightvis.kernels.moe import pair_dots

    k = np.random.default_rng(shape[1]).standard_normal(shape).astype(np.float32)
    k[0] += 3.0  # (a common offset: large dots)
    got = pair_dots(k)
    k64 = k.astype(np.float64)
    ref = k64 @ k64.T
    scale = np.abs(k64) @ np.abs(k64).T
    assert got.dtype == np.float64 and np.array_equal(got, got.T)
    assert np.all(np.abs(got - ref) <= 1e-6 * scale)
    with pytest.raises(TypeError):
        pair_dots(k64)
