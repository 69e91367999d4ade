"""Expert similarity (weightvis.moe.cka, moe.summary) against the float64 numpy reference of
MOE.md Appendix A: the acceptance cases of issue 12 — an expert copied into another slot (equal
summary cells, CKA exactly 1), the same expert with its neurons permuted (CKA 1, flattened cosine
near 0), a zeroed expert (zero cells, marked dead, no CKA), unrelated random experts (|debiased
CKA| small) — and the sketched estimate within 0.03 of exact for H >= 512."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from weightvis.executors import InlineExecutor
from weightvis.formats import open_checkpoint
from weightvis.moe.cka import FeatureSketch, cka_exact, features, sketched_cka
from weightvis.options import MoEOptions
from weightvis.tiling import CheckpointSpec

from .moe_fakes import Planted, expert_weights, moe_tensors, write_moe_checkpoint

# --------------------------------------------------------------- MOE.md Appendix A (as run)


def centre(x: np.ndarray) -> np.ndarray:
    return x - x.mean(axis=0, keepdims=True)


def _parts(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    d = np.einsum("ij,ij->i", x, x)
    s = x.sum(0)
    return d, x @ s - d, float(s @ s - d.sum())


def hsic1(x: np.ndarray, y: np.ndarray) -> float:
    n = x.shape[0]
    dx, rx, tx = _parts(x)
    dy, ry, ty = _parts(y)
    tr = np.linalg.norm(x.T @ y) ** 2 - dx @ dy
    return float((tr + tx * ty / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (rx @ ry))
                 / (n * (n - 3)))


def cka_debiased(x: np.ndarray, y: np.ndarray) -> float:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    den = hsic1(x, x) * hsic1(y, y)
    return 0.0 if den <= 0 else hsic1(x, y) / float(np.sqrt(den))


def cka_gram_form(x: np.ndarray, y: np.ndarray) -> float:
    """Song et al.'s estimator written with n x n Grams (a second, independent reference)."""
    def h(k: np.ndarray, lm: np.ndarray) -> float:
        n = k.shape[0]
        k, lm = k.copy(), lm.copy()
        np.fill_diagonal(k, 0)
        np.fill_diagonal(lm, 0)
        one = np.ones(n)
        return float((np.trace(k @ lm) + (one @ k @ one) * (one @ lm @ one) / ((n - 1) * (n - 2))
                      - 2 / (n - 2) * (one @ k @ lm @ one)) / (n * (n - 3)))
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    k, lm = x @ x.T, y @ y.T
    return h(k, lm) / float(np.sqrt(h(k, k) * h(lm, lm)))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


# --------------------------------------------------------------- the estimator


def test_exact_cka_matches_both_references() -> None:
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((70, 30)) for _ in range(3)]
    xs.append(xs[0] @ np.linalg.qr(rng.standard_normal((30, 30)))[0])   # rotated features
    xs.append(0.6 * xs[1] + 0.4 * rng.standard_normal((70, 30)))
    got = cka_exact([x @ x.T for x in xs])
    for a in range(len(xs)):
        for b in range(len(xs)):
            assert got[a, b] == pytest.approx(cka_debiased(xs[a], xs[b]), abs=1e-12)
            assert got[a, b] == pytest.approx(cka_gram_form(xs[a], xs[b]), abs=1e-10)
    assert got[0, 3] == pytest.approx(1.0, abs=1e-12)


