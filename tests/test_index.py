"""The name index: hand-checked tables of names -> parsed fields, linear cost, import rules."""

from __future__ import annotations

import doctest
import gc
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import weightvis.index
from weightvis.index import (
    NameIndex,
    detect_blocks,
    parse_block,
    parse_moe,
    qk_role,
    strip_wrappers,
    tensor_kind,
)

# name -> (canonical, block, sub, kind, moe, expert, expert_role, qk_role);
# canonical None = the name itself, sub None = outside the blocks
Row = tuple[str | None, int | None, str | None, str, str | None, int | None, str | None, str | None]

LLAMA: dict[str, Row] = {
    "model.embed_tokens.weight": (None, None, None, "embeddings", None, None, None, None),
    "model.layers.0.self_attn.q_proj.weight":
        (None, 0, "self_attn.q_proj.weight", "attention", None, None, None, "q"),
    "model.layers.1.self_attn.k_proj.weight":
        (None, 1, "self_attn.k_proj.weight", "attention", None, None, None, "k"),
    "model.layers.1.self_attn.q_proj.bias":
        (None, 1, "self_attn.q_proj.bias", "attention", None, None, None, None),
    "model.layers.1.self_attn.v_proj.weight":
        (None, 1, "self_attn.v_proj.weight", "attention", None, None, None, None),
    "model.layers.0.mlp.down_proj.weight":
        (None, 0, "mlp.down_proj.weight", "mlp", None, None, None, None),
    "model.layers.0.input_layernorm.weight":
        (None, 0, "input_layernorm.weight", "norms", None, None, None, None),
    "model.norm.weight": (None, None, None, "norms", None, None, None, None),
    "lm_head.weight": (None, None, None, "embeddings", None, None, None, None),
}

GGUF_LLAMA: dict[str, Row] = {
    "token_embd.weight": ("model.embed_tokens.weight", None, None, "embeddings",
                          None, None, None, None),
    "blk.0.attn_q.weight": ("model.layers.0.self_attn.q_proj.weight", 0,
                            "self_attn.q_proj.weight", "attention", None, None, None, "q"),
    "blk.1.attn_k.weight": ("model.layers.1.self_attn.k_proj.weight", 1,
                            "self_attn.k_proj.weight", "attention", None, None, None, "k"),
    "blk.0.ffn_norm.weight": ("model.layers.0.post_attention_layernorm.weight", 0,
                              "post_attention_layernorm.weight", "norms", None, None, None, None),
    "blk.1.ffn_gate.weight": ("model.layers.1.mlp.gate_proj.weight", 1, "mlp.gate_proj.weight",
                              "mlp", None, None, None, None),
    # a Mixtral GGUF (llama arch): router and merged experts
    "blk.1.ffn_gate_inp.weight": ("model.layers.1.mlp.gate.weight", 1, "mlp.gate.weight", "mlp",
                                  "router", None, "router", None),
    "blk.1.ffn_up_exps.weight": ("model.layers.1.mlp.experts.up_proj.weight", 1,
                                 "mlp.experts.up_proj.weight", "experts", "fused", None, "up",
                                 None),
    "output_norm.weight": ("model.norm.weight", None, None, "norms", None, None, None, None),
    "output.weight": ("lm_head.weight", None, None, "embeddings", None, None, None, None),
}

MIXTRAL: dict[str, Row] = {
    "model.layers.0.block_sparse_moe.gate.weight":
        (None, 0, "block_sparse_moe.gate.weight", "mlp", "router", None, "router", None),
    "model.layers.1.block_sparse_moe.experts.3.w1.weight":
        (None, 1, "block_sparse_moe.experts.3.w1.weight", "experts", "expert", 3, "gate", None),
    "model.layers.1.block_sparse_moe.experts.3.w2.weight":
        (None, 1, "block_sparse_moe.experts.3.w2.weight", "experts", "expert", 3, "down", None),
    "model.layers.1.block_sparse_moe.experts.10.w3.weight":
        (None, 1, "block_sparse_moe.experts.10.w3.weight", "experts", "expert", 10, "up", None),
    "model.layers.0.self_attn.o_proj.weight":
        (None, 0, "self_attn.o_proj.weight", "attention", None, None, None, None),
}

