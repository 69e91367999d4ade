#!/usr/bin/env python3
"""Dask executor against the local pool, 1 -> 2 worker scaling, and a projection of a 671B
DeepSeek-V3 render on 8 / 64 / 256 workers checked on a scaled-down configuration.

Steps (one run, so the ratios come from the same machine state)::

    python benchmarks/dask_scaling.py --out-json benchmarks/results/r2-dask.json

1. A ≥ 1 B-parameter synthetic Llama checkpoint (bench.ensure_checkpoint, cached, bf16).
2. Renders with the CLI: the local pool (``--workers 2``), Dask with 2 and with 1 worker
   (``--scheduler tcp://…`` of a ``LocalCluster`` this script started and warmed beforehand: the
   "existing cluster" case; the cost of starting one is reported apart).
3. The model's inputs, each measured here:
   - ``c_leaf``: worker seconds per leaf tile (tile-phase wall time of the 1-worker Dask run ÷
     its leaf tiles; upper levels included, they are ~1/3 as many and cheaper);
   - ``fixed``: the render's wall time outside the tile phase (open, layout, manifest), per
     tensor, from the many-tensors twin (``benchmarks/many_tensors.py`` checkpoint) — measured
     as the 1-worker wall time minus its tiles × c_leaf;
   - ``o_task``: the scheduler's per-task overhead (2,000 no-op tasks on the same cluster);
   - ``bw``: write bandwidth of the output folder (tile-sized files, this machine) and the
     bytes per leaf tile from the 1 B run.
   Prediction: ``wall(W) = fixed_per_tensor · tensors + max(leaves · c_leaf / W, bytes / bw)
   + tasks · o_task``, with tile counts from the layout itself (shapes only, no weights).
4. The check: the model calibrated on the 1 B run predicts the 2-worker Dask wall time of the
   DeepSeek-V3-shaped many-tensors checkpoint; the measurement is compared (target: within 25 %).
5. The projection for DeepSeek-V3 671B (its real shapes from config.json; FP8 weights count
   one pixel per element) on 8, 64 and 256 workers, with per-worker storage bandwidth assumed
   equal to this machine's (say so when quoting it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (  # noqa: E402  (a sibling script, not a package)
    DEFAULT_CACHE,
    REPO_ROOT,
    _python_env,
    ensure_checkpoint,
    run_measured,
    warm_page_cache,
    write_json,
)

TARGET_OVERHEAD = 0.15
TARGET_PREDICTION = 0.25


def _cli(python: str, src: Path, out: Path, extra: Sequence[str]) -> dict[str, Any]:
    cmd = [python, "-m", "weightvis", str(src), "--out", str(out), "-q", *extra]
    m = run_measured(cmd, env=_python_env({"WEIGHTVIS_TIMING": str(out) + ".timing.json"}))
    if m.returncode != 0:
        raise SystemExit(f"render failed: {cmd}\n{m.stderr_tail}")
    timing = json.loads(Path(str(out) + ".timing.json").read_text())
    return {"wall_s": round(m.wall_s, 3), "cpu_s": round(m.cpu_user_s + m.cpu_sys_s, 3),
            "peak_rss_tree_bytes": m.peak_rss_sum, **timing}


def _best(python: str, src: Path, work: Path, label: str, extra: Sequence[str],
          repeats: int) -> dict[str, Any]:
    runs = []
    for i in range(repeats):
        out = work / f"{label}-{i}"
        runs.append(_cli(python, src, out, extra))
        subprocess.run(["rm", "-rf", str(out)], check=True)
    best = min(runs, key=lambda r: r["wall_s"])
    return {**best, "all_wall_s": [r["wall_s"] for r in runs]}


def _task_overhead(address: str, n: int = 2000) -> float:
    import distributed

    with distributed.Client(address, set_as_default=False) as c:
        c.gather(c.map(int, range(50), pure=False))  # warm the path
        t0 = time.perf_counter()
        c.gather(c.map(int, range(n), pure=False))
        return (time.perf_counter() - t0) / n


def _write_bandwidth(folder: Path, tile_bytes: int, count: int = 400) -> float:
    payload = os.urandom(tile_bytes)
    with tempfile.TemporaryDirectory(dir=folder) as d:
        t0 = time.perf_counter()
        for i in range(count):
            with open(os.path.join(d, f"{i}.png"), "wb") as f:
                f.write(payload)
        os.sync()
        return tile_bytes * count / (time.perf_counter() - t0)


def deepseek_v3_shapes() -> list[tuple[str, tuple[int, ...]]]:
    """DeepSeek-V3's tensors as released (config.json of deepseek-ai/DeepSeek-V3): names and
    shapes of the weights (the FP8 block scales are left out: they are not drawn as weights)."""
    h, inter, moe, vocab, layers, dense = 7168, 18432, 2048, 129280, 61, 3
    q_lora, kv_lora, heads, nope, rope, v = 1536, 512, 128, 128, 64, 128
    out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (vocab, h))]
    for n in range(layers):
        p = f"model.layers.{n}"
        out += [(f"{p}.input_layernorm.weight", (h,)),
                (f"{p}.self_attn.q_a_proj.weight", (q_lora, h)),
                (f"{p}.self_attn.q_a_layernorm.weight", (q_lora,)),
                (f"{p}.self_attn.q_b_proj.weight", (heads * (nope + rope), q_lora)),
                (f"{p}.self_attn.kv_a_proj_with_mqa.weight", (kv_lora + rope, h)),
                (f"{p}.self_attn.kv_a_layernorm.weight", (kv_lora,)),
                (f"{p}.self_attn.kv_b_proj.weight", (heads * (nope + v), kv_lora)),
                (f"{p}.self_attn.o_proj.weight", (h, heads * v)),
                (f"{p}.post_attention_layernorm.weight", (h,))]
        if n < dense:
            out += [(f"{p}.mlp.{r}_proj.weight", s) for r, s in
                    (("gate", (inter, h)), ("up", (inter, h)), ("down", (h, inter)))]
            continue
        out += [(f"{p}.mlp.gate.weight", (256, h)),
                (f"{p}.mlp.gate.e_score_correction_bias", (256,))]
        for q in [f"{p}.mlp.experts.{e}" for e in range(256)] + [f"{p}.mlp.shared_experts"]:
            out += [(f"{q}.gate_proj.weight", (moe, h)), (f"{q}.up_proj.weight", (moe, h)),
                    (f"{q}.down_proj.weight", (h, moe))]
    out += [("model.norm.weight", (h,)), ("lm_head.weight", (vocab, h))]
    return out


def tile_counts(shapes: Sequence[tuple[str, tuple[int, ...]]]) -> dict[str, int]:
    """Leaf and total tiles of the main scene for these tensors (the layout needs no weights)."""
    sys.path.insert(0, str(REPO_ROOT))
    from weightvis.layout import arch_layout
    from weightvis.tiling import Geometry
    from weightvis.types import TensorInfo

    lay = arch_layout([TensorInfo(n, s, "BF16", "x.safetensors") for n, s in shapes])
    geo = Geometry(lay)
    return {"tensors": len(shapes), "elements": sum(math.prod(s) for _, s in shapes),
            "leaves": len(geo.occupied[geo.max_zoom]),
            "tiles": sum(len(o) for o in geo.occupied),
            "canvas": [lay.c_width, lay.c_height]}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default=1_100_000_000, type=int,
                    help="parameters of the synthetic checkpoint (default 1.1 B)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--many", type=Path, default=None,
                    help="the many-tensors checkpoint for the check (default: generate with "
                         "benchmarks/many_tensors.py's settings)")
    ap.add_argument("--out-json", type=Path, default=None)
    args = ap.parse_args(argv)
    import distributed

    python = sys.executable
    src, meta = ensure_checkpoint(args.cache, args.params, seed=0, vocab=32000, tied=False)
    warm_page_cache(src)
    if args.many is None:
        from many_tensors import SHARDS, deepseek_config, deepseek_specs, ensure

        args.many = ensure(args.cache, f"deepseek-e256-x{SHARDS}", deepseek_specs(256), 0,
                           SHARDS, deepseek_config(256))
    warm_page_cache(args.many)
    work = Path(tempfile.mkdtemp(prefix="dask-bench-", dir=args.cache / "runs"
                                 if (args.cache / "runs").is_dir() else None))
    res: dict[str, Any] = {"when": time.strftime("%Y-%m-%dT%H:%M:%S"), "cpus": os.cpu_count(),
                           "checkpoint": str(src), "elements": meta["shape"]}
    clusters = {}
    try:
        for n in (1, 2):
            t0 = time.perf_counter()
            clusters[n] = distributed.LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address=None, silence_logs=50)
            res[f"cluster_start_{n}_s"] = round(time.perf_counter() - t0, 3)
        # warm: the kernels load on every worker once (an existing cluster has done this)
        for n, c in clusters.items():
            _cli(python, args.many, work / f"warm-{n}", ["--scheduler", c.scheduler_address])
        res["local_2"] = _best(python, src, work, "local2", ["--workers", "2"], args.repeats)
        res["dask_2"] = _best(python, src, work, "dask2",
                              ["--scheduler", clusters[2].scheduler_address], args.repeats)
        res["dask_1"] = _best(python, src, work, "dask1",
                              ["--scheduler", clusters[1].scheduler_address], args.repeats)
        res["many_dask_1"] = _best(python, args.many, work, "many1",
                                   ["--scheduler", clusters[1].scheduler_address], args.repeats)
        res["many_dask_2"] = _best(python, args.many, work, "many2",
                                   ["--scheduler", clusters[2].scheduler_address], args.repeats)
        res["o_task_s"] = _task_overhead(clusters[2].scheduler_address)
    finally:
        for c in clusters.values():
            c.close()
    res["overhead_vs_local"] = round(res["dask_2"]["wall_s"] / res["local_2"]["wall_s"] - 1, 3)
    res["speedup_1_to_2"] = round(res["dask_1"]["wall_s"] / res["dask_2"]["wall_s"], 3)

    # the model, calibrated on the big checkpoint's 1-worker run
    d1 = res["dask_1"]
    c_leaf = d1["tiles_s"] / d1["leaves"]
    bytes_per_tile = d1["bytes"] / d1["tiles"]
    bw = _write_bandwidth(work, int(bytes_per_tile))
    m1 = res["many_dask_1"]
    fixed_per_tensor = max(0.0, m1["wall_s"] - m1["leaves"] * c_leaf) / m1["tensors"]
    res["model"] = {"c_leaf_s": c_leaf, "bytes_per_tile": bytes_per_tile,
                    "write_bw_bytes_s": bw, "fixed_per_tensor_s": fixed_per_tensor,
                    "o_task_s": res["o_task_s"]}

    def predict(tensors: int, leaves: int, tiles: int, workers: int) -> float:
        tasks = 4 * workers
        return (fixed_per_tensor * tensors
                + max(leaves * c_leaf / workers, tiles * bytes_per_tile / (bw * workers))
                + tasks * res["o_task_s"])

    # the check: the DeepSeek-shaped many-tensors checkpoint on 2 workers
    m2 = res["many_dask_2"]
    pred = predict(m2["tensors"], m2["leaves"], m2["tiles"], 2)
    res["check"] = {"what": "many-tensors DeepSeek-V3-shaped checkpoint, Dask, 2 workers",
                    "predicted_s": round(pred, 3), "measured_s": m2["wall_s"],
                    "error": round(pred / m2["wall_s"] - 1, 3)}
    counts = tile_counts(deepseek_v3_shapes())
    res["deepseek_v3_671b"] = {**counts, "projected_wall_s": {
        str(w): round(predict(counts["tensors"], counts["leaves"], counts["tiles"], w), 1)
        for w in (8, 64, 256)}}
    res["targets"] = {"overhead_ok": res["overhead_vs_local"] <= TARGET_OVERHEAD,
                      "prediction_ok": abs(res["check"]["error"]) <= TARGET_PREDICTION}
    if args.out_json:
        write_json(args.out_json, res)
    print(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