def test_invariances_and_debiasing() -> None:
    """Invariant to neuron order, rotations and isotropic scale; random pairs score about 0
    (biased CKA would score p/(n+p))."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((96, 64)).astype(np.float32)        # gate-like [I, H]
    perm = w[rng.permutation(96)]
    grams = [features(m, "gate").astype(np.float64) @ features(m, "gate").astype(np.float64).T
             for m in (w, perm, 7 * w)]
    got = cka_exact(grams)
    assert got[0, 1] == pytest.approx(1.0, abs=1e-12)
    assert got[0, 2] == pytest.approx(1.0, abs=1e-12)
    vals = []
    for seed in range(20):
        r = np.random.default_rng(100 + seed)
        a, b = r.standard_normal((512, 128)), r.standard_normal((512, 128))
        vals.append(cka_exact([a @ a.T, b @ b.T])[0, 1])
    assert abs(np.mean(vals)) < 0.003 and np.std(vals) < 0.01


def _pair_types(h: int, i: int, seed: int, extra: bool = False
                ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Gate-like [I, H] pairs (MOE.md §3.4); ``extra``: and coordinates of unequal scale."""
    rng = np.random.default_rng(seed)
    g = rng.standard_normal
    a = g((i, h))
    basis = g((16, h))
    out = {"random": (a, g((i, h))),
           "low-rank shared subspace": (g((i, 16)) @ basis + 0.3 * 4 * g((i, h)),
                                        g((i, 16)) @ basis + 0.3 * 4 * g((i, h)))}
    for rho in (0.3, 0.7, 1.0):
        b = rho * a + np.sqrt(1 - rho * rho) * g((i, h))
        out[f"permuted copy rho={rho}"] = (a, b[rng.permutation(i)])
    for scale in (30, 300):   # outlier channels: both experts read one huge coordinate
        x, y = g((i, h)), g((i, h))
        x[:, 7] *= scale
        y[:, 7] *= scale
        out[f"both read a x{scale} coordinate"] = (x, y)
    x = g((i, h))
    x[:, 5] *= 30
    out["one reads a x30 coordinate"] = (x, g((i, h)))
    x = g((i, h))
    x[:, [3, 50, 99, 200]] *= 20
    y = 0.7 * x + np.sqrt(1 - 0.49) * g((i, h))
    out["permuted copy rho=0.7, four x20 coordinates"] = (x, y[rng.permutation(i)])
    out["neurons offset"] = (g((i, h)) + 3 * g((i, 1)), g((i, h)) + 3 * g((i, 1)))
    if extra:   # hidden coordinates of unequal scale, as a residual stream has them
        scale = np.exp(g(h))
        x = g((i, h)) * scale
        out["log-normal coordinate scales"] = (x, g((i, h)) * scale)
        y = 0.7 * x + np.sqrt(0.51) * g((i, h)) * scale
        out["log-normal scales, permuted copy rho=0.7"] = (x, y[rng.permutation(i)])
        x, y = g((i, h)), g((i, h))
        x[:, :40] *= 6
        y[:, :40] *= 6
        out["forty x6 coordinates in both"] = (x, y)
    return {k: (x.astype(np.float32), y.astype(np.float32)) for k, (x, y) in out.items()}


def _row_cka(ws: list[np.ndarray], role: str, seed: int, m: int | None = None,
             heavy_max: int = 64) -> np.ndarray:
    from weightvis.moe.sampled import plan_rows, row_moments, row_rep, sample_rows, sampled_cka

    mos = [row_moments(w, role) for w in ws]
    n = mos[0].sq.size
    plan = plan_rows(mos, m or sample_rows(n), heavy_max, (seed, 3, 1))
    return sampled_cka([row_rep(w, role, mo, plan) for w, mo in zip(ws, mos, strict=True)])


