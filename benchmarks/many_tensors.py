#!/usr/bin/env python3
"""Cost per tensor: a DeepSeek-V3-named checkpoint of ~45k tiny tensors against the same element
count in ~100 tensors.

Generates (once, cached, deterministic) two bf16 safetensors checkpoints with the same number of
elements:

- **many**: DeepSeek-V3 tensor names (61 layers, the first 3 dense, then MoE layers with
  ``--experts`` routed experts, a shared expert, the router and its correction bias, MLA
  attention, norms, embeddings, ``lm_head``), tiny shapes, sharded with a
  ``model.safetensors.index.json`` like real releases;
- **few**: the same element count in ~100 tensors (Llama MLP names).

Renders both with the CLI (``python -m weightvis <dir> --out <fresh folder>``, default workers),
sampling the memory of the process tree, and reports wall time, the many/few ratio and peak
RSS against the target (``PERF.md``: ratio ≤ 3, peak RSS ≤ 1 GB)::

    python benchmarks/many_tensors.py --out-json benchmarks/results/many_tensors.json
    python benchmarks/many_tensors.py --experts 16       # quick iteration
    python benchmarks/many_tensors.py --only many --moe  # with the MoE scenes (peak RSS)

``--browser`` also opens the many-tensor bundle in headless Chromium from file:// (Playwright,
the ``chromium`` on PATH) and reports the time until the viewer is ready (the better of two
opens; target < 3 s) and whether a search finds every layer's ``experts.<last>.down_proj``.

Needs psutil (and playwright for ``--browser``). Only numpy is used to write the checkpoints.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (  # noqa: E402  (a sibling script, not a package)
    DEFAULT_CACHE,
    REPO_ROOT,
    _python_env,
    f32_to_bf16,
    run_measured,
    spread_subfolders,
    warm_page_cache,
    write_json,
)

GENERATOR_VERSION = 1
"""Bump when the generated checkpoints change: it is part of the cache key."""

TARGET_RATIO = 3.0
TARGET_PEAK_RSS_BYTES = 1 << 30
TARGET_OPEN_S = 3.0

# DeepSeek-V3 structure (config.json of deepseek-ai/DeepSeek-V3) with tiny widths
LAYERS = 61
FIRST_DENSE = 3
HIDDEN = 64
MOE_INTER = 32
DENSE_INTER = 128
HEADS = 2
Q_LORA = 48
KV_LORA = 32
ROPE_DIM = 16
NOPE_DIM = 32
V_DIM = 32
VOCAB = 16384
SHARDS = 8

Spec = tuple[str, tuple[int, ...], str]   # name, shape, dtype


def deepseek_specs(experts: int) -> list[Spec]:
    """Tensor names and shapes of a tiny DeepSeek-V3 (``experts`` routed experts per MoE
    layer)."""
    h = HIDDEN
    out: list[Spec] = [("model.embed_tokens.weight", (VOCAB, h), "BF16")]
    for n in range(LAYERS):
        p = f"model.layers.{n}"
        out += [
            (f"{p}.input_layernorm.weight", (h,), "BF16"),
            (f"{p}.self_attn.q_a_proj.weight", (Q_LORA, h), "BF16"),
            (f"{p}.self_attn.q_a_layernorm.weight", (Q_LORA,), "BF16"),
            (f"{p}.self_attn.q_b_proj.weight", (HEADS * (NOPE_DIM + ROPE_DIM), Q_LORA), "BF16"),
            (f"{p}.self_attn.kv_a_proj_with_mqa.weight", (KV_LORA + ROPE_DIM, h), "BF16"),
            (f"{p}.self_attn.kv_a_layernorm.weight", (KV_LORA,), "BF16"),
            (f"{p}.self_attn.kv_b_proj.weight", (HEADS * (NOPE_DIM + V_DIM), KV_LORA), "BF16"),
            (f"{p}.self_attn.o_proj.weight", (h, HEADS * V_DIM), "BF16"),
            (f"{p}.post_attention_layernorm.weight", (h,), "BF16"),
        ]
        if n < FIRST_DENSE:
            out += [(f"{p}.mlp.gate_proj.weight", (DENSE_INTER, h), "BF16"),
                    (f"{p}.mlp.up_proj.weight", (DENSE_INTER, h), "BF16"),
                    (f"{p}.mlp.down_proj.weight", (h, DENSE_INTER), "BF16")]
            continue
        out += [(f"{p}.mlp.gate.weight", (experts, h), "BF16"),
                (f"{p}.mlp.gate.e_score_correction_bias", (experts,), "F32")]
        for e in range(experts):
            q = f"{p}.mlp.experts.{e}"
            out += [(f"{q}.gate_proj.weight", (MOE_INTER, h), "BF16"),
                    (f"{q}.up_proj.weight", (MOE_INTER, h), "BF16"),
                    (f"{q}.down_proj.weight", (h, MOE_INTER), "BF16")]
        q = f"{p}.mlp.shared_experts"
        out += [(f"{q}.gate_proj.weight", (MOE_INTER, h), "BF16"),
                (f"{q}.up_proj.weight", (MOE_INTER, h), "BF16"),
                (f"{q}.down_proj.weight", (h, MOE_INTER), "BF16")]
    out += [("model.norm.weight", (h,), "BF16"), ("lm_head.weight", (VOCAB, h), "BF16")]
    return out


def few_specs(numel: int, count: int = 100, cols: int = 1024) -> list[Spec]:
    """About ``count`` tensors holding ``numel`` elements in total (Llama MLP names)."""
    layers = (count - 1) // 3
    rows = max(1, numel // (3 * layers * cols))
    out: list[Spec] = []
    for n in range(layers):
        p = f"model.layers.{n}.mlp"
        out += [(f"{p}.gate_proj.weight", (rows, cols), "BF16"),
                (f"{p}.up_proj.weight", (rows, cols), "BF16"),
                (f"{p}.down_proj.weight", (cols, rows), "BF16")]
    rest = numel - sum(math.prod(s) for _n, s, _d in out)
    if rest > 0:
        out.append(("lm_head.weight", (-(-rest // cols), cols) if rest >= cols else (rest,),
                    "BF16"))
    return out


def numel_of(specs: Sequence[Spec]) -> int:
    return sum(math.prod(s) for _n, s, _d in specs)


def _tensor_bytes(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> bytes:
    n = math.prod(shape)
    x = rng.standard_normal(n, dtype=np.float32) * np.float32(0.02)
    if dtype == "F32":
        return x.tobytes()
    out = np.empty(n, np.uint16)
    f32_to_bf16(x, out, np.empty(n, np.uint32))
    return out.tobytes()


def write_checkpoint(directory: Path, specs: Sequence[Spec], seed: int, shards: int,
                     config: dict[str, Any]) -> None:
    """Sharded safetensors + index + config.json, values ~ N(0, 0.02) from one seeded RNG."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    per = -(-len(specs) // shards)
    groups = [specs[i:i + per] for i in range(0, len(specs), per)]
    weight_map: dict[str, str] = {}
    total = 0
    for k, group in enumerate(groups):
        fname = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        blobs: list[bytes] = []
        off = 0
        for name, shape, dtype in group:
            data = _tensor_bytes(rng, shape, dtype)
            header[name] = {"dtype": dtype, "shape": list(shape),
                            "data_offsets": [off, off + len(data)]}
            blobs.append(data)
            off += len(data)
            weight_map[name] = fname
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        with open(directory / fname, "wb") as fh:
            fh.write(struct.pack("<Q", len(raw)) + raw)
            fh.write(b"".join(blobs))
        total += off
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def ensure(cache: Path, label: str, specs: Sequence[Spec], seed: int, shards: int,
           config: dict[str, Any]) -> Path:
    key = f"{label}-n{len(specs)}-e{numel_of(specs)}-s{seed}-g{GENERATOR_VERSION}"
    final = cache / "many-tensors" / key
    if (final / "model.safetensors.index.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=final.parent))
    shutil.rmtree(tmp)
    t0 = time.perf_counter()
    write_checkpoint(tmp, specs, seed, shards, config)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    print(f"[many_tensors] generated {final.name} in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr, flush=True)
    return final


def deepseek_config(experts: int) -> dict[str, Any]:
    return {"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
            "hidden_size": HIDDEN, "intermediate_size": DENSE_INTER,
            "moe_intermediate_size": MOE_INTER, "num_hidden_layers": LAYERS,
            "first_k_dense_replace": FIRST_DENSE, "n_routed_experts": experts,
            "n_shared_experts": 1, "num_experts_per_tok": 8, "num_attention_heads": HEADS,
            "q_lora_rank": Q_LORA, "kv_lora_rank": KV_LORA, "qk_rope_head_dim": ROPE_DIM,
            "qk_nope_head_dim": NOPE_DIM, "v_head_dim": V_DIM, "vocab_size": VOCAB}


def open_in_browser(bundle: Path, experts: int) -> dict[str, Any]:
    """Open ``bundle`` in headless Chromium: seconds until ``weightvis.ready`` (the better of
    two opens), then search ``experts.<last>.down`` and check the results."""
    from playwright.sync_api import sync_playwright

    want = [f"model.layers.{n}.mlp.experts.{experts - 1}.down_proj.weight"
            for n in range(FIRST_DENSE, LAYERS)]
    opens: list[float] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"),
                                    args=["--no-sandbox", "--disable-gpu"])
        try:
            page = None
            for _ in range(2):
                if page is not None:
                    page.close()
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                t0 = time.perf_counter()
                page.goto((bundle / "index.html").resolve().as_uri())
                page.wait_for_function("window.weightvis && window.weightvis.ready === true",
                                       timeout=120000, polling=20)
                opens.append(time.perf_counter() - t0)
            assert page is not None
            t0 = time.perf_counter()
            page.fill("#wv-search", f"experts.{experts - 1}.down")
            found = page.eval_on_selector_all("#wv-results li.wv-result",
                                              "els => els.map(e => e.textContent)")
            search_s = time.perf_counter() - t0
            items = page.evaluate("weightvis.app.model.items.length")
        finally:
            browser.close()
    res = {"open_s": round(min(opens), 3), "all_open_s": [round(x, 3) for x in opens],
           "search_s": round(search_s, 3), "search_ok": found[:len(want)] == want,
           "items": items}
    print(f"[many_tensors] browser: opened in {min(opens):.2f} s (target < {TARGET_OPEN_S}), "
          f"search {'ok' if res['search_ok'] else 'WRONG'} in {search_s:.2f} s",
          file=sys.stderr, flush=True)
    return res


def render(ckpt: Path, work: Path, label: str, python: str, workers: int | None,
           timeout: float, browser: int = 0, moe: bool = False) -> dict[str, Any]:
    out = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=work)) / "bundle"
    # the pipeline's cost per tensor: the MoE summary and similarity scenes (an analysis that
    # an MoE checkpoint adds) are measured apart (``--moe``; benchmarks/moe_overhead.py)
    cmd = [python, "-m", "weightvis", str(ckpt), "--out", str(out), "-q"]
    if not moe:
        cmd.append("--no-moe")
    if workers:
        cmd += ["--workers", str(workers)]
    warm_page_cache(ckpt)
    m = run_measured(cmd, env=_python_env(), cwd=REPO_ROOT, timeout=timeout)
    res = {"cmd": cmd, "returncode": m.returncode, "wall_s": round(m.wall_s, 3),
           "cpu_s": round(m.cpu_s, 3), "peak_rss_tree_bytes": m.peak_rss_sum,
           "peak_rss_single_bytes": m.max_rss_single, "peak_processes": m.peak_processes}
    if m.returncode != 0:
        res["stderr_tail"] = m.stderr_tail
    elif browser:
        res["browser"] = open_in_browser(out, browser)
    shutil.rmtree(out.parent, ignore_errors=True)  # (a many-tensor bundle is ~300 MB)
    print(f"[many_tensors] {label}: {m.wall_s:.2f} s wall, {m.cpu_s:.2f} s CPU, peak RSS "
          f"(tree) {m.peak_rss_sum / 2**20:.0f} MiB, exit {m.returncode}", file=sys.stderr,
          flush=True)
    return res


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--experts", type=int, default=256, help="routed experts per MoE layer")
    ap.add_argument("--few", type=int, default=100, help="tensor count of the few-tensor twin")
    ap.add_argument("--shards", type=int, default=SHARDS,
                    help=f"safetensors files of the many-tensor checkpoint (default {SHARDS}; 1 "
                         "is the worst case for per-file lookups)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=None, help="default: weightvis's own")
    ap.add_argument("--repeat", type=int, default=1, help="renders of each; the fastest counts")
    ap.add_argument("--timeout", type=float, default=1800.0, help="per render, seconds")
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--generate-only", action="store_true")
    ap.add_argument("--only", choices=("many", "few"), default=None)
    ap.add_argument("--moe", action="store_true",
                    help="render the MoE summary and similarity scenes too (default: the "
                         "pipeline alone); with --only many: their peak RSS (tree) against "
                         "the 1 GB target")
    ap.add_argument("--out-json", type=Path, default=None)
    ap.add_argument("--browser", action="store_true",
                    help="open the many-tensor bundle in headless Chromium (open time, search)")
    args = ap.parse_args(argv)

    many = deepseek_specs(args.experts)
    numel = numel_of(many)
    few = few_specs(numel, args.few)
    ck_many = ensure(args.cache_dir, f"deepseek-e{args.experts}-x{args.shards}", many, args.seed,
                     args.shards, deepseek_config(args.experts))
    ck_few = ensure(args.cache_dir, "few", few, args.seed, 2,
                    {"architectures": ["LlamaForCausalLM"], "model_type": "llama"})
    if args.generate_only:
        print(ck_many)
        print(ck_few)
        return 0
    runs = args.cache_dir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    spread_subfolders(runs)
    work = Path(tempfile.mkdtemp(prefix="many-tensors-", dir=runs))
    res: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "cpus": os.cpu_count(), "moe": args.moe,
        "many": {"checkpoint": str(ck_many), "tensors": len(many), "elements": numel,
                 "experts": args.experts, "shards": args.shards},
        "few": {"checkpoint": str(ck_few), "tensors": len(few), "elements": numel_of(few)},
    }
    try:
        for label, ck in (("few", ck_few), ("many", ck_many)):
            if args.only and label != args.only:
                continue
            browser = args.experts if args.browser and label == "many" else 0
            tries = [render(ck, work, label, args.python, args.workers, args.timeout,
                            browser if i == 0 else 0, args.moe)
                     for i in range(max(1, args.repeat))]
            best = min(tries, key=lambda r: float(r["wall_s"]))
            res[label].update(best)
            if "browser" in tries[0]:
                res[label]["browser"] = tries[0]["browser"]
            res[label]["all_wall_s"] = [r["wall_s"] for r in tries]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ok = all(res[k].get("returncode") == 0 for k in ("many", "few") if "wall_s" in res[k])
    if "wall_s" in res["many"] and "wall_s" in res["few"]:
        ratio = res["many"]["wall_s"] / res["few"]["wall_s"]
        peak = max(res["many"]["peak_rss_tree_bytes"], res["few"]["peak_rss_tree_bytes"])
        res["ratio_many_over_few"] = round(ratio, 2)
        res["targets"] = {"ratio_le_3": ratio <= TARGET_RATIO,
                          "peak_rss_le_1GiB": peak <= TARGET_PEAK_RSS_BYTES}
        opened = res["many"].get("browser")
        if opened is not None:
            res["targets"]["opens_lt_3s_search_ok"] = (opened["open_s"] < TARGET_OPEN_S
                                                        and opened["search_ok"])
        print(f"[many_tensors] {len(many)} tensors / {len(few)} tensors, {numel:,} elements: "
              f"ratio {ratio:.2f} (target <= {TARGET_RATIO}), peak RSS {peak / 2**20:.0f} MiB",
              file=sys.stderr, flush=True)
    if args.moe and "peak_rss_tree_bytes" in res["many"]:
        peak = res["many"]["peak_rss_tree_bytes"]
        res.setdefault("targets", {})["moe_peak_rss_le_1GiB"] = peak <= TARGET_PEAK_RSS_BYTES
        print(f"[many_tensors] with MoE scenes: peak RSS (tree) {peak / 2**20:.0f} MiB "
              f"(target <= {TARGET_PEAK_RSS_BYTES >> 20} MiB)", file=sys.stderr, flush=True)
    if args.out_json:
        write_json(args.out_json, res)
    print(json.dumps(res, indent=2, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
