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
each expert's n×n Gram in float64. Above that the default estimate is the row sample of
``sampled.py``; the **feature sketches** here are kept to compare (``MoEOptions.cka_sketch``):
every expert of a (layer, role) is sketched by two independent random feature maps R₁, R₂
(k features each, shared by the group, seeded from the layer and role), S = X Rᵀ, and
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
           "cka_from_parts", "cka_exact", "hsic_from_off", "sketched_cka", "FeatureSketch",
           "ExpertSketch", "exact_cost", "HEAVY_RATIO",
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


def hsic_from_off(off: np.ndarray, r: np.ndarray, t: np.ndarray, n: int) -> np.ndarray:
    """HSIC₁ of every pair from off[a, b] = Σ_{i≠l} K_a[i,l] K_b[i,l] (⟨K_a, K_b⟩ − d_a·d_b),
    the stacked r [E, n] and t [E] (``hsic1`` on arrays)."""
    out: np.ndarray = (off + np.outer(t, t) / ((n - 1) * (n - 2))
                       - 2.0 / (n - 2) * (r @ r.T)) / (n * (n - 3))
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


HEAVY_RATIO = 8.0
"""A hidden coordinate is *heavy* for an expert when its row of X (centred) has a squared
norm above this many times the mean (a Gaussian row never does for I ≥ 16)."""


class ExpertSketch(NamedTuple):
    """What the pairs need of one expert, sketched (``FeatureSketch.apply``).

    X is translated first by the mean of its rows that are not heavy (HSIC₁ is invariant to
    any per-feature translation, so the CKA is unchanged; the sketch's noise is not inflated
    by a common offset, nor by the share of a huge row in the mean)."""

    s1: np.ndarray
    """float32 [k, n]: S¹ᵀ = (X R₁ᵀ)ᵀ of the centred X (n = hidden size)."""
    s2: np.ndarray
    """float32 [k, n]: S²ᵀ, the independent second sketch."""
    d: np.ndarray
    """float64 [n]: the exact diag K = squared norms of X's (translated) rows."""
    r: np.ndarray
    """float64 [n]: the exact K1 - d."""
    t: float
    """The exact 1ᵀK1 - Σd."""
    heavy: np.ndarray
    """int64 [h], ascending: the heavy coordinates (``HEAVY_RATIO``; at most the largest
    ``heavy_max``)."""
    rows: np.ndarray
    """float32 [h, n]: K[heavy, :] exactly."""


class FeatureSketch:
    """Two independent random maps of ``p`` features to ``k`` (CountSketch or Gaussian
    N(0, 1/k)), drawn from ``seed`` (a sequence of ints: the bundle seed, layer and role);
    ``heavy_max``: most heavy coordinates kept exactly per expert (``sketched_cka``)."""

    def __init__(self, p: int, k: int, seed: Sequence[int],
                 kind: SketchKind = "countsketch", heavy_max: int = 16) -> None:
        if k < 1:
            raise ValueError(f"sketch size must be at least 1, not {k}")
        if heavy_max < 0:
            raise ValueError(f"heavy_max must be >= 0, not {heavy_max}")
        self.p, self.k, self.kind, self.heavy_max = p, k, kind, heavy_max
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

    def apply(self, w: np.ndarray, role: str) -> ExpertSketch:
        """The sketches of expert matrix ``w`` (float32 [out, in]), its exact row norms and
        heavy rows. CountSketch: one pass over ``w`` for both sketches and the sums, one
        matrix-vector product, and h·n·p multiply-adds for h heavy rows."""
        axis = ROLE_AXIS[role]
        if w.shape[axis] != self.p:
            raise ValueError(f"expected {self.p} neurons on axis {axis}, got shape {w.shape}")
        x = features(w, role)                                   # [n, p] view
        n = x.shape[0]
        if self.kind == "countsketch":
            from ..kernels.moe import sketch_pass

            z1, z2, sq, colsum = sketch_pass(w, axis, tuple(self.maps), self.k)  # Σ rows: [p]
        else:
            (m1, _), (m2, _) = self.maps
            z1, z2 = ((m @ w if axis == 0 else (w @ m.T).T) for m in (m1, m2))
            sq = np.einsum("ij,ij->i", x, x, dtype=np.float64)             # ‖x_i‖²
            colsum = x.sum(axis=0, dtype=np.float64)
        # every product with x below comes from xc = x·Σrows and the heavy rows' raw Gram
        xc = (x @ colsum.astype(np.float32)).astype(np.float64)
        d0 = np.maximum(sq - 2.0 * xc / max(1, n) + colsum @ colsum / max(1, n) ** 2, 0.0)
        heavy = np.flatnonzero(d0 > HEAVY_RATIO * d0.mean()) if n else np.zeros(0, np.int64)
        if heavy.size > self.heavy_max:
            heavy = np.sort(heavy[np.argsort(d0[heavy], kind="stable")[::-1][:self.heavy_max]])
        light = n - heavy.size
        raw = (x[heavy] @ x.T).astype(np.float64)              # [h, n]: x_h · x_i
        mu = (colsum - x[heavy].sum(axis=0, dtype=np.float64)) / max(1, light)
        xmu = (xc - raw.sum(axis=0)) / max(1, light)           # x·μ
        d = np.maximum(sq - 2.0 * xmu + mu @ mu, 0.0)          # ‖x_i - μ‖²
        tot = colsum - n * mu                                    # Σ rows of X - μ
        r = (xc - n * xmu) - mu @ tot - d                        # K1 - d (K of X - μ)
        out = []
        for z in (z1, z2):
            s = np.ascontiguousarray(z, np.float32)
            shift = (s.sum(axis=1, dtype=np.float64)
                     - s[:, heavy].sum(axis=1, dtype=np.float64)) / max(1, light)
            s -= shift.astype(np.float32)[:, None]   # the sketch of X - μ
            out.append(s)
        rows = raw - xmu[None, :] - (xmu[heavy] - mu @ mu)[:, None]   # (x_h - μ)·(x_i - μ)
        return ExpertSketch(out[0], out[1], d, r, float(tot @ tot - d.sum()),
                            heavy.astype(np.int64), rows.astype(np.float32))


