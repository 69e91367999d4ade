"""Fuzzing the PyTorch reader: mutated zip, legacy and TorchScript checkpoints must keep the
promises (exit 0 or 2, one ``weightvis: ...`` line, no traceback, no hang, bounded memory).

Seeds are small checkpoints written by ``torch.save`` (zip and legacy), a deflated re-zip, a
TorchScript archive and hand-made files (``tests/pytorch_fixtures.py``: storage views, shared
storages, placeholders), plus the small real checkpoints of DATA.md when installed. Mutations:

- generic byte mutations of the whole file (``common.mutate``);
- structure-aware, zip: an entry's bytes mutated (``data.pkl`` by pickle opcodes, storages and
  text entries by bytes) and the archive written again with correct CRCs; header fields of the
  result changed afterwards (compression method, CRC, sizes, local vs central name / method,
  the data descriptors torch writes); entries dropped or duplicated; compression flipped;
- structure-aware, pickles: opcodes replaced, deleted, duplicated or swapped, integers and
  strings replaced by hostile ones, tricky opcodes inserted (globals, REDUCE, BUILD, memo gets,
  extension codes, persistent ids, deep nesting), the pickle truncated at an opcode;
- structure-aware, legacy: the main pickle mutated by opcodes, a storage's element count
  replaced.

Most cases run in this process (``cli.main`` with ``--workers 1`` on ``info`` and on a render,
each under an alarm, stderr captured; an uncaught exception fails the case); a few run through
``run_cli`` with ``--workers 2``, which also bounds memory. The CI default is
``DEFAULT_CASES`` (800) in-process cases and ``DEFAULT_SUBPROCESS`` (8) subprocess cases: 16 s on
the 2-core machine at a load of 4, ~35 s at a load of 10; ``WEIGHTVIS_FUZZ_CASES=N`` runs N
in-process cases and N/50 subprocess ones.
"""

from __future__ import annotations

import contextlib
import io
import pickletools
import signal
import struct
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from weightvis import cli

from .. import pytorch_fixtures as fx
from .common import (
    INTERESTING_INTS,
    broken_promise,
    cases,
    keep_crash,
    mutate,
    remove,
    rng_for,
    run_cli,
    scratch,
)

TARGET = "pytorch"
DEFAULT_CASES = 800
DEFAULT_SUBPROCESS = 8
ALARM_S = 20


# -- seeds ----------------------------------------------------------------------------------------
def _torch_seeds(d: Path) -> dict[str, bytes]:
    try:
        import torch
    except ImportError:
        return {}
    g = torch.Generator().manual_seed(7)
    w = torch.randn(6, 5, generator=g)
    sd = {"enc.weight": w, "enc.bias": torch.randn(5, generator=g).bfloat16(),
          "dec.weight": w.t(),  # a transposed view of a shared storage
          "ids": torch.arange(9), "half": torch.randn(2, 3, 2, generator=g).half(),
          "scalar": torch.tensor(1.5), "mask": torch.arange(4) % 2 == 0,
          "expand": torch.randn(3, generator=g).expand(4, 3)}
    out = {}
    for name, zip_ in (("zip.pt", True), ("legacy.pt", False)):
        torch.save(sd, d / name, _use_new_zipfile_serialization=zip_)
        out[name] = (d / name).read_bytes()
    ck = {"state_dict": {"model." + k: v for k, v in sd.items()}, "epoch": 3,
          "hyper": {"lr": 0.1, "names": ["a", "b"]}, "optimizer_states": [{"m": w * 2}]}
    torch.save(ck, d / "ckpt.pt")
    out["ckpt.pt"] = (d / "ckpt.pt").read_bytes()
    fx.rewrite_zip(d / "zip.pt", d / "deflated.pt", compress=True)
    out["deflated.pt"] = (d / "deflated.pt").read_bytes()
    lin = torch.nn.Linear(3, 2)
    torch.jit.save(torch.jit.script(lin), str(d / "script.pt"))
    out["script.pt"] = (d / "script.pt").read_bytes()
    return out


