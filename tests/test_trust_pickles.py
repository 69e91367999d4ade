"""No code from a checkpoint's pickle ever runs (issue 11, part B, item 4).

Every payload below is a pickle fragment that, unpickled by ``pickle.loads``, would create a
sentinel file: shell commands, ``eval``/``exec``, imports, file-creating constructors, torch and
numpy functions that take paths, every opcode family that reaches code (GLOBAL, STACK_GLOBAL,
REDUCE, BUILD with ``__setstate__``, INST, OBJ, NEWOBJ, NEWOBJ_EX, EXT1/2/4 through copyreg's
extension registry, PERSID/BINPERSID, memo tricks) and torch's ``_rebuild_*`` functions with
hostile arguments. ``test_the_payloads_are_armed`` proves it: it loads each one with plain
``pickle.loads`` in a subprocess and finds its sentinel.

Each payload is then put in three containers - a zip checkpoint's ``data.pkl``, a legacy
``torch.save`` file, a plain pickle ``.bin`` - beside a real tensor, and read by ``info`` and a
render: the sentinel never appears, and the CLI renders the tensor (the payload is an inert
record in ``other_entries``) or gives one error line naming the file. The notable ones are kept
as corpus files (``tests/fuzz/corpus/pytorch/pickle-*``, sentinels under
``/tmp/weightvis-pwned/``), which ``test_corpus.py`` replays with two workers.
"""

from __future__ import annotations

import contextlib
import copyreg
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from weightvis import cli
from weightvis.formats.pytorch import PyTorchReader

from . import pytorch_fixtures as fx
from .fuzz.common import CORPUS, broken_promise, run_cli

G, C, B, Raw = fx.G, fx.Call, fx.Build, fx.Raw
CORPUS_SENTINELS = Path("/tmp/weightvis-pwned")
EXT_CODES = {"ext1": (0xF0, "os", "system"), "ext2": (0x1F1, "posix", "system"),
             "ext4": (0x10000F2, "subprocess", "getoutput")}
"""Extension codes registered with copyreg: code, module, name (each runs a shell command)."""
F32 = np.arange(6, dtype="<f4")


def _str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def touch(s: Path) -> str:
    return f"touch '{s}'"


def py(s: Path) -> str:
    return f"open({str(s)!r}, 'w').close()"


def getattr_(obj: Any, name: str) -> Any:
    return C(G("builtins", "getattr"), obj, name)


def os_module() -> Any:
    return C(G("importlib", "import_module"), "os")


@dataclass(frozen=True)
class Payload:
    name: str
    build: Callable[[Path, Path], Any]
    """(sentinel, a folder of helper files) -> the fragment (an fx node pushing one value)."""
    armed: bool = True
    """``pickle.loads`` of the fragment creates the sentinel (checked)."""
    refused: bool = False
    """The reader refuses a pickle holding it (exit 2) rather than listing it."""
    proto: int = 2
    suffix: str = ".pwned"
    tensors: tuple[str, ...] = ("w",)
    """What a zip or legacy file holding it draws (a hostile hook on a real tensor: both)."""


def _memo_overwrite(s: Path, _d: Path) -> Any:
    return Raw(b"ctorch._utils\n_rebuild_tensor_v2\nq\x000cos\nsystem\nq\x000h\x00"
               + _str(touch(s)) + b"\x85R")


def _memo_twice(s: Path, _d: Path) -> Any:
    return Raw(b"cos\nsystem\nq\x01" + _str("true") + b"\x85R0h\x01" + _str(touch(s))
               + b"\x85R")


def _self_referential(s: Path, _d: Path) -> Any:
    return Raw(b"]q\x02(h\x02cos\nsystem\n" + _str(touch(s)) + b"\x85Re")


def _deep_call(s: Path, _d: Path) -> Any:
    return Raw(b"]" * 2000 + b"cos\nsystem\n" + _str(touch(s)) + b"\x85R" + b"a" * 2000)