PAIR_TILE_BYTES = 64 << 20
"""Most bytes of one tile of the sketches' product or of their Grams (cross.cross_sums)."""


def sketched_cka(sketches: Sequence[ExpertSketch],
                 same: Sequence[int] | None = None) -> np.ndarray:
    """E x E debiased CKA from each expert's ``ExpertSketch``.

    The off-diagonal ⟨K̃_a, K̃_b⟩ = Σ_{i≠l} K_a[i,l] K_b[i,l] is split by the group's heavy
    coordinates V (those heavy in any expert). Entries with neither index in V: the
    cross-sketch estimate ‖S¹_aᵀ S²_b‖² - d̂¹_a·d̂²_b over the other coordinates, from one
    product of the stacked sketches or of their Grams, whichever is cheaper
    (``cross.cross_sums``, in tiles of at most PAIR_TILE_BYTES; float32 products, float64
    sums). Entries in a row or column of V: each expert's exact row where the coordinate is
    heavy for it, its sketched row (S¹ for a, S² for b) where not (``_heavy_part``). Every
    part is an unbiased estimate, and an outlier channel
    read by both experts — whose sketched terms would otherwise dominate the noise (MOE.md
    §3.4) — is exact. HSIC₁'s other terms (d, r, t) are exact. ``same`` as for
    ``cka_exact`` (found from the sketches' bytes when not given)."""
    e = len(sketches)
    k, n = sketches[0].s1.shape
    same = same if same is not None else same_arrays([(s.s1, s.s2) for s in sketches])
    heavy = np.unique(np.concatenate([s.heavy for s in sketches])).astype(np.int64)
    z1 = np.concatenate([s.s1 for s in sketches])          # [E*k, n]
    z2 = np.concatenate([s.s2 for s in sketches])
    z1[:, heavy] = 0.0
    z2[:, heavy] = 0.0
    d1 = np.stack([np.einsum("ij,ij->j", z1[a * k:(a + 1) * k], z1[a * k:(a + 1) * k],
                             dtype=np.float64) for a in range(e)])
    d2 = np.stack([np.einsum("ij,ij->j", z2[a * k:(a + 1) * k], z2[a * k:(a + 1) * k],
                             dtype=np.float64) for a in range(e)])
    cross = cross_sums(z1, z2, e, k, PAIR_TILE_BYTES)
    del z1, z2
    off = cross - d1 @ d2.T + _heavy_part(sketches, heavy)
    h = canonical(hsic_from_off(off, np.stack([s.r for s in sketches]),
                                np.array([s.t for s in sketches]), n), same)
    return cka_from_parts(0.5 * (h + h.T), np.diag(h).copy())


def _heavy_part(sketches: Sequence[ExpertSketch], heavy: np.ndarray) -> np.ndarray:
    """[E, E]: Σ over the off-diagonal entries (i, l) with i or l in ``heavy`` (V) of
    A¹_a[i,l]·A²_b[i,l] — 2x a row's entries outside V, 1x those inside — where A^j_e is
    expert e's exact K where i or l is heavy for e, else its sketch-j estimate. Costs
    |V|·(2·E·k·n + E²·n) multiply-adds."""
    e = len(sketches)
    n = sketches[0].s1.shape[1]
    out = np.zeros((e, e))
    if heavy.size == 0:
        return out
    pos = [dict(zip(s.heavy.tolist(), range(s.heavy.size), strict=True)) for s in sketches]
    weight = np.full(n, 2.0)
    weight[heavy] = 1.0
    for i in heavy.tolist():
        a1 = np.empty((e, n))
        a2 = np.empty((e, n))
        for x, s in enumerate(sketches):
            j = pos[x].get(i)
            if j is not None:
                a1[x] = a2[x] = s.rows[j]
                continue
            a1[x] = s.s1[:, i] @ s.s1
            a2[x] = s.s2[:, i] @ s.s2
            for m, jm in pos[x].items():          # K[i, m] = K[m, i], exact for heavy m
                a1[x, m] = a2[x, m] = s.rows[jm, i]
        a1[:, i] = 0.0
        out += (a1 * weight) @ a2.T
    return out


def cosine_from_dots(dots: np.ndarray) -> np.ndarray:
    """E x E cosine from the float64 matrix of flattened inner products (diagonal = ‖W‖²);
    NaN in the row and column of an expert of norm 0."""
    sq = np.diag(dots).copy()
    return cka_from_parts(dots, sq)
