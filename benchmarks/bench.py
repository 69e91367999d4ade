#!/usr/bin/env python3
"""weightvis end-to-end benchmark.

Generates (once, cached) a deterministic Llama-shaped bf16 safetensors checkpoint of a requested
parameter count, renders it with ``python -m weightvis`` in a subprocess while sampling the memory
of the whole process tree, renders an image with the same pixel count with libvips ``dzsave`` in
the same run, and reports the throughput ratio, peak memory, the diff/plain time ratio and the
1 → N worker speed-up against the project's performance targets (see ``benchmarks/README.md``).

    python benchmarks/bench.py --params 0.5e9 --scaling --out-json benchmarks/results/last.json

Needs psutil and pyvips (``pip install 'weightvis[bench]'``); pyvips also needs libvips
(Debian/Ubuntu: ``apt install libvips42``, or ``pip install pyvips-binary``).
Only numpy is used to write the checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = REPO_ROOT / "bench-cache"

GENERATOR_VERSION = 1
"""Bump when the generated values change: it is part of the cache key."""
EDITS_VERSION = 1
"""Bump when the planted diff edits change: it is part of the edited copy's cache key."""

SHARD_BYTES = 2_000_000_000
"""Shard limit of the generated checkpoint (Hugging Face's "2GB")."""
TILE_SIZE = 512

TARGET_VIPS_RATIO = 2.5
TARGET_PEAK_RSS_BYTES = 1 << 30
TARGET_PEAK_RSS_MIN_CHECKPOINT = 3_000_000_000
TARGET_DIFF_RATIO = 1.5

INSTALL_HINT = (
    "install the benchmark extras: pip install 'weightvis[bench]'  (psutil + pyvips); "
    "pyvips also needs libvips: apt install libvips42  (or pip install pyvips-binary)"
)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# =================================================================================================
# Architecture: a Llama-shaped configuration close to a requested parameter count
# =================================================================================================

