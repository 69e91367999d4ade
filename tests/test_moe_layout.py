"""The main scene of a Mixture-of-Experts (issue 12, item 3), on shapes alone and rendered: routed
experts as a grid (gate, up, down of an expert together, expert e at the same offset in every
MoE block, labelled ``expert 17 · gate``), fused tensors placed per expert, the router whole,
shared experts beside the grid, attention aligned with the dense blocks, 1 px = 1 element, and
the canvas' fill (elements ÷ area) for Mixtral-, Qwen-MoE- and DeepSeek-V3-shaped configs -
printed, and checked against the layout that ignores experts. The viewer's readout names the
expert and the element's index in the fused tensor."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from weightvis.index import NameIndex
from weightvis.layout import arch_layout
from weightvis.moe.structure import MoEStructure, moe_structure
from weightvis.types import SceneLayout, TensorInfo

from . import moe_models as mm
from .conftest import BundleView, index_of
from .conftest_viewer import chromium_reusing, open_page  # noqa: F401  (fixtures)
from .test_layout import check_geometry

LABEL = re.compile(r"^expert (\d+) · (gate|up|down|gate_up)$")


def T(name: str, shape: tuple[int, ...], dtype: str = "BF16") -> TensorInfo:
    return TensorInfo(name, shape, dtype, "f")


def mixtral(L: int = 32, H: int = 4096, I: int = 14336, E: int = 8) -> list[TensorInfo]:
    ts = [T("model.embed_tokens.weight", (32000, H))]
    for n in range(L):
        p = f"model.layers.{n}."
        ts += [T(p + f"self_attn.{x}_proj.weight", (1024 if x in "kv" else H, H))
               for x in "qkvo"]
        ts += [T(p + "block_sparse_moe.gate.weight", (E, H)),
               T(p + "input_layernorm.weight", (H,)),
               T(p + "post_attention_layernorm.weight", (H,))]
        for e in range(E):
            q = p + f"block_sparse_moe.experts.{e}."
            ts += [T(q + "w1.weight", (I, H)), T(q + "w3.weight", (I, H)),
                   T(q + "w2.weight", (H, I))]
    return ts + [T("model.norm.weight", (H,)), T("lm_head.weight", (32000, H))]


def qwen_moe(L: int = 24, H: int = 2048, I: int = 1408, E: int = 60, Is: int = 5632
             ) -> list[TensorInfo]:
    """Qwen1.5-MoE-A2.7B: 60 routed experts and a shared expert with its gate."""
    ts = [T("model.embed_tokens.weight", (151936, H))]
    for n in range(L):
        p = f"model.layers.{n}."
        ts += [T(p + f"self_attn.{x}_proj.weight", (H, H)) for x in "qkvo"]
        ts += [T(p + "mlp.gate.weight", (E, H)), T(p + "mlp.shared_expert_gate.weight", (1, H)),
               T(p + "input_layernorm.weight", (H,)),
               T(p + "post_attention_layernorm.weight", (H,))]
        for e in range(E):
            q = p + f"mlp.experts.{e}."
            ts += [T(q + "gate_proj.weight", (I, H)), T(q + "up_proj.weight", (I, H)),
                   T(q + "down_proj.weight", (H, I))]
        q = p + "mlp.shared_expert."
        ts += [T(q + "gate_proj.weight", (Is, H)), T(q + "up_proj.weight", (Is, H)),
               T(q + "down_proj.weight", (H, Is))]
    return ts + [T("model.norm.weight", (H,)), T("lm_head.weight", (151936, H))]


def deepseek_v3(L: int = 61, H: int = 7168, I: int = 2048, Id: int = 18432, E: int = 256,
                k_dense: int = 3, heads: int = 128, vocab: int = 129280) -> list[TensorInfo]:
    """deepseek-ai/DeepSeek-V3's names and shapes (config.json), bf16."""
    ts = [T("model.embed_tokens.weight", (vocab, H))]
    for n in range(L):
        p = f"model.layers.{n}."
        ts += [T(p + "input_layernorm.weight", (H,)),
               T(p + "self_attn.q_a_proj.weight", (1536, H)),
               T(p + "self_attn.q_a_layernorm.weight", (1536,)),
               T(p + "self_attn.q_b_proj.weight", (heads * 192, 1536)),
               T(p + "self_attn.kv_a_proj_with_mqa.weight", (576, H)),
               T(p + "self_attn.kv_a_layernorm.weight", (512,)),
               T(p + "self_attn.kv_b_proj.weight", (heads * 256, 512)),
               T(p + "self_attn.o_proj.weight", (H, heads * 128)),
               T(p + "post_attention_layernorm.weight", (H,))]
        if n < k_dense:
            ts += [T(p + f"mlp.{x}_proj.weight", (Id, H) if x != "down" else (H, Id))
                   for x in ("gate", "up", "down")]
            continue
        ts += [T(p + "mlp.gate.weight", (E, H)), T(p + "mlp.gate.e_score_correction_bias", (E,))]
        for e in range(E):
            q = p + f"mlp.experts.{e}."
            ts += [T(q + "gate_proj.weight", (I, H)), T(q + "up_proj.weight", (I, H)),
                   T(q + "down_proj.weight", (H, I))]
        q = p + "mlp.shared_experts."
        ts += [T(q + "gate_proj.weight", (I, H)), T(q + "up_proj.weight", (I, H)),
               T(q + "down_proj.weight", (H, I))]
    return ts + [T("model.norm.weight", (H,)), T("lm_head.weight", (vocab, H))]