def _hand_seeds(d: Path) -> dict[str, bytes]:
    f32 = np.arange(20, dtype="<f4").tobytes()
    pkl = fx.dumps(fx.ordered_dict({
        "whole": fx.tensor("7", "FloatStorage", 20, 0, (4, 5), (5, 1)),
        "view": fx.tensor("7", "FloatStorage", 20, 1, (2, 3), (1, 2), legacy_view=("7v", 6, 8)),
        "cfg": fx.Build(fx.Call(fx.G("omegaconf", "DictConfig")), {"lr": 1}),
    }))
    out = {"hand-legacy.pth": fx.write_legacy(d / "hand-legacy.pth", pkl,
                                              [("7", 4, f32)]).read_bytes()}
    pkl = fx.dumps(fx.ordered_dict({
        "a": fx.tensor("0", "FloatStorage", 20, 2, (3, 4), (4, 1)),
        "b": fx.tensor("0", "FloatStorage", 20, 0, (5,), (0,)),
        "c": fx.tensor("1", "HalfStorage", 4, 0, (2, 2), (1, 2)),
    }))
    out["hand-zip.pt"] = fx.write_zip(d / "hand-zip.pt", pkl, {
        "0": f32, "1": np.arange(4, dtype="<f2").tobytes()}).read_bytes()
    return out


def _real_seeds() -> dict[str, bytes]:
    import importlib.util

    from ..conftest import REAL

    out = {}
    for key in ("facenet-pnet", "dists", "pocketnet0"):
        pkg, rel, _sha = REAL[key]
        spec = importlib.util.find_spec(pkg)
        if spec is not None and spec.origin is not None:
            p = Path(spec.origin).parent / rel
            if p.is_file() and p.stat().st_size < 200_000:
                out[f"real-{key}{p.suffix}"] = p.read_bytes()
    return out


@pytest.fixture(scope="module")
def seeds() -> Iterator[dict[str, bytes]]:
    d = scratch("wv-fuzz-pt-seeds-")
    try:
        yield {**_torch_seeds(d), **_hand_seeds(d), **_real_seeds()}
    finally:
        remove(d)


# -- pickle opcode mutations ----------------------------------------------------------------------
def _ops(data: bytes) -> list[tuple[int, int, Any, str]]:
    """(start, end, argument, opcode name) of each opcode of the first pickle in ``data`` (up to
    the first unparsable one)."""
    out: list[tuple[int, int, Any, str]] = []
    try:
        prev: tuple[int, Any, str] | None = None
        for op, arg, pos in pickletools.genops(data):
            if prev is not None:
                out.append((prev[0], pos, prev[1], prev[2]))
            prev = (pos, arg, op.name)
            if op.name == "STOP":
                out.append((pos, pos + 1, None, "STOP"))
                break
    except Exception:
        pass
    return out


def _int_op(v: int) -> bytes:
    if 0 <= v < 256:
        return b"K" + bytes([v])
    if -(1 << 31) <= v < (1 << 31):
        return b"J" + struct.pack("<i", v)
    raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def _str_op(s: str) -> bytes:
    b = s.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(b)) + b


HOSTILE_INTS = [-1, -(1 << 31), 1 << 31, 1 << 40, (1 << 62), -(1 << 63), 10 ** 30]
HOSTILE_STRS = ["", "os", "system", "storage", "module", "../../etc/passwd", "data.pkl",
                "0", "1", "x" * 300, "torch", "FloatStorage", "float9"]