QWEN_MOE: dict[str, Row] = {
    "model.layers.0.mlp.gate.weight": (None, 0, "mlp.gate.weight", "mlp", "router", None,
                                       "router", None),
    "model.layers.0.mlp.shared_expert.gate_proj.weight":
        (None, 0, "mlp.shared_expert.gate_proj.weight", "mlp", "shared", None, "gate", None),
    "model.layers.0.mlp.shared_expert.down_proj.weight":
        (None, 0, "mlp.shared_expert.down_proj.weight", "mlp", "shared", None, "down", None),
    "model.layers.0.mlp.shared_expert_gate.weight":
        (None, 0, "mlp.shared_expert_gate.weight", "mlp", "shared", None, None, None),
    "model.layers.1.mlp.experts.59.down_proj.weight":
        (None, 1, "mlp.experts.59.down_proj.weight", "experts", "expert", 59, "down", None),
    "model.layers.1.mlp.experts.0.up_proj.weight":
        (None, 1, "mlp.experts.0.up_proj.weight", "experts", "expert", 0, "up", None),
}

DEEPSEEK_V3: dict[str, Row] = {
    # dense first layers
    "model.layers.0.mlp.gate_proj.weight": (None, 0, "mlp.gate_proj.weight", "mlp",
                                            None, None, None, None),
    # MLA attention: no plain q_proj/k_proj, so no Q/K role
    "model.layers.0.self_attn.q_a_proj.weight": (None, 0, "self_attn.q_a_proj.weight",
                                                 "attention", None, None, None, None),
    "model.layers.0.self_attn.kv_a_proj_with_mqa.weight":
        (None, 0, "self_attn.kv_a_proj_with_mqa.weight", "attention", None, None, None, None),
    "model.layers.0.self_attn.kv_a_layernorm.weight":
        (None, 0, "self_attn.kv_a_layernorm.weight", "norms", None, None, None, None),
    "model.layers.3.mlp.gate.weight": (None, 3, "mlp.gate.weight", "mlp", "router", None,
                                       "router", None),
    "model.layers.3.mlp.gate.e_score_correction_bias":
        (None, 3, "mlp.gate.e_score_correction_bias", "mlp", "router", None, "router_bias", None),
    "model.layers.3.mlp.shared_experts.up_proj.weight":
        (None, 3, "mlp.shared_experts.up_proj.weight", "mlp", "shared", None, "up", None),
    "model.layers.3.mlp.experts.255.gate_proj.weight":
        (None, 3, "mlp.experts.255.gate_proj.weight", "experts", "expert", 255, "gate", None),
    # FP8 block scales: the expert's, but not a projection weight
    "model.layers.3.mlp.experts.255.gate_proj.weight_scale_inv":
        (None, 3, "mlp.experts.255.gate_proj.weight_scale_inv", "experts", "expert", 255, None,
         None),
}

GPT_OSS: dict[str, Row] = {
    "model.layers.0.mlp.experts.gate_up_proj": (None, 0, "mlp.experts.gate_up_proj", "experts",
                                                "fused", None, "gate_up", None),
    "model.layers.0.mlp.experts.gate_up_proj_bias":
        (None, 0, "mlp.experts.gate_up_proj_bias", "experts", "fused", None, None, None),
    "model.layers.1.mlp.experts.down_proj": (None, 1, "mlp.experts.down_proj", "experts",
                                             "fused", None, "down", None),
    "model.layers.1.mlp.router.weight": (None, 1, "mlp.router.weight", "mlp", "router", None,
                                         "router", None),
    "model.layers.1.mlp.router.bias": (None, 1, "mlp.router.bias", "mlp", "router", None,
                                       "router_bias", None),
    "model.layers.1.self_attn.sinks": (None, 1, "self_attn.sinks", "attention", None, None, None,
                                       None),
}

BERT: dict[str, Row] = {
    "embeddings.word_embeddings.weight": (None, None, None, "embeddings", None, None, None, None),
    "encoder.layer.0.attention.self.query.weight":
        (None, 0, "attention.self.query.weight", "attention", None, None, None, None),
    "encoder.layer.0.attention.output.LayerNorm.weight":
        (None, 0, "attention.output.LayerNorm.weight", "norms", None, None, None, None),
    "encoder.layer.1.intermediate.dense.weight":
        (None, 1, "intermediate.dense.weight", "mlp", None, None, None, None),
    "encoder.layer.1.output.dense.weight": (None, 1, "output.dense.weight", "mlp",
                                            None, None, None, None),
    "pooler.dense.weight": (None, None, None, "other", None, None, None, None),
}

GPT2: dict[str, Row] = {
    "wte.weight": (None, None, None, "embeddings", None, None, None, None),
    "h.0.attn.c_attn.weight": (None, 0, "attn.c_attn.weight", "attention",
                               None, None, None, None),
    "h.0.attn.bias": (None, 0, "attn.bias", "attention", None, None, None, None),
    "h.1.mlp.c_fc.weight": (None, 1, "mlp.c_fc.weight", "mlp", None, None, None, None),
    "h.1.ln_1.weight": (None, 1, "ln_1.weight", "norms", None, None, None, None),
    "ln_f.weight": (None, None, None, "norms", None, None, None, None),
}