@pytest.mark.parametrize("case", ["no heavy", "a x30 coordinate", "every row", "undrawn"])
@pytest.mark.parametrize("role", ["gate", "down"])
def test_first_pass_rows_finish_as_the_direct_rows(case: str, role: str) -> None:
    """The Gram rows made while each expert is read the first time (``raw_rows``, at the
    drawn coordinates, translated by the mean of all rows) and finished once the plan is
    known (``finish_rows``) are the rows ``row_rep`` makes from the matrix: bit for bit
    without heavy coordinates (then the matrix is not needed), and within float32 rounding
    where V moves the translation (a ×30 coordinate), where every coordinate is a row, and
    where the sample holds a coordinate that was not drawn."""
    from weightvis.moe.sampled import (
        draw_sample,
        finish_rows,
        needs_matrix,
        plan_rows,
        raw_rows,
        row_moments,
        row_rep,
        sampled_cka,
    )

    rng = np.random.default_rng(7)
    h, i = 160, 96
    ws = [rng.standard_normal((i, h) if role == "gate" else (h, i)).astype(np.float32) + 0.3
          for _ in range(3)]
    for c in {"a x30 coordinate": [11], "undrawn": [3, 40, 77, 100, 150]}.get(case, []):
        for w in ws:
            (w[:, c] if role == "gate" else w[c])[:] *= 30
    m = {"every row": h, "undrawn": h - 2}.get(case, 24)
    mos = [row_moments(w, role) for w in ws]
    plan = plan_rows(mos, m, 8, (0, 1, 2))
    drawn = draw_sample(h, m, (0, 1, 2))
    if case == "undrawn":  # (all the others are the sample: exact, though two were not drawn)
        assert plan.heavy.size == 5 and plan.weight == 1.0
        assert not np.isin(plan.sample, drawn).all()
    direct = [row_rep(w, role, mo, plan) for w, mo in zip(ws, mos, strict=True)]
    split = []
    for w, mo in zip(ws, mos, strict=True):
        raw = np.empty((drawn.size, h), np.float32)
        raw_rows(w, role, mo, drawn, raw)
        need = needs_matrix(plan, drawn)
        assert need == (case in ("a x30 coordinate", "undrawn"))
        split.append(finish_rows(raw, drawn, w if need else None, role, mo, plan))
    if case == "no heavy":
        assert plan.heavy.size == 0 and np.isin(plan.sample, drawn).all()
        for a, b in zip(direct, split, strict=True):
            assert np.array_equal(a.q, b.q)
    else:
        assert case != "a x30 coordinate" or plan.heavy.tolist() == [11]
        for a, b in zip(direct, split, strict=True):
            scale = np.abs(a.q).max()
            np.testing.assert_allclose(b.q, a.q, rtol=0, atol=2e-5 * scale)
    np.testing.assert_allclose(sampled_cka(split), sampled_cka(direct), rtol=0, atol=1e-5)
    if case == "no heavy":
        with pytest.raises(ValueError):
            finish_rows(None, None, None, role, mos[0], plan)


@pytest.mark.slow
@pytest.mark.parametrize(("h", "i", "role"), [
    (1024, 3584, "gate"), (1024, 1024, "gate"), (1792, 512, "gate"), (1024, 768, "down"),
    (512, 1792, "gate"), (512, 1792, "down")])
