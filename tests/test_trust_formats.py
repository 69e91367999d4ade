"""Issue 11 "Trust", part A: hostile and broken safetensors / GGUF inputs. Each test rebuilds one
input an attack broke weightvis with and asserts the exact outcome - a correct render, or exit 2
with one line naming the file (and tensor / byte offset) - within a wall-clock bound."""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from weightvis import bundle, cli
from weightvis.errors import FormatError, WeightvisWarning
from weightvis.formats import open_checkpoint
from weightvis.formats.gguf import MAX_ARRAY_DEPTH, SHORT_STRING_MAX, GGUFReader
from weightvis.formats.sidecars import read_config
from weightvis.layout import arch_layout
from weightvis.types import TensorInfo
from weightvis.untrusted import json_safe, printable, printable_json

from .fuzz.common import broken_promise, run_cli
from .gguf_fixtures import build_gguf, gguf_string, kv_u32, tensor_info
from .trust_fixtures import (
    LLAMA_SHAPES,
    assert_one_error,
    deadline,
    run_main,
    sharded_folder,
    small_gguf,
    st_file,
    st_header,
    st_raw,
    strict_json,
)

_F32 = np.arange(16, dtype=np.float32).tobytes()


def render(src: Path | str, out: Path, *extra: str, seconds: float = 90) -> object:
    return run_main([str(src), "--out", str(out), "--workers", "1", "-q", *extra],
                    seconds=seconds)


# -- 1. block indices and counts are bounded before iteration ---------------------------------
def _infos(names: list[str]) -> list[TensorInfo]:
    return [TensorInfo(n, (4, 8), "F32", "m.safetensors") for n in names]


def test_sparse_block_numbering_lays_out_like_dense_numbering() -> None:
    """Blocks 0 and 999,999,999 take the canvas of blocks 0 and 1 (gaps are closed, not
    iterated; the name index takes block indices of up to 9 digits)."""
    dense = _infos(["model.layers.0.x.weight", "model.layers.1.x.weight"])
    sparse = _infos(["model.layers.0.x.weight", "model.layers.999999999.x.weight"])
    with deadline(10):
        a, b = arch_layout(dense), arch_layout(sparse)
    assert (b.c_width, b.c_height) == (a.c_width, a.c_height)
    assert [p[1:] for p in b.placements] == [p[1:] for p in a.placements]
    assert [g.label for g in b.groups] == ["block 0", "block 999999999"]


def test_a_few_missing_blocks_still_leave_holes() -> None:
    """Blocks 0 and 2: three grid cells, block 2 where a block 2 belongs (the old layout)."""
    holes = arch_layout(_infos(["model.layers.0.x.weight", "model.layers.2.x.weight"]))
    full = arch_layout(_infos([f"model.layers.{i}.x.weight" for i in range(3)]))
    rect = {g.label: (g.c_x, g.c_y) for g in holes.groups}
    rect_full = {g.label: (g.c_x, g.c_y) for g in full.groups}
    assert rect["block 2"] == rect_full["block 2"] != rect_full["block 1"]


def test_193_byte_file_naming_block_10_to_the_11_renders_fast(tmp_path: Path) -> None:
    p = tmp_path / "sparse.safetensors"
    header = {"model.layers.0.x.weight": {"dtype": "F32", "shape": [1],
                                          "data_offsets": [0, 4]},
              "model.layers.100000000000.x.weight": {"dtype": "F32", "shape": [1],
                                                     "data_offsets": [4, 8]}}
    p.write_bytes(st_raw(json.dumps(header, separators=(",", ":")), b"\0" * 8))
    assert len(p.read_bytes()) < 200
    t0 = time.perf_counter()
    r = render(p, tmp_path / "out", seconds=60)
    assert r.code == 0, r.stderr
    assert time.perf_counter() - t0 < 60
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["scenes"][0]["width"] * m["scenes"][0]["height"] < 10_000