SNIPPETS = [
    b"cos\nsystem\n", b"cbuiltins\neval\n", b"ctorch._utils\n_rebuild_tensor_v2\n",
    b"ctorch\nFloatStorage\n", b"R", b"b", b"\x81", b"\x92", b"(", b"t", b"0", b"1", b"2",
    b"h\x00", b"h\xff", b"j\xff\xff\xff\x7f", b"\x94", b"\x82\x01", b"\x83\x01\x00",
    b"\x84\x01\x00\x00\x00", b"Q", b"Pfoo\n", b"\x93", b"\x8c\x02os\x8c\x06system\x93",
    b"N\x85" * 50, b"(" * 100, b"]" * 40 + b"a" * 39, b"L" + b"9" * 5000 + b"L\n",
    b"I" + b"9" * 5000 + b"\n", b"\x8a\x08" + b"\xff" * 8, b"\x8b\x00\x00\x00\x80",
    b"\x95\xff\xff\x00\x00\x00\x00\x00\x00", b"\x96" + b"\xff" * 7 + b"\x0f",
    b"\x8e\x00\x00\x00\x00\x01\x00\x00\x00", b"\x8d" + b"\xff" * 8, b"s", b"u", b"e", b"a",
    b"}", b"]", b")",
    b"\x88", b"N", b"i__main__\nX\n", b"o", b"\x8f", b"\x90", b"\x91",
]


def mutate_pickle(data: bytes, rng: np.random.Generator) -> bytes:
    """One to three opcode-level mutations of a pickle (falls back to bytes when unparsable)."""
    ops = _ops(data)
    if len(ops) < 3:
        return mutate(data, rng)
    buf = data
    for _ in range(int(rng.integers(1, 4))):
        ops = _ops(buf)
        if len(ops) < 2:
            break
        i = int(rng.integers(1, len(ops)))
        s, e, arg, name = ops[i]
        kind = int(rng.integers(0, 8))
        if kind == 0 and isinstance(arg, int) and not isinstance(arg, bool):
            v = int(rng.choice(INTERESTING_INTS + HOSTILE_INTS + [arg + 1, arg - 1, -arg]))
            buf = buf[:s] + _int_op(v) + buf[e:]
        elif kind == 1 and isinstance(arg, str):
            strs = [a for _s, _e, a, _n in ops if isinstance(a, str)] + HOSTILE_STRS
            buf = buf[:s] + _str_op(str(rng.choice(strs))) + buf[e:]
        elif kind == 2:
            buf = buf[:s] + buf[e:]
        elif kind == 3:
            buf = buf[:e] + buf[s:e] + buf[e:]
        elif kind == 4:
            j = int(rng.integers(1, len(ops)))
            s2, e2 = ops[j][0], ops[j][1]
            if e <= s2:
                buf = buf[:s] + buf[s2:e2] + buf[e:s2] + buf[s:e] + buf[e2:]
        elif kind == 5:
            snip = SNIPPETS[int(rng.integers(0, len(SNIPPETS)))]
            buf = buf[:s] + snip + buf[s:]
        elif kind == 6:
            buf = buf[:s]
        else:
            buf = mutate(buf, rng)
    return buf


# -- zip structure ------------------------------------------------------------------------------
def _rezip(entries: list[tuple[zipfile.ZipInfo, bytes]]) -> bytes:
    out = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(out, "w") as z:
        warnings.simplefilter("ignore")  # duplicate names are one of the mutations
        for info, data in entries:
            zi = zipfile.ZipInfo(info.filename, info.date_time)
            zi.compress_type = info.compress_type
            z.writestr(zi, data)
    return out.getvalue()


def _zip_entries(data: bytes) -> list[tuple[zipfile.ZipInfo, bytes]] | None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return [(i, z.read(i)) for i in z.infolist()]
    except Exception:
        return None


