"""The embedded default: a deterministic synthetic Llama-style bf16 checkpoint with planted
features, generated in memory (no download) and rendered to a bundle.

Planted, for the user to find (README "What to look for in the demo"):
- DEAD_HEAD: attention head 5 of layer 2 is dead - its 64 rows of q_proj and its 64 columns of
  o_proj are exactly zero (a black band in q_proj and in o_proj of block 2);
- OUTLIER_CHANNEL: hidden channel 137 is an outlier - column 137 of every q/k/v/gate/up_proj is
  8x larger and the norms' weight at 137 is large (a bright vertical line through every block);
- QUANTIZED_LAYER: every matrix of layer 5 is rounded to 7 levels per row (a 3-bit-like
  symmetric grid), so block 5 looks posterized;
- tied embeddings: there is no lm_head; config.json says ``tie_word_embeddings: true``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from . import compiling
from .bundle import Progress, RenderResult, render
from .formats.safetensors import write_safetensors

__all__ = ["demo_tensors", "write_demo_checkpoint", "render_demo", "DEMO_CONFIG", "DEAD_HEAD",
           "OUTLIER_CHANNEL", "QUANTIZED_LAYER"]

DEMO_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 512,
    "intermediate_size": 1408,
    "num_hidden_layers": 8,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "vocab_size": 8192,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
}
DEAD_HEAD = (2, 5)          # (layer, head)
OUTLIER_CHANNEL = 137
QUANTIZED_LAYER = 5
_SEED = 20261122
DEMO_STAGE = "generating the demo checkpoint"
DEMO_KERNELS = ("reduce", "codes")
"""The kernel groups the demo's tiles use (weightvis.compiling): bf16 codes, batched small
blocks, the arch layout; not ``png``: the demo's 254 tiles and their sidecars are compressed
by the standard library's zlib (``png_deflate="zlib"``: +0.7 CPU-s a run, -4.6 CPU-s of
compiling on the first). tests/test_first_run.py checks no other tile kernel runs."""


def _bf16(a: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bit patterns (uint16), round to nearest even."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def demo_tensors() -> dict[str, np.ndarray]:
    """The demo's tensors as float32 (before bf16 rounding), deterministic."""
    c = DEMO_CONFIG
    h, inter, L = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    nh, nkv = c["num_attention_heads"], c["num_key_value_heads"]
    hd = h // nh
    rng = np.random.default_rng(_SEED)

    def mat(rows: int, cols: int, gain: float) -> np.ndarray:
        w: np.ndarray = rng.standard_normal((rows, cols), dtype=np.float32) / np.sqrt(cols) * gain
        w *= (1 + 0.25 * rng.standard_normal((rows, 1), dtype=np.float32))  # per-row scale
        return w

    out: dict[str, np.ndarray] = {
        "model.embed_tokens.weight": mat(c["vocab_size"], h, 18.0),
    }
    for i in range(L):
        p = f"model.layers.{i}."
        g = 1.0 + 0.08 * i  # deeper layers a little larger: a gentle gradient across blocks
        t = {
            "self_attn.q_proj.weight": mat(h, h, g),
            "self_attn.k_proj.weight": mat(nkv * hd, h, g),
            "self_attn.v_proj.weight": mat(nkv * hd, h, g * 0.8),
            "self_attn.o_proj.weight": mat(h, h, g * 0.8),
            "mlp.gate_proj.weight": mat(inter, h, g),
            "mlp.up_proj.weight": mat(inter, h, g),
            "mlp.down_proj.weight": mat(h, inter, g * 0.7),
            "input_layernorm.weight": (1 + 0.05 * rng.standard_normal(h)).astype(np.float32),
            "post_attention_layernorm.weight":
                (1 + 0.05 * rng.standard_normal(h)).astype(np.float32),
        }
        for k in ("q_proj", "k_proj", "v_proj"):
            t[f"self_attn.{k}.weight"][:, OUTLIER_CHANNEL] *= 8.0
        for k in ("gate_proj", "up_proj"):
            t[f"mlp.{k}.weight"][:, OUTLIER_CHANNEL] *= 8.0
        t["input_layernorm.weight"][OUTLIER_CHANNEL] = 6.0
        t["post_attention_layernorm.weight"][OUTLIER_CHANNEL] = 6.0
        if i == DEAD_HEAD[0]:
            head = DEAD_HEAD[1]
            t["self_attn.q_proj.weight"][head * hd:(head + 1) * hd, :] = 0.0
            t["self_attn.o_proj.weight"][:, head * hd:(head + 1) * hd] = 0.0
        if i == QUANTIZED_LAYER:
            for k, w in t.items():
                if w.ndim == 2:
                    step = np.abs(w).max(axis=1, keepdims=True) / 3.0
                    t[k] = (np.round(w / step) * step).astype(np.float32)
        out.update({p + k: v for k, v in t.items()})
    out["model.norm.weight"] = (1 + 0.05 * rng.standard_normal(h)).astype(np.float32)
    return out


def write_demo_checkpoint(directory: str | os.PathLike[str]) -> Path:
    """Write ``model.safetensors`` (bf16) and ``config.json``; returns the directory."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {k: ("BF16", v.shape, _bf16(v)) for k, v in demo_tensors().items()}
    write_safetensors(d / "model.safetensors", tensors,
                      {"format": "pt", "source": "weightvis demo (synthetic)"})
    (d / "config.json").write_text(json.dumps(DEMO_CONFIG, indent=2), "utf-8")
    return d


def render_demo(out: str | os.PathLike[str], *, workers: int | None = None,
                overwrite: bool = False, keep_checkpoint: str | os.PathLike[str] | None = None,
                progress: Progress | None = None) -> RenderResult:
    """Generate the demo checkpoint and render it to ``out``."""
    title = "weightvis demo: synthetic Llama-style model (bf16, 8 layers)"
    # a first run compiles numba's kernels while the checkpoint is made: the ones the demo uses
    compiling.start(needed=DEMO_KERNELS)
    if progress is not None:
        progress(DEMO_STAGE, 0, 1)
    if keep_checkpoint is not None:
        ckpt = write_demo_checkpoint(keep_checkpoint)
        if progress is not None:
            progress(DEMO_STAGE, 1, 1)
        return render([ckpt], out, title=title, workers=workers, overwrite=overwrite,
                      progress=progress, png_deflate="zlib")
    with tempfile.TemporaryDirectory(prefix="weightvis-demo-") as tmp:
        ckpt = write_demo_checkpoint(tmp)
        if progress is not None:
            progress(DEMO_STAGE, 1, 1)
        return render([ckpt], out, title=title, workers=workers, overwrite=overwrite,
                      progress=progress, png_deflate="zlib")
