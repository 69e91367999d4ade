"""``weightvis info``: a checkpoint's structure at a glance, from headers only (``scan`` reads the
data to find NaN/Inf/all-zero tensors), and the comparison of two architectures."""

from __future__ import annotations

import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .errors import MoEError
from .formats import MultiReader, open_checkpoint
from .formats.dtypes import ELEMENT_TYPES
from .index import KINDS, NameIndex, is_embedding, is_output_head, parse_block
from .moe.structure import detect_moe
from .types import TensorInfo
from .untrusted import printable

__all__ = ["checkpoint_info", "compare_info", "stored_nbytes", "format_info", "format_compare",
           "format_moe"]


def stored_nbytes(t: TensorInfo) -> int:
    """Bytes the tensor occupies in its file (quantized GGUF types by their block size)."""
    et = ELEMENT_TYPES.get(t.dtype)
    if et is not None:
        return t.numel * et.itemsize
    import gguf

    try:
        bs, ts = gguf.constants.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[t.dtype]]
    except KeyError:
        return 0
    return t.numel // bs * ts


def _gguf_arch_info(reader: MultiReader) -> dict[str, Any]:
    for r in reader.readers:
        arch_info = getattr(r, "arch_info", None)
        if callable(arch_info):
            return dict(arch_info())
    return {}


def _first(*values: Any) -> Any:
    for v in values:
        if v is not None:
            return v
    return None


def _architecture(tensors: Sequence[TensorInfo], index: NameIndex,
                  config: dict[str, Any], gg: dict[str, Any]) -> dict[str, Any]:
    prefix = index.block_prefix
    by_canon = {index[t.name].canonical: t for t in tensors}
    blocks = index.blocks
    token_embs = [t for c, t in by_canon.items() if is_embedding(c) and t.e_rows > 1
                  and not re.search(r"position|token_type|segment", c)]
    emb = max(token_embs, key=lambda t: (t.e_rows, t.name), default=None)
    head = next((t for c, t in by_canon.items() if is_output_head(c)), None)
    experts = {int(m.group(1)) for c in by_canon if (m := re.search(r"experts\.([0-9]{1,9})\.", c))}
    exps3d = [t for c, t in by_canon.items() if "_exps" in t.name or
              re.search(r"\.experts\.(gate|up|down)_proj", c)]
    n_experts = len(experts) or (exps3d[0].shape[0] if exps3d and exps3d[0].shape else 0)
    q = next((t for c, t in by_canon.items() if re.search(r"(q_proj|attn_q|query)\.weight$", c)
              and t.e_rows > 1), None)
    k = next((t for c, t in by_canon.items() if re.search(r"(k_proj|attn_k|key)\.weight$", c)
              and t.e_rows > 1), None)
    hidden = _first(config.get("hidden_size"), config.get("d_model"), config.get("n_embd"),
                    gg.get("embedding_length"), emb.shape[-1] if emb is not None else None,
                    q.shape[-1] if q is not None else None)
    heads = _first(config.get("num_attention_heads"), config.get("n_head"),
                   gg.get("head_count"))
    kv_heads = _first(config.get("num_key_value_heads"), gg.get("head_count_kv"))
    if kv_heads is None and heads and q is not None and k is not None and q.shape[0] % heads == 0:
        kv_heads = k.shape[0] // (q.shape[0] // heads)  # from shapes: k rows / head_dim
    # tied: no output head of its own (llama.cpp drops output.weight when tied); a config that
    # says so settles it, otherwise unknown (an encoder has no head and ties nothing)
    if head is not None:
        tied: bool | None = False
    elif config.get("tie_word_embeddings") is not None:
        tied = bool(config["tie_word_embeddings"])
    elif gg:
        tied = emb is not None
    else:
        tied = None
    return {
        "blocks": len(blocks) if blocks else int(_first(gg.get("block_count"), 0) or 0),
        "block_prefix": prefix,
        "hidden_size": hidden,
        "heads": heads,
        "kv_heads": kv_heads,
        "experts": n_experts or _first(config.get("num_local_experts"),
                                       config.get("num_experts"), gg.get("expert_count")) or 0,
        "vocab_size": _first(emb.shape[0] if emb is not None else None,
                             config.get("vocab_size"), gg.get("vocab_size")),
        "tied_embeddings": tied,
        "output_head": head.name if head is not None else None,
        "model_type": _first(config.get("model_type"), gg.get("architecture")),
        "context_length": _first(config.get("max_position_embeddings"),
                                 gg.get("context_length")),
    }