def test_tensor_count_over_the_bound_is_one_error(tmp_path: Path) -> None:
    p = st_file(tmp_path / "m.safetensors", {f"w{i}": ("F32", (1,)) for i in range(5)})
    r = run_main(["info", str(p)], env={"WEIGHTVIS_MAX_TENSORS": "4"})
    assert_one_error(r, str(p), "5 tensors", "WEIGHTVIS_MAX_TENSORS")
    assert run_main(["info", str(p)], env={"WEIGHTVIS_MAX_TENSORS": "5"}).code == 0
    g = tmp_path / "m.gguf"
    g.write_bytes(build_gguf([], [tensor_info(f"w{i}", (4,), 0, 32 * i) for i in range(5)],
                             _F32 * 10))
    assert_one_error(run_main(["info", str(g)], env={"WEIGHTVIS_MAX_TENSORS": "4"}),
                     str(g), "tensor count 5", "WEIGHTVIS_MAX_TENSORS")


# -- 2. what a header claims is checked against what the file holds -------------------------
@pytest.mark.parametrize("case, spec, needle", [
    ("dim past int64", {"dtype": "U8", "shape": [0, 1 << 64], "data_offsets": [0, 0]},
     "integers in [0, 2**63)"),
    ("rank 65", {"dtype": "U8", "shape": [1] * 65, "data_offsets": [0, 1]}, "at most 64"),
    ("numel vs span", {"dtype": "F32", "shape": [1 << 32, 1 << 32], "data_offsets": [0, 4]},
     "needs 73786976294838206464"),
    ("offsets past the end", {"dtype": "F32", "shape": [1], "data_offsets": [10**30, 10**30 + 4]},
     "past the end of the file"),
    ("offsets backwards", {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]},
     "not increasing"),
    ("float offsets", {"dtype": "F32", "shape": [1], "data_offsets": [0.0, 4.0]},
     "is not [begin, end]"),
])
def test_safetensors_claims_checked(tmp_path: Path, case: str, spec: dict[str, object],
                                    needle: str) -> None:
    p = tmp_path / "bad.safetensors"
    p.write_bytes(st_raw(json.dumps({"w": spec}), b"\0" * 8))
    line = assert_one_error(run_main(["info", str(p)], seconds=20), str(p), "tensor 'w'",
                            needle)
    assert len(line) < 400  # a 30-digit offset is not printed in full


def test_safetensors_overlap_and_name_length(tmp_path: Path) -> None:
    p = tmp_path / "overlap.safetensors"
    p.write_bytes(st_raw(json.dumps({
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}), b"\0" * 12))
    assert_one_error(run_main(["info", str(p)]), str(p), "tensor 'b'", "overlaps 'a'")
    p = st_file(tmp_path / "long.safetensors", {"n" * 70_000: ("F32", (1,))})
    assert_one_error(run_main(["info", str(p)]), str(p), "tensor name of 70000 characters")


def _kv_raw(key: str, vtype: int, payload: bytes) -> bytes:
    return gguf_string(key) + struct.pack("<I", vtype) + payload


@pytest.mark.parametrize("case", ["string near 2**63", "array count", "nested 900 deep",
                                  "tensor name 70k", "kv count", "unknown ggml type"])
def test_gguf_claims_checked(tmp_path: Path, case: str) -> None:
    ok = [tensor_info("w", (8, 2), 0, 0)]
    if case == "string near 2**63":
        raw = build_gguf([_kv_raw("k", 8, struct.pack("<Q", (1 << 63) - 5) + b"abc")], ok, _F32)
        needles = ["at byte 37", "KV 'k'", "string length 9223372036854775803"]
    elif case == "array count":
        raw = build_gguf([_kv_raw("k", 9, struct.pack("<IQ", 8, 1 << 62))], ok, _F32)
        needles = ["at byte 37", "KV 'k'", "array of 4611686018427387904 STRING"]
    elif case == "nested 900 deep":
        v = struct.pack("<IQ", 4, 1) + struct.pack("<I", 7)
        for _ in range(900):
            v = struct.pack("<IQ", 9, 1) + v
        raw = build_gguf([_kv_raw("k", 9, v)], ok, _F32)
        needles = ["KV 'k[0]", f"arrays nested deeper than {MAX_ARRAY_DEPTH} levels"]
    elif case == "tensor name 70k":
        raw = build_gguf([], [tensor_info("n" * 70_000, (8, 2), 0, 0)], _F32)
        needles = ["name of tensor 0: a name of 70000 bytes", "at byte 24"]
    elif case == "kv count":
        raw = build_gguf([kv_u32(f"k{i}", i) for i in range(65_537)], ok, _F32)
        needles = ["KV count 65537 is over the bound of 65536", "at byte 16"]
    else:
        raw = build_gguf([], [tensor_info("w", (32,), 77, 0)], _F32 * 8)
        needles = ["tensor 'w'", "unknown ggml type 77"]
    p = tmp_path / "bad.gguf"
    p.write_bytes(raw)
    assert_one_error(run_main(["info", str(p)], seconds=30), str(p), *needles)


