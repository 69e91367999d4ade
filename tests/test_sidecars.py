"""Value sidecars (weightvis/sidecars.py; README "Values under the cursor"): each max-zoom tile's
script holds the tile's palette indices and, with values, the stored value of every element.
Decoded here with zlib and base64 only, as the README describes them, and compared with the
checkpoints read by safetensors.numpy / gguf.quants and with the PNG tiles themselves."""

from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import weightvis
from weightvis.cli import main
from weightvis.executors import InlineExecutor, LocalPoolExecutor
from weightvis.options import VALUES_LIMIT_MB, sidecar_mode, value_width
from weightvis.sidecars import narrowest

from .conftest import view2d

_WIDTH = {"bf16": 2, "f16": 2, "f32": 4, "u8": 1}


def _rows(stream: bytes, size: int) -> np.ndarray:
    """The rows of a zlib stream of filter-0 rows, without the filter bytes."""
    raw = np.frombuffer(zlib.decompress(stream), np.uint8).reshape(-1, size + 1)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:]


def _side(planes: np.ndarray, dtype: str, size: int, side: int) -> np.ndarray:
    """Bit patterns (unsigned) of one side from byte planes."""
    k = _WIDTH[dtype]
    p = planes[side * k * size:(side + 1) * k * size].reshape(k, size, size)
    le = np.ascontiguousarray(p.transpose(1, 2, 0))
    return le.view({1: "u1", 2: "<u2", 4: "<u4"}[k]).reshape(size, size)


def _floats(bits: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bf16":
        return (bits.astype(np.uint32) << 16).view(np.float32)
    if dtype == "f16":
        return bits.view(np.float16).astype(np.float32)
    if dtype == "f32":
        return bits.view(np.float32)
    return bits


def read_sidecar(path: Path) -> dict[str, Any]:
    """{doc, index, dtype, a, b} of a sidecar script."""
    text = path.read_text("ascii")
    assert text.startswith("WV.sidecar(") and text.endswith(");\n")
    doc = json.loads(text[len("WV.sidecar("):-3])
    size = doc["size"]
    out: dict[str, Any] = {"doc": doc, "index": _rows(base64.b64decode(doc["index"]), size),
                           "dtype": None, "a": None, "b": None}
    vals = doc.get("values")
    if vals:
        planes = _rows(base64.b64decode(vals["data"]), size)
        assert planes.shape[0] == _WIDTH[vals["dtype"]] * size * vals["sides"]
        a = _side(planes, vals["dtype"], size, 0)
        out["dtype"], out["a"] = vals["dtype"], _floats(a, vals["dtype"])
        if vals["sides"] == 2:
            out["b"] = _floats(_side(planes, vals["dtype"], size, 1) ^ a, vals["dtype"])
    return out


def sidecars_of(bundle: Path, scene: dict[str, Any]) -> dict[tuple[int, int], dict[str, Any]]:
    z = scene["max_zoom"]
    root = bundle / "tiles" / scene["key"] / str(z)
    return {(int(p.parent.name), int(p.stem)): read_sidecar(p) for p in root.glob("*/*.js")}


def check_scene(bundle: Path, scene: dict[str, Any], tensors: dict[str, np.ndarray],
                values: bool) -> int:
    """Every placement's elements: index = the PNG tile's, values = the checkpoint's (bits)."""
    ts = 512
    side = sidecars_of(bundle, scene)
    z = scene["max_zoom"]
    pngs = {k: np.asarray(Image.open(bundle / scene["tiles"].format(z=z, x=k[0], y=k[1])))
            for k in side}
    assert set(side) == {tuple(map(int, (p.parent.name, p.stem))) for p in
                         (bundle / "tiles" / scene["key"] / str(z)).glob("*/*.png")}
    for k, sc in side.items():
        assert np.array_equal(sc["index"], pngs[k]), k
        assert (sc["a"] is not None) == values
    checked = 0
    for p in scene["placements"]:
        v = view2d(tensors[p["tensor"]])
        x, y, w, h = p["rect"]
        r0, c0 = p["rows"][0], p["cols"][0]
        for cy in range(y, y + h):
            for t_x in range(x // ts, (x + w - 1) // ts + 1):
                cx0, cx1 = max(x, t_x * ts), min(x + w, (t_x + 1) * ts)
                sc = side[(t_x, cy // ts)]
                if not values:
                    continue
                got = sc["a"][cy % ts, cx0 % ts:(cx1 - 1) % ts + 1]
                want = v[r0 + cy - y, c0 + cx0 - x:c0 + cx1 - x].astype(np.float32)
                assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), p["tensor"]
                checked += got.size
    return checked


def _mixed(path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """BF16, F16, F32, I8 tensors with NaN, ±Inf, -0 and subnormals, written by hand (numpy has
    no bfloat16: BF16 is its raw codes) as the safetensors format describes."""
    rng = np.random.default_rng(4)
    f32 = rng.standard_normal((70, 600)).astype(np.float32) * 0.05
    f32[3, :4] = [np.nan, np.inf, -np.inf, -0.0]
    f32[4, 5] = np.float32(1e-40)
    f16 = (rng.standard_normal((40, 48)) * 0.1).astype(np.float16)
    i8 = rng.integers(-128, 128, (9, 33), dtype=np.int8)
    bf = (rng.standard_normal((300, 200)).astype(np.float32) * 0.02)
    bf_codes = (bf.view(np.uint32) >> 16).astype(np.uint16)
    stored = {"model.embed_tokens.weight": ("BF16", bf_codes),
              "model.layers.0.self_attn.q_proj.weight": ("F32", f32),
              "model.layers.0.mlp.up_proj.weight": ("F16", f16), "model.norm.weight": ("I8", i8)}
    header, blobs, at = {}, [], 0
    for name, (dtype, arr) in stored.items():
        data = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape),
                        "data_offsets": [at, at + len(data)]}
        blobs.append(data)
        at += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + b"".join(blobs))
    truth = {name: arr.astype(np.float32) for name, (_, arr) in stored.items()}
    truth["model.embed_tokens.weight"] = (bf_codes.astype(np.uint32) << 16).view(np.float32)
    return path, truth


def test_narrowest_keeps_every_bit() -> None:
    rng = np.random.default_rng(0)
    specials = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-40, 65504.0, 7e4], np.float32)
    bf = (rng.standard_normal(1000).astype(np.float32).view(np.uint32) & 0xFFFF0000).view(
        np.float32)
    f16 = rng.standard_normal(1000).astype(np.float16).astype(np.float32)
    f32 = rng.standard_normal(1000).astype(np.float32)
    for vals, want in ((bf, "bf16"), (f16, "f16"), (f32, "f32"),
                       (np.concatenate([f16, specials[:5]]), "f16"),
                       (np.concatenate([f16, specials]), "f32")):
        dtype, stored = narrowest(vals)
        assert dtype == want
        back = _floats(stored.view({"bf16": np.uint16, "f16": np.uint16,
                                    "f32": np.uint32}[dtype]), dtype)
        assert np.array_equal(back.view(np.uint32), vals.view(np.uint32))