SWITCH: dict[str, Row] = {
    "encoder.block.0.layer.1.mlp.router.classifier.weight":
        (None, 0, "layer.1.mlp.router.classifier.weight", "mlp", "router", None, "router", None),
    "encoder.block.0.layer.1.mlp.experts.expert_2.wi.weight":
        (None, 0, "layer.1.mlp.experts.expert_2.wi.weight", "experts", "expert", 2, "up", None),
    "encoder.block.1.layer.1.mlp.experts.expert_2.wo.weight":
        (None, 1, "layer.1.mlp.experts.expert_2.wo.weight", "experts", "expert", 2, "down", None),
}

TABLES = {"llama": (LLAMA, None, "model.layers"),
          "gguf-llama": (GGUF_LLAMA, "llama", "model.layers"),
          "mixtral": (MIXTRAL, None, "model.layers"), "qwen-moe": (QWEN_MOE, None, "model.layers"),
          "deepseek-v3": (DEEPSEEK_V3, None, "model.layers"),
          "gpt-oss": (GPT_OSS, None, "model.layers"), "bert": (BERT, None, "encoder.layer"),
          "gpt2": (GPT2, None, "h"), "switch": (SWITCH, None, "encoder.block")}


@pytest.mark.parametrize("family", sorted(TABLES))
def test_name_table(family: str) -> None:
    table, gguf_arch, prefix = TABLES[family]
    index = NameIndex(table, gguf_arch=gguf_arch)
    assert index.block_prefix == prefix
    for name, (canon, block, sub, kind, moe, expert, role, qk) in table.items():
        t = index[name]
        want = (name, canon or name, prefix if sub is not None else None, block, sub, kind, moe,
                expert, role, qk)
        assert tuple(t) == want, name
        assert index.by_canonical(t.canonical) == t
        assert index.slot(name) == ((block, sub) if sub is not None else None)


def test_index_agrees_with_the_per_name_functions() -> None:
    """The index parses each (stack, sub-path) once; that must equal parsing every name."""
    names = [f"{stack}.{b}.{sub}" for stack in ("model.layers", "embedder.h", "wte.blocks")
             for b in (0, 1, 12) for sub in ("mlp.experts.3.w1.weight", "self_attn.q_proj.weight",
                                             "embed.weight", "output.weight", "ln_f.weight")]
    names += ["lm_head.weight", "shared.weight", "model.norm.weight"]
    index = NameIndex(names)
    prefix = detect_blocks(names)
    assert index.block_prefix == prefix
    for n in names:
        t, p = index[n], parse_block(n)
        assert t.kind == tensor_kind(n, prefix), n
        assert t.qk_role == qk_role(n), n
        assert (t.prefix, t.block, t.sub) == ((p.prefix, p.block, p.sub) if p else (None,) * 3)
        moe = parse_moe(p.sub) if p else None
        assert (t.moe, t.expert, t.expert_role) == (tuple(moe) if moe else (None,) * 3)


def test_shared_experts_are_never_routed() -> None:
    names = [f"model.layers.{b}.mlp.{part}" for b in range(2) for part in (
        "gate.weight", "shared_expert.up_proj.weight", "experts.0.up_proj.weight",
        "experts.7.up_proj.weight")]
    names += ["blk.0.ffn_up_shexp.weight", "blk.1.ffn_up_shexp.weight"]
    index = NameIndex(names)
    assert index.experts == (0, 7)
    assert [t.name for t in index if t.moe == "shared"] == [
        "model.layers.0.mlp.shared_expert.up_proj.weight",
        "model.layers.1.mlp.shared_expert.up_proj.weight",
        "blk.0.ffn_up_shexp.weight", "blk.1.ffn_up_shexp.weight"]
    assert index["blk.0.ffn_up_shexp.weight"].expert_role == "up"


def test_gguf_names_and_their_hf_twins_parse_alike() -> None:
    hf = NameIndex(LLAMA)
    gg = NameIndex(["blk.0.attn_q.weight", "blk.1.attn_k.weight", "token_embd.weight",
                    "output.weight"], gguf_arch="llama")
    for t in gg:
        twin = hf.by_canonical(t.canonical)
        assert twin is not None and tuple(twin)[1:] == tuple(t)[1:]