def test_gguf_long_string_value_is_a_summary_not_read(tmp_path: Path) -> None:
    big = "x" * (SHORT_STRING_MAX + 1)
    p = small_gguf(tmp_path / "m.gguf", kv={"general.description": big})
    with GGUFReader(p) as r:
        assert r.metadata["general.description"] == {"type": "STRING", "length": len(big)}
        assert r.metadata["general.name"] == "tiny"


def test_q8_k_is_a_clear_error_with_the_default_workers(tmp_path: Path) -> None:
    import gguf

    from .gguf_fixtures import write_gguf
    ts = gguf.constants.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_K][1]
    rng = np.random.default_rng(0)
    p = write_gguf(tmp_path / "q8k.gguf", {
        "blk.0.attn_q.weight": ("Q8_K", rng.integers(0, 255, (256, 2 * ts), dtype=np.uint8)),
        "blk.1.attn_q.weight": ("Q8_K", rng.integers(0, 255, (256, 2 * ts), dtype=np.uint8))})
    o = run_cli([str(p), "--out", str(tmp_path / "out"), "-q"], timeout=120)
    assert broken_promise(o) is None, broken_promise(o)
    assert o.returncode == 2 and "Q8_K" in o.stderr and "attn_q.weight" in o.stderr, o.stderr
    assert not (tmp_path / "out").exists()


# -- 3. huge integers, deep nesting, lone surrogates ------------------------------------------
def test_integer_of_5000_digits_in_a_header(tmp_path: Path) -> None:
    p = tmp_path / "digits.safetensors"
    p.write_bytes(st_raw('{"w":{"dtype":"F32","shape":[' + "9" * 5000 +
                         '],"data_offsets":[0,4]}}', b"\0" * 4))
    for args in (["info", str(p)], [str(p), "--out", str(tmp_path / "o"), "--workers", "1"]):
        assert_one_error(run_main(args), str(p), "at byte 37",
                         "integer of more than 4300 digits")


def test_json_nested_past_the_parser_and_past_the_bound(tmp_path: Path) -> None:
    p = tmp_path / "deep.safetensors"
    p.write_bytes(st_raw('{"__metadata__":{"a":' + "[" * 5000 + "]" * 5000 + '},' +
                         '"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', b"\0" * 4))
    assert_one_error(run_main(["info", str(p)]), str(p), "nested too deeply to parse")
    p.write_bytes(st_raw('{"__metadata__":{"a":' + "[" * 900 + "]" * 900 + '},' +
                         '"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', b"\0" * 4))
    # past the bound of 64 levels (or past the parser, if the stack is already deep)
    assert_one_error(run_main(["info", str(p)]), str(p), "nested")


def test_block_index_of_5000_digits_renders(tmp_path: Path) -> None:
    p = st_file(tmp_path / "m.safetensors", {"model.layers." + "1" * 5000 + ".x.weight":
                                             ("F32", (2, 2)),
                                             "model.layers.0.x.weight": ("F32", (2, 2))})
    assert run_main(["info", str(p)]).code == 0
    r = render(p, tmp_path / "out")
    assert r.code == 0, r.stderr


def test_lone_surrogate_name_info_json_and_errors(tmp_path: Path) -> None:
    name = "w\ud800\x1b[31m"
    p = tmp_path / "s.safetensors"
    p.write_bytes(st_raw(json.dumps({name: {"dtype": "F32", "shape": [2],
                                            "data_offsets": [0, 8]}}), b"\0" * 8))
    r = run_main(["info", "--json", str(p)])
    assert r.code == 0 and r.stderr == ""
    r.stdout.encode("utf-8")  # printable as UTF-8
    assert strict_json(r.stdout)["tensors"][0]["name"] == name  # the exact name, escaped
    r = run_main(["info", "--scan", "-q", str(p)])
    assert r.code == 0 and "w\\ud800\\x1b[31m" in r.stdout, ascii(r.stdout)
    p.write_bytes(st_raw(json.dumps({name: {"dtype": "Q9", "shape": [2],
                                            "data_offsets": [0, 8]}}), b"\0" * 8))
    line = assert_one_error(run_main(["info", str(p)]), str(p), "'w\\ud800\\x1b[31m'")
    line.encode("utf-8")