def _header_edit(data: bytes, rng: np.random.Generator) -> bytes:
    """Change one field of a local or central header (method, CRC, sizes, name, offset) or of
    a data descriptor (CRC, sizes: what torch writes instead of local sizes)."""
    buf = bytearray(data)
    descriptors = [i for i in range(len(buf) - 16) if buf[i:i + 4] == b"PK\x07\x08"]
    if descriptors and rng.random() < 0.25:
        at = int(rng.choice(descriptors)) + 4 * int(rng.integers(1, 4))
        buf[at:at + 4] = int(rng.choice([0, 1, 0xFFFFFFFF, int(rng.integers(0, 1 << 16))])
                             ).to_bytes(4, "little")
        return bytes(buf)
    central = [i for i in range(len(buf) - 46) if buf[i:i + 4] == b"PK\x01\x02"]
    local = [i for i in range(len(buf) - 30) if buf[i:i + 4] == b"PK\x03\x04"]
    if not central or not local:
        return mutate(data, rng)
    where = int(rng.integers(0, 2))
    at = int(rng.choice(central if where else local))
    # (offset, width) of method, crc, compressed size, uncompressed size, name's first byte
    fields = ([(10, 2), (16, 4), (20, 4), (24, 4), (46, 1), (42, 4)] if where
              else [(8, 2), (14, 4), (18, 4), (22, 4), (30, 1)])
    off, width = fields[int(rng.integers(0, len(fields)))]
    values = [0, 1, 8, 12, 14, 99, 0xFFFF, 0xFFFFFFFF, 1 << 30, 64]
    if width == 1:
        buf[at + off] ^= 0x20
    else:
        v = int(rng.choice(values)) if rng.random() < 0.7 else int(rng.integers(0, 1 << 16))
        buf[at + off:at + off + width] = (v & ((1 << (8 * width)) - 1)).to_bytes(width,
                                                                                 "little")
    return bytes(buf)


def mutate_zip(data: bytes, rng: np.random.Generator) -> bytes:
    entries = _zip_entries(data)
    if not entries:
        return mutate(data, rng)
    kind = int(rng.integers(0, 6))
    if kind <= 2:  # one entry's bytes (data.pkl by opcodes), CRCs recomputed
        pkls = [i for i, (zi, _) in enumerate(entries) if zi.filename.endswith(".pkl")]
        i = (int(rng.choice(pkls)) if pkls and kind < 2
             else int(rng.integers(0, len(entries))))
        zi, body = entries[i]
        body = (mutate_pickle(body, rng) if zi.filename.endswith(".pkl")
                else mutate(body, rng))
        entries[i] = (zi, body)
        return _rezip(entries)
    if kind == 3:  # compression flags flipped, CRCs right
        i = int(rng.integers(0, len(entries)))
        zi, body = entries[i]
        zi.compress_type = (zipfile.ZIP_STORED if zi.compress_type != zipfile.ZIP_STORED
                            else zipfile.ZIP_DEFLATED)
        entries[i] = (zi, body)
        return _header_edit(_rezip(entries), rng) if rng.random() < 0.5 else _rezip(entries)
    if kind == 4:  # entries dropped or duplicated
        i = int(rng.integers(0, len(entries)))
        if rng.random() < 0.5:
            del entries[i]
        else:
            entries.insert(i, entries[i])
        return _rezip(entries)
    return _header_edit(data, rng)


# -- legacy structure -------------------------------------------------------------------------
def _legacy_parts(data: bytes) -> tuple[list[bytes], bytes] | None:
    """The five pickles of a legacy file and the storage records after them."""
    parts, pos = [], 0
    for _ in range(5):
        ops = _ops(data[pos:])
        if not ops or ops[-1][3] != "STOP":
            return None
        end = pos + ops[-1][1]
        parts.append(data[pos:end])
        pos = end
    return parts, data[pos:]


def mutate_legacy(data: bytes, rng: np.random.Generator) -> bytes:
    got = _legacy_parts(data)
    if got is None:
        return mutate(data, rng)
    parts, rest = got
    if rng.random() < 0.7 or len(rest) < 8:
        i = 3 if rng.random() < 0.8 else int(rng.integers(0, 5))
        parts[i] = mutate_pickle(parts[i], rng)
        return b"".join(parts) + rest
    v = int(rng.choice(INTERESTING_INTS + HOSTILE_INTS[:-1]))
    return b"".join(parts) + struct.pack("<q", max(min(v, (1 << 63) - 1), -(1 << 63))) + rest[8:]


