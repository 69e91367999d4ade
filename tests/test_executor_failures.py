"""A failing or dying worker ends the run at once with the error ``--workers 1`` gives: no hang,
no respawn loop, no worker left running, nothing left in the output's folder."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import weightvis
from weightvis import painters
from weightvis.errors import FormatError, WorkerError
from weightvis.executors import InlineExecutor, LocalPoolExecutor

pytestmark = pytest.mark.skipif("fork" not in mp.get_all_start_methods(),
                                reason="failures are injected into forked workers")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(5)
    t = {f"model.layers.{i}.mlp.up_proj.weight": rng.standard_normal((700, 600)).astype(np.float32)
         for i in range(6)}
    p = tmp_path_factory.mktemp("ck") / "m.safetensors"
    save_file(t, str(p))
    return p


class _Unpicklable(Exception):
    def __init__(self, a: int, b: int) -> None:  # pickling calls __init__(msg): fails
        super().__init__(f"{a}/{b}")


def _fail_in(layer: str, how: str):  # type: ignore[no-untyped-def]
    parent = os.getpid()

    def rect(self, w, tensor, *args, **kwargs):  # type: ignore[no-untyped-def]
        if layer in tensor and os.getpid() != parent:
            if how == "format":
                raise FormatError("m.safetensors", "injected failure", tensor=tensor, offset=64)
            if how == "unpicklable":
                raise _Unpicklable(1, 2)
            if how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if how == "exit":
                os._exit(3)
        return original(self, w, tensor, *args, **kwargs)

    original = painters.ValuesPainter.rect
    return rect


def _no_children_left() -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not mp.active_children():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("how, error, words", [
    ("format", FormatError, "tensor 'model.layers.4.mlp.up_proj.weight' at byte 64: injected"),
    ("unpicklable", RuntimeError, "_Unpicklable: 1/2"),
    ("kill", WorkerError, "worker process died"),
    ("exit", WorkerError, "worker process died"),
])
def test_a_failing_worker_ends_the_run(ckpt: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch, how: str,
                                       error: type[BaseException], words: str) -> None:
    monkeypatch.setattr(painters.ValuesPainter, "rect", _fail_in(".4.", how))
    threads = threading.active_count()
    t0 = time.monotonic()
    with pytest.raises(error, match=words.replace("(", r"\(").replace(".", r"\.")):
        weightvis.render([ckpt], tmp_path / "out", executor=LocalPoolExecutor(2))
    assert time.monotonic() - t0 < 30
    assert _no_children_left()
    # no thread left waiting on a dead worker's pipe (it would block the interpreter's exit)
    assert threading.active_count() == threads
    assert list(tmp_path.iterdir()) == []


def test_the_same_error_as_one_worker(ckpt: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def rect(self, w, tensor, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise FormatError("m.safetensors", "injected failure", tensor=tensor)

    monkeypatch.setattr(painters.ValuesPainter, "rect", rect)
    got = []
    for ex in (InlineExecutor(), LocalPoolExecutor(2)):
        with pytest.raises(FormatError) as info:
            weightvis.render([ckpt], tmp_path / "out", executor=ex)
        got.append((type(info.value), info.value.problem))
    assert got[0] == got[1] == (FormatError, "injected failure")


def test_cli_reports_a_worker_failure_in_one_line(ckpt: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from weightvis.cli import main

    monkeypatch.setattr(painters.ValuesPainter, "rect", _fail_in(".2.", "format"))
    assert main([str(ckpt), "--out", str(tmp_path / "o"), "--workers", "2", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("weightvis: error: m.safetensors: tensor")


def test_map_unordered_failures(ckpt: Path) -> None:
    from weightvis.tiling import CheckpointSpec

    spec = CheckpointSpec((str(ckpt),))
    names = [f"model.layers.{i}.mlp.up_proj.weight" for i in range(6)]
    ex = LocalPoolExecutor(2)
    got = sorted(ex.map_unordered(_rows, spec, names))
    assert got == sorted(_rows(r, n) for r in [spec.open()] for n in names)
    with pytest.raises(FormatError, match="no such tensor"):
        list(ex.map_unordered(_rows, spec, [*names, "missing"]))
    assert _no_children_left()


def _rows(reader, name):  # type: ignore[no-untyped-def]
    try:
        return name, float(reader.read(name, 0, 1).sum())
    except KeyError:
        raise FormatError("m.safetensors", "no such tensor", tensor=name) from None


def _square(_reader, item):  # type: ignore[no-untyped-def]
    if item == "fail":
        raise FormatError("m.safetensors", "injected failure", tensor="t")
    time.sleep(0.002 * (item % 3))  # (uneven tasks: the workers take turns unevenly)
    return item * item, os.getpid()


@pytest.mark.parametrize("workers", [2, 3])
def test_every_task_answered_once(ckpt: Path, workers: int) -> None:
    """Uneven tasks over the pool: every one answered exactly once, the work shared, and a
    failing task among others ends the run with its own error."""
    from weightvis.tiling import CheckpointSpec

    spec = CheckpointSpec((str(ckpt),))
    got = list(LocalPoolExecutor(workers).map_unordered(_square, spec, list(range(60))))
    assert sorted(v for v, _ in got) == [i * i for i in range(60)]
    assert len({pid for _, pid in got}) == workers
    with pytest.raises(FormatError, match="injected failure"):
        list(LocalPoolExecutor(workers).map_unordered(_square, spec, [1, 2, 4, "fail", 5, 7]))
    assert _no_children_left()
