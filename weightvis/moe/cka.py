"""Expert similarity (MOE.md §3): debiased linear CKA and the cosine of the flattened weights.

**CKA.** Linear CKA (Kornblith, Norouzi, Lee & Hinton 2019, arXiv 1905.00414) with the unbiased
HSIC estimator of Song, Smola, Gretton, Bedo & Borgwardt 2012 (JMLR 13) — "debiased CKA"
(Nguyen, Raghu & Kornblith 2021; Murphy, Zylberberg & Fyshe 2024). The **examples** are the
hidden-size coordinates every expert of a layer shares; the **features** are the expert's
neurons: X = Wᵀ ∈ ℝ^{H×I} for gate and up (stored [I, H]), X = W ∈ ℝ^{H×I} for down. CKA is
invariant to orthogonal maps of the features, so to any order of an expert's neurons: a
neuron-permuted copy (the same function) scores 1. Biased CKA of independent random experts
tends to p/(n+p) (0.78 for Mixtral's shapes); the debiased estimator to 0.

With K = XXᵀ, K̃ = K with a zero diagonal, d = diag K, r = K1 - d, t = 1ᵀK1 - Σd:
HSIC₁(K, L) = [⟨K, L⟩ - d_K·d_L + t_K t_L / ((n-1)(n-2)) - 2/(n-2) r_K·r_L] / (n(n-3)),
CKA(a, b) = HSIC₁(K_a, K_b) / √(HSIC₁(K_a, K_a) HSIC₁(K_b, K_b)); ⟨K_a, K_b⟩ = ‖X_aᵀX_b‖²_F.

**Exact** when it is cheap (``exact_cost`` ≤ ``cka_exact_max`` multiply-adds): ⟨K_a, K_b⟩ from
each expert's n×n Gram in float64. **Sketched** above that: every expert of a (layer, role) is
sketched by two independent random feature maps R₁, R₂ (k features each, shared by the group,
seeded from the layer and role), S = X Rᵀ, and
numerator(a, b) = ½[HSIC₁(S¹_a, S²_b) + HSIC₁(S²_a, S¹_b)], denominator(a) = HSIC₁(S¹_a, S²_a).
R₁ ⊥ R₂ makes every term an unbiased estimate of its unsketched value (one shared sketch, as
the reference tool does, is biased by -0.03…-0.86, MOE.md §3.4). The maps are **CountSketch**
(Charikar et al. 2002; each feature added with a random sign into one of k buckets: one pass
over the matrix, O(I·H), where a Gaussian map costs k·I·H multiply-adds) — as accurate as the
Gaussian one in measurement (benchmarks/cka_sketch_error.py; ``sketch="gaussian"`` keeps it).

An expert copied into another slot scores exactly 1, sketched or not: the pair terms of a copy
are those of the expert it copies (``canonical``), so numerator and denominators are the same
numbers. An expert whose
denominator is ≤ 0 (dead: all zero) has no CKA: its row and column are NaN here, null in JSON.

**Cosine** of the flattened weights, ⟨vec W_a, vec W_b⟩ / (‖W_a‖ ‖W_b‖), in float64: not
invariant to neuron order (a permuted copy scores ≈ 0); it finds exact and upcycled copies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np

from .cross import cross_sums

__all__ = ["SketchKind", "Hsic", "features", "gram_parts", "sketch_parts", "hsic1",
           "cka_from_parts", "cka_exact", "sketched_cka", "FeatureSketch", "exact_cost",
           "cosine_from_dots", "canonical", "same_arrays", "ROLE_AXIS"]

SketchKind = Literal["countsketch", "gaussian"]

ROLE_AXIS = {"gate": 0, "up": 0, "gate_up": 0, "down": 1}
"""The axis of an expert matrix ([out, in] as structure.expert_matrix returns it) that holds its
neurons (the CKA features): rows for gate / up ([I, H]), columns for down ([H, I])."""


class Hsic(NamedTuple):
    """What HSIC₁ needs of one representation (float64): d = diag K, r = K1 - d, t = 1ᵀK1 - Σd,
    and the number of examples n."""

    d: np.ndarray
    r: np.ndarray
    t: float
    n: int


def features(w: np.ndarray, role: str) -> np.ndarray:
    """The expert's representation X (examples = hidden coordinates, features = neurons):
    Wᵀ for gate / up, W for down (a view, no copy)."""
    return w.T if ROLE_AXIS[role] == 0 else w


def gram_parts(gram: np.ndarray) -> Hsic:
    """Hsic of a float64 Gram matrix K (n x n)."""
    d = np.diag(gram).copy()
    r = gram.sum(axis=1) - d
    return Hsic(d, r, float(gram.sum() - d.sum()), gram.shape[0])


def sketch_parts(s: np.ndarray) -> Hsic:
    """Hsic of K = SSᵀ for a sketch S (n x k, any float), without forming K."""
    s64 = s.astype(np.float64)
    d = np.einsum("ij,ij->i", s64, s64)
    tot = s64.sum(axis=0)
    return Hsic(d, s64 @ tot - d, float(tot @ tot - d.sum()), s.shape[0])


def hsic1(cross: float, a: Hsic, b: Hsic) -> float:
    """The unbiased HSIC₁ (Song et al. 2012) from ⟨K_a, K_b⟩ = ``cross`` and both parts."""
    n = a.n
    return float((cross - a.d @ b.d + a.t * b.t / ((n - 1) * (n - 2))
                  - 2.0 / (n - 2) * (a.r @ b.r)) / (n * (n - 3)))


def cka_from_parts(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """E x E CKA from the numerators num[a, b] (symmetric) and denominators den[a]; NaN in the
    row and column of an expert whose denominator is ≤ 0 or not finite."""
    ok = np.isfinite(den) & (den > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out: np.ndarray = num / np.sqrt(np.outer(den, den))
    out[~ok, :] = np.nan
    out[:, ~ok] = np.nan
    return out


def _hsic_matrix(cross: np.ndarray, a: Sequence[Hsic], b: Sequence[Hsic]) -> np.ndarray:
    """HSIC₁ of every pair (i, j) from cross[i, j] = ⟨K_i, L_j⟩ (``hsic1`` on arrays)."""
    n = a[0].n
    da, db = np.stack([x.d for x in a]), np.stack([x.d for x in b])
    ra, rb = np.stack([x.r for x in a]), np.stack([x.r for x in b])
    ta, tb = np.array([x.t for x in a]), np.array([x.t for x in b])
    out: np.ndarray = (cross - da @ db.T + np.outer(ta, tb) / ((n - 1) * (n - 2))
                       - 2.0 / (n - 2) * (ra @ rb.T)) / (n * (n - 3))
    return out


def same_arrays(arrays: Sequence[Sequence[np.ndarray]]) -> list[int]:
    """For each entry, the first entry whose arrays hold the same bytes (itself if none)."""
    import hashlib

    first: dict[bytes, int] = {}
    out = []
    for i, group in enumerate(arrays):
        h = hashlib.blake2b(digest_size=16)
        for a in group:
            h.update(np.ascontiguousarray(a).view(np.uint8).reshape(-1).data)
        key = h.digest()
        j = first.setdefault(key, i)
        same = j != i and all(np.array_equal(x, y) for x, y in zip(arrays[j], group,
                                                                  strict=True))
        out.append(j if same else i)
    return out


def canonical(h: np.ndarray, same: Sequence[int] | None) -> np.ndarray:
    """``h`` with the rows and columns of each expert replaced by those of the expert it is an
    exact copy of (``same[e]``: e itself, or the first expert with the same bytes): a copy then
    scores exactly 1, whatever rounding its own products had (a product of stacked operands
    may round one block differently from another)."""
    if same is None:
        return h
    idx = np.asarray(same)
    out: np.ndarray = h[np.ix_(idx, idx)]
    return out


def cka_exact(grams: Sequence[np.ndarray], same: Sequence[int] | None = None) -> np.ndarray:
    """E x E debiased CKA from the experts' float64 Grams K_e = X_e X_eᵀ (n x n, n ≥ 4).
    ``same``: which experts are copies of which (``canonical``); found from the Grams' bytes
    when not given."""
    parts = [gram_parts(g) for g in grams]
    same = same if same is not None else same_arrays([[g] for g in grams])
    flat = np.stack([np.ascontiguousarray(g).reshape(-1) for g in grams])
    h = canonical(_hsic_matrix(flat @ flat.T, parts, parts), same)
    return cka_from_parts(0.5 * (h + h.T), np.diag(h).copy())


def exact_cost(experts: int, n: int, p: int) -> int:
    """Multiply-adds of exact CKA for a group: a Gram per expert (n²·p) and an inner product
    of Grams per pair (n²)."""
    return experts * n * n * p + experts * (experts + 1) // 2 * n * n


class FeatureSketch:
    """Two independent random maps of ``p`` features to ``k`` (CountSketch or Gaussian
    N(0, 1/k)), drawn from ``seed`` (a sequence of ints: the bundle seed, layer and role)."""

    def __init__(self, p: int, k: int, seed: Sequence[int],
                 kind: SketchKind = "countsketch") -> None:
        if k < 1:
            raise ValueError(f"sketch size must be at least 1, not {k}")
        self.p, self.k, self.kind = p, k, kind
        self.maps: list[tuple[np.ndarray, np.ndarray]] = []
        for j in (1, 2):
            rng = np.random.default_rng([*seed, j])
            if kind == "countsketch":
                bucket = rng.integers(0, k, p)
                sign = np.where(rng.integers(0, 2, p) == 1, 1.0, -1.0).astype(np.float32)
                self.maps.append((bucket, sign))
            else:
                r = (rng.standard_normal((k, p)) / np.sqrt(k)).astype(np.float32)
                self.maps.append((r, np.zeros(0, np.float32)))

    def apply(self, w: np.ndarray, role: str) -> tuple[np.ndarray, np.ndarray]:
        """(S¹ᵀ, S²ᵀ): the two sketches of expert matrix ``w`` (float32 [out, in]), each
        float32 [k, n] (C-contiguous; n = the hidden size)."""
        axis = ROLE_AXIS[role]
        if w.shape[axis] != self.p:
            raise ValueError(f"expected {self.p} neurons on axis {axis}, got shape {w.shape}")
        out = []
        for m, sign in self.maps:
            if self.kind == "countsketch":
                from ..kernels.moe import count_sketch

                s = count_sketch(w, m, sign, axis, self.k)
                out.append(s if axis == 0 else np.ascontiguousarray(s.T))
            else:
                out.append(np.ascontiguousarray(m @ w if axis == 0 else (w @ m.T).T))
        return out[0], out[1]


PAIR_TILE_BYTES = 64 << 20
"""Most bytes of one tile of the sketches' product or of their Grams (cross.cross_sums)."""


