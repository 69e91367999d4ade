"""Debiased CKA (cka.py's HSIC₁) estimated from **exact rows** of every expert's Gram at a
shared random sample of hidden coordinates — the default estimator above the exact size.

The one part of HSIC₁ that costs n²·p per expert is the off-diagonal sum
T(a, b) = Σ_{i≠l} K_a[i,l]·K_b[i,l] (K = XXᵀ, X of n = H examples by p = I features; d, r and
t are exact from one pass). It is a sum over the rows i of K. The rows are split into

* V, the *heavy* coordinates: those whose (translated) squared norm is above
  ``ROW_HEAVY_RATIO`` times the mean in any expert of the group — outlier channels — at most
  ``heavy_max`` of them, the heaviest. Every term with i or l in V is computed exactly: the
  rows of V in full (entries outside V counted twice, for the symmetric column);
* the others, from which a uniform sample S of m coordinates is drawn (without replacement,
  seeded by the bundle seed, layer and role; the same for every expert of the group). Their
  terms outside V's columns are summed over S and scaled by (n − |V|)/m: an unbiased estimate
  (a sampling matrix applied to K: a row-sampling sketch of the Gram, shared by the experts).

So each expert costs (|V| + m)·n·p multiply-adds (one float32 product of its rows V ∪ S
with X) and holds (|V| + m)·n float32; the pairs cost E²·(|V| + m)·n. The estimate's error
comes only from which rows were sampled, ≈ 1/√(m·n) of the self-similarity for unrelated
experts: m = ``sample_rows(n)`` keeps m·n ≥ 2¹⁵ (32 rows from H = 1024, 64 at H = 512). K is
the same for any order — any orthogonal map — of an expert's neurons, so a neuron-permuted
copy gives the same rows: CKA 1 to float32 rounding (a feature sketch sees a permuted copy as
another matrix: ±0.03). Where S ∪ V is every coordinate the numbers are exact (in float32
products).

X is first translated by the mean of its rows outside V (HSIC₁ is unchanged by any
per-feature translation; the float32 products then do not carry a common offset), and the
sampled rows are translated before the product (so K's entries are not the small difference
of two large float32 numbers). Errors measured against exact on MOE.md's pair types and on
hidden coordinates of log-normal scale: benchmarks/cka_sketch_error.py, README "Accuracy".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ..kernels.moe import StatsPass, stats_pass
from .cka import ROLE_AXIS, canonical, cka_from_parts, features, hsic_from_off

__all__ = ["ROW_HEAVY_RATIO", "ROW_BUDGET", "MIN_ROWS", "sample_rows", "RowMoments",
           "row_moments", "RowPlan", "draw_sample", "plan_rows", "RowRep", "raw_rows",
           "needs_matrix", "finish_rows", "row_rep", "sampled_cka"]

ROW_HEAVY_RATIO = 4.0
"""A hidden coordinate is heavy when its translated squared norm is above this many times the
mean in some expert of the group (its rows' share of the sampled sum's variance grows with the
square of that ratio)."""

ROW_BUDGET = 1 << 15
"""m·n of the default sample (m rows of n examples): the error ≈ 1/√(m·n)."""

MIN_ROWS = 32
"""Fewest rows sampled by default (the spread of rows' sums, not only n, sets the error)."""


def sample_rows(n: int) -> int:
    """Default m for n hidden coordinates: at least ``MIN_ROWS`` and m·n ≥ ``ROW_BUDGET``."""
    return max(MIN_ROWS, -(-ROW_BUDGET // max(1, n)))


class RowMoments(NamedTuple):
    """One pass over an expert (``row_moments``): what the plan and the exact terms need."""

    sq: np.ndarray
    """float64 [n]: ‖x_i‖²."""
    total: np.ndarray
    """float64 [p]: Σ_i x_i."""
    xt: np.ndarray
    """float64 [n]: x_i · Σ_l x_l."""
    spread: np.ndarray
    """float64 [n]: ‖x_i − x̄‖² (the heavy test)."""


def row_moments(w: np.ndarray, role: str, sums: StatsPass | None = None) -> RowMoments:
    """The sums of expert matrix ``w`` (float32 [out, in]) for ``role``'s X: one pass over
    ``w`` (or ``sums``, a ``stats_pass`` of it made already) and one matrix-vector product."""
    sq, total = (sums if sums is not None else stats_pass(w)).example_sums(ROLE_AXIS[role])
    x = features(w, role)
    n = x.shape[0]
    xt = (x @ total.astype(np.float32)).astype(np.float64)
    spread = np.maximum(sq - 2.0 * xt / max(1, n) + total @ total / max(1, n) ** 2, 0.0)
    return RowMoments(sq, total, xt, spread)


class RowPlan(NamedTuple):
    """Which of a group's n hidden coordinates give their Gram rows (``plan_rows``)."""

    heavy: np.ndarray
    """int64, ascending: V, computed exactly."""
    sample: np.ndarray
    """int64, ascending: S, sampled from the others."""
    weight: float
    """(n − |V|) / |S|: 1 when S is all the others (then the estimate is exact)."""
    n: int

    @property
    def rows(self) -> int:
        return int(self.heavy.size + self.sample.size)


def draw_sample(n: int, m: int, seed: Sequence[int]) -> np.ndarray:
    """int64, ascending: ``m`` of the ``n`` hidden coordinates drawn uniformly without
    replacement from ``seed`` (bundle seed, layer, role) — all of them when m ≥ n. Drawn before
    the heavy coordinates are known (``plan_rows`` leaves those out), so that a group task can
    compute these Gram rows while it reads each expert the first time (``raw_rows``)."""
    if m >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng([*seed, 3])
    return np.sort(rng.choice(n, m, replace=False)).astype(np.int64)


def plan_rows(moments: Sequence[RowMoments], m: int, heavy_max: int,
              seed: Sequence[int]) -> RowPlan:
    """V (at most ``heavy_max``, the heaviest) and the sample S: the ``draw_sample`` of ``m``
    coordinates without those in V — a uniform sample of the others of the size it has, so
    the weight (n − |V|) / |S| keeps the estimate unbiased — or all the others where they are
    at most m (then the estimate is exact)."""
    if m < 1:
        raise ValueError(f"sample size must be at least 1, not {m}")
    n = moments[0].sq.size
    ratio = np.zeros(n)
    for mo in moments:
        mean = float(mo.spread.mean()) if n else 0.0
        if mean > 0 and np.isfinite(mean):
            np.fmax(ratio, mo.spread / mean, out=ratio)
    heavy = np.flatnonzero(ratio > ROW_HEAVY_RATIO)
    if heavy.size > heavy_max:
        heavy = np.sort(heavy[np.argsort(-ratio[heavy], kind="stable")[:heavy_max]])
    rest = np.setdiff1d(np.arange(n), heavy)
    if rest.size <= m:
        return RowPlan(heavy.astype(np.int64), rest.astype(np.int64), 1.0, n)
    sample = np.setdiff1d(draw_sample(n, m, seed), heavy)
    if sample.size == 0:  # (every drawn coordinate is heavy: m ≤ |V|)
        rng = np.random.default_rng([*seed, 4])
        sample = np.sort(rng.choice(rest, m, replace=False))
    return RowPlan(heavy.astype(np.int64), sample.astype(np.int64), rest.size / sample.size, n)


class RowRep(NamedTuple):
    """What the pairs need of one expert (``row_rep``)."""

    q: np.ndarray
    """float32 [|V| + |S|, n]: rows V then S of the translated K, zero on K's diagonal, each
    scaled by the square root of its terms' weight (V: 2 outside V's columns, 1 inside; S:
    the plan's weight, 0 in V's columns), so that T(a, b) = ⟨q_a, q_b⟩."""
    d: np.ndarray
    """float64 [n]: the exact diag K."""
    r: np.ndarray
    """float64 [n]: the exact K1 − d."""
    t: float
    """The exact 1ᵀK1 − Σd."""


def _rows_of(w: np.ndarray, role: str, idx: np.ndarray) -> np.ndarray:
    """float32 [len(idx), p]: the rows ``idx`` of X (a gather along w's rows or columns)."""
    axis = ROLE_AXIS[role]
    picked = np.take(w, idx, axis=1 - axis)
    return picked.T if axis == 0 else picked


def _translated_rows(w: np.ndarray, role: str, idx: np.ndarray, mu32: np.ndarray,
                     out: np.ndarray) -> None:
    """out [len(idx), n] = (x_i − μ)·(x_l − μ) for i in ``idx``, every l: the rows are
    translated before the product (K's entries are then not the small difference of two large
    float32 numbers)."""
    xr = _rows_of(w, role, idx) - mu32                        # [rows, p]
    np.matmul(xr, features(w, role).T, out=out)               # (x_i − μ) · x_l
    out -= (xr @ mu32)[:, None]                               # − (x_i − μ) · μ


def raw_rows(w: np.ndarray, role: str, mo: RowMoments, drawn: np.ndarray,
             out: np.ndarray) -> None:
    """The Gram rows at the ``draw_sample`` coordinates of expert ``w`` (float32 [out, in]),
    translated by the mean μ₀ of all its rows, into ``out`` (float32 [len(drawn), n]): made
    while the expert is read the first time; ``finish_rows`` turns them into its ``RowRep``
    once the plan is known (they are exactly its rows when no coordinate is heavy)."""
    n = features(w, role).shape[0]
    mu0 = (mo.total / max(1, n)).astype(np.float32)
    _translated_rows(w, role, drawn, mu0, out)


def needs_matrix(plan: RowPlan, drawn: np.ndarray | None) -> bool:
    """Whether ``finish_rows`` needs the expert's matrix: the plan has heavy coordinates, or
    sample coordinates that were not drawn (``drawn`` None: no rows were made first)."""
    return drawn is None or bool(plan.heavy.size) or not np.isin(plan.sample, drawn).all()


def finish_rows(raw: np.ndarray | None, drawn: np.ndarray | None, w: np.ndarray | None,
                role: str, mo: RowMoments, plan: RowPlan, out: np.ndarray | None = None
                ) -> RowRep:
    """Expert ``w``'s rows of K at the plan's coordinates and its exact d, r, t, into ``out``
    (float32 [plan.rows, n]; may be ``raw``'s memory): rows of the sample that are in
    ``raw`` (``raw_rows`` at ``drawn``) are taken from it — translated from μ₀ to the plan's
    μ, the mean of the rows outside V, where V is not empty: (x_i − μ)·(x_l − μ) =
    y_i·y_l − y_i·δ − δ·y_l + δ·δ, y = x − μ₀, δ = μ − μ₀ — and the others (V, and any sample
    coordinate not drawn) are computed from ``w``, which is needed only then
    (``needs_matrix``; None otherwise)."""
    n = plan.n
    v, s = plan.heavy, plan.sample
    if raw is None or drawn is None:
        raw, drawn = None, np.zeros(0, np.int64)
    have = np.isin(s, drawn)
    pos = np.searchsorted(drawn, s)
    fresh = np.concatenate([v, s[~have]])
    if fresh.size and w is None:
        raise ValueError("finish_rows: the expert's matrix is needed (heavy or undrawn rows)")
    light = max(1, n - v.size)
    p = mo.total.size
    heavy_sum = np.zeros(p)
    x = features(w, role) if w is not None else None
    if v.size:
        heavy_sum = _rows_of(w, role, v).sum(axis=0, dtype=np.float64)  # type: ignore[arg-type]
    mu = (mo.total - heavy_sum) / light
    mu32 = mu.astype(np.float32)
    xmu = mo.xt                                               # x_i · μ, from x_i · Σ x_l
    if v.size:                                                # (and a pass only for V)
        xmu = xmu - (x @ heavy_sum.astype(np.float32)).astype(np.float64)  # type: ignore[operator]
    xmu = xmu / light
    d = np.maximum(mo.sq - 2.0 * xmu + mu @ mu, 0.0)          # ‖x_i − μ‖²
    tot = mo.total - n * mu                                   # Σ (x_i − μ)
    r = (mo.xt - n * xmu) - mu @ tot - d                      # K1 − d
    nv = v.size
    from_raw = raw[pos[have]] if raw is not None and have.any() else None  # (a copy)
    q = out if out is not None else np.empty((plan.rows, n), np.float32)
    at = np.concatenate([np.arange(nv), nv + np.flatnonzero(~have)])  # fresh rows' places
    if fresh.size:
        rows = np.empty((fresh.size, n), np.float32)
        _translated_rows(w, role, fresh, mu32, rows)  # type: ignore[arg-type]
        q[at] = rows
    if from_raw is not None:
        if nv:  # from μ₀ to μ
            mu0 = mo.total / n
            delta = mu - mu0
            y_delta = (x @ delta.astype(np.float32)).astype(np.float64) - mu0 @ delta  # type: ignore[operator]
            from_raw += (delta @ delta - y_delta[s[have]][:, None]
                         - y_delta[None, :]).astype(np.float32)
        q[nv + np.flatnonzero(have)] = from_raw
    idx = np.concatenate([v, s])
    q[np.arange(idx.size), idx] = 0.0
    col = np.full(n, np.float32(np.sqrt(2.0)))
    col[v] = 1.0
    q[:nv] *= col
    q[nv:] *= np.float32(np.sqrt(plan.weight))
    q[nv:, v] = 0.0
    return RowRep(q, d, r, float(tot @ tot - d.sum()))


def row_rep(w: np.ndarray, role: str, mo: RowMoments, plan: RowPlan,
            out: np.ndarray | None = None) -> RowRep:
    """Expert ``w``'s rows of K at the plan's coordinates and its exact d, r, t, all from
    ``w`` (``finish_rows`` without raw rows); ``out``: float32 [rows, n] to write q into."""
    return finish_rows(None, None, w, role, mo, plan, out)


def sampled_cka(reps: Sequence[RowRep], same: Sequence[int] | None = None,
                stacked: np.ndarray | None = None) -> np.ndarray:
    """E x E debiased CKA from the experts' ``RowRep`` of one plan: T = one float32 product of
    the stacked rows (float64 result), d, r, t exact. ``same`` as for ``cka.cka_exact``;
    ``stacked``: float32 [E, rows, n] already holding every q (row_rep's ``out``), so that
    they are not copied."""
    q = (stacked.reshape(len(reps), -1) if stacked is not None
         else np.stack([rep.q.reshape(-1) for rep in reps]))
    off = (q @ q.T).astype(np.float64)
    n = reps[0].d.size
    h = canonical(hsic_from_off(off, np.stack([rep.r for rep in reps]),
                                np.array([rep.t for rep in reps]), n), same)
    return cka_from_parts(0.5 * (h + h.T), np.diag(h).copy())