def checkpoint_info(sources: Sequence[str | os.PathLike[str]], *, scan: bool = False,
                    progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Structure of a checkpoint from its headers (``scan``: also read every tensor)."""
    reader = open_checkpoint(sources)
    try:
        return _info(reader, scan, progress)
    finally:
        reader.close()


def _info(reader: MultiReader, scan: bool,
          progress: Callable[[str, int, int], None] | None) -> dict[str, Any]:
    tensors = list(reader.tensors())
    gg = _gguf_arch_info(reader)
    index = NameIndex([t.name for t in tensors], gguf_arch=gg.get("architecture"))
    per_kind: Counter[str] = Counter()
    per_block: Counter[int] = Counter()
    dtypes: dict[str, dict[str, int]] = defaultdict(lambda: {"tensors": 0, "params": 0,
                                                              "bytes": 0})
    rows = []
    for t in tensors:
        tn = index[t.name]
        c, kind = tn.canonical, tn.kind
        per_kind[kind] += t.numel
        slot = index.slot(t.name)
        if slot is not None:
            per_block[slot[0]] += t.numel
        nb = stored_nbytes(t)
        d = dtypes[t.dtype]
        d["tensors"] += 1
        d["params"] += t.numel
        d["bytes"] += nb
        rows.append({"name": t.name, "canonical": c, "shape": list(t.shape), "dtype": t.dtype,
                     "kind": kind, "bytes": nb})
    try:
        moe = detect_moe(reader, None, index=index)
        moe_json: dict[str, Any] | None = moe.to_json() if moe is not None else None
    except MoEError as e:  # reported, not fatal: the rest of the structure still holds
        moe, moe_json = None, {"error": str(e)}
    arch = _architecture(tensors, index, reader.config, gg)
    if moe is not None:
        arch["experts"] = moe.experts
    out: dict[str, Any] = {
        "format": reader.format,
        "files": [str(f) for f in reader.files],
        "tensor_count": len(tensors),
        "parameters": sum(t.numel for t in tensors),
        "bytes": sum(r["bytes"] for r in rows),
        "per_kind": {k: per_kind.get(k, 0) for k in KINDS},
        "per_block": {str(b): n for b, n in sorted(per_block.items())},
        "dtypes": dict(sorted(dtypes.items())),
        "architecture": arch,
        "moe": moe_json,
        "tensors": rows,
    }
    if scan:
        out["scan"] = _scan(reader, tensors, progress)
    return out


def _scan(reader: MultiReader, tensors: Sequence[TensorInfo],
          progress: Callable[[str, int, int], None] | None) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {"nan": [], "inf": [], "all_zero": []}
    for t in tensors:
        nan = inf = nonzero = 0
        step = max(1, (1 << 22) // max(t.e_cols, 1))
        for r0 in range(0, t.e_rows, step):
            block = reader.read(t.name, r0, min(t.e_rows, r0 + step))
            nan += int(np.isnan(block).sum())
            inf += int(np.isinf(block).sum())
            nonzero += int(np.count_nonzero(block))
            reader.release()
        if nan:
            found["nan"].append({"name": t.name, "count": nan})
        if inf:
            found["inf"].append({"name": t.name, "count": inf})
        if t.numel and nonzero == 0:
            found["all_zero"].append({"name": t.name})
        if progress is not None:
            progress("scan", 1, len(tensors))
    return found


def compare_info(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Compare two ``checkpoint_info`` results: same block structure? same sub-tensor set?
    uniform shape ratios? Every difference is listed."""
    ta = {r["canonical"]: r for r in a["tensors"]}
    tb = {r["canonical"]: r for r in b["tensors"]}
    only_a, only_b = sorted(set(ta) - set(tb)), sorted(set(tb) - set(ta))
    shape_diffs: list[dict[str, Any]] = []
    dtype_diffs: list[dict[str, Any]] = []
    ratios: set[float] = set()
    for name in sorted(set(ta) & set(tb)):
        sa, sb = ta[name]["shape"], tb[name]["shape"]
        if ta[name]["dtype"] != tb[name]["dtype"]:
            dtype_diffs.append({"name": name, "a": ta[name]["dtype"], "b": tb[name]["dtype"]})
        if sa != sb:
            shape_diffs.append({"name": name, "a": sa, "b": sb})
            if len(sa) == len(sb):
                ratios.update(round(y / x, 6) if x else math.inf
                              for x, y in zip(sa, sb, strict=True) if x != y)
            else:
                ratios.add(math.nan)  # rank changed: no ratio
    arch_a, arch_b = a["architecture"], b["architecture"]
    arch_diffs = {k: {"a": arch_a.get(k), "b": arch_b.get(k)} for k in sorted(arch_a)
                  if k != "block_prefix" and arch_a.get(k) != arch_b.get(k)}
    emb_name = next((n for n, r in ta.items() if r["kind"] == "embeddings"
                     and "position" not in n), None)
    vocab_resize = None
    if arch_a.get("vocab_size") != arch_b.get("vocab_size"):
        vocab_resize = {"a": arch_a.get("vocab_size"), "b": arch_b.get("vocab_size"),
                        "tensor": emb_name}

    def subs(info: dict[str, Any]) -> set[str]:
        prefix = info["architecture"]["block_prefix"]
        out = set()
        for r in info["tensors"]:
            p = parse_block(r["canonical"])
            if p is not None and p.prefix == prefix:
                out.add(p.sub)
        return out

    sa_, sb_ = subs(a), subs(b)
    return {
        "same_block_structure": arch_a["blocks"] == arch_b["blocks"] and sa_ == sb_,
        "same_tensor_set": not only_a and not only_b,
        "same_sub_tensor_set": sa_ == sb_,
        # every dimension that differs changes by this one factor (None: factors differ)
        "uniform_shape_ratio": (next(iter(ratios)) if len(ratios) == 1 and
                                math.isfinite(next(iter(ratios))) else None)
        if shape_diffs else 1.0,
        "architecture_differences": arch_diffs,
        "vocab_resize": vocab_resize,
        "sub_tensors_only_in_a": sorted(sa_ - sb_),
        "sub_tensors_only_in_b": sorted(sb_ - sa_),
        "only_in_a": only_a,
        "only_in_b": only_b,
        "shape_differences": shape_diffs,
        "dtype_differences": dtype_diffs,
    }


# -- text -----------------------------------------------------------------------------------
def _n(x: int) -> str:
    for unit, f in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if x >= f:
            return f"{x / f:.2f}{unit}"
    return str(x)


def _b(x: int) -> str:
    for unit, f in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if x >= f:
            return f"{x / f:.1f} {unit}"
    return f"{x} B"


def _p(v: Any) -> str:
    """A value from a file (a name, a config string) as terminal text."""
    return printable(str(v))


def format_info(info: dict[str, Any]) -> str:
    """``checkpoint_info`` as text; every name and value from the files is ``printable``."""
    a = info["architecture"]
    lines = [
        f"format      {info['format']}  ({len(info['files'])} file"
        f"{'s' if len(info['files']) != 1 else ''}: "
        f"{', '.join(printable(os.path.basename(f)) for f in info['files'][:4])}"
        f"{' …' if len(info['files']) > 4 else ''})",
        f"tensors     {info['tensor_count']}",
        f"parameters  {_n(info['parameters'])} ({info['parameters']:,}), {_b(info['bytes'])}",
        "architecture " + ", ".join(
            f"{k.replace('_', ' ')} {_p(v)}" for k, v in a.items()
            if v not in (None, 0, "") and k not in ("block_prefix", "tied_embeddings",
                                                     "output_head"))
        + {True: " (tied embeddings)", False: "", None: " (no output head)"}[
            a["tied_embeddings"]],
        "per kind    " + ", ".join(f"{k} {_n(v)}" for k, v in info["per_kind"].items() if v),
    ]
    if info.get("moe"):
        lines.insert(4, "moe         " + format_moe(info["moe"]))
    pb = info["per_block"]
    if pb:
        vals = sorted(set(pb.values()))
        if len(vals) == 1:
            lines.append(f"per block   {_n(vals[0])} × {len(pb)} blocks")
        else:
            lines.append("per block   " + ", ".join(f"{b}: {_n(v)}" for b, v in pb.items()))
    lines.append("dtypes      " + ", ".join(
        f"{d} ×{v['tensors']} ({_n(v['params'])}, {_b(v['bytes'])})"
        for d, v in info["dtypes"].items()))
    if "scan" in info:
        sc = info["scan"]
        if not any(sc.values()):
            lines.append("scan        no NaN, no Inf, no all-zero tensor")
        for key, label in (("nan", "NaN"), ("inf", "Inf"), ("all_zero", "all zero")):
            for r in sc[key]:
                cnt = f" ({r['count']:,})" if "count" in r else ""
                lines.append(f"scan        {label}: {printable(r['name'])}{cnt}")
    return "\n".join(lines)


def _ranges(ids: Sequence[int]) -> str:
    """``0, 2, 4–7`` for [0, 2, 4, 5, 6, 7]."""
    runs: list[list[int]] = []
    for i in ids:
        if runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}–{b}" for a, b in runs)