def one_case(seeds: dict[str, bytes], rng: np.random.Generator) -> tuple[str, bytes]:
    name = sorted(seeds)[int(rng.integers(0, len(seeds)))]
    data = seeds[name]
    if rng.random() < 0.25:
        return name, mutate(data, rng, protect=2)
    if data[:4] == b"PK\x03\x04":
        return name, mutate_zip(data, rng)
    return name, mutate_legacy(data, rng)


# -- running ------------------------------------------------------------------------------------
class _Alarm(Exception):
    pass


@contextlib.contextmanager
def _alarm(seconds: int) -> Iterator[None]:
    def ring(signum: int, frame: Any) -> None:
        raise _Alarm(f"no answer after {seconds} s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def run_in_process(args: list[str]) -> str | None:
    """``cli.main(args)`` here; what it did that it promises not to, or None."""
    err, out = io.StringIO(), io.StringIO()
    try:
        with _alarm(ALARM_S), contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = cli.main(args)
    except BaseException as e:  # an uncaught exception (or the alarm) is the failure found
        import traceback

        return f"{type(e).__name__}: {e}\n{''.join(traceback.format_exc()[-3000:])}"
    if code not in (0, 2):
        return f"exit {code}: {err.getvalue()[-2000:]}"
    if code == 2:
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        if len(lines) != 1 or not lines[0].startswith("weightvis: "):
            return f"not one error line: {err.getvalue()[-2000:]!r}"
    return None


def check_case(path: Path, work: Path, run: Callable[[list[str]], str | None]) -> str | None:
    why = run(["info", str(path)])
    if why:
        return "info: " + why
    out = work / "bundle"
    why = run([str(path), "--out", str(out), "--workers", "1", "-q"])
    remove(out)
    return "render: " + why if why else None


def _subprocess_run(args: list[str]) -> str | None:
    if "--workers" in args:
        args[args.index("--workers") + 1] = "2"
    return broken_promise(run_cli(args))


def _campaign(seeds: dict[str, bytes], label: str, n: int,
              run: Callable[[list[str]], str | None], rng: np.random.Generator) -> list[str]:
    failures = []
    work = scratch()
    try:
        for k in range(n):
            seed, data = one_case(seeds, rng)
            path = work / f"case{Path(seed).suffix or '.pt'}"
            path.write_bytes(data)
            why = check_case(path, work, run)
            if why:
                kept = keep_crash(TARGET, f"{label}{k}", data, path.suffix)
                failures.append(f"{kept} (from {seed}): {why[:1500]}")
    finally:
        remove(work)
    return failures


def test_seeds_render(seeds: dict[str, bytes]) -> None:
    """Every seed is a valid checkpoint that renders (so mutations start from real paths)."""
    work = scratch()
    try:
        for name, data in seeds.items():
            p = work / name
            p.write_bytes(data)
            assert check_case(p, work, run_in_process) is None, name
            assert not (work / "bundle").exists()
    finally:
        remove(work)


def test_fuzz_pytorch_in_process(seeds: dict[str, bytes]) -> None:
    n = cases(DEFAULT_CASES)
    failures = _campaign(seeds, "inproc", n, run_in_process, rng_for(TARGET))
    assert not failures, f"{len(failures)} of {n} cases failed:\n" + "\n".join(failures[:10])


def test_fuzz_pytorch_subprocess(seeds: dict[str, bytes]) -> None:
    n = max(DEFAULT_SUBPROCESS, cases(DEFAULT_SUBPROCESS * 50) // 50)
    rng = rng_for(TARGET + "-subprocess")
    failures = _campaign(seeds, "subproc", n, _subprocess_run, rng)
    assert not failures, f"{len(failures)} of {n} cases failed:\n" + "\n".join(failures[:10])

