"""Mixture-of-Experts structure: which stored tensor holds which routed expert's gate, up and down
matrix, in every storage family (MOE.md §1.2-1.3), and one expert's matrix as true values.

Families (``MoEStructure.family``):

=================== ============================================== ===========================
``per-expert``      ``…experts.{e}.{gate,up,down}_proj|w1,w3,w2…`` one 2-D [out, in] per role
``fused``           ``experts.gate_up_proj [E, 2I, H]`` (gate rows  ``gu[e, :I]``, ``gu[e, I:]``,
                    first), ``down_proj [E, H, I]``                ``d[e]``
``fused-transposed`` ``gate_up_proj [E, H, 2I]``, ``down_proj       ``gu[e, :, :I].T``, …,
                    [E, I, H]`` (Llama-4, Qwen3-VL-MoE Hub files)  ``d[e].T``
``interleaved``     gpt-oss: ``[E, H, 2I]`` with gate/up columns   ``gu[e, :, 0::2].T``,
                    alternating (MXFP4 files too: formats.quant)   ``gu[e, :, 1::2].T``
``dbrx``            ``experts.mlp.{w1,v1,w2} [E·I, H]``            rows ``e·I…``; w2 transposed
``gguf``            ``blk.N.ffn_{gate,up,down,gate_up}_exps``      as ``fused``
=================== ============================================== ===========================

Orientation of fused tensors: the one (``[E, out, in]`` or ``[E, in, out]``) under which every
fused tensor of a layer gives one H and one I; when both do, the one that also gives the
hidden size (config, GGUF metadata, or the router's columns). When both still fit (only with
missing tensors, or H = I and no gate_up), and for halves-or-interleaved, the architecture
decides (``model_type``; GGUF is always ``[E, out, in]``); without one a
``MoEError`` names the tensor. gpt-oss-20b (H = I = 2880) is decided by its shapes:
``gate_up [E, 2880, 5760]`` only fits ``[E, in, out]``.

MoE layers are the blocks whose tensors hold routed experts (``config.config_moe_layers`` gives
the config's rule; tests check they agree); dense layers the other blocks of that stack.
Experts found by name alone are not an MoE: a router, or an expert count in the config or GGUF
metadata, must say they are routed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np

from ..errors import MoEError
from ..formats.base import Reader
from ..index import NameIndex
from ..types import TensorInfo
from .config import EXPERT_KEYS, HIDDEN_KEYS, SHARED_KEYS, TOP_K_KEYS, cfg_first, flat_config
from .config import gguf_config as _gguf_config
from .quant import expert_rows

__all__ = ["Role", "ExpertSlice", "MoEStructure", "detect_moe", "moe_structure", "moe_config",
           "expert_matrix", "ROLE_ORDER", "FAMILIES", "MAX_EXPERTS_ENV", "max_experts"]

Role = Literal["gate", "up", "down", "gate_up"]
ROLE_ORDER = ("gate", "up", "down")
FAMILIES = ("per-expert", "fused", "fused-transposed", "interleaved", "dbrx", "gguf")

# model_type -> the [E, in, out] gate_up convention; every other model type that fuses experts
# does so as transformers 5 does in memory, [E, out, in] (MOE.md §1.3)
_BMM = {"gpt_oss": "interleaved", "gpt-oss": "interleaved", "llama4": "fused-transposed",
        "llama4_text": "fused-transposed"}
_AMBIGUOUS = {"qwen3_vl_moe", "qwen3_vl_moe_text"}
"""Hub files are [E, in, out]; transformers re-saves them [E, out, in]: only shapes decide."""

MAX_EXPERTS_ENV = "WEIGHTVIS_MAX_EXPERTS"
DEFAULT_MAX_EXPERTS = 1 << 16
"""Routed experts per layer at most (DeepSeek-V3 has 256, Qwen3-Next 512): a file claiming more
(an expert index of 10^9 in a name, a fused tensor of 10^9 empty experts) would have weightvis
build a slice per expert; a real model past it can raise the bound."""


def max_experts() -> int:
    """``WEIGHTVIS_MAX_EXPERTS`` (a non-negative integer), else ``DEFAULT_MAX_EXPERTS``."""
    from ..formats.limits import env_limit

    return env_limit(MAX_EXPERTS_ENV, DEFAULT_MAX_EXPERTS)


def _error(t: TensorInfo, problem: str) -> MoEError:
    """The error, naming the file and the tensor (as a FormatError does)."""
    return MoEError(f"{t.file}: tensor {t.name!r}: {problem}")


def _check_count(n: int, t: TensorInfo) -> None:
    limit = max_experts()
    if n > limit:
        raise _error(t, f"{n:,} routed experts, over the bound of {limit:,} "
                        f"({MAX_EXPERTS_ENV} raises it)")


class ExpertSlice(NamedTuple):
    """Where one expert's matrix of one role lives in the checkpoint.

    >>> ExpertSlice("m.experts.gate_up_proj", 3, (0, 64), (1, 48), 2, True).col_step
    2
    """

    tensor: str
    """Stored tensor name (as the reader lists it)."""
    expert_axis_index: int | None
    """Index along the leading expert axis of a 3-D tensor; None for a 2-D tensor."""
    rows: tuple[int, int]
    """Row range in the (per-expert) 2-D matrix as stored."""
    cols: tuple[int, int]
    col_step: int
    """1, or 2 for gpt-oss' interleaved gate/up columns (``cols`` starting at 0 or 1)."""
    transpose: bool
    """True when stored as [in, out]; ``expert_matrix`` returns [out, in]."""


