"""safetensors reader: every dtype decoded exactly (checked against safetensors.numpy, ml_dtypes
and torch), block reads, metadata, sharded sets and directories, and one clear error per kind of
malformed file."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from weightvis.errors import FormatError, InputError, UnsupportedDtypeError
from weightvis.formats import detect_format, open_checkpoint
from weightvis.formats.safetensors import SafetensorsReader, write_safetensors

from .conftest import real_checkpoint

RNG = np.random.default_rng(7)

NUMPY_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
    "I16": np.int16, "I8": np.int8, "U64": np.uint64, "U32": np.uint32, "U16": np.uint16,
    "U8": np.uint8, "BOOL": np.bool_,
}


def _values(dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    if dtype is np.bool_:
        return np.asarray(RNG.integers(0, 2, shape)).astype(bool)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.asarray(RNG.integers(max(info.min, -(1 << 40)), min(info.max, 1 << 40), shape,
                                       dtype=dtype, endpoint=True))
    v = np.asarray(RNG.standard_normal(shape) * 3).astype(dtype)
    k = min(v.size, 4)
    v.flat[:k] = [0.0, -0.0, 1e-3, -65000][:k]
    return v


@pytest.mark.parametrize("name", sorted(NUMPY_DTYPES))
def test_numpy_dtypes_decode_like_safetensors_numpy(tmp_path: Path, name: str) -> None:
    dtype = NUMPY_DTYPES[name]
    tensors = {"a": _values(dtype, (7, 5)), "b": _values(dtype, (3, 2, 4)),
               "scalar": _values(dtype, ()), "vec": _values(dtype, (9,))}
    p = tmp_path / "x.safetensors"
    save_file(tensors, str(p))
    ref = load_file(str(p))
    with SafetensorsReader(p) as r:
        for t in r.tensors():
            assert t.dtype == name
            got = r.read_all(t.name)
            want = ref[t.name].astype(np.float32).reshape(t.e_rows, t.e_cols)
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name,mldt", [("BF16", ml_dtypes.bfloat16),
                                        ("F8_E4M3", ml_dtypes.float8_e4m3fn),
                                        ("F8_E5M2", ml_dtypes.float8_e5m2),
                                        ("F8_E8M0", ml_dtypes.float8_e8m0fnu)])
def test_small_floats_decode_every_bit_pattern(tmp_path: Path, name: str, mldt: type) -> None:
    bits = np.arange(1 << (16 if name == "BF16" else 8), dtype=np.uint16 if name == "BF16"
                     else np.uint8).reshape(-1, 256)
    p = tmp_path / "f.safetensors"
    write_safetensors(p, {"w": (name, bits.shape, bits)})
    want = bits.view(mldt).astype(np.float32)
    with SafetensorsReader(p) as r:
        got = r.read_all("w")
    np.testing.assert_array_equal(got, want)  # equal_nan by default for arrays


def test_bf16_matches_torch(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as save_torch

    t = torch.randn(33, 17, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    p = tmp_path / "t.safetensors"
    save_torch({"w": t}, str(p))
    with SafetensorsReader(p) as r:
        assert r.info("w").dtype == "BF16"
        np.testing.assert_array_equal(r.read_all("w"), t.float().numpy())


def test_block_reads_and_metadata(tmp_path: Path) -> None:
    w = np.arange(6 * 10, dtype=np.float32).reshape(6, 10)
    p = tmp_path / "m.safetensors"
    save_file({"w": w}, str(p), metadata={"format": "pt", "note": "hello"})
    with SafetensorsReader(p) as r:
        np.testing.assert_array_equal(r.read("w", 2, 5, 3, 7), w[2:5, 3:7])
        np.testing.assert_array_equal(r.read("w", 5, 6), w[5:6])
        assert r.read("w", 3, 3).shape == (0, 10)
        assert dict(r.metadata) == {"format": "pt", "note": "hello"}
        with pytest.raises(ValueError, match="outside tensor 'w'"):
            r.read("w", 0, 7)


def test_real_checkpoint_matches_reference() -> None:
    p = real_checkpoint("minilm")
    ref = load_file(str(p))
    with SafetensorsReader(p) as r:
        assert len(r.tensors()) == 104
        assert r.info("embeddings.position_ids").dtype == "I64"
        for name in ("embeddings.word_embeddings.weight", "embeddings.position_ids",
                     "encoder.layer.3.attention.self.query.weight"):
            t = r.info(name)
            np.testing.assert_array_equal(r.read_all(name),
                                          ref[name].astype(np.float32).reshape(t.e_rows, t.e_cols))


def test_int8_checkpoint_and_rich_metadata() -> None:
    p = real_checkpoint("fracast_int8")
    ref = load_file(str(p))
    with SafetensorsReader(p) as r:
        dtypes = {t.dtype for t in r.tensors()}
        assert "I8" in dtypes
        assert r.metadata  # rich __metadata__ kept
        for t in r.tensors():
            np.testing.assert_array_equal(
                r.read_all(t.name), ref[t.name].astype(np.float32).reshape(t.e_rows, t.e_cols))


# -- sharded sets and directories ----------------------------------------------------------------
def _shards(d: Path) -> dict[str, np.ndarray]:
    a = {"model.layers.0.w": np.ones((2, 3), np.float32)}
    b = {"model.layers.1.w": np.full((2, 3), 2, np.float32)}
    save_file(a, str(d / "model-00001-of-00002.safetensors"))
    save_file(b, str(d / "model-00002-of-00002.safetensors"))
    wm = {"model.layers.0.w": "model-00001-of-00002.safetensors",
          "model.layers.1.w": "model-00002-of-00002.safetensors"}
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wm}))
    return {**a, **b}


def test_sharded_index_and_directory(tmp_path: Path) -> None:
    want = _shards(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 3}))
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "README.md").write_text("# card")
    for src in (tmp_path / "model.safetensors.index.json", tmp_path):
        with open_checkpoint([src]) as r:
            assert {t.name for t in r.tensors()} == set(want)
            assert r.config == {"hidden_size": 3}
            for name, v in want.items():
                np.testing.assert_array_equal(r.read_all(name), v)


def test_missing_shard_is_named(tmp_path: Path) -> None:
    _shards(tmp_path)
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(InputError, match="model-00002-of-00002.safetensors"):
        open_checkpoint([tmp_path])


def test_empty_directory_and_config_only(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="empty"):
        open_checkpoint([tmp_path])
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(InputError, match="no checkpoint files.*config.json"):
        open_checkpoint([tmp_path])


def test_duplicate_tensor_across_files_is_an_error(tmp_path: Path) -> None:
    save_file({"w": np.zeros(2, np.float32)}, str(tmp_path / "a.safetensors"))
    save_file({"w": np.zeros(2, np.float32)}, str(tmp_path / "b.safetensors"))
    with pytest.raises(FormatError, match="'w'.*also present"):
        open_checkpoint([tmp_path / "a.safetensors", tmp_path / "b.safetensors"])


def test_detection_is_by_magic_bytes(tmp_path: Path) -> None:
    p = tmp_path / "weights.bin"  # a safetensors file with an unusual name
    save_file({"w": np.zeros(2, np.float32)}, str(p))
    assert detect_format(p) == "safetensors"
    with open_checkpoint([p]) as r:
        assert [t.name for t in r.tensors()] == ["w"]


# -- malformed files: one clear error each, naming the file (and tensor) --------------------------
def _raw(header: dict[str, object], data: bytes, *, length: int | None = None) -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h) if length is None else length) + h + data


@pytest.mark.parametrize("case,content,pattern", [
    ("too-short", b"\x01\x02", r"too short"),
    ("header-past-eof", _raw({}, b"", length=10_000), r"header length 10000 runs past the end"),
    ("header-huge", struct.pack("<Q", 1 << 40) + b"{}", r"exceeds"),
    ("bad-json", struct.pack("<Q", 5) + b"{abc}", r"not valid JSON"),
    ("truncated-data", _raw({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}},
                            b"\0" * 8), r"'w'.*past the end of the file"),
    ("out-of-range", _raw({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}},
                          b"\0" * 8), r"'w'.*past the end"),
    ("span-mismatch", _raw({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}},
                           b"\0" * 8), r"'w'.*needs 12"),
    ("overlap", _raw({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}},
                     b"\0" * 12), r"overlaps"),
    ("unknown-dtype", _raw({"w": {"dtype": "F12", "shape": [2], "data_offsets": [0, 4]}},
                           b"\0" * 4), r"'w'.*unknown or unsupported dtype 'F12'"),
    ("bad-shape", _raw({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}},
                       b"\0" * 4), r"'w'.*shape"),
])
def test_malformed_file_errors(tmp_path: Path, case: str, content: bytes, pattern: str) -> None:
    p = tmp_path / f"{case}.safetensors"
    p.write_bytes(content)
    with pytest.raises(FormatError, match=pattern) as ei:
        open_checkpoint([p])
    assert str(p) in str(ei.value)
    if case == "unknown-dtype":
        assert isinstance(ei.value, UnsupportedDtypeError)


def test_truncated_real_checkpoint(tmp_path: Path) -> None:
    src = real_checkpoint("silero").read_bytes()
    p = tmp_path / "cut.safetensors"
    p.write_bytes(src[: len(src) // 2])
    with pytest.raises(FormatError, match="truncated"):
        open_checkpoint([p])


@pytest.mark.parametrize("shape", [[-1], [2, -3], [True, 4], [4, False], [2.0, 2], ["2"],
                                   [[2]], [None], [1 << 63], [0, 1 << 64], [1] * 65, "4", {}])
def test_every_malformed_shape_is_refused(tmp_path: Path, shape: object) -> None:
    """The header parse checks each dim's exact type and range (bool is not an int here)."""
    p = tmp_path / "bad.safetensors"
    p.write_bytes(_raw({"ok": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                        "w": {"dtype": "F32", "shape": shape, "data_offsets": [4, 4]}},
                       b"\0" * 4))
    with pytest.raises(FormatError, match=r"'w'.*shape .* is not a list of at most 64 integers"):
        SafetensorsReader(p)