@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One tensor of the synthetic checkpoint.

    ``kind`` selects the value model (see ``_value_model``); ``layer`` is -1 outside blocks.
    """

    name: str
    shape: tuple[int, ...]
    kind: str
    layer: int = -1

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return 2 * self.numel


@dataclasses.dataclass(frozen=True)
class LlamaShape:
    """Hyper-parameters of a Llama-style decoder (HF ``LlamaForCausalLM`` tensor names).

    >>> LlamaShape(256, 2, 768, 4, 1, 64, 1000, tied=True).n_params
    1764608
    """

    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool

    def tensors(self) -> list[TensorSpec]:
        h, i, kv = self.hidden, self.intermediate, self.kv_heads * self.head_dim
        out = [TensorSpec("model.embed_tokens.weight", (self.vocab, h), "embed")]
        for n in range(self.layers):
            p = f"model.layers.{n}."
            out += [
                TensorSpec(p + "self_attn.q_proj.weight", (self.heads * self.head_dim, h), "q", n),
                TensorSpec(p + "self_attn.k_proj.weight", (kv, h), "k", n),
                TensorSpec(p + "self_attn.v_proj.weight", (kv, h), "v", n),
                TensorSpec(p + "self_attn.o_proj.weight", (h, self.heads * self.head_dim), "o", n),
                TensorSpec(p + "mlp.gate_proj.weight", (i, h), "gate", n),
                TensorSpec(p + "mlp.up_proj.weight", (i, h), "up", n),
                TensorSpec(p + "mlp.down_proj.weight", (h, i), "down", n),
                TensorSpec(p + "input_layernorm.weight", (h,), "norm", n),
                TensorSpec(p + "post_attention_layernorm.weight", (h,), "norm", n),
            ]
        out.append(TensorSpec("model.norm.weight", (h,), "norm"))
        if not self.tied:
            out.append(TensorSpec("lm_head.weight", (self.vocab, h), "lm_head"))
        return out

    @property
    def n_params(self) -> int:
        return sum(t.numel for t in self.tensors())

    def hf_config(self) -> dict[str, Any]:
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab,
            "tie_word_embeddings": self.tied,
            "hidden_act": "silu",
            "rms_norm_eps": 1e-5,
            "max_position_embeddings": 4096,
            "torch_dtype": "bfloat16",
        }


def _shape_for_hidden(hidden: int, layers: int, vocab: int, tied: bool) -> LlamaShape:
    head_dim = 64 if hidden <= 2048 else 128
    heads = hidden // head_dim
    kv_heads = max(1, heads // 4)                    # GQA, 4 query heads per kv head
    while heads % kv_heads:
        kv_heads -= 1
    intermediate = max(256, int(round(2.7 * hidden / 256)) * 256)
    return LlamaShape(hidden, layers, intermediate, heads, kv_heads, head_dim, vocab, tied)


def choose_shape(params: int, *, vocab: int = 32000, tied: bool = False,
                 tolerance: float = 0.02, depth_ratio: float = 96.0) -> LlamaShape:
    """The Llama shape closest to ``params`` parameters with a plausible width/depth.

    Among hidden sizes (multiples of 256 up to 2048, of 512 above) whose best layer count lands
    within ``tolerance`` of the request, pick the one whose hidden/layers ratio is closest (in log)
    to ``depth_ratio`` (Llama-2-7B: 128, TinyLlama: 93, Qwen2-0.5B: 37); if none is within
    tolerance, the closest count wins.
    """
    if params <= 0:
        raise ValueError(f"params must be positive, got {params}")
    candidates: list[tuple[float, float, LlamaShape]] = []
    hidden_sizes = list(range(256, 2049, 256)) + list(range(2560, 16385, 512))
    for hidden in hidden_sizes:
        base = _shape_for_hidden(hidden, 0, vocab, tied)
        fixed = base.n_params
        per_layer = _shape_for_hidden(hidden, 1, vocab, tied).n_params - fixed
        layers = max(1, round((params - fixed) / per_layer))
        shape = dataclasses.replace(base, layers=layers)
        err = abs(shape.n_params - params) / params
        aspect = abs(math.log((hidden / layers) / depth_ratio))
        candidates.append((err, aspect, shape))
    good = [c for c in candidates if c[0] <= tolerance]
    if good:
        return min(good, key=lambda c: (c[1], c[0]))[2]
    return min(candidates, key=lambda c: (c[0], c[1]))[2]


# =================================================================================================
# Values: float32 noise with per-tensor scale, per-row/per-head variation, outlier dims -> bf16
# =================================================================================================

_CHUNK_ELEMENTS = 1 << 20      # float32 scratch per step (4 MiB): cache-friendly conversion
_WRITE_ELEMENTS = 8 << 20      # bf16 bytes gathered per pwrite (16 MiB)


def f32_to_bf16(x: np.ndarray, out: np.ndarray, scratch: np.ndarray) -> None:
    """Round float32 -> bf16 bits, round-to-nearest-even (finite inputs). Arrays in, ``out=``.

    ``x`` float32 (any shape, C-contiguous), ``out`` uint16 of the same size, ``scratch`` uint32
    of the same size; ``x`` is left unchanged.
    """
    u = x.reshape(-1).view(np.uint32)
    t = scratch.reshape(-1)
    np.right_shift(u, 16, out=t)
    np.bitwise_and(t, 1, out=t)
    t += np.uint32(0x7FFF)
    t += u
    np.right_shift(t, 16, out=t)
    out.reshape(-1)[...] = t


def bf16_to_f32(b: np.ndarray) -> np.ndarray:
    return (b.astype(np.uint32) << 16).view(np.float32)


@dataclasses.dataclass(frozen=True)
class _ValueModel:
    """x[r, c] = noise * std * row_scale[r] * col_scale[c] + offset."""

    std: float
    row_scale: np.ndarray | None
    col_scale: np.ndarray | None
    offset: float = 0.0


def _lognormal(rng: np.random.Generator, sigma: float, n: int) -> np.ndarray:
    return np.exp(rng.normal(0.0, sigma, n)).astype(np.float32)


def _value_model(spec: TensorSpec, shape: LlamaShape, rng: np.random.Generator,
                 outlier_dims: np.ndarray) -> _ValueModel:
    """Per-tensor scales drawn from ``rng`` (before any noise, so the stream is deterministic).

    Modelled on trained Llama checkpoints: init-like std 1/sqrt(fan_in) with a per-tensor gain,
    per-row (per-token / per-channel) lognormal variation, per-head variation in attention,
    a few residual-stream outlier dimensions shared by every layer (large columns of the matrices
    that read the residual stream, large rows of those that write it), under-trained embedding rows
    near zero, norm weights near 1.
    """
    gain = float(np.exp(rng.normal(0.0, 0.2)))
    rows = spec.shape[0] if len(spec.shape) == 2 else 1
    cols = spec.shape[-1]
    hd = shape.head_dim

    def outlier_vector(n: int, factor: float) -> np.ndarray:
        v = np.ones(n, np.float32)
        v[outlier_dims[outlier_dims < n]] = factor
        return v

    if spec.kind == "norm":
        return _ValueModel(std=0.05 * gain, row_scale=None, col_scale=None, offset=1.0)
    if spec.kind in ("embed", "lm_head"):
        row = _lognormal(rng, 0.3 if spec.kind == "embed" else 0.2, rows)
        if spec.kind == "embed":
            row[-min(256, rows // 100 + 1):] *= 0.05         # reserved / never-seen tokens
        std = 0.02 * gain if spec.kind == "embed" else gain / math.sqrt(cols)
        return _ValueModel(std, row, outlier_vector(cols, 3.0 if spec.kind == "embed" else 1.5))
    if spec.kind in ("q", "k", "v"):
        head = np.repeat(_lognormal(rng, 0.3, rows // hd), hd)
        row = head * _lognormal(rng, 0.1, rows)
        return _ValueModel(gain / math.sqrt(cols), row, outlier_vector(cols, 6.0))
    if spec.kind in ("gate", "up"):
        return _ValueModel(gain / math.sqrt(cols), _lognormal(rng, 0.15, rows),
                           outlier_vector(cols, 5.0))
    if spec.kind in ("o", "down"):
        row = outlier_vector(rows, 4.0) * _lognormal(rng, 0.1, rows)
        col = (np.repeat(_lognormal(rng, 0.2, cols // hd), hd) if spec.kind == "o"
               else _lognormal(rng, 0.1, cols))
        return _ValueModel(0.7 * gain / math.sqrt(cols), row, col)
    raise AssertionError(spec.kind)


def _tensor_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, 0x57E1, index])


def _outlier_dims(seed: int, hidden: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 0xD1])
    return np.sort(rng.choice(hidden, size=max(2, hidden // 512), replace=False))


def generate_tensor(spec: TensorSpec, index: int, shape: LlamaShape,
                    seed: int) -> Iterator[np.ndarray]:
    """Yield the tensor's bf16 bits (uint16, C order) in consecutive pieces of <= 16 MiB.

    Deterministic in (seed, index, spec): each tensor has its own generator, so tensors can be
    produced in any order or in parallel.
    """
    rng = _tensor_rng(seed, index)
    model = _value_model(spec, shape, rng, _outlier_dims(seed, shape.hidden))
    rows = spec.shape[0] if len(spec.shape) == 2 else 1
    cols = spec.shape[-1]
    step_rows = max(1, _CHUNK_ELEMENTS // cols)
    scratch_f = np.empty(step_rows * cols, np.float32)
    scratch_u = np.empty(step_rows * cols, np.uint32)
    out = np.empty(max(_WRITE_ELEMENTS, step_rows * cols), np.uint16)
    filled = 0
    for r0 in range(0, rows, step_rows):
        r1 = min(rows, r0 + step_rows)
        n = (r1 - r0) * cols
        z = scratch_f[:n]
        rng.standard_normal(dtype=np.float32, out=z)
        z2 = z.reshape(r1 - r0, cols)
        if model.row_scale is not None:
            z2 *= (model.row_scale[r0:r1] * np.float32(model.std))[:, None]
        else:
            z *= np.float32(model.std)
        if model.col_scale is not None:
            z2 *= model.col_scale[None, :]
        if model.offset:
            z += np.float32(model.offset)
        if filled + n > out.size:
            yield out[:filled]
            filled = 0
        f32_to_bf16(z, out[filled:filled + n], scratch_u[:n])
        filled += n
    if filled:
        yield out[:filled]


# =================================================================================================
# Writing the checkpoint: headers first, then tensors streamed in parallel with pwrite
# =================================================================================================

def _safetensors_header(specs: Sequence[TensorSpec],
                        metadata: dict[str, str]) -> tuple[bytes, list[int]]:
    """The 8-byte length + JSON header (space-padded to 8 bytes) and each tensor's data offset."""
    header: dict[str, Any] = {"__metadata__": metadata}
    offsets, pos = [], 0
    for t in specs:
        header[t.name] = {"dtype": "BF16", "shape": list(t.shape),
                          "data_offsets": [pos, pos + t.nbytes]}
        offsets.append(pos)
        pos += t.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw, offsets


def _shard(specs: Sequence[TensorSpec], limit: int) -> list[list[TensorSpec]]:
    shards: list[list[TensorSpec]] = [[]]
    size = 0
    for t in specs:
        if shards[-1] and size + t.nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    return shards


def _pwrite_all(fd: int, data: np.ndarray, offset: int) -> None:
    view = memoryview(data.data).cast("B")
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def write_checkpoint(directory: Path, shape: LlamaShape, seed: int, *,
                     shard_bytes: int = SHARD_BYTES, threads: int | None = None) -> dict[str, Any]:
    """Write the synthetic checkpoint into ``directory`` (must not exist); return a summary.

    Memory is bounded by ``threads`` × ~40 MiB of scratch whatever the size.
    """
    specs = shape.tensors()
    shards = _shard(specs, shard_bytes)
    directory.mkdir(parents=True)
    names = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    meta = {"format": "pt", "generator": f"weightvis-bench synthetic v{GENERATOR_VERSION}",
            "seed": str(seed)}
    jobs: list[tuple[int, TensorSpec, int, int]] = []   # (index, spec, fd, absolute offset)
    fds: list[int] = []
    index = {t.name: i for i, t in enumerate(specs)}
    weight_map = {}
    try:
        for fname, members in zip(names, shards, strict=True):
            head, offsets = _safetensors_header(members, meta)
            fd = os.open(directory / fname, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            fds.append(fd)
            os.ftruncate(fd, len(head) + sum(t.nbytes for t in members))
            _pwrite_all(fd, np.frombuffer(head, np.uint8), 0)
            for t, off in zip(members, offsets, strict=True):
                jobs.append((index[t.name], t, fd, len(head) + off))
                weight_map[t.name] = fname

        def run(job: tuple[int, TensorSpec, int, int]) -> None:
            i, spec, fd, pos = job
            for piece in generate_tensor(spec, i, shape, seed):
                _pwrite_all(fd, piece, pos)
                pos += piece.nbytes

        jobs.sort(key=lambda j: -j[1].nbytes)            # largest first: balanced threads
        with ThreadPoolExecutor(threads or os.cpu_count() or 1) as ex:
            for _ in ex.map(run, jobs):
                pass
        for fd in fds:
            os.fsync(fd)
    finally:
        for fd in fds:
            os.close(fd)
    total = sum(t.nbytes for t in specs)
    if len(shards) > 1:
        (directory / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
    (directory / "config.json").write_text(json.dumps(shape.hf_config(), indent=2) + "\n")
    return {"files": names, "bytes": total, "tensors": len(specs), "elements": shape.n_params}


def _fmt_count(n: float) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.4g}{unit}"
    return str(int(n))


def parse_count(text: str) -> int:
    """'0.5e9', '500M', '1.5B', '20m' -> int."""
    m = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([kKmMbBgG]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(
            f"not a parameter count: {text!r} (e.g. 0.5e9, 500M, 1.5B)")
    mult = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9}[m.group(2).lower()]
    try:
        value = float(m.group(1)) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a parameter count: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"parameter count must be >= 1: {text!r}")
    return int(round(value))