def fill(lay: SceneLayout, ts: list[TensorInfo]) -> float:
    return sum(t.numel for t in ts) / (lay.c_width * lay.c_height)


def layout(ts: list[TensorInfo], config: dict[str, Any] | None = None
           ) -> tuple[SceneLayout, MoEStructure]:
    index = NameIndex([t.name for t in ts])
    moe = moe_structure(ts, config, index=index)
    assert moe is not None
    return arch_layout(ts, index=index, moe=moe), moe


def blocks_of(lay: SceneLayout) -> dict[int, Any]:
    return {int(g.label.split()[1]): g for g in lay.groups if g.kind == "block"}


def check_experts(lay: SceneLayout, moe: MoEStructure, ts: list[TensorInfo]) -> None:
    """Expert e's matrices sit at one offset in every MoE block, inside the block's grid, with
    labels naming expert and role; each covers exactly its slice of the stored tensor."""
    blocks = blocks_of(lay)
    grids = [g for g in lay.groups if g.label == "routed experts"]
    assert len(grids) == len(moe.moe_layers)
    infos = {t.name: t for t in ts}
    offsets: dict[tuple[int, str], set[tuple[int, int, int, int]]] = defaultdict(set)
    seen: set[tuple[int, int, str]] = set()
    for p in lay.placements:
        m = LABEL.match(p.label or "")
        if m is None:
            continue
        e, role = int(m[1]), m[2]
        b, _sub = lay.slots[p.tensor]
        assert b in moe.moe_layers
        g = blocks[b]
        offsets[(e, role)].add((p.c_x - g.c_x, p.c_y - g.c_y, p.c_w, p.c_h))
        seen.add((b, e, role))
        grid = next(x for x in grids if g.c_x <= x.c_x < g.c_x + g.c_w
                    and g.c_y <= x.c_y < g.c_y + g.c_h)
        assert grid.c_x <= p.c_x and p.c_x + p.c_w <= grid.c_x + grid.c_w
        assert grid.c_y <= p.c_y and p.c_y + p.c_h <= grid.c_y + grid.c_h
        sl = moe.slices[(b, "gate" if role == "gate_up" else role)][e]
        assert sl.tensor == p.tensor
        if sl.expert_axis_index is not None:  # a fused tensor: rows of expert e only
            r = infos[p.tensor].shape[1]
            assert e * r <= p.e_r0 < p.e_r1 <= (e + 1) * r
    assert all(len(o) == 1 for o in offsets.values()), offsets
    for b in moe.moe_layers:
        for e in range(moe.experts):
            assert any((b, e, role) in seen for role in ("gate", "gate_up"))
            assert (b, e, "down") in seen


@pytest.mark.parametrize("name,ts,config", [
    ("mixtral", mixtral(L=3, H=128, I=448, E=8), None),
    ("qwen-moe", qwen_moe(L=3, H=64, I=44, E=12, Is=176), None),
    ("deepseek-v3", deepseek_v3(L=5, H=224, I=64, Id=576, E=16, k_dense=2, heads=4,
                                vocab=512), None),
])
def test_small_moe_layouts(name: str, ts: list[TensorInfo], config: Any) -> None:
    lay, moe = layout(ts, config)
    check_geometry(lay, ts)  # inside the canvas, no overlap, every element once, 1 px = 1 el.
    check_experts(lay, moe, ts)
    blocks = blocks_of(lay)
    # attention at one offset in every block, dense and MoE alike
    att = defaultdict(set)
    for p in lay.placements:
        b, sub = lay.slots.get(p.tensor, (None, None))
        if sub is not None and "self_attn" in sub:
            att[sub].add((p.c_x - blocks[b].c_x, p.c_y - blocks[b].c_y))
    assert att and all(len(v) == 1 for v in att.values())
    # the router whole, at its own size, in each MoE block
    for router in moe.router.values():
        (p,) = [p for p in lay.placements if p.tensor == router]
        assert (p.e_r0, p.e_c0, p.c_h, p.c_w) == (0, 0, moe.experts, moe.hidden)
    # shared experts: in their block, outside the grid, labelled
    for b, roles in moe.shared.items():
        grid = next(g for g in lay.groups if g.label == "routed experts"
                    and blocks[b].c_x <= g.c_x < blocks[b].c_x + blocks[b].c_w
                    and blocks[b].c_y <= g.c_y < blocks[b].c_y + blocks[b].c_h)
        for role, tensor in roles.items():
            (p,) = [p for p in lay.placements if p.tensor == tensor]
            assert p.label == f"shared expert · {role}"
            inside_grid = (grid.c_x <= p.c_x < grid.c_x + grid.c_w
                           and grid.c_y <= p.c_y < grid.c_y + grid.c_h)
            assert not inside_grid