def test_row_sample_within_0_03_of_exact(h: int, i: int, role: str) -> None:
    """The default estimator (exact Gram rows at the default sample of hidden coordinates:
    32 from H = 1024, 64 at H = 512) over 4 seeds: every pair type — random, low-rank, permuted
    partial and whole copies, outlier coordinates in both, one or several, coordinates of
    log-normal scale, forty x6 coordinates — within 0.03 of exact float64 CKA (acceptance:
    H >= 512); a copy exactly 1; a permuted copy 1 to float32 rounding."""
    from weightvis.moe.sampled import sample_rows

    assert MoEOptions().sketch_size(8, h, i) == sample_rows(h) == max(32, -(-32768 // h))
    worst = 0.0
    for name, (wa, wb) in _pair_types(h, i, 5, extra=True).items():
        if role == "down":
            wa, wb = np.ascontiguousarray(wa.T), np.ascontiguousarray(wb.T)   # [H, I]
        exact = cka_debiased(features(wa, role), features(wb, role))
        for seed in range(4):
            got = _row_cka([wa, wb, wa.copy()], role, seed)
            assert got[0, 2] == pytest.approx(1.0, abs=1e-12)
            assert abs(got[0, 1] - exact) <= 0.03, (name, seed, got[0, 1], exact)
            if name == "permuted copy rho=1.0":
                assert got[0, 1] == pytest.approx(1.0, abs=1e-5)
            worst = max(worst, abs(got[0, 1] - exact))
    assert worst > 0   # (it is an estimate)


def test_row_sample_is_unbiased_and_exact_with_every_row() -> None:
    """Over many seeds the mean estimate of an unrelated and a related pair is the exact CKA
    (each sum is unbiased: the ratio's bias is far below the spread); a sample that holds
    every coordinate outside V is the exact CKA (float32 products)."""
    pairs = _pair_types(512, 256, 11)
    for name in ("random", "permuted copy rho=0.3"):
        wa, wb = pairs[name]
        exact = cka_debiased(features(wa, "gate"), features(wb, "gate"))
        est = np.array([_row_cka([wa, wb], "gate", s, m=16)[0, 1] for s in range(64)])
        assert abs(est.mean() - exact) < 3 * est.std() / 8 + 1e-3, (name, est.mean(), exact)
        assert est.std() > 1e-4
        full = _row_cka([wa, wb], "gate", 0, m=512)[0, 1]
        assert full == pytest.approx(exact, abs=1e-5)


def test_row_sample_outliers_are_exact() -> None:
    """V holds the coordinates whose squared norm is over 4x the mean in any expert (one
    reads a x30 coordinate, the other a x3: both found), at most ``heavy_max``, the heaviest;
    without V two experts that both read one x300 coordinate are estimated far off."""
    from weightvis.moe.sampled import plan_rows, row_moments

    rng = np.random.default_rng(3)
    wa, wb = rng.standard_normal((2, 600, 512)).astype(np.float32)
    wa[:, 9] *= 30
    wb[:, 40] *= 3
    mos = [row_moments(w, "gate") for w in (wa, wb)]
    plan = plan_rows(mos, 64, 64, (1,))
    assert plan.heavy.tolist() == [9, 40]
    assert plan.sample.size == 64 and not set(plan.sample.tolist()) & {9, 40}
    assert plan.weight == (512 - 2) / 64
    assert plan_rows(mos, 64, 1, (1,)).heavy.tolist() == [9]
    assert plan_rows(mos, 64, 64, (1,)).sample.tolist() == plan.sample.tolist()  # (seeded)
    assert plan_rows(mos, 64, 64, (2,)).sample.tolist() != plan.sample.tolist()
    wa, wb = _pair_types(512, 1792, 7)["both read a x300 coordinate"]
    exact = cka_debiased(features(wa, "gate"), features(wb, "gate"))
    errs = {h: max(abs(_row_cka([wa, wb], "gate", s, heavy_max=h)[0, 1] - exact)
                   for s in range(3)) for h in (0, 64)}
    assert errs[64] < 0.01 and not errs[0] < 0.05, errs


@pytest.mark.slow
@pytest.mark.parametrize(("h", "i", "role", "experts"), [
    (1024, 1024, "gate", 8), (1792, 512, "gate", 8), (1024, 768, "down", 8),
    (512, 1792, "gate", 8), (1792, 512, "down", 256)])
def test_sketched_within_0_03_of_exact(h: int, i: int, role: str, experts: int) -> None:
    """The feature sketches (``cka_sketch="countsketch"``, kept to compare: two CountSketches
    of their default k for the shape: 256, or 512 where I > 2H) over 4 seeds: the pair types
    of MOE.md §3.4 within 0.03 of exact float64 CKA; a copy exactly 1. (Coordinates of
    unequal scale put them off by up to 0.07: README "Accuracy".)"""
    k = MoEOptions(cka_sketch="countsketch").sketch_size(experts, h, i)
    assert k == (512 if i > 2 * h else 256)
    worst = 0.0
    for name, (wa, wb) in _pair_types(h, i, 5).items():
        if role == "down":
            wa, wb = np.ascontiguousarray(wa.T), np.ascontiguousarray(wb.T)   # [H, I]
        exact = cka_debiased(features(wa, role), features(wb, role))
        for seed in range(4):
            fs = FeatureSketch(i, k, (seed, 3, 1))
            got = sketched_cka([fs.apply(wa, role), fs.apply(wb, role), fs.apply(wa.copy(),
                                                                                  role)])
            assert got[0, 2] == 1.0 and got[2, 0] == 1.0
            assert abs(got[0, 1] - exact) <= 0.03, (name, seed, got[0, 1], exact)
            worst = max(worst, abs(got[0, 1] - exact))
    assert worst > 0   # (it is an estimate)


def test_outlier_coordinates_are_exact_not_sketched() -> None:
    """Without the exact heavy rows (``heavy_max=0``) two experts that both read one x300
    coordinate are estimated far off (the old estimator's failure); with them, within 0.01;
    and the heavy rows found are the outlier coordinate's."""
    wa, wb = _pair_types(512, 1792, 7)["both read a x300 coordinate"]
    exact = cka_debiased(features(wa, "gate"), features(wb, "gate"))
    errs = {}
    for heavy in (0, 16):
        fs = FeatureSketch(1792, 256, (1, 2, 3), heavy_max=heavy)
        sa, sb = fs.apply(wa, "gate"), fs.apply(wb, "gate")
        assert sa.heavy.tolist() == ([7] if heavy else [])
        xa = features(wa, "gate").astype(np.float64)
        xc = xa - np.delete(xa, 7, axis=0).mean(axis=0)   # (translated by the light rows)
        if heavy:
            np.testing.assert_allclose(sa.rows[0], xc[7] @ xc.T, rtol=1e-4, atol=1e-3 * 1792)
        errs[heavy] = abs(sketched_cka([sa, sb])[0, 1] - exact)
    assert errs[16] < 0.01 and not errs[0] < 0.01, errs   # (NaN: a negative denominator)


def test_gaussian_sketch_is_unbiased_too() -> None:
    wa, wb = _pair_types(768, 512, 9)["permuted copy rho=0.7"]
    exact = cka_debiased(features(wa, "gate"), features(wb, "gate"))
    est = [sketched_cka([FeatureSketch(512, 128, (s,), "gaussian").apply(w, "gate")
                         for w in (wa, wb)])[0, 1] for s in range(12)]
    assert abs(np.mean(est) - exact) < 0.01


# --------------------------------------------------------------- through the per-layer tasks


def numbers(folder: Path, **opts: Any) -> Any:
    from weightvis.moe import structure
    from weightvis.moe.summary import moe_numbers

    reader = open_checkpoint([str(folder)])
    try:
        st = structure.detect_moe(reader, reader.config)
        return moe_numbers(reader, CheckpointSpec((str(folder),)), st, MoEOptions(**opts),
                           InlineExecutor())
    finally:
        reader.close()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    folder = write_moe_checkpoint(tmp_path_factory.mktemp("moe") / "tiny")
    return folder, moe_tensors()[0]


@pytest.mark.parametrize("mode", ["exact", "sketch"])
def test_acceptance_cases(tiny: tuple[Path, dict[str, np.ndarray]], mode: str) -> None:
    folder, tensors = tiny
    opts = {} if mode == "exact" else {"cka": "sketch", "cka_sample": 64}
    got = numbers(folder, **opts)
    assert all(m == mode for by in got.modes.values() for m in by.values())
    row = {layer: i for i, layer in enumerate(got.layers)}
    layer, copy, src = Planted.copy
    _, perm, _ = Planted.permuted
    for role in got.roles:
        ws = expert_weights(tensors, layer, role, 4)
        cka = got.similarity["cka"][role][layer]
        cos = got.similarity["cosine"][role][layer]
        # a copy in another slot: the same summary cells, CKA and cosine exactly 1
        for stat in got.stats:
            assert got.stats[stat][role][row[layer], copy] == \
                got.stats[stat][role][row[layer], src]
        assert cka[copy, src] == 1.0 and cka[src, copy] == 1.0 and cos[copy, src] == 1.0
        # the same expert with its neurons permuted: CKA 1, cosine near 0 (as the reference)
        x = [features(w, role) for w in ws]
        assert cka[perm, src] == pytest.approx(1.0, abs=1e-9 if mode == "exact" else 0.1)
        assert cos[perm, src] == pytest.approx(cosine(ws[perm], ws[src]), abs=1e-6)
        assert abs(cos[perm, src]) < 0.1
        # unrelated random experts: |debiased CKA| small, and as the reference says
        if mode == "exact":
            assert cka[0, 1] == pytest.approx(cka_debiased(x[0], x[1]), abs=1e-10)
        assert abs(cka[0, 1]) < 0.15
        assert cka[1, 1] == pytest.approx(1.0, abs=1e-12)
    # a zeroed expert: zero cells, marked dead, no CKA / cosine in its row and column
    layer, dead = Planted.dead
    for role in got.roles:
        assert got.dead[role][row[layer], dead]
        assert got.dead[role].sum() == 1
        for stat in ("rms", "mean_abs", "max_over_rms", "stable_rank"):
            assert got.stats[stat][role][row[layer], dead] == 0.0
        assert got.stats["zero_fraction"][role][row[layer], dead] == 1.0
        for metric in ("cka", "cosine"):
            m = got.similarity[metric][role][layer]
            assert np.isnan(m[dead]).all() and np.isnan(m[:, dead]).all()
            others = [e for e in range(4) if e != dead]
            assert np.isfinite(m[np.ix_(others, others)]).all()


def test_a_group_too_big_for_memory_samples_the_cosines(
        tiny: tuple[Path, dict[str, np.ndarray]]) -> None:
    """With room for two matrices, each expert is read twice (once for its sums, once, when
    the group's sums have chosen the row sample, for its Gram rows), not kept; the cosines
    come from every s-th element (the same elements of every expert), near the exact ones;
    copies still exactly 1; CKA and the statistics unchanged."""
    from weightvis.moe.summary import GroupTask, cosine_step, rep_bytes

    folder, tensors = tiny
    sketch = {"cka": "sketch", "cka_sample": 32}
    roomy = numbers(folder, **sketch)
    memory = 2 * 64 * 96 * 4
    tight = numbers(folder, memory=memory, **sketch)
    task = GroupTask(1, "gate", (None,) * 4, "sketch", MoEOptions(memory=memory, **sketch))
    step = cosine_step(4, 64 * 96, memory, rep_bytes(task, (96, 64)))
    assert step == 4
    assert roomy.reads == 3 * 3 * 4 and tight.reads == 2 * roomy.reads
    assert {s for by in tight.cosine_steps.values() for s in by.values()} == {step}
    assert {s for by in roomy.cosine_steps.values() for s in by.values()} == {1}
    layer, copy, src = Planted.copy
    for role in roomy.roles:
        ws = expert_weights(tensors, layer, role, 4)
        sampled = [w.reshape(-1)[::step] for w in ws]
        for layer_id in roomy.layers:
            assert np.array_equal(roomy.similarity["cka"][role][layer_id],
                                  tight.similarity["cka"][role][layer_id], equal_nan=True)
            np.testing.assert_allclose(roomy.similarity["cosine"][role][layer_id],
                                       tight.similarity["cosine"][role][layer_id], atol=0.05)
        assert tight.similarity["cosine"][role][layer][0, 1] == pytest.approx(
            cosine(sampled[0], sampled[1]), abs=1e-6)
        assert tight.similarity["cosine"][role][layer][copy, src] == 1.0
        assert tight.similarity["cka"][role][layer][copy, src] == 1.0
    for stat in roomy.stats:
        for role in roomy.roles:
            assert np.array_equal(roomy.stats[stat][role], tight.stats[stat][role],
                                  equal_nan=True)


def test_a_group_not_kept_takes_its_cosine_stride_from_the_rows_it_has(
        tiny: tuple[Path, dict[str, np.ndarray]]) -> None:
    """Room for the cosines at stride 4 beside the most rows a plan could have (8 sampled + 56
    heavy), at stride 2 beside the rows the plans have: the second pass keeps every 2nd element
    (finer cosines, the same memory bound); CKA and statistics are those of a roomy run."""
    from weightvis.moe.summary import GroupTask, cosine_step, rep_bytes, row_count

    folder, tensors = tiny
    opts = {"cka": "sketch", "cka_sample": 8, "cka_heavy": 56}
    size, n, p = 64 * 96, 64, 96
    memory = 2 * 4 * size + 4 * (64 * n * 4 + (3 * n + p) * 8) + 4 * size
    task = GroupTask(1, "gate", (None,) * 4, "sketch", MoEOptions(memory=memory, **opts))
    assert row_count(task, (96, 64)) == 64
    assert cosine_step(4, size, memory, rep_bytes(task, (96, 64))) == 4
    assert cosine_step(4, size, memory, 4 * (8 * n * 4 + (3 * n + p) * 8)) == 2
    tight = numbers(folder, memory=memory, **opts)
    roomy = numbers(folder, **opts)
    got = {s for by in tight.cosine_steps.values() for s in by.values()}
    assert got and got <= {2, 3} and 2 in got, got
    assert tight.reads == 2 * roomy.reads
    layer, copy, src = Planted.copy
    for role in roomy.roles:
        for layer_id in roomy.layers:
            assert np.array_equal(roomy.similarity["cka"][role][layer_id],
                                  tight.similarity["cka"][role][layer_id], equal_nan=True)
        step = tight.cosine_steps[role][layer]
        ws = [w.reshape(-1)[::step] for w in expert_weights(tensors, layer, role, 4)]
        assert tight.similarity["cosine"][role][layer][0, 1] == pytest.approx(
            cosine(ws[0], ws[1]), abs=1e-6)
        assert tight.similarity["cosine"][role][layer][copy, src] == 1.0


def test_fused_layout_gives_the_same_numbers(tmp_path: Path) -> None:
    a = numbers(write_moe_checkpoint(tmp_path / "per", names="qwen"))
    b = numbers(write_moe_checkpoint(tmp_path / "fused", names="fused"))
    for stat in a.stats:
        for role in a.roles:
            assert np.array_equal(a.stats[stat][role], b.stats[stat][role], equal_nan=True)
    for metric in a.similarity:
        for role in a.roles:
            for layer in a.layers:
                assert np.array_equal(a.similarity[metric][role][layer],
                                      b.similarity[metric][role][layer], equal_nan=True)
    assert np.array_equal(a.row_norm, b.row_norm)


def test_memory_decides_how_many_tasks_run_at_once() -> None:
    """Two matrices being read, the cosine elements at the stride ``memory`` alone allows, and
    the CKA representations per task: a quarter-width Mixtral layer (whole cosines) runs up
    to five tasks in 768 MiB, a full-width one (sampled cosines) one; whole cosines of a
    full-width layer take 2.3 GiB a task."""
    from weightvis.moe.summary import GroupTask, cosine_step, rep_bytes, task_bytes, task_processes

    opts = MoEOptions()
    assert opts.memory == 768 << 20
    small = GroupTask(0, "gate", (None,) * 8, "sketch", opts)
    m = opts.sketch_size(8, 1024, 3584)
    assert m == 32          # (m·H >= 2¹⁵)
    reps = 8 * (m + opts.cka_heavy) * 1024 * 4 + 8 * (3 * 1024 + 3584) * 8
    assert rep_bytes(small, (3584, 1024)) == reps
    feature = GroupTask(0, "gate", (None,) * 8, "sketch", MoEOptions(cka_sketch="countsketch"))
    assert rep_bytes(feature, (3584, 1024)) == 8 * (2 * 512 + 64) * 1024 * 4 + 8 * 2 * 1024 * 8
    size = 3584 * 1024
    assert task_bytes(small, (3584, 1024), opts.memory) == 2 * 4 * size + 8 * 4 * size + reps
    assert task_processes([small], [(3584, 1024)], 8, opts.memory) == 5
    assert task_processes([small], [(3584, 1024)], 2, opts.memory) == 2
    assert task_processes([small], [(3584, 1024)], 1, opts.memory) == 1
    big = 14336 * 4096
    assert cosine_step(8, big, opts.memory, rep_bytes(small, (14336, 4096))) == 6
    assert task_processes([small], [(14336, 4096)], 2, opts.memory) == 1
    assert task_processes([small], [(14336, 4096)], 2, 4 << 30) == 1   # whole cosines: 2.3 GiB
    assert task_processes([small], [(14336, 4096)], 2, 6 << 30) == 2
    exact = small._replace(mode="exact")
    assert rep_bytes(exact, (96, 64)) == 8 * 64 * 64 * 8


def test_numbers_do_not_depend_on_how_many_tasks_run_at_once(
        tiny: tuple[Path, dict[str, np.ndarray]]) -> None:
    """A memory three tasks fit in at once: each task's cosine stride is the one ``memory``
    allows a task alone (a third of it would allow only every 2nd element), so one process
    or three give the same bits."""
    from weightvis.executors import LocalPoolExecutor
    from weightvis.moe import structure
    from weightvis.moe.summary import (
        cosine_step,
        moe_numbers,
        plan_groups,
        rep_bytes,
        task_processes,
    )

    folder, _ = tiny
    reader = open_checkpoint([str(folder)])
    try:
        st = structure.detect_moe(reader, reader.config)
        base = MoEOptions(cka="sketch", cka_sample=32)
        tasks = plan_groups(st, reader, base)
        shapes = [reader.info(t.slices[0].tensor).shape[-2:] for t in tasks]
        size = 64 * 96
        assert all(int(np.prod(s)) == size for s in shapes)
        reps = max(rep_bytes(t, s) for t, s in zip(tasks, shapes, strict=True))
        opts = MoEOptions(cka="sketch", cka_sample=32, memory=3 * (4 * 4 * size + reps))
        assert cosine_step(4, size, opts.memory // 3, reps) == 2
        assert cosine_step(4, size, opts.memory, reps) == 1
        assert task_processes(tasks, shapes, 3, opts.memory) >= 2
        spec = CheckpointSpec((str(folder),))
        one = moe_numbers(reader, spec, st, opts, InlineExecutor())
        three = moe_numbers(reader, spec, st, opts, LocalPoolExecutor(3))
    finally:
        reader.close()
    assert {s for by in three.cosine_steps.values() for s in by.values()} == {1}
    assert one.cosine_steps == three.cosine_steps
    for metric in ("cka", "cosine"):
        for role in one.roles:
            for layer in one.layers:
                assert np.array_equal(one.similarity[metric][role][layer],
                                      three.similarity[metric][role][layer], equal_nan=True)


@pytest.mark.parametrize("axis", [0, 1])
def test_sketch_pass_matches_the_dense_countsketch(axis: int) -> None:
    """Both CountSketches, the examples' squared norms and the features' sums of one pass
    equal the float64 products with the dense ±1 maps (features along ``axis``)."""
    from weightvis.kernels.moe import sketch_pass

    rng = np.random.default_rng(7)
    w = (rng.standard_normal((75, 133)) * rng.uniform(0.1, 10, (75, 1))).astype(np.float32)
    p, k = w.shape[axis], 16
    x = (w.T if axis == 0 else w).astype(np.float64)          # [n examples, p features]
    maps = tuple((rng.integers(0, k, p), rng.choice([-1.0, 1.0], p).astype(np.float32))
                 for _ in range(2))
    got = sketch_pass(w, axis, maps, k)
    for z, (bucket, sign) in zip((got.z1, got.z2), maps, strict=True):
        dense = np.zeros((k, p))
        dense[bucket, np.arange(p)] = sign
        np.testing.assert_allclose(z, dense @ x.T, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(got.sq, (x * x).sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(got.total, x.sum(axis=0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("axis", [0, 1])
def test_example_sums_match_float64(axis: int) -> None:
    """The row sample's one pass: the examples' squared norms and the features' sums equal
    the float64 reductions (features along ``axis``)."""
    from weightvis.kernels.moe import example_sums

    rng = np.random.default_rng(8)
    w = (rng.standard_normal((75, 133)) * rng.uniform(0.1, 10, (75, 1))).astype(np.float32)
    x = (w.T if axis == 0 else w).astype(np.float64)          # [n examples, p features]
    sq, total = example_sums(w, axis)
    np.testing.assert_allclose(sq, (x * x).sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(total, x.sum(axis=0), rtol=1e-12, atol=1e-12)
