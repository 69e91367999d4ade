"""Hugging Face -> GGUF names (weightvis/gguf_names.py) against gguf-py's own TensorNameMap, for
every architecture gguf-py knows; the architecture of a checkpoint; what a diff calls the
architectures of its two sides."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import gguf
import pytest

from weightvis.delta import cross_architecture, declared_architecture
from weightvis.formats import open_checkpoint
from weightvis.gguf_names import arch_of_config, detect_arch, gguf_names, known_arch

from .conftest import real_checkpoint
from .gguf_fixtures import write_gguf

ARCHS = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}


@pytest.fixture()
def pristine_name_map() -> Iterator[None]:
    """gguf-py's constructor updates a class-level table with arctic's overrides: the reference
    maps built here must not leave it changed for other tests."""
    cfg = gguf.TensorNameMap.block_mappings_cfg
    saved = dict(cfg)
    yield
    cfg.clear()
    cfg.update(saved)


def _reference(arch: str, n_blocks: int) -> gguf.TensorNameMap:
    cfg = gguf.TensorNameMap.block_mappings_cfg
    saved = dict(cfg)
    try:
        return gguf.get_tensor_name_map(ARCHS[arch], n_blocks)
    finally:
        cfg.clear()
        cfg.update(saved)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_name_of_every_architecture_maps_as_gguf_py_maps_it(
        arch: str, pristine_name_map: None) -> None:
    """Every key of gguf-py's map for 5 blocks (blocks 2-4 are beyond the two weightvis builds)
    with .weight, looked up one name at a time, gives gguf-py's own GGUF name."""
    ref = _reference(arch, 5)
    names = [k + ".weight" for k in ref.mapping] + [k + ".bias" for k in list(ref.mapping)[:50]]
    assert names
    for name in names:
        want = ref.get_name(name, try_suffixes=(".weight", ".bias"))
        assert want is not None
        assert gguf_names([name], arch) == {name: want}, (arch, name)


def test_names_gguf_py_does_not_map_get_none(pristine_name_map: None) -> None:
    names = ["model.layers.3.self_attn.q_proj.weight", "model.layers.11.mlp.down_proj.weight",
             "not.a.model.weight", "model.layers.007.self_attn.k_proj.weight",
             "model.layers.\u0663.self_attn.v_proj.weight", "lm_head.weight"]
    got = gguf_names(names, "llama")
    ref = _reference("llama", 12)
    want = {n: ref.get_name(n, try_suffixes=(".weight",)) for n in names}
    assert got == {n: g for n, g in want.items() if g is not None}
    assert got["model.layers.3.self_attn.q_proj.weight"] == "blk.3.attn_q.weight"
    assert "model.layers.007.self_attn.k_proj.weight" not in got  # 007 is not block 7
    assert "model.layers.\u0663.self_attn.v_proj.weight" not in got  # nor is an Arabic-Indic 3
    assert gguf_names(names, "no-such-arch") == {}


def test_wrapper_prefixes_gamma_beta_and_ties(pristine_name_map: None) -> None:
    got = gguf_names(["bert.encoder.layer.2.attention.self.query.weight",
                      "bert.embeddings.LayerNorm.gamma", "bert.embeddings.LayerNorm.beta",
                      "module.encoder.layer.2.output.dense.bias"], "bert")
    assert got == {"bert.encoder.layer.2.attention.self.query.weight": "blk.2.attn_q.weight",
                   "bert.embeddings.LayerNorm.gamma": "token_embd_norm.weight",
                   "bert.embeddings.LayerNorm.beta": "token_embd_norm.bias",
                   "module.encoder.layer.2.output.dense.bias": "blk.2.ffn_down.bias"}
    # a name shortened by its first part never matches a one-part key (bert's "dense")
    assert gguf_names(["pooler.dense.weight"], "bert") == {}
    # two spellings of one tensor: neither is guessed...
    both = ["model.layers.0.self_attn.q_proj.weight", "layers.0.attention.wq.weight"]
    assert gguf_names(both, "llama") == {}
    # ...unless one needed a prefix removed: the name as written wins
    assert gguf_names(["model.layers.0.self_attn.q_proj.weight",
                       "module.model.layers.0.self_attn.q_proj.weight"], "llama") == {
        "model.layers.0.self_attn.q_proj.weight": "blk.0.attn_q.weight"}


def test_arctic_map_leaves_other_maps_alone(pristine_name_map: None) -> None:
    before = dict(gguf.TensorNameMap.block_mappings_cfg)
    assert gguf_names(["model.layers.0.residual_layernorm.weight"], "arctic") == {
        "model.layers.0.residual_layernorm.weight": "blk.0.ffn_norm.weight"}
    assert gguf.TensorNameMap.block_mappings_cfg == before
    name = "model.layers.4.post_attention_layernorm.weight"
    assert gguf_names([name], "llama") == {name: "blk.4.ffn_norm.weight"}