def test_values_and_indices_of_every_element(tmp_path: Path) -> None:
    src, truth = _mixed(tmp_path / "mixed.safetensors")
    res = weightvis.render([src], tmp_path / "v", workers=1, values="values")
    scene = res.manifest["scenes"][0]
    assert scene["sidecars"] == {"tiles": "tiles/main/{z}/{x}/{y}.js",
                                 "zoom": scene["max_zoom"], "values": True}
    n = check_scene(tmp_path / "v", scene, truth, values=True)
    assert n == sum(t.size for t in truth.values())
    dtypes = {sc["dtype"] for sc in sidecars_of(tmp_path / "v", scene).values()}
    assert "bf16" in dtypes and "f32" in dtypes  # the bf16 embedding's tiles stay 2 bytes


def test_index_only_and_none_leave_tiles_and_manifest_unchanged(tmp_path: Path) -> None:
    src, truth = _mixed(tmp_path / "mixed.safetensors")
    got = {m: weightvis.render([src], tmp_path / m, workers=2, values=m)  # type: ignore[arg-type]
           for m in ("none", "index", "values")}
    assert not list((tmp_path / "none" / "tiles").rglob("*.js"))
    assert "sidecars" not in got["none"].manifest["scenes"][0]
    assert got["index"].manifest["scenes"][0]["sidecars"]["values"] is False
    check_scene(tmp_path / "index", got["index"].manifest["scenes"][0], truth, values=False)

    def pngs(m: str) -> dict[str, bytes]:
        return {str(p.relative_to(tmp_path / m)): p.read_bytes()
                for p in sorted((tmp_path / m / "tiles").rglob("*.png"))}

    def bare(m: str) -> dict[str, Any]:
        doc = json.loads((tmp_path / m / "manifest.json").read_text())
        for s in doc["scenes"]:
            s.pop("sidecars", None)
        return doc

    assert pngs("none") == pngs("index") == pngs("values")
    assert bare("none") == bare("index") == bare("values")  # stats too: the same numbers


