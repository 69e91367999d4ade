#!/usr/bin/env python3
"""Dask executor against the local pool, 1 -> 2 worker scaling, and a projection of a 671B
DeepSeek-V3 render on 8 / 64 / 256 workers checked on scaled-down configurations.

One command (``--short``: one repeat, a smaller many-tensors checkpoint; same targets)::

    python benchmarks/dask_scaling.py --out-json benchmarks/results/r3-dask.json
    python benchmarks/dask_scaling.py --short
    python benchmarks/dask_scaling.py --scheduler tcp://HOST:PORT   # an existing cluster

1. A ≥ 1 B-parameter synthetic Llama checkpoint (bench.ensure_checkpoint, cached, bf16) and
   the DeepSeek-V3-shaped many-tensors checkpoints (benchmarks/many_tensors.py), copied to
   ``--work`` (default: a tmpfs, /dev/shm), where the bundles are written too: storage is
   measured apart (step 3), so the comparison is of CPU work, not of a disk other processes
   share. Every render passes ``--no-moe``: the model is of the main scene (the MoE scenes'
   cost, which grows with the experts squared, is benchmarks/moe_cost_model.py's).
2. Renders with the CLI, interleaved in each repeat (local pool ``--workers 2``, Dask with 2,
   Dask with 1 worker: ``--scheduler tcp://…`` of ``LocalCluster``s this script started with
   the settings of ``--scheduler local:N`` and warmed: the "existing cluster" case), so the
   wall ratios come from runs next to each other. Every run reports its CPU seconds over all
   processes: the CLI's tree (rusage), the Dask workers and nannies (``Client.run``) and the
   scheduler's process; CPU time does not depend on the other load of the machine, wall does.
3. The model (``_model``), calibrated on 1-worker runs only (1 B; DeepSeek-shaped with 11,987
   and 45,395 tensors), worker costs in CPU seconds (the other load of the machine changes
   them little; it changes wall time a lot):
   - ``c_fixed``: what every worker pays per tensor whatever its share (opening the checkpoint,
     unpickling the scene's job...): the second worker's extra CPU on the 45,395-tensor
     checkpoint (calibration; ``_fixed_per_worker`` measures the opening and unpickling part);
   - ``w_0``, ``c_leaf``, ``c_tensor``: worker CPU shared out among the workers, per scene, per
     leaf tile and per tensor (scales, small blocks), solving the three 1-worker runs;
   - ``S = s_0 + s_tensor·T``: the main process's serial wall (outside the tile phase: start,
     plan, manifest, commit); ``O = o_0 + o_tensor·T``: its CPU during the tile phase (levels
     above the subtrees, the manifest's static parts) plus the scheduler's;
   - ``o_task``: the scheduler's per-task overhead (2,000 no-op tasks on the 2-worker cluster);
   - ``bw``: write bandwidth of ``--disk`` (tile-sized files, synced; this machine's disk)
     and the bytes per tile of the 1 B bundle.
   Prediction for W workers with a core each: ``wall(W) = S + max(work/W, tiles·bytes_per_tile
   / (bw·W), O_main) + 12·o_task`` with ``work = w_0 + W·T·c_fixed + leaves·c_leaf +
   T·c_tensor`` (each worker takes 8 subtrees and 4 value-pass tasks one after another), tile
   counts from the layout (no weights); on this machine's C cores, shared by everything, the
   tile phase is also at least ``(work + O)/C``.
4. The check, on the 2-worker runs (not used to calibrate): predicted against measured worker
   CPU (valid under load) and wall time (valid on a quiet machine: each check shows the other
   load, in cores, during its run). Target: within 25 %.
5. The projection for DeepSeek-V3 671B (its real shapes from config.json; FP8 weights count
   one pixel per element) on 8, 64 and 256 workers, with per-worker storage bandwidth equal to
   this machine's disk (say so when quoting it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import shutil
import statistics
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
    log,
    run_measured,
    warm_page_cache,
    write_json,
)

TARGET_OVERHEAD = 0.15
TARGET_PREDICTION = 0.25


def _cpu_here() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _proc_cpu() -> tuple[int, float]:
    """On a worker, nanny or scheduler: its process id and CPU seconds so far."""
    import psutil

    t = psutil.Process().cpu_times()
    return os.getpid(), float(t.user + t.system)


def _cluster_cpu(client: Any) -> dict[int, float]:
    """CPU seconds so far of every process of the cluster (workers, nannies, scheduler), by
    process id: a LocalCluster's nannies and scheduler live in the process that started it,
    which must be counted once."""
    got = list(client.run(_proc_cpu).values())
    with contextlib.suppress(Exception):  # a cluster without nannies
        got += list(client.run(_proc_cpu, nanny=True).values())
    got.append(client.run_on_scheduler(_proc_cpu))
    return dict(got)


def _loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def _cli(python: str, src: Path, out: Path, extra: Sequence[str],
         client: Any = None) -> dict[str, Any]:
    # --no-moe: the DeepSeek-shaped checkpoints are MoE; the model is of the main scene's
    # tiles (the MoE scenes' cost grows with experts squared: benchmarks/moe_cost_model.py)
    cmd = [python, "-m", "weightvis", str(src), "--out", str(out), "-q", "--no-moe", *extra]
    before = _cluster_cpu(client) if client is not None else {}
    here0 = _cpu_here()
    m = run_measured(cmd, env=_python_env({"WEIGHTVIS_TIMING": str(out) + ".timing.json"}))
    if m.returncode != 0:
        raise SystemExit(f"render failed: {cmd}\n{m.stderr_tail}")
    after = _cluster_cpu(client) if client is not None else {}
    timing = json.loads(Path(str(out) + ".timing.json").read_text())
    here = _cpu_here() - here0 - m.sampler_cpu_s  # (run_measured's sampler thread is here)
    me = os.getpid()
    sched_pid = client.run_on_scheduler(os.getpid) if client is not None else None
    workers = sum(v - before.get(k, 0.0) for k, v in after.items() if k not in (me, sched_pid))
    # the scheduler's process: this one for a LocalCluster we started (with its nannies)
    sched = (here if sched_pid == me else after.get(sched_pid, 0.0) - before.get(sched_pid, 0.0)
             ) if client is not None else 0.0
    cli = m.cpu_user_s + m.cpu_sys_s
    return {"wall_s": round(m.wall_s, 3), "cpu_cli_s": round(cli, 3),
            "cpu_cluster_workers_s": round(workers, 3), "cpu_scheduler_s": round(sched, 3),
            # the cluster's processes are not in the CLI's tree: not "other load" either
            "cpu_all_s": round(cli + workers + sched, 3), "other_load_cpu_s":
            round(max(0.0, m.other_cpu_s - workers - sched), 1),
            "peak_rss_tree_bytes": m.peak_rss_sum, "loadavg": _loadavg(), **timing}


def _interleaved(python: str, src: Path, work: Path, configs: dict[str, tuple[list[str], Any]],
                 repeats: int) -> dict[str, Any]:
    """Every config once per repeat, next to each other; the run with the median wall time of
    each, with all walls and the per-repeat ratios to the first config."""
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in configs}
    for i in range(repeats):
        for label, (extra, client) in configs.items():
            out = work / f"{label}-{i}"
            runs[label].append(_cli(python, src, out, extra, client))
            shutil.rmtree(out, ignore_errors=True)
            Path(str(out) + ".timing.json").unlink(missing_ok=True)
            log(f"{src.name} {label}: {runs[label][-1]['wall_s']} s wall, "
                f"{runs[label][-1]['cpu_all_s']} s CPU")
    first = next(iter(configs))
    res: dict[str, Any] = {}
    for label, rs in runs.items():
        mid = sorted(rs, key=lambda r: r["wall_s"])[len(rs) // 2]
        res[label] = {**mid, "all_wall_s": [r["wall_s"] for r in rs],
                      "all_cpu_s": [r["cpu_all_s"] for r in rs],
                      f"wall_over_{first}": [round(r["wall_s"] / f["wall_s"], 3)
                                             for r, f in zip(rs, runs[first], strict=True)]}
    return res


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


def _copy_in(src: Path, work: Path) -> Path:
    dst = work / src.name
    if not dst.exists():
        shutil.copytree(src, dst)
    return dst


def _start_cluster(n: int) -> Any:
    import dask
    import distributed

    from weightvis.dask_executor import LOCAL_WORKER_CONFIG

    with dask.config.set(LOCAL_WORKER_CONFIG):  # what --scheduler local:N starts
        return distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                        host="127.0.0.1", dashboard_address=None,
                                        silence_logs=50)


def _many(cache: Path, experts: int, shards: int | None = None) -> Path:
    from many_tensors import SHARDS, deepseek_config, deepseek_specs, ensure

    n = shards or SHARDS
    return ensure(cache, f"deepseek-e{experts}-x{n}", deepseek_specs(experts), 0, n,
                  deepseek_config(experts))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default=1_100_000_000, type=int,
                    help="parameters of the synthetic checkpoint (default 1.1 B)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--short", action="store_true",
                    help="one repeat; calibrated and checked on the many-tensors checkpoint "
                         "of 32 experts (6,419 tensors) instead of 256 and 32")
    ap.add_argument("--scheduler", metavar="ADDR",
                    help="measure this existing cluster (tcp://HOST:PORT) as the Dask side, "
                         "instead of starting LocalClusters of 1 and 2 workers")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--work", type=Path, default=Path("/dev/shm")
                    if Path("/dev/shm").is_dir() else None,
                    help="a folder to copy the inputs to and write the bundles in (default: "
                         "the tmpfs /dev/shm; removed afterwards)")
    ap.add_argument("--disk", type=Path, default=None,
                    help="folder whose write bandwidth the model uses (default: --cache)")
    ap.add_argument("--out-json", type=Path, default=None)
    ap.add_argument("--remodel", type=Path, metavar="JSON",
                    help="no renders: recompute the model from the runs of a results file "
                         "(written back to --out-json)")
    a = ap.parse_args(argv)
    if a.remodel:
        res = json.loads(a.remodel.read_text())
        res["model"] = _model(res, a.disk or a.cache, a.work or a.cache)
        res["remodelled"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        if a.out_json:
            write_json(a.out_json, res)
        print(json.dumps(res["model"], indent=2))
        return 0
    import distributed

    if a.short:
        a.repeats = 1
    calib_e, check_e = (32, 32) if a.short else (256, 32)
    python = sys.executable
    src0, meta = ensure_checkpoint(a.cache, a.params, seed=0, vocab=32000, tied=False)
    many0, check0 = _many(a.cache, calib_e), _many(a.cache, check_e)
    # a third DeepSeek-shaped size (64 experts, 11,987 tensors), calibration only: with the
    # other two it separates the work of the family's non-expert tensors from the per-tensor cost
    mid0 = _many(a.cache, 64)
    work = Path(tempfile.mkdtemp(prefix="weightvis-dask-bench-", dir=a.work))
    res: dict[str, Any] = {"when": time.strftime("%Y-%m-%dT%H:%M:%S"), "cpus": os.cpu_count(),
                           "command": sys.argv, "work": str(work), "elements": meta["shape"]}
    clusters: dict[int, Any] = {}
    clients: dict[int, Any] = {}
    try:
        src, many, check, mid = (_copy_in(x, work) for x in (src0, many0, check0, mid0))
        for x in (src, many, check, mid):
            warm_page_cache(x)
        if a.scheduler:
            clients[0] = distributed.Client(a.scheduler, set_as_default=False)
            addresses = {len(clients[0].nthreads()): a.scheduler}
        else:
            for n in (2, 1):
                t0 = time.perf_counter()
                clusters[n] = _start_cluster(n)
                res[f"cluster_start_{n}_s"] = round(time.perf_counter() - t0, 3)
            addresses = {n: c.scheduler_address for n, c in clusters.items()}
        for n, addr in addresses.items():
            clients[n] = clients.pop(0, None) or distributed.Client(addr, set_as_default=False)
            # warm: the kernels load on every worker once (an existing cluster has done this)
            for x in (check, src):
                _cli(python, x, work / f"warm-{n}", ["--scheduler", addr])
                shutil.rmtree(work / f"warm-{n}", ignore_errors=True)
        configs = {"local_2": (["--workers", "2"], None),
                   **{f"dask_{n}": (["--scheduler", addr], clients[n])
                      for n, addr in sorted(addresses.items(), reverse=True)}}
        res["big"] = _interleaved(python, src, work, configs, a.repeats)
        dask_only = {k: v for k, v in configs.items() if k != "local_2"}
        res["many"] = _interleaved(python, many, work, dask_only, a.repeats)
        res["mid"] = _interleaved(python, mid, work, {k: v for k, v in dask_only.items()
                                                        if k == "dask_1"}, a.repeats)
        res["check"] = (res["many"] if check == many
                        else _interleaved(python, check, work, dask_only, a.repeats))
        n_max = max(addresses)
        res["o_task_s"] = _task_overhead(addresses[n_max])
        res["fixed_per_worker"] = clients[n_max].submit(_fixed_per_worker, str(many),
                                                        pure=False).result()
        big = res["big"]
        if "dask_2" in big:
            res["overhead_vs_local"] = {
                "wall_per_repeat": [round(x - 1, 3) for x in big["dask_2"]["wall_over_local_2"]],
                "cpu_per_repeat": [round(d / lo - 1, 3) for d, lo in zip(
                    big["dask_2"]["all_cpu_s"], big["local_2"]["all_cpu_s"], strict=True)],
                "wall_median_of_ratios": round(statistics.median(big["dask_2"][
                    "wall_over_local_2"]) - 1, 3),
                "cpu": round(big["dask_2"]["cpu_all_s"] / big["local_2"]["cpu_all_s"] - 1, 3)}
        if "dask_1" in big and "dask_2" in big:
            res["speedup_1_to_2"] = round(big["dask_1"]["wall_s"] / big["dask_2"]["wall_s"], 3)
            res["model"] = _model(res, a.disk or a.cache, work)
    finally:
        for c in clients.values():
            c.close()
        for cl in clusters.values():
            cl.close()
        shutil.rmtree(work, ignore_errors=True)
    if a.out_json:
        write_json(a.out_json, res)
    print(json.dumps(res, indent=2, default=str))
    return 0


def _fixed_per_worker(src: str) -> dict[str, float]:
    """On a worker: the CPU seconds a worker pays once per scene whatever share of the tiles it
    draws — opening the checkpoint and unpickling the scene's job (its layout: the bulk of it)
    — for the checkpoint at ``src``, warm (the second of two)."""
    import pickle

    from weightvis.layout import arch_layout
    from weightvis.tiling import CheckpointSpec, Geometry

    spec = CheckpointSpec((src,))
    out: dict[str, float] = {}
    for _ in range(2):
        t0 = time.process_time()
        reader = spec.open()
        out["open_cpu_s"] = time.process_time() - t0
        blob = pickle.dumps(Geometry(arch_layout(list(reader.tensors()))))
        t0 = time.process_time()
        pickle.loads(blob)
        out["job_load_cpu_s"] = time.process_time() - t0
        out["tensors"] = len(reader.tensors())
        out["job_bytes"] = len(blob)
        reader.close()
    return out


def _model(res: dict[str, Any], disk: Path, work: Path) -> dict[str, Any]:
    """Calibrate on the 1-worker runs, check on the 2-worker runs, project DeepSeek-V3.

    Worker CPU (which the other load of the machine changes little) is ``work(W) = w_0 +
    W·T·c_fixed + leaves·c_leaf + T·c_tensor``: ``c_fixed`` is what every worker pays per
    tensor whatever its share (opening the checkpoint, unpickling the job...): what the second
    worker added on the 45,395-tensor calibration checkpoint (``_fixed_per_worker`` measures
    the part opening and unpickling explain); ``w_0`` (shared-out work per scene that neither
    count explains: the DeepSeek-shaped family's non-expert tensors, the same at every size),
    ``c_leaf`` and ``c_tensor`` (per-tensor work that is shared out: the scales, the small
    blocks) solve the three 1-worker runs (1 B; DeepSeek-shaped with 11,987 and 45,395 tensors:
    the family projected). The main process is
    a serial part ``S = s_0 + s_tensor·T`` (wall outside the tile phase: start, plan, manifest,
    commit) and a part ``O = o_0 + o_tensor·T`` that runs during the tile phase (the levels
    above the subtrees, the manifest's static parts, and the scheduler's CPU), both from the
    1 B and many-tensors 1-worker runs.
    Wall on W workers with a core each (the projection: the main process and the scheduler
    have their own): ``S + max(work/W, storage, O_main) + tasks_per_worker·o_task``, where
    ``O_main`` is the main process's share of ``O`` (it reduces the levels above the subtrees
    as they arrive: the tile phase can't end before that work does); on this machine's C
    cores, which they all share, the tile phase is also at least ``(work + O)/C``."""
    import numpy as np

    d1, m1, t1 = res["big"]["dask_1"], res["many"]["dask_1"], res["mid"]["dask_1"]
    # what one more worker adds per tensor, on the calibration checkpoint (its 2-worker run
    # is calibration, not a check); _fixed_per_worker says what opening and unpickling explain
    m2 = res["many"]["dask_2"]
    c_fixed = max(0.0, (m2["cpu_cluster_workers_s"] - m1["cpu_cluster_workers_s"])
                  / m1["tensors"])
    fixed = res["fixed_per_worker"]
    c_fixed_open_load = (fixed["open_cpu_s"] + fixed["job_load_cpu_s"]) / fixed["tensors"]
    # the three 1-worker runs: worker CPU - T·c_fixed = w_0 + leaves·c_leaf + T·c_tensor
    runs1 = [t1, d1, m1]
    w_0, c_leaf, c_tensor = (float(x) for x in np.linalg.solve(
        np.array([[1.0, r["leaves"], r["tensors"]] for r in runs1]),
        np.array([r["cpu_cluster_workers_s"] - r["tensors"] * c_fixed for r in runs1])))

    def serial(r: dict[str, Any]) -> float:
        return float(r["wall_s"] - r["tiles_s"])

    def client_during(r: dict[str, Any]) -> float:
        return max(0.0, float(r["cpu_cli_s"] - serial(r)))

    def during(r: dict[str, Any]) -> float:
        return client_during(r) + float(r["cpu_scheduler_s"])

    def line(f: Any) -> tuple[float, float]:
        slope = (f(m1) - f(d1)) / (m1["tensors"] - d1["tensors"])
        return f(d1) - slope * d1["tensors"], slope

    s_0, s_tensor = line(serial)
    o_0, o_tensor = line(during)
    oc_0, oc_tensor = line(client_during)
    bytes_per_tile = d1["bytes"] / d1["tiles"]
    bw = _write_bandwidth(disk, int(bytes_per_tile))
    bw_work = _write_bandwidth(work, int(bytes_per_tile))  # where the checked runs wrote
    o_task = res["o_task_s"]
    cores = res["cpus"]
    from weightvis.dask_executor import MAP_TASKS_PER_WORKER
    from weightvis.tiling import TASKS_PER_WORKER

    tasks = TASKS_PER_WORKER + MAP_TASKS_PER_WORKER

    def predict(tensors: int, leaves: int, tiles: int, workers: int, bw: float = bw,
                shared_cores: int | None = None) -> dict[str, float]:
        wrk = w_0 + workers * tensors * c_fixed + leaves * c_leaf + tensors * c_tensor
        storage = tiles * bytes_per_tile / (bw * workers)
        # the main process reduces the levels above the subtrees as they arrive: the tile
        # phase lasts at least its own work then
        tile_phase = max(wrk / workers, storage, oc_0 + oc_tensor * tensors)
        if shared_cores is not None:  # main process, scheduler and workers on these cores
            tile_phase = max(tile_phase, (wrk + o_0 + o_tensor * tensors) / shared_cores)
        main = s_0 + s_tensor * tensors
        return {"wall_s": round(main + tile_phase + tasks * o_task, 3),
                "worker_cpu_s": round(wrk, 3), "serial_main_s": round(main, 3),
                "tile_phase_s": round(tile_phase, 3), "storage_s": round(storage, 3)}

    runs = [("1B, 2 workers", res["big"]["dask_2"], 2),
            (f"many-tensors ({res['check']['dask_2']['tensors']} tensors), 2 workers",
             res["check"]["dask_2"], 2)]
    if res["check"] is not res["many"]:  # a checkpoint the model was not calibrated on
        runs.append((f"many-tensors ({res['check']['dask_1']['tensors']} tensors), 1 worker",
                     res["check"]["dask_1"], 1))
    checks = {}
    for name, r, w in runs:
        p = predict(r["tensors"], r["leaves"], r["tiles"], w, bw_work, shared_cores=cores)
        checks[name] = {
            "predicted_worker_cpu_s": p["worker_cpu_s"],
            "measured_worker_cpu_s": r["cpu_cluster_workers_s"],
            "cpu_error": round(p["worker_cpu_s"] / r["cpu_cluster_workers_s"] - 1, 3),
            "predicted_wall_s": p["wall_s"], "measured_wall_s": r["wall_s"],
            "wall_error": round(p["wall_s"] / r["wall_s"] - 1, 3),
            "other_load_cores": round(r["other_load_cpu_s"] / r["wall_s"], 2)}
    counts = tile_counts(deepseek_v3_shapes())
    proj = {str(w): predict(counts["tensors"], counts["leaves"], counts["tiles"], w)
            for w in (8, 64, 256)}
    return {"inputs": {"w_0_cpu_s": w_0, "c_leaf_cpu_s": c_leaf, "c_tensor_cpu_s": c_tensor,
                       "c_fixed_cpu_s": c_fixed, "c_fixed_open_load_cpu_s": c_fixed_open_load,
                       "s_0_s": s_0, "s_tensor_s": s_tensor,
                       "o_0_cpu_s": o_0, "o_tensor_cpu_s": o_tensor,
                       "o_client_0_cpu_s": oc_0, "o_client_tensor_cpu_s": oc_tensor,
                       "bytes_per_tile": bytes_per_tile, "write_bw_bytes_s": bw,
                       "write_bw_folder": str(disk), "checks_write_bw_bytes_s": bw_work,
                       "o_task_s": o_task, "tasks_per_worker": tasks, "cores": cores},
            "checks": checks,
            "cpu_prediction_ok": all(abs(c["cpu_error"]) <= TARGET_PREDICTION
                                     for c in checks.values()),
            "wall_prediction_ok": all(abs(c["wall_error"]) <= TARGET_PREDICTION
                                      for c in checks.values()),
            "deepseek_v3_671b": {**counts, "projected": proj}}


if __name__ == "__main__":
    raise SystemExit(main())
