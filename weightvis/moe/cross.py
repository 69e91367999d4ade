"""The pair sums of the sketched CKA: for E experts' sketches Z¹_a, Z²_b (float32 [k, n] each,
stacked into [E·k, n]), cross[a, b] = ‖Z¹_a Z²_bᵀ‖²_F for every pair — the only part of the
cross-sketch estimator (cka.sketched_cka) whose cost grows with E².

Two ways to the same sums, the cheaper one taken (``cross_route``):

* **direct**: the product Z¹ Z²ᵀ of the stacked sketches, squared and summed per k x k block
  (E²·n·k² multiply-adds), in tiles of whole experts;
* **Gram**: ‖Z¹_a Z²_bᵀ‖²_F = ⟨Z¹_aᵀZ¹_a, Z²_bᵀZ²_b⟩, the inner product of two n x n Grams:
  each expert's Grams (n²·k, symmetric: the upper blocks only) and then one product of the
  stacked Grams (E²·n²/2) — cheaper when E·k exceeds n (Mixtral-shaped groups at k = 256 and
  H ≤ 2048: 1.8x fewer at H = 1024; 3.5x at k = 512; Qwen-MoE-shaped groups), in blocks of
  B x B Gram entries (``cross_route`` picks B) so that memory stays at ``tile_bytes``.

Both are float32 products summed in float64 (direct: the squares of each tile; Gram: each
block pair's product), so the two differ only by float32 rounding (relative ~1e-6 of the
sums; the sketch's own error is ~1e-2).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["cross_sums", "cross_route", "TILE_BYTES"]

TILE_BYTES = 64 << 20
"""Most bytes of one tile of products (direct) or of one block's Grams (Gram)."""


def _gram_cost(e: int, k: int, n: int, b: int) -> int:
    """Multiply-adds of the Gram route in blocks of b: per block pair (I, J ≥ I) both Grams of
    every expert (2·E·b²·k) and their product (E²·b²)."""
    nb = -(-n // b)
    return nb * (nb + 1) // 2 * (2 * e * b * b * k + e * e * b * b)


def cross_route(e: int, k: int, n: int, tile_bytes: int = TILE_BYTES) -> tuple[str, int]:
    """("gram", block size) when the Gram route takes fewer multiply-adds than the direct
    product (E²·n·k²), else ("direct", 0). Blocks of at least 128 coordinates (smaller
    products run slower than their count says) and at most ``tile_bytes`` of Grams."""
    most = max(1, math.isqrt(max(1, tile_bytes // (8 * e))))
    sizes = [b for b in (128, 256, 512, 1024, 2048) if b <= most] or [most]
    b = min(sizes, key=lambda s: (_gram_cost(e, k, n, min(s, n)), s))
    b = min(b, n)
    return ("gram", b) if _gram_cost(e, k, n, b) < e * e * n * k * k else ("direct", 0)


def cross_sums(z1: np.ndarray, z2: np.ndarray, e: int, k: int,
               tile_bytes: int = TILE_BYTES) -> np.ndarray:
    """float64 [E, E]: cross[a, b] = ‖Z¹_a Z²_bᵀ‖²_F where Z^j_a = z_j[a·k:(a+1)·k] (float32
    [E·k, n], C-contiguous), by the cheaper route (module docstring)."""
    n = z1.shape[1]
    assert z1.shape == z2.shape == (e * k, n), (z1.shape, z2.shape, e, k)
    route, b = cross_route(e, k, n, tile_bytes)
    if route == "gram":
        return _gram(z1, z2, e, k, b)
    return _direct(z1, z2, e, k, tile_bytes)


def _direct(z1: np.ndarray, z2: np.ndarray, e: int, k: int, tile_bytes: int) -> np.ndarray:
    cross = np.zeros((e, e))
    rows = max(1, tile_bytes // (4 * k * k * e))
    for a0 in range(0, e, rows):
        a1 = min(e, a0 + rows)
        g = z1[a0 * k:a1 * k] @ z2.T
        np.square(g, out=g)  # (float32 squares, float64 sums)
        cross[a0:a1] = g.reshape(a1 - a0, k, e, k).sum(axis=(1, 3), dtype=np.float64)
    return cross


def _gram(z1: np.ndarray, z2: np.ndarray, e: int, k: int, b: int) -> np.ndarray:
    """Blocks (I, J ≥ I) of b coordinates: G^j_a[I, J] = Z^j_a[:, I]ᵀ Z^j_a[:, J] for every
    expert, then cross += w·G¹[I, J] G²[I, J]ᵀ (flattened; w = 2 off the diagonal: the
    Grams are symmetric)."""
    n = z1.shape[1]
    cross = np.zeros((e, e))
    a1 = z1.reshape(e, k, n)
    a2 = z2.reshape(e, k, n)
    for i0 in range(0, n, b):
        i1 = min(n, i0 + b)
        for j0 in range(i0, n, b):
            j1 = min(n, j0 + b)
            g1 = np.matmul(a1[:, :, i0:i1].transpose(0, 2, 1), a1[:, :, j0:j1])
            g2 = np.matmul(a2[:, :, i0:i1].transpose(0, 2, 1), a2[:, :, j0:j1])
            part = g1.reshape(e, -1) @ g2.reshape(e, -1).T
            cross += (1.0 if i0 == j0 else 2.0) * part.astype(np.float64)
    return cross
