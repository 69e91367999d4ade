"""The sketched CKA's pair sums (weightvis.moe.cross): both routes against a float64 reference,
and the route taken is the one with fewer multiply-adds."""

from __future__ import annotations

import numpy as np
import pytest

from weightvis.moe.cross import _direct, _gram, _gram_cost, cross_route, cross_sums


def reference(z1: np.ndarray, z2: np.ndarray, e: int, k: int) -> np.ndarray:
    a = z1.astype(np.float64).reshape(e, k, -1)
    b = z2.astype(np.float64).reshape(e, k, -1)
    return np.array([[float(np.sum((a[i] @ b[j].T) ** 2)) for j in range(e)]
                     for i in range(e)])


@pytest.mark.parametrize(("e", "k", "n", "b"), [(3, 8, 50, 16), (5, 32, 300, 128),
                                                (2, 4, 7, 3), (6, 64, 256, 256)])
def test_both_routes_give_the_sums(e: int, k: int, n: int, b: int) -> None:
    rng = np.random.default_rng([e, k, n])
    z1 = rng.standard_normal((e * k, n), dtype=np.float32)
    z2 = rng.standard_normal((e * k, n), dtype=np.float32)
    z2[k:2 * k] = z1[:k]  # a pair with a strong product
    want = reference(z1, z2, e, k)
    for got in (_direct(z1, z2, e, k, 4 * k * k * e), _direct(z1, z2, e, k, 1),
                _gram(z1, z2, e, k, b), cross_sums(z1, z2, e, k)):
        assert got.shape == (e, e) and got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=2e-6)


def test_the_cheaper_route_is_taken() -> None:
    for e, k, n in [(8, 256, 1024), (8, 512, 1024), (8, 256, 4096), (64, 128, 2048),
                    (256, 64, 7168), (4, 16, 64), (1, 1, 1)]:
        route, b = cross_route(e, k, n)
        direct = e * e * n * k * k
        if route == "gram":
            assert 1 <= b <= n and _gram_cost(e, k, n, b) < direct
        else:
            assert all(_gram_cost(e, k, n, min(s, n)) >= direct for s in (128, 256, 512))
    assert cross_route(8, 256, 1024)[0] == "gram"      # Mixtral-shaped at a quarter width
    assert cross_route(256, 64, 7168)[0] == "direct"   # DeepSeek-V3-shaped