def test_listed_tensors_match_their_shapes_and_views(tmp_path: Path) -> None:
    """Each listed tensor is TensorInfo(name, shape, dtype, file, view_row_dims), whatever the
    rank, dtype spelling or size, and its reads use the 2-D view of ``types.view_of``."""
    from weightvis.formats.dtypes import ELEMENT_TYPES
    from weightvis.index import view_row_dims
    from weightvis.types import TensorInfo, view_of

    specs = {"s": ("F32", []), "v": ("f32", [3]), "m": ("BF16", [2, 5]), "z": ("F16", [0, 4]),
             "c": ("F32", [2, 3, 2, 2]), "e": ("bf16", [3, 2]),
             "model.layers.0.mlp.experts.gate_up_proj": ("BF16", [4, 2, 3])}
    header: dict[str, object] = {}
    at = 0
    for name, (dtype, shape) in specs.items():
        n = math.prod(shape) * ELEMENT_TYPES[dtype.upper()].itemsize
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [at, at + n]}
        at += n
    p = tmp_path / "m.safetensors"
    p.write_bytes(_raw(header, b"\0" * at))
    r = SafetensorsReader(p)
    for name, (dtype, shape) in specs.items():
        dims = tuple(shape)
        want = TensorInfo(name, dims, ELEMENT_TYPES[dtype.upper()].name, str(p),
                          view_row_dims(name, dims) if len(dims) > 2 else 1)
        got = r.info(name)
        assert got == want and type(got) is TensorInfo
        assert (got.e_rows, got.e_cols) == view_of(dims, want.row_dims)
        ent = r._entries[name]
        assert (ent.rows, ent.cols) == view_of(dims, want.row_dims)
        assert ent.row_bytes == ent.cols * ELEMENT_TYPES[dtype.upper()].itemsize
    assert r.info("model.layers.0.mlp.experts.gate_up_proj").row_dims == 2