def _ext_op(code: int) -> bytes:
    if code < 0x100:
        return b"\x82" + struct.pack("<B", code)
    if code < 0x10000:
        return b"\x83" + struct.pack("<H", code)
    return b"\x84" + struct.pack("<I", code)


def _ext(name: str) -> Callable[[Path, Path], Any]:
    op = _ext_op(EXT_CODES[name][0])
    return lambda s, _d: Raw(op + _str(touch(s)) + b"\x85R")


def _build_setstate(obj: Any) -> Callable[[Path, Path], Any]:
    """BUILD (None, {'__setstate__': os.system}) then BUILD cmd: the second BUILD calls the
    instance attribute the first one set."""
    return lambda s, _d: B(B(obj, (None, {"__setstate__": G("os", "system")})), touch(s))


def _tensor_v2(storage: Any) -> Any:
    return C(G("torch._utils", "_rebuild_tensor_v2"), storage, 0, (1,), (1,), False, None)


def _pid_storage() -> Any:
    return fx.PID("storage", G("torch", "FloatStorage"), "0", "cpu", 6)


PAYLOADS = [
    # shells and interpreters
    Payload("os_system", lambda s, d: C(G("os", "system"), touch(s))),
    Payload("posix_system", lambda s, d: C(G("posix", "system"), touch(s))),
    Payload("os_popen", lambda s, d: C(G("os", "popen"), touch(s))),
    Payload("subprocess_call", lambda s, d: C(G("subprocess", "call"), ["touch", str(s)])),
    Payload("subprocess_run", lambda s, d: C(G("subprocess", "run"), ["touch", str(s)])),
    Payload("subprocess_check_output",
            lambda s, d: C(G("subprocess", "check_output"), ["touch", str(s)])),
    Payload("subprocess_popen", lambda s, d: C(G("subprocess", "Popen"), ["touch", str(s)])),
    Payload("builtins_eval", lambda s, d: C(G("builtins", "eval"), py(s))),
    Payload("builtins_exec", lambda s, d: C(G("builtins", "exec"), py(s))),
    Payload("exec_of_compile", lambda s, d: C(G("builtins", "exec"), C(
        G("builtins", "compile"), py(s), "<x>", "exec"))),
    Payload("dunder_import", lambda s, d: C(getattr_(C(G("builtins", "__import__"), "os"),
                                                     "system"), touch(s))),
    Payload("importlib_import_module", lambda s, d: C(getattr_(os_module(), "system"), touch(s))),
    Payload("operator_methodcaller", lambda s, d: C(C(G("operator", "methodcaller"), "system",
                                                      touch(s)), os_module())),
    Payload("operator_attrgetter", lambda s, d: C(C(C(G("operator", "attrgetter"), "system"),
                                                    os_module()), touch(s))),
    Payload("functools_partial", lambda s, d: C(C(G("functools", "partial"), G("os", "system"),
                                                  touch(s)))),
    Payload("list_of_map", lambda s, d: C(G("builtins", "list"), C(
        G("builtins", "map"), G("os", "system"), [touch(s)]))),
    Payload("timeit", lambda s, d: C(G("timeit", "timeit"), py(s), "pass",
                                     G("time", "perf_counter"), 1)),
    Payload("code_interpreter", lambda s, d: C(getattr_(C(G("code", "InteractiveInterpreter")),
                                                        "runsource"), py(s))),
    Payload("runpy_run_path", lambda s, d: C(G("runpy", "run_path"), str(d / f"{s.stem}.py"))),
    Payload("source_file_loader", lambda s, d: C(getattr_(C(
        G("importlib.machinery", "SourceFileLoader"), "wv_evil", str(d / f"{s.stem}.py")),
        "load_module"))),
    Payload("nested_pickle_loads", lambda s, d: C(G("pickle", "loads"), pickle.dumps(
        _Evil(touch(s)), protocol=2))),
    Payload("globals_of_a_torch_function", lambda s, d: C(C(G("operator", "getitem"), C(
        G("operator", "getitem"), getattr_(G("torch._utils", "_rebuild_tensor_v2"),
                                           "__globals__"), "__builtins__"), "eval"), py(s))),
    # files created by constructors and functions that take paths
    Payload("builtins_open", lambda s, d: C(G("builtins", "open"), str(s), "w")),
    Payload("io_open", lambda s, d: C(G("io", "open"), str(s), "w")),
    Payload("io_fileio", lambda s, d: C(G("io", "FileIO"), str(s), "w")),
    Payload("codecs_open", lambda s, d: C(G("codecs", "open"), str(s), "w")),
    Payload("os_open", lambda s, d: C(G("os", "open"), str(s), os.O_CREAT | os.O_WRONLY)),
    Payload("os_mkdir", lambda s, d: C(G("os", "mkdir"), str(s))),
    Payload("os_symlink", lambda s, d: C(G("os", "symlink"), "/nonexistent", str(s))),
    Payload("pathlib_touch", lambda s, d: C(getattr_(C(G("pathlib", "Path"), str(s)), "touch"))),
    Payload("shutil_copyfile", lambda s, d: C(G("shutil", "copyfile"), str(d / "seed.txt"),
                                              str(s))),
    Payload("urlretrieve_file_url", lambda s, d: C(G("urllib.request", "urlretrieve"),
                                                   f"file://{d / 'seed.txt'}", str(s))),
    Payload("logging_filehandler", lambda s, d: C(G("logging", "FileHandler"), str(s))),
    Payload("zipfile_write", lambda s, d: C(G("zipfile", "ZipFile"), str(s), "w")),
    Payload("tarfile_write", lambda s, d: C(G("tarfile", "open"), str(s), "w")),
    Payload("sqlite3_connect", lambda s, d: C(G("sqlite3", "connect"), str(s))),
    Payload("numpy_load_pickled_array", lambda s, d: C(G("numpy", "load"),
                                                       str(d / f"{s.stem}.npy"), None, True)),
    Payload("numpy_reconstruct_object_array", lambda s, d: B(
        C(G("numpy.core.multiarray", "_reconstruct"), G("numpy", "ndarray"), (0,), b"b"),
        (1, (1,), C(G("numpy", "dtype"), "O8", False, True), False,
         [C(G("os", "system"), touch(s))]))),
    Payload("numpy_memmap", lambda s, d: C(G("numpy", "memmap"), str(s), "uint8", "w+", 0,
                                           (1,))),
    Payload("numpy_save", lambda s, d: C(G("numpy", "save"), str(s), [1, 2]), suffix=".npy"),
    Payload("numpy_open_memmap", lambda s, d: C(G("numpy.lib.format", "open_memmap"), str(s),
                                                "w+", "uint8", (1,))),
    Payload("torch_save", lambda s, d: C(G("torch", "save"), [1], str(s))),
    Payload("torch_load", lambda s, d: C(G("torch", "load"), str(d / f"{s.stem}.pt")),
            armed=False),  # torch >= 2.6 loads weights_only by default: torch refuses it too
    # every opcode family that reaches code
    Payload("stack_global", lambda s, d: Raw(b"\x8c\x02os\x8c\x06system\x93" + _str(touch(s))
                                             + b"\x85R")),
    Payload("stack_global_dotted", lambda s, d: Raw(
        _str("builtins") + _str("getattr.__self__.eval") + b"\x93" + _str(py(s)) + b"\x85R"),
        proto=4),
    Payload("inst", lambda s, d: Raw(b"(" + _str(touch(s)) + b"ios\nsystem\n")),
    Payload("obj", lambda s, d: Raw(b"(cos\nsystem\n" + _str(touch(s)) + b"o")),
    Payload("newobj", lambda s, d: Raw(b"csubprocess\nPopen\n](" + _str("touch") + _str(str(s))
                                       + b"e\x85\x81"), armed=False),
    Payload("newobj_ex", lambda s, d: Raw(b"csubprocess\nPopen\n)}" + _str("args") + b"]("
                                          + _str("touch") + _str(str(s)) + b"es\x92"),
            armed=False),  # __new__ of Popen runs nothing; the placeholder records it
    Payload("build_setstate_on_an_instance", _build_setstate(C(G("argparse", "Namespace")))),
    Payload("build_setstate_on_an_ordered_dict",
            _build_setstate(C(G("collections", "OrderedDict")))),
    Payload("build_state_with_a_call", lambda s, d: B(C(G("argparse", "Namespace")), {
        "x": C(G("os", "system"), touch(s))})),
    Payload("build_on_a_placeholder_class", lambda s, d: B(G("os", "system"), (
        None, {"__call__": G("builtins", "eval")})), armed=False, refused=True),
    Payload("build_on_a_stand_in", lambda s, d: B(G("torch._utils", "_rebuild_tensor_v2"), (
        None, {"fn": G("os", "system")})), armed=False, refused=True),
    Payload("ext1", _ext("ext1"), refused=True),
    Payload("ext2", _ext("ext2"), refused=True),
    Payload("ext4", _ext("ext4"), refused=True),
    Payload("persid_text", lambda s, d: Raw(b"P" + touch(s).encode() + b"\n"), armed=False,
            refused=True),
    Payload("binpersid_with_a_call", lambda s, d: fx.PID(C(G("os", "system"), touch(s))),
            refused=True),
    Payload("persid_module_with_source", lambda s, d: fx.PID(
        "module", G("os", "system"), "evil.py", f"import os\nos.system({touch(s)!r})\n"),
        armed=False),
    Payload("memo_overwrites_a_stand_in", _memo_overwrite),
    Payload("memo_get_twice", _memo_twice),
    Payload("memo_index_bomb", lambda s, d: Raw(b"Nr\x00\xe1\xf5\x05"), armed=False,
            refused=True),
    Payload("self_referential_list", _self_referential),
    Payload("calls_nested_2000_deep", _deep_call),
    # torch's rebuild functions (allow-listed stand-ins) with hostile arguments
    Payload("rebuild_tensor_storage_call", lambda s, d: _tensor_v2(C(G("os", "system"),
                                                                     touch(s))), refused=True),
    Payload("rebuild_tensor_hooks_call", lambda s, d: C(
        G("torch._utils", "_rebuild_tensor_v2"), _pid_storage(), 0, (2,), (1,), False,
        C(G("os", "system"), touch(s))), tensors=("w", "payload")),
    Payload("rebuild_tensor_v3_dtype_call", lambda s, d: C(
        G("torch._utils", "_rebuild_tensor_v3"), _pid_storage(), 0, (2,), (1,), False, None,
        C(G("os", "system"), touch(s)))),
    Payload("rebuild_parameter_call", lambda s, d: C(
        G("torch._utils", "_rebuild_parameter"), C(G("os", "system"), touch(s)), False,
        C(G("collections", "OrderedDict")))),
    Payload("rebuild_from_type_v2_func", lambda s, d: C(
        G("torch._tensor", "_rebuild_from_type_v2"), G("os", "system"), G("torch", "Tensor"),
        (touch(s),), {})),
    Payload("rebuild_from_type_v2_args", lambda s, d: C(
        G("torch._tensor", "_rebuild_from_type_v2"), G("torch._utils", "_rebuild_tensor_v2"),
        G("torch", "Tensor"), (C(G("os", "system"), touch(s)), 0, (1,), (1,)), {}),
        refused=True),
    Payload("ordered_dict_items_call", lambda s, d: C(G("collections", "OrderedDict"), [
        ("k", C(G("os", "system"), touch(s)))])),
    Payload("set_of_a_call", lambda s, d: C(G("builtins", "set"), [C(G("os", "system"),
                                                                     touch(s))])),
    Payload("torch_size_of_a_call", lambda s, d: C(G("torch", "Size"), [C(G("os", "system"),
                                                                          touch(s))])),
    Payload("jit_tensorlist_of_a_call", lambda s, d: C(G("torch.jit._pickle",
                                                         "build_tensorlist"),
                                                       [C(G("os", "system"), touch(s))])),
    Payload("copyreg_reconstructor", lambda s, d: C(G("copyreg", "_reconstructor"),
                                                    G("os", "system"), G("builtins", "object"),
                                                    None), armed=False),
    Payload("codecs_encode", lambda s, d: C(G("_codecs", "encode"), touch(s), "rot13"),
            armed=False),
]
ARMED = [p for p in PAYLOADS if p.armed]
NOTABLE = ["os_system", "stack_global_dotted", "inst", "obj", "build_setstate_on_an_instance",
           "ext1", "binpersid_with_a_call", "memo_index_bomb", "numpy_reconstruct_object_array",
           "globals_of_a_torch_function", "rebuild_from_type_v2_func",
           "rebuild_tensor_storage_call"]