def test_given_canonical_names_and_lookups() -> None:
    index = NameIndex(["a", "b (A)"], canonical={"a": "model.layers.0.self_attn.q_proj.weight"})
    assert index["a"].qk_role == "q" and index["b (A)"].canonical == "b (A)"
    assert index.canonical() == {"a": "model.layers.0.self_attn.q_proj.weight", "b (A)": "b (A)"}
    assert "a" in index and "zz" not in index and len(index) == 2 and index.get("zz") is None
    assert index.block_prefix is None and index.blocks == ()  # one tensor is not a stack
    with pytest.raises(KeyError, match="zz"):
        index["zz"]


def test_strip_wrappers() -> None:
    assert strip_wrappers("module._orig_mod.model.layers.0.w") == "layers.0.w"
    assert strip_wrappers("model.") == "model."
    assert strip_wrappers("base_model.model.model.x") == "x"


@pytest.mark.parametrize("odd", [
    "model.layers." + "1" * 5000 + ".mlp.up_proj.weight",   # int() raises past 4,300 digits
    "model.layers.\u0663.mlp.up_proj.weight",              # ARABIC-INDIC DIGIT THREE
    "model.layers.\u00b2.mlp.up_proj.weight",              # "²".isdigit(), int("²") raises
    "model.layers.1234567890.mlp.up_proj.weight",           # ten digits: past exact doubles' use
])
def test_odd_block_indices_are_outside_the_blocks(odd: str) -> None:
    names = [odd, "model.layers.0.mlp.up_proj.weight", "model.layers.1.mlp.up_proj.weight"]
    index = NameIndex(names)
    assert index.block_prefix == "model.layers" and index.blocks == (0, 1)
    assert index[odd].block is None and parse_block(odd) is None
    assert index[names[1]].block == 0


def test_odd_expert_indices_and_gguf_names() -> None:
    odd = "model.layers.1.mlp.experts." + "7" * 5000 + ".up_proj.weight"
    index = NameIndex([odd, "model.layers.1.mlp.experts.\u0663.up_proj.weight",
                       "model.layers.0.mlp.experts.2.up_proj.weight"])
    assert index[odd].block == 1 and index[odd].expert is None
    assert index["model.layers.0.mlp.experts.2.up_proj.weight"].expert == 2
    gguf = ["blk.0.attn_q.weight", "blk.1.attn_q.weight", "blk.\u0663.attn_q.weight",
            "blk.1.a\nb", "", "token_embd.weight"]
    index = NameIndex(gguf)  # a newline or an empty name once failed an assert
    assert index["blk.1.attn_q.weight"].canonical == "model.layers.1.self_attn.q_proj.weight"
    assert index["blk.\u0663.attn_q.weight"].canonical == "blk.\u0663.attn_q.weight"
    assert index[""].canonical == ""


def test_doctests() -> None:
    assert doctest.testmod(weightvis.index).failed == 0


def _deepseek_names(layers: int) -> list[str]:
    """DeepSeek-V3's tensor names: 3 dense layers, then 256 routed experts per layer."""
    out = ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]
    for b in range(layers):
        pre = f"model.layers.{b}."
        out += [pre + s for s in (
            "input_layernorm.weight", "post_attention_layernorm.weight",
            "self_attn.q_a_proj.weight", "self_attn.q_a_layernorm.weight",
            "self_attn.q_b_proj.weight", "self_attn.kv_a_proj_with_mqa.weight",
            "self_attn.kv_a_layernorm.weight", "self_attn.kv_b_proj.weight",
            "self_attn.o_proj.weight")]
        if b < 3:
            out += [pre + f"mlp.{w}_proj.weight" for w in ("gate", "up", "down")]
            continue
        out += [pre + "mlp.gate.weight", pre + "mlp.gate.e_score_correction_bias"]
        out += [pre + f"mlp.shared_experts.{w}_proj.weight" for w in ("gate", "up", "down")]
        out += [pre + f"mlp.experts.{e}.{w}_proj.weight" for e in range(256)
                for w in ("gate", "up", "down")]
    return out


def _best_time(names: list[str], runs: int = 5) -> float:
    """Best of ``runs`` builds, the garbage collector off while timing (as timeit does)."""
    best = float("inf")
    gc.collect()
    gc.disable()
    try:
        for _ in range(runs):
            t0 = time.perf_counter()
            NameIndex(names)
            best = min(best, time.perf_counter() - t0)
    finally:
        gc.enable()
    return best