def test_byte_identical_whatever_the_executor(tmp_path: Path) -> None:
    src, _ = _mixed(tmp_path / "mixed.safetensors")
    weightvis.render([src], tmp_path / "i", executor=InlineExecutor(), values="values")
    weightvis.render([src], tmp_path / "p", executor=LocalPoolExecutor(2), values="values")
    files = sorted(p.relative_to(tmp_path / "i") for p in (tmp_path / "i" / "tiles").rglob("*.js"))
    assert files
    for f in files:
        assert (tmp_path / "i" / f).read_bytes() == (tmp_path / "p" / f).read_bytes(), f


def test_quantized_gguf_values_are_the_float32_decode(tmp_path: Path) -> None:
    from .gguf_fixtures import stored_tensor, write_gguf

    rng = np.random.default_rng(5)
    tensors, truth = {}, {}
    for name, qt, shape in (("blk.0.attn_q.weight", "Q4_1", (64, 256)),
                            ("blk.0.ffn_down.weight", "Q4_K", (32, 512)),
                            ("token_embd.weight", "Q8_0", (96, 64))):
        stored, ref = stored_tensor(qt, shape, rng)
        tensors[name] = (qt, stored)
        truth[name] = ref
    path = write_gguf(tmp_path / "q.gguf", tensors)
    res = weightvis.render([path], tmp_path / "b", workers=1)  # small: values by default
    scene = res.manifest["scenes"][0]
    assert scene["sidecars"]["values"] is True
    assert check_scene(tmp_path / "b", scene, truth, values=True) == sum(
        t.size for t in truth.values())


