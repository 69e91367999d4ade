#!/usr/bin/env python3
"""What the MoE scenes add to a render: a Mixtral-shaped synthetic checkpoint rendered with and
without them (``--no-moe``), in ``--repeat`` back-to-back pairs (issue 12: at most +50 %, with
the same memory bound). The headline is the median of the pairs' ratios: each pair ran in one
state of this shared machine, whose speed changes between states by up to 2x (the fastest
plain run against the fastest MoE run can compare two states). ``--work-dir /dev/shm`` keeps
the disk's write-back out of the times (the render's own CPU doubles in some states of this
machine's disk; the MoE numbers' does not).

The checkpoint (generated once, cached): Mixtral-8x7B's names (``model.layers.N.
block_sparse_moe.experts.E.w1/w3/w2``, router ``block_sparse_moe.gate``, attention with 4x
fewer KV heads, norms, embeddings, ``lm_head``) and ratios at a quarter of its widths by default
(hidden 1024, expert intermediate 3584, 8 experts, top-2), bf16 values N(0, 0.02) — random
experts, the slowest case for the stable rank's Lanczos. Each render is the CLI in a subprocess
(``--workers 2``), its process tree's peak RSS sampled (benchmarks/bench.py)::

    python benchmarks/moe_overhead.py --repeat 3 --out-json benchmarks/results/moe_overhead.json

Until ``weightvis.moe.structure`` is merged, the renders use the stand-in of
tests/moe_fakes.py (the contract's API), said so in the output.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import DEFAULT_CACHE, REPO_ROOT, _python_env, run_measured, warm_page_cache  # noqa: E402
from many_tensors import ensure  # noqa: E402

TARGET_OVERHEAD = 0.5

LAUNCH = """
import importlib.util, sys
sys.path.insert(0, {root!r})
if importlib.util.find_spec("weightvis.moe.structure") is None:
    from tests import moe_fakes
    moe_fakes.install()
    print("[moe_overhead] weightvis.moe.structure is not merged: using tests/moe_fakes.py",
          file=sys.stderr)
from weightvis.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def mixtral_specs(layers: int, hidden: int, inter: int, experts: int, vocab: int
                  ) -> list[tuple[str, tuple[int, ...], str]]:
    kv = hidden // 4
    specs: list[tuple[str, tuple[int, ...], str]] = [
        ("model.embed_tokens.weight", (vocab, hidden), "BF16")]
    for layer in range(layers):
        p = f"model.layers.{layer}."
        specs += [(p + "self_attn.q_proj.weight", (hidden, hidden), "BF16"),
                  (p + "self_attn.k_proj.weight", (kv, hidden), "BF16"),
                  (p + "self_attn.v_proj.weight", (kv, hidden), "BF16"),
                  (p + "self_attn.o_proj.weight", (hidden, hidden), "BF16"),
                  (p + "block_sparse_moe.gate.weight", (experts, hidden), "BF16")]
        for e in range(experts):
            q = p + f"block_sparse_moe.experts.{e}."
            specs += [(q + "w1.weight", (inter, hidden), "BF16"),
                      (q + "w3.weight", (inter, hidden), "BF16"),
                      (q + "w2.weight", (hidden, inter), "BF16")]
        specs += [(p + "input_layernorm.weight", (hidden,), "BF16"),
                  (p + "post_attention_layernorm.weight", (hidden,), "BF16")]
    specs += [("model.norm.weight", (hidden,), "BF16"), ("lm_head.weight", (vocab, hidden),
                                                          "BF16")]
    return specs


