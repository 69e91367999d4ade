"""Across formats: every real checkpoint of DATA.md renders and `info`s; a GGUF written from HF
weights lands every sub-tensor in the same slot as the safetensors; bad files fail cleanly."""

from __future__ import annotations

import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import weightvis
from weightvis.info import checkpoint_info

from .conftest import REAL, BundleView, index_of, real_checkpoint


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(REAL))
def test_every_real_checkpoint_renders_and_infos(tmp_path: Path, key: str) -> None:
    src = real_checkpoint(key)
    info = checkpoint_info([src])
    assert info["tensor_count"] > 0 and info["parameters"] > 0
    res = weightvis.render([src], tmp_path / "b", workers=1)
    m = res.manifest
    assert len(m["tensors"]) == info["tensor_count"]
    placed: dict[str, int] = {}
    for p in m["scenes"][0]["placements"]:
        placed[p["tensor"]] = placed.get(p["tensor"], 0) + p["rect"][2] * p["rect"][3]
    for name, t in m["tensors"].items():
        assert placed.get(name, 0) == int(np.prod(t["shape"])), name  # 1 px per element
    # one element of the largest tensor, recomputed from its value through the reader
    from weightvis.formats import open_checkpoint

    name = max(m["tensors"], key=lambda n: int(np.prod(m["tensors"][n]["shape"])))
    rows, cols = m["tensors"][name]["view"]
    with open_checkpoint([src]) as r:
        v = r.read(name, rows // 2, rows // 2 + 1, cols // 3, cols // 3 + 1)[0, 0]
    bv = BundleView(res.out)
    assert bv.pixel(bv.scene(), *bv.element_pixel(name, rows // 2, cols // 3)) == index_of(
        v, m["tensors"][name]["scale"])


@pytest.mark.slow
def test_gguf_and_safetensors_share_slots(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    from weightvis.demo import DEMO_CONFIG, demo_tensors

    from .gguf_fixtures import hf_llama_to_gguf

    hf = demo_tensors()
    hf["lm_head.weight"] = hf["model.embed_tokens.weight"][::-1].copy()  # untied: both ends
    save_file(hf, str(tmp_path / "model.safetensors"))
    hf_llama_to_gguf(hf, tmp_path / "model.gguf", n_layers=DEMO_CONFIG["num_hidden_layers"],
                     heads=DEMO_CONFIG["num_attention_heads"],
                     kv_heads=DEMO_CONFIG["num_key_value_heads"],
                     hidden=DEMO_CONFIG["hidden_size"])
    ms = weightvis.render([tmp_path / "model.safetensors"], tmp_path / "s", workers=2).manifest
    mg = weightvis.render([tmp_path / "model.gguf"], tmp_path / "g", workers=2).manifest
    assert {t["dtype"] for t in mg["tensors"].values()} == {"Q8_0", "F32"}

    def slots(m: dict) -> dict[str, tuple]:  # canonical name -> (block, slot, rects)
        out = {}
        for name, t in m["tensors"].items():
            rects = sorted(tuple(p["rect"]) + tuple(p["rows"]) for p in m["scenes"][0][
                "placements"] if p["tensor"] == name)
            out[t["canonical"]] = (t["block"], t["slot"], rects)
        return out

    s, g = slots(ms), slots(mg)
    assert set(s) == set(g)
    assert s == g  # same block, same slot, same canvas rectangles: Q and K included
    assert g["model.layers.3.self_attn.q_proj.weight"][1] == "self_attn.q_proj.weight"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "weightvis", *args], capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_bad_gguf_and_pickles_fail_cleanly(tmp_path: Path) -> None:
    cases = {}
    p = tmp_path / "magic.gguf"
    p.write_bytes(b"GGUX" + b"\0" * 60)
    cases["magic.gguf"] = (p, "magic.gguf")
    p = tmp_path / "count.gguf"
    p.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 10**12, 0))
    cases["count.gguf"] = (p, "count.gguf")
    src = real_checkpoint("akiki_pt").read_bytes()
    p = tmp_path / "cut.pt"
    p.write_bytes(src[: len(src) // 3])
    cases["cut.pt"] = (p, "cut.pt")
    p = tmp_path / "opcodes.pt"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02\xff\xfe garbage")
        z.writestr("archive/version", "3\n")
    cases["opcodes.pt"] = (p, "opcodes.pt")
    for name, (path, needle) in cases.items():
        out = tmp_path / f"out-{name}"
        res = _cli(str(path), "--out", str(out), "--quiet")
        assert res.returncode == 2, (name, res.stderr)
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
        assert needle in lines[0]
        assert not out.exists()
        res = _cli("info", str(path))
        assert res.returncode == 2 and "Traceback" not in res.stderr and needle in res.stderr