def _header_variants() -> list[dict[str, object]]:
    ok: dict[str, object] = {
        "s": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]},
        "v": {"dtype": "f16", "shape": [3], "data_offsets": [4, 10]},
        "z": {"dtype": "BF16", "shape": [0, 4], "data_offsets": [10, 10]},
        "model.layers.0.mlp.experts.gate_up_proj": {"dtype": "BF16", "shape": [2, 2, 3],
                                                    "data_offsets": [10, 34]},
        "c": {"dtype": "F32", "shape": [1, 2, 1, 2], "data_offsets": [34, 50]},
        "a": {"dtype": "bf16", "shape": [3, 1], "data_offsets": [50, 56]},
    }
    bad: list[dict[str, object]] = [{**ok, "a": {"dtype": "BF16", "shape": [3, 1],
                                                 "data_offsets": off}}
                                    for off in ([50, 58], [50], [56, 50], [-2, 4], [50, 9999],
                                                [50.0, 56], None, [True, 56], [30, 36])]
    bad += [{**ok, "a": spec} for spec in ([], {"shape": [3, 1], "data_offsets": [50, 56]},
                                           {"dtype": "Q9", "shape": [3, 1],
                                            "data_offsets": [50, 56]},
                                           {"dtype": 16, "shape": [3, 1],
                                            "data_offsets": [50, 56]})]
    bad.append({**ok, "x" * 5000: ok["a"]})
    return [ok, {}, {"s": ok["s"]}, *bad]