class _Evil:
    """Pickled (by np.save, torch.save, pickle.dumps) as os.system(command)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


def helpers(d: Path, sentinel_of: Callable[[Payload], Path]) -> Path:
    """The files some payloads reach for: a seed to copy, a .py that creates its payload's
    sentinel, a pickled object array, an armed torch.save file."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "seed.txt").write_text("seed\n")
    for p in PAYLOADS:
        s = sentinel_of(p)
        if p.name in ("runpy_run_path", "source_file_loader"):
            (d / f"{s.stem}.py").write_text(py(s) + "\n")
        if p.name == "numpy_load_pickled_array":
            np.save(d / f"{s.stem}.npy", np.array([_Evil(touch(s))], dtype=object),
                    allow_pickle=True)
        if p.name == "torch_load":
            torch = pytest.importorskip("torch")
            torch.save({"x": _Evil(touch(s))}, d / f"{s.stem}.pt")
    return d


def fragment_pickle(p: Payload, sentinel: Path, d: Path) -> bytes:
    """The payload alone as a pickle."""
    data = fx.dumps(p.build(sentinel, d))
    return data if p.proto == 2 else b"\x80\x04" + data[2:]


def containers(p: Payload, sentinel: Path, d: Path, out: Path) -> dict[str, Path]:
    """The payload beside a real tensor in a zip and a legacy checkpoint, and alone as a plain
    pickle ``.bin``."""
    sd = fx.dumps(fx.ordered_dict({"w": fx.tensor("0", "FloatStorage", 6, 0, (2, 3), (3, 1)),
                                   "payload": p.build(sentinel, d)}))
    if p.proto != 2:
        sd = b"\x80\x04" + sd[2:]
    out.mkdir(parents=True, exist_ok=True)
    return {"zip": fx.write_zip(out / f"{p.name}.pt", sd, {"0": F32.tobytes()}),
            "legacy": fx.write_legacy(out / f"{p.name}.pth", sd, [("0", 4, F32.tobytes())]),
            "plain": _write(out / f"{p.name}.bin", fragment_pickle(p, sentinel, d))}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def cli_run(args: list[str]) -> tuple[int, list[str]]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(args)
    return code, err.getvalue().splitlines()