@dataclass(frozen=True)
class MoEStructure:
    """The routed experts of a checkpoint (``detect_moe``)."""

    family: str
    moe_layers: tuple[int, ...]
    dense_layers: tuple[int, ...]
    experts: int
    shared_experts: int
    top_k: int | None
    hidden: int
    intermediate: int
    roles: tuple[str, ...]
    slices: Mapping[tuple[int, str], tuple[ExpertSlice, ...]]
    router: Mapping[int, str]
    router_bias: Mapping[int, str]
    shared: Mapping[int, Mapping[str, str]]
    stack: str = field(default="", compare=False)
    """The block stack (name prefix) the layers belong to, e.g. ``model.layers``."""

    def to_json(self) -> dict[str, Any]:
        return {"family": self.family, "moe_layers": list(self.moe_layers),
                "dense_layers": list(self.dense_layers), "experts": self.experts,
                "shared_experts": self.shared_experts, "top_k": self.top_k,
                "hidden": self.hidden, "intermediate": self.intermediate,
                "roles": list(self.roles)}


class _Layer:
    """What one block holds of a Mixture-of-Experts (names, by part and role)."""

    __slots__ = ("experts", "fused", "router", "router_bias", "shared")

    def __init__(self) -> None:
        self.experts: dict[str, dict[int, str]] = defaultdict(dict)
        self.fused: dict[str, str] = {}
        self.router: str | None = None
        self.router_bias: str | None = None
        self.shared: dict[str, str] = {}


def moe_config(reader: Reader) -> dict[str, Any]:
    """The checkpoint's config.json, over its GGUF metadata mapped to the same keys
    (``config.gguf_config``)."""
    cfg = getattr(reader, "config", None)
    out = dict(cfg) if isinstance(cfg, Mapping) else {}
    metas = reader.metadata.values() if hasattr(reader, "readers") else [reader.metadata]
    for meta in metas:
        if isinstance(meta, Mapping) and "general.architecture" in meta:
            return {**_gguf_config(meta), **out}
    return out


def detect_moe(reader: Reader, config: Mapping[str, Any] | None = None, *,
               index: NameIndex | None = None) -> MoEStructure | None:
    """The MoE structure of the checkpoint behind ``reader`` (names and shapes only), or None
    for a dense one. ``config``: its config.json or the GGUF metadata mapped to the same keys
    (None: ``moe_config(reader)``); ``index``: the name index of ``reader.tensors()`` if the
    caller has it. Raises ``MoEError`` naming the tensor when an orientation can't be decided."""
    cfg = dict(config) if config else moe_config(reader)
    gguf_arch = cfg.get("model_type") if cfg.get("gguf") else None
    return moe_structure(reader.tensors(), cfg, index=index,
                         gguf_arch=gguf_arch if isinstance(gguf_arch, str) else None)