@pytest.mark.parametrize("family", ["linear", "halves", "interleaved"])
def test_fused_tensors_are_placed_per_expert(tmp_path: Path, family: str) -> None:
    ref = mm.reference(E=6)
    d = mm.fused(ref, tmp_path, family)
    from weightvis.formats import open_checkpoint
    from weightvis.moe.structure import detect_moe

    r = open_checkpoint([d])
    ts = list(r.tensors())
    moe = detect_moe(r, r.config)
    assert moe is not None
    lay = arch_layout(ts, moe=moe)
    check_geometry(lay, ts)
    check_experts(lay, moe, ts)
    gu = "model.layers.1." + ("feed_forward" if family == "halves" else "mlp") + \
        ".experts.gate_up_proj"
    pieces = sorted((p.e_r0, p.e_c0, p.label) for p in lay.placements if p.tensor == gu)
    if family == "interleaved":  # gate and up columns alternate: one placement per expert
        assert pieces == [(e * ref.H, 0, f"expert {e} · gate_up") for e in range(6)]
    elif family == "halves":  # [E, H, 2I]: gate = first I columns, up = the rest
        assert pieces == sorted([(e * ref.H, c, f"expert {e} · {role}") for e in range(6)
                                 for c, role in ((0, "gate"), (ref.I, "up"))])
    else:  # [E, 2I, H]: gate rows first
        assert pieces == sorted([(e * 2 * ref.I + k * ref.I, 0, f"expert {e} · {role}")
                                 for e in range(6) for k, role in enumerate(("gate", "up"))])


def test_fill_of_real_model_shapes() -> None:
    """Fill (elements ÷ canvas area) of the expert-aware layout against the one that ignores
    experts, for Mixtral-8x7B, Qwen1.5-MoE-A2.7B and DeepSeek-V3 names and shapes."""
    cases = {
        "Mixtral-8x7B": (mixtral(), None),
        "Qwen1.5-MoE-A2.7B": (qwen_moe(), None),
        "DeepSeek-V3": (deepseek_v3(), {"first_k_dense_replace": 3, "n_routed_experts": 256}),
    }
    got = {}
    for name, (ts, cfg) in cases.items():
        index = NameIndex([t.name for t in ts])
        moe = moe_structure(ts, cfg, index=index)
        assert moe is not None
        plain = arch_layout(ts, index=index)
        lay = arch_layout(ts, index=index, moe=moe)
        got[name] = (fill(plain, ts), fill(lay, ts), lay.c_width / lay.c_height)
        print(f"{name}: fill {got[name][0]:.1%} -> {got[name][1]:.1%} "
              f"(canvas {lay.c_width} x {lay.c_height}, aspect {got[name][2]:.2f})")
        assert 16 / 9 / 2 <= got[name][2] <= 16 / 9 * 2  # within the aspect slack of 16:9
        assert got[name][1] >= 0.7, (name, got[name])
        assert got[name][1] >= 1.5 * got[name][0], (name, got[name])


def test_dense_models_keep_their_layout() -> None:
    """No MoE structure: ``arch_layout`` is the layout of before (golden.py checks the bytes)."""
    from .test_layout import llama_shapes

    ts = llama_shapes(4, 256, 704, 64, 1000)
    assert moe_structure(ts, None) is None
    assert arch_layout(ts) == arch_layout(ts, moe=None)


# -- rendered -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fused_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[BundleView, mm.Ref, Path]:
    import weightvis

    root = tmp_path_factory.mktemp("moe")
    ref = mm.reference(E=6)
    d = mm.fused(ref, root / "ckpt", "linear")
    out = weightvis.render([d], root / "bundle", workers=1, quiet=True).out
    return BundleView(Path(out)), ref, d


