"""A diff across formats pairs by gguf-py's name map of the GGUF's architecture (any architecture,
encoders included), tested on GGUFs written by llama.cpp's own converter from a real BERT
safetensors; a diff across architectures says so first and compares only what pairs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from safetensors.numpy import load_file

import weightvis

from .conftest import BundleView, real_checkpoint, view2d
from .gguf_fixtures import write_gguf
from .llama_cpp import convert

# what llama.cpp's BERT converter drops (BertModel.modify_tensors in convert_hf_to_gguf.py)
DROPPED_BY_CONVERTER = {"embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"}


@pytest.fixture(scope="module")
def bert_ggufs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """all-MiniLM-L6-v2 (real safetensors) converted by llama.cpp to F32 and F16 GGUFs."""
    model_dir = real_checkpoint("minilm").parent
    root = tmp_path_factory.mktemp("bert-gguf")
    return {t: convert(model_dir, root / f"minilm-{t}.gguf", t) for t in ("f32", "f16")}


def _kept(path: Path) -> dict[str, str]:
    """The converter's tensor list, read by gguf-py's reader: name -> ggml type."""
    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors}


@pytest.mark.slow
def test_bert_f32_gguf_pairs_every_kept_tensor_unchanged(bert_ggufs: dict[str, Path],
                                                         tmp_path: Path) -> None:
    st = real_checkpoint("minilm")
    kept = _kept(bert_ggufs["f32"])
    assert set(kept.values()) == {"F32"}
    res = weightvis.diff([st], [bert_ggufs["f32"]], tmp_path / "d", workers=2, svd=False)
    d = res.diff
    both = [p for p in d["pairs"] if p["a"] is not None and p["b"] is not None]
    assert {p["b"] for p in both} == set(kept) and len(both) == len(kept)
    assert {p["paired_by"] for p in both} == {"name-map"}
    assert all(p["status"] == "identical" and p["numbers"]["delta_norm"] == 0 for p in both)
    only_a = {p["a"] for p in d["pairs"] if p["status"] == "only-in-a"}
    assert only_a == DROPPED_BY_CONVERTER
    assert d["summary"]["only_in_b"] == 0 and d["architectures"]["same"] is True
    # the numbers are those of the real tensors (‖A‖ from the safetensors file itself)
    ref = load_file(str(st))
    for p in both[::10]:
        a = view2d(ref[p["a"]]).astype(np.float64)
        assert p["numbers"]["a_norm"] == pytest.approx(float(np.linalg.norm(a)), rel=1e-9)
    # the manifest names each pair's GGUF twin, for the viewer's search
    tensors = json.loads((Path(res.out) / "manifest.json").read_text())["tensors"]
    assert {tensors[p["name"]]["gguf"] for p in both if p["name"] != p["b"]} <= set(kept)


@pytest.mark.slow
def test_bert_f16_gguf_as_a_pairs_and_shows_only_f16_rounding(bert_ggufs: dict[str, Path],
                                                              tmp_path: Path) -> None:
    st = real_checkpoint("minilm")
    kept = _kept(bert_ggufs["f16"])
    assert {"F16", "F32"} <= set(kept.values())
    d = weightvis.diff([bert_ggufs["f16"]], [st], tmp_path / "d", workers=2, svd=False).diff
    both = {p["a"]: p for p in d["pairs"] if p["a"] is not None and p["b"] is not None}
    assert set(both) == set(kept)
    assert {p["b"] for p in d["pairs"] if p["status"] == "only-in-b"} == DROPPED_BY_CONVERTER
    ref = load_file(str(st))
    for g, p in both.items():
        b = view2d(ref[p["b"]]).astype(np.float64)
        if kept[g] == "F32":
            assert p["status"] == "identical", g
        else:  # F16 keeps 11 significant bits: |Δ| ≤ half an ulp of |b|
            assert p["status"] in ("changed", "identical")
            assert p["numbers"]["max_abs_delta"] <= np.abs(b).max() * 2.0 ** -11 + 6e-8, g
    assert any("rounding or quantization" in ln for ln in d["diagnosis"])


# -- across architectures ------------------------------------------------------------------------
def _cross_pair(tmp_path: Path, arch_b: str = "gemma3") -> tuple[Path, Path]:
    rng = np.random.default_rng(3)

    def f(*shape: int) -> tuple[str, np.ndarray]:
        return "F32", rng.standard_normal(shape).astype(np.float32)

    a = {"token_embd.weight": f(40, 8), "blk.0.attn_q.weight": f(8, 8),
         "blk.0.attn_norm.weight": f(8), "blk.0.ffn_up.weight": f(16, 8),
         "blk.1.attn_q.weight": f(8, 8)}
    b = {"token_embd.weight": f(60, 12), "blk.0.attn_q.weight": f(12, 12),
         "blk.0.attn_norm.weight": f(12), "blk.0.ffn_up.weight": f(16, 8),  # same shape
         "blk.0.post_ffw_norm.weight": f(12)}
    return (write_gguf(tmp_path / "a.gguf", a, arch="llama"),
            write_gguf(tmp_path / f"b-{arch_b}.gguf", b, arch=arch_b))


def test_cross_architecture_diff_says_so_first_and_compares_only_equal_shapes(
        tmp_path: Path) -> None:
    a, b = _cross_pair(tmp_path)
    res = weightvis.diff([a], [b], tmp_path / "d", workers=1)
    d = res.diff
    assert d["architectures"] == {"a": "llama", "b": "gemma3", "same": False}
    (w,) = d["warnings"]
    assert w.startswith("different architectures: A is llama (2 blocks, hidden size 8), B is "
                        "gemma3 (1 block, hidden size 12): two different models")
    assert "of 4 pairs, 1 of equal shape are compared and 3 of different shapes are not" in w
    keys = list(d)
    assert keys.index("warnings") < keys.index("summary") < keys.index("diagnosis")
    by = {p["name"]: p for p in d["pairs"]}
    for n in ("token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_norm.weight"):
        assert by[n]["status"] == "shape-changed" and by[n]["compared"] is False
        assert by[n]["numbers"] is None
    same = by["blk.0.ffn_up.weight"]
    assert same["compared"] is True and same["status"] == "changed"
    assert d["summary"]["elements_compared"] == 16 * 8
    assert any("3 pair(s) of different shapes not compared" in ln for ln in d["diagnosis"])
    # the map: where both have elements nothing is drawn (padding), the rest is hatched
    bv = BundleView(Path(res.out))
    sc = bv.scene("delta")
    pad = bv.manifest["colormaps"]["delta"]["padding_index"]
    x0, y0 = bv.element_pixel("blk.0.attn_q.weight", 0, 0, "delta")
    assert {bv.pixel(sc, x0 + c, y0 + r) for r in range(8) for c in range(8)} == {pad}
    only_b = {bv.pixel(sc, x0 + c, y0 + r) for r in range(8, 12) for c in range(12)}
    assert pad not in only_b and len(only_b) >= 1


def test_same_architecture_has_no_warning(tmp_path: Path) -> None:
    a, b = _cross_pair(tmp_path, arch_b="llama")
    d = weightvis.diff([a], [b], tmp_path / "d", workers=1).diff
    assert d["architectures"] == {"a": "llama", "b": "llama", "same": True}
    assert d["warnings"] == []
    assert all(p["compared"] for p in d["pairs"])
    qk = {p["name"]: p for p in d["pairs"]}["blk.0.attn_q.weight"]
    assert qk["status"] == "shape-changed" and qk["numbers"]["compared"] == 64


def test_cli_prints_the_warning_first_and_even_with_quiet(tmp_path: Path) -> None:
    a, b = _cross_pair(tmp_path)
    run = [sys.executable, "-m", "weightvis", "diff", str(a), str(b), "--workers", "1"]
    done = subprocess.run(run + ["--out", str(tmp_path / "o1")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith("warning: different architectures: A is llama")
    quiet = subprocess.run(run + ["--out", str(tmp_path / "o2"), "-q"], capture_output=True,
                           text=True)
    assert quiet.returncode == 0 and quiet.stdout == ""
    assert quiet.stderr.startswith("weightvis: warning: different architectures: A is llama")