@pytest.mark.parametrize("k", range(len(_header_variants())))
def test_header_checked_at_once_as_entry_by_entry(tmp_path: Path, k: int,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The header's entries made by checks over all of them at once are the entries (and file
    order) the entry-by-entry loop makes; a header either refuses gets the loop's error."""
    from collections import OrderedDict

    from weightvis.formats import safetensors as st

    header = _header_variants()[k]
    p = tmp_path / "m.safetensors"
    p.write_bytes(_raw(header, b"\0" * 56))

    def parse() -> tuple[object, ...] | str:
        monkeypatch.setattr(st, "_PARSED", OrderedDict())  # (parsed again, not remembered)
        try:
            r = SafetensorsReader(p)
        except FormatError as e:
            return str(e)
        try:
            return r._entries, tuple(r.tensors())
        finally:
            r.close()

    at_once = parse()
    monkeypatch.setattr(SafetensorsReader, "_entries_at_once", lambda *a: False)
    assert at_once == parse()
    if k == 0:
        assert isinstance(at_once, tuple) and len(at_once[1]) == 6  # type: ignore[arg-type]


def test_a_name_listed_twice_is_an_error_naming_it(tmp_path: Path) -> None:
    """Across files, and within one reader's listing (the whole-list path must not let a
    repeat through); distinct names of several files keep their owners and file order."""
    from types import SimpleNamespace

    from weightvis.formats import MultiReader
    from weightvis.types import TensorInfo

    def fake(file: str, *names: str) -> SimpleNamespace:
        infos = [TensorInfo(n, (2,), "F32", file) for n in names]
        return SimpleNamespace(tensors=lambda: infos, format="fake", files=[Path(file)],
                               metadata={}, info={t.name: t for t in infos}.__getitem__)

    a, b = fake("a.st", "x", "y"), fake("b.st", "z")
    m = MultiReader([a, b])  # type: ignore[list-item]
    assert [t.name for t in m.tensors()] == ["x", "y", "z"]
    assert m._owner == {"x": a, "y": a, "z": b}
    with pytest.raises(FormatError, match=r"b\.st.*'y'.*also present in a\.st"):
        MultiReader([a, fake("b.st", "z", "y")])  # type: ignore[list-item]
    with pytest.raises(FormatError, match=r"c\.st.*'q'.*also present in c\.st"):
        MultiReader([a, fake("c.st", "q", "r", "q")])  # type: ignore[list-item]
