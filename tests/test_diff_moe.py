"""A diff between an MoE checkpoint and its GGUF conversion by llama.cpp's own converter pairs
the experts — expert e of role r in layer L on both sides, per-expert or fused safetensors
against GGUF ``blk.L.ffn_{gate,up,down}_exps`` — and compares them element by element: equal
for F32, within a quantization step for Q8_0 (weightvis.moe.pairing, delta.py "expert")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from weightvis.delta import DiffReader
from weightvis.formats import open_checkpoint
from weightvis.moe.structure import detect_moe, expert_matrix

from .test_moe_structure import _RUN_CONVERTER, _converter, _tiny_tokenizer, build_tiny

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["mixtral", "qwen2_moe", "deepseek_v3", "gpt_oss"])
def converted(request: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny random model of ``param`` saved in the Hub (per-expert) and the transformers-5
    fused layouts, and the Hub one converted to GGUF F32 and Q8_0."""
    conv = _converter()
    d = tmp_path_factory.mktemp(request.param)
    build_tiny(request.param, d / "hub", fused=False)
    build_tiny(request.param, d / "fused", fused=True)
    _tiny_tokenizer(d / "hub")
    out = {"hub": d / "hub", "fused": d / "fused"}
    for qtype in ("f32", "q8_0"):
        out[qtype] = d / f"m-{qtype}.gguf"
        p = subprocess.run([sys.executable, "-c", _RUN_CONVERTER, str(conv), str(d / "hub"),
                            "--outtype", qtype, "--outfile", str(out[qtype])],
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr[-2000:]
    return out


@pytest.mark.parametrize("layout", ["hub", "fused"])
@pytest.mark.parametrize("qtype", ["f32", "q8_0"])
def test_every_expert_pairs_with_its_conversion(converted: dict[str, Path], layout: str,
                                                qtype: str) -> None:
    a, b = open_checkpoint([converted[layout]]), open_checkpoint([converted[qtype]])
    sa, sb = detect_moe(a, a.config), detect_moe(b, None)
    assert sa is not None and sb is not None
    diff = DiffReader(a, b)
    # every stored expert tensor of either side ends in an expert pair (none one-sided)
    expert_tensors_a = {s.tensor for ss in sa.slices.values() for s in ss}
    expert_tensors_b = {s.tensor for ss in sb.slices.values() for s in ss}
    one_sided = [p.name for p in diff.pairs if (p.a is None or p.b is None) and (
        (p.a is not None and p.a.name in expert_tensors_a)
        or (p.b is not None and p.b.name in expert_tensors_b))]
    assert one_sided == []
    by_key = {(p.slice_b.tensor, p.slice_b.expert_axis_index, p.slice_b.rows): p
              for p in diff.pairs if p.paired_by == "expert"}
    n = sum(len(ss) for ss in sb.slices.values())
    assert len(by_key) == n == sa.experts * len(sa.moe_layers) * len(sa.roles)
    for (layer, role), ss in sb.slices.items():
        for e, s in enumerate(ss):
            p = by_key[(s.tensor, s.expert_axis_index, s.rows)]
            # the same expert on both sides: A's slice is A's expert e of this layer and role
            assert p.slice_a == sa.slices[(layer, role)][e]
            want_a = expert_matrix(a, p.slice_a)            # the reference, read directly
            want_b = expert_matrix(b, s)
            rows, cols = p.view
            assert (rows, cols) == want_a.shape == want_b.shape
            np.testing.assert_array_equal(diff.read_side("a", p.name, 0, rows), want_a)
            np.testing.assert_array_equal(diff.read_side("b", p.name, 0, rows), want_b)
            block = diff.read(p.name, 1, rows - 1, 2, cols - 1)     # an inner block
            np.testing.assert_array_equal(block, (want_b - want_a)[1:rows - 1, 2:cols - 1])
            if qtype == "f32":
                assert not np.any(want_b - want_a), (layer, role, e)
            else:   # Q8_0 (F16 where a row is shorter than a block): within a step
                bound = float(np.abs(want_a).max()) / 100
                assert float(np.abs(want_b - want_a).max()) <= bound, (layer, role, e)


def test_the_rendered_diff_of_an_f32_conversion_is_identical(converted: dict[str, Path],
                                                             tmp_path: Path) -> None:
    """Through the CLI: the fused checkpoint against its F32 GGUF — every expert matrix of
    both sides in an expert pair and identical, and the routers and selection biases the
    converter renamed paired and identical too (DeepSeek-V3's ``e_score_correction_bias`` is
    ``exp_probs_b.bias``)."""
    import json

    from weightvis.cli import main

    out = tmp_path / "diff"
    assert main(["diff", str(converted["fused"]), str(converted["f32"]), "--out", str(out),
                 "-q", "--workers", "1"]) == 0
    doc = json.loads((out / "diff.json").read_text())
    a, b = open_checkpoint([converted["fused"]]), open_checkpoint([converted["f32"]])
    sa, sb = detect_moe(a, a.config), detect_moe(b, None)
    assert sa is not None and sb is not None
    experts = [p for p in doc["pairs"] if p["paired_by"] == "expert"]
    assert len(experts) == sum(len(ss) for ss in sb.slices.values())
    assert all(p["status"] == "identical" and p["numbers"]["delta_norm"] == 0 for p in experts)
    moe_a = {s.tensor for ss in sa.slices.values() for s in ss} | set(sa.router.values()) \
        | set(sa.router_bias.values())
    moe_b = {s.tensor for ss in sb.slices.values() for s in ss} | set(sb.router.values()) \
        | set(sb.router_bias.values())
    paired = [p for p in doc["pairs"] if p["a"] in moe_a or p["b"] in moe_b]
    assert paired and all(p["a"] is not None and p["b"] is not None for p in paired)
    assert all(p["status"] == "identical" for p in paired)
    if sb.router_bias:
        assert {p["b"] for p in paired if p["paired_by"] == "router"} >= set(
            sb.router_bias.values()) - {p["b"] for p in paired if p["paired_by"] != "router"}