def test_lone_surrogate_name_renders(tmp_path: Path) -> None:
    p = st_file(tmp_path / "s.safetensors", {"w\ud800": ("F32", (2, 2))})
    r = render(p, tmp_path / "out")
    assert r.code == 0, r.stderr
    m = strict_json((tmp_path / "out" / "manifest.json").read_text("utf-8"))
    assert "w\ud800" in m["tensors"]


# -- 4. non-finite metadata: kept as strings, checked before rendering --------------------------
def test_nan_metadata_safetensors_gguf_config(tmp_path: Path) -> None:
    d = tmp_path / "st"
    d.mkdir()
    header, size = st_header({"w": ("F32", (2, 2))})
    text = json.dumps(header)[:-1] + ', "__metadata__": {"a": NaN, "b": [Infinity, -1e999]}}'
    (d / "model.safetensors").write_bytes(st_raw(text, b"\0" * size))
    (d / "config.json").write_text('{"rope_theta": NaN, "hidden_size": 2}')
    g = small_gguf(tmp_path / "g.gguf", kv={"x.f": float("nan"), "x.g": float("-inf")})
    for src, where, want in ((d, "model.safetensors", {"a": "NaN", "b": ["Infinity",
                                                                        "-Infinity"]}),
                             (g, "g.gguf", {"x.f": "NaN", "x.g": "-Infinity"})):
        r = run_main(["info", "--json", str(src)])
        assert r.code == 0, r.stderr
        strict_json(r.stdout)
        out = tmp_path / f"out-{where}"
        assert render(src, out).code == 0
        m = strict_json((out / "manifest.json").read_text())
        meta = m["source"]["metadata"][where]
        assert {k: meta[k] for k in want} == want
    m = strict_json((tmp_path / "out-model.safetensors" / "manifest.json").read_text())
    assert m["source"]["config"] == {"rope_theta": "NaN", "hidden_size": 2}


def test_long_metadata_string_is_kept_as_its_length(tmp_path: Path) -> None:
    thumb = "A" * (SHORT_STRING_MAX + 1)
    p = st_file(tmp_path / "m.safetensors", {"w": ("F32", (2,))},
                {"modelspec.thumbnail": thumb, "format": "pt"})
    with open_checkpoint([p]) as r:
        assert r.metadata[str(p)] == {"modelspec.thumbnail": {"type": "STRING",
                                                              "length": len(thumb)},
                                      "format": "pt"}


def test_bad_metadata_stops_the_run_before_any_tile(tmp_path: Path) -> None:
    p = tmp_path / "deep.safetensors"
    p.write_bytes(st_raw('{"__metadata__":{"a":' + "[" * 100 + "]" * 100 + '},' +
                         '"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', b"\0" * 4))
    stages: list[str] = []
    with pytest.raises(FormatError, match="nested deeper than 64"):
        bundle.render([p], tmp_path / "out", workers=1,
                      progress=lambda stage, n, total: stages.append(stage))
    assert stages == []
    assert not (tmp_path / "out").exists()


def test_json_safe_and_printable_json() -> None:
    assert json_safe({"a": (float("inf"), {1: float("nan")})}, "f") == \
        {"a": ["Infinity", {"1": "NaN"}]}
    assert json_safe(10 ** 5000, "f") == "<integer of 16610 bits>"
    text = printable_json({"n\x9b\u202e\ud800": [float("nan")]}, indent=None)
    assert text == '{"n\\u009b\\u202e\\ud800": ["NaN"]}'
    assert strict_json(text) == {"n\x9b\u202e\ud800": ["NaN"]}


# -- 5. sidecars: bounded, typed, broken ones ignored with a warning ----------------------------
def _model_dir(tmp_path: Path) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    st_file(d / "model.safetensors", dict(list(LLAMA_SHAPES.items())[:6]))
    return d


