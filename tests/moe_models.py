"""Tiny Mixture-of-Experts checkpoints of every storage family (MOE.md §1.2-1.6: names, shapes,
fused orientations, quantized storage), written with numpy, safetensors and gguf-py from one
reference set of experts - so every family is checked against the same per-expert matrices.
Transformers-built models (when transformers is installed) are in test_moe_structure.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from weightvis.formats.safetensors import write_safetensors


class Ref(NamedTuple):
    """Reference experts: ``gate[L][e]`` [I, H], ``up[L][e]`` [I, H], ``down[L][e]`` [H, I]
    for each MoE layer L; routers [E, H], selection biases [E], shared experts."""

    H: int
    I: int
    E: int
    n_layers: int
    moe_layers: tuple[int, ...]
    gate: dict[int, np.ndarray]
    up: dict[int, np.ndarray]
    down: dict[int, np.ndarray]
    router: dict[int, np.ndarray]
    bias: dict[int, np.ndarray]
    shared: dict[int, dict[str, np.ndarray]]

    def matrix(self, layer: int, role: str, e: int) -> np.ndarray:
        return {"gate": self.gate, "up": self.up, "down": self.down}[role][layer][e]


def reference(*, H: int = 64, I: int = 32, E: int = 4, n_layers: int = 4,
              moe_layers: tuple[int, ...] = (1, 2, 3), seed: int = 0) -> Ref:
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    return Ref(H, I, E, n_layers, moe_layers,
               gate={L: w(E, I, H) for L in moe_layers}, up={L: w(E, I, H) for L in moe_layers},
               down={L: w(E, H, I) for L in moe_layers},
               router={L: w(E, H) for L in moe_layers}, bias={L: w(E) for L in moe_layers},
               shared={L: {"gate": w(I, H), "up": w(I, H), "down": w(H, I)}
                       for L in moe_layers})


def _dense(ref: Ref, prefix: str = "model.layers", ffn: str = "mlp") -> dict[str, np.ndarray]:
    """Embeddings, attention and norms of every layer; a dense MLP in the non-MoE layers."""
    rng = np.random.default_rng(1)
    h = ref.H
    out = {"model.embed_tokens.weight": rng.standard_normal((48, h)).astype(np.float32),
           "model.norm.weight": np.ones(h, np.float32)}
    for L in range(ref.n_layers):
        p = f"{prefix}.{L}."
        for n, shape in (("self_attn.q_proj.weight", (h, h)), ("self_attn.k_proj.weight", (16, h)),
                         ("self_attn.v_proj.weight", (16, h)), ("self_attn.o_proj.weight", (h, h)),
                         ("input_layernorm.weight", (h,)),
                         ("post_attention_layernorm.weight", (h,))):
            out[p + n] = rng.standard_normal(shape).astype(np.float32)
        if L not in ref.moe_layers:
            for n, shape in (("gate_proj", (96, h)), ("up_proj", (96, h)), ("down_proj", (h, 96))):
                out[f"{p}{ffn}.{n}.weight"] = rng.standard_normal(shape).astype(np.float32)
    return out


def save(d: Path, tensors: dict[str, np.ndarray], config: dict[str, Any],
         dtypes: dict[str, str] | None = None) -> Path:
    """One safetensors file + config.json; ``dtypes`` names the stored dtype of raw arrays."""
    d.mkdir(parents=True, exist_ok=True)
    spec: dict[str, tuple[str, Any, np.ndarray]] = {}
    for name, a in tensors.items():
        dt = (dtypes or {}).get(name) or {np.dtype(np.float32): "F32", np.dtype(np.uint8): "U8"}[
            a.dtype]
        spec[name] = (dt, a.shape, a)
    write_safetensors(d / "model.safetensors", spec)
    (d / "config.json").write_text(json.dumps(config))
    return d


def base_config(ref: Ref, model_type: str, **extra: Any) -> dict[str, Any]:
    return {"model_type": model_type, "hidden_size": ref.H, "num_hidden_layers": ref.n_layers,
            "num_experts_per_tok": 2, **extra}


def per_expert(ref: Ref, d: Path, style: str = "deepseek") -> Path:
    """``mixtral`` (block_sparse_moe, w1/w3/w2, no shared, all layers MoE), ``qwen``
    (mlp.experts.E.*_proj, shared_expert + its gate), ``deepseek`` (shared_experts, selection
    bias, ``first_k_dense_replace``)."""
    t = _dense(ref)
    for L in ref.moe_layers:
        if style == "mixtral":
            p = f"model.layers.{L}.block_sparse_moe"
            t[f"{p}.gate.weight"] = ref.router[L]
            for e in range(ref.E):
                t[f"{p}.experts.{e}.w1.weight"] = ref.gate[L][e]
                t[f"{p}.experts.{e}.w3.weight"] = ref.up[L][e]
                t[f"{p}.experts.{e}.w2.weight"] = ref.down[L][e]
            continue
        p = f"model.layers.{L}.mlp"
        t[f"{p}.gate.weight"] = ref.router[L]
        for e in range(ref.E):
            t[f"{p}.experts.{e}.gate_proj.weight"] = ref.gate[L][e]
            t[f"{p}.experts.{e}.up_proj.weight"] = ref.up[L][e]
            t[f"{p}.experts.{e}.down_proj.weight"] = ref.down[L][e]
        sh = "shared_expert" if style == "qwen" else "shared_experts"
        for role, m in ref.shared[L].items():
            t[f"{p}.{sh}.{role}_proj.weight"] = m
        if style == "qwen":
            t[f"{p}.shared_expert_gate.weight"] = ref.router[L][:1]
        else:
            t[f"{p}.gate.e_score_correction_bias"] = ref.bias[L]
    cfg = {"mixtral": base_config(ref, "mixtral", num_local_experts=ref.E),
           "qwen": base_config(ref, "qwen2_moe", num_experts=ref.E, decoder_sparse_step=1,
                               mlp_only_layers=[L for L in range(ref.n_layers)
                                                if L not in ref.moe_layers]),
           "deepseek": base_config(ref, "deepseek_v3", n_routed_experts=ref.E, n_shared_experts=1,
                                   first_k_dense_replace=min(ref.moe_layers), moe_layer_freq=1),
           }[style]
    return save(d, t, cfg)


def fused(ref: Ref, d: Path, orient: str = "linear") -> Path:
    """``linear``: ``gate_up_proj [E, 2I, H]`` (gate rows first), ``down_proj [E, H, I]``
    (transformers 5); ``halves``: ``[E, H, 2I]``, ``[E, I, H]`` (Llama-4, feed_forward);
    ``interleaved``: gpt-oss ``[E, H, 2I]`` with gate/up columns alternating, plus biases."""
    t = _dense(ref, ffn="feed_forward" if orient == "halves" else "mlp")
    for L in ref.moe_layers:
        g, u, dn = ref.gate[L], ref.up[L], ref.down[L]
        if orient == "linear":
            p = f"model.layers.{L}.mlp"
            t[f"{p}.experts.gate_up_proj"] = np.concatenate([g, u], axis=1)
            t[f"{p}.experts.down_proj"] = np.ascontiguousarray(dn)
            t[f"{p}.gate.weight"] = ref.router[L]
        elif orient == "halves":
            p = f"model.layers.{L}.feed_forward"
            t[f"{p}.experts.gate_up_proj"] = np.ascontiguousarray(
                np.concatenate([g, u], axis=1).transpose(0, 2, 1))
            t[f"{p}.experts.down_proj"] = np.ascontiguousarray(dn.transpose(0, 2, 1))
            t[f"{p}.router.weight"] = ref.router[L]
            for role, m in ref.shared[L].items():
                t[f"{p}.shared_expert.{role}_proj.weight"] = m
        else:
            p = f"model.layers.{L}.mlp"
            gu = np.empty((ref.E, ref.H, 2 * ref.I), np.float32)
            gu[:, :, 0::2], gu[:, :, 1::2] = g.transpose(0, 2, 1), u.transpose(0, 2, 1)
            t[f"{p}.experts.gate_up_proj"] = gu
            t[f"{p}.experts.gate_up_proj_bias"] = np.zeros((ref.E, 2 * ref.I), np.float32)
            t[f"{p}.experts.down_proj"] = np.ascontiguousarray(dn.transpose(0, 2, 1))
            t[f"{p}.experts.down_proj_bias"] = np.zeros((ref.E, ref.H), np.float32)
            t[f"{p}.router.weight"] = ref.router[L]
            t[f"{p}.router.bias"] = ref.bias[L]
    model_type = {"linear": "qwen3_moe", "halves": "llama4_text", "interleaved": "gpt_oss"}[orient]
    cfg = base_config(ref, model_type, num_local_experts=ref.E)
    if orient == "linear":
        cfg.update(decoder_sparse_step=1, mlp_only_layers=[
            L for L in range(ref.n_layers) if L not in ref.moe_layers])
    return save(d, t, cfg)


def dbrx(ref: Ref, d: Path) -> Path:
    """DBRX: ``ffn.experts.mlp.{w1,v1,w2} [E·I, H]`` (w2 holds each expert's down transposed)."""
    rng = np.random.default_rng(2)
    t: dict[str, np.ndarray] = {"transformer.wte.weight": rng.standard_normal(
        (48, ref.H)).astype(np.float32)}
    for L in range(ref.n_layers):
        p = f"transformer.blocks.{L}"
        t[f"{p}.norm_attn_norm.attn.Wqkv.weight"] = rng.standard_normal(
            (3 * ref.H, ref.H)).astype(np.float32)
        if L not in ref.moe_layers:
            continue
        t[f"{p}.ffn.router.layer.weight"] = ref.router[L]
        t[f"{p}.ffn.experts.mlp.w1"] = ref.gate[L].reshape(-1, ref.H)
        t[f"{p}.ffn.experts.mlp.v1"] = ref.up[L].reshape(-1, ref.H)
        t[f"{p}.ffn.experts.mlp.w2"] = np.ascontiguousarray(
            ref.down[L].transpose(0, 2, 1)).reshape(-1, ref.H)
    return save(d, t, {"model_type": "dbrx", "d_model": ref.H, "n_layers": ref.n_layers,
                       "ffn_config": {"moe_num_experts": ref.E, "moe_top_k": 2}})


def gguf_moe(ref: Ref, path: Path, qtype: str = "F32") -> tuple[Path, dict[str, np.ndarray]]:
    """A ``deepseek2`` GGUF as llama.cpp writes one: ``blk.N.ffn_{gate,up}_exps [E, I, H]``,
    ``ffn_down_exps [E, H, I]`` (numpy order), ``ffn_gate_inp``, ``exp_probs_b.bias``, shared
    experts ``_shexp``, leading dense blocks. Returns the file and the stored tensors' true
    values (``gguf.quants.dequantize`` of what was written)."""
    import gguf
    import gguf.quants

    q = gguf.GGMLQuantizationType
    w = gguf.GGUFWriter(str(path), "deepseek2")
    w.add_block_count(ref.n_layers)
    w.add_embedding_length(ref.H)
    w.add_expert_count(ref.E)
    w.add_expert_used_count(2)
    w.add_expert_shared_count(1)
    w.add_leading_dense_block_count(min(ref.moe_layers))
    truth: dict[str, np.ndarray] = {}

    def put(name: str, a: np.ndarray, quant: bool) -> None:
        if quant and qtype != "F32":
            stored = gguf.quants.quantize(a, q[qtype])
            w.add_tensor(name, stored, raw_dtype=q[qtype])
            truth[name] = gguf.quants.dequantize(stored, q[qtype]).reshape(a.shape)
        else:
            w.add_tensor(name, a.astype(np.float32))
            truth[name] = a.astype(np.float32)

    dense = _dense(ref)
    put("token_embd.weight", dense["model.embed_tokens.weight"], False)
    for L in range(ref.n_layers):
        put(f"blk.{L}.attn_norm.weight", dense[f"model.layers.{L}.input_layernorm.weight"], False)
        put(f"blk.{L}.attn_q.weight", dense[f"model.layers.{L}.self_attn.q_proj.weight"], True)
        if L not in ref.moe_layers:
            for n in ("gate", "up", "down"):
                put(f"blk.{L}.ffn_{n}.weight", dense[f"model.layers.{L}.mlp.{n}_proj.weight"],
                    True)
            continue
        put(f"blk.{L}.ffn_gate_inp.weight", ref.router[L], False)
        put(f"blk.{L}.exp_probs_b.bias", ref.bias[L], False)
        put(f"blk.{L}.ffn_gate_exps.weight", ref.gate[L], True)
        put(f"blk.{L}.ffn_up_exps.weight", ref.up[L], True)
        put(f"blk.{L}.ffn_down_exps.weight", ref.down[L], True)
        for role, m in ref.shared[L].items():
            put(f"blk.{L}.ffn_{role}_shexp.weight", m, True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path, truth


def fp8_codes(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Random F8_E4M3 codes, NaN codes (S.1111.111) excluded."""
    c = rng.integers(0, 256, shape, dtype=np.uint8)
    return np.where((c & 0x7F) == 0x7F, c - 1, c).astype(np.uint8)


def e4m3_values(codes: np.ndarray) -> np.ndarray:
    """Float64 values of E4M3 codes, by ml_dtypes (independent of weightvis' table)."""
    import ml_dtypes

    return codes.view(ml_dtypes.float8_e4m3fn).astype(np.float64)
