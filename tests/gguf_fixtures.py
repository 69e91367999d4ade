"""GGUF fixture helpers: files written with ``gguf.GGUFWriter`` (the reference writer), random
raw blocks for the dequantize-only ggml types, and a hand builder for malformed files."""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gguf
import gguf.quants
import numpy as np

Q = gguf.GGMLQuantizationType

# byte offsets of the fp16 scale fields inside one block (ggml-common.h struct layouts); random
# bytes there could be Inf/NaN, so they are overwritten with finite values
F16_FIELDS: dict[str, tuple[int, ...]] = {
    "Q4_0": (0,), "Q4_1": (0, 2), "Q5_0": (0,), "Q5_1": (0, 2), "Q8_0": (0,),
    "Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,),
    "IQ2_XXS": (0,), "IQ2_XS": (0,), "IQ3_XXS": (0,), "IQ1_S": (0,), "IQ4_NL": (0,),
    "IQ3_S": (0,), "IQ2_S": (0,), "IQ4_XS": (0,), "TQ1_0": (52,), "TQ2_0": (64,),
    "IQ1_M": (), "MXFP4": (), "NVFP4": (),
}

QUANTIZABLE = ("BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "TQ1_0", "TQ2_0", "MXFP4")
"""Types ``gguf.quants.quantize`` writes (besides F32/F16)."""

RAW_ONLY = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S",
            "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "IQ1_M", "NVFP4")
"""Dequantize-only types: written as random raw blocks."""


def block_geometry(type_name: str) -> tuple[int, int]:
    """(block_size, type_size) of a ggml type."""
    return gguf.constants.GGML_QUANT_SIZES[Q[type_name]]


def raw_blocks(type_name: str, shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """Random bytes for a tensor of numpy ``shape`` stored as ``type_name``: uint8 of the byte
    shape (``shape[:-1] + (shape[-1] // block_size * type_size,)``), scale fields finite."""
    bs, ts = block_geometry(type_name)
    assert shape[-1] % bs == 0
    n_blocks = int(np.prod(shape)) // bs
    b = rng.integers(0, 256, (n_blocks, ts), dtype=np.uint8)
    scales = (rng.uniform(0.01, 2.0, (n_blocks, 2)) * rng.choice([-1, 1], (n_blocks, 2)))
    scales16 = scales.astype(np.float16).view(np.uint8).reshape(n_blocks, 2, 2)
    for k, off in enumerate(F16_FIELDS[type_name]):
        b[:, off:off + 2] = scales16[:, k]
    if type_name == "IQ1_M":  # the fp16 scale is spread over the top nibbles of 4 u16
        b[:, 55] &= 0x3F      # exponent bits 13-14 clear: finite, moderate
    if type_name == "MXFP4":  # E8M0 exponent byte: keep 2**e finite and moderate
        b[:, 0] = rng.integers(110, 140, n_blocks, dtype=np.uint8)
    return b.reshape(*shape[:-1], shape[-1] // bs * ts)


def values(shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(tuple(shape)).astype(np.float32)


def stored_tensor(type_name: str, shape: Sequence[int], rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(array to hand GGUFWriter.add_tensor, reference float32 values of numpy ``shape``).

    Float/int types: values; quantizable types: ``gguf.quants.quantize`` output; others: raw
    blocks. The reference is ``gguf.quants.dequantize`` of the stored bytes (numpy casts for the
    integer and F64 types)."""
    shape = tuple(shape)
    if type_name in ("I8", "I16", "I32", "I64"):
        dt = np.dtype(type_name.replace("I", "int"))
        info = np.iinfo(dt)
        a = rng.integers(max(info.min, -(1 << 40)), min(info.max, 1 << 40), shape, dtype=dt,
                         endpoint=True)
        return a, a.astype(np.float32)
    if type_name == "F64":
        a = rng.standard_normal(shape) * 1e3
        return a, a.astype(np.float32)
    if type_name in ("F32", "F16"):
        a = values(shape, rng).astype(np.float32 if type_name == "F32" else np.float16)
        return a, gguf.quants.dequantize(a.view(np.uint8), Q[type_name]).reshape(shape)
    if type_name in QUANTIZABLE:
        q = gguf.quants.quantize(values(shape, rng), Q[type_name])
    else:
        q = raw_blocks(type_name, shape, rng)
    ref = gguf.quants.dequantize(q, Q[type_name])
    assert ref.shape == shape and ref.dtype == np.float32
    return q, ref


def write_gguf(path: Path, tensors: Mapping[str, tuple[str, np.ndarray]], *,
               arch: str = "llama", kv: Mapping[str, Any] | None = None,
               setup: Any = None) -> Path:
    """Write ``{name: (ggml type name, stored array)}`` with GGUFWriter; ``kv`` values go through
    ``add_key_value`` with their type guessed (int -> UINT32, float -> FLOAT32, str, list);
    ``setup(writer)`` may add more."""
    w = gguf.GGUFWriter(str(path), arch)
    for k, v in (kv or {}).items():
        if isinstance(v, bool):
            w.add_bool(k, v)
        elif isinstance(v, int):
            w.add_uint32(k, v)
        elif isinstance(v, float):
            w.add_float32(k, v)
        elif isinstance(v, str):
            w.add_string(k, v)
        else:
            w.add_array(k, v)
    if setup is not None:
        setup(w)
    for name, (type_name, arr) in tensors.items():
        if arr.dtype == np.uint8 and type_name not in ("I8",):
            w.add_tensor(name, arr, raw_dtype=Q[type_name])
        else:
            w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# -- hand-built files (malformed on purpose) --------------------------------------------------
def gguf_string(s: str | bytes, length: int | None = None) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b) if length is None else length) + b


def kv_u32(key: str, v: int) -> bytes:
    return gguf_string(key) + struct.pack("<II", 4, v)


def kv_string(key: str, v: str) -> bytes:
    return gguf_string(key) + struct.pack("<I", 8) + gguf_string(v)


def tensor_info(name: str, ne: Sequence[int], qtype: int, offset: int) -> bytes:
    return (gguf_string(name) + struct.pack("<I", len(ne)) + struct.pack(f"<{len(ne)}Q", *ne)
            + struct.pack("<IQ", qtype, offset))


def build_gguf(kvs: Sequence[bytes] = (), infos: Sequence[bytes] = (), data: bytes = b"", *,
               version: int = 3, n_tensors: int | None = None, n_kv: int | None = None,
               alignment: int = 32, magic: bytes = b"GGUF") -> bytes:
    """Raw GGUF bytes from pre-encoded KV pairs and tensor infos; counts may lie."""
    head = magic + struct.pack("<IQQ", version, len(infos) if n_tensors is None else n_tensors,
                               len(kvs) if n_kv is None else n_kv)
    body = head + b"".join(kvs) + b"".join(infos)
    body += b"\0" * (-len(body) % alignment)
    return body + data


def hf_llama_to_gguf(hf: Mapping[str, np.ndarray], path: Path, *, n_layers: int, heads: int,
                     kv_heads: int, hidden: int, qtype: str = "Q8_0") -> Path:
    """Write HF llama-style weights the way llama.cpp's converter does: GGUF names, Q and K rows
    permuted for its RoPE layout, 2-D tensors quantized (``qtype``), vectors F32."""
    def permute(w: np.ndarray, n: int) -> np.ndarray:
        return w.reshape(n, 2, w.shape[0] // n // 2, *w.shape[1:]).swapaxes(1, 2).reshape(
            w.shape)

    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(n_layers)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_embedding_length(hidden)
    for name, v in hf.items():
        g = tmap.get_name(name, try_suffixes=(".weight",))
        assert g is not None, name
        if name.endswith("q_proj.weight"):
            v = permute(v, heads)
        elif name.endswith("k_proj.weight"):
            v = permute(v, kv_heads)
        if v.ndim == 2:
            w.add_tensor(g, gguf.quants.quantize(v, Q[qtype]), raw_dtype=Q[qtype])
        else:
            w.add_tensor(g, v.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
