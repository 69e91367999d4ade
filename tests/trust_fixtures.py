"""Builders of hostile and broken safetensors / GGUF inputs, and an in-process CLI runner with a
wall-clock bound: shared by ``test_trust_formats.py`` and the fuzz targets of these formats."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import struct
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

# -- safetensors -------------------------------------------------------------------------------


def st_raw(header: str | bytes, data: bytes = b"") -> bytes:
    """A safetensors file from a header's text as given (it may hold NaN, huge integers, lone
    surrogate escapes ...), padded with spaces to 8 bytes like the reference writer."""
    raw = header.encode("utf-8") if isinstance(header, str) else header
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def st_header(tensors: Mapping[str, tuple[str, Sequence[int]]],
              metadata: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], int]:
    """A well-formed header dict for ``{name: (dtype, shape)}`` packed in order, and the data
    size it needs."""
    sizes = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
             "U8": 1, "BOOL": 1}
    header: dict[str, Any] = {}
    if metadata is not None:
        header["__metadata__"] = dict(metadata)
    off = 0
    for name, (dtype, shape) in tensors.items():
        n = int(np.prod(shape, dtype=np.int64)) * sizes[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    return header, off


def st_file(path: Path, tensors: Mapping[str, tuple[str, Sequence[int]]],
            metadata: Mapping[str, Any] | None = None, *, seed: int = 0) -> Path:
    """A well-formed safetensors file with random data (names may be anything: the header is
    written with ``json.dumps``, lone surrogates as their escapes)."""
    header, size = st_header(tensors, metadata)
    data = np.random.default_rng(seed).integers(0, 255, size, dtype=np.uint8).tobytes()
    # F32/F16/BF16 bytes that happen to be NaN are fine: weightvis draws NaN
    path.write_bytes(st_raw(json.dumps(header), data))
    return path


LLAMA_SHAPES: dict[str, tuple[str, tuple[int, ...]]] = {
    "model.embed_tokens.weight": ("F32", (16, 8)),
    "model.layers.0.self_attn.q_proj.weight": ("F32", (8, 8)),
    "model.layers.0.self_attn.k_proj.weight": ("F32", (4, 8)),
    "model.layers.0.mlp.up_proj.weight": ("BF16", (12, 8)),
    "model.layers.0.input_layernorm.weight": ("F32", (8,)),
    "model.layers.1.self_attn.q_proj.weight": ("F32", (8, 8)),
    "model.layers.1.self_attn.k_proj.weight": ("F32", (4, 8)),
    "model.layers.1.mlp.up_proj.weight": ("BF16", (12, 8)),
    "model.layers.1.input_layernorm.weight": ("F32", (8,)),
    "model.norm.weight": ("F32", (8,)),
    "lm_head.weight": ("F16", (16, 8)),
}
"""A tiny Llama-shaped checkpoint (two blocks), a seed for tests and fuzzing."""


def sharded_folder(folder: Path, shards: int = 2, *, index: bool = True) -> Path:
    """``LLAMA_SHAPES`` split over ``shards`` files, with ``model.safetensors.index.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    names = list(LLAMA_SHAPES)
    weight_map = {}
    for i in range(shards):
        part = {n: LLAMA_SHAPES[n] for n in names[i::shards]}
        f = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        st_file(folder / f, part, {"format": "pt"}, seed=i)
        weight_map.update(dict.fromkeys(part, f))
    if index:
        (folder / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps(
        {"model_type": "llama", "hidden_size": 8, "num_attention_heads": 2,
         "num_key_value_heads": 1, "num_hidden_layers": 2, "vocab_size": 16}))
    return folder


# -- GGUF --------------------------------------------------------------------------------------


def small_gguf(path: Path, *, kv: Mapping[str, Any] | None = None, seed: int = 0) -> Path:
    """A tiny llama GGUF written by gguf-py (F32, F16, Q8_0 and Q4_0 tensors, two blocks)."""
    from .gguf_fixtures import stored_tensor, write_gguf

    rng = np.random.default_rng(seed)
    tensors = {"token_embd.weight": ("Q8_0", stored_tensor("Q8_0", (16, 32), rng)[0]),
               "output_norm.weight": ("F32", stored_tensor("F32", (32,), rng)[0])}
    for b in range(2):
        tensors[f"blk.{b}.attn_q.weight"] = ("Q4_0", stored_tensor("Q4_0", (32, 32), rng)[0])
        tensors[f"blk.{b}.attn_k.weight"] = ("F16", stored_tensor("F16", (8, 32), rng)[0])
        tensors[f"blk.{b}.attn_norm.weight"] = ("F32", stored_tensor("F32", (32,), rng)[0])
    base = {"llama.block_count": 2, "llama.embedding_length": 32,
            "llama.attention.head_count": 4, "llama.attention.head_count_kv": 1,
            "llama.rope.freq_base": 10000.0, "general.name": "tiny",
            "tokenizer.ggml.tokens": [f"t{i}" for i in range(100)]}
    return write_gguf(path, tensors, kv={**base, **(kv or {})})


# -- running the CLI in this process -----------------------------------------------------------


class Overtime(BaseException):
    """A case ran past its wall-clock bound (a BaseException: no handler of weightvis takes it
    for one of its own failures)."""


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise ``Overtime`` in this (main) thread after ``seconds`` of wall-clock time."""
    def fire(signum: int, frame: Any) -> None:
        raise Overtime(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Ran(NamedTuple):
    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [ln for ln in self.stderr.splitlines() if ln.startswith("weightvis: error: ")]


def run_main(args: Sequence[str], *, seconds: float = 60.0,
             env: Mapping[str, str] | None = None) -> Ran:
    """``weightvis.cli.main(args)`` in this process, stdout and stderr captured (an exception
    that escapes ``main`` propagates: that is a failure of the promise), bounded in time."""
    from weightvis.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    os.environ.pop("WEIGHTVIS_DEBUG", None)
    try:
        with deadline(seconds), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return Ran(code, out.getvalue(), err.getvalue())


def assert_one_error(r: Ran, *needles: str) -> str:
    """Exit 2 and exactly one stderr line, a ``weightvis: error:`` naming every needle, that
    is not the last resort's ``internal error`` and holds no raw control character."""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.code == 2, r
    assert len(lines) == 1 and lines[0].startswith("weightvis: error: "), r.stderr
    assert "internal error" not in lines[0], lines[0]
    assert not any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in lines[0]), ascii(lines[0])
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def strict_json(text: str) -> Any:
    """``json.loads`` that refuses NaN / Infinity (which JSON does not have)."""
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)
