"""Cross-format pairing beyond llama and BERT: tiny random models of several architectures, built
by transformers and converted by llama.cpp's own converter (tensors only), pair tensor for tensor
with their safetensors, Δ = 0 once the converter's transforms are undone (llama's Q/K row
permutation, Gemma's 1 + w norm scales). Mixture-of-Experts architectures are not here: the
converter merges per-expert tensors into one 3-D tensor per role, which no one-to-one pairing
can match (see the report of issue 14)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from safetensors.numpy import load_file

import weightvis

from .llama_cpp import convert_weights

pytestmark = pytest.mark.slow

BASE = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
ARCHS: dict[str, tuple[str, str, dict[str, Any]]] = {
    # name: (transformers config class, model class, config), name = the GGUF architecture
    "llama": ("LlamaConfig", "LlamaForCausalLM", BASE),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", BASE),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {**BASE, "head_dim": 16}),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {**BASE, "head_dim": 16}),
    "starcoder2": ("Starcoder2Config", "Starcoder2ForCausalLM", BASE),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", BASE),
    "bert": ("BertConfig", "BertModel", {k: v for k, v in BASE.items()
                                         if k != "num_key_value_heads"}),
}


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("archs")
    jobs: dict[Path, Path] = {}
    for i, (arch, (cfg_cls, model_cls, cfg)) in enumerate(ARCHS.items()):
        torch.manual_seed(i)
        model = getattr(transformers, model_cls)(getattr(transformers, cfg_cls)(**cfg))
        with torch.no_grad():  # every value random: norms too (Gemma's start at 0)
            for p in model.parameters():
                p.normal_(0.0, 0.5)
        model.save_pretrained(root / arch)
        jobs[root / arch] = root / f"{arch}.gguf"
    convert_weights(jobs, "f32")
    return {arch: (root / arch / "model.safetensors", root / f"{arch}.gguf") for arch in ARCHS}


@pytest.mark.parametrize("arch", list(ARCHS))
def test_converter_output_pairs_every_tensor_with_no_change(
        arch: str, converted: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    st, gg = converted[arch]
    kept = {t.name for t in gguf.GGUFReader(str(gg)).tensors}
    reader_arch = gguf.GGUFReader(str(gg)).fields["general.architecture"]
    assert bytes(reader_arch.parts[-1]).decode() == arch
    d = weightvis.diff([st], [gg], tmp_path / "d", workers=1, svd=False).diff
    both = [p for p in d["pairs"] if p["a"] is not None and p["b"] is not None]
    assert {p["b"] for p in both} == kept and len(both) == len(kept)
    assert d["summary"]["only_in_b"] == 0
    # what A has beyond the converter's tensors: only what it drops (BERT's pooler)
    assert {p["a"] for p in d["pairs"] if p["b"] is None} <= {"pooler.dense.weight",
                                                              "pooler.dense.bias"}
    ref = load_file(str(st))
    for p in both:
        if p["transform"] == "minus-one":  # stored as fl32(1 + w): w back within its rounding
            w = ref[p["a"]].astype(np.float64)
            assert p["numbers"]["max_abs_delta"] <= 2.0 ** -23 * np.abs(1 + w).max(), p["name"]
        else:
            assert p["status"] == "identical", (p["name"], p["transform"])
    transforms = {p["transform"] for p in both}
    if arch == "llama":
        assert transforms == {None, "unpermute-q", "unpermute-k"}
    elif arch == "gemma2":
        norms = {p["b"] for p in both if p["b"].endswith("norm.weight")}
        assert norms and {p["b"] for p in both if p["transform"] == "minus-one"} == norms
    else:
        assert transforms == {None}