def moe_structure(tensors: Sequence[TensorInfo], config: Mapping[str, Any] | None, *,
                  index: NameIndex | None = None, gguf_arch: str | None = None
                  ) -> MoEStructure | None:
    """``detect_moe`` on a tensor listing (names and shapes; no reader needed)."""
    cfg = flat_config(config)
    if index is None:
        index = NameIndex([t.name for t in tensors], gguf_arch=gguf_arch)
    infos = {t.name: t for t in tensors}
    stacks: dict[str, dict[int, _Layer]] = defaultdict(lambda: defaultdict(_Layer))
    blocks: dict[str, set[int]] = defaultdict(set)
    for tn in index:
        if tn.prefix is None or tn.block is None:
            continue
        blocks[tn.prefix].add(tn.block)
        if tn.moe is None or tn.expert_role is None:
            continue
        layer = stacks[tn.prefix][tn.block]
        part, role, name = tn.moe, tn.expert_role, tn.name
        if part == "expert" and tn.expert is not None and role in ("gate", "up", "down",
                                                                   "gate_up"):
            layer.experts[role][tn.expert] = name
        elif part == "fused" and role in ("gate", "up", "down", "gate_up"):
            layer.fused.setdefault(role, name)
        elif part == "router" and role == "router" and len(infos[name].shape) == 2:
            layer.router = layer.router or name
        elif part == "router" and role == "router_bias":
            layer.router_bias = layer.router_bias or name
        elif part == "shared" and role in ("gate", "up", "down", "gate_up"):
            layer.shared.setdefault(role, name)
    routed = {p: {b: ly for b, ly in ls.items() if ly.experts or ly.fused}
              for p, ls in stacks.items()}
    routed = {p: ls for p, ls in routed.items() if ls}
    if not routed:
        return None
    stack = max(routed, key=lambda p: (len(routed[p]), p == index.block_prefix, p))
    layers = routed[stack]
    n_cfg = cfg_first(cfg, EXPERT_KEYS)
    if n_cfg is None and not any(stacks[stack][b].router for b in stacks[stack]):
        return None  # experts by name only: nothing says they are routed
    hidden = cfg_first(cfg, HIDDEN_KEYS)
    if hidden is None:
        hidden = next((infos[ly.router].shape[1] for ly in stacks[stack].values()
                       if ly.router), None)
    slices: dict[tuple[int, str], tuple[ExpertSlice, ...]] = {}
    families: set[str] = set()
    sizes: set[tuple[int, int]] = set()
    for b, ly in sorted(layers.items()):
        fam, got, h_i = _layer_slices(b, ly, infos, cfg, hidden, n_cfg)
        families.add(fam)
        sizes.add(h_i)
        for role, ss in got.items():
            slices[(b, role)] = ss
    moe_layers = tuple(sorted(layers))
    hs = {h for h, _ in sizes}
    h_final = hidden if hidden is not None else max(hs)
    roles = tuple(r for r in ROLE_ORDER if any(k[1] == r for k in slices))
    all_layers = stacks[stack]
    shared = {b: dict(all_layers[b].shared) for b in moe_layers if all_layers[b].shared}
    n_shared = cfg_first(cfg, SHARED_KEYS, minimum=0)
    return MoEStructure(
        family="+".join(sorted(families)),
        moe_layers=moe_layers,
        dense_layers=tuple(sorted(blocks[stack] - set(layers))),
        experts=max(len(ss) for ss in slices.values()),
        shared_experts=(n_shared if n_shared is not None else 1) if shared else 0,
        top_k=cfg_first(cfg, TOP_K_KEYS),
        hidden=h_final,
        intermediate=max(i for _, i in sizes),
        roles=roles,
        slices=slices,
        router={b: all_layers[b].router for b in moe_layers  # type: ignore[misc]
                if all_layers[b].router},
        router_bias={b: all_layers[b].router_bias for b in moe_layers  # type: ignore[misc]
                     if all_layers[b].router_bias},
        shared=shared,
        stack=stack,
    )


def _layer_slices(block: int, ly: _Layer, infos: Mapping[str, TensorInfo],
                  cfg: Mapping[str, Any], hidden: int | None, n_cfg: int | None
                  ) -> tuple[str, dict[str, tuple[ExpertSlice, ...]], tuple[int, int]]:
    """One MoE layer: (family, role -> one slice per expert, (H, I))."""
    if ly.experts:
        return _per_expert(block, ly, infos)
    two_d = {r: n for r, n in ly.fused.items() if len(infos[n].shape) == 2}
    if two_d and len(two_d) == len(ly.fused):
        return _dbrx(block, ly, infos, hidden, n_cfg)
    three_d = {r: n for r, n in ly.fused.items() if len(infos[n].shape) == 3}
    if not three_d:
        first = next(iter(ly.fused.values()))
        raise _error(infos[first], f"fused expert tensor of shape {list(infos[first].shape)}: "
                                   f"expected [experts, rows, cols] (layer {block})")
    return _fused(block, three_d, infos, cfg, hidden)