def test_there_are_enough_distinct_payloads() -> None:
    assert len({p.name for p in PAYLOADS}) == len(PAYLOADS) >= 40
    assert len(ARMED) >= 40
    frags = {p.name: fragment_pickle(p, Path("/s"), Path("/d")) for p in PAYLOADS}
    assert len(set(frags.values())) == len(frags)


_ARMED_CHECK = """
import copyreg, json, pickle, sys, warnings
warnings.simplefilter("ignore")
import torch  # the torch payloads resolve torch's own functions
for code, module, name in json.loads(sys.argv[1]).values():
    copyreg.add_extension(module, name, code)
class Unpickler(pickle.Unpickler):  # pickle.Unpickler, with torch.load's persistent ids
    def persistent_load(self, pid):
        return pid
for path in sys.argv[2:]:
    try:
        Unpickler(open(path, "rb")).load()
    except BaseException as e:
        print(path, type(e).__name__, str(e)[:100], file=sys.stderr)
"""


def test_the_payloads_are_armed(tmp_path: Path) -> None:
    """An unrestricted unpickler (pickle's, accepting persistent ids as torch.load does) creates
    the sentinel of every armed payload: the fixtures are live."""
    pytest.importorskip("torch")
    d = helpers(tmp_path / "helpers", lambda p: tmp_path / f"{p.name}{p.suffix}")
    files = []
    for p in ARMED:
        f = tmp_path / f"{p.name}.pkl"
        f.write_bytes(fragment_pickle(p, tmp_path / f"{p.name}{p.suffix}", d))
        files.append(str(f))
    subprocess.run([sys.executable, "-c", _ARMED_CHECK, json.dumps(EXT_CODES), *files],
                   cwd=tmp_path, capture_output=True, timeout=120, check=True)
    deadline = time.monotonic() + 10  # os.popen, Popen: the touch runs on its own
    missing = [p.name for p in ARMED]
    while missing and time.monotonic() < deadline:
        missing = [n for n in missing if not any(os.path.lexists(tmp_path / f"{n}{sfx}")
                                                 for sfx in (".pwned", ".npy"))]
        time.sleep(0.05)
    assert not missing, f"payloads that did not fire under pickle.loads: {missing}"


