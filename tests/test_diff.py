"""weightvis diff: planted edits on a real checkpoint found exactly, honest numbers, every tensor
accounted for, pixels recomputable from the manifest, cross-format pairing with GGUF."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import weightvis
from weightvis.delta import unpermute_rows
from weightvis.diff_analysis import detect_finetune

from .conftest import BundleView, real_checkpoint, view2d


def delta_index(a: float, b: float, s: float, metric: str = "rms") -> int:
    """The delta rule, written from the manifest's text."""
    a, b = float(a), float(b)
    if a == b or (np.isnan(a) and np.isnan(b)):
        return 129
    d = b - a
    if not np.isfinite(d):
        return 1
    if metric == "rms":
        q = int(np.floor(123 * np.sqrt(min(abs(d) / s, 1.0)) + 0.5))
    elif metric == "abs-log":
        q = int(np.floor(123 * (np.log10(abs(d)) + 8) / 8 + 0.5))
    else:
        q = 123
    q = min(max(q, 1), 123)
    return 129 + q if d > 0 else 129 - q


EDITS = {
    "scaled": "encoder.layer.1.attention.self.value.weight",
    "row": "encoder.layer.2.intermediate.dense.weight",
    "element": "encoder.layer.4.attention.output.dense.weight",
    "layernorm": "encoder.layer.3.output.LayerNorm.weight",
    "bias": "encoder.layer.5.intermediate.dense.bias",
}


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, BundleView]:
    d = tmp_path_factory.mktemp("planted")
    a_path = real_checkpoint("minilm")
    t = load_file(str(a_path))
    t[EDITS["scaled"]] = (t[EDITS["scaled"]] * np.float32(1.01)).astype(np.float32)
    t[EDITS["row"]][100, :] = 0.0
    t[EDITS["element"]][7, 42] += np.float32(0.5)
    t[EDITS["layernorm"]][17] += np.float32(0.25)
    t[EDITS["bias"]][1000] -= np.float32(0.125)
    b_path = d / "b" / "model.safetensors"
    b_path.parent.mkdir()
    save_file(t, str(b_path))
    res = weightvis.diff([a_path], [b_path], d / "bundle", workers=2)
    return a_path, b_path, BundleView(res.out)


@pytest.mark.slow
def test_five_planted_edits_exactly(planted: tuple[Path, Path, BundleView]) -> None:
    _, _, bv = planted
    d = bv.manifest["diff"]
    changed = {p["name"]: p for p in d["pairs"] if p["status"] != "identical"}
    assert set(changed) == set(EDITS.values())
    assert all(p["status"] == "changed" for p in changed.values())
    assert len(d["pairs"]) == 104 and d["summary"]["identical"] == 99
    row = changed[EDITS["row"]]["numbers"]
    nonzero_in_row = int(np.count_nonzero(load_file(str(real_checkpoint("minilm")))[
        EDITS["row"]][100]))
    assert row["changed"] == nonzero_in_row and row["changed_rows"] == {"count": 1,
                                                                        "first": [100]}
    assert row["bbox"][:2] == [100, 101]
    el = changed[EDITS["element"]]
    assert el["numbers"]["changed"] == 1 and el["numbers"]["bbox"] == [7, 8, 42, 43]
    (r, c, a, b), = el["elements"]
    assert (r, c) == (7, 42) and b - a == pytest.approx(0.5, abs=1e-6)
    assert changed[EDITS["layernorm"]]["numbers"]["changed_cols"]["first"] == [17]
    assert changed[EDITS["bias"]]["numbers"]["changed_cols"]["first"] == [1000]
    sc = changed[EDITS["scaled"]]["numbers"]
    assert sc["cosine"] == pytest.approx(1.0, abs=1e-9)
    assert sc["b_norm"] / sc["a_norm"] == pytest.approx(1.01, rel=1e-6)
    text = "\n".join(d["diagnosis"])
    assert "5 of 104 tensors changed" in text
    assert "row 100 changed" in text and "[7, 42]" in text and "scaled ×1.01" in text
    # diff.json is the same document
    assert json.loads((bv.path / "diff.json").read_text()) == d