def test_rendered_expert_pixels_are_their_values(fused_bundle: tuple[BundleView, mm.Ref, Path]
                                                 ) -> None:
    bv, ref, _d = fused_bundle
    scene = bv.scene()
    rng = np.random.default_rng(0)
    checked = 0
    for p in scene["placements"]:
        m = LABEL.match(p.get("label", ""))
        if m is None:
            continue
        e, role = int(m[1]), m[2]
        layer = int(p["tensor"].split(".")[2])
        t = bv.manifest["tensors"][p["tensor"]]
        assert t["view"] == [t["shape"][0] * t["shape"][1], t["shape"][2]]
        (r0, r1), (c0, c1) = p["rows"], p["cols"]
        x, y, _w, _h = p["rect"]
        for _ in range(4):
            r, c = int(rng.integers(r0, r1)), int(rng.integers(c0, c1))
            local = r - e * t["shape"][1]
            want = ref.matrix(layer, role, e)
            if role == "up":
                local -= ref.I
            v = want[local, c]
            assert bv.pixel(scene, x + c - c0, y + r - r0) == index_of(v, t["scale"])
            checked += 1
    assert checked == 4 * 3 * 6 * len(ref.moe_layers)


def test_fp8_main_scene_shows_true_values(tmp_path: Path) -> None:
    """An FP8 tensor with a weight_scale_inv sibling is drawn (and its statistics computed) from
    w · scale, not from the raw FP8 values."""
    import weightvis

    rng = np.random.default_rng(8)
    codes = mm.fp8_codes(rng, (200, 300))
    s = np.array([[1e-3, 4.0, 0.5], [8.0, 1e-2, 2.0]], np.float32)
    true = (mm.e4m3_values(codes) * np.repeat(np.repeat(s.astype(np.float64), 128, 0), 128, 1)[
        :200, :300]).astype(np.float32)
    d = mm.save(tmp_path / "ck", {"model.layers.0.mlp.down_proj.weight": codes,
                                  "model.layers.0.mlp.down_proj.weight_scale_inv": s},
                {"quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}},
                {"model.layers.0.mlp.down_proj.weight": "F8_E4M3"})
    bv = BundleView(Path(weightvis.render([d], tmp_path / "b", workers=1, quiet=True).out))
    name = "model.layers.0.mlp.down_proj.weight"
    t = bv.manifest["tensors"][name]
    assert t["dtype"] == "F8_E4M3"
    fin = true[np.isfinite(true)].astype(np.float64)
    assert t["stats"]["rms"] == pytest.approx(float(np.sqrt(np.mean(fin ** 2))), rel=1e-6)
    assert t["stats"]["max"] == pytest.approx(float(fin.max()), rel=1e-6)
    scene = bv.scene()
    (p,) = [p for p in scene["placements"] if p["tensor"] == name]
    x, y, _w, _h = p["rect"]
    for r, c in ((5, 7), (130, 10), (199, 299), (60, 200), (150, 140)):
        assert bv.pixel(scene, x + c, y + r) == index_of(true[r, c], t["scale"])


@pytest.mark.browser
@pytest.mark.slow
def test_readout_names_the_expert_and_its_index(fused_bundle: tuple[BundleView, mm.Ref, Path],
                                                open_page: Any) -> None:
    from .test_viewer_browser import hover_canvas_pixel, set_view

    bv, ref, _d = fused_bundle
    scene = bv.scene()
    name = "model.layers.2.mlp.experts.gate_up_proj"
    (p,) = [p for p in scene["placements"] if p["tensor"] == name
            and p.get("label") == "expert 4 · up"]
    x, y, _w, _h = p["rect"]
    page, log = open_page((bv.path / "index.html").resolve().as_uri())
    set_view(page, x + 10, y + 5, scene["max_zoom"] + 2)
    hover_canvas_pixel(page, x + 9, y + 3)
    r, c = p["rows"][0] + 3, p["cols"][0] + 9
    index = page.text_content("#wv-r-index")
    assert index == f"[4, {r - 4 * 2 * ref.I}, {c}]", index  # row within expert 4's [2I, H]
    assert page.text_content("#wv-r-group") == "block 2 · expert 4 · up"
    assert page.text_content("#wv-r-element") == f"[{r}, {c}]"
    log.assert_clean()


def test_a_block_of_many_slots_packs_in_linear_time() -> None:
    """Past the skyline's bound, a block's top goes on shelves: still every element once."""
    import time

    ts = []
    for L in range(2):
        p = f"model.layers.{L}."
        ts += [T(p + "mlp.gate.weight", (4, 16))]
        ts += [T(p + f"mlp.experts.{e}.{r}_proj.weight", (16, 8) if r == "down" else (8, 16))
               for e in range(4) for r in ("gate", "up", "down")]
        ts += [T(p + f"mlp.extra{i}.weight", (3 + i % 5, 7 + i % 3)) for i in range(2000)]
    t0 = time.perf_counter()
    lay, moe = layout(ts)
    assert time.perf_counter() - t0 < 10
    check_geometry(lay, ts)
    check_experts(lay, moe, ts)
