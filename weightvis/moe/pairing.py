"""Experts paired across storage layouts in a diff: expert e of role r in layer L of A with
the same expert of B, whatever each side's layout (per-expert 2-D tensors, a fused 3-D tensor
in any orientation, GGUF ``blk.N.ffn_{gate,up,down}_exps``), through each side's
``structure.detect_moe`` (MOE.md §1). A checkpoint and its llama.cpp conversion then compare
element by element, one expert matrix against the other ([out, in] on both sides).

Routers and their selection biases (DeepSeek's ``e_score_correction_bias``, GGUF
``exp_probs_b.bias``) left unpaired are paired whole by layer the same way (``router_pairs``).

Only tensors the name matching left unpaired take part (a fused tensor of the same name and
layout on both sides stays one pair), and a (layer, role) is paired only when every expert's
tensor on both sides is unpaired and both sides have the same number of experts and the same
matrix shape.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, NamedTuple

import numpy as np

from ..types import TensorInfo

__all__ = ["ExpertPair", "structures", "expert_pairs", "router_pairs", "read_slice"]

_ROLE_NAME = {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}


class ExpertPair(NamedTuple):
    """One expert matrix on both sides (``structure.ExpertSlice`` each)."""

    layer: int
    role: str
    expert: int
    slice_a: Any
    slice_b: Any
    info_a: TensorInfo
    """The expert's matrix as a 2-D tensor of A: stored name, [out, in], dtype, file."""
    info_b: TensorInfo
    name: str
    """A per-expert name: the per-expert tensor's own (B's, else A's), or
    ``model.layers.{L}.mlp.experts.{e}.{role}_proj.weight`` when both sides are fused."""


def _structure(reader: Any) -> Any:
    from ..errors import WeightvisError
    from .structure import detect_moe

    try:
        return detect_moe(reader, getattr(reader, "config", None) or None)
    except WeightvisError:  # (experts that cannot be read as experts: paired by name only)
        return None


def _shape(s: Any) -> tuple[int, int]:
    rows = s.rows[1] - s.rows[0]
    cols = len(range(s.cols[0], s.cols[1], s.col_step))
    return (cols, rows) if s.transpose else (rows, cols)


def _whole(s: Any, t: TensorInfo) -> bool:
    """The slice is its whole 2-D tensor, as stored (a per-expert tensor)."""
    return (s.expert_axis_index is None and not s.transpose and s.col_step == 1
            and len(t.shape) == 2 and s.rows == (0, t.shape[0]) and s.cols == (0, t.shape[1]))


def router_pairs(sa: Any, sb: Any, a: Any, b: Any, free_a: Collection[str],
                 free_b: Collection[str]) -> list[tuple[str, str]]:
    """(A's, B's) router and selection-bias tensors of the same MoE layer, both unpaired and of
    the same 2-D view."""
    views_a = {t.name: (t.e_rows, t.e_cols) for t in a.tensors()}
    views_b = {t.name: (t.e_rows, t.e_cols) for t in b.tensors()}
    out = []
    for kind in ("router", "router_bias"):
        ma, mb = getattr(sa, kind), getattr(sb, kind)
        for layer in sorted(set(ma) & set(mb)):
            x, y = ma[layer], mb[layer]
            if x in free_a and y in free_b and views_a.get(x) == views_b.get(y) is not None:
                out.append((x, y))
    return out


def structures(a: Any, b: Any) -> tuple[Any, Any] | None:
    """Both sides' MoE structures, when both have routed experts and as many per layer."""
    sa, sb = _structure(a), _structure(b)
    if sa is None or sb is None or sa.experts != sb.experts:
        return None
    return sa, sb


def expert_pairs(sa: Any, sb: Any, a: Any, b: Any, free_a: Collection[str],
                 free_b: Collection[str]) -> list[ExpertPair]:
    """Every expert of A and B (structures ``sa``, ``sb``) paired by (layer, role, expert),
    among the tensors in ``free_a`` / ``free_b`` (module docstring); in B's layer, role and
    expert order."""
    infos_a = {t.name: t for t in a.tensors()}
    infos_b = {t.name: t for t in b.tensors()}
    out = []
    for (layer, role), slices_b in sorted(sb.slices.items(),
                                          key=lambda kv: (kv[0][0], sb.roles.index(kv[0][1]))):
        slices_a = sa.slices.get((layer, role))
        if not slices_a or len(slices_a) != len(slices_b):
            continue
        if not all(x.tensor in free_a for x in slices_a) \
                or not all(y.tensor in free_b for y in slices_b):
            continue
        if any(_shape(x) != _shape(y) for x, y in zip(slices_a, slices_b, strict=True)):
            continue
        for e, (x, y) in enumerate(zip(slices_a, slices_b, strict=True)):
            ta, tb = infos_a[x.tensor], infos_b[y.tensor]
            name = (y.tensor if _whole(y, tb) else x.tensor if _whole(x, ta)
                    else f"model.layers.{layer}.mlp.experts.{e}.{_ROLE_NAME.get(role, role)}"
                         f".weight")
            out.append(ExpertPair(layer, role, e, x, y,
                                  TensorInfo(ta.name, _shape(x), ta.dtype, ta.file),
                                  TensorInfo(tb.name, _shape(y), tb.dtype, tb.file), name))
    return out


def read_slice(reader: Any, s: Any, e_r0: int, e_r1: int, e_c0: int, e_c1: int) -> np.ndarray:
    """Rows ``e_r0..e_r1-1``, columns ``e_c0..e_c1-1`` of the expert matrix ([out, in]) that
    slice ``s`` gives (``structure.expert_matrix``), reading only that block where the layout
    allows (every layout but gpt-oss' interleaved columns, read whole)."""
    from .quant import expert_rows
    from .structure import expert_matrix

    if s.col_step != 1:
        return np.ascontiguousarray(expert_matrix(reader, s)[e_r0:e_r1, e_c0:e_c1])
    (r0, _), (c0, _) = s.rows, s.cols
    if s.transpose:   # stored [in, out]: the block is stored[c, r].T
        r0, r1, c0, c1 = r0 + e_c0, r0 + e_c1, c0 + e_r0, c0 + e_r1
    else:
        r0, r1, c0, c1 = r0 + e_r0, r0 + e_r1, c0 + e_c0, c0 + e_c1
    if s.expert_axis_index is None:
        m = reader.read(s.tensor, r0, r1, c0, c1)
    else:
        m = expert_rows(reader, reader.info(s.tensor), s.expert_axis_index, r0, r1, c0, c1)
    return np.ascontiguousarray((m.T if s.transpose else m), dtype=np.float32)
