"""``weightvis info``: counts from headers checked against the tensors themselves; architecture
detection; NaN/Inf/all-zero scan; two-checkpoint comparison including a vocabulary resize."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from weightvis.demo import DEMO_CONFIG, demo_tensors, write_demo_checkpoint
from weightvis.formats.safetensors import SafetensorsReader, write_safetensors
from weightvis.info import checkpoint_info, compare_info, format_compare, format_info

from .conftest import real_checkpoint


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_checkpoint(tmp_path_factory.mktemp("demo"))


def test_demo_counts_and_architecture(demo_dir: Path) -> None:
    info = checkpoint_info([demo_dir])
    ref = demo_tensors()
    assert info["tensor_count"] == len(ref)
    assert info["parameters"] == sum(v.size for v in ref.values())
    assert info["bytes"] == 2 * info["parameters"]  # bf16
    assert sum(info["per_kind"].values()) == info["parameters"]
    assert info["per_kind"]["embeddings"] == ref["model.embed_tokens.weight"].size
    assert info["per_kind"]["attention"] == sum(v.size for k, v in ref.items() if "self_attn" in k)
    assert info["per_kind"]["mlp"] == sum(v.size for k, v in ref.items() if ".mlp." in k)
    per_block = sum(v.size for k, v in ref.items() if k.startswith("model.layers.0."))
    assert info["per_block"] == {str(i): per_block for i in range(8)}
    assert info["dtypes"] == {"BF16": {"tensors": 74, "params": info["parameters"],
                                       "bytes": info["bytes"]}}
    a = info["architecture"]
    assert (a["blocks"], a["hidden_size"], a["heads"], a["kv_heads"], a["vocab_size"]) == (
        8, 512, 8, 2, 8192)
    assert a["tied_embeddings"] is True and a["output_head"] is None
    text = format_info(info)
    assert "tied embeddings" in text and "2.82M × 8 blocks" in text


def test_minilm_architecture_and_i64() -> None:
    info = checkpoint_info([real_checkpoint("minilm")])
    a = info["architecture"]
    assert (a["blocks"], a["hidden_size"], a["vocab_size"]) == (6, 384, 30522)
    assert info["tensor_count"] == 104
    assert info["dtypes"]["I64"] == {"tensors": 1, "params": 512, "bytes": 4096}
    ref = load_file(str(real_checkpoint("minilm")))
    assert info["parameters"] == sum(v.size for v in ref.values())


def test_scan_finds_nan_inf_and_zero_tensors(tmp_path: Path) -> None:
    w = np.ones((300, 70000 // 300 + 1), np.float32)
    nan = w.copy()
    nan[5, 7] = nan[299, 0] = np.nan
    inf = w.copy()
    inf[0, 0] = -np.inf
    p = tmp_path / "x.safetensors"
    save_file({"ok": w, "nan": nan, "inf": inf, "zero": np.zeros((3, 4), np.float32),
               "empty": np.zeros((0, 3), np.float32)}, str(p))
    sc = checkpoint_info([p], scan=True)["scan"]
    assert sc == {"nan": [{"name": "nan", "count": 2}], "inf": [{"name": "inf", "count": 1}],
                  "all_zero": [{"name": "zero"}], "constant": [{"name": "ok", "value": 1.0}],
                  "zero_rows": [], "zero_cols": []}
    assert "scan" not in checkpoint_info([p])


def _resized(demo_dir: Path, out: Path) -> Path:
    """The demo with 8 tokens added to the vocabulary, one layer's norm dropped, one dtype
    changed (the shape a real finetune with added tokens has)."""
    out.mkdir()
    with SafetensorsReader(demo_dir / "model.safetensors") as r:
        t = {n: ("BF16", tuple(r.info(n).shape), np.array(r.stored(n))) for n in
             (x.name for x in r.tensors())}
    dt, shape, emb = t["model.embed_tokens.weight"]
    t["model.embed_tokens.weight"] = (dt, (shape[0] + 8, shape[1]),
                                      np.concatenate([emb, emb[:8]]))
    del t["model.layers.3.post_attention_layernorm.weight"]
    _, s, v = t["model.norm.weight"]
    t["model.norm.weight"] = ("F32", s, (v.astype(np.uint32) << 16).view(np.float32))
    write_safetensors(out / "model.safetensors", t)
    cfg = dict(DEMO_CONFIG, vocab_size=shape[0] + 8)
    (out / "config.json").write_text(json.dumps(cfg))
    return out


def test_compare_reports_every_difference(demo_dir: Path, tmp_path: Path) -> None:
    a = checkpoint_info([demo_dir])
    b = checkpoint_info([_resized(demo_dir, tmp_path / "b")])
    c = compare_info(a, b)
    assert c["vocab_resize"] == {"a": 8192, "b": 8200, "tensor": "model.embed_tokens.weight"}
    assert c["shape_differences"] == [{"name": "model.embed_tokens.weight", "a": [8192, 512],
                                       "b": [8200, 512]}]
    assert c["only_in_a"] == ["model.layers.3.post_attention_layernorm.weight"]
    assert c["only_in_b"] == []
    assert c["dtype_differences"] == [{"name": "model.norm.weight", "a": "BF16", "b": "F32"}]
    # the sub-tensor set per block is the union, so block structure is still the same
    assert c["same_sub_tensor_set"] and c["same_block_structure"]
    assert not c["same_tensor_set"]
    assert c["architecture_differences"] == {"vocab_size": {"a": 8192, "b": 8200}}
    text = format_compare(c)
    assert "vocabulary resized     8192 -> 8200" in text
    assert "only in A" in text and "post_attention_layernorm" in text


def test_compare_identical_and_proxy_models(demo_dir: Path, tmp_path: Path) -> None:
    a = checkpoint_info([demo_dir])
    same = compare_info(a, a)
    assert same["same_tensor_set"] and same["same_block_structure"]
    assert same["shape_differences"] == [] and same["uniform_shape_ratio"] == 1.0
    assert "no differences in structure" in format_compare(same)
    # a half-width proxy: every shape scaled uniformly by 1/2 (vectors too)
    half = {k: v[tuple(slice(0, n // 2) for n in v.shape)] for k, v in demo_tensors().items()}
    save_file(half, str(tmp_path / "half.safetensors"))
    c = compare_info(a, checkpoint_info([tmp_path / "half.safetensors"]))
    assert c["same_block_structure"] and c["uniform_shape_ratio"] == 0.5
    assert "yes, ×0.5" in format_compare(c)
    # a wider MLP and a smaller vocabulary: dimensions change by different factors
    wide = dict(demo_tensors())
    for k in list(wide):
        if "gate_proj" in k or "up_proj" in k:
            wide[k] = np.concatenate([wide[k], wide[k]])
    wide["model.embed_tokens.weight"] = wide["model.embed_tokens.weight"][:4096]
    save_file(wide, str(tmp_path / "wide.safetensors"))
    c = compare_info(a, checkpoint_info([tmp_path / "wide.safetensors"]))
    assert c["uniform_shape_ratio"] is None and len(c["shape_differences"]) == 17
    assert c["vocab_resize"]["b"] == 4096


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "weightvis", "info", *args],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_info_json_and_compare(demo_dir: Path, tmp_path: Path) -> None:
    res = _cli(str(demo_dir), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["tensor_count"] == 74
    b = _resized(demo_dir, tmp_path / "b")
    res = _cli(str(demo_dir), str(b))
    assert res.returncode == 0, res.stderr
    assert "vocabulary resized     8192 -> 8200" in res.stdout
    res = _cli(str(tmp_path / "missing"))
    assert res.returncode == 2 and "Traceback" not in res.stderr and "missing" in res.stderr


@pytest.mark.slow
def test_cli_info_on_262k_vocabulary_gguf_under_2s(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    from .gguf_fixtures import write_gguf

    n = 262_144
    rng = np.random.default_rng(4)
    tokens = [f"tok{i}" for i in range(n)]

    def setup(w: gguf.GGUFWriter) -> None:
        w.add_block_count(2)
        w.add_embedding_length(64)
        w.add_head_count(4)
        w.add_head_count_kv(2)
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_scores([0.0] * n)
        w.add_token_types([1] * n)

    q = gguf.GGMLQuantizationType.Q8_0
    tensors = {"token_embd.weight": ("Q8_0", gguf.quants.quantize(
        rng.standard_normal((512, 64)).astype(np.float32), q))}
    for b in range(2):
        tensors[f"blk.{b}.attn_q.weight"] = ("F16", rng.standard_normal((64, 64)).astype(
            np.float16))
    path = write_gguf(tmp_path / "big.gguf", tensors, setup=setup)
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        res = _cli(str(path), "--json")
        best = min(best, time.perf_counter() - t0)
        assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    a = info["architecture"]
    assert (a["blocks"], a["heads"], a["kv_heads"], a["vocab_size"]) == (2, 4, 2, 512)
    assert info["dtypes"]["Q8_0"]["bytes"] == 512 * 64 // 32 * 34
    assert best < 2.0, f"weightvis info took {best:.2f} s (process start included)"
