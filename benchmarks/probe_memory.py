#!/usr/bin/env python3
"""Peak memory of the routing probe (one decoder layer in memory at a time) against transformers'
``from_pretrained`` + forward, on Mixtral-shaped synthetic checkpoints of growing depth.

    python benchmarks/probe_memory.py --layers 4 8 16 --hidden 1024 --intermediate 2048 --full

Each checkpoint (random float32 weights, Mixtral names, one safetensors shard per layer plus
``model.safetensors.index.json``) is written once into ``--cache`` with numpy, a shard at a time.
Every measurement runs in a fresh process: the peak RSS (``ru_maxrss``), and the peak anonymous
memory sampled every 5 ms (RSS minus the file pages mapped from the checkpoint, which the kernel
can drop), both also minus what the process holds after importing torch and transformers.
Needs the ``probe`` extra.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

VOCAB, EXPERTS, TOP_K, HEADS, KV_HEADS = 32000, 8, 2, 16, 4


def write_checkpoint(out: Path, layers: int, hidden: int, inter: int) -> Path:
    """A Mixtral-shaped checkpoint (checkpoint layout: per-expert w1/w2/w3), seeded."""
    from safetensors.numpy import save_file

    if (out / "model.safetensors.index.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    head = hidden // HEADS

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)

    shards: list[dict[str, np.ndarray]] = [{"model.embed_tokens.weight": w(VOCAB, hidden),
                                            "model.norm.weight": np.ones(hidden, np.float32),
                                            "lm_head.weight": w(VOCAB, hidden)}]
    shards += [{} for _ in range(layers)]
    weight_map = {}
    for i, shard in enumerate(shards):
        if i > 0:
            p = f"model.layers.{i - 1}."
            shard.update({
                p + "self_attn.q_proj.weight": w(hidden, hidden),
                p + "self_attn.k_proj.weight": w(KV_HEADS * head, hidden),
                p + "self_attn.v_proj.weight": w(KV_HEADS * head, hidden),
                p + "self_attn.o_proj.weight": w(hidden, hidden),
                p + "input_layernorm.weight": np.ones(hidden, np.float32),
                p + "post_attention_layernorm.weight": np.ones(hidden, np.float32),
                p + "block_sparse_moe.gate.weight": w(EXPERTS, hidden)})
            for e in range(EXPERTS):
                q = f"{p}block_sparse_moe.experts.{e}."
                shard.update({q + "w1.weight": w(inter, hidden), q + "w3.weight": w(inter, hidden),
                              q + "w2.weight": w(hidden, inter)})
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
        shards[i] = {}
    config = {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "dtype": "float32",
              "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers,
              "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "head_dim": head,
              "vocab_size": VOCAB, "num_local_experts": EXPERTS, "num_experts_per_tok": TOP_K,
              "max_position_embeddings": 4096, "tie_word_embeddings": False}
    (out / "config.json").write_text(json.dumps(config, indent=1))
    total = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    (out / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}))
    return out


def child(mode: str, model_dir: Path, tokens: int) -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    import transformers

    from weightvis.moe.probe import probe_routing

    def status() -> dict[str, float]:
        d = {}
        for line in open("/proc/self/status"):
            k, _, v = line.partition(":")
            if k in ("RssAnon", "VmRSS"):
                d[k] = int(v.split()[0]) / 1024
        return d

    base, peak_anon = status(), [0.0]

    def sample() -> None:
        while True:
            peak_anon[0] = max(peak_anon[0], status()["RssAnon"])
            time.sleep(0.005)

    threading.Thread(target=sample, daemon=True).start()
    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    ids = [(7 * i + 3) % vocab for i in range(tokens)]
    t = time.perf_counter()
    if mode == "probe":
        probe_routing(model_dir, tokens=ids)
    else:
        transformers.utils.logging.disable_progress_bar()
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(model_dir), local_files_only=True).eval()
        with torch.no_grad():
            model.model(torch.tensor([ids]), use_cache=False)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"base_rss": base["VmRSS"], "base_anon": base["RssAnon"], "peak_rss": peak,
                      "peak_anon": peak_anon[0], "seconds": seconds}))


def measure(model_dir: Path, mode: str, tokens: int) -> str:
    res = subprocess.run([sys.executable, __file__, "--tokens", str(tokens), "--child", mode,
                          str(model_dir)], capture_output=True, text=True, check=True)
    r = json.loads(res.stdout.strip().splitlines()[-1])
    rss, anon = r["peak_rss"] - r["base_rss"], r["peak_anon"] - r["base_anon"]
    return (f"peak RSS {r['peak_rss']:5.0f} MB (+{rss:5.0f} over imports), peak anon "
            f"{r['peak_anon']:5.0f} MB (+{anon:5.0f}), {r['seconds']:5.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--intermediate", type=int, default=2048)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--full", action="store_true", help="also measure from_pretrained + forward")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/weightvis-probe-bench"))
    ap.add_argument("--model", type=Path, help="measure this model directory instead")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "DIR"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    modes = ["probe"] + (["full"] if a.full else [])
    if a.child:
        child(a.child[0], Path(a.child[1]), a.tokens)
        return
    if a.model:
        for mode in modes:
            print(f"{mode:5s} {a.model.name}: {measure(a.model, mode, a.tokens)}")
        return
    layer_mb = (3 * EXPERTS * a.hidden * a.intermediate + 2 * a.hidden ** 2
                + 2 * a.hidden * KV_HEADS * (a.hidden // HEADS)) * 4 / 2**20
    print(f"Mixtral-shaped, float32: H {a.hidden}, I {a.intermediate}, E {EXPERTS}, top-{TOP_K}, "
          f"vocab {VOCAB}; one decoder layer {layer_mb:.0f} MB, embedding "
          f"{VOCAB * a.hidden * 4 / 2**20:.0f} MB; {a.tokens} tokens")
    for layers in a.layers:
        d = write_checkpoint(a.cache / f"mixtral-{a.hidden}-{a.intermediate}-{layers}", layers,
                             a.hidden, a.intermediate)
        size = sum(f.stat().st_size for f in d.glob("*.safetensors")) / 2**20
        for mode in modes:
            print(f"{mode:5s} {layers:3d} layers ({size:5.0f} MB): {measure(d, mode, a.tokens)}",
                  flush=True)


if __name__ == "__main__":
    main()