@pytest.fixture()
def ext_cache_poisoned() -> Any:
    """os.system registered as extension codes, and resolved once by an unrestricted unpickler
    so that copyreg's cache holds the real function."""
    import importlib

    for code, module, name in EXT_CODES.values():
        copyreg.add_extension(module, name, code)
        real = getattr(importlib.import_module(module), name)
        assert pickle.loads(b"\x80\x02" + _ext_op(code) + b".") is real
    try:
        yield
    finally:
        for code, module, name in EXT_CODES.values():
            copyreg.remove_extension(module, name, code)


@pytest.mark.parametrize("payload", PAYLOADS, ids=[p.name for p in PAYLOADS])
def test_no_payload_runs_in_any_container(tmp_path: Path, payload: Payload,
                                          ext_cache_poisoned: Any) -> None:
    sentinel = tmp_path / f"{payload.name}{payload.suffix}"
    d = helpers(tmp_path / "helpers", lambda p: tmp_path / f"{p.name}{p.suffix}")
    for container, f in containers(payload, sentinel, d, tmp_path / "files").items():
        code, err = cli_run(["info", str(f)])
        out = tmp_path / f"bundle-{container}"
        code2, err2 = cli_run([str(f), "--out", str(out), "--workers", "1", "-q"])
        assert not os.path.lexists(sentinel), (payload.name, container)
        for c, e in ((code, err), (code2, err2)):
            if c == 2:
                assert len(e) == 1 and e[0].startswith(f"weightvis: error: {f}"), e
            else:
                assert c == 0 and not e, (c, e)
        expect = 2 if container == "plain" or payload.refused else 0
        assert (code, code2) == (expect, expect), (payload.name, container, err, err2)
        if expect == 0:
            with PyTorchReader(f) as r:
                assert tuple(t.name for t in r.tensors()) == payload.tensors
                np.testing.assert_array_equal(r.read_all("w"), F32.reshape(2, 3))
                listed = {**r.metadata.get("other_entries", {}),
                          **r.metadata.get("unsupported_tensors", {})}
                assert "payload" in payload.tensors or any(
                    k == "payload" or k.startswith("payload.") for k in listed), listed
        elif container == "plain":
            assert "not a torch.save file" in err[0] or "refused" in err[0] or (
                "cannot unpickle" in err[0]), err