@pytest.mark.slow
def test_planted_element_is_the_only_green_pixel(planted: tuple[Path, Path, BundleView]) -> None:
    a_path, b_path, bv = planted
    sc = bv.scene("delta")
    name = EDITS["element"]
    (pl,) = [p for p in sc["placements"] if p["tensor"] == name]
    x, y, w, h = pl["rect"]
    tiles = [[bv.pixel(sc, x + i, y + j) for i in range(w)] for j in range(h)]
    px = np.array(tiles)
    assert (px > 129).sum() == 1 and px[7, 42] > 129
    assert (px[px != px[7, 42]] == 129).all()  # everything else unchanged = black
    # random elements of changed tensors recomputed from the manifest rule
    ta, tb = load_file(str(a_path)), load_file(str(b_path))
    rng = np.random.default_rng(5)
    for nm in EDITS.values():
        va, vb = view2d(ta[nm]), view2d(tb[nm])
        s = bv.manifest["tensors"][nm]["scale"]
        for _ in range(25):
            r, c = int(rng.integers(va.shape[0])), int(rng.integers(va.shape[1]))
            assert bv.pixel(sc, *bv.element_pixel(nm, r, c, "delta")) == delta_index(
                va[r, c], vb[r, c], s), (nm, r, c)
    row = EDITS["row"]
    xr, yr = bv.element_pixel(row, 100, 0, "delta")
    line = [bv.pixel(sc, xr + i, yr) for i in range(384)]
    assert all(v != 129 for v, a in zip(line, ta[row][100], strict=True) if a != 0)


def test_identical_pair_says_identical(tmp_path: Path, ramp_file: Path) -> None:
    res = weightvis.diff([ramp_file], [ramp_file], tmp_path / "d", workers=1)
    d = res.diff
    assert d["summary"]["changed"] == 0 and d["summary"]["identical"] == len(d["pairs"])
    assert d["diagnosis"][0].startswith("identical")
    for p in d["pairs"]:
        assert p["numbers"]["delta_norm"] == 0 and p["numbers"]["changed"] == 0
        assert p["numbers"]["cosine"] == pytest.approx(1.0)
    bv = BundleView(res.out)
    sc = bv.scene("delta")
    for pl in sc["placements"][:5]:
        x, y, w, h = pl["rect"]
        assert {bv.pixel(sc, x + i, y + j) for i in range(w) for j in range(h)} == {129}


