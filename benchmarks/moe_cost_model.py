#!/usr/bin/env python3
"""The cost of the MoE numbers for a DeepSeek-V3-sized model, from measured per-expert and
per-pair costs (weightvis.moe on this machine, one core: OPENBLAS_NUM_THREADS=1).

DeepSeek-V3: 58 MoE layers x 3 roles (gate, up, down) x 256 routed experts, H = 7168,
I = 2048. Per expert (one random float32 matrix of each shape, CPU time, best of --repeat):
statistics (moments), stable rank (Lanczos at the default tolerance), the row sample's sums and
its Gram rows (m sampled + ``--heavy`` heavy coordinates: weightvis.moe.sampled); per
(layer, role): the pairs (one product of the E experts' stacked rows, timed on a tile of
experts and scaled), the cosines' dots over the sampled elements. Reading and decoding the
weights (654 GB of FP8) is not included: it is bound by the storage, once per expert (twice
where a group's matrices are not kept: DeepSeek-V3's are not)::

    OPENBLAS_NUM_THREADS=1 python benchmarks/moe_cost_model.py
    OPENBLAS_NUM_THREADS=1 python benchmarks/moe_cost_model.py --m 64 --heavy 16 --out-json x.json
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
from weightvis.moe.sampled import plan_rows, row_moments, row_rep  # noqa: E402
from weightvis.moe.stats import top_singular_value  # noqa: E402
from weightvis.moe.summary import GroupTask, cosine_step, rep_bytes, row_count  # noqa: E402
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
    ap.add_argument("--m", type=int, default=None, help="default: weightvis's for H")
    ap.add_argument("--heavy", type=int, default=0, help="heavy coordinates assumed per group")
    ap.add_argument("--tile", type=int, default=16, help="experts per timed pair tile")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--memory", type=int, default=MoEOptions().memory)
    ap.add_argument("--out-json", type=Path)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    h, i, e = a.hidden, a.inter, a.experts
    opts = MoEOptions(cka_sample=a.m, memory=a.memory)
    m = opts.sketch_size(e, h, i)
    gate = (rng.standard_normal((i, h), dtype=np.float32) * 0.02)
    down = np.ascontiguousarray(gate.T)
    per: dict[str, float] = {}
    per["moments"] = (cpu(lambda: moments(gate), a.repeat) * 2
                      + cpu(lambda: moments(down), a.repeat)) / 3
    steps = top_singular_value(gate)[1]
    per["stable_rank"] = (cpu(lambda: top_singular_value(gate), a.repeat) * 2
                          + cpu(lambda: top_singular_value(down), a.repeat)) / 3
    mo_g, mo_d = row_moments(gate, "gate"), row_moments(down, "down")
    per["row_sums"] = (cpu(lambda: row_moments(gate, "gate"), a.repeat) * 2
                       + cpu(lambda: row_moments(down, "down"), a.repeat)) / 3
    plan = plan_rows([mo_g], m, 0, (0, 0, 0))
    heavy = np.sort(rng.choice(np.setdiff1d(np.arange(h), plan.sample), a.heavy, replace=False))
    plan = plan._replace(heavy=heavy.astype(np.int64))
    per["gram_rows"] = (cpu(lambda: row_rep(gate, "gate", mo_g, plan), a.repeat) * 2
                        + cpu(lambda: row_rep(down, "down", mo_d, plan), a.repeat)) / 3
    task = GroupTask(0, "gate", (None,) * e, "sketch", opts)
    step = cosine_step(e, h * i, a.memory, rep_bytes(task, (i, h)))
    sample = gate.reshape(-1)[::step].copy()
    per["cosine_dot_per_pair"] = cpu(lambda: float(np.dot(sample, sample)), a.repeat)
    rows = plan.rows
    q = rng.standard_normal((e, rows * h), dtype=np.float32)

    def tile() -> None:
        (q[:a.tile] @ q.T).astype(np.float64)

    t_tile = cpu(tile, max(1, a.repeat - 1))
    groups = a.layers * 3
    per_group = {
        "experts": e * (per["moments"] + per["stable_rank"] + per["row_sums"]
                        + per["gram_rows"]),
        "pairs": t_tile * e / a.tile,
        "cosines": per["cosine_dot_per_pair"] * e * (e + 1) / 2,
    }
    macs = {"gram_rows_per_expert": rows * h * i, "pairs_per_group": e * e * rows * h}
    total = {key: v * groups for key, v in per_group.items()}
    cpu_s = sum(total.values())
    res = {"shape": {"layers": a.layers, "experts": e, "hidden": h, "inter": i, "m": m,
                     "heavy": a.heavy, "rows": rows},
           "per_expert_s": per, "lanczos_steps": steps, "cosine_step": step,
           "pair_tile_s": t_tile, "per_group_s": per_group, "total_cpu_s": total,
           "gram_rows_gmac_per_s": round(rows * h * i / per["gram_rows"] / 1e9, 1),
           "hours_on_cores": cpu_s / 3600 / a.cores, "cores": a.cores,
           "memory_per_task_bytes": {"representations": rep_bytes(task, (i, h)),
                                     "rows_at_most": row_count(task, (i, h)),
                                     "cosine_samples": e * (h * i // step) * 4,
                                     "one_matrix": h * i * 4}, "macs": macs}
    print(json.dumps(res, indent=1))
    one = 1e3 * sum(per[x] for x in ("moments", "stable_rank", "row_sums", "gram_rows"))
    print(f"DeepSeek-V3-sized ({a.layers} layers x 3 roles x {e} experts, H={h}, I={i}, "
          f"m={m}, {a.heavy} heavy): per expert {one:.0f} ms (stable rank {steps} steps, "
          f"Gram rows {1e3 * per['gram_rows']:.0f} ms); pairs {per_group['pairs']:.2f} s per "
          f"group; total {cpu_s / 3600:.2f} CPU-hours = {res['hours_on_cores']:.2f} h on "
          f"{a.cores} cores (reading the weights not included)")
    if a.out_json:
        a.out_json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