@pytest.mark.parametrize("stage", ["magic", "protocol", "sys_info", "keys"])
def test_payloads_in_the_other_legacy_pickles(tmp_path: Path, stage: str) -> None:
    """The four small pickles around a legacy file's object are read the same careful way."""
    d = helpers(tmp_path / "helpers", lambda p: tmp_path / f"{p.name}{p.suffix}")
    legacy = containers(PAYLOADS[0], tmp_path / "x", d, tmp_path / "files")["legacy"]
    parts = _split_legacy(legacy.read_bytes())
    index = {"magic": 0, "protocol": 1, "sys_info": 2, "keys": 4}[stage]
    for p in (p for p in PAYLOADS if p.name in NOTABLE):
        sentinel = tmp_path / f"{p.name}{p.suffix}"
        evil = list(parts)
        evil[index] = fragment_pickle(p, sentinel, d)
        f = tmp_path / f"{stage}-{p.name}.pth"
        f.write_bytes(b"".join(evil))
        code, err = cli_run(["info", str(f)])
        if stage != "sys_info":  # sys_info is only looked into (an inert record is fine)
            assert code == 2, (stage, p.name)
        assert code == 0 and not err or len(err) == 1 and err[0].startswith(
            f"weightvis: error: {f}"), err
        assert not os.path.lexists(sentinel), (stage, p.name)