def test_bf16_copy_shows_only_rounding(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as save_torch

    src = load_file(str(real_checkpoint("silero")))
    a = tmp_path / "a.safetensors"
    b = tmp_path / "b.safetensors"
    save_file(src, str(a))
    save_torch({k: torch.from_numpy(v).to(torch.bfloat16) for k, v in src.items()}, str(b))
    d = weightvis.diff([a], [b], tmp_path / "d", workers=1, svd=False).diff
    for p in d["pairs"]:
        assert p["status"] in ("changed", "identical")
        nb = p["numbers"]
        assert nb["rel"] is None or nb["rel"] <= 2 ** -8  # bf16 keeps 8 significant bits
        va = view2d(src[p["name"]].astype(np.float64))
        assert nb["max_abs_delta"] <= np.abs(va).max() * 2 ** -8 + 1e-30
    assert any("rounding or quantization" in ln for ln in d["diagnosis"]) or \
        d["summary"]["changed"] <= 8


def test_vocab_resize_is_shape_changed_and_hatched(tmp_path: Path) -> None:
    from weightvis.demo import demo_tensors

    ta = demo_tensors()
    tb = dict(ta)
    emb = ta["model.embed_tokens.weight"]
    tb["model.embed_tokens.weight"] = np.concatenate([emb, np.ones((16, emb.shape[1]),
                                                                   np.float32)])
    tb["model.embed_tokens.weight"][3, 5] += 1.0
    save_file(ta, str(tmp_path / "a.safetensors"))
    save_file(tb, str(tmp_path / "b.safetensors"))
    res = weightvis.diff([tmp_path / "a.safetensors"], [tmp_path / "b.safetensors"],
                         tmp_path / "d", workers=2, svd=False)
    d = res.diff
    (p,) = [p for p in d["pairs"] if p["status"] != "identical"]
    assert p["status"] == "shape-changed" and p["shape_b"] == [8208, 512]
    assert p["numbers"]["changed"] == 1  # the overlap is compared
    assert any("8192, 512] -> [8208, 512]" in ln for ln in d["diagnosis"])
    bv = BundleView(res.out)
    sc = bv.scene("delta")
    # rows 8192.. exist only in B: hatched with index 3 on 5
    hatch = {bv.pixel(sc, *bv.element_pixel(p["name"], r, c, "delta"))
             for r in range(8192, 8208) for c in range(0, 64)}
    assert hatch == {3, 5}
    assert bv.pixel(sc, *bv.element_pixel(p["name"], 3, 5, "delta")) > 129


def test_one_sided_tensors_and_finetune_mode(tmp_path: Path, ramp_file: Path) -> None:
    t = load_file(str(ramp_file))
    base = tmp_path / "base-model"
    base.mkdir()
    save_file(t, str(base / "model.safetensors"))
    tuned = dict(t)
    removed = tuned.pop("model.layers.1.input_layernorm.weight")
    tuned["model.layers.0.self_attn.v_proj.weight"] = np.ones((4, 8), np.float32)
    ft = tmp_path / "tuned"
    ft.mkdir()
    save_file(tuned, str(ft / "model.safetensors"))
    (ft / "README.md").write_text("---\nlicense: mit\nbase_model:\n- org/base-model\n"
                                  "base_model_relation: finetune\n---\n# tuned\n")
    assert detect_finetune([str(base)], [str(ft)]) is not None
    res = weightvis.diff([base], [ft], tmp_path / "d", workers=1)
    d = res.diff
    assert d["mode"] == "finetune" and "base_model" in d["finetune_reason"]
    status = {p["name"]: p["status"] for p in d["pairs"]}
    assert status["model.layers.0.self_attn.v_proj.weight"] == "only-in-b"
    assert status["model.layers.1.input_layernorm.weight"] == "only-in-a"
    assert len(d["pairs"]) == len(t) + 1  # nothing skipped
    bv = BundleView(res.out)
    sc = bv.scene("delta")
    base_only = {bv.pixel(sc, *bv.element_pixel("model.layers.1.input_layernorm.weight", 0, c,
                                                  "delta")) for c in range(removed.size)}
    assert base_only <= {4, 5} and 4 in base_only  # grey hatch: only in the base
    new = {bv.pixel(sc, *bv.element_pixel("model.layers.0.self_attn.v_proj.weight", r, c,
                                           "delta")) for r in range(4) for c in range(8)}
    assert new <= {3, 5} and 3 in new
    forced = weightvis.diff([base], [ft], tmp_path / "d2", workers=1, finetune=False).diff
    assert forced["mode"] == "compare"


def test_metrics_palettes_and_scenes(tmp_path: Path, ramp_file: Path) -> None:
    t = load_file(str(ramp_file))
    t2 = {k: v.copy() for k, v in t.items()}
    name = "model.layers.0.mlp.up_proj.weight"
    t2[name][2, 3] += np.float32(1e-3)
    t2[name][5, 1] -= np.float32(2.0)
    b = tmp_path / "b.safetensors"
    save_file(t2, str(b))
    for metric in ("rms", "abs-log", "exact"):
        res = weightvis.diff([ramp_file], [b], tmp_path / metric, workers=1, metric=metric,
                             palette="cvd", scenes=("a", "b", "delta"))
        bv = BundleView(res.out)
        sc = bv.scene("delta")
        s = bv.manifest["tensors"][name]["scale"]
        for (r, c) in ((2, 3), (5, 1), (0, 0)):
            want = delta_index(t[name][r, c], t2[name][r, c], s, metric)
            assert bv.pixel(sc, *bv.element_pixel(name, r, c, "delta")) == want
        cm = bv.manifest["colormaps"]["delta"]
        assert cm["metric"] == metric and cm["palette_name"] == "cvd"
        assert [s["key"] for s in bv.manifest["scenes"]] == ["delta", "a", "b"]
        # the A and B scenes show each side's values in the same geometry
        sa, sb = bv.scene("a"), bv.scene("b")
        pa = next(p for p in sa["placements"] if p["tensor"] == name)
        assert pa["rect"] == next(p for p in sc["placements"] if p["tensor"] == name)["rect"]
        from .conftest import index_of
        pair = next(p for p in bv.manifest["diff"]["pairs"] if p["name"] == name)
        assert bv.pixel(sb, *bv.element_pixel(name, 5, 1, "b")) == index_of(
            t2[name][5, 1], pair["scale_b"])
    default = weightvis.diff([ramp_file], [b], tmp_path / "def", workers=1).manifest
    cvd = json.loads((tmp_path / "rms" / "manifest.json").read_text())
    assert (default["colormaps"]["delta"]["palette"][200]
            != cvd["colormaps"]["delta"]["palette"][200])


def test_workers_identical_diff(tmp_path: Path) -> None:
    from weightvis.demo import demo_tensors

    ta = demo_tensors()
    tb = {k: (v * np.float32(1.001) if "mlp" in k else v) for k, v in ta.items()}
    save_file(ta, str(tmp_path / "a.safetensors"))
    save_file(tb, str(tmp_path / "b.safetensors"))
    one = weightvis.diff([tmp_path / "a.safetensors"], [tmp_path / "b.safetensors"],
                         tmp_path / "one", workers=1)
    two = weightvis.diff([tmp_path / "a.safetensors"], [tmp_path / "b.safetensors"],
                         tmp_path / "two", workers=2)
    assert one.manifest == two.manifest
    fa = sorted(p.relative_to(one.out) for p in (one.out / "tiles").rglob("*.png"))
    assert fa == sorted(p.relative_to(two.out) for p in (two.out / "tiles").rglob("*.png"))
    for f in fa:
        assert (one.out / f).read_bytes() == (two.out / f).read_bytes()


def test_unpermute_rows_inverts_llama_cpp() -> None:
    rng = np.random.default_rng(0)
    for heads, rows in ((4, 32), (2, 8), (8, 64)):
        w = rng.standard_normal((rows, 5)).astype(np.float32)
        # llama.cpp's convert_hf_to_gguf.py LlamaModel.permute
        gg = w.reshape(heads, 2, rows // heads // 2, 5).swapaxes(1, 2).reshape(w.shape)
        np.testing.assert_array_equal(gg[unpermute_rows(rows, heads)], w)


@pytest.mark.slow
def test_gguf_q8_0_pairs_with_hf_weights(tmp_path: Path) -> None:
    from weightvis.demo import DEMO_CONFIG, demo_tensors

    hf = demo_tensors()
    save_file(hf, str(tmp_path / "hf.safetensors"))
    from .gguf_fixtures import hf_llama_to_gguf

    hf_llama_to_gguf(hf, tmp_path / "m.gguf", n_layers=DEMO_CONFIG["num_hidden_layers"],
                     heads=DEMO_CONFIG["num_attention_heads"],
                     kv_heads=DEMO_CONFIG["num_key_value_heads"],
                     hidden=DEMO_CONFIG["hidden_size"])
    d = weightvis.diff([tmp_path / "hf.safetensors"], [tmp_path / "m.gguf"], tmp_path / "d",
                       workers=2, svd=False).diff
    assert d["summary"]["only_in_a"] == 0 and d["summary"]["only_in_b"] == 0
    assert d["summary"]["shape_changed"] == 0
    by = {p["a"]: p for p in d["pairs"]}
    assert by["model.layers.0.self_attn.q_proj.weight"]["b"] == "blk.0.attn_q.weight"
    assert by["model.layers.0.self_attn.q_proj.weight"]["transform"] == "unpermute-q"
    assert by["model.layers.0.self_attn.k_proj.weight"]["transform"] == "unpermute-k"
    assert by["model.embed_tokens.weight"]["paired_by"] == "name-map"
    for p in d["pairs"]:
        nb = p["numbers"]
        if p["dtype_b"] == "Q8_0":
            assert 0 < nb["rel"] < 0.02, (p["name"], nb["rel"])  # Q8_0 error, not a mismatch
            assert nb["cosine"] > 0.9998
        else:
            assert nb["changed"] == 0  # F32 norms are exact


@pytest.mark.slow
def test_cli_diff(tmp_path: Path, ramp_file: Path) -> None:
    t = load_file(str(ramp_file))
    t["model.norm.weight"][0] = 9.0
    b = tmp_path / "b.safetensors"
    save_file(t, str(b))
    run = [sys.executable, "-m", "weightvis"]
    res = subprocess.run(run + ["diff", str(ramp_file), str(b), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "1 changed" in res.stdout and "model.norm.weight: one element changed, [0, 0]" \
        in res.stdout
    res = subprocess.run(run + ["--diff", str(ramp_file), str(b), "--out", str(tmp_path / "o2"),
                                "--quiet", "--scenes", "a,delta"], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "o2" / "manifest.json").read_text())
    assert [s["key"] for s in m["scenes"]] == ["delta", "a"]
    res = subprocess.run(run + ["diff", str(ramp_file), str(tmp_path / "nope"), "--out",
                                str(tmp_path / "o3")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "nope" in res.stderr
    assert not (tmp_path / "o3").exists()


def test_bf16_pair_numbers_through_the_code_path(tmp_path: Path) -> None:
    """bf16 on both sides: unchanged blocks take the 16-bit fast path; numbers must still equal
    float64 numpy on the decoded values, and the edited element must be found."""
    import ml_dtypes

    from weightvis.demo import write_demo_checkpoint
    from weightvis.formats.safetensors import SafetensorsReader, write_safetensors

    a_dir = write_demo_checkpoint(tmp_path / "a")
    with SafetensorsReader(a_dir / "model.safetensors") as r:
        stored = {t.name: np.array(r.stored(t.name)).reshape(t.shape) for t in r.tensors()}
    b = {k: v.copy() for k, v in stored.items()}
    name = "model.layers.2.mlp.up_proj.weight"
    b[name][9, 33] ^= np.uint16(0x0001)  # one ulp
    (tmp_path / "b").mkdir()
    write_safetensors(tmp_path / "b" / "model.safetensors",
                      {k: ("BF16", v.shape, v) for k, v in b.items()})
    d = weightvis.diff([a_dir], [tmp_path / "b"], tmp_path / "d", workers=2, svd=False).diff
    by = {p["name"]: p for p in d["pairs"]}
    assert d["summary"]["changed"] == 1 and by[name]["numbers"]["changed"] == 1
    assert by[name]["elements"][0][:2] == [9, 33]
    for nm in (name, "model.embed_tokens.weight", "model.norm.weight"):
        va = stored[nm].view(ml_dtypes.bfloat16).astype(np.float64)
        vb = b[nm].view(ml_dtypes.bfloat16).astype(np.float64)
        nb = by[nm]["numbers"]
        assert nb["compared"] == va.size
        assert nb["a_norm"] == pytest.approx(np.linalg.norm(va), rel=1e-12)
        assert nb["b_norm"] == pytest.approx(np.linalg.norm(vb), rel=1e-12)
        assert nb["delta_norm"] == pytest.approx(np.linalg.norm(vb - va), rel=1e-12, abs=0)
        assert nb["cosine"] == pytest.approx(float((va * vb).sum()) / np.linalg.norm(va)
                                             / np.linalg.norm(vb), rel=1e-12)


@pytest.mark.slow
def test_svd_summaries_in_parallel_equal_the_serial_ones(
        planted: tuple[Path, Path, BundleView]) -> None:
    from weightvis import delta as wdiff
    from weightvis.formats import open_checkpoint

    a_path, b_path, bv = planted
    reader = wdiff.DiffReader(open_checkpoint([str(a_path)]), open_checkpoint([str(b_path)]))
    try:
        spec = wdiff.DiffSpec((str(a_path),), (str(b_path),), tuple(reader.pairs))
        names = [EDITS["scaled"], EDITS["row"], EDITS["element"]]
        from weightvis import diff_analysis as analysis
        from weightvis.executors import LocalPoolExecutor

        par = analysis.svd_summaries(reader, spec, names, executor=LocalPoolExecutor(2))
        assert list(par) == names
        assert par == {n: analysis.svd_summary(reader, n) for n in names}
        # the bundle holds the same; a single changed row or element is a rank-1 delta
        pairs = {p["name"]: p for p in bv.manifest["diff"]["pairs"]}
        for n in (EDITS["row"], EDITS["element"]):
            assert pairs[n]["numbers"]["svd"] == par[n]
            assert par[n]["rank_99"] == 1
    finally:
        reader.close()
