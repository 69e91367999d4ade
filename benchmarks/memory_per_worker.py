#!/usr/bin/env python3
"""Peak memory of every process of a render of a ≥ 3 GB checkpoint, with the local pool and
under Dask (``--scheduler local:2``): the promise is ≤ 1 GB per worker process whatever the
model.

    python benchmarks/memory_per_worker.py --params 1.6e9 --cache /dev/shm/wv-mem \\
        --out-json benchmarks/results/memory-per-worker.json

The synthetic bf16 Llama (bench.ensure_checkpoint) is written under ``--cache`` and removed
afterwards (``--keep`` keeps it); the bundles go there too and are removed after each run.
Every process of the render's tree is sampled every 50 ms: its RSS and its anonymous RSS (RSS
minus file-backed and shared pages: the mapped checkpoint's pages count in RSS, but the kernel
can drop them at any time, so the anonymous figure is the one memory pressure acts on). CPU
seconds per process are reported too (load-independent, unlike wall time).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import _process_tree, _python_env, ensure_checkpoint, parse_count  # noqa: E402

LIMIT = 1 << 30


def _role(cmdline: list[str], root: int, pid: int) -> str:
    text = " ".join(cmdline)
    if pid == root:
        return "main"
    if "resource_tracker" in text:
        return "resource-tracker"
    if "spawn_main" in text:
        return "dask-worker"
    return "pool-worker"


def measure_tree(cmd: list[str], env: dict[str, str] | None = None,
                 interval: float = 0.05) -> dict[str, Any]:
    """Run ``cmd``; per process of its tree: peak RSS, peak anonymous RSS, CPU seconds."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stop = threading.Event()
    seen: dict[int, dict[str, Any]] = {}
    handles: dict[int, Any] = {}

    def sample() -> None:
        while not stop.is_set():
            for pid in _process_tree(proc.pid, psutil):
                try:
                    p = handles.get(pid) or handles.setdefault(pid, psutil.Process(pid))
                    with p.oneshot():
                        m, t = p.memory_info(), p.cpu_times()
                        row = seen.setdefault(pid, {"role": _role(p.cmdline(), proc.pid, pid),
                                                    "peak_rss": 0, "peak_anon": 0})
                except psutil.Error:
                    continue
                row["peak_rss"] = max(row["peak_rss"], m.rss)
                row["peak_anon"] = max(row["peak_anon"], m.rss - m.shared)
                row["cpu_s"] = round(t.user + t.system, 2)
            stop.wait(interval)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    if proc.returncode != 0:
        raise SystemExit(f"render failed: {cmd}\n{err.decode(errors='replace')[-2000:]}")
    rows = sorted(seen.values(), key=lambda r: -r["peak_rss"])
    workers = [r for r in rows if r["role"] in ("pool-worker", "dask-worker")]
    return {"command": cmd, "wall_s": round(wall, 2),
            "cpu_s_sampled": round(sum(r.get("cpu_s", 0) for r in rows), 2),
            "max_worker_rss": max((r["peak_rss"] for r in workers), default=0),
            "max_worker_anon": max((r["peak_anon"] for r in workers), default=0),
            "main_rss": next((r["peak_rss"] for r in rows if r["role"] == "main"), 0),
            "processes": rows}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", type=parse_count, default=1_600_000_000)
    ap.add_argument("--cache", type=Path, default=Path("/dev/shm/wv-mem"))
    ap.add_argument("--keep", action="store_true", help="keep the generated checkpoint")
    ap.add_argument("--configs", default="--workers 2;--scheduler local:2",
                    help="';'-separated render options to measure")
    ap.add_argument("--out-json", type=Path)
    a = ap.parse_args(argv)
    src, meta = ensure_checkpoint(a.cache, a.params, seed=0, vocab=32000, tied=False)
    size = sum(f.stat().st_size for f in src.iterdir())
    res: dict[str, Any] = {"when": time.strftime("%Y-%m-%dT%H:%M:%S"), "checkpoint_bytes": size,
                           "elements": meta.get("elements"), "shape": meta["shape"],
                           "limit_bytes": LIMIT, "runs": {}}
    try:
        for cfg in a.configs.split(";"):
            out = a.cache / "bundle"
            shutil.rmtree(out, ignore_errors=True)
            cmd = [sys.executable, "-m", "weightvis", str(src), "--out", str(out), "-q",
                   *cfg.split()]
            r = measure_tree(cmd, env=_python_env({}))
            shutil.rmtree(out, ignore_errors=True)
            r["within_limit"] = r["max_worker_rss"] <= LIMIT and r["main_rss"] <= LIMIT
            res["runs"][cfg] = r
            print(f"{cfg}: wall {r['wall_s']} s, cpu {r['cpu_s_sampled']} s, worker peak RSS "
                  f"{r['max_worker_rss'] / 2**20:.0f} MiB (anon {r['max_worker_anon'] / 2**20:.0f}"
                  f" MiB), main {r['main_rss'] / 2**20:.0f} MiB", flush=True)
    finally:
        if not a.keep:
            shutil.rmtree(src, ignore_errors=True)
            Path(str(src) + ".json").unlink(missing_ok=True)
    if a.out_json:
        a.out_json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