def sketched_cka(sketches: Sequence[tuple[np.ndarray, np.ndarray]],
                 same: Sequence[int] | None = None) -> np.ndarray:
    """E x E debiased CKA from each expert's two sketches (S¹ᵀ, S²ᵀ), float32 [k, n]: the
    cross-sketch estimator, N[a, b] = ‖S¹_aᵀ S²_b‖² for every pair (``cross.cross_sums``:
    the stacked sketches' product or their Grams' — whichever is cheaper —, in tiles of at
    most PAIR_TILE_BYTES; float32 products, float64 sums). ``same`` as
    for ``cka_exact`` (found from the sketches' bytes when not given)."""
    e = len(sketches)
    k = sketches[0][0].shape[0]
    same = same if same is not None else same_arrays(sketches)
    p1 = [sketch_parts(s1.T) for s1, _ in sketches]
    p2 = [sketch_parts(s2.T) for _, s2 in sketches]
    z1 = np.concatenate([s1 for s1, _ in sketches])          # [E*k, n]
    z2 = np.concatenate([s2 for _, s2 in sketches])
    cross = cross_sums(z1, z2, e, k, PAIR_TILE_BYTES)
    h = canonical(_hsic_matrix(cross, p1, p2), same)
    return cka_from_parts(0.5 * (h + h.T), np.diag(h).copy())


def cosine_from_dots(dots: np.ndarray) -> np.ndarray:
    """E x E cosine from the float64 matrix of flattened inner products (diagonal = ‖W‖²);
    NaN in the row and column of an expert of norm 0."""
    sq = np.diag(dots).copy()
    return cka_from_parts(dots, sq)