@pytest.mark.parametrize("config, warned", [
    ('{"num_hidden_layers": "x", "num_attention_heads": [1], "model_type": {"a": 1}, '
     '"tie_word_embeddings": "yes", "hidden_size": -8, "vocab_size": 16}',
     ["'hidden_size' is -8", "'num_attention_heads' is [1]", "'num_hidden_layers' is 'x'",
      "'tie_word_embeddings' is 'yes'", "'model_type' is {'a': 1}"]),
    ("[1, 2]", ["config.json holds a JSON list, not an object"]),
    ('{"a": ' + "[" * 5000 + "]" * 5000 + "}", ["nested too deeply to parse"]),
    ('{"a": 1,}', ["not valid JSON"]),
    (b"\xff\xfe{}", ["not UTF-8 text"]),
])
def test_broken_config_is_ignored_with_a_warning(tmp_path: Path, config: str | bytes,
                                                 warned: list[str]) -> None:
    d = _model_dir(tmp_path)
    cfg = d / "config.json"
    cfg.write_bytes(config.encode() if isinstance(config, str) else config)
    r = run_main(["info", "--json", str(d)])
    assert r.code == 0, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == len(warned), lines
    for ln, w in zip(lines, warned, strict=True):
        assert ln.startswith(f"weightvis: warning: {cfg}: ") and w in ln, (ln, w)
    arch = json.loads(r.stdout)["architecture"]
    assert arch["vocab_size"] == 16 and arch["heads"] is None
    r = render(d, tmp_path / "out")
    assert r.code == 0 and r.stderr.count("weightvis: warning:") == len(warned), r.stderr
    config_kept = json.loads((tmp_path / "out" / "manifest.json").read_text())["source"]["config"]
    assert not any(k in config_kept for k in ("num_hidden_layers", "num_attention_heads"))


def test_config_too_big_fifo_loop_and_link_out_are_ignored(tmp_path: Path) -> None:
    d = _model_dir(tmp_path)
    cfg = d / "config.json"
    cfg.write_text(json.dumps({"hidden_size": 8, "pad": "x" * 200}))
    r = run_main(["info", str(d)], env={"WEIGHTVIS_MAX_SIDECAR_BYTES": "100"})
    assert r.code == 0 and "over the 100-byte bound (WEIGHTVIS_MAX_SIDECAR_BYTES): ignored" \
        in r.stderr, r.stderr
    cfg.unlink()
    os.mkfifo(cfg)
    r = run_main(["info", str(d)], seconds=20)  # never blocks on the FIFO
    assert r.code == 0 and "config.json is not a regular file: ignored" in r.stderr
    cfg.unlink()
    cfg.symlink_to(cfg)
    r = run_main(["info", str(d)], seconds=20)
    assert r.code == 0 and "config.json cannot be read (Too many levels of symbolic links)" \
        in r.stderr, r.stderr
    cfg.unlink()
    secret = tmp_path / "secret.json"
    secret.write_text('{"token": "hunter2"}')
    cfg.symlink_to(secret)
    out = tmp_path / "out"
    r = render(d, out)
    assert r.code == 0 and "resolves outside" in r.stderr
    assert "hunter2" not in (out / "manifest.json").read_text()


def test_model_card_loop_nul_and_size(tmp_path: Path) -> None:
    from weightvis.diff_analysis import detect_finetune

    a, b = tmp_path / "base", tmp_path / "ft"
    a.mkdir()
    b.mkdir()
    card = b / "README.md"
    (b / "loop").symlink_to(b / "loop")
    card.write_text("---\nbase_model: ../ft/loop\n---\n")
    assert detect_finetune([str(a)], [str(b)]) is None
    card.write_text("---\nbase_model: zz\x00zz/\x00\n---\n")  # NUL: no match, no crash
    assert detect_finetune([str(a)], [str(b)]) is None
    card.write_text("---\nbase_model: ../ba\x00se\n---\n")  # NULs are dropped
    assert detect_finetune([str(a)], [str(b)]) == "B's model card declares base_model: ../base"
    card.unlink()
    card.symlink_to(card)
    with pytest.warns(WeightvisWarning, match="model card cannot be read"):
        assert detect_finetune([str(a)], [str(b)]) is None
    card.unlink()
    card.write_text("---\nbase_model: base\n---\n" + "x" * 300)
    os.environ["WEIGHTVIS_MAX_SIDECAR_BYTES"] = "100"
    try:
        with pytest.warns(WeightvisWarning, match="over the 100-byte bound"):
            assert detect_finetune([str(a)], [str(b)]) is None
    finally:
        del os.environ["WEIGHTVIS_MAX_SIDECAR_BYTES"]