def checkpoint_key(params: int, seed: int, vocab: int, tied: bool, shard_bytes: int) -> str:
    key = f"llama-{_fmt_count(params)}-seed{seed}-vocab{vocab}-{'tied' if tied else 'untied'}"
    if shard_bytes != SHARD_BYTES:
        key += f"-shard{shard_bytes}"
    return key + f"-g{GENERATOR_VERSION}"


def ensure_checkpoint(cache: Path, params: int, *, seed: int, vocab: int, tied: bool,
                      shard_bytes: int = SHARD_BYTES,
                      threads: int | None = None) -> tuple[Path, dict[str, Any]]:
    """The cached checkpoint directory for these settings, generated when missing.

    Written to ``<key>.tmp-<pid>`` and renamed, so an interrupted run never leaves a half cache.
    Summary (shape, sizes, generation time) is kept beside it in ``<key>.json``.
    """
    key = checkpoint_key(params, seed, vocab, tied, shard_bytes)
    final, meta_path = cache / key, cache / f"{key}.json"
    if final.is_dir() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        meta["cached"] = True
        return final, meta
    shape = choose_shape(params, vocab=vocab, tied=tied)
    log(f"generating {key}: {shape} ({_fmt_count(shape.n_params)} params, "
        f"{shape.n_params * 2 / 1e9:.2f} GB bf16)")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f"{key}.tmp-{os.getpid()}"
    if final.exists():
        shutil.rmtree(final)
    t0 = time.perf_counter()
    summary = write_checkpoint(tmp, shape, seed, shard_bytes=shard_bytes, threads=threads)
    gen_s = time.perf_counter() - t0
    log(f"generated in {gen_s:.1f} s ({summary['bytes'] / gen_s / 1e6:.0f} MB/s)")
    meta = {"key": key, "requested_params": params, "seed": seed,
            "shape": dataclasses.asdict(shape),
            **summary, "generation_s": round(gen_s, 3), "generator_version": GENERATOR_VERSION}
    tmp_meta = meta_path.with_suffix(f".json.tmp-{os.getpid()}")
    tmp_meta.write_text(json.dumps(meta, indent=2) + "\n")
    tmp.rename(final)
    tmp_meta.rename(meta_path)
    meta["cached"] = False
    return final, meta


# ----- planted edits for the diff benchmark -------------------------------------------------------

def _read_header(path: Path) -> tuple[int, dict[str, Any]]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return 8 + n, json.loads(f.read(n))


def _locate(directory: Path) -> dict[str, tuple[Path, int, tuple[int, ...]]]:
    """name -> (file, absolute data offset, shape) for every tensor of a (sharded) checkpoint."""
    out = {}
    for f in sorted(directory.glob("*.safetensors")):
        start, header = _read_header(f)
        for name, info in header.items():
            if name != "__metadata__":
                out[name] = (f, start + info["data_offsets"][0], tuple(info["shape"]))
    return out


def planted_edits(shape: LlamaShape) -> list[dict[str, Any]]:
    """A review-sized change: one zeroed row, one element nudged, one tensor rescaled, one row
    block fine-tuned with small noise, a slice of the final norm set to 2."""
    L = shape.layers
    rows_q = shape.heads * shape.head_dim
    i = shape.intermediate
    return [
        {"tensor": "model.layers.0.self_attn.q_proj.weight", "op": "zero_row",
         "row": min(100, rows_q - 1)},
        {"tensor": f"model.layers.{L // 2}.mlp.down_proj.weight", "op": "add_element",
         "row": min(7, shape.hidden - 1), "col": min(42, i - 1), "value": 0.5},
        {"tensor": f"model.layers.{L - 1}.self_attn.o_proj.weight", "op": "scale", "value": 1.01},
        {"tensor": f"model.layers.{L // 3}.mlp.up_proj.weight", "op": "add_noise",
         "rows": [min(256, i - 1), min(512, i)], "std": 1e-3},
        {"tensor": "model.norm.weight", "op": "set_slice", "cols": [0, min(64, shape.hidden)],
         "value": 2.0},
    ]


def _apply_edit(mm: np.ndarray, edit: dict[str, Any], rng: np.random.Generator) -> None:
    m2 = mm.reshape(mm.shape[0], -1) if mm.ndim == 2 else mm.reshape(1, -1)
    op = edit["op"]
    if op == "zero_row":
        m2[edit["row"], :] = 0
        return
    if op == "add_element":
        sl: Any = (slice(edit["row"], edit["row"] + 1), slice(edit["col"], edit["col"] + 1))
    elif op == "scale":
        sl = (slice(None), slice(None))
    elif op == "add_noise":
        sl = (slice(*edit["rows"]), slice(None))
    elif op == "set_slice":
        sl = (slice(None), slice(*edit["cols"]))
    else:
        raise AssertionError(op)
    v = bf16_to_f32(m2[sl])
    if op == "add_element":
        v = v + np.float32(edit["value"])
    elif op == "scale":
        v = v * np.float32(edit["value"])
    elif op == "add_noise":
        v = v + rng.normal(0, edit["std"], v.shape).astype(np.float32)
    else:
        v = np.full_like(v, edit["value"])
    out = np.empty(v.shape, np.uint16)
    f32_to_bf16(np.ascontiguousarray(v), out, np.empty(v.shape, np.uint32))
    m2[sl] = out


def ensure_edited_copy(src: Path, meta: dict[str, Any],
                       seed: int) -> tuple[Path, list[dict[str, Any]]]:
    """``src`` copied with ``planted_edits`` applied, cached as ``<src>-edits<v>``."""
    final = src.parent / f"{src.name}-edits{EDITS_VERSION}"
    shape = LlamaShape(**meta["shape"])
    edits = planted_edits(shape)
    if final.is_dir():
        return final, edits
    tmp = src.parent / f"{final.name}.tmp-{os.getpid()}"
    log(f"making edited copy {final.name}")
    shutil.copytree(src, tmp)
    where = _locate(tmp)
    rng = np.random.default_rng([seed, 0xED17])
    for e in edits:
        f, off, shp = where[e["tensor"]]
        mm = np.memmap(f, np.uint16, "r+", offset=off, shape=shp)
        _apply_edit(mm, e, rng)
        mm.flush()
        del mm
    tmp.rename(final)
    return final, edits


