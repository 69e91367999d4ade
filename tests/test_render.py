"""End-to-end renders checked the way an outside script would: only manifest.json and the tile
PNGs, against values read with safetensors.numpy and the manifest's written colour rule."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import weightvis
from weightvis.color import BYTE_LUT
from weightvis.kernels import hilbert_xy2d

from .conftest import BundleView, index_of, ramp_tensors, real_checkpoint, view2d


def parent_reference(kids: list[int]) -> int:
    """PARENT_RULE, written from its text in the manifest."""
    real = [k for k in kids if k != 0]
    if not real:
        return 0
    special = [k for k in real if k in (1, 2, 3)]
    if special:
        return special[0]
    u = [np.sign(k - 129) * ((abs(k - 129)) / 125) ** 2 for k in real]
    v = float(np.sign(sum(u)) * np.sqrt(np.mean(np.square(u))))
    q = int(np.floor(125 * np.sqrt(min(abs(v), 1.0)) + 0.5))
    return 129 + q if v > 0 else 129 - q if v < 0 else 129 + q


@pytest.fixture(scope="module")
def minilm_bundle(tmp_path_factory: pytest.TempPathFactory) -> BundleView:
    out = tmp_path_factory.mktemp("minilm") / "bundle"
    weightvis.render([real_checkpoint("minilm")], out, workers=2)
    return BundleView(out)


@pytest.mark.slow
def test_minilm_all_tensors_and_aligned_blocks(minilm_bundle: BundleView) -> None:
    m = minilm_bundle.manifest
    assert m["version"] == 1 and m["format"] == "weightvis-bundle"
    assert len(m["tensors"]) == 104
    scene = minilm_bundle.scene()
    blocks = {g["label"]: g["rect"] for g in scene["groups"] if g["kind"] == "block"}
    assert len(blocks) == 6
    rel = set()
    for b in range(6):
        name = f"encoder.layer.{b}.attention.self.query.weight"
        ps = [p for p in scene["placements"] if p["tensor"] == name]
        assert len(ps) == 1
        x, y, w, h = ps[0]["rect"]
        bx, by, _, _ = blocks[f"block {b}"]
        rel.add((x - bx, y - by, w, h))
        assert m["tensors"][name]["block"] == b
        assert m["tensors"][name]["slot"] == "attention.self.query.weight"
    assert len(rel) == 1 and rel.pop()[2:] == (384, 384)


@pytest.mark.slow
def test_minilm_pixels_recomputed_from_manifest(minilm_bundle: BundleView) -> None:
    ref = load_file(str(real_checkpoint("minilm")))
    m = minilm_bundle.manifest
    rng = np.random.default_rng(3)
    names = sorted(m["tensors"])
    checked = 0
    for name in names:
        v = view2d(ref[name])
        s = m["tensors"][name]["scale"]
        for _ in range(4):
            r, c = int(rng.integers(v.shape[0])), int(rng.integers(v.shape[1]))
            x, y = minilm_bundle.element_pixel(name, r, c)
            assert minilm_bundle.pixel(minilm_bundle.scene(), x, y) == index_of(v[r, c], s), \
                (name, r, c)
            checked += 1
    assert checked == 4 * 104
    # the I64 tensor renders with its values
    pid = view2d(ref["embeddings.position_ids"])
    s = m["tensors"]["embeddings.position_ids"]["scale"]
    assert m["tensors"]["embeddings.position_ids"]["dtype"] == "I64"
    for c in (0, 1, 100, 511):
        x, y = minilm_bundle.element_pixel("embeddings.position_ids", 0, c)
        assert minilm_bundle.pixel(minilm_bundle.scene(), x, y) == index_of(pid[0, c], s)


@pytest.mark.slow
def test_minilm_stats_match_float64_numpy(minilm_bundle: BundleView) -> None:
    ref = load_file(str(real_checkpoint("minilm")))
    for name in ("embeddings.word_embeddings.weight", "encoder.layer.5.output.dense.bias",
                 "embeddings.position_ids"):
        v = ref[name].astype(np.float32).astype(np.float64)
        st = minilm_bundle.manifest["tensors"][name]["stats"]
        assert st["min"] == v.min() and st["max"] == v.max()
        assert st["mean"] == pytest.approx(v.mean(), rel=1e-9, abs=1e-12)
        assert st["std"] == pytest.approx(v.std(), rel=1e-6)
        assert st["rms"] == pytest.approx(np.sqrt(np.mean(v * v)), rel=1e-9)
        assert st["zero_fraction"] == pytest.approx(np.mean(v == 0))
        assert st["nan_count"] == 0 and st["inf_count"] == 0


@pytest.mark.slow
def test_zeroed_row_is_one_full_width_line(tmp_path: Path) -> None:
    ref = load_file(str(real_checkpoint("minilm")))
    name = "encoder.layer.2.intermediate.dense.weight"
    ref[name][100, :] = 0.0
    p = tmp_path / "edited.safetensors"
    save_file(ref, str(p))
    bv = BundleView(weightvis.render([p], tmp_path / "b", workers=2).out)
    scene = bv.scene()
    (pl,) = [q for q in scene["placements"] if q["tensor"] == name]
    x, y, w, h = pl["rect"]
    assert (w, h) == (384, 1536)
    row = [bv.pixel(scene, x + i, y + 100) for i in range(-1, w + 1)]
    assert row[1:-1] == [129] * w            # the whole row is the zero colour ...
    assert row[0] != 129 and row[-1] != 129  # ... and exactly as wide as the tensor
    for other in (99, 101):
        assert sum(bv.pixel(scene, x + i, y + other) == 129 for i in range(w)) < w // 4


def test_ramp_every_pixel_and_every_parent(tmp_path: Path, ramp_file: Path) -> None:
    bv = BundleView(weightvis.render([ramp_file], tmp_path / "b", workers=1).out)
    scene = bv.scene()
    tensors = ramp_tensors()
    canvas = np.zeros((scene["height"], scene["width"]), np.int64)
    for y in range(scene["height"]):
        for x in range(scene["width"]):
            canvas[y, x] = bv.pixel(scene, x, y)
    drawn = np.zeros_like(canvas, dtype=bool)
    for pl in scene["placements"]:
        name = pl["tensor"]
        v = view2d(tensors[name])
        s = bv.manifest["tensors"][name]["scale"]
        x, y, w, h = pl["rect"]
        (r0, r1), (c0, c1) = pl["rows"], pl["cols"]
        want = [[index_of(v[r, c], s) for c in range(c0, c1)] for r in range(r0, r1)]
        np.testing.assert_array_equal(canvas[y:y + h, x:x + w], want)
        drawn[y:y + h, x:x + w] = True
    assert (canvas[~drawn] == 0).all()  # padding everywhere else
    # parents from children by the written rule, level by level, up to zoom 0
    level = np.zeros((512 * 2 ** scene["max_zoom"],) * 2, np.int64)
    level[:canvas.shape[0], :canvas.shape[1]] = canvas
    for z in range(scene["max_zoom"] - 1, -1, -1):
        n = level.shape[0] // 2
        up = np.array([[parent_reference([level[2 * i, 2 * j], level[2 * i, 2 * j + 1],
                                          level[2 * i + 1, 2 * j], level[2 * i + 1, 2 * j + 1]])
                        for j in range(n)] for i in range(n)])
        for ty in range(n // 512):
            for tx in range(n // 512):
                tile = bv.tile(scene, z, tx, ty)
                want = up[ty * 512:(ty + 1) * 512, tx * 512:(tx + 1) * 512]
                if tile is None:
                    assert (want == 0).all()
                else:
                    np.testing.assert_array_equal(tile, want)
        level = up


def test_nan_inf_and_stats(tmp_path: Path) -> None:
    w = np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8)
    w[0, 0], w[0, 1], w[0, 2], w[1, 1] = np.nan, np.inf, -np.inf, 0.0
    p = tmp_path / "x.safetensors"
    save_file({"w": w}, str(p))
    bv = BundleView(weightvis.render([p], tmp_path / "b", workers=1).out)
    sc = bv.scene()
    got = [bv.pixel(sc, *bv.element_pixel("w", 0, c)) for c in range(3)]
    assert got == [1, 2, 3]
    st = bv.manifest["tensors"]["w"]["stats"]
    fin = w[np.isfinite(w)].astype(np.float64)
    assert st["nan_count"] == 1 and st["inf_count"] == 2
    assert st["min"] == fin.min() and st["max"] == fin.max()
    assert st["zero_fraction"] == pytest.approx(1 / 64)


def test_workers_give_identical_tiles(tmp_path: Path) -> None:
    from weightvis.demo import write_demo_checkpoint

    ck = write_demo_checkpoint(tmp_path / "ck")
    a = weightvis.render([ck], tmp_path / "a", workers=1).out
    b = weightvis.render([ck], tmp_path / "b", workers=2).out
    fa = sorted(f.relative_to(a) for f in (a / "tiles").rglob("*.png"))
    fb = sorted(f.relative_to(b) for f in (b / "tiles").rglob("*.png"))
    assert fa == fb and len(fa) > 50
    for f in fa:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (a, b))
    assert ma == mb


def test_hilbert_elements(tmp_path: Path, ramp_file: Path) -> None:
    bv = BundleView(weightvis.render([ramp_file], tmp_path / "h", layout="hilbert",
                                     workers=2).out)
    sc = bv.scene()
    assert sc["layout"] == "hilbert" and sc["placements"] == []
    curve = sc["curve"]
    n = 1 << curve["order"]
    tensors = ramp_tensors()
    total = 0
    for seg in curve["segments"]:
        v = view2d(tensors[seg["tensor"]]).reshape(-1)
        s = bv.manifest["tensors"][seg["tensor"]]["scale"]
        assert seg["length"] == v.size
        for i in range(v.size):
            # locate pixel of curve index start+i by brute-force inversion of xy2d in small n
            h = seg["start"] + i
            total += 1
            x, y = _d2xy_by_search(n, h)
            assert bv.pixel(sc, x, y) == index_of(v[i], s)
    assert total == sum(t.size for t in tensors.values())


_XY_CACHE: dict[int, dict[int, tuple[int, int]]] = {}


def _d2xy_by_search(n: int, h: int) -> tuple[int, int]:
    if n not in _XY_CACHE:
        table = {}
        for y in range(min(n, 64)):  # the ramp model fits in the first few rows of the curve
            for x in range(min(n, 64)):
                table[hilbert_xy2d(n, x, y)] = (x, y)
        _XY_CACHE[n] = table
    return _XY_CACHE[n][h]


def test_hilbert_bytes(tmp_path: Path, ramp_file: Path) -> None:
    bv = BundleView(weightvis.render([ramp_file], tmp_path / "hb", layout="hilbert",
                                     hilbert_unit="byte", workers=1).out)
    sc = bv.scene()
    (seg,) = sc["curve"]["segments"]
    raw = ramp_file.read_bytes()
    assert seg["file"] == ramp_file.name and seg["length"] == len(raw)
    lut = bv.manifest["colormaps"]["bytes"]["byte_to_index"]
    assert lut == BYTE_LUT.tolist()
    n = 1 << sc["curve"]["order"]
    table = {hilbert_xy2d(n, x, y): (x, y) for y in range(n) for x in range(n)}
    for h in range(0, len(raw), 7):
        x, y = table[h]
        assert bv.pixel(sc, x, y) == lut[raw[h]]
    assert len(set(lut[1:])) > 100 and lut[0] != lut[0xFF]


def test_global_scale(tmp_path: Path, ramp_file: Path) -> None:
    m = weightvis.render([ramp_file], tmp_path / "g", scale="global", workers=1).manifest
    scales = {t["scale"] for t in m["tensors"].values()}
    assert len(scales) == 1 and m["scale"]["mode"] == "global"
    # tensor k has values up to k+1: the weighted 99.9th percentile lies in the largest tensors
    assert 9.0 < scales.pop() <= 11.0
    per = weightvis.render([ramp_file], tmp_path / "t", workers=1).manifest
    assert len({t["scale"] for t in per["tensors"].values()}) > 5


def test_manifest_inlined_identically(tmp_path: Path) -> None:
    hostile = "</script><img src=x onerror=alert(1)>"
    p = tmp_path / "x.safetensors"
    save_file({hostile: np.ones((3, 3), np.float32), "ok": np.zeros(4, np.float32)}, str(p))
    out = weightvis.render([p], tmp_path / "b", workers=1).out
    html = (out / "index.html").read_text()
    m = re.search(r'<script type="application/json" id="weightvis-manifest">(.*?)</script>',
                  html, re.S)
    assert m is not None
    assert json.loads(m.group(1)) == json.loads((out / "manifest.json").read_text())
    assert hostile not in html  # never raw markup
    assert "<img" not in html


def test_avif_is_refused_with_the_reason(tmp_path: Path, ramp_file: Path) -> None:
    """AVIF tiles were removed (README "Tile format"): asking for them says why, writes
    nothing; the default still writes palette PNG tiles."""
    from PIL import Image

    from weightvis.options import TILE_FORMAT_GONE

    for call in (lambda: weightvis.render([ramp_file], tmp_path / "a", workers=1,
                                          tile_format="avif"),  # type: ignore[arg-type]
                 lambda: weightvis.render_diff([ramp_file], [ramp_file], tmp_path / "a",
                                               workers=1,
                                               tile_format="avif")):  # type: ignore[arg-type]
        with pytest.raises(ValueError) as e:
            call()
        assert str(e.value) == TILE_FORMAT_GONE and "removed" in str(e.value)
        assert not (tmp_path / "a").exists()
    out = weightvis.render([ramp_file], tmp_path / "b", tile_format="png", workers=1).out
    m = json.loads((out / "manifest.json").read_text())
    assert m["tile_format"] == "png" and m["scenes"][0]["tiles"].endswith(".png")
    files = [p for p in (out / "tiles").rglob("*") if p.is_file()]
    assert files and {p.suffix for p in files} <= {".png", ".js"}
    with Image.open(next(p for p in files if p.suffix == ".png")) as im:
        assert im.format == "PNG" and im.mode == "P"


def test_regen_html(tmp_path: Path, ramp_file: Path) -> None:
    out = weightvis.render([ramp_file], tmp_path / "b", workers=1).out
    before = (out / "index.html").read_text()
    (out / "index.html").write_text("broken")
    (out / "assets" / "js" / "app.js").unlink()
    (out / "assets" / "viewer.js").write_text("// the one script of older bundles")
    weightvis.regen_html(out)
    assert (out / "index.html").read_text() == before
    assert (out / "assets" / "js" / "app.js").is_file()
    assert not (out / "assets" / "viewer.js").exists()  # the page no longer uses it


def test_demo_has_the_planted_features(tmp_path: Path) -> None:
    from weightvis.demo import DEAD_HEAD, OUTLIER_CHANNEL, QUANTIZED_LAYER, render_demo

    bv = BundleView(render_demo(tmp_path / "d", workers=2).out)
    m = bv.manifest
    sc = bv.scene()
    assert "lm_head.weight" not in m["tensors"]  # tied embeddings
    layer, head = DEAD_HEAD
    q = f"model.layers.{layer}.self_attn.q_proj.weight"
    for r in range(head * 64, head * 64 + 64, 9):
        assert {bv.pixel(sc, *bv.element_pixel(q, r, c)) for c in range(0, 512, 37)} == {129}
    other = f"model.layers.{layer}.self_attn.q_proj.weight"
    assert len({bv.pixel(sc, *bv.element_pixel(other, 0, c)) for c in range(64)}) > 10

    def brightness(name: str, col: int) -> float:
        return float(np.mean([abs(bv.pixel(sc, *bv.element_pixel(name, r, col)) - 129)
                              for r in range(0, 512, 5)]))

    g = "model.layers.4.mlp.gate_proj.weight"
    assert brightness(g, OUTLIER_CHANNEL) > 2 * brightness(g, OUTLIER_CHANNEL + 1)
    qz = f"model.layers.{QUANTIZED_LAYER}.mlp.up_proj.weight"
    levels = {bv.pixel(sc, *bv.element_pixel(qz, 7, c)) for c in range(512)}
    assert len(levels) <= 7
    normal = "model.layers.4.mlp.up_proj.weight"
    assert len({bv.pixel(sc, *bv.element_pixel(normal, 7, c)) for c in range(512)}) > 30


def test_tile_index_lists_exactly_the_tiles_written(tmp_path: Path) -> None:
    import base64

    from weightvis.demo import write_demo_checkpoint

    out = weightvis.render([write_demo_checkpoint(tmp_path / "ck")], tmp_path / "b",
                           workers=2).out
    m = json.loads((out / "manifest.json").read_text())
    for sc in m["scenes"]:
        listed = set()
        for lv in sc["tile_index"]:
            bits = np.frombuffer(base64.b64decode(lv["bitmap"]), np.uint8)
            present = np.unpackbits(bits, bitorder="little")[: lv["rows"] * lv["cols"]]
            for i in np.flatnonzero(present):
                listed.add((lv["z"], int(i % lv["cols"]), int(i // lv["cols"])))
        on_disk = {(int(p.parts[-3]), int(p.parts[-2]), int(p.stem))
                   for p in (out / "tiles" / sc["key"]).rglob("*.png")}
        assert listed == on_disk
        assert {z for z, _, _ in on_disk} == set(range(sc["max_zoom"] + 1))
        # all-padding tiles are not written: the grid at max zoom has holes in this layout
        top = sc["tile_index"][-1]
        assert len([t for t in on_disk if t[0] == sc["max_zoom"]]) < top["cols"] * top["rows"]


@pytest.mark.parametrize("dtype", ["BF16", "F16"])
def test_16bit_tensors_every_pixel_and_stats(tmp_path: Path, dtype: str) -> None:
    """Every pixel of a 16-bit checkpoint (all 65,536 codes, NaN/Inf included) equals the rule
    applied to the decoded value, and the statistics equal float64 numpy on the decoded values."""
    import ml_dtypes

    from weightvis.formats.safetensors import write_safetensors

    codes = np.arange(1 << 16, dtype=np.uint16).reshape(256, 256)
    rng = np.random.default_rng(9)
    shuffled = rng.permutation(codes.reshape(-1)).reshape(128, 512)
    p = tmp_path / "c.safetensors"
    write_safetensors(p, {"model.layers.0.all": (dtype, (256, 256), codes),
                          "model.layers.1.all": (dtype, (128, 512), shuffled)})
    mdt = ml_dtypes.bfloat16 if dtype == "BF16" else np.float16
    bv = BundleView(weightvis.render([p], tmp_path / "b", workers=2).out)
    sc = bv.scene()
    for name, arr in (("model.layers.0.all", codes), ("model.layers.1.all", shuffled)):
        vals = arr.view(mdt).astype(np.float32)
        s = bv.manifest["tensors"][name]["scale"]
        (pl,) = [q for q in sc["placements"] if q["tensor"] == name]
        x, y, w, h = pl["rect"]
        got = np.array([[bv.pixel(sc, x + i, y + j) for i in range(w)] for j in range(h)])
        want = np.vectorize(lambda v, s=s: index_of(v, s))(vals)
        np.testing.assert_array_equal(got, want)
        st = bv.manifest["tensors"][name]["stats"]
        fin = vals[np.isfinite(vals)].astype(np.float64)
        assert st["min"] == fin.min() and st["max"] == fin.max()
        assert st["nan_count"] == int(np.isnan(vals).sum())
        assert st["inf_count"] == int(np.isinf(vals).sum())
        assert st["zero_fraction"] == pytest.approx(np.mean(vals == 0))
        # the codes span 1e-40..3e38: sums cancel only up to rounding of the largest terms
        assert st["mean"] == pytest.approx(fin.mean(), rel=1e-9, abs=1e-12 * np.abs(fin).max())
        assert st["rms"] == pytest.approx(np.sqrt(np.mean(fin * fin)), rel=1e-9)


def test_scale_helper_fills_the_shared_table_like_the_value_pass(tmp_path: Path) -> None:
    import multiprocessing as mp
    import pickle

    from weightvis.demo import write_demo_checkpoint
    from weightvis.formats import open_checkpoint
    from weightvis.tiling import CheckpointSpec
    from weightvis.values import SharedScales, start_scale_helper, tensor_scale

    if "fork" not in mp.get_all_start_methods():
        pytest.skip("the helper needs fork")
    ck = write_demo_checkpoint(tmp_path / "ck")
    reader = open_checkpoint([str(ck)])
    names = [t.name for t in reader.tensors()]
    table = SharedScales(names)
    table.put(names[0], 123.0)  # already known: the helper leaves it
    helper = start_scale_helper(CheckpointSpec((str(ck),)), names, table)
    helper.join()
    assert helper.exitcode == 0
    assert table.get(names[0]) == 123.0
    for n in names[1:]:  # written by the forked process, read here
        assert table.get(n) == tensor_scale(reader, n)
    copy = pickle.loads(pickle.dumps(table))  # a non-fork worker gets a snapshot
    assert [copy.get(n) for n in names] == [table.get(n) for n in names]
    assert SharedScales(["x"]).get("x") is None and table.get("not a tensor") is None
    # every known scale at once, in the table's order (render_scene takes them so)
    partial = SharedScales(names)
    for n in names[::2]:
        partial.put(n, table.values[table.index[n]])
    assert partial.known() == {n: v for n in names if (v := partial.get(n)) is not None}
    assert list(partial.known()) == names[::2] and copy.known() == table.known()
    reader.close()


def test_failed_render_stops_its_scale_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               ) -> None:
    import multiprocessing as mp
    import signal
    import time

    from weightvis import pyramid, values
    from weightvis.demo import write_demo_checkpoint

    if "fork" not in mp.get_all_start_methods():
        pytest.skip("the helper needs fork")
    ck = write_demo_checkpoint(tmp_path / "ck")
    helpers: list[mp.process.BaseProcess] = []

    def slow_helper(*args: object) -> None:  # runs in the forked helper
        time.sleep(60)

    def broken(*args: object, **kwargs: object) -> None:
        helpers.extend(p for p in mp.active_children() if p.name == "weightvis-scales")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(values, "_fill_scales", slow_helper)
    monkeypatch.setattr(pyramid, "render_scene", broken)
    t0 = time.monotonic()
    with pytest.raises(OSError, match="No space"):
        weightvis.render([ck], tmp_path / "out", workers=2)
    assert time.monotonic() - t0 < 30  # not waiting for the helper
    # killed: a helper ignores SIGTERM (the main process's to handle); the demo's tiny tensors
    # have one of their own, started while the plan was made (executors.start_scales)
    assert len(helpers) == 2 and all(h.exitcode == -signal.SIGKILL for h in helpers)
    assert not (tmp_path / "out").exists()  # and nothing half-written stays
    assert not list(tmp_path.glob(".out.weightvis-*"))


def test_small_scales_start_with_the_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    """The tiny tensors' scales are computed by a helper started while the plan is made
    (small_only: it leaves the others out), the scene's helper computes only the others, and
    the bundle is the one the inline executor writes; a plan that fails stops that helper."""
    import multiprocessing as mp
    import time

    from weightvis import values
    from weightvis.executors import InlineExecutor, LocalPoolExecutor
    from weightvis.formats import open_checkpoint
    from weightvis.tiling import CheckpointSpec

    if "fork" not in mp.get_all_start_methods():
        pytest.skip("the helper needs fork")
    rng = np.random.default_rng(3)
    big = {"model.embed_tokens.weight": (300, 64), "lm_head.weight": (64, 300)}
    tensors = {n: rng.standard_normal(s).astype(np.float16) for n, s in big.items()}
    tensors.update({f"model.layers.0.mlp.experts.{e}.up_proj.weight":
                    rng.standard_normal((8, 16)).astype(np.float16) for e in range(40)})
    ck = tmp_path / "m.safetensors"
    save_file(tensors, str(ck))
    small = sorted(set(tensors) - set(big))

    reader = open_checkpoint([str(ck)])
    table = values.SharedScales(list(tensors))
    values.start_scale_helper(CheckpointSpec((str(ck),)), list(tensors), table,
                              small_only=True).join()
    assert sorted(n for n in tensors if table.get(n) is not None) == small
    assert all(table.get(n) == values.tensor_scale(reader, n) for n in small)
    reader.close()

    calls: list[tuple[list[str], bool]] = []
    real = values.start_scale_helper

    def spy(spec: object, names: list[str], shared: object, small_only: bool = False) -> object:
        calls.append((sorted(names), small_only))
        return real(spec, names, shared, small_only)

    monkeypatch.setattr(values, "start_scale_helper", spy)
    pooled = weightvis.render([ck], tmp_path / "pool", executor=LocalPoolExecutor(2))
    assert calls == [(small, True), (sorted(big), False)]
    inline = weightvis.render([ck], tmp_path / "inline", executor=InlineExecutor())
    for f in ("manifest.json", "index.html"):
        assert (pooled.out / f).read_bytes() == (inline.out / f).read_bytes()
    tiles = sorted(p.relative_to(pooled.out) for p in (pooled.out / "tiles").rglob("*.*"))
    assert tiles and all((pooled.out / p).read_bytes() == (inline.out / p).read_bytes()
                         for p in tiles)

    from weightvis import scenes

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError(5, "injected")

    monkeypatch.setattr(scenes, "arch_layout", broken)  # after the helper started
    monkeypatch.setattr(values, "_fill_scales", lambda *a, **k: time.sleep(60))
    with pytest.raises(OSError, match="injected"):
        weightvis.render([ck], tmp_path / "failed", executor=LocalPoolExecutor(2))
    assert calls[2:] == [(small, True)]  # started, then stopped with the failed plan
    assert not [p for p in mp.active_children() if p.name == "weightvis-scales"]