def format_moe(moe: dict[str, Any]) -> str:
    """One line: layout family, MoE and dense layers, routed and shared experts, top-k, sizes."""
    if "error" in moe:
        return f"cannot be read: {moe['error']}"
    dense = moe["dense_layers"]
    shared = f" + {moe['shared_experts']} shared" if moe["shared_experts"] else ""
    top_k = f", top-{moe['top_k']}" if moe["top_k"] else ""
    return (f"{moe['family']}: {len(moe['moe_layers'])} MoE layers "
            f"({_ranges(moe['moe_layers'])})"
            + (f", {len(dense)} dense ({_ranges(dense)})" if dense else ", no dense layer")
            + f"; {moe['experts']} routed experts{shared}{top_k}; hidden {moe['hidden']}, "
            f"expert intermediate {moe['intermediate']} ({', '.join(moe['roles'])})")


def format_compare(c: dict[str, Any]) -> str:
    """``compare_info`` as text; every name and value from the files is ``printable``."""
    yes = {True: "yes", False: "no"}
    ratio = c["uniform_shape_ratio"]
    lines = [
        f"same block structure   {yes[c['same_block_structure']]}",
        f"same sub-tensor set    {yes[c['same_sub_tensor_set']]}",
        f"same tensor set        {yes[c['same_tensor_set']]}",
        "uniform shape ratio    " + ("no (dimensions change by different factors)"
                                     if ratio is None else f"yes, ×{ratio:g}"),
    ]
    if c["vocab_resize"]:
        v = c["vocab_resize"]
        lines.append(f"vocabulary resized     {v['a']} -> {v['b']} ({_p(v['tensor'])})")
    for k, v in c["architecture_differences"].items():
        lines.append(f"architecture           {k}: {_p(v['a'])} -> {_p(v['b'])}")
    for key, label in (("sub_tensors_only_in_a", "sub-tensor only in A"),
                       ("sub_tensors_only_in_b", "sub-tensor only in B"),
                       ("only_in_a", "only in A"), ("only_in_b", "only in B")):
        for n in c[key]:
            lines.append(f"{label:22s} {printable(n)}")
    for d in c["shape_differences"]:
        lines.append(f"{'shape differs':22s} {printable(d['name'])}: {d['a']} -> {d['b']}")
    for d in c["dtype_differences"]:
        lines.append(f"{'dtype differs':22s} {printable(d['name'])}: {d['a']} -> {d['b']}")
    if len(lines) == 4 and c["same_tensor_set"] and not c["shape_differences"]:
        lines.append("no differences in structure")
    return "\n".join(lines)
