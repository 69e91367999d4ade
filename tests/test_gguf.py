"""GGUF reader: every decodable ggml type equals ``gguf.quants.dequantize`` bit for bit (full
reads, row ranges, column slices, N-D views), the header agrees with gguf-py's own reader, KV
metadata and architecture numbers, one clear error per kind of malformed file, the layout and a
render through the factory, and opening a 262k-token vocabulary fast."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import gguf
import gguf.quants
import numpy as np
import pytest

import weightvis
from weightvis.errors import FormatError, UnsupportedDtypeError
from weightvis.formats import detect_format, open_checkpoint
from weightvis.formats.gguf import GGUFReader, can_decode
from weightvis.layout import arch_layout

from .conftest import BundleView, index_of
from .gguf_fixtures import (
    QUANTIZABLE,
    RAW_ONLY,
    block_geometry,
    build_gguf,
    gguf_string,
    kv_string,
    kv_u32,
    stored_tensor,
    tensor_info,
    write_gguf,
)

Q = gguf.GGMLQuantizationType
NUMPY_TYPES = ("F32", "F16", "F64", "I8", "I16", "I32", "I64")
ALL_TYPES = NUMPY_TYPES + QUANTIZABLE + RAW_ONLY


def assert_bits_equal(got: np.ndarray, want: np.ndarray) -> None:
    """Same shape, float32, and the same bits (NaN payloads included)."""
    assert got.dtype == np.float32 and got.flags.c_contiguous
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)  # NaN-aware, readable diff on failure
    np.testing.assert_array_equal(got.view(np.uint32), want.astype(np.float32).view(np.uint32))


from .conftest import view2d  # noqa: E402


def _shapes(type_name: str) -> dict[str, tuple[int, ...]]:
    bs = max(block_geometry(type_name)[0], 8)
    return {"w2d": (5, 3 * bs), "exps3d": (3, 2, 2 * bs), "vec": (4 * bs,), "one_row": (1, bs)}


@pytest.fixture(scope="module")
def all_types_file(tmp_path_factory: pytest.TempPathFactory
                   ) -> tuple[Path, dict[str, tuple[str, np.ndarray]]]:
    """One file holding every type in four shapes; returns (path, {name: (type, reference)})."""
    rng = np.random.default_rng(11)
    tensors, refs = {}, {}
    for t in ALL_TYPES:
        for kind, shape in _shapes(t).items():
            stored, ref = stored_tensor(t, shape, rng)
            assert np.isfinite(ref).all(), (t, kind)  # comparable outputs
            tensors[f"{t}.{kind}"] = (t, stored)
            refs[f"{t}.{kind}"] = (t, ref)
    path = write_gguf(tmp_path_factory.mktemp("gguf") / "all.gguf", tensors)
    return path, refs


@pytest.mark.parametrize("type_name", ALL_TYPES)
def test_decode_equals_gguf_quants(all_types_file: tuple[Path, dict[str, tuple[str, np.ndarray]]],
                                   type_name: str) -> None:
    path, refs = all_types_file
    bs = max(block_geometry(type_name)[0], 8)
    with GGUFReader(path) as r:
        for kind, shape in _shapes(type_name).items():
            name = f"{type_name}.{kind}"
            t = r.info(name)
            assert t.dtype == type_name and t.shape == shape
            want = view2d(refs[name][1])
            assert_bits_equal(r.read_all(name), want)
            rows, cols = want.shape
            # row ranges, and column slices starting / ending inside blocks
            for r0, r1 in {(0, 1), (rows - 1, rows), (min(1, rows - 1), rows), (0, rows)}:
                for c0, c1 in {(0, cols), (1, cols - 1), (bs // 2, bs + 1), (cols - bs, cols),
                               (bs, 2 * bs), (3, 4), (cols - 1, cols)}:
                    if not 0 <= c0 <= c1 <= cols:
                        continue
                    assert_bits_equal(r.read(name, r0, r1, c0, c1), want[r0:r1, c0:c1])
            assert r.read(name, 1, 1, 0, cols).shape == (0, cols)


def test_header_agrees_with_gguf_py(all_types_file: tuple[Path, dict[str, tuple[str, np.ndarray]]]
                                    ) -> None:
    path, _ = all_types_file
    ref = gguf.GGUFReader(path)
    with GGUFReader(path) as r:
        ours = r.tensors()
        assert [t.name for t in ours] == [t.name for t in ref.tensors]  # file order
        raw = r.raw_bytes()
        assert raw.size == path.stat().st_size
        for mine, theirs in zip(ours, ref.tensors, strict=True):
            assert mine.shape == tuple(int(d) for d in reversed(theirs.shape.tolist()))
            assert mine.dtype == theirs.tensor_type.name
            assert mine.file == str(path)
            b, e = r.byte_range(mine.name)
            assert (b, e - b) == (theirs.data_offset, theirs.n_bytes)
            assert raw[b:e].tobytes() == theirs.data.tobytes()
        assert r.version == 3 and r.alignment == 32
        assert r.files == (path,)


def test_reads_touch_only_the_blocks_of_the_requested_rows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    stored, ref = stored_tensor("Q4_K", (6, 4, 512), rng)  # view 6 x 2048: 8 blocks per row
    path = write_gguf(tmp_path / "m.gguf", {"blk.0.attn_k_b.weight": ("Q4_K", stored)})
    seen: list[tuple[int, ...]] = []
    import weightvis.kernels.ggml as ggml

    real = ggml.decode

    def spy(data: np.ndarray, type_name: str) -> np.ndarray | None:
        seen.append(data.shape)
        return real(data, type_name)

    monkeypatch.setattr(ggml, "decode", spy)  # (formats.gguf imports it on each call)
    with GGUFReader(path) as r:
        got = r.read("blk.0.attn_k_b.weight", 2, 4, 300, 700)  # blocks 1, 2 of rows 2, 3
        assert_bits_equal(got, view2d(ref)[2:4, 300:700])
        assert seen == [(2, 2 * 144)]
        assert r._file.touched is not None
        b, _ = r.byte_range("blk.0.attn_k_b.weight")
        assert r._file.touched == (b + 2 * 8 * 144, b + 4 * 8 * 144)
        r.release()
        assert r._file.touched is None
        assert_bits_equal(r.read_all("blk.0.attn_k_b.weight"), view2d(ref))  # still readable


def test_bf16_every_bit_pattern(tmp_path: Path) -> None:
    bits = np.arange(1 << 16, dtype=np.uint16).reshape(256, 256)
    path = write_gguf(tmp_path / "bf.gguf", {"w": ("BF16", bits.view(np.uint8))})
    with GGUFReader(path) as r:
        assert r.info("w").shape == (256, 256) and r.info("w").dtype == "BF16"
        want = gguf.quants.dequantize(bits.view(np.uint8), Q.BF16)
        assert_bits_equal(r.read_all("w"), want)
        assert_bits_equal(r.read("w", 100, 140, 7, 200), want[100:140, 7:200])


def test_undecodable_type_is_listed_and_refused_on_read(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    _bs, ts = block_geometry("Q8_K")
    raw = rng.integers(0, 256, (2, 2 * ts), dtype=np.uint8)
    path = write_gguf(tmp_path / "q8k.gguf", {"w": ("Q8_K", raw)})
    assert not can_decode("Q8_K") and can_decode("IQ2_XXS") and can_decode("I64")
    with GGUFReader(path) as r:
        assert r.info("w").dtype == "Q8_K" and r.info("w").shape == (2, 512)
        with pytest.raises(UnsupportedDtypeError, match=r"'w'.*Q8_K \(15\)") as ei:
            r.read("w", 0, 1)
        assert str(path) in str(ei.value)


# -- metadata ---------------------------------------------------------------------------------
def test_kv_metadata_and_arch_info(tmp_path: Path) -> None:
    tokens = [f"t{i}" for i in range(100)]

    def setup(w: gguf.GGUFWriter) -> None:
        w.add_block_count(2)
        w.add_embedding_length(32)
        w.add_head_count(4)
        w.add_head_count_kv(2)
        w.add_expert_count(8)
        w.add_context_length(4096)
        w.add_rope_freq_base(10000.0)
        w.add_token_list(tokens)
        w.add_token_scores([0.5] * 100)
        w.add_array("test.short_ints", [1, 2, 3])
        w.add_array("test.short_strings", ["a", "bé", ""])
        w.add_array("test.exactly_64", list(range(64)))
        w.add_array("test.nested", [[1, 2], ["x"]])
        w.add_bool("test.flag", True)

    path = write_gguf(tmp_path / "m.gguf", {"token_embd.weight": ("F32", np.zeros((100, 32),
                                                                                   np.float32))},
                      setup=setup, kv={"general.name": "tiny"})
    with GGUFReader(path) as r:
        m = r.metadata
        assert m["general.architecture"] == "llama" and m["general.name"] == "tiny"
        assert m["llama.rope.freq_base"] == 10000.0 and m["test.flag"] is True
        assert m["test.short_ints"] == [1, 2, 3]
        assert m["test.short_strings"] == ["a", "bé", ""]
        assert m["test.exactly_64"] == list(range(64))
        assert m["test.nested"] == [[1, 2], ["x"]]
        assert m["tokenizer.ggml.tokens"] == {"type": "STRING", "length": 100}
        assert m["tokenizer.ggml.scores"] == {"type": "FLOAT32", "length": 100}
        assert r.kv["llama.block_count"] == 2 and "tokenizer.ggml.tokens" not in r.kv
        assert "test.short_ints" not in r.kv
        assert r.arch_info() == {
            "architecture": "llama", "block_count": 2, "embedding_length": 32, "head_count": 4,
            "head_count_kv": 2, "expert_count": 8, "context_length": 4096, "vocab_size": 100}
        assert r.info("token_embd.weight").shape == (100, 32)


def test_custom_alignment_is_honoured(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    a, ref_a = stored_tensor("Q5_0", (3, 64), rng)
    b, ref_b = stored_tensor("F32", (7,), rng)

    def setup(w: gguf.GGUFWriter) -> None:
        w.add_custom_alignment(256)

    path = write_gguf(tmp_path / "al.gguf", {"a": ("Q5_0", a), "b": ("F32", b)}, setup=setup)
    with GGUFReader(path) as r:
        assert r.alignment == 256 and r.data_start % 256 == 0
        assert r.byte_range("b")[0] % 256 == 0
        assert_bits_equal(r.read_all("a"), ref_a)
        assert_bits_equal(r.read_all("b"), ref_b.reshape(1, 7))


def test_hand_built_v2_file(tmp_path: Path) -> None:
    """A v2 file with a 0-d, an empty and a 4-D tensor, written without gguf-py."""
    vals = np.arange(2 * 3 * 4 * 5, dtype=np.float32) - 60
    data = vals.tobytes() + b"\0" * (-vals.nbytes % 32) + np.float32(7.5).tobytes() + b"\0" * 28
    infos = [tensor_info("four_d", (5, 4, 3, 2), 0, 0),
             tensor_info("scalar", (), 0, 480),
             tensor_info("empty", (32, 0), 0, 512)]
    p = tmp_path / "v2.gguf"
    p.write_bytes(build_gguf([kv_string("general.architecture", "x")], infos, data, version=2))
    with GGUFReader(p) as r:
        assert r.version == 2
        shapes = {t.name: t.shape for t in r.tensors()}
        assert shapes == {"four_d": (2, 3, 4, 5), "scalar": (), "empty": (0, 32)}
        assert_bits_equal(r.read_all("four_d"), vals.reshape(2, 60))
        assert_bits_equal(r.read_all("scalar"), np.full((1, 1), 7.5, np.float32))
        assert r.read_all("empty").shape == (0, 32)


# -- malformed files --------------------------------------------------------------------------
def _f32_info(name: str = "w", offset: int = 0) -> bytes:
    return tensor_info(name, (8, 2), 0, offset)


_DATA = np.arange(16, dtype=np.float32).tobytes()

MALFORMED = {
    "wrong magic": (build_gguf(magic=b"GGUX"), FormatError, r"wrong magic b'GGUX'"),
    "v1": (build_gguf(version=1), FormatError, r"GGUF v1 is not supported"),
    "v4": (build_gguf(version=4), FormatError, r"unsupported GGUF version 4"),
    "big endian": (build_gguf(version=3 << 24), FormatError, r"big-endian"),
    "too short": (b"GGUF\x03\0\0\0", FormatError, r"too short"),
    "impossible tensor count": (build_gguf([], [_f32_info()], _DATA, n_tensors=1 << 40),
                                FormatError, r"impossible tensor count 1099511627776"),
    "impossible kv count": (build_gguf(n_kv=1 << 62), FormatError, r"impossible KV count"),
    "truncated header": (build_gguf([kv_u32("a.b", 1)], [_f32_info()])[:70], FormatError,
                         r"truncated header: .*tensor 'w'"),
    "key length past EOF": (build_gguf([gguf_string("key", length=1 << 40)]), FormatError,
                            r"string length 1099511627776 runs past the end"),
    "string value past EOF": (build_gguf([gguf_string("k") + struct.pack("<I", 8)
                                          + gguf_string("v", length=99)]), FormatError,
                              r"KV 'k': string length 99 runs past the end"),
    "string array element past EOF": (
        build_gguf([gguf_string("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 71)
                    + b"".join(gguf_string(f"t{i}") for i in range(70))
                    + gguf_string("bad", length=1 << 33)]),
        FormatError, r"tokenizer.ggml.tokens\[70\]: string length 8589934592 runs past"),
    "string array truncated": (
        build_gguf([gguf_string("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 100)
                    + b"".join(gguf_string(f"t{i}") for i in range(99))], alignment=1),
        FormatError, r"truncated header: length of tokenizer.ggml.tokens\[99\]"),
    "fixed array past EOF": (
        build_gguf([gguf_string("scores") + struct.pack("<IIQ", 9, 6, 1 << 20)]),
        FormatError, r"KV 'scores': array of 1048576 FLOAT32 runs past the end"),
    "unknown kv type": (build_gguf([gguf_string("k") + struct.pack("<II", 13, 0)]),
                        FormatError, r"KV 'k': unknown value type 13"),
    "duplicate key": (build_gguf([kv_u32("k", 1), kv_u32("k", 2)]), FormatError,
                      r"duplicate KV key 'k'"),
    "bad alignment": (build_gguf([kv_u32("general.alignment", 24)]), FormatError,
                      r"general.alignment 24 is not a positive power of two"),
    "n_dims > 4": (build_gguf([], [tensor_info("w", (1, 1, 1, 1, 1), 0, 0)], _DATA),
                   FormatError, r"tensor 'w'.*n_dims 5 exceeds GGML_MAX_DIMS"),
    "dims overflow": (build_gguf([], [tensor_info("w", (1 << 40, 1 << 40), 0, 0)], _DATA),
                      FormatError, r"tensor 'w'.*overflow int64"),
    "unknown ggml type": (build_gguf([], [tensor_info("w", (32,), 77, 0)], _DATA),
                          UnsupportedDtypeError, r"tensor 'w'.*unknown ggml type 77"),
    "offset past EOF": (build_gguf([], [_f32_info(offset=32)], _DATA), FormatError,
                        r"tensor 'w'.*runs past the end of the file"),
    "size past EOF": (build_gguf([], [tensor_info("w", (64, 2), 0, 0)], _DATA), FormatError,
                      r"tensor 'w'.*runs past the end of the file"),
    "misaligned offset": (build_gguf([], [_f32_info(offset=4)], _DATA * 2), FormatError,
                          r"tensor 'w'.*data offset 4 is not a multiple of the alignment 32"),
    "overlap": (build_gguf([], [_f32_info("a", 0), tensor_info("b", (4,), 0, 32)], _DATA * 2),
                FormatError, r"tensor 'b'.*overlaps 'a'"),
    "block size": (build_gguf([], [tensor_info("w", (16, 2), 8, 0)], _DATA * 2), FormatError,
                   r"tensor 'w'.*innermost dim 16 is not a multiple of the Q8_0 block size 32"),
    "duplicate tensor": (build_gguf([], [_f32_info("a", 0), _f32_info("a", 64)], _DATA * 4),
                         FormatError, r"tensor 'a'.*duplicate tensor name"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_file_gives_one_clear_error(tmp_path: Path, case: str) -> None:
    raw, exc, pattern = MALFORMED[case]
    p = tmp_path / "bad.gguf"
    p.write_bytes(raw)
    with pytest.raises(exc, match=pattern) as ei:
        GGUFReader(p)
    assert str(ei.value).startswith(str(p))
    if case != "wrong magic":  # the factory routes by magic: a wrong magic is not GGUF at all
        with pytest.raises(exc, match=pattern):
            open_checkpoint([p])


def test_well_formed_versions_of_the_malformed_cases_open(tmp_path: Path) -> None:
    """The fixtures above differ from valid files only by the planted fault."""
    p = tmp_path / "ok.gguf"
    p.write_bytes(build_gguf([kv_u32("general.alignment", 32)],
                             [_f32_info("a", 0), tensor_info("b", (4,), 0, 64)], _DATA * 2))
    with GGUFReader(p) as r:
        assert_bits_equal(r.read_all("a"), np.arange(16, dtype=np.float32).reshape(2, 8))
        assert_bits_equal(r.read_all("b"), np.arange(4, dtype=np.float32).reshape(1, 4))


# -- layout, factory, render ------------------------------------------------------------------
def _llama_tensors(rng: np.random.Generator, n_blocks: int = 2, d: int = 32, vocab: int = 40
                   ) -> tuple[dict[str, tuple[str, np.ndarray]], dict[str, np.ndarray]]:
    spec: dict[str, tuple[str, tuple[int, ...]]] = {"token_embd.weight": ("F16", (vocab, d))}
    for b in range(n_blocks):
        spec |= {
            f"blk.{b}.attn_norm.weight": ("F32", (d,)),
            f"blk.{b}.attn_q.weight": ("Q8_0", (d, d)),
            f"blk.{b}.attn_k.weight": ("Q4_K", (d // 2, 256)),
            f"blk.{b}.attn_v.weight": ("Q6_K", (d // 2, 256)),
            f"blk.{b}.attn_output.weight": ("BF16", (d, d)),
            f"blk.{b}.ffn_gate_inp.weight": ("F32", (4, d)),
            f"blk.{b}.ffn_up_exps.weight": ("IQ4_XS", (4, 3, 256)),
            f"blk.{b}.ffn_norm.weight": ("F32", (d,)),
        }
    spec |= {"output_norm.weight": ("F32", (d,)), "output.weight": ("Q5_1", (vocab, d))}
    tensors: dict[str, tuple[str, np.ndarray]] = {}
    refs: dict[str, np.ndarray] = {}
    for name, (t, shape) in spec.items():
        stored, ref = stored_tensor(t, shape, rng)
        tensors[name], refs[name] = (t, stored), ref
    return tensors, refs


@pytest.fixture(scope="module")
def llama_gguf(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    tensors, refs = _llama_tensors(np.random.default_rng(5))

    def setup(w: gguf.GGUFWriter) -> None:
        w.add_block_count(2)
        w.add_embedding_length(32)
        w.add_head_count(4)
        w.add_head_count_kv(2)
        w.add_expert_count(4)
        w.add_token_list([f"t{i}" for i in range(40)])

    path = write_gguf(tmp_path_factory.mktemp("llama") / "tiny-llama.gguf", tensors, setup=setup)
    return path, refs


def test_layout_detects_blocks_of_a_llama_gguf(llama_gguf: tuple[Path, dict[str, np.ndarray]]
                                               ) -> None:
    path, _ = llama_gguf
    with GGUFReader(path) as r:
        lay = arch_layout(r.tensors())
        assert r.arch_info()["block_count"] == 2 and r.arch_info()["vocab_size"] == 40
    blocks = [g for g in lay.groups if g.kind == "block"]
    assert len(blocks) == 2
    assert lay.slots["blk.1.attn_q.weight"] == (1, "attn_q.weight")
    assert lay.slots["blk.0.ffn_up_exps.weight"] == (0, "ffn_up_exps.weight")
    assert "token_embd.weight" not in lay.slots
    pos = {p.tensor: p for p in lay.placements}
    for sub in ("attn_q.weight", "ffn_up_exps.weight"):  # same slot offset in every block
        rel = {(pos[f"blk.{b}.{sub}"].c_x - blocks[b].c_x, pos[f"blk.{b}.{sub}"].c_y
                - blocks[b].c_y) for b in range(2)}
        assert len(rel) == 1
    # a fused expert tensor [E, r, c] is viewed (E*r) x c: its experts' matrices stacked
    assert (pos["blk.0.ffn_up_exps.weight"].c_w, pos["blk.0.ffn_up_exps.weight"].c_h) == (256, 12)


def test_factory_and_render(tmp_path: Path, llama_gguf: tuple[Path, dict[str, np.ndarray]]
                            ) -> None:
    path, refs = llama_gguf
    assert detect_format(path) == "gguf"
    with open_checkpoint([path]) as ck:
        assert ck.format == "gguf"
        assert [t.name for t in ck.tensors()][0] == "token_embd.weight"
        assert_bits_equal(ck.read("blk.0.attn_k.weight", 3, 9, 10, 250),
                          view2d(refs["blk.0.attn_k.weight"])[3:9, 10:250])
        assert ck.metadata[str(path)]["llama.block_count"] == 2
    bv = BundleView(weightvis.render([path], tmp_path / "b", workers=1).out)
    m = bv.manifest
    assert m["tensors"]["blk.0.ffn_up_exps.weight"]["dtype"] == "IQ4_XS"
    assert m["tensors"]["blk.0.ffn_up_exps.weight"]["shape"] == [4, 3, 256]
    assert m["tensors"]["blk.0.ffn_up_exps.weight"]["view"] == [12, 256]
    scene = bv.scene()
    assert sum(g["kind"] == "block" for g in scene["groups"]) == 2
    rng = np.random.default_rng(9)
    for name, ref in refs.items():
        v = ref.reshape(m["tensors"][name]["view"])  # the manifest's 2-D view (row-major)
        s = m["tensors"][name]["scale"]
        for _ in range(6):
            r, c = int(rng.integers(v.shape[0])), int(rng.integers(v.shape[1]))
            x, y = bv.element_pixel(name, r, c)
            assert bv.pixel(scene, x, y) == index_of(v[r, c], s), (name, r, c)


# -- speed on a real-sized vocabulary ---------------------------------------------------------
N_VOCAB = 262_144


@pytest.fixture(scope="session")
def big_vocab_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like a llama.cpp file: 262,144 token strings + f32 scores + i32 token types."""
    rng = np.random.default_rng(4)
    tokens = [f"tok{i}" + "▁ab"[: i % 4] * (i % 7) for i in range(N_VOCAB)]

    def setup(w: gguf.GGUFWriter) -> None:
        w.add_block_count(1)
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_scores(rng.standard_normal(N_VOCAB).astype(np.float32).tolist())
        w.add_token_types([1] * N_VOCAB)

    tensors = {"token_embd.weight": ("Q8_0", gguf.quants.quantize(
                   rng.standard_normal((256, 64)).astype(np.float32), Q.Q8_0)),
               "blk.0.attn_q.weight": ("F16", rng.standard_normal((64, 64)).astype(np.float16))}
    return write_gguf(tmp_path_factory.mktemp("session-vocab") / "vocab262k.gguf", tensors,
                      setup=setup)


@pytest.mark.slow
def test_262k_vocabulary_opens_fast(big_vocab_gguf: Path) -> None:
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        r = GGUFReader(big_vocab_gguf)
        names = [t.name for t in r.tensors()]
        best = min(best, time.perf_counter() - t0)
        r.close()
    assert names == ["token_embd.weight", "blk.0.attn_q.weight"]
    assert best < 1.0, f"opening took {best:.3f} s"
    with GGUFReader(big_vocab_gguf) as r:
        assert r.metadata["tokenizer.ggml.tokens"] == {"type": "STRING", "length": N_VOCAB}
        assert r.metadata["tokenizer.ggml.scores"] == {"type": "FLOAT32", "length": N_VOCAB}
        assert r.metadata["tokenizer.ggml.token_type"] == {"type": "INT32", "length": N_VOCAB}
        assert r.arch_info()["vocab_size"] == N_VOCAB
        assert r.info("token_embd.weight").shape == (256, 64)