def _per_expert(block: int, ly: _Layer, infos: Mapping[str, TensorInfo]
                ) -> tuple[str, dict[str, tuple[ExpertSlice, ...]], tuple[int, int]]:
    n = 1 + max(max(es) for es in ly.experts.values())
    _check_count(n, infos[next(iter(next(iter(ly.experts.values())).values()))])
    out: dict[str, tuple[ExpertSlice, ...]] = {}
    h = i = 0
    for role, by_e in ly.experts.items():
        if len(by_e) != n:  # a gap: name the first expert missing
            e = next(k for k, x in enumerate(sorted(by_e) + [n]) if k != x)
            raise _error(infos[next(iter(by_e.values()))],
                         f"layer {block}: routed expert {e} has no {role} tensor (the layer has "
                         f"experts 0..{n - 1})")
        names = [by_e[e] for e in range(n)]
        shapes = [infos[name].shape for name in names]
        if set(map(len, shapes)) != {2}:
            name, shape = next((n, s) for n, s in zip(names, shapes, strict=True) if len(s) != 2)
            raise _error(infos[name], f"an expert's {role} matrix of shape {list(shape)}: "
                                      "expected 2-D [out, in]")
        named = names
        rows, cols = max(s[0] for s in shapes), max(s[1] for s in shapes)
        if role != "gate_up":
            new = tuple.__new__  # (ExpertSlice(...) less its Python __new__: 44k on DeepSeek-V3)
            out[role] = tuple([new(ExpertSlice, (name, None, (0, r), (0, c), 1, False))
                               for name, (r, c) in zip(named, shapes, strict=True)])
            h, i = (rows, max(i, cols)) if role == "down" else (cols, max(i, rows))
            continue
        if any(r % 2 for r, _c in shapes):
            raise _error(infos[named[0]], f"gate_up matrix with an odd number of rows "
                                          f"({rows}): gate and up halves cannot be told apart")
        for k, sub in ((0, "gate"), (1, "up")):
            out[sub] = tuple([ExpertSlice(name, None, (k * r // 2, (k + 1) * r // 2), (0, c),
                                          1, False)
                              for name, (r, c) in zip(named, shapes, strict=True)])
        h, i = cols, max(i, rows // 2)
    return "per-expert", out, (h, i)


def _dbrx(block: int, ly: _Layer, infos: Mapping[str, TensorInfo], hidden: int | None,
          n_cfg: int | None) -> tuple[str, dict[str, tuple[ExpertSlice, ...]], tuple[int, int]]:
    """DBRX's 2-D stacks ``w1, v1, w2 [E·I, H]`` (w2: each expert's down transposed)."""
    n = n_cfg
    if n is None and ly.router is not None:
        n = infos[ly.router].shape[0]
    if n is not None:
        _check_count(n, infos[next(iter(ly.fused.values()))])
    out: dict[str, tuple[ExpertSlice, ...]] = {}
    h = i = 0
    for role, name in ly.fused.items():
        rows, cols = infos[name].shape
        if n is None or rows % n or (hidden is not None and cols != hidden) or role == "gate_up":
            raise _error(infos[name], f"a 2-D expert stack of shape [{rows}, {cols}] needs the "
                           f"expert count (config, or the router's rows) to divide its rows"
                           f"{'' if hidden is None else f' and {hidden} columns (hidden size)'}")
        i, h = rows // n, cols
        out[role] = tuple(ExpertSlice(name, None, (e * i, (e + 1) * i), (0, cols), 1,
                                      role == "down") for e in range(n))
    return "dbrx", out, (h, i)


def _fits(shapes: Mapping[str, tuple[int, int]], transposed: bool, hidden: int | None
          ) -> tuple[int, int] | None:
    """(H, I) when every per-expert [rows, cols] is [out, in] (or [in, out] if
    ``transposed``) of its role with one H (= ``hidden`` if known) and one I; else None."""
    hs: set[int] = set() if hidden is None else {hidden}
    is_: set[int] = set()
    for role, (a, b) in shapes.items():
        out_, in_ = (b, a) if transposed else (a, b)
        if role == "gate_up":
            if out_ % 2:
                return None
            is_.add(out_ // 2)
            hs.add(in_)
        elif role == "down":
            hs.add(out_)
            is_.add(in_)
        else:
            is_.add(out_)
            hs.add(in_)
    return (hs.pop(), is_.pop()) if len(hs) == 1 and len(is_) == 1 else None


def _fused(block: int, fused: Mapping[str, str], infos: Mapping[str, TensorInfo],
           cfg: Mapping[str, Any], hidden: int | None
           ) -> tuple[str, dict[str, tuple[ExpertSlice, ...]], tuple[int, int]]:
    """Fused 3-D expert tensors of one layer, sliced per expert (orientation: module doc)."""
    shapes = {r: (infos[n].shape[1], infos[n].shape[2]) for r, n in fused.items()}
    first = fused.get("gate_up") or next(iter(fused.values()))
    gguf = any("_exps" in n for n in fused.values())
    model_type = cfg.get("model_type") if isinstance(cfg.get("model_type"), str) else None
    lin, bmm = _fits(shapes, False, None), _fits(shapes, True, None)
    desc = ", ".join(f"{n} {list(infos[n].shape)}" for n in fused.values())
    if lin is None and bmm is None:
        raise _error(infos[first], f"layer {block}: fused expert tensors {desc} fit neither "
                                   "[experts, out, in] nor [experts, in, out] with one hidden "
                                   "and one intermediate size")
    if lin is not None and bmm is not None and hidden is not None:  # the hidden size decides
        lin_h, bmm_h = _fits(shapes, False, hidden), _fits(shapes, True, hidden)
        if (lin_h is None) != (bmm_h is None):
            lin, bmm = lin_h, bmm_h
    if lin is not None and bmm is not None:
        if gguf or (model_type is not None and model_type not in _BMM
                    and model_type not in _AMBIGUOUS):
            bmm = None
        elif model_type in _BMM:
            lin = None
        else:
            known = ("config.json names none" if model_type is None
                     else f"{model_type!r} is not one whose layout weightvis knows")
            raise _error(
                infos[first], f"shape {list(infos[first].shape)} fits both [experts, out, in] and "
                f"[experts, in, out] (hidden size {hidden}); the architecture decides, and "
                f"{known}")
    transposed = lin is None
    if transposed and gguf:
        raise _error(infos[first], f"layer {block}: GGUF expert tensors {desc} are not "
                                   "[experts, out, in]")
    h, i = bmm if transposed else lin  # type: ignore[misc]
    family = "gguf" if gguf else "fused"
    if transposed:
        family = _BMM.get(model_type or "", "")
        if "gate_up" in fused and not family:
            if model_type in _AMBIGUOUS:
                family = "fused-transposed"  # Qwen3-VL-MoE Hub files: halves
            else:
                known = ("there is none" if model_type is None
                         else f"{model_type!r} is not one weightvis knows")
                raise _error(
                    infos[fused["gate_up"]], "[experts, hidden, 2·intermediate] holds gate and up "
                    f"either as halves (Llama-4) or interleaved columns (gpt-oss); config.json's "
                    f"model_type decides, and {known}")
        family = family or "fused-transposed"
    n_exp = min(infos[n].shape[0] for n in fused.values())
    _check_count(n_exp, infos[first])
    out: dict[str, tuple[ExpertSlice, ...]] = {}
    for role, name in fused.items():
        a, b = shapes[role]
        if role != "gate_up":
            out[role] = tuple(ExpertSlice(name, e, (0, a), (0, b), 1, transposed)
                              for e in range(n_exp))
            continue
        for half, sub in ((0, "gate"), (1, "up")):
            if family == "interleaved":
                s = [ExpertSlice(name, e, (0, a), (half, b), 2, True) for e in range(n_exp)]
            elif transposed:
                s = [ExpertSlice(name, e, (0, a), (half * i, (half + 1) * i), 1, True)
                     for e in range(n_exp)]
            else:
                s = [ExpertSlice(name, e, (half * i, (half + 1) * i), (0, b), 1, False)
                     for e in range(n_exp)]
            out[sub] = tuple(s)
    return family, out, (h, i)


def expert_matrix(reader: Reader, s: ExpertSlice) -> np.ndarray:
    """One expert's matrix of one role, float32 [out, in], true values (FP8 block scales and
    MXFP4 decoded by the reader; GGUF quants by its dequantizer)."""
    (r0, r1), (c0, c1) = s.rows, s.cols
    if s.expert_axis_index is None:
        m = reader.read(s.tensor, r0, r1, c0, c1)
    else:
        m = expert_rows(reader, reader.info(s.tensor), s.expert_axis_index, r0, r1, c0, c1)
    if s.col_step != 1:
        m = m[:, ::s.col_step]
    if s.transpose:
        m = m.T
    return np.ascontiguousarray(m, dtype=np.float32)