# =================================================================================================
# Running a command and measuring the whole process tree
# =================================================================================================

def _require_psutil() -> Any:
    try:
        import psutil
    except ImportError:
        sys.exit(f"bench: psutil is missing; {INSTALL_HINT}")
    return psutil


@dataclasses.dataclass
class Measured:
    """What a measured subprocess did. Memory in bytes, times in seconds."""

    cmd: list[str]
    returncode: int
    wall_s: float
    cpu_user_s: float
    cpu_sys_s: float
    peak_rss_sum: int           # peak over samples of sum(RSS) over the process tree
    peak_rss_anon_sum: int      # same, RSS minus file-backed/shared pages (psutil rss - shared)
    peak_pss_sum: int           # peak of sum(PSS), sampled less often (shared pages split fairly)
    peak_processes: int         # most processes seen alive at once in the tree
    max_rss_single: int         # wait4() ru_maxrss: largest RSS of any one (reaped) process
    rusage_children_maxrss: int  # getrusage(RUSAGE_CHILDREN).ru_maxrss after the run (cumulative)
    samples: int
    sampler_cpu_s: float        # CPU the sampler itself used (competes with the measured run)
    other_cpu_s: float          # CPU used by everything else on the machine during the run
    stdout_tail: str
    stderr_tail: str
    load_before: float | None = None  # other load (cores) seen just before the run
    attempts: int = 1                 # runs made to get one with little other load

    @property
    def cpu_s(self) -> float:
        return self.cpu_user_s + self.cpu_sys_s


def _tail(path: Path, n: int = 3000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-n:].decode("utf-8", "replace")


def _busy_cpu_s(psutil: Any) -> float:
    """Machine-wide non-idle CPU seconds so far (all cores)."""
    t = psutil.cpu_times()
    idle = ("idle", "iowait", "guest", "guest_nice")   # guest time is already in user time
    return float(sum(v for k, v in t._asdict().items() if k not in idle))


def wait_for_quiet(max_wait: float, *, busy_cores: float = 0.1, window: float = 3.0) -> float:
    """Wait (at most ``max_wait`` s) until the machine's other load is under ``busy_cores``
    averaged over ``window`` s; return the load (cores) seen last."""
    psutil = _require_psutil()
    deadline = time.perf_counter() + max_wait
    announced = False
    while True:
        b0, t0 = _busy_cpu_s(psutil), time.perf_counter()
        time.sleep(window)
        load = (_busy_cpu_s(psutil) - b0) / (time.perf_counter() - t0)
        if load < busy_cores or time.perf_counter() >= deadline:
            if load >= busy_cores:
                log(f"machine still busy ({load:.2f} cores used by others); measuring anyway")
            return load
        if not announced:
            log(f"waiting up to {max_wait:.0f} s for a quiet machine ({load:.2f} cores busy)")
            announced = True


def _process_tree(root: int, psutil: Any) -> list[int]:
    """``root`` and all its descendants. Uses Linux's /proc/PID/task/TID/children (cheap: no scan
    of every process, unlike ``psutil.Process.children``), else psutil."""
    if not os.path.exists(f"/proc/{root}/task/{root}/children"):
        try:
            return [root, *(c.pid for c in psutil.Process(root).children(recursive=True))]
        except psutil.NoSuchProcess:
            return []
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return out


def run_measured(cmd: list[str], *, env: dict[str, str] | None = None, interval: float = 0.05,
                 pss_every: int = 20, timeout: float | None = None,
                 cwd: Path | None = None) -> Measured:
    """Run ``cmd``; sample RSS of it and all its descendants every ``interval`` s.

    The exit is collected with ``os.wait4`` so the rusage (CPU time, max RSS) is this run's,
    including every descendant the command itself waited for.
    """
    psutil = _require_psutil()
    with tempfile.TemporaryDirectory(prefix="wv-bench-log-") as logdir:
        out_p, err_p = Path(logdir) / "out", Path(logdir) / "err"
        sys0 = _busy_cpu_s(psutil)
        with open(out_p, "wb") as fo, open(err_p, "wb") as fe:
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=env, cwd=cwd)
        stop = threading.Event()
        peak = {"rss": 0, "anon": 0, "pss": 0, "procs": 0, "samples": 0}

        def sample() -> None:
            known: dict[int, Any] = {}       # pid -> psutil.Process, reused between samples
            k = 0
            while not stop.is_set():
                rss = anon = pss = alive = 0
                for pid in _process_tree(proc.pid, psutil):
                    try:
                        p = known.get(pid)
                        if p is None:
                            p = known[pid] = psutil.Process(pid)
                        mi = p.memory_info()
                        if k % pss_every == 0:
                            pss += p.memory_full_info().pss
                    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                        known.pop(pid, None)
                        continue
                    alive += 1
                    rss += mi.rss
                    anon += mi.rss - mi.shared
                peak["rss"] = max(peak["rss"], rss)
                peak["anon"] = max(peak["anon"], anon)
                peak["pss"] = max(peak["pss"], pss)
                peak["procs"] = max(peak["procs"], alive)
                peak["samples"] += 1
                k += 1
                stop.wait(interval)

        sampler_cpu: list[float] = []

        def sample_and_time() -> None:
            r0 = resource.getrusage(resource.RUSAGE_THREAD)
            sample()
            r1 = resource.getrusage(resource.RUSAGE_THREAD)
            sampler_cpu.append((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime))

        sampler = threading.Thread(target=sample_and_time, daemon=True)
        sampler.start()
        deadline = None if timeout is None else t0 + timeout
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG if deadline else 0)
            if pid:
                break
            if deadline and time.perf_counter() > deadline:
                proc.kill()
                pid, status, ru = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
        wall = time.perf_counter() - t0
        busy = _busy_cpu_s(psutil) - sys0
        proc.returncode = os.waitstatus_to_exitcode(status)
        stop.set()
        sampler.join()
        rc = resource.getrusage(resource.RUSAGE_CHILDREN)
        return Measured(
            cmd=cmd, returncode=proc.returncode, wall_s=wall,
            cpu_user_s=ru.ru_utime, cpu_sys_s=ru.ru_stime,
            peak_rss_sum=peak["rss"], peak_rss_anon_sum=peak["anon"], peak_pss_sum=peak["pss"],
            peak_processes=peak["procs"], max_rss_single=ru.ru_maxrss * 1024,
            rusage_children_maxrss=rc.ru_maxrss * 1024, samples=peak["samples"],
            sampler_cpu_s=sampler_cpu[0] if sampler_cpu else float("nan"),
            other_cpu_s=max(0.0, busy - ru.ru_utime - ru.ru_stime
                            - (sampler_cpu[0] if sampler_cpu else 0)),
            stdout_tail=_tail(out_p), stderr_tail=_tail(err_p))


def dir_stats(path: Path) -> dict[str, int]:
    files = nbytes = tiles = 0
    for root, _dirs, names in os.walk(path):
        for n in names:
            files += 1
            nbytes += os.stat(os.path.join(root, n)).st_size
            if n.endswith((".png", ".avif", ".webp", ".jpg")):
                tiles += 1
    return {"files": files, "bytes": nbytes, "tiles": tiles}


