"""MoE checkpoints for the tests of the summary, similarity and scenes (DeepSeek-V3's or
Mixtral's names and config keys, or the fused layout), with planted copies, permuted copies and
dead experts (``Planted``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

# --------------------------------------------------------------------------- checkpoints

class Planted:
    """What a test checkpoint plants (layer ids are stack layer ids)."""

    copy = (1, 2, 0)           # layer 1: expert 2 is a copy of expert 0
    permuted = (1, 3, 0)       # layer 1: expert 3 is expert 0 with its neurons permuted
    dead = (2, 1)              # layer 2: expert 1 is all zeros (every role)


def moe_tensors(*, layers: int = 3, dense: tuple[int, ...] = (0,), experts: int = 4,
                hidden: int = 64, inter: int = 96, names: str = "qwen", bias: bool = True,
                shared: bool = True, seed: int = 0) -> tuple[dict[str, np.ndarray],
                                                             dict[str, Any]]:
    """(tensors, config) of a small MoE: ``layers`` MoE layers after the ``dense`` ones, with
    the plants of ``Planted`` (MoE layer ids counted in the whole stack)."""
    rng = np.random.default_rng(seed)
    t: dict[str, np.ndarray] = {"model.embed_tokens.weight":
                                (rng.standard_normal((128, hidden)) * 0.02).astype(np.float32)}
    total = len(dense) + layers
    for layer in range(total):
        p = f"model.layers.{layer}."
        t[p + "self_attn.q_proj.weight"] = (rng.standard_normal((hidden, hidden))
                                            * 0.02).astype(np.float32)
        t[p + "input_layernorm.weight"] = np.ones(hidden, np.float32)
        if layer in dense:
            t[p + "mlp.gate_proj.weight"] = (rng.standard_normal((inter, hidden))
                                             * 0.02).astype(np.float32)
            t[p + "mlp.up_proj.weight"] = (rng.standard_normal((inter, hidden))
                                           * 0.02).astype(np.float32)
            t[p + "mlp.down_proj.weight"] = (rng.standard_normal((hidden, inter))
                                             * 0.02).astype(np.float32)
            continue
        scale = 0.02 * (1 + 0.25 * layer)
        ws = {role: [(rng.standard_normal((inter, hidden) if role != "down" else
                                          (hidden, inter)) * scale).astype(np.float32)
                     for _ in range(experts)] for role in ("gate", "up", "down")}
        if layer == Planted.copy[0]:
            for role in ws:
                ws[role][Planted.copy[1]] = ws[role][Planted.copy[2]].copy()
        if layer == Planted.permuted[0]:
            perm = rng.permutation(inter)
            src = Planted.permuted[2]
            ws["gate"][Planted.permuted[1]] = ws["gate"][src][perm].copy()
            ws["up"][Planted.permuted[1]] = ws["up"][src][perm].copy()
            ws["down"][Planted.permuted[1]] = ws["down"][src][:, perm].copy()
        if layer == Planted.dead[0]:
            for role in ws:
                ws[role][Planted.dead[1]] = np.zeros_like(ws[role][0])
        mlp = "block_sparse_moe" if names == "mixtral" else "mlp"
        t[p + f"{mlp}.gate.weight"] = (rng.standard_normal((experts, hidden))
                                       * (0.5 + 0.1 * np.arange(experts)[:, None])
                                       ).astype(np.float32)
        if names == "fused":
            t[p + "mlp.experts.gate_up_proj"] = np.stack(
                [np.concatenate([g, u]) for g, u in zip(ws["gate"], ws["up"], strict=True)])
            t[p + "mlp.experts.down_proj"] = np.stack(ws["down"])
        else:
            files = ({"gate": "w1", "up": "w3", "down": "w2"} if names == "mixtral" else
                     {r: f"{r}_proj" for r in ws})
            for role, mats in ws.items():
                for e, w in enumerate(mats):
                    t[p + f"{mlp}.experts.{e}.{files[role]}.weight"] = w
        if bias and names != "mixtral":
            t[p + "mlp.gate.e_score_correction_bias"] = rng.standard_normal(
                experts).astype(np.float32)
        if shared and names != "mixtral":
            for role, shape in (("gate", (inter, hidden)), ("up", (inter, hidden)),
                                ("down", (hidden, inter))):
                t[p + f"mlp.shared_experts.{role}_proj.weight"] = (
                    rng.standard_normal(shape) * 0.02).astype(np.float32)
    t["model.norm.weight"] = np.ones(hidden, np.float32)
    if names == "mixtral":
        config: dict[str, Any] = {
            "architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
            "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": total,
            "num_local_experts": experts, "num_experts_per_tok": 2}
    else:  # DeepSeek-V3's names and config keys (dense layers first)
        config = {"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
                  "hidden_size": hidden, "intermediate_size": inter,
                  "moe_intermediate_size": inter, "num_hidden_layers": total,
                  "n_routed_experts": experts, "n_shared_experts": 1 if shared else 0,
                  "num_experts_per_tok": 2, "first_k_dense_replace": len(dense),
                  "moe_layer_freq": 1}
    return t, config


def write_moe_checkpoint(folder: Path, **kw: Any) -> Path:
    """A directory with model.safetensors and config.json (``moe_tensors(**kw)``)."""
    from safetensors.numpy import save_file

    tensors, config = moe_tensors(**kw)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config), "utf-8")
    return folder


def expert_weights(tensors: Mapping[str, np.ndarray], layer: int, role: str,
                   experts: int) -> list[np.ndarray]:
    """The matrices of one (layer, role) from ``moe_tensors`` output, [out, in] each."""
    p = f"model.layers.{layer}."
    if p + "mlp.experts.gate_up_proj" in tensors:
        gu = tensors[p + "mlp.experts.gate_up_proj"]
        inter = gu.shape[1] // 2
        if role == "down":
            return [tensors[p + "mlp.experts.down_proj"][e] for e in range(experts)]
        part = slice(0, inter) if role == "gate" else slice(inter, 2 * inter)
        return [gu[e][part] for e in range(experts)]
    for mlp, files in (("block_sparse_moe", {"gate": "w1", "up": "w3", "down": "w2"}),
                       ("mlp", {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"})):
        key = p + f"{mlp}.experts.0.{files[role]}.weight"
        if key in tensors:
            return [tensors[p + f"{mlp}.experts.{e}.{files[role]}.weight"]
                    for e in range(experts)]
    raise KeyError((layer, role))
