"""The MoE scenes of a bundle (weightvis.moe.scenes, moe.document, grids): the summary,
relative and similarity scenes are tiles + manifest like every scene, moe.json has issue 12
item 8's keys and equals the manifest's ``moe``, every cell's pixel follows the manifest's rule,
big matrices go to sidecars, bundles are identical whatever the executor, routing panels come
from the probe's dict, and the CLI's ``moe`` / ``--moe`` / ``--no-moe`` / ``--probe*``."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import weightvis
from weightvis.cli import main
from weightvis.executors import InlineExecutor, LocalPoolExecutor
from weightvis.grids import (
    S_DEAD,
    S_DEAD_LINE,
    S_DENSE,
    S_DENSE_GAP,
    S_FIRST,
    S_LEVELS,
    sequential_index,
    sequential_palette,
)
from weightvis.moe.document import SIDECAR_ENCODING, read_sidecar
from weightvis.options import MoEOptions

from .moe_fakes import Planted, write_moe_checkpoint

ITEM_8_KEYS = {"layers", "dense_layers", "experts", "shared_experts", "top_k", "roles", "stats",
               "router", "similarity"}
MOE_SCENES = ["moe-summary", "moe-relative", "moe-similarity"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_moe_checkpoint(tmp_path_factory.mktemp("moe") / "tiny")


def render(ckpt: Path, out: Path, **kw: Any) -> Any:
    kw.setdefault("executor", InlineExecutor())
    return weightvis.render([ckpt], out, **kw)


def test_bundle_has_the_moe_scenes_and_moe_json(ckpt: Path, tmp_path: Path) -> None:
    res = render(ckpt, tmp_path / "b")
    m = res.manifest
    assert [s["key"] for s in m["scenes"]] == ["main", *MOE_SCENES]
    doc = json.loads((res.out / "moe.json").read_text("utf-8"))
    assert doc == m["moe"] == json.loads((res.out / "manifest.json").read_text())["moe"]
    assert set(doc) == ITEM_8_KEYS          # not probed: no "routing"
    assert doc["layers"] == [1, 2, 3] and doc["dense_layers"] == [0]
    assert (doc["experts"], doc["shared_experts"], doc["top_k"]) == (4, 1, 2)
    assert doc["roles"] == ["gate", "up", "down"]
    assert set(doc["stats"]) == {"rms", "mean_abs", "max_over_rms", "zero_fraction",
                                 "stable_rank"}
    for by_role in doc["stats"].values():
        assert set(by_role) == {"gate", "up", "down"}
        assert all(len(rows) == 3 and all(len(r) == 4 for r in rows) for rows in
                   by_role.values())
    assert set(doc["router"]) == {"row_norm", "bias"} and len(doc["router"]["bias"]) == 3
    assert set(doc["similarity"]) == {"cka", "cosine"}
    layer, dead = Planted.dead
    for metric in ("cka", "cosine"):
        for role in doc["roles"]:
            mats = doc["similarity"][metric][role]
            assert set(mats) == {"1", "2", "3"}
            m_dead = mats[str(layer)]
            assert m_dead[dead] == [None] * 4 and all(r[dead] is None for r in m_dead)
    # every number is a JSON number or null (never NaN)
    assert "NaN" not in (res.out / "moe.json").read_text()
    # the router numbers, by definition
    from safetensors.numpy import load_file

    t = load_file(str(ckpt / "model.safetensors"))
    r = t["model.layers.3.mlp.gate.weight"].astype(np.float64)
    assert doc["router"]["row_norm"][2] == pytest.approx(np.linalg.norm(r, axis=1).tolist(),
                                                          rel=1e-14)
    assert doc["router"]["bias"][0] == pytest.approx(
        t["model.layers.1.mlp.gate.e_score_correction_bias"].astype(np.float64).tolist())
    scripts = (res.out / "index.html").read_text()
    assert "assets/js/moe-model.js" in scripts and "assets/js/moe-readout.js" in scripts


def _pixel(bundle: Path, scene: dict[str, Any], c_x: int, c_y: int) -> int:
    z = scene["max_zoom"]
    img = Image.open(bundle / "tiles" / scene["key"] / str(z) / str(c_x // 512)
                     / f"{c_y // 512}.png")
    assert img.mode == "P"
    return int(np.asarray(img)[c_y % 512, c_x % 512])


def test_every_cell_is_drawn_by_the_manifest_rule(ckpt: Path, tmp_path: Path) -> None:
    """Recompute max-zoom pixels from the manifest alone: the cell centre of every panel (its
    number through SEQUENTIAL_RULE with the panel's lo / hi), dense rows striped, dead cells
    white with a black cross."""
    res = render(ckpt, tmp_path / "b")
    m, out = res.manifest, res.out
    doc = m["moe"]
    pal = m["colormaps"]["sequential"]["palette"]
    assert pal == sequential_palette().tolist()
    checked = 0
    for scene in m["scenes"][1:]:
        info = scene["moe"]
        for p in scene["placements"]:
            panel = info["panels"][p["tensor"]]
            cell = p["cell"]
            x, y, w, h = p["rect"]
            assert (w, h) == ((p["cols"][1] - p["cols"][0]) * cell,
                              (p["rows"][1] - p["rows"][0]) * cell)
            for r in range(p["rows"][1]):
                for c in range(p["cols"][1]):
                    px, py = x + c * cell + cell // 2, y + r * cell + cell // 2
                    got = _pixel(out, scene, px, py)
                    if info["kind"] == "similarity":
                        v = doc["similarity"][panel["metric"]][panel["role"]][
                            str(panel["layer"])][r][c]
                        dead_cell = v is None
                    else:
                        j = panel["moe_rows"][r]
                        if j is None:   # a dense layer
                            assert got in (S_DENSE, S_DENSE_GAP)
                            continue
                        src = (doc["stats"][panel["stat"]][panel["role"]] if panel["role"]
                               else doc["router"][panel["stat"]])
                        v = src[j][c]
                        dead_cell = panel["role"] is not None and \
                            doc["stats"]["rms"][panel["role"]][j][c] == 0
                        if info["kind"] == "relative" and not dead_cell:
                            med = panel["medians"][j]
                            v = v / med if panel["relative"] == "ratio" else v - med
                    if dead_cell:
                        assert got in (S_DEAD, S_DEAD_LINE)
                        # the centre of a cell of >= 5 px is on the cross
                        assert got == (S_DEAD_LINE if cell >= 5 and cell % 2 else got)
                        continue
                    want = int(sequential_index(np.array([v]), panel["lo"], panel["hi"])[0])
                    assert got == want, (scene["key"], p["tensor"], r, c)
                    checked += 1
    assert checked > 200


def test_dense_and_dead_are_unmistakable(ckpt: Path, tmp_path: Path) -> None:
    res = render(ckpt, tmp_path / "b")
    scene = res.manifest["scenes"][1]
    p = scene["placements"][0]          # rms · gate
    x, y, _, _ = p["rect"]
    cell = p["cell"]
    dense_row = {_pixel(res.out, scene, x + i, y + j) for i in range(4 * cell)
                 for j in range(cell)}
    assert dense_row == {S_DENSE, S_DENSE_GAP}
    row = res.manifest["moe"]["layers"].index(Planted.dead[0]) + 1   # (+1: the dense row)
    dead = {_pixel(res.out, scene, x + Planted.dead[1] * cell + i, y + row * cell + j)
            for i in range(cell) for j in range(cell)}
    assert dead == {S_DEAD, S_DEAD_LINE}
    pal = np.array(res.manifest["colormaps"]["sequential"]["palette"])
    levels = pal[S_FIRST:]
    # white, black and the stripes are colours no level takes
    for idx in (S_DEAD, S_DEAD_LINE, S_DENSE, S_DENSE_GAP):
        assert np.abs(levels - pal[idx]).sum(axis=1).min() > 30


def _oklab(rgb: np.ndarray) -> np.ndarray:
    c = rgb / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m1 = np.array([[0.4122214708, 0.5363325363, 0.0514459929],
                   [0.2119034982, 0.6806995451, 0.1073969566],
                   [0.0883024619, 0.2817188376, 0.6299787005]])
    m2 = np.array([[0.2104542553, 0.7936177850, -0.0040720468],
                   [1.9779984951, -2.4285922050, 0.4505937099],
                   [0.0259040371, 0.7827717662, -0.8086757660]])
    lms = np.cbrt(lin @ m1.T)
    out: np.ndarray = lms @ m2.T
    return out


# Machado, Oliveira & Fernandes 2009, severity 1.0 (linear RGB)
CVD = {
    "protanopia": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                   [-0.003882, -0.048116, 1.051998]],
    "deuteranopia": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                     [-0.011820, 0.042940, 0.968881]],
    "tritanopia": [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602],
                   [0.004733, 0.691367, 0.303900]],
}


def test_sequential_palette_is_uniform_and_colour_blind_safe() -> None:
    levels = sequential_palette()[S_FIRST:S_FIRST + S_LEVELS].astype(np.float64)
    lab = _oklab(levels)
    # lightness never falls and rises over every two levels (8-bit colours may repeat one)
    assert np.all(np.diff(lab[:, 0]) >= 0) and np.all(lab[2:, 0] > lab[:-2, 0])
    assert len({tuple(c) for c in levels}) > 0.95 * S_LEVELS
    window = np.linalg.norm(lab[8:] - lab[:-8], axis=1)      # perceptual steps of 8 levels
    assert window.max() / window.min() < 1.6
    assert lab[-1, 0] - lab[0, 0] > 0.6
    c = levels / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    for name, mat in CVD.items():
        sim = np.clip(lin @ np.array(mat).T, 0, 1)
        srgb = np.where(sim <= 0.0031308, 12.92 * sim, 1.055 * sim ** (1 / 2.4) - 0.055) * 255
        lum = _oklab(srgb)[:, 0]
        # the order survives: simulated lightness still rises (within 8-bit rounding)
        assert np.all(np.diff(lum) > -1e-3) and np.all(lum[8:] > lum[:-8]), name
        assert lum[-1] - lum[0] > 0.5, name


def _digest(out: Path) -> dict[str, bytes]:
    files = [p for p in out.rglob("*") if p.is_file() and "assets" not in p.parts]
    return {str(p.relative_to(out)): p.read_bytes() for p in files}


def test_identical_whatever_the_executor(ckpt: Path, tmp_path: Path) -> None:
    a = render(ckpt, tmp_path / "inline", executor=InlineExecutor())
    b = render(ckpt, tmp_path / "pool", executor=LocalPoolExecutor(2),
               moe=MoEOptions(inline_max=0))
    c = render(ckpt, tmp_path / "pool2", executor=LocalPoolExecutor(2))
    da, dc = _digest(a.out), _digest(c.out)
    assert da == dc
    assert (a.out / "moe.json").read_bytes() == (c.out / "moe.json").read_bytes()
    assert any(k.startswith("tiles/moe-similarity") for k in da)
    # sidecars hold the same matrices (and the same tiles)
    db = _digest(b.out)
    assert {k: v for k, v in db.items() if k.startswith("tiles/")} == \
        {k: v for k, v in da.items() if k.startswith("tiles/")}
    assert sorted(k for k in db if k.startswith("moe/")) == [f"moe/layer-{i}.js"
                                                            for i in (1, 2, 3)]


def test_sidecars_hold_the_matrices(ckpt: Path, tmp_path: Path) -> None:
    inline = render(ckpt, tmp_path / "i").manifest["moe"]
    res = render(ckpt, tmp_path / "s", moe=MoEOptions(inline_max=0))
    doc = res.manifest["moe"]
    assert doc == json.loads((res.out / "moe.json").read_text())
    for metric, by_role in doc["similarity"].items():
        for role, by_layer in by_role.items():
            for layer, ref in by_layer.items():
                assert ref == {"sidecar": f"moe/layer-{layer}.js"}
                text = (res.out / ref["sidecar"]).read_text()
                assert text.startswith("weightvisMoeSidecar(") and text.endswith(");\n")
                raw = json.loads(text[text.index("(") + 1:text.rindex(")")])
                assert raw["encoding"] == SIDECAR_ENCODING and raw["experts"] == doc["experts"]
                side = read_sidecar(text)
                assert side["layer"] == int(layer)
                got = side["similarity"][metric][role]
                want = np.array(inline["similarity"][metric][role][layer], np.float64)
                assert got.dtype == np.dtype("<f4") and got.shape == want.shape
                # the float32 of each number; NaN where moe.json says null
                assert np.array_equal(got, want.astype(np.float32), equal_nan=True)
                assert np.array_equal(np.isnan(got), np.isnan(want))
    assert doc["stats"] == inline["stats"]


def test_a_bundle_with_sidecars_can_be_overwritten(ckpt: Path, tmp_path: Path) -> None:
    first = render(ckpt, tmp_path / "b", moe=MoEOptions(inline_max=0))
    assert (first.out / "moe" / "layer-3.js").is_file()
    again = render(ckpt, tmp_path / "b", moe=MoEOptions(inline_max=0), overwrite=True)
    assert sorted(p.name for p in (again.out / "moe").iterdir()) == \
        ["layer-1.js", "layer-2.js", "layer-3.js"]
    plain = render(ckpt, tmp_path / "b", overwrite=True)  # (moe/ goes with the old bundle)
    assert not (plain.out / "moe").exists()


def test_no_moe_and_moe_only(ckpt: Path, tmp_path: Path) -> None:
    off = render(ckpt, tmp_path / "off", moe=MoEOptions(enabled=False))
    assert [s["key"] for s in off.manifest["scenes"]] == ["main"]
    assert "moe" not in off.manifest and not (off.out / "moe.json").exists()
    assert "moe-model.js" not in (off.out / "index.html").read_text()
    only = weightvis.render_moe([ckpt], tmp_path / "only", executor=InlineExecutor())
    assert [s["key"] for s in only.manifest["scenes"]] == MOE_SCENES
    assert only.manifest["tensors"] == {}
    assert not (only.out / "tiles" / "main").exists()
    full = render(ckpt, tmp_path / "full")
    assert only.manifest["moe"] == full.manifest["moe"]
    # regen-html keeps the MoE viewer
    (only.out / "index.html").unlink()
    weightvis.regen_html(only.out)
    assert "moe-readout.js" in (only.out / "index.html").read_text()


def test_a_checkpoint_without_experts(tmp_path: Path) -> None:
    from .conftest_viewer import write_tiny_checkpoint

    ck = write_tiny_checkpoint(tmp_path / "m.safetensors")
    res = render(ck, tmp_path / "b")
    assert [s["key"] for s in res.manifest["scenes"]] == ["main"] and "moe" not in res.manifest
    from weightvis.errors import InputError

    with pytest.raises(InputError, match="no routed experts"):
        weightvis.render_moe([ck], tmp_path / "o", executor=InlineExecutor())


@pytest.fixture
def fake_probe(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def probe_routing(model_dir: Path, *, text: str | None = None, tokens: Any = None,
                      moe_layers: Any = None, progress: Any = None) -> dict[str, Any]:
        calls.append({"model_dir": model_dir, "text": text, "tokens": tokens,
                      "moe_layers": moe_layers})
        e = 4
        freq = [[0.5, 0.25, 0.25, 0.0], [0.5, 0.0, 0.5, 0.0], [0.25, 0.25, 0.25, 0.25]]
        coact = {str(layer): np.outer(freq[i], freq[i]).tolist()
                 for i, layer in enumerate(moe_layers)}
        return {"tokens": 8, "top_k": 2, "layers": list(moe_layers), "freq": freq,
                "coact": coact, "experts": e}

    mod = types.ModuleType("weightvis.moe.probe")
    mod.probe_routing = probe_routing  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "weightvis.moe.probe", mod)
    return calls


def test_routing_panels_from_the_probe(ckpt: Path, tmp_path: Path,
                                       fake_probe: list[dict[str, Any]]) -> None:
    res = render(ckpt, tmp_path / "p", moe=MoEOptions(probe=True, probe_tokens=(1, 2, 3)))
    assert fake_probe[0]["tokens"] == [1, 2, 3] and fake_probe[0]["moe_layers"] == [1, 2, 3]
    assert fake_probe[0]["model_dir"] == ckpt
    doc = res.manifest["moe"]
    assert set(doc) == ITEM_8_KEYS | {"routing"}
    assert doc["routing"]["tokens"] == 8 and doc["routing"]["top_k"] == 2
    assert doc["routing"]["freq"][1] == [0.5, 0.0, 0.5, 0.0]
    assert set(doc["routing"]["coact"]) == {"1", "2", "3"}
    summary = res.manifest["scenes"][1]
    freq = [k for k, v in summary["moe"]["panels"].items() if v["stat"] == "freq"]
    assert freq == ["routing frequency"]
    sim = res.manifest["scenes"][3]["moe"]["panels"]
    assert sum(v["metric"] == "coact" for v in sim.values()) == 3
    # never-routed experts are marked like dead ones
    p = next(p for p in summary["placements"] if p["tensor"] == "routing frequency")
    x, y, _, _ = p["rect"]
    cell = p["cell"]
    got = _pixel(res.out, summary, x + 3 * cell + cell // 2, y + 1 * cell + cell // 2)
    assert got in (S_DEAD, S_DEAD_LINE)


def test_cli(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
             fake_probe: list[dict[str, Any]]) -> None:
    assert main(["moe", str(ckpt), "--out", str(tmp_path / "a"), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "dead experts (layer, expert): [(2, 1)]" in out
    man = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert [s["key"] for s in man["scenes"]] == MOE_SCENES
    assert main(["--moe", str(ckpt), "--out", str(tmp_path / "b"), "--workers", "1", "-q",
                 "--cka", "sketch", "--cka-sample", "16"]) == 0
    man = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert {v.get("mode") for v in man["scenes"][2]["moe"]["panels"].values()} == \
        {"sketch", None}
    assert main([str(ckpt), "--out", str(tmp_path / "c"), "--workers", "1", "-q",
                 "--no-moe"]) == 0
    man = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert [s["key"] for s in man["scenes"]] == ["main"]
    tokens = tmp_path / "tokens.json"
    tokens.write_text("[5, 6, 7]")
    assert main([str(ckpt), "--out", str(tmp_path / "d"), "--workers", "1", "-q",
                 "--probe-tokens", str(tokens)]) == 0
    assert fake_probe[-1]["tokens"] == [5, 6, 7]
    text = tmp_path / "probe.txt"
    text.write_text("The quick brown fox")
    assert main(["moe", str(ckpt), "--out", str(tmp_path / "e"), "--workers", "1", "-q",
                 "--probe-text", str(text)]) == 0
    assert fake_probe[-1]["text"] == "The quick brown fox"
    capsys.readouterr()
    tokens.write_text('["a"]')
    assert main([str(ckpt), "--out", str(tmp_path / "f"), "--probe-tokens", str(tokens)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tokens.json: expected a JSON list of token ids" in err[0]
    with pytest.raises(SystemExit):
        main(["moe", str(ckpt), "--out", str(tmp_path / "g"), "--no-moe"])
    with pytest.raises(SystemExit):
        main([str(ckpt), "--out", str(tmp_path / "g"), "--moe-memory", "lots"])


def test_probe_missing_is_one_clear_line(ckpt: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "weightvis.moe.probe", None)   # import fails
    assert main(["moe", str(ckpt), "--out", str(tmp_path / "a"), "--probe", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "routing probe" in err[0]
    assert not (tmp_path / "a").exists()