def warm_page_cache(directory: Path) -> float:
    """Read every file once so each render starts from a warm page cache (as a re-run would)."""
    t0 = time.perf_counter()
    buf = bytearray(16 << 20)
    for f in sorted(directory.iterdir()):
        if f.is_file():
            with open(f, "rb", buffering=0) as fh:
                while fh.readinto(buf):
                    pass
    return time.perf_counter() - t0


# =================================================================================================
# weightvis renders
# =================================================================================================

def _python_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + old if old else "")
    env.update(extra or {})
    return env


def weightvis_available(python: str) -> tuple[bool, str]:
    p = subprocess.run([python, "-m", "weightvis", "--help"], capture_output=True, text=True,
                       env=_python_env(), cwd=REPO_ROOT)
    lines = (p.stderr or p.stdout).strip().splitlines()
    return p.returncode == 0, lines[-1] if lines else f"exit {p.returncode}"


def diff_available(python: str) -> bool:
    """True when ``weightvis diff --help`` answers with the diff command's own usage (the plain
    render parser would take "diff" for a source path and print its usage instead)."""
    p = subprocess.run([python, "-m", "weightvis", "diff", "--help"], capture_output=True,
                       text=True, env=_python_env(), cwd=REPO_ROOT)
    return p.returncode == 0 and re.search(r"usage:\s*\S*weightvis diff\b", p.stdout) is not None


def spread_subfolders(folder: Path) -> None:
    """Ask ext2/3/4 to place ``folder``'s subfolders in block groups of their own, as it does for
    top-level folders (the "T" attribute, ``chattr +T``); a no-op elsewhere. On ext4 without a
    journal, creating files in a block group where thousands were deleted took 100-220 us per
    file instead of 4 us, for minutes after (measured here: the kernel's ``recently_deleted``
    check in the inode allocator). With this, each run writes into a fresh block group, not
    into the one the previous benchmark's clean-up left behind (applies to vips and weightvis
    alike)."""
    import array
    import fcntl

    fs_ioc_getflags, fs_ioc_setflags, fs_topdir_fl = 0x80086601, 0x40086602, 0x00020000
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        flags = array.array("i", [0])
        fcntl.ioctl(fd, fs_ioc_getflags, flags, True)
        if not flags[0] & fs_topdir_fl:
            flags[0] |= fs_topdir_fl
            fcntl.ioctl(fd, fs_ioc_setflags, flags, True)
    except OSError:
        pass  # not ext2/3/4, or not allowed: the folders go where the filesystem puts them
    finally:
        os.close(fd)


def fresh_dir(args: argparse.Namespace, prefix: str) -> Path:
    """A new, empty output folder for one measured run. Nothing is deleted between measured
    runs (all of them are removed at the end, ``cleanup``): on ext4 without a journal, files
    created soon after thousands were deleted took 100-220 us each instead of 4 us (measured
    here, ``recently_deleted`` in the kernel's inode allocator), which would time the
    benchmark's own clean-up rather than the tool."""
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=args.work_dir))


def measure(args: argparse.Namespace, label: str, cmd: Callable[[], list[str]],
            env: dict[str, str], *, cwd: Path | None = None, before: Any = None) -> Measured:
    """``run_measured`` on a quiet machine: wait for quiet, run, and re-run (up to
    ``args.retries`` times) when other processes used more than ``args.max_other_load`` cores
    during the run; the least disturbed run is returned. ``cmd()`` gives each attempt's command
    (with a fresh output folder)."""
    best: Measured | None = None
    for attempt in range(1 + args.retries):
        if before is not None:
            before()
        run_cmd = cmd()
        quiet = wait_for_quiet(args.wait_idle) if args.wait_idle > 0 else None
        m = run_measured(run_cmd, env=env, timeout=args.timeout, cwd=cwd)
        m.load_before, m.attempts = quiet, attempt + 1
        if m.returncode != 0:
            return m
        load = m.other_cpu_s / m.wall_s
        if best is None or load < best.other_cpu_s / best.wall_s:
            best = m
        if load <= args.max_other_load:
            break
        log(f"{label}: other processes used {load:.2f} cores during the run "
            f"(> --max-other-load {args.max_other_load}); "
            + ("running it again" if attempt < args.retries else "keeping the least disturbed run"))
    assert best is not None
    best.attempts = attempt + 1
    return best


def render(args: argparse.Namespace, inputs: list[Path], workers: int, label: str,
           elements: int) -> dict[str, Any]:
    """``args.repeat`` measured ``python -m weightvis [diff] ... --out NEW --quiet --workers N``,
    each into a fresh folder; the fastest is reported (with every run's wall time)."""

    def cmd() -> list[str]:
        out = fresh_dir(args, label) / "bundle"
        return [args.python, "-m", "weightvis", *(["diff"] if len(inputs) == 2 else []),
                *map(str, inputs), "--out", str(out), "--quiet", "--workers", str(workers),
                *args.weightvis_arg]

    runs = []
    for rep in range(args.repeat):
        rep_s = f"  (run {rep + 1}/{args.repeat})" if args.repeat > 1 else ""
        m = measure(args, label, cmd, _python_env(), cwd=REPO_ROOT,
                    before=lambda: [warm_page_cache(f) for f in inputs])
        log(f"{label}: {' '.join(m.cmd)}{rep_s}")
        if m.returncode != 0:
            log(f"{label}: FAILED (exit {m.returncode})\n{m.stderr_tail}")
            return {"label": label, "ok": False, "returncode": m.returncode, "cmd": m.cmd,
                    "stderr_tail": m.stderr_tail, "stdout_tail": m.stdout_tail}
        runs.append(m)
        log(f"{label}: {m.wall_s:.2f} s wall, {m.cpu_user_s:.2f} s user + {m.cpu_sys_s:.2f} s sys, "
            f"peak RSS (tree sum) {m.peak_rss_sum / 2**20:.0f} MiB")
    best = min(runs, key=lambda m: m.wall_s)
    out = Path(best.cmd[best.cmd.index("--out") + 1])
    stats = dir_stats(out)
    cmd_shown = best.cmd
    return {
        "label": label, "ok": True, "workers": workers, "cmd": cmd_shown,
        "wall_s": best.wall_s, "wall_s_all": [m.wall_s for m in runs],
        "cpu_sys_s_all": [m.cpu_sys_s for m in runs],
        "cpu_s": best.cpu_s, "cpu_user_s": best.cpu_user_s, "cpu_sys_s": best.cpu_sys_s,
        "cpu_utilisation": best.cpu_s / best.wall_s,
        "elements": elements, "elements_per_s": elements / best.wall_s,
        "peak_rss_sum_bytes": max(m.peak_rss_sum for m in runs),
        "peak_rss_anon_sum_bytes": max(m.peak_rss_anon_sum for m in runs),
        "peak_pss_sum_bytes": max(m.peak_pss_sum for m in runs),
        "max_rss_single_process_bytes": max(m.max_rss_single for m in runs),
        "rusage_children_maxrss_bytes": best.rusage_children_maxrss,
        "peak_processes": max(m.peak_processes for m in runs),
        "rss_samples": best.samples, "sampler_cpu_s": best.sampler_cpu_s,
        "other_load_cores": best.other_cpu_s / best.wall_s,
        "other_load_before_cores": best.load_before,
        "attempts": best.attempts,
        "disturbed": best.other_cpu_s / best.wall_s > args.max_other_load,
        "output_bytes": stats["bytes"], "output_files": stats["files"],
        "output_tiles": stats["tiles"],
        "output": str(out) if args.keep_outputs else None,
        "stderr_tail": best.stderr_tail[-1000:],
    }