def _split_legacy(data: bytes) -> list[bytes]:
    """The five pickles of a legacy file, then the storage records."""
    import pickletools

    parts, pos = [], 0
    for _ in range(5):
        end = pos + max(p for _op, _arg, p in pickletools.genops(data[pos:])) + 1
        parts.append(data[pos:end])
        pos = end
    return parts + [data[pos:]]


def test_notable_payloads_with_default_workers(tmp_path: Path) -> None:
    """A render with all cores (the workers open the file too): nothing runs, one line or 0."""
    d = helpers(tmp_path / "helpers", lambda p: tmp_path / f"{p.name}{p.suffix}")
    for p in (p for p in PAYLOADS if p.name in ("os_system", "build_setstate_on_an_instance",
                                                "numpy_reconstruct_object_array")):
        sentinel = tmp_path / f"{p.name}{p.suffix}"
        f = containers(p, sentinel, d, tmp_path / "files")["zip"]
        o = run_cli([str(f), "--out", str(tmp_path / f"b-{p.name}"), "-q"])
        assert broken_promise(o) is None and o.returncode == 0, o
        assert not os.path.lexists(sentinel), p.name


# -- the corpus -----------------------------------------------------------------------------------
def corpus_files(root: Path) -> dict[str, bytes]:
    """The notable payloads in their three containers, sentinels under /tmp/weightvis-pwned/
    (helper files are not written: the payloads that need one just name it)."""
    d = CORPUS_SENTINELS / "helpers"
    out: dict[str, bytes] = {}
    for p in PAYLOADS:
        if p.name not in NOTABLE:
            continue
        for container, f in containers(p, CORPUS_SENTINELS / f"{p.name}{p.suffix}", d,
                                       root).items():
            out[f"pickle-{container}-{f.name}"] = f.read_bytes()
    return out


def test_corpus_pickles_are_current(tmp_path: Path) -> None:
    """tests/fuzz/corpus/pytorch/pickle-* are what corpus_files() writes (regenerate with
    ``python -m tests.test_trust_pickles``)."""
    want = corpus_files(tmp_path)
    have = {f.name: f.read_bytes() for f in (CORPUS / "pytorch").glob("pickle-*")}
    assert have == want


def test_corpus_pickles_never_run(tmp_path: Path) -> None:
    files = sorted((CORPUS / "pytorch").glob("pickle-*"))
    assert len(files) == 3 * len(NOTABLE)
    for f in files:
        for args in (["info", str(f)], [str(f), "--out", str(tmp_path / f.name), "-q",
                                        "--workers", "1"]):
            code, err = cli_run(args)
            assert code in (0, 2) and len(err) == code // 2, (f, err)
    assert not CORPUS_SENTINELS.exists() or not [
        s for s in CORPUS_SENTINELS.iterdir() if s.name != "helpers"]


if __name__ == "__main__":  # regenerate the corpus files
    import tempfile

    dest = CORPUS / "pytorch"
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("pickle-*"):
        old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in corpus_files(Path(tmp)).items():
            (dest / name).write_bytes(data)
