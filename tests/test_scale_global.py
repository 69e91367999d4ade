"""``--scale global`` (issue 14, item 10): the bisection over per-tensor sorted samples gives the
scale of the reference definition (the union of the samples, weighted, sorted, cumulated)."""

from __future__ import annotations

import numpy as np
import pytest

from weightvis.scale_global import QUANTILE, global_sample, global_scale, thin


def _reference(samples: list[tuple[np.ndarray, int]]) -> float:
    """The definition as first written: concatenate, stable sort, cumulative weight."""
    vals, wts = [], []
    for smp, numel in samples:
        a = np.abs(smp[np.isfinite(smp)]).astype(np.float64)
        if a.size:
            vals.append(a)
            wts.append(np.full(a.size, numel / smp.size))
    if not vals:
        return 1.0
    v, w = np.concatenate(vals), np.concatenate(wts)
    order = np.argsort(v, kind="stable")
    v, w = v[order], w[order]
    cw = np.cumsum(w)
    i = int(np.searchsorted(cw, QUANTILE * cw[-1], side="left"))
    s = float(v[min(i, v.size - 1)])
    if s > 0:
        return s
    m = float(v[-1])
    return m if m > 0 else 1.0


def _case(rng: np.random.Generator, kind: str) -> list[tuple[np.ndarray, int]]:
    out = []
    for _ in range(int(rng.integers(1, 40))):
        n = int(rng.integers(1, 3000))
        if kind == "levels":  # few distinct values: ties within and across tensors
            a = rng.choice(np.array([0, 0.5, 1, 2, 4], np.float32), n) * \
                rng.choice(np.array([-1, 1], np.float32), n)
        elif kind == "zeros":
            a = np.zeros(n, np.float32)
            a[: int(rng.integers(0, 2))] = 3.0
        else:
            a = (rng.standard_normal(n) * 10 ** rng.uniform(-3, 3)).astype(np.float32)
        if rng.random() < 0.2:
            a[rng.integers(0, n)] = rng.choice([np.nan, np.inf, -np.inf])
        smp = thin(a)
        out.append((smp, int(n * rng.integers(1, 5000))))  # numel: weight numel / len(smp)
    return out


@pytest.mark.parametrize("kind", ["normal", "levels", "zeros"])
def test_global_scale_matches_the_reference(kind: str) -> None:
    rng = np.random.default_rng(1014)
    for _ in range(60):
        samples = _case(rng, kind)
        got = global_scale([global_sample(s, n) for s, n in samples])
        assert got == _reference(samples), samples


def test_global_scale_edges() -> None:
    nan = np.array([np.nan, np.inf], np.float32)
    assert global_scale([global_sample(nan, 2)]) == _reference([(nan, 2)]) == 1.0
    assert global_scale([]) == 1.0
    zero = np.zeros(5, np.float32)
    assert global_scale([global_sample(zero, 5)]) == 1.0
    one_big = [(np.array([1.0, 1000.0], np.float32), 2), (np.ones(1000, np.float32), 10)]
    assert global_scale([global_sample(s, n) for s, n in one_big]) == _reference(one_big)


def test_global_sample_is_sorted_finite_magnitudes() -> None:
    smp = np.array([3, -1, np.nan, -7, 0, np.inf], np.float32)
    g = global_sample(smp, 60)
    assert g.magnitudes.tolist() == [0, 1, 3, 7] and g.weight == 10.0