# =================================================================================================
# libvips dzsave on an image with the same pixel count (run as a measured child of this script)
# =================================================================================================

def vips_image_size(pixels: int) -> tuple[int, int]:
    """Square-ish (w, h) with w a multiple of the tile size and w*h >= pixels, minimal excess."""
    w = max(TILE_SIZE, int(round(math.sqrt(pixels) / TILE_SIZE)) * TILE_SIZE)
    return w, -(-pixels // w)


def vips_child(spec: dict[str, Any]) -> None:
    """Inside the measured child: build the image, time only ``dzsave``, print one JSON line."""
    os.environ["VIPS_CONCURRENCY"] = str(spec["threads"])   # read by libvips at init
    try:
        import pyvips
    except (ImportError, OSError) as e:
        print(json.dumps({"error": f"pyvips unavailable ({e}); {INSTALL_HINT}"}))
        sys.exit(3)
    pyvips.concurrency_set(spec["threads"])
    w, h = spec["width"], spec["height"]
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    # grey uchar noise: 1 byte/px into deflate, as a palette-PNG leaf of weightvis
    img = pyvips.Image.gaussnoise(w, h, mean=128, sigma=30, seed=spec["seed"]).cast("uchar")
    if spec["bands"] == 3:
        img = img.falsecolour()                  # the same noise colour-mapped to uchar sRGB
    tmp_v = None
    if spec["source"] == "memory":
        img = img.copy_memory()
    else:
        tmp_v = Path(spec["out"]) / "source.v"
        img.write_to_file(str(tmp_v))
        img = pyvips.Image.new_from_file(str(tmp_v))   # .v is memory-mapped
    setup_s = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    runs = []   # (wall, CPU) of each dzsave, each into a new folder (nothing deleted between)
    for k in range(spec["repeat"]):
        t1 = time.perf_counter()
        img.dzsave(str(Path(spec["out"]) / f"pyramid-{k}"), layout=spec["layout"],
                   tile_size=TILE_SIZE, overlap=0, depth="onetile", suffix=".png[compression=1]",
                   **({"skip_blanks": spec["skip_blanks"]} if spec["skip_blanks"] is not None
                      else {}))
        dz_s = time.perf_counter() - t1
        r2 = resource.getrusage(resource.RUSAGE_SELF)
        runs.append((dz_s, (r2.ru_utime - r1.ru_utime) + (r2.ru_stime - r1.ru_stime)))
        r1 = r2
    if tmp_v is not None:
        tmp_v.unlink()
    dz_s, dz_cpu = min(runs)
    print(json.dumps({
        "setup_s": setup_s, "dzsave_s": dz_s, "dzsave_s_all": [r[0] for r in runs],
        "dzsave_cpu_s": dz_cpu,
        "setup_cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
        "width": w, "height": h, "bands": img.bands, "format": img.format,
        "libvips": f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}",
        "pyvips": pyvips.__version__, "pyvips_api_mode": bool(pyvips.API_mode),
        "concurrency": pyvips.concurrency_get(),
    }))


def run_vips(args: argparse.Namespace, pixels: int, threads: int) -> dict[str, Any]:
    w, h = vips_image_size(pixels)
    spec = {"width": w, "height": h, "threads": threads, "bands": args.vips_bands,
            "source": args.vips_source, "layout": args.vips_layout, "seed": args.seed,
            "skip_blanks": args.vips_skip_blanks, "repeat": args.repeat}

    def cmd() -> list[str]:
        run = {**spec, "out": str(fresh_dir(args, "vips"))}
        return [args.python, str(Path(__file__).resolve()), "--vips-child", json.dumps(run)]

    log(f"vips: dzsave {w}x{h}x{args.vips_bands} ({args.vips_source}, layout={args.vips_layout}, "
        f"VIPS_CONCURRENCY={threads}, {args.repeat} run(s) on one image)")
    m = measure(args, "vips", cmd, _python_env({"VIPS_CONCURRENCY": str(threads)}))
    if m.returncode != 0:
        log(f"vips: FAILED (exit {m.returncode})\n{m.stdout_tail}\n{m.stderr_tail}")
        return {"ok": False, "returncode": m.returncode, "stderr_tail": m.stderr_tail,
                "stdout_tail": m.stdout_tail}
    res: dict[str, Any] = json.loads(m.stdout_tail.strip().splitlines()[-1])
    stats = dir_stats(Path(json.loads(m.cmd[-1])["out"]) / "pyramid-0")
    px = w * h
    res.update({
        "ok": True, "pixels": px, "requested_pixels": pixels, "source": args.vips_source,
        "layout": args.vips_layout, "threads": threads, "tile_size": TILE_SIZE,
        "suffix": ".png[compression=1]", "depth": "onetile", "overlap": 0,
        "skip_blanks": args.vips_skip_blanks,
        "px_per_s": px / res["dzsave_s"],
        "process_wall_s": m.wall_s, "process_cpu_s": m.cpu_s,
        "other_load_cores": m.other_cpu_s / m.wall_s, "attempts": m.attempts,
        "disturbed": m.other_cpu_s / m.wall_s > args.max_other_load,
        "peak_rss_sum_bytes": m.peak_rss_sum, "peak_pss_sum_bytes": m.peak_pss_sum,
        "output_bytes": stats["bytes"], "output_files": stats["files"],
        "output_tiles": stats["tiles"],
    })
    log(f"vips: dzsave {', '.join(f'{x:.2f}' for x in res['dzsave_s_all'])} s; fastest "
        f"{res['dzsave_s']:.2f} s = {res['px_per_s'] / 1e6:.1f} Mpx/s "
        f"(setup {res['setup_s']:.1f} s not counted)")
    return res


# =================================================================================================
# Machine info, report
# =================================================================================================

def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(python: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_executable": python,
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["mem_total_bytes"] = int(line.split()[1]) * 1024
    for dist in ("numpy", "numba", "pillow", "safetensors", "pyvips", "psutil", "weightvis"):
        info[dist] = _version(dist)
    # the version actually imported by `python -m weightvis` (the repo, not an installed copy)
    p = subprocess.run([python, "-c", "import weightvis, numpy, PIL; print(getattr(weightvis, "
                        "'__version__', None), numpy.__version__, PIL.__version__)"],
                       capture_output=True, text=True, env=_python_env(), cwd=REPO_ROOT)
    if p.returncode == 0:
        wv, npv, pilv = p.stdout.split()
        info.update({"weightvis_imported": wv, "numpy_imported": npv, "pillow_imported": pilv})
    g = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
                       capture_output=True, text=True)
    info["git_commit"] = g.stdout.strip() if g.returncode == 0 else None
    d = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "weightvis"],
                       capture_output=True, text=True)
    info["git_dirty"] = bool(d.stdout.strip()) if d.returncode == 0 else None
    return info


def _mb(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.0f} MiB"


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f} s"