def test_hilbert_scenes(tmp_path: Path) -> None:
    src, truth = _mixed(tmp_path / "mixed.safetensors")
    res = weightvis.render([src], tmp_path / "h", layout="hilbert", workers=2, values="values")
    scene = res.manifest["scenes"][0]
    side = sidecars_of(tmp_path / "h", scene)
    n = 1 << scene["curve"]["order"]
    from .conftest_viewer import _d2xy

    rng = np.random.default_rng(1)
    for seg in scene["curve"]["segments"]:
        v = view2d(truth[seg["tensor"]]).reshape(-1)
        for i in rng.integers(0, seg["length"], 40).tolist():
            c_x, c_y = _d2xy(n, seg["start"] + i)
            sc = side[(c_x // 512, c_y // 512)]
            got = sc["a"][c_y % 512, c_x % 512]
            assert got.view(np.uint32) == v[i].view(np.uint32), (seg["tensor"], i)
    res = weightvis.render([src], tmp_path / "y", layout="hilbert", hilbert_unit="byte",
                           workers=1)  # bytes: always the bytes (1 byte each)
    scene = res.manifest["scenes"][0]
    assert scene["sidecars"]["values"] is True
    data = src.read_bytes()
    side = sidecars_of(tmp_path / "y", scene)
    for h in rng.integers(0, len(data), 200).tolist():
        c_x, c_y = _d2xy(1 << scene["curve"]["order"], h)
        sc = side[(c_x // 512, c_y // 512)]
        assert sc["dtype"] == "u8" and sc["a"][c_y % 512, c_x % 512] == data[h]


def test_diff_sidecars_hold_a_and_b(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    src, truth = _mixed(tmp_path / "a.safetensors")
    rng = np.random.default_rng(2)
    b = {k: v.copy() for k, v in truth.items() if k != "model.embed_tokens.weight"}
    q = "model.layers.0.self_attn.q_proj.weight"
    b[q] = b[q] + rng.standard_normal(b[q].shape).astype(np.float32) * 1e-3  # all changed
    b["model.norm.weight"] = b["model.norm.weight"] * 2
    save_file(b, str(tmp_path / "b.safetensors"))
    b["model.layers.0.mlp.up_proj.weight"] = truth["model.layers.0.mlp.up_proj.weight"]
    res = weightvis.render_diff([src], [tmp_path / "b.safetensors"], tmp_path / "d", workers=2,
                                scenes=("delta", "a", "b"))
    delta = next(s for s in res.manifest["scenes"] if s["key"] == "delta")
    assert delta["sidecars"]["values"] is True
    side = sidecars_of(tmp_path / "d", delta)
    checked = 0
    for p in delta["placements"]:
        name = p["tensor"]
        if name not in b:
            continue
        x, y, w, h = p["rect"]
        (r0, _), (c0, _) = p["rows"], p["cols"]
        for r, c in rng.integers(0, [h, w], (50, 2)).tolist():
            sc = side[((x + c) // 512, (y + r) // 512)]
            pa = sc["a"][(y + r) % 512, (x + c) % 512]
            pb = sc["b"][(y + r) % 512, (x + c) % 512]
            want_a, want_b = view2d(truth[name])[r0 + r, c0 + c], view2d(b[name])[r0 + r, c0 + c]
            assert pa.view(np.uint32) == np.float32(want_a).view(np.uint32), name
            assert pb.view(np.uint32) == np.float32(want_b).view(np.uint32), name
            checked += 1
    assert checked >= 100
    for key, t in (("a", truth), ("b", b)):
        scene = next(s for s in res.manifest["scenes"] if s["key"] == key)
        check_scene(tmp_path / "d", scene, {n: v for n, v in t.items()}, values=True)


def test_auto_threshold_and_cli_flags(tmp_path: Path) -> None:
    assert value_width("BF16") == 2 and value_width("F32") == 4 and value_width("Q4_K") == 4
    assert sidecar_mode("auto", int(VALUES_LIMIT_MB * 1e6), VALUES_LIMIT_MB) == "values"
    assert sidecar_mode("auto", int(VALUES_LIMIT_MB * 1e6) + 1, VALUES_LIMIT_MB) == "index"
    assert sidecar_mode("none", 0, VALUES_LIMIT_MB) == "none"
    src, _ = _mixed(tmp_path / "mixed.safetensors")
    nbytes = 70 * 600 * 4 + 40 * 48 * 2 + 9 * 33 * 2 + 300 * 200 * 2
    for words, want in (([], True), (["--values-limit", f"{nbytes / 1e6:.6f}"], True),
                        (["--values-limit", f"{(nbytes - 1) / 1e6:.6f}"], False),
                        (["--no-values"], False), (["--values", "--values-limit", "0"], True),
                        (["--no-sidecars"], None)):
        out = tmp_path / f"o{len(list(tmp_path.iterdir()))}"
        assert main([str(src), "--out", str(out), "-q", "--workers", "1", *words]) == 0
        scene = json.loads((out / "manifest.json").read_text())["scenes"][0]
        got = scene["sidecars"]["values"] if "sidecars" in scene else None
        assert got is want, words


def test_bad_values_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, _ = _mixed(tmp_path / "mixed.safetensors")
    with pytest.raises(SystemExit):
        main([str(src), "--out", str(tmp_path / "x"), "--values", "--no-values"])
    with pytest.raises(SystemExit):
        main([str(src), "--out", str(tmp_path / "x"), "--values-limit", "-1"])
    with pytest.raises(ValueError):
        weightvis.render([src], tmp_path / "x", values="some")  # type: ignore[arg-type]


def _read_by_hand(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file (F32, F16, BF16) as float32, from its header."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        data = raw[8 + n + a:8 + n + b]
        if t["dtype"] == "BF16":
            v = (np.frombuffer(data, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            v = np.frombuffer(data, {"F16": "<f2", "F32": "<f4"}[t["dtype"]]).astype(np.float32)
        out[name] = v.reshape(t["shape"])
    return out


def test_values_of_many_small_blocks(tmp_path: Path) -> None:
    """Thousands of tiny BF16 / F16 tensors (the batched small-block path)."""
    from .test_small_blocks import _many_tensors

    ckpt = tmp_path / "many.safetensors"
    _many_tensors(ckpt)
    truth = _read_by_hand(ckpt)
    res = weightvis.render([ckpt], tmp_path / "b", executor=InlineExecutor(), values="values")
    scene = res.manifest["scenes"][0]
    assert check_scene(tmp_path / "b", scene, truth, values=True) == sum(
        t.size for t in truth.values())
