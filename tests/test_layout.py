"""Layout geometry on shapes alone (no weights): block detection for the common naming schemes,
aligned slots, folding, no overlaps, every element placed exactly once - up to a 70B-shaped
config."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest

from weightvis.index import detect_blocks, parse_block, slot_kind
from weightvis.layout import arch_layout, hilbert_layout, natural_key
from weightvis.types import SceneLayout, TensorInfo


def llama_shapes(layers: int, hidden: int, inter: int, kv: int, vocab: int, *,
                 tied: bool = False) -> list[TensorInfo]:
    ts = [TensorInfo("model.embed_tokens.weight", (vocab, hidden), "BF16", "f")]
    for i in range(layers):
        p = f"model.layers.{i}."
        ts += [TensorInfo(p + n, s, "BF16", "f") for n, s in [
            ("self_attn.q_proj.weight", (hidden, hidden)),
            ("self_attn.k_proj.weight", (kv, hidden)),
            ("self_attn.v_proj.weight", (kv, hidden)),
            ("self_attn.o_proj.weight", (hidden, hidden)),
            ("mlp.gate_proj.weight", (inter, hidden)), ("mlp.up_proj.weight", (inter, hidden)),
            ("mlp.down_proj.weight", (hidden, inter)), ("input_layernorm.weight", (hidden,)),
            ("post_attention_layernorm.weight", (hidden,))]]
    ts.append(TensorInfo("model.norm.weight", (hidden,), "BF16", "f"))
    if not tied:
        ts.append(TensorInfo("lm_head.weight", (vocab, hidden), "BF16", "f"))
    return ts


def check_geometry(lay: SceneLayout, tensors: list[TensorInfo]) -> None:
    """Placements inside the canvas, no two overlapping, each element drawn exactly once."""
    rects = np.array([[p.c_x, p.c_y, p.c_x + p.c_w, p.c_y + p.c_h] for p in lay.placements])
    assert (rects[:, 0] >= 0).all() and (rects[:, 1] >= 0).all()
    assert (rects[:, 2] <= lay.c_width).all() and (rects[:, 3] <= lay.c_height).all()
    for i in range(len(rects)):  # vectorised pairwise overlap test, one row at a time
        a = rects[i]
        other = np.delete(rects, i, axis=0)
        ov = ((np.minimum(a[2], other[:, 2]) > np.maximum(a[0], other[:, 0]))
              & (np.minimum(a[3], other[:, 3]) > np.maximum(a[1], other[:, 1])))
        assert not ov.any(), f"placement {lay.placements[i]} overlaps another"
    covered: dict[str, int] = defaultdict(int)
    for p in lay.placements:
        assert p.c_w == p.e_c1 - p.e_c0 and p.c_h == p.e_r1 - p.e_r0  # 1 px = 1 element
        covered[p.tensor] += p.c_w * p.c_h
    for t in tensors:
        assert covered.get(t.name, 0) == t.numel, t.name
    by_tensor: dict[str, list[tuple[int, int, int, int]]] = defaultdict(list)
    for p in lay.placements:
        by_tensor[p.tensor].append((p.e_r0, p.e_r1, p.e_c0, p.e_c1))
    for t in tensors:  # element blocks of one tensor are disjoint and inside its view
        for r0, r1, c0, c1 in by_tensor[t.name]:
            assert 0 <= r0 < r1 <= t.e_rows and 0 <= c0 < c1 <= t.e_cols


def block_offsets(lay: SceneLayout, sub: str) -> set[tuple[int, int, int, int]]:
    """(dx, dy, w, h) of a sub-path's placement relative to its block, over all blocks."""
    blocks = {g.label: g for g in lay.groups if g.kind == "block"}
    out = set()
    for p in lay.placements:
        b, s = lay.slots.get(p.tensor, (None, None))
        if s == sub:
            g = blocks[f"block {b}"]
            out.add((p.c_x - g.c_x, p.c_y - g.c_y, p.c_w, p.c_h))
    return out


