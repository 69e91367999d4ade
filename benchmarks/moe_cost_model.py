#!/usr/bin/env python3
"""The cost of the MoE numbers for a DeepSeek-V3-sized model, from measured per-expert and
per-pair costs (weightvis.moe on this machine, one core: OPENBLAS_NUM_THREADS=1).

DeepSeek-V3: 58 MoE layers x 3 roles (gate, up, down) x 256 routed experts, H = 7168,
I = 2048. Per expert (one random float32 matrix of each shape, CPU time, best of --repeat):
statistics (moments), stable rank (Lanczos at the default tolerance), the two CountSketches;
per (layer, role): the pair product of the sketches (E·k x H times H x E·k, timed on one tile
of experts and scaled), the cosines' dots over the sampled elements. Reading and decoding the
weights (654 GB of FP8) is not included: it is bound by the storage, once per expert::

    OPENBLAS_NUM_THREADS=1 python benchmarks/moe_cost_model.py --k 128
    OPENBLAS_NUM_THREADS=1 python benchmarks/moe_cost_model.py --k 256 --out-json x.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from weightvis.kernels.moe import moments  # noqa: E402
from weightvis.moe.cka import FeatureSketch  # noqa: E402
from weightvis.moe.stats import top_singular_value  # noqa: E402
from weightvis.moe.summary import cosine_step  # noqa: E402
from weightvis.options import MoEOptions  # noqa: E402


def cpu(f: Callable[[], Any], repeat: int) -> float:
    f()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        f()
        best = min(best, time.process_time() - t0)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=58)
    ap.add_argument("--experts", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=7168)
    ap.add_argument("--inter", type=int, default=2048)
    ap.add_argument("--k", type=int, default=None, help="default: weightvis's for E experts")
    ap.add_argument("--tile", type=int, default=8, help="experts per timed pair tile")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--memory", type=int, default=MoEOptions().memory)
    ap.add_argument("--out-json", type=Path)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    h, i, e = a.hidden, a.inter, a.experts
    k = a.k or MoEOptions().sketch_size(e, h, i)
    gate = (rng.standard_normal((i, h), dtype=np.float32) * 0.02)
    down = np.ascontiguousarray(gate.T)
    per: dict[str, float] = {}
    per["moments"] = (cpu(lambda: moments(gate), a.repeat) * 2
                      + cpu(lambda: moments(down), a.repeat)) / 3
    steps = top_singular_value(gate)[1]
    per["stable_rank"] = (cpu(lambda: top_singular_value(gate), a.repeat) * 2
                          + cpu(lambda: top_singular_value(down), a.repeat)) / 3
    fs_g = FeatureSketch(i, k, (0, 0, 0))
    per["sketches"] = (cpu(lambda: fs_g.apply(gate, "gate"), a.repeat) * 2
                       + cpu(lambda: fs_g.apply(down, "down"), a.repeat)) / 3
    step = cosine_step(e, h * i, a.memory, 2 * e * k * h * 4)
    sample = gate.reshape(-1)[::step].copy()
    per["cosine_dot_per_pair"] = cpu(lambda: float(np.dot(sample, sample)), a.repeat)
    z1 = rng.standard_normal((a.tile * k, h), dtype=np.float32)
    z2 = rng.standard_normal((e * k, h), dtype=np.float32)

    def tile() -> None:
        g = z1 @ z2.T
        np.square(g, out=g)
        g.reshape(a.tile, k, e, k).sum(axis=(1, 3), dtype=np.float64)

    t_tile = cpu(tile, max(1, a.repeat - 1))
    groups = a.layers * 3
    per_group = {
        "experts": e * (per["moments"] + per["stable_rank"] + per["sketches"]),
        "pairs": t_tile * e / a.tile,
        "cosines": per["cosine_dot_per_pair"] * e * (e + 1) / 2,
    }
    macs = {"pairs_per_group": e * e * k * k * h, "sketch_gmac_s": 2 * a.tile * k * e * k * h
            / 2 / t_tile / 1e9}
    total = {key: v * groups for key, v in per_group.items()}
    cpu_s = sum(total.values())
    res = {"shape": {"layers": a.layers, "experts": e, "hidden": h, "inter": i, "k": k},
           "per_expert_s": per, "lanczos_steps": steps, "cosine_step": step,
           "pair_tile_s": t_tile, "per_group_s": per_group, "total_cpu_s": total,
           "pair_gmac_per_s": round(a.tile * k * e * k * h / t_tile / 1e9, 1),
           "hours_on_cores": cpu_s / 3600 / a.cores, "cores": a.cores,
           "memory_per_task_bytes": {"sketches": 2 * e * k * h * 4,
                                     "cosine_samples": e * (h * i // step) * 4,
                                     "pair_tile": a.tile * k * e * k * 4,
                                     "one_matrix": h * i * 4}, "macs": macs}
    print(json.dumps(res, indent=1))
    one = 1e3 * sum(per[x] for x in ("moments", "stable_rank", "sketches"))
    print(f"DeepSeek-V3-sized ({a.layers} layers x 3 roles x {e} experts, H={h}, I={i}, "
          f"k={k}): per expert {one:.0f} ms "
          f"(stable rank {steps} steps); pairs {per_group['pairs']:.1f} s per group "
          f"({res['pair_gmac_per_s']} GMAC/s); total {cpu_s / 3600:.1f} CPU-hours = "
          f"{res['hours_on_cores']:.1f} h on {a.cores} cores (reading the weights not "
          f"included)")
    if a.out_json:
        a.out_json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