def test_read_config_keeps_good_fields_exactly(tmp_path: Path) -> None:
    p = tmp_path / "config.json"
    doc = {"hidden_size": 8, "num_key_value_heads": None, "tie_word_embeddings": False,
           "model_type": "llama", "rope_scaling": {"type": "linear", "factor": 2.0}}
    p.write_text(json.dumps(doc))
    assert read_config(p) == doc


# -- 6. a sharded index names only files inside its folder --------------------------------------
def test_index_shards_outside_the_folder_are_refused(tmp_path: Path) -> None:
    (tmp_path / "private").mkdir()
    secret = st_file(tmp_path / "private" / "x.safetensors", {"secret.weight": ("F32", (4, 4))})
    cases = {
        "dotdot": ("../private/x.safetensors", "leads out of the index's folder"),
        "absolute": (str(secret), "is an absolute path"),
        "link": ("s.safetensors", "resolves outside"),
        "nul": ("a\x00b", "is not a file name"),
    }
    for label, (shard, needle) in cases.items():
        d = tmp_path / label
        d.mkdir()
        if label == "link":
            (d / "s.safetensors").symlink_to(secret)
        idx = d / "model.safetensors.index.json"
        idx.write_text(json.dumps({"weight_map": {"secret.weight": shard}}))
        for src in (d, idx):
            out = tmp_path / f"out-{label}"
            line = assert_one_error(render(src, out), str(idx), needle, "refused")
            assert not out.exists(), line
    # a folder without index: a linked file is refused too; passed by itself, it renders
    d = tmp_path / "linkdir"
    d.mkdir()
    (d / "model.safetensors").symlink_to(secret)
    assert_one_error(run_main(["info", str(d)]), "resolves outside", "refused")
    assert run_main(["info", str(d / "model.safetensors")]).code == 0
    assert render(secret, tmp_path / "out-explicit").code == 0


def test_hugging_face_cache_links_into_blobs_are_followed(tmp_path: Path) -> None:
    src = sharded_folder(tmp_path / "src", shards=2)
    repo = tmp_path / "hub" / "models--org--tiny"
    blobs, snap = repo / "blobs", repo / "snapshots" / "0123abcd"
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    for i, f in enumerate(sorted(src.iterdir())):
        (blobs / f"sha{i}").write_bytes(f.read_bytes())
        (snap / f.name).symlink_to(Path("../../blobs") / f"sha{i}")
    r = run_main(["info", "--json", str(snap)])
    assert r.code == 0 and r.stderr == "", r.stderr
    info = json.loads(r.stdout)
    assert info["tensor_count"] == len(LLAMA_SHAPES) and len(info["files"]) == 2
    assert info["architecture"]["model_type"] == "llama"  # the linked config.json was read
    r = render(snap / "model.safetensors.index.json", tmp_path / "out")
    assert r.code == 0, r.stderr


def test_weight_map_values_must_be_strings(tmp_path: Path) -> None:
    d = sharded_folder(tmp_path / "m", shards=2)
    idx = d / "model.safetensors.index.json"
    doc = json.loads(idx.read_text())
    doc["weight_map"]["lm_head.weight"] = {"a": 1}
    idx.write_text(json.dumps(doc))
    assert_one_error(run_main(["info", str(d)]), str(idx), "tensor 'lm_head.weight'",
                     "not a file name")


@pytest.mark.slow
def test_folder_of_10000_shards_renders_or_says_why(tmp_path: Path) -> None:
    d = tmp_path / "shards"
    d.mkdir()
    weight_map = {}
    for i in range(10_000):
        name = f"model.layers.{i}.mlp.up_proj.weight"
        header, size = st_header({name: ("F32", (2, 4))})
        f = f"model-{i:05d}-of-10000.safetensors"
        (d / f).write_bytes(st_raw(json.dumps(header), b"\0" * size))
        weight_map[name] = f
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    o = run_cli(["info", str(d)], timeout=120)
    assert broken_promise(o) is None and o.returncode == 0, broken_promise(o) or o.stderr
    assert "tensors     10000" in o.stdout
    o = run_cli([str(d), "--out", str(tmp_path / "out"), "--workers", "2", "-q"], timeout=300)
    assert broken_promise(o) is None, broken_promise(o)
    # 10,000 mapped files per process: renders where the open-file limit allows a forked
    # worker its own beside the ones it inherits, else says so in one line
    assert o.returncode == 0 or "ulimit -n" in o.stderr, o.stderr