def test_70b_shaped_config_without_weights() -> None:
    ts = llama_shapes(80, 8192, 28672, 1024, 128256)
    lay = arch_layout(ts)
    check_geometry(lay, ts)
    assert len([g for g in lay.groups if g.kind == "block"]) == 80
    for sub in ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "mlp.down_proj.weight",
                "input_layernorm.weight"):
        offs = block_offsets(lay, sub)
        assert len(offs) == 1, (sub, offs)  # same offset and size in all 80 blocks
    aspect = lay.c_width / lay.c_height
    assert 0.8 < aspect < 4, aspect
    # the embedding is folded into several placements, each a full-width row range
    emb = [p for p in lay.placements if p.tensor == "model.embed_tokens.weight"]
    assert len(emb) > 1 and all(p.e_c0 == 0 and p.e_c1 == 8192 for p in emb)
    assert sorted((p.e_r0, p.e_r1) for p in emb)[0][0] == 0
    # embeddings above the blocks, lm_head below
    first_block_y = min(g.c_y for g in lay.groups if g.kind == "block")
    last_block_y = max(g.c_y + g.c_h for g in lay.groups if g.kind == "block")
    assert max(p.c_y + p.c_h for p in emb) <= first_block_y
    assert min(p.c_y for p in lay.placements if p.tensor == "lm_head.weight") >= last_block_y


def test_slot_order_attention_then_mlp_then_norms() -> None:
    ts = llama_shapes(2, 64, 176, 16, 100)
    lay = arch_layout(ts)
    y = {sub: min(o[1] for o in block_offsets(lay, sub)) for sub in
         ("self_attn.q_proj.weight", "mlp.gate_proj.weight", "input_layernorm.weight")}
    assert y["self_attn.q_proj.weight"] < y["mlp.gate_proj.weight"] < y["input_layernorm.weight"]
    x = {sub: min(o[0] for o in block_offsets(lay, sub)) for sub in
         ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
          "self_attn.o_proj.weight")}
    assert x["self_attn.q_proj.weight"] < x["self_attn.k_proj.weight"] \
        < x["self_attn.v_proj.weight"] < x["self_attn.o_proj.weight"]


def test_missing_sub_tensor_leaves_its_slot_empty() -> None:
    ts = [t for t in llama_shapes(3, 32, 64, 8, 50)
          if t.name != "model.layers.1.self_attn.k_proj.weight"]
    lay = arch_layout(ts)
    check_geometry(lay, ts)
    assert len(block_offsets(lay, "self_attn.v_proj.weight")) == 1


@pytest.mark.parametrize("name,prefix", [
    ("model.layers.3.self_attn.q_proj.weight", "model.layers"),
    ("transformer.h.11.attn.c_attn.weight", "transformer.h"),
    ("encoder.layer.0.attention.self.query.weight", "encoder.layer"),
    ("bert.encoder.layer.2.output.dense.weight", "bert.encoder.layer"),
    ("blocks.7.attn.qkv.weight", "blocks"),
    ("model.decoder.layers.1.fc1.weight", "model.decoder.layers"),
    ("model.language_model.layers.4.mlp.up_proj.weight", "model.language_model.layers"),
    ("encoder.block.3.layer.1.DenseReluDense.wi.weight", "encoder.block"),
    ("blk.12.attn_q.weight", "blk"),
])
def test_block_naming_schemes(name: str, prefix: str) -> None:
    p = parse_block(name)
    assert p is not None and p.prefix == prefix


def test_dominant_stack_is_deterministic() -> None:
    names = ([f"model.vision_tower.layers.{i}.w" for i in range(3)]
             + [f"model.language_model.layers.{i}.{k}" for i in range(4) for k in "ab"])
    assert detect_blocks(names) == "model.language_model.layers"
    assert detect_blocks(list(reversed(names))) == "model.language_model.layers"
    assert detect_blocks(["conv1.weight", "fc.bias"]) is None


def test_slot_kinds() -> None:
    assert slot_kind("attention.output.LayerNorm.weight") == "norm"
    assert slot_kind("attention.self.query.weight") == "attention"
    assert slot_kind("intermediate.dense.weight") == "mlp"
    assert slot_kind("output.dense.weight") == "mlp"
    assert slot_kind("attn_q.weight") == "attention"
    assert slot_kind("ffn_down_exps.weight") == "mlp"
    assert slot_kind("ln_1.weight") == "norm"


def test_natural_key_takes_any_name() -> None:
    """Digit runs compare as numbers without int(): a 5,000-digit run (int() raises past 4,300)
    and non-ASCII digits ("²".isdigit() but int("²") raises) sort, and lay out, like text."""
    names = ["x.10", "x." + "9" * 5000, "x.9", "x.\u00b2", "x.\u0663", "x.010", "x.0"]
    assert sorted(names, key=natural_key)[:4] == ["x.0", "x.9", "x.10", "x.010"]
    assert sorted(names, key=natural_key)[4] == "x." + "9" * 5000
    lay = arch_layout([TensorInfo("model.layers." + n, (2, 3), "F32", "f") for n in names])
    assert len(lay.placements) == len(names)