def test_architecture_of_a_checkpoint() -> None:
    st = real_checkpoint("minilm")
    reader = open_checkpoint([st])
    names = [t.name for t in reader.tensors()]
    assert reader.config["model_type"] == "bert"
    assert arch_of_config(reader.config) == "bert"
    assert detect_arch(names, reader.config) == "bert"
    assert detect_arch(names) == "bert"  # from the names alone
    assert arch_of_config({"model_type": "gemma3_text"}) == "gemma3"
    assert arch_of_config({"model_type": "qwen2_moe"}) == "qwen2moe"
    assert arch_of_config({"architectures": ["LlamaForCausalLM"]}) == "llama"
    assert arch_of_config({"model_type": "mistral"}) is None and not known_arch("mistral")
    for key in ("pocketnet0", "silero", "crepe-full"):
        r = open_checkpoint([real_checkpoint(key)])
        assert detect_arch([t.name for t in r.tensors()], r.config) is None, key


def test_declared_architectures_and_what_counts_as_cross(tmp_path: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    t = {"blk.0.attn_q.weight": ("F32", np.zeros((4, 4), np.float32))}
    llama = write_gguf(tmp_path / "l.gguf", t, arch="llama")
    gemma = write_gguf(tmp_path / "g.gguf", t, arch="gemma3")
    hf = tmp_path / "hf"
    hf.mkdir()
    save_file({"model.layers.0.self_attn.q_proj.weight": np.zeros((4, 4), np.float32)},
              str(hf / "model.safetensors"))
    (hf / "config.json").write_text('{"model_type": "mistral"}')
    bare = tmp_path / "bare.safetensors"
    save_file({"x": np.zeros(3, np.float32)}, str(bare))
    rl, rg, rh, rb = (open_checkpoint([p]) for p in (llama, gemma, hf, bare))
    assert declared_architecture(rl) == ("gguf", "llama")
    assert declared_architecture(rh) == ("hf", "mistral")
    assert declared_architecture(rb) is None
    assert cross_architecture(rl, rg) and cross_architecture(rg, rl)
    assert not cross_architecture(rl, rl)
    # a mistral config beside a llama GGUF names one model in two vocabularies: not "different"
    assert not cross_architecture(rl, rh) and not cross_architecture(rb, rg)


def test_scoring_architectures_is_cheap_for_names_no_map_knows() -> None:
    """45,000 names of 45,000 shapes (a hostile or merely odd file, no config.json): each is
    tested against the union of every map once, not once per architecture (was 17 s)."""
    import random
    import time

    rng = random.Random(0)
    names = ["".join(rng.choice("abcdefgh._") for _ in range(20)) for _ in range(45_000)]
    names += [f"layers.{i}.mlp.fc_in.weight" for i in range(3)]
    t0 = time.perf_counter()
    assert detect_arch(names) is None
    assert time.perf_counter() - t0 < 5.0


_CONVERTER_TABLE = """
import importlib.util, json, sys
import gguf
spec = importlib.util.spec_from_file_location("convert_hf_to_gguf", sys.argv[1])
m = importlib.util.module_from_spec(spec)
sys.modules["convert_hf_to_gguf"] = m
spec.loader.exec_module(m)
print(json.dumps({name: gguf.MODEL_ARCH_NAMES.get(cls.model_arch)
                  for name, cls in m.ModelBase._model_classes[m.ModelType.TEXT].items()}))
"""


def test_converter_archs_are_what_llama_cpp_converts_each_class_to() -> None:
    """``converter_archs`` against the installed llama.cpp converter's own registry: every
    text model class it converts to an architecture gguf-py maps, and nothing else."""
    import json
    import subprocess
    import sys

    from weightvis.converter_archs import CONVERTER_ARCHS

    from .llama_cpp import converter_script

    script = converter_script()
    got = subprocess.run([sys.executable, "-c", _CONVERTER_TABLE, str(script)],
                         capture_output=True, text=True, timeout=300, check=True)
    registry = json.loads(got.stdout.strip().splitlines()[-1])
    expected = {k: v for k, v in registry.items() if known_arch(v)}
    assert len(expected) > 150
    assert CONVERTER_ARCHS == expected


def test_a_model_type_no_architecture_is_named_after_uses_the_converters_choice() -> None:
    """DeepSeek-V3 (``deepseek_v3``) and Mixtral (``mixtral``): the architecture llama.cpp writes,
    the one the names score best for too."""
    v3 = {"model_type": "deepseek_v3", "architectures": ["DeepseekV3ForCausalLM"]}
    assert arch_of_config(v3) == "deepseek2"
    names = [f"model.layers.{i}.{n}" for i in range(4) for n in (
        "self_attn.q_a_proj.weight", "self_attn.kv_a_proj_with_mqa.weight",
        "self_attn.kv_b_proj.weight", "self_attn.o_proj.weight", "mlp.gate.weight",
        "mlp.experts.0.gate_proj.weight", "mlp.experts.0.down_proj.weight",
        "mlp.shared_experts.up_proj.weight", "input_layernorm.weight")]
    assert detect_arch(names) == detect_arch(names, v3) == "deepseek2"
    mixtral = {"model_type": "mixtral", "architectures": ["MixtralForCausalLM"]}
    assert arch_of_config(mixtral) == "llama"
    assert arch_of_config({"model_type": "llama"}) == "llama"
    assert arch_of_config({"model_type": "not-a-model", "architectures": ["NoSuchModel"]}) is None