# -- 7. names reach the terminal escaped ------------------------------------------------------
_HOSTILE = "w\x1b]0;pwned\x07\x1b[2J\x9b31m\u202eevil"


def test_printable_escapes_exactly_the_dangerous_characters() -> None:
    assert printable(_HOSTILE) == "w\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\u202eevil"
    assert printable("résumé ✓ 名前 \\x") == "résumé ✓ 名前 \\x"
    assert printable("a\nb\tc\x7f\ud800") == "a\\x0ab\\x09c\\x7f\\ud800"


def test_info_scan_compare_and_errors_escape_names(tmp_path: Path) -> None:
    a = st_file(tmp_path / "a.safetensors", {_HOSTILE: ("F32", (2, 2)), "ok": ("F32", (2,))})
    b = st_file(tmp_path / "b.safetensors", {_HOSTILE + "2": ("F32", (2, 2))})
    (tmp_path / "z.safetensors").write_bytes(st_raw(json.dumps(
        {_HOSTILE: {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}), b"\0" * 16))
    outputs = [run_main(["info", "--scan", "-q", str(tmp_path / "z.safetensors")]),
               run_main(["info", str(a), str(b)]), run_main(["info", "--json", str(a)])]
    for r in outputs:
        assert r.code == 0, r.stderr
        assert not any(c in r.stdout for c in "\x1b\x07\x9b\u202e"), ascii(r.stdout)
    assert f"all zero: {printable(_HOSTILE)}" in outputs[0].stdout
    assert f"{'only in A':22s} {printable(_HOSTILE)}" in outputs[1].stdout
    assert json.loads(outputs[2].stdout)["tensors"][0]["name"] in (_HOSTILE, "ok")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(st_raw(json.dumps({_HOSTILE: {"dtype": "F32", "shape": [4],
                                                  "data_offsets": [0, 8]}}), b"\0" * 8))
    assert_one_error(run_main(["info", str(bad)]), "\\x1b]0;pwned")
    odd = tmp_path / "\x1b[2Jodd.safetensors"
    odd.write_bytes(bad.read_bytes())
    assert_one_error(run_main(["info", str(odd)]), "\\x1b[2Jodd.safetensors")


def test_diff_summary_escapes_names() -> None:
    class Res:
        out, seconds, tiles_reused = "o", 1.0, 0
        diff = {"summary": {"identical": 0, "changed": 1, "shape_changed": 0, "only_in_a": 0,
                            "only_in_b": 0, "elements_changed": 1, "elements_compared": 4},
                "mode": "general", "diagnosis": ["tensor " + _HOSTILE + " changed"],
                "pairs": [{"status": "changed", "name": _HOSTILE,
                           "numbers": {"rel": 0.5, "changed": 1}}]}
    text = cli._diff_summary(Res())
    assert not any(c in text for c in "\x1b\x07\x9b\u202e")
    assert printable(_HOSTILE) in text


# -- 8. the last resort still names the input in one line ----------------------------------------
def test_unexpected_exception_is_one_line_naming_the_input(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    p = st_file(tmp_path / "m.safetensors", {"w": ("F32", (2,))})
    import weightvis.info

    def boom(*a: object, **k: object) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(weightvis.info, "_info", boom)
    r = run_main(["info", str(p)])
    lines = r.stderr.splitlines()
    assert r.code == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith(f"weightvis: error: {p}: internal error (RecursionError: ")


def test_open_checkpoint_of_a_good_sharded_folder_is_unchanged(tmp_path: Path) -> None:
    d = sharded_folder(tmp_path / "m", shards=3)
    with open_checkpoint([d]) as r:
        assert sorted(t.name for t in r.tensors()) == sorted(LLAMA_SHAPES)
        assert r.config["num_attention_heads"] == 2
        assert all(v == {"format": "pt"} for v in r.metadata.values())
