"""Fuzzing the safetensors reader, sharded indexes and sidecars: mutated files and folders must
keep the promises (``format_promises``: exit 0 or 2, one ``weightvis: error:`` line naming the
file, never the last resort, no traceback, no hang, bounded memory, valid JSON out).

Seeds: small synthetic checkpoints (every dtype, a 0-D, a 3-D and an empty tensor, Llama names,
``__metadata__``), a sharded folder (index, two shards, ``config.json``) and, when installed,
the real ``silero_vad_16k.safetensors`` (DATA.md). Mutations:

- generic byte mutations (``common.mutate``) of a file, or of its header only;
- structure-aware, on the header JSON: a tensor's dtype, shape or data_offsets replaced by a
  hostile value (huge, negative, float, nested, 65 dims, past int64, overlapping, past the end),
  its name by a hostile one (control characters, lone surrogates, ``__proto__``, 10 kB, sparse
  or absurd block indices), ``__metadata__`` by NaN / Infinity / deep nesting / huge integers,
  the length prefix changed, raw text edits (a 5,000-digit number, ``NaN``, truncation, 900
  open brackets);
- on a sharded folder: a weight_map value (``..``, absolute, missing, not a string, NUL, a
  link leading out), the index as a whole, ``config.json`` (wrong types, NaN, deep, a list,
  a FIFO, a link out), one shard mutated as above.

Most cases run in this process (``cli.main``: ``info``, ``info --json`` and a ``--workers 1``
render, each under an alarm); a few through ``run_cli`` with ``--workers 2``. CI default:
``DEFAULT_CASES`` in-process cases and ``DEFAULT_SUBPROCESS`` subprocess ones (35 s on the
project's 2-core machine under a load of 10); ``WEIGHTVIS_FUZZ_CASES=N`` runs N in-process
cases and N/50 subprocess ones. A failing input is kept under ``tests/fuzz/crashes/`` (then,
once fixed, moved to ``tests/fuzz/corpus/safetensors/``, which ``test_corpus.py`` renders with
two workers).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..conftest import REAL
from ..trust_fixtures import LLAMA_SHAPES, sharded_folder, st_file, st_raw
from .common import INTERESTING_INTS, cases, mutate, remove, rng_for, scratch
from .format_promises import VARIANTS, Tally, keep, run_in_process, run_subprocess

TARGET = "safetensors"
DEFAULT_CASES = 400
DEFAULT_SUBPROCESS = 8

HOSTILE_NAMES = [
    "\x1b[2J\x1b]0;pwned\x07", "w\x00x", "\ud800", "\udfff\ud800x", "__proto__", "constructor",
    "toString", "", ".", "..", "a" * 10_000, "model.layers.1.", "\u202eevil", "名前.weight",
    "a/../../b", "<script>alert(1)</script>", "%s%n%x", "line\nbreak\r", "\x9b31m",
    "model.layers.99999999999.mlp.up_proj.weight", "model.layers.-1.mlp.up_proj.weight",
    "model.layers.\u0663.self_attn.q_proj.weight", "model.layers.1e3.mlp.up_proj.weight",
    "model.layers.0000000000000000001.mlp.up_proj.weight", "model.layers.².x.weight",
    "model.layers." + "9" * 5000 + ".mlp.up_proj.weight", "blk.3.attn_q.weight",
    "model.layers.3.mlp.experts.99999999999.w1.weight", "experts." + "7" * 4400 + ".w1.weight",
]
DTYPES = ["F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "F8_E8M0", "I64", "I32", "I16",
          "I8", "U64", "U32", "U16", "U8", "BOOL"]
BAD_DTYPES: list[Any] = ["Q4_X", "", "f32", "BF16 ", 5, None, ["F32"], "F4", "\x1b[31m"]


def _shapes() -> list[Any]:
    return [[], [0], [1 << 62], [-1], [1.5], [[2]], [1 << 63], [1 << 64], [1] * 65, ["2"],
            True, None, [0, 1 << 64], [2, 0, 10 ** 30], [10 ** 18, 10 ** 18]]


# -- seeds -------------------------------------------------------------------------------------
def _synthetic(path: Path) -> Path:
    tensors: dict[str, tuple[str, tuple[int, ...]]] = dict(LLAMA_SHAPES)
    tensors.update({"scalar": ("F64", ()), "conv.weight": ("F16", (4, 1, 8)),
                    "empty": ("I32", (0, 5)), "flags": ("BOOL", (3,)), "ids": ("I64", (5,))})
    return st_file(path, tensors, {"format": "pt", "note": "seed"})


def _every_dtype(path: Path) -> Path:
    return st_file(path, {f"t_{d.lower()}": (d, (2, 3)) for d in
                          ("F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8",
                           "BOOL")})


def _real_silero() -> Path | None:
    pkg, rel, _sha = REAL["silero"]
    spec = importlib.util.find_spec(pkg)
    if spec is None or spec.origin is None:
        return None
    p = Path(spec.origin).parent / rel
    return p if p.is_file() else None


# -- structure-aware mutations -----------------------------------------------------------------
def _split(data: bytes) -> tuple[dict[str, Any], bytes] | None:
    if len(data) < 8:
        return None
    n = struct.unpack("<Q", data[:8])[0]
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return (header, data[8 + n:]) if isinstance(header, dict) else None


def _nest(depth: int) -> str:
    return "[" * depth + "]" * depth


def mutate_header(data: bytes, rng: np.random.Generator) -> bytes:
    """One structure-aware edit of a safetensors file's header (module docstring)."""
    got = _split(data)
    if got is None:
        return mutate(data, rng)
    header, body = got
    names = [k for k in header if k != "__metadata__"]

    def pick(xs: list[Any]) -> Any:
        return xs[int(rng.integers(len(xs)))]

    name = pick(names) if names else None
    spec = header.get(name) if name is not None else None
    # 0 dtype, 1 shape, 2 offsets, 3 name, 4 drop / alias, 5 metadata, 6 length prefix, 7 raw
    # text, 8 special names, 9 junk fields, 10 generic: names and metadata, which leave a valid
    # file, most often
    op = int(rng.choice(11, p=[.08, .1, .1, .22, .08, .14, .04, .1, .07, .04, .03]))
    raw_edit: Callable[[str], str] | None = None
    if op == 0 and isinstance(spec, dict):
        spec["dtype"] = pick(DTYPES + BAD_DTYPES)
    elif op == 1 and isinstance(spec, dict):
        shape = spec.get("shape")
        if isinstance(shape, list) and len(shape) > 1 and rng.random() < 0.3:
            spec["shape"] = list(reversed(shape))  # same product: a valid file
        else:
            spec["shape"] = pick(_shapes())
    elif op == 2 and isinstance(spec, dict):
        offs = spec.get("data_offsets")
        ok = isinstance(offs, list) and len(offs) == 2 and all(type(x) is int for x in offs)
        b, e = offs if ok else (0, 0)
        others = [header[k]["data_offsets"] for k in names
                  if isinstance(header[k], dict) and "data_offsets" in header[k]]
        spec["data_offsets"] = pick([[e, b], [0, 0], [-4, 0], [b, e + 1], [b + 1, e + 1],
                                     [0, 1 << 64], [e, 2 * e - b + 8], pick(others or [[0, 0]]),
                                     [b], [b, e, 0], None, [str(b), str(e)], [b * 1.0, e * 1.0],
                                     [int(pick(INTERESTING_INTS)), e]])
    elif op == 3 and name is not None:
        header[pick(HOSTILE_NAMES)] = header.pop(name)
    elif op == 4 and name is not None:
        if rng.random() < 0.5:
            del header[name]
        else:
            header[name + ".alias"] = json.loads(json.dumps(header[name]))
    elif op == 5:
        meta = pick([{"a": float("nan")}, {"a": [float("inf"), -float("inf")]}, [1, 2], "s",
                     {"k": 10 ** 50}, {"\x00": "x"}, {"k": "v" * 100_000}, {"k": {"n": None}},
                     {"__proto__": {"polluted": True}}, None])
        header["__metadata__"] = meta
        if rng.random() < 0.4:
            nest = _nest(pick([10, 63, 64, 65, 200, 900, 3000]))
            header["__metadata__"] = {"deep": "@@NEST@@"}

            def raw_edit(t: str) -> str:
                return t.replace('"@@NEST@@"', nest)
    elif op == 6:
        n = struct.unpack("<Q", data[:8])[0]
        new_n = pick([n - 1, n + 1, n + 8, 0, 2, (1 << 64) - 1, len(data), 100 * 1024 * 1024 + 1])
        return struct.pack("<Q", new_n % (1 << 64)) + data[8:]
    elif op == 7:
        raw_edit = pick([
            lambda t: _replace_number(t, rng, "9" * 5000),
            lambda t: _replace_number(t, rng, "NaN"),
            lambda t: _replace_number(t, rng, "-Infinity"),
            lambda t: _replace_number(t, rng, "1e400"),
            lambda t: t[:int(rng.integers(0, max(1, len(t))))],
            lambda t: t.replace("{", "{" + _nest(900)[:900], 1),
            lambda t: "\ufeff" + t,
            lambda t: t[:-1] + ',"dup":1,"dup":2}',
        ])
    elif op == 8 and spec is not None:
        header[pick(["__proto__", "constructor", "", "hasOwnProperty"])] = \
            json.loads(json.dumps(spec))
    elif op == 9 and isinstance(spec, dict):
        spec[pick(["extra", "dtype", "shape"])] = {"x": _nest(3)}  # junk fields
    else:
        return mutate(data, rng)
    text = json.dumps(header, allow_nan=True)
    if raw_edit is not None:
        text = raw_edit(text)
    return st_raw(text.encode("utf-8", "surrogatepass"), body)


