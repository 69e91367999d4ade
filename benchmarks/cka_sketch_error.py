#!/usr/bin/env python3
"""Estimated debiased CKA against exact, for the pair types of MOE.md §3.4 and hidden
coordinates of unequal scale.

For each pair type (gate-like W [I, H]: examples = H, features = I), the exact debiased CKA and
the estimates over several seeds: the row sample (weightvis.moe.sampled, the default: exact Gram
rows at m shared hidden coordinates, ``--ms``, 0 = the default m for H) and the cross-sketch
estimate from two independent CountSketch or Gaussian maps of k features (weightvis.moe.cka,
``--ks``, ``--kinds``). Per estimator and size: the RMS and the largest error against exact,
and the time for one expert's representation. Prints a table; ``--out-json`` keeps the
numbers::

    OPENBLAS_NUM_THREADS=1 python benchmarks/cka_sketch_error.py --hidden 1024 --inter 3584
    OPENBLAS_NUM_THREADS=1 python benchmarks/cka_sketch_error.py --hidden 512 --inter 1792 \
        --ms 0,32 --ks 512 --kinds countsketch
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from weightvis.moe.cka import FeatureSketch, cka_exact, sketched_cka  # noqa: E402
from weightvis.moe.sampled import (  # noqa: E402
    plan_rows,
    row_moments,
    row_rep,
    sample_rows,
    sampled_cka,
)


def pairs(h: int, i: int, rng: np.random.Generator) -> Iterator[tuple[str, np.ndarray,
                                                                     np.ndarray]]:
    """(name, W_a, W_b) as float32 [I, H] gate-like matrices (MOE.md §3.4's pair types)."""
    def g(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape)

    yield "independent random", g(i, h), g(i, h)
    basis = g(16, h)
    for sigma in (0.3, 1.0):
        yield (f"low-rank 16 shared input subspace + noise {sigma}",
               g(i, 16) @ basis + sigma * g(i, h) * np.sqrt(16),
               g(i, 16) @ basis + sigma * g(i, h) * np.sqrt(16))
    for rho in (0.3, 0.7, 1.0):
        a = g(i, h)
        b = rho * a + np.sqrt(1 - rho * rho) * g(i, h)
        yield f"permuted partial copy rho={rho}", a, b[rng.permutation(i)]
    for scale in (30, 100):
        a, b = g(i, h), g(i, h)
        a[:, 7] *= scale
        b[:, 7] *= scale
        yield f"both read one x{scale} outlier coordinate", a, b
    a, b = g(i, h), g(i, h)
    a[:, 7] *= 30
    yield "one x30 outlier coordinate in one expert only", a, b
    a = g(i, h)
    a[:, [3, 50, 99, 200]] *= 20
    b = 0.7 * a + np.sqrt(1 - 0.49) * g(i, h)
    yield "permuted partial copy rho=0.7, four x20 outlier coordinates", a, b[rng.permutation(i)]
    a, b = g(i, h), g(i, h)
    yield "independent, each neuron offset by N(0, 3)", a + 3 * g(i, 1), b + 3 * g(i, 1)
    for spread in (1.0, 1.5):   # a residual stream's coordinates are of unequal scale
        scale = np.exp(spread * g(h))
        yield f"independent, coordinate scales log-normal({spread})", g(i, h) * scale, \
            g(i, h) * scale
    scale = np.exp(g(h))
    a = g(i, h) * scale
    b = 0.7 * a + np.sqrt(0.51) * g(i, h) * scale
    yield "permuted partial copy rho=0.7, coordinate scales log-normal(1)", a, \
        b[rng.permutation(i)]
    a, b = g(i, h), g(i, h)
    a[:, :40] *= 6
    b[:, :40] *= 6
    yield "independent, forty x6 coordinates in both", a, b


def row_estimate(wa: np.ndarray, wb: np.ndarray, m: int, seed: int, heavy: int = 64) -> float:
    mos = [row_moments(w, "gate") for w in (wa, wb)]
    plan = plan_rows(mos, m, heavy, (seed, 0, 0))
    reps = [row_rep(w, "gate", mo, plan) for w, mo in zip((wa, wb), mos, strict=True)]
    return float(sampled_cka(reps)[0, 1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=1792)
    ap.add_argument("--inter", type=int, default=512)
    ap.add_argument("--ms", default="0", help="row sample sizes (0: the default for H)")
    ap.add_argument("--ks", default="256", help="feature sketch sizes")
    ap.add_argument("--kinds", default="countsketch", help="feature sketches: countsketch,"
                    "gaussian (empty: none)")
    ap.add_argument("--heavy", type=int, default=64, help="row sample: most heavy rows")
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--out-json")
    a = ap.parse_args()
    ms = [int(m) or sample_rows(a.hidden) for m in a.ms.split(",") if m]
    ks = [int(k) for k in a.ks.split(",") if k]
    kinds = [k for k in a.kinds.split(",") if k]
    estimators = [(f"rows_m{m}", "rows", m) for m in ms] + \
        [(f"{kind}_k{k}", kind, k) for kind in kinds for k in ks]
    rng = np.random.default_rng(0)
    rows = []
    for name, wa, wb in pairs(a.hidden, a.inter, rng):
        wa, wb = wa.astype(np.float32), wb.astype(np.float32)
        grams = [w.T.astype(np.float64) @ w.astype(np.float64) for w in (wa, wb)]
        exact = float(cka_exact(grams)[0, 1])
        row = {"pair": name, "exact": exact}
        for key, kind, size in estimators:
            errs, secs = [], []
            for seed in range(a.seeds):
                t0 = time.perf_counter()
                if kind == "rows":
                    errs.append(row_estimate(wa, wb, size, seed, a.heavy) - exact)
                    secs.append((time.perf_counter() - t0) / 2)
                    continue
                fs = FeatureSketch(a.inter, size, (seed, 0, 0), kind)  # type: ignore[arg-type]
                sa = fs.apply(wa, "gate")
                secs.append(time.perf_counter() - t0)
                sb = fs.apply(wb, "gate")
                errs.append(float(sketched_cka([sa, sb])[0, 1]) - exact)
            e = np.array(errs)
            row[key] = {"rms": float(np.sqrt(np.mean(e * e))), "max": float(np.abs(e).max()),
                        "mean": float(e.mean()), "ms_per_expert": 1e3 * float(np.median(secs))}
        rows.append(row)
        cells = "  ".join(f"{key}: max {row[key]['max']:.4f}" for key, _, _ in estimators)
        print(f"{name:62s} exact {exact:+.4f}  {cells}", flush=True)
    for key, _, _ in estimators:
        ms_ = np.median([r[key]["ms_per_expert"] for r in rows])
        worst = max(r[key]["max"] for r in rows)
        print(f"{key:16s}: one expert {ms_:7.2f} ms; worst |error| {worst:.4f}")
    if a.out_json:
        Path(a.out_json).write_text(json.dumps({"hidden": a.hidden, "inter": a.inter,
                                                "seeds": a.seeds, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