def test_natural_sort_of_experts() -> None:
    subs = [f"mlp.experts.{e}.w1.weight" for e in (10, 2, 1)]
    assert sorted(subs, key=natural_key) == [f"mlp.experts.{e}.w1.weight" for e in (1, 2, 10)]
    ts = []
    for b in range(2):
        for e in (10, 2, 1):
            ts.append(TensorInfo(f"model.layers.{b}.mlp.experts.{e}.w1.weight", (8, 4), "F32", "f"))
    lay = arch_layout(ts)
    x = {e: min(o[0] + 10_000 * o[1] for o in block_offsets(lay, f"mlp.experts.{e}.w1.weight"))
         for e in (1, 2, 10)}
    assert x[1] < x[2] < x[10]


def test_generic_layout_for_non_transformers() -> None:
    ts = [TensorInfo(f"_model.encoder.{i}.reparam_conv.weight", (258, 1, 256), "F32", "f")
          for i in range(3)]
    ts += [TensorInfo("_model.decoder.rnn.weight_ih", (512, 128), "F32", "f"),
           TensorInfo("_model.decoder.rnn.bias", (512,), "F32", "f"),
           TensorInfo("scalar", (), "F32", "f"), TensorInfo("empty", (0, 4), "F32", "f")]
    lay = arch_layout(ts)
    check_geometry(lay, ts)
    assert lay.slots == {}
    assert {g.label for g in lay.groups} >= {"_model.encoder", "_model.decoder"}


def test_wide_vector_is_folded_by_columns() -> None:
    ts = [TensorInfo("big.bias", (3_000_000,), "F32", "f"),
          TensorInfo("w.weight", (64, 64), "F32", "f")]
    lay = arch_layout(ts)
    check_geometry(lay, ts)
    pieces = sorted((p for p in lay.placements if p.tensor == "big.bias"), key=lambda p: p.e_c0)
    assert len(pieces) > 1
    # consecutive column chunks stacked one row apart: reads like a reshape, never rescaled
    for a, b in zip(pieces, pieces[1:], strict=False):
        assert a.e_c1 == b.e_c0 and b.c_y == a.c_y + 1 and b.c_x == a.c_x
    assert 0.3 < lay.c_width / lay.c_height < 6


def test_hilbert_layout_segments() -> None:
    ts = [TensorInfo("a", (1000, 1000), "F32", "f"), TensorInfo("b", (5,), "F32", "f")]
    lay = hilbert_layout(ts)
    assert lay.curve_order == 10 and lay.c_width == 1024
    assert [(s.name, s.h_start, s.length) for s in lay.segments] == [("a", 0, 10**6),
                                                                     ("b", 10**6, 5)]
    assert 4 ** lay.curve_order >= 10**6 + 5 > 4 ** (lay.curve_order - 1)
    assert math.log2(lay.c_width) == lay.curve_order


def test_gguf_names_share_the_hf_layout() -> None:
    from weightvis.index import canonical_names

    hf = llama_shapes(4, 64, 176, 16, 100)
    to_gguf = {"model.embed_tokens.weight": "token_embd.weight", "lm_head.weight": "output.weight",
               "model.norm.weight": "output_norm.weight"}
    roles = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
             "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    for t in hf:
        p = parse_block(t.name)
        if p is not None:
            role = p.sub.removesuffix(".weight")
            to_gguf[t.name] = f"blk.{p.block}.{roles[role]}.weight"
    gg = [TensorInfo(to_gguf[t.name], t.shape, "Q8_0", "m.gguf") for t in reversed(hf)]
    canon = canonical_names([t.name for t in gg], gguf_arch="llama")
    assert all(canon[to_gguf[t.name]] == t.name for t in hf)
    a, b = arch_layout(hf), arch_layout(gg, canon)
    rect_a = {p.tensor: (p.c_x, p.c_y, p.c_w, p.c_h, p.e_r0) for p in a.placements}
    rect_b = {canon[p.tensor]: (p.c_x, p.c_y, p.c_w, p.c_h, p.e_r0) for p in b.placements}
    assert rect_a == rect_b
    assert {k: v for k, v in a.slots.items()} == {canon[k]: v for k, v in b.slots.items()}
