"""A stand-in for weightvis.moe.structure (contract §1, owned by the "moe-structure" work) and
MoE checkpoints for the tests of the summary, similarity and scenes (DeepSeek-V3's or
Mixtral's names and config keys, or the fused layout).

Until the real module is part of the checkout, ``install()`` puts this module in ``sys.modules``
as ``weightvis.moe.structure`` (forked workers inherit it), so the code under test reaches it
only through the contract's API:
``detect_moe``, ``MoEStructure``, ``ExpertSlice``, ``expert_matrix``. It recognises what these
tests write: per-expert tensors with Mixtral names (``block_sparse_moe.experts.E.w1/w3/w2``,
router ``block_sparse_moe.gate``) or Qwen/DeepSeek names (``mlp.experts.E.{gate,up,down}_proj``,
router ``mlp.gate``, selection bias ``mlp.gate.e_score_correction_bias``, shared experts
``mlp.shared_experts``), and the fused layout (``mlp.experts.gate_up_proj`` [E, 2I, H], gate rows
first; ``mlp.experts.down_proj`` [E, H, I]).
"""

from __future__ import annotations

import json
import re
import sys
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

Role = Literal["gate", "up", "down", "gate_up"]


@dataclass(frozen=True)
class ExpertSlice:
    tensor: str
    expert_axis_index: int | None
    rows: tuple[int, int]
    cols: tuple[int, int]
    col_step: int
    transpose: bool


@dataclass(frozen=True)
class MoEStructure:
    family: str
    moe_layers: tuple[int, ...]
    dense_layers: tuple[int, ...]
    experts: int
    shared_experts: int
    top_k: int | None
    hidden: int
    intermediate: int
    roles: tuple[str, ...]
    slices: Mapping[tuple[int, str], tuple[ExpertSlice, ...]] = field(default_factory=dict)
    router: Mapping[int, str] = field(default_factory=dict)
    router_bias: Mapping[int, str] = field(default_factory=dict)
    shared: Mapping[int, Mapping[str, str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"family": self.family, "moe_layers": list(self.moe_layers),
                "dense_layers": list(self.dense_layers), "experts": self.experts,
                "shared_experts": self.shared_experts, "top_k": self.top_k,
                "hidden": self.hidden, "intermediate": self.intermediate,
                "roles": list(self.roles)}


_PER = re.compile(r"^model\.layers\.(\d+)\.(block_sparse_moe|mlp)\.experts\.(\d+)\."
                  r"(w1|w2|w3|gate_proj|up_proj|down_proj)\.weight$")
_FUSED = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj)$")
_LAYER = re.compile(r"^model\.layers\.(\d+)\.")
_ROLE = {"w1": "gate", "w3": "up", "w2": "down", "gate_proj": "gate", "up_proj": "up",
         "down_proj": "down"}


def detect_moe(reader: Any, config: Mapping[str, Any] | None = None, **_: Any
               ) -> MoEStructure | None:
    names = {t.name: t for t in reader.tensors()}
    per: dict[tuple[int, str], dict[int, str]] = {}
    fused: dict[tuple[int, str], str] = {}
    prefix: dict[int, str] = {}
    layers: set[int] = set()
    for n in names:
        m = _LAYER.match(n)
        if m:
            layers.add(int(m.group(1)))
        m = _PER.match(n)
        if m:
            layer, e = int(m.group(1)), int(m.group(3))
            per.setdefault((layer, _ROLE[m.group(4)]), {})[e] = n
            prefix[layer] = f"model.layers.{layer}.{m.group(2)}."
        m = _FUSED.match(n)
        if m:
            fused[(int(m.group(1)), m.group(2))] = n
            prefix[int(m.group(1))] = f"model.layers.{int(m.group(1))}.mlp."
    if not per and not fused:
        return None
    slices: dict[tuple[int, str], tuple[ExpertSlice, ...]] = {}
    experts = hidden = inter = 0
    for (layer, role), by_e in per.items():
        experts = len(by_e)
        t = names[by_e[0]]
        inter, hidden = (t.shape if role != "down" else t.shape[::-1])
        slices[(layer, role)] = tuple(
            ExpertSlice(by_e[e], None, (0, names[by_e[e]].shape[0]),
                        (0, names[by_e[e]].shape[1]), 1, False) for e in range(experts))
    for (layer, kind), n in fused.items():
        e_count, rows, cols = names[n].shape
        experts = e_count
        if kind == "gate_up_proj":
            inter, hidden = rows // 2, cols
            for role, r in (("gate", (0, inter)), ("up", (inter, 2 * inter))):
                slices[(layer, role)] = tuple(ExpertSlice(n, e, r, (0, cols), 1, False)
                                              for e in range(e_count))
        else:
            slices[(layer, "down")] = tuple(ExpertSlice(n, e, (0, rows), (0, cols), 1, False)
                                            for e in range(e_count))
    moe = tuple(sorted({layer for layer, _ in slices}))
    router = {layer: prefix[layer] + "gate.weight" for layer in moe
              if prefix[layer] + "gate.weight" in names}
    bias = {layer: prefix[layer] + "gate.e_score_correction_bias" for layer in moe
            if prefix[layer] + "gate.e_score_correction_bias" in names}
    shared = {layer: {r: prefix[layer] + f"shared_experts.{r}_proj.weight"
                      for r in ("gate", "up", "down")}
              for layer in moe if prefix[layer] + "shared_experts.gate_proj.weight" in names}
    cfg = dict(config or {})
    return MoEStructure("fused" if fused else "per-expert", moe,
                        tuple(sorted(layers - set(moe))), experts, 1 if shared else 0,
                        cfg.get("num_experts_per_tok"), hidden, inter, ("gate", "up", "down"),
                        slices, router, bias, shared)


def expert_matrix(reader: Any, s: ExpertSlice) -> np.ndarray:
    t = reader.info(s.tensor)
    if s.expert_axis_index is None:
        w = reader.read(s.tensor, s.rows[0], s.rows[1], s.cols[0], s.cols[1])
    else:
        full = reader.read(s.tensor, s.expert_axis_index, s.expert_axis_index + 1)
        w = full.reshape(t.shape[1:])[s.rows[0]:s.rows[1], s.cols[0]:s.cols[1]:s.col_step]
    w = w.T if s.transpose else w
    return np.ascontiguousarray(w, np.float32)


def real_structure() -> bool:
    """weightvis.moe.structure (the "moe-structure" work) is part of this checkout."""
    import weightvis.moe

    return (Path(weightvis.moe.__file__).parent / "structure.py").exists()


def install() -> types.ModuleType:
    """The structure module the tests use: the real ``weightvis.moe.structure`` once it is
    part of the checkout (unless WEIGHTVIS_TEST_FAKE_STRUCTURE=1), else this module installed
    as ``weightvis.moe.structure`` (for this process and its forks)."""
    import os

    import weightvis.moe

    if real_structure() and not os.environ.get("WEIGHTVIS_TEST_FAKE_STRUCTURE"):
        import importlib

        return importlib.import_module("weightvis.moe.structure")
    me = sys.modules[__name__]
    sys.modules["weightvis.moe.structure"] = me
    weightvis.moe.structure = me  # type: ignore[attr-defined]
    return me


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