def test_cost_is_linear_in_names() -> None:
    names = _deepseek_names(61)
    assert len(names) > 45_000
    index = NameIndex(names)
    assert index.experts == tuple(range(256)) and index.blocks == tuple(range(61))
    assert index["model.layers.60.mlp.experts.255.down_proj.weight"][5:9] == (
        "experts", "expert", 255, "down")
    t1 = _best_time(names)
    assert t1 < 1.0, f"{len(names)} names took {t1:.2f} s"
    t4 = _best_time(_deepseek_names(4 * 61 - 9), runs=3)  # 4x the names
    assert t4 < 6 * t1, f"4x the names took {t4 / t1:.1f}x the time"


_FORBIDDEN = ("weightvis.formats", "weightvis.pyramid", "weightvis.bundle", "weightvis.kernels",
              "weightvis.values", "weightvis.png", "weightvis.tiling", "weightvis.painters",
              "weightvis.executors", "weightvis.store", "weightvis.color", "weightvis.delta",
              "weightvis.info", "numba")


@pytest.mark.parametrize("module,also", [("weightvis.index", ("numpy", "weightvis.layout")),
                                         ("weightvis.layout", ())])
def test_import_rules(module: str, also: tuple[str, ...]) -> None:
    """The name index and the layouts never import readers, the pyramid or the pipeline; the
    index is pure Python (gguf-py, and so numpy, only on first use of a GGUF architecture map)."""
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    assert module in loaded
    bad = [m for m in loaded for f in _FORBIDDEN + also if m == f or m.startswith(f + ".")]
    assert not bad, f"importing {module} imported {bad}"


def test_pair_index_is_the_diff_pairs_index(tmp_path: Path) -> None:
    """A diff's pairs indexed under their canonical names (B's, else A's): GGUF names pair with
    their HF twins, Q/K get their roles, kinds and the block stack are those of the pairs."""
    from safetensors.numpy import save_file

    from weightvis import delta
    from weightvis.demo import DEMO_CONFIG, demo_tensors
    from weightvis.formats import open_checkpoint

    from .gguf_fixtures import hf_llama_to_gguf

    hf = demo_tensors()
    hf_llama_to_gguf(hf, tmp_path / "m.gguf", n_layers=DEMO_CONFIG["num_hidden_layers"],
                     heads=DEMO_CONFIG["num_attention_heads"],
                     kv_heads=DEMO_CONFIG["num_key_value_heads"],
                     hidden=DEMO_CONFIG["hidden_size"])
    save_file({**hf, "extra.weight": hf["model.norm.weight"]}, str(tmp_path / "hf.safetensors"))
    reader = delta.DiffReader(open_checkpoint([str(tmp_path / "hf.safetensors")]),
                              open_checkpoint([str(tmp_path / "m.gguf")]),
                              check_permutation=False)
    try:
        index = delta.pair_index(reader)
    finally:
        reader.close()
    assert [t.name for t in index] == [p.name for p in reader.pairs]
    q = index["blk.0.attn_q.weight"]
    assert (q.canonical, q.block, q.kind, q.qk_role) == (
        "model.layers.0.self_attn.q_proj.weight", 0, "attention", "q")
    assert index["extra.weight"].canonical == "extra.weight"  # only in A: A's name
    assert index.block_prefix == "model.layers"
    assert index.blocks == tuple(range(DEMO_CONFIG["num_hidden_layers"]))
    by = {p.name: p for p in reader.pairs}
    assert by["blk.0.attn_q.weight"].transform == "unpermute-q"
    assert by["blk.0.attn_k.weight"].transform == "unpermute-k"


def test_index_finds_the_dominant_stack_as_detect_blocks_does() -> None:
    """NameIndex counts tensors and blocks per stack (by the block indices as written, each
    converted once): the same stack and blocks as ``detect_blocks`` and ``parse_block``, ties
    between stacks included, and zero-padded indices counted as one block."""
    from weightvis.index import NameIndex, detect_blocks, parse_block

    cases = [
        [f"model.layers.{i}.mlp.w" for i in range(5)] + ["enc.blocks.0.w", "enc.blocks.1.w"],
        [f"a.layers.{i}.x" for i in range(3)] + [f"b.layers.{i}.x" for i in (0, 0, 1)],
        [f"a.h.{i}.x.{k}" for i in range(2) for k in range(3)]
        + [f"b.h.{i}.y" for i in range(6)],
        ["t.layers.1.w", "t.layers.01.v", "t.layers.2.w", "emb.weight"],
        ["emb.weight", "lm_head.weight"], ["x.layers.0.w"],
    ]
    for names in cases:
        idx = NameIndex(names)
        assert idx.block_prefix == detect_blocks(names), names
        want = sorted({p.block for n in names if (p := parse_block(n)) is not None
                       and p.prefix == idx.block_prefix})
        assert list(idx.blocks) == (want if idx.block_prefix else []), names
