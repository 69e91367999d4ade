#!/usr/bin/env python3
"""Sketched debiased CKA against exact (weightvis.moe.cka), for the pair types of MOE.md §3.4.

For each pair type (gate-like W [I, H]: examples = H, features = I), the exact debiased CKA and
the cross-sketch estimate from two independent CountSketch maps and from two Gaussian maps, at
several sketch sizes k over several seeds: the RMS and the largest error against exact, and the
time to sketch one expert. Prints a table; ``--out-json`` keeps the numbers::

    OPENBLAS_NUM_THREADS=1 python benchmarks/cka_sketch_error.py --hidden 1792 --inter 512
    OPENBLAS_NUM_THREADS=1 python benchmarks/cka_sketch_error.py --hidden 512 --inter 1792
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=1792)
    ap.add_argument("--inter", type=int, default=512)
    ap.add_argument("--ks", default="64,128,256")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--out-json")
    a = ap.parse_args()
    ks = [int(k) for k in a.ks.split(",")]
    rng = np.random.default_rng(0)
    rows = []
    for name, wa, wb in pairs(a.hidden, a.inter, rng):
        wa, wb = wa.astype(np.float32), wb.astype(np.float32)
        grams = [w.T.astype(np.float64) @ w.astype(np.float64) for w in (wa, wb)]
        exact = float(cka_exact(grams)[0, 1])
        row = {"pair": name, "exact": exact}
        for kind in ("countsketch", "gaussian"):
            for k in ks:
                errs, secs = [], []
                for seed in range(a.seeds):
                    fs = FeatureSketch(a.inter, k, (seed, 0, 0), kind)  # type: ignore[arg-type]
                    t0 = time.perf_counter()
                    sa = fs.apply(wa, "gate")
                    secs.append(time.perf_counter() - t0)
                    sb = fs.apply(wb, "gate")
                    errs.append(float(sketched_cka([sa, sb])[0, 1]) - exact)
                e = np.array(errs)
                row[f"{kind}_k{k}"] = {"rms": float(np.sqrt(np.mean(e * e))),
                                       "max": float(np.abs(e).max()),
                                       "mean": float(e.mean()),
                                       "sketch_ms": 1e3 * float(np.median(secs))}
        rows.append(row)
        cells = "  ".join(f"{kind[:5]} k{k}: rms {row[f'{kind}_k{k}']['rms']:.4f} "
                          f"max {row[f'{kind}_k{k}']['max']:.4f}"
                          for kind in ("countsketch", "gaussian") for k in ks)
        print(f"{name:48s} exact {exact:+.4f}  {cells}", flush=True)
    for kind in ("countsketch", "gaussian"):
        for k in ks:
            ms = np.median([r[f"{kind}_k{k}"]["sketch_ms"] for r in rows])
            worst = max(r[f"{kind}_k{k}"]["max"] for r in rows)
            print(f"{kind:12s} k={k:4d}: sketch one expert {ms:7.2f} ms; worst |error| {worst:.4f}")
    if a.out_json:
        Path(a.out_json).write_text(json.dumps({"hidden": a.hidden, "inter": a.inter,
                                                "seeds": a.seeds, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