def render(ckpt: Path, work: Path, label: str, python: str, workers: int, extra: list[str],
           timeout: float) -> dict[str, Any]:
    out = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=work)) / "bundle"
    cmd = [python, "-c", LAUNCH.format(root=str(REPO_ROOT)), str(ckpt), "--out", str(out),
           "-q", "--workers", str(workers), *extra]
    warm_page_cache(ckpt)
    m = run_measured(cmd, env=_python_env({"OPENBLAS_NUM_THREADS": "1"}), cwd=REPO_ROOT,
                     timeout=timeout)
    res = {"label": label, "returncode": m.returncode, "wall_s": round(m.wall_s, 3),
           "cpu_s": round(m.cpu_s, 3), "peak_rss_tree_bytes": m.peak_rss_sum,
           "peak_rss_single_bytes": m.max_rss_single}
    if m.returncode != 0:
        res["stderr_tail"] = m.stderr_tail
    shutil.rmtree(out.parent, ignore_errors=True)  # (six bundles would not fit every disk)
    print(f"[moe_overhead] {label}: {m.wall_s:.2f} s wall, {m.cpu_s:.2f} s CPU, peak RSS "
          f"(tree) {m.peak_rss_sum / 2**20:.0f} MiB, exit {m.returncode}", file=sys.stderr,
          flush=True)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--inter", type=int, default=3584)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=3600.0)
    ap.add_argument("--moe-args", default="", help="extra flags for the MoE render")
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--work-dir", type=Path, default=None,
                    help="where the bundles are written (default: a temporary folder; "
                         "/dev/shm leaves the disk's write-back out of the times)")
    ap.add_argument("--out-json", type=Path)
    a = ap.parse_args()
    specs = mixtral_specs(a.layers, a.hidden, a.inter, a.experts, a.vocab)
    config = {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
              "hidden_size": a.hidden, "intermediate_size": a.inter,
              "num_hidden_layers": a.layers, "num_local_experts": a.experts,
              "num_experts_per_tok": 2, "num_attention_heads": 8, "num_key_value_heads": 2,
              "vocab_size": a.vocab}
    label = f"mixtral-l{a.layers}-h{a.hidden}-i{a.inter}-e{a.experts}"
    ckpt = ensure(a.cache_dir, label, specs, 0, max(1, a.layers // 4), config)
    elements = sum(math.prod(s) for _, s, _ in specs)
    experts = sum(math.prod(s) for n, s, _ in specs if ".experts." in n)
    runs: dict[str, list[dict[str, Any]]] = {"plain": [], "moe": []}
    with tempfile.TemporaryDirectory(prefix="wv-moe-bench-", dir=a.work_dir) as work:
        for i in range(a.repeat):  # pairs, in the order plain-moe then moe-plain (ABBA)
            order = ("plain", "moe") if i % 2 == 0 else ("moe", "plain")
            for kind in order:
                extra = ["--no-moe"] if kind == "plain" else a.moe_args.split()
                runs[kind].append(render(ckpt, Path(work), kind, a.python, a.workers, extra,
                                         a.timeout))
    ok = all(r["returncode"] == 0 for rs in runs.values() for r in rs)
    # each pair ran back to back, in one state of the machine: the median of the pairs'
    # ratios is the headline (fastest against fastest can pair a plain run in a quiet moment
    # with MoE runs that had none: seen, +100 % where the pairs said +23 %)
    ratios = sorted(m["wall_s"] / p["wall_s"] - 1 for p, m in zip(runs["plain"], runs["moe"],
                                                                    strict=True))
    pair_overhead = statistics.median(ratios)
    best = {k: min(r["wall_s"] for r in rs) for k, rs in runs.items()}
    median = {k: sorted(r["wall_s"] for r in rs)[len(rs) // 2] for k, rs in runs.items()}
    cpu = {k: min(r["cpu_s"] for r in rs) for k, rs in runs.items()}
    peak = {k: max(r["peak_rss_tree_bytes"] for r in rs) for k, rs in runs.items()}
    overhead = best["moe"] / best["plain"] - 1
    res = {"checkpoint": label, "elements": elements, "expert_elements": experts,
           "workers": a.workers, "repeat": a.repeat, "runs": runs, "fastest_s": best,
           "median_s": median, "median_overhead": round(median["moe"] / median["plain"] - 1, 4),
           "least_cpu_s": cpu, "cpu_overhead": round(cpu["moe"] / cpu["plain"] - 1, 4),
           "peak_rss_tree_bytes": peak, "fastest_overhead": round(overhead, 4),
           "pair_overheads": [round(r, 4) for r in ratios],
           "overhead": round(pair_overhead, 4), "target_overhead": TARGET_OVERHEAD,
           "work_dir": str(a.work_dir or tempfile.gettempdir()), "ok": ok,
           "machine": platform.processor() or platform.machine()}
    if a.out_json:
        a.out_json.parent.mkdir(parents=True, exist_ok=True)
        a.out_json.write_text(json.dumps(res, indent=1) + "\n")
    if not ok:  # (a failed render's time is not a render's time: no overhead is reported)
        bad = [r for rs in runs.values() for r in rs if r["returncode"] != 0]
        print(f"{label}: FAILED — {len(bad)} of {2 * a.repeat} renders exited non-zero, no "
              f"overhead reported; first: {bad[0]['label']} exit {bad[0]['returncode']}: "
              f"{bad[0].get('stderr_tail', '')!s}")
        return 1
    print(f"{label}: {elements:,} elements ({experts:,} in experts), {a.workers} workers, "
          f"{a.repeat} back-to-back pairs: median overhead +{100 * pair_overhead:.0f} % "
          f"(target <= {100 * TARGET_OVERHEAD:.0f} %; pairs "
          f"{', '.join(f'{100 * r:+.0f}' for r in ratios)} %); fastest of {a.repeat}: "
          f"plain {best['plain']:.2f} s, with MoE scenes "
          f"{best['moe']:.2f} s (+{100 * overhead:.0f} %); median {median['plain']:.2f} s -> "
          f"{median['moe']:.2f} s (+{100 * (median['moe'] / median['plain'] - 1):.0f} %); "
          f"CPU {cpu['plain']:.1f} s -> {cpu['moe']:.1f} s "
          f"(+{100 * (cpu['moe'] / cpu['plain'] - 1):.0f} %); peak RSS (tree) plain "
          f"{peak['plain'] / 2**20:.0f} MiB, MoE {peak['moe'] / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