def _replace_number(text: str, rng: np.random.Generator, new: str) -> str:
    import re
    spans = [m.span() for m in re.finditer(r"(?<![\w.])[0-9]+(?![\w.])", text)]
    if not spans:
        return text
    a, b = spans[int(rng.integers(len(spans)))]
    return text[:a] + new + text[b:]


def mutate_file(data: bytes, rng: np.random.Generator) -> bytes:
    """A generic or a structure-aware mutation, sometimes two."""
    for _ in range(1 + int(rng.random() < 0.2)):
        r = rng.random()
        if r < 0.25:
            data = mutate(data, rng)
        elif r < 0.45 and len(data) > 8:  # generic, header only
            n = min(struct.unpack("<Q", data[:8])[0], len(data) - 8)
            data = mutate(data[:8 + n], rng, protect=8) + data[8 + n:]
        else:
            data = mutate_header(data, rng)
    return data


def mutate_folder(d: Path, rng: np.random.Generator, outside: Path) -> None:
    """One edit of a sharded folder (module docstring)."""
    idx = d / "model.safetensors.index.json"
    shards = sorted(d.glob("*.safetensors"))
    op = int(rng.integers(0, 6))
    doc = json.loads(idx.read_text())
    if op == 0:
        key = sorted(doc["weight_map"])[int(rng.integers(len(doc["weight_map"])))]
        doc["weight_map"][key] = [
            "../outside.safetensors", str(outside), "", "missing.safetensors", 5, None,
            "sub/x.safetensors", "a\x00b", "\ud800.safetensors", shards[0].name + "/..",
            "\x1b[2J.safetensors", "link.safetensors"][int(rng.integers(12))]
        (d / "link.safetensors").symlink_to(outside)
        idx.write_text(json.dumps(doc))
    elif op == 1:
        text = json.dumps(doc)
        idx.write_bytes(mutate(text.encode(), rng))
    elif op == 2:
        cfg = d / "config.json"
        choice = int(rng.integers(0, 8))
        if choice == 0:
            cfg.write_text('{"num_hidden_layers": "x", "num_attention_heads": [1], '
                           '"hidden_size": NaN, "vocab_size": -1, "model_type": 5}')
        elif choice == 1:
            cfg.write_text("[" + json.dumps(doc) + "]")
        elif choice == 2:
            cfg.write_text('{"a": ' + _nest(int(rng.choice([70, 900, 5000]))) + "}")
        elif choice == 3:
            cfg.unlink()
            os.mkfifo(cfg)
        elif choice == 4:
            cfg.unlink()
            cfg.symlink_to(cfg)
        elif choice == 5:
            cfg.unlink()
            cfg.symlink_to(outside.with_suffix(".json"))
        elif choice == 6:
            cfg.write_text('{"hidden_size": ' + "9" * 5000 + "}")
        else:
            cfg.write_bytes(mutate(cfg.read_bytes(), rng))
    elif op == 3:
        idx.unlink()  # a folder of shards without an index
        if rng.random() < 0.5:
            (d / "extra.safetensors").symlink_to(outside)
    else:
        victim = shards[int(rng.integers(len(shards)))]
        victim.write_bytes(mutate_file(victim.read_bytes(), rng))