def print_report(res: dict[str, Any]) -> None:
    ck = res["checkpoint"]
    sh = ck["shape"]
    print()
    print(f"checkpoint  {ck['key']}  ({ck['elements']:,} elements, {ck['bytes'] / 1e9:.2f} GB, "
          f"{len(ck['files'])} file(s), {ck['tensors']} tensors)")
    print(f"            hidden {sh['hidden']}, layers {sh['layers']}, "
          f"intermediate {sh['intermediate']}, "
          f"heads {sh['heads']}/{sh['kv_heads']} kv, vocab {sh['vocab']}, "
          f"{'tied' if sh['tied'] else 'separate'} lm_head; generated in {ck['generation_s']:.1f} s"
          f"{' (cached)' if ck.get('cached') else ''}")
    m = res["machine"]
    print(f"machine     {m.get('cpu_model', '?')}, {m['cpu_count']} CPUs, python {m['python']}, "
          f"numpy {m.get('numpy')}, numba {m.get('numba')}, pillow {m.get('pillow')}, "
          f"libvips {res.get('vips', {}).get('libvips', '-')}")
    print()
    cols = [k for k in ("weightvis", "weightvis_1worker", "diff") if res.get(k, {}).get("ok")]
    if cols:
        titles = {"weightvis": f"weightvis ({res['weightvis'].get('workers')} w)",
                  "weightvis_1worker": "weightvis (1 w)",
                  "diff": f"diff ({res.get('diff', {}).get('workers')} w)"}
        header = ["", *(titles[c] for c in cols)]
        table = [
            ("wall time, fastest run", [_s(res[c]["wall_s"]) for c in cols]),
            ("  every run", [" ".join(f"{x:.2f}" for x in res[c]["wall_s_all"]) for c in cols]),
            ("CPU time (user+sys)", [_s(res[c]["cpu_s"]) for c in cols]),
            ("CPU utilisation", [f"{res[c]['cpu_utilisation']:.2f} cores" for c in cols]),
            ("elements/s", [f"{res[c]['elements_per_s'] / 1e6:,.1f} M/s" for c in cols]),
            ("peak RSS, tree sum", [_mb(res[c]["peak_rss_sum_bytes"]) for c in cols]),
            ("  of which anon", [_mb(res[c]["peak_rss_anon_sum_bytes"]) for c in cols]),
            ("peak PSS, tree sum", [_mb(res[c]["peak_pss_sum_bytes"]) for c in cols]),
            ("max RSS one process", [_mb(res[c]["max_rss_single_process_bytes"]) for c in cols]),
            ("other load on machine", [f"{res[c]['other_load_cores']:.2f} cores"
                                       + (" (!)" if res[c]["disturbed"] else "") for c in cols]),
            ("processes (peak)", [str(res[c]["peak_processes"]) for c in cols]),
            ("output", [f"{res[c]['output_bytes'] / 1e6:,.0f} MB, {res[c]['output_files']:,} files"
                        for c in cols]),
        ]
        widths = [max(len(header[0]), *(len(r[0]) for r in table))]
        for j in range(len(cols)):
            widths.append(max(len(header[j + 1]), *(len(r[1][j]) for r in table)))
        print("  ".join([header[0].ljust(widths[0]),
                         *(h.rjust(w) for h, w in zip(header[1:], widths[1:], strict=True))]))
        for name, vals in table:
            print("  ".join([name.ljust(widths[0]),
                             *(v.rjust(w) for v, w in zip(vals, widths[1:], strict=True))]))
        if any(res[c]["disturbed"] for c in cols):
            print("(!) other processes used the CPU during this run: its times are not reliable")
        print()
    v = res.get("vips")
    if v and v.get("ok"):
        print(f"vips dzsave {v['width']}x{v['height']}x{v['bands']} ({v['pixels']:,} px, image in "
              f"{v['source']}, layout {v['layout']}, {v['threads']} threads): "
              f"fastest of {len(v.get('dzsave_s_all', [0]))} {v['dzsave_s']:.2f} s = "
              f"{v['px_per_s'] / 1e6:.1f} Mpx/s, {v['dzsave_cpu_s']:.1f} s CPU, other load "
              f"{v['other_load_cores']:.2f} cores{' (!)' if v['disturbed'] else ''}, "
              f"{v['output_bytes'] / 1e6:,.0f} MB in {v['output_files']:,} files")
    elif v is not None:
        print(f"vips: {v.get('skipped') or 'failed'}")
    if res.get("diff_skipped"):
        print(f"diff: skipped, {res['diff_skipped']}")
    print()
    print("targets")
    for t in res["targets"]:
        status = {True: "PASS", False: "FAIL", None: "n/a "}[t["pass"]]
        print(f"  [{status}] {t['name']}: {t['value']}  (target {t['target']})"
              + (f"  -- {t['note']}" if t.get("note") else ""))
    print()


def evaluate_targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    wv, v = res.get("weightvis", {}), res.get("vips", {})
    if wv.get("ok") and v.get("ok"):
        ratio = wv["elements_per_s"] / v["px_per_s"]
        res["vips_ratio"] = ratio
        out.append({"name": "weightvis elements/s ÷ vips dzsave px/s", "value": f"{ratio:.2f}",
                    "target": f">= {TARGET_VIPS_RATIO}", "pass": ratio >= TARGET_VIPS_RATIO})
    if wv.get("ok"):
        peak = wv["peak_rss_sum_bytes"]
        big = res["checkpoint"]["bytes"] >= TARGET_PEAK_RSS_MIN_CHECKPOINT
        out.append({"name": "peak RSS (process tree sum)", "value": _mb(peak),
                    "target": "<= 1024 MiB on a >= 3 GB checkpoint",
                    "pass": peak <= TARGET_PEAK_RSS_BYTES,
                    "note": None if big else "checkpoint < 3 GB: indicative only"})
    d = res.get("diff", {})
    if d.get("ok") and wv.get("ok"):
        ratio = d["wall_s"] / wv["wall_s"]
        res["diff_ratio"] = ratio
        out.append({"name": "diff time ÷ plain time", "value": f"{ratio:.2f}",
                    "target": f"<= {TARGET_DIFF_RATIO}", "pass": ratio <= TARGET_DIFF_RATIO})
    one = res.get("weightvis_1worker", {})
    if one.get("ok") and wv.get("ok"):
        sp = one["wall_s"] / wv["wall_s"]
        res["scaling"] = {"workers": wv["workers"], "speedup": sp,
                          "efficiency": sp / wv["workers"]}
        out.append({"name": f"speed-up 1 -> {wv['workers']} workers", "value": f"{sp:.2f}x",
                    "target": "reported (ideal = worker count)", "pass": None,
                    "note": f"parallel efficiency {sp / wv['workers']:.0%}"})
    return out


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


# =================================================================================================
# CLI
# =================================================================================================