# -- the campaign ------------------------------------------------------------------------------
def _campaign(n_inproc: int, n_sub: int) -> None:
    rng = rng_for(TARGET)
    work = scratch("wv-fuzz-st-")
    tally = Tally()
    try:
        seeds_dir = work / "seeds"
        seeds_dir.mkdir()
        files = {"synthetic": _synthetic(seeds_dir / "synthetic.safetensors").read_bytes(),
                 "dtypes": _every_dtype(seeds_dir / "dtypes.safetensors").read_bytes()}
        real = _real_silero()
        if real is not None:
            files["silero"] = real.read_bytes()
        outside = work / "outside.safetensors"
        st_file(outside, {"secret.weight": ("F32", (2, 2))})
        outside.with_suffix(".json").write_text('{"secret": "hunter2"}')
        total = n_inproc + n_sub
        for i in range(total):
            case = work / f"case{i}"
            case.mkdir()
            if rng.random() < 0.3:
                src = sharded_folder(case / "model", shards=2)
                mutate_folder(src, rng, outside)
                label = f"{i}-folder"
            else:
                seed = sorted(files)[int(rng.integers(len(files)))]
                src = case / f"{seed}.safetensors"
                src.write_bytes(mutate_file(files[seed], rng))
                label = f"{i}-{seed}"
            sub = i >= n_inproc
            variant = int(rng.integers(len(VARIANTS)))
            v = run_subprocess(src, case) if sub else run_in_process(src, case, variant=variant)
            tally.add("subprocess" if sub else "in-process")
            tally.add("rendered" if v.rendered else "refused")
            if v.problem is not None:
                kept = keep(TARGET, label, src)
                raise AssertionError(f"case {label} ({kept}): {v.problem}")
            remove(case)
    finally:
        print(f"\n{TARGET} fuzz: {tally}")
        shutil.rmtree(work, ignore_errors=True)


def test_fuzz_safetensors() -> None:
    n = cases(DEFAULT_CASES)
    _campaign(n, DEFAULT_SUBPROCESS if n == DEFAULT_CASES else max(1, n // 50))