def build_parser() -> argparse.ArgumentParser:
    cpus = os.cpu_count() or 1
    p = argparse.ArgumentParser(
        prog="bench.py",
        description="weightvis end-to-end benchmark: synthetic bf16 Llama checkpoint -> bundle, "
                    "compared with libvips dzsave on the same pixel count.",
        epilog=f"Needs psutil and pyvips: {INSTALL_HINT}. See benchmarks/README.md.")
    g = p.add_argument_group("checkpoint")
    g.add_argument("--params", type=parse_count, default=parse_count("0.5e9"),
                   help="parameter count to generate, e.g. 0.5e9, 500M, 1.5B (default 0.5e9)")
    g.add_argument("--seed", type=int, default=0, help="RNG seed of the checkpoint (default 0)")
    g.add_argument("--vocab", type=int, default=32000, help="vocabulary size (default 32000)")
    g.add_argument("--tied", action="store_true",
                   help="tie lm_head to the embedding (no lm_head tensor)")
    g.add_argument("--shard-bytes", type=parse_count, default=SHARD_BYTES,
                   help="max bytes per safetensors shard (default 2e9)")
    g.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                   help=f"where checkpoints are cached (default {DEFAULT_CACHE})")
    g.add_argument("--generate-only", action="store_true",
                   help="generate (or find) the checkpoint, print its path and exit")
    g.add_argument("--gen-threads", type=int, default=cpus,
                   help=f"generator threads (default {cpus})")

    g = p.add_argument_group("runs")
    g.add_argument("--workers", type=int, default=cpus,
                   help=f"weightvis --workers N (default {cpus})")
    g.add_argument("--scaling", action="store_true",
                   help="also render with 1 worker; report the speed-up")
    g.add_argument("--no-diff", action="store_true", help="skip the diff benchmark")
    g.add_argument("--no-vips", action="store_true", help="skip the libvips comparison")
    g.add_argument("--no-render", action="store_true",
                   help="skip weightvis renders (e.g. vips only)")
    g.add_argument("--no-warmup", action="store_true",
                   help="skip the unmeasured warm-up render of a tiny model (numba caches etc.)")
    g.add_argument("--repeat", type=int, default=3,
                   help="run each case (and vips dzsave) N times, report the fastest and list "
                        "all (default 3)")
    g.add_argument("--wait-idle", type=float, default=60.0, metavar="S",
                   help="before each measured run, wait up to S seconds for the machine's other "
                        "load to drop under 0.1 cores (0 = don't wait; default 60)")
    g.add_argument("--max-other-load", type=float, default=0.15, metavar="CORES",
                   help="a run during which other processes used more CPU than this is repeated "
                        "(default 0.15 cores)")
    g.add_argument("--retries", type=int, default=2,
                   help="how often a disturbed run is repeated; the least disturbed is kept "
                        "(default 2)")
    g.add_argument("--timeout", type=float, default=None, help="kill a run after this many seconds")
    g.add_argument("--python", default=sys.executable, help="interpreter for the runs")
    g.add_argument("--weightvis-arg", action="append", default=[], metavar="ARG",
                   help="extra argument passed to every weightvis run (repeatable)")
    g.add_argument("--work-dir", type=Path, default=None,
                   help="where outputs are written (default: <cache-dir>/runs)")
    g.add_argument("--keep-outputs", action="store_true",
                   help="keep the rendered bundles / pyramids")

    g = p.add_argument_group("vips")
    g.add_argument("--vips-threads", type=int, default=None,
                   help="VIPS_CONCURRENCY (default: the weightvis worker count)")
    g.add_argument("--vips-bands", type=int, choices=(1, 3), default=1,
                   help="1 = grey uchar noise, 1 byte/px like a palette PNG (default; the faster, "
                        "stricter baseline), 3 = the same noise colour-mapped to RGB")
    g.add_argument("--vips-source", choices=("memory", "file"), default="memory",
                   help="image held in RAM, or in a temporary memory-mapped .v file "
                        "(default memory)")
    g.add_argument("--vips-layout", choices=("google", "dz"), default="google",
                   help="google = XYZ {z}/{y}/{x} (default), dz = DeepZoom; both 512 px, overlap 0")
    g.add_argument("--vips-skip-blanks", type=int, default=None,
                   help="dzsave skip_blanks (default: libvips' default for the layout)")

    p.add_argument("--out-json", type=Path, default=None, help="write all results here as JSON")
    p.add_argument("--vips-child", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.vips_child:
        vips_child(json.loads(args.vips_child))
        return 0
    if args.workers < 1 or args.repeat < 1:
        sys.exit("bench: --workers and --repeat must be >= 1")

    ckpt, meta = ensure_checkpoint(args.cache_dir, args.params, seed=args.seed, vocab=args.vocab,
                                   tied=args.tied, shard_bytes=args.shard_bytes,
                                   threads=args.gen_threads)
    if args.generate_only:
        print(ckpt)
        return 0

    _require_psutil()
    if not args.no_vips and importlib.util.find_spec("pyvips") is None:
        sys.exit(f"bench: pyvips is missing (use --no-vips to skip the comparison); {INSTALL_HINT}")
    runs_dir = args.work_dir or args.cache_dir / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    spread_subfolders(runs_dir)
    # every output of this invocation goes in one folder, deleted once all is measured
    args.work_dir = Path(tempfile.mkdtemp(prefix="session-", dir=runs_dir))
    spread_subfolders(args.work_dir)
    try:
        return _run_all(args, ckpt, meta)
    finally:
        if args.keep_outputs:
            log(f"outputs kept in {args.work_dir}")
        else:
            log("removing this run's outputs")
            shutil.rmtree(args.work_dir, ignore_errors=True)
            # and those of interrupted earlier runs (after measuring, see fresh_dir)
            for old in runs_dir.glob("session-*"):
                shutil.rmtree(old, ignore_errors=True)


def _run_all(args: argparse.Namespace, ckpt: Path, meta: dict[str, Any]) -> int:

    res: dict[str, Any] = {
        "schema": 1,
        "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": [sys.executable, *sys.argv],
        "machine": machine_info(args.python),
        "checkpoint": {**meta, "path": str(ckpt)},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                     if k != "vips_child"},
        "page_cache": "warm (every checkpoint file read once before each render)",
    }
    elements = meta["elements"]

    if not args.no_render:
        ok, why = weightvis_available(args.python)
        if not ok:
            log(f"weightvis CLI not available yet ({why}); skipping renders")
            res["weightvis"] = {"ok": False, "skipped": f"python -m weightvis --help failed: {why}"}
        else:
            if not args.no_warmup:
                tiny, _ = ensure_checkpoint(args.cache_dir, 1_000_000, seed=args.seed, vocab=1000,
                                            tied=True, threads=args.gen_threads)
                log("warm-up render of a tiny model (not measured)")
                w = subprocess.run([args.python, "-m", "weightvis", str(tiny), "--out",
                                    str(args.work_dir / "warmup"), "--quiet",
                                    "--workers", str(args.workers), *args.weightvis_arg],
                                   env=_python_env(), cwd=REPO_ROOT, capture_output=True, text=True)
                if w.returncode != 0:
                    log(f"warm-up render failed (exit {w.returncode}): {w.stderr.strip()[-500:]}")
            res["weightvis"] = render(args, [ckpt], args.workers, "weightvis", elements)
            if args.scaling:
                res["weightvis_1worker"] = render(args, [ckpt], 1, "weightvis_1worker", elements)
            if not args.no_diff:
                if not diff_available(args.python):
                    print("diff: not available yet")
                    res["diff_skipped"] = ("not available yet "
                                           "(python -m weightvis diff --help failed)")
                else:
                    edited, edits = ensure_edited_copy(ckpt, meta, args.seed)
                    res["diff_edits"] = edits
                    res["diff"] = render(args, [ckpt, edited], args.workers, "diff", elements)

    if not args.no_vips:
        res["vips"] = run_vips(args, elements, args.vips_threads or args.workers)
    res["targets"] = evaluate_targets(res)
    res["finished"] = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    print_report(res)
    if args.out_json:
        write_json(args.out_json, res)
        log(f"results written to {args.out_json}")
    failed = [k for k in ("weightvis", "weightvis_1worker", "diff", "vips")
              if k in res and res[k].get("ok") is False and not res[k].get("skipped")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
