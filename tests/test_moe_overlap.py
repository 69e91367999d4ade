"""The MoE numbers computed in a side thread while the local pool draws the weights scene's tiles
(bundle._SideWork, executors.SideExecutor): the same bytes as computed after the tiles, a
failure in them is the usual one line (exit 2), Ctrl-C / SIGTERM during them stops the run at
once with nothing left behind, and other executors keep them in their turn."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

import weightvis
from weightvis import bundle
from weightvis.cli import main
from weightvis.errors import InputError
from weightvis.executors import InlineExecutor, LocalPoolExecutor
from weightvis.moe import summary
from weightvis.options import MoEOptions
from weightvis.sidework import STOP_WAIT_S

from .moe_fakes import write_moe_checkpoint

pytestmark = pytest.mark.skipif("fork" not in mp.get_all_start_methods() or os.name != "posix",
                                reason="signals and forked workers")

ROOT = Path(weightvis.__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_moe_checkpoint(tmp_path_factory.mktemp("moe") / "tiny")


def _digest(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}


_SEEN: list[str] = []
"""Names of the threads of this process that ran a group task (``_spy``)."""


SIDE_THREADS = {"weightvis-side", "weightvis-side-help"}
"""The side thread, and its helpers once the tiles are done."""

_SLOW = 0.0
"""Seconds each group task waits first (so that the tiles end before the side work)."""


def _spy(reader: Any, task: summary.GroupTask) -> summary.GroupResult:
    _SEEN.append(threading.current_thread().name)
    time.sleep(_SLOW)
    return _REAL_GROUP_TASK(reader, task)


_REAL_GROUP_TASK = summary.group_task


def _threads_of_group_tasks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the threads of this process that run the MoE group tasks from now on (tasks
    run in pool processes are not seen)."""
    _SEEN.clear()
    monkeypatch.setattr(summary, "group_task", _spy)
    return _SEEN


@pytest.mark.parametrize("inline_max, slow", [
    (None, 0.0),   # moe.json alone
    (0, 0.0),      # every layer in a sidecar
    (None, 0.3),   # the tiles end first: a second side thread helps with the rest
])
def test_overlapped_is_byte_identical_to_sequential(ckpt: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    inline_max: int | None, slow: float) -> None:
    moe = MoEOptions() if inline_max is None else MoEOptions(inline_max=inline_max)
    seen = _threads_of_group_tasks(monkeypatch)
    monkeypatch.setattr(sys.modules[__name__], "_SLOW", slow)
    over = weightvis.render([ckpt], tmp_path / "over", executor=LocalPoolExecutor(2), moe=moe)
    assert "weightvis-side" in seen and set(seen) <= SIDE_THREADS
    if slow:
        assert "weightvis-side-help" in seen
    seen.clear()
    with monkeypatch.context() as m:
        m.setattr(bundle, "_overlaps", lambda executor: False)
        seq = weightvis.render([ckpt], tmp_path / "seq", executor=LocalPoolExecutor(2), moe=moe)
    assert not SIDE_THREADS & set(seen)
    a, b = _digest(over.out), _digest(seq.out)
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    assert "moe.json" in a and any(k.startswith("tiles/moe-similarity/") for k in a)
    assert any(k.startswith("moe/layer-") for k in a) == (inline_max == 0)


def test_helpers_up_to_the_workers_once_the_tiles_are_done(ckpt: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """Four workers: one side thread while the tiles are drawn, then helpers up to four
    threads in all (the work's ``processes``: as many as --moe-memory holds); the bundle is
    the one computed in turn."""
    seen = _threads_of_group_tasks(monkeypatch)
    monkeypatch.setattr(sys.modules[__name__], "_SLOW", 0.5)   # (9 tasks: the tiles end first)
    started: list[str] = []
    start = threading.Thread.start

    def spy_start(thread: threading.Thread) -> None:
        started.append(thread.name)
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", spy_start)
    over = weightvis.render([ckpt], tmp_path / "over", executor=LocalPoolExecutor(4))
    monkeypatch.undo()
    assert started.count("weightvis-side") == 1
    assert started.count("weightvis-side-help") == 3
    assert seen.count("weightvis-side-help") >= 2 and set(seen) <= SIDE_THREADS
    seq = weightvis.render([ckpt], tmp_path / "seq", executor=InlineExecutor())
    assert (over.out / "moe.json").read_bytes() == (seq.out / "moe.json").read_bytes()


def test_inline_executor_and_moe_only_keep_the_numbers_in_turn(ckpt: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    seen = _threads_of_group_tasks(monkeypatch)
    inline = weightvis.render([ckpt], tmp_path / "inline", executor=InlineExecutor())
    only = weightvis.render_moe([ckpt], tmp_path / "only", executor=LocalPoolExecutor(2))
    assert seen and "weightvis-side" not in seen  # (inline: in the main thread)
    over = weightvis.render([ckpt], tmp_path / "over", executor=LocalPoolExecutor(2))
    assert inline.manifest["moe"] == only.manifest["moe"] == over.manifest["moe"]
    assert (inline.out / "moe.json").read_bytes() == (over.out / "moe.json").read_bytes()


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def _no_children_left(before: set[int]) -> bool:
    """No process started since ``before`` (this test's render) is still running: the test
    session's own children (a browser, a cluster) were there before and stay."""
    deadline = time.monotonic() + 10
    while _children() - before:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_failure_in_the_side_work_is_one_line(ckpt: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    def broken(reader: Any, task: summary.GroupTask) -> summary.GroupResult:
        assert threading.current_thread().name.startswith("weightvis-side")
        raise InputError(f"tensor {task.slices[0].tensor!r}: planted failure")

    monkeypatch.setattr(summary, "group_task", broken)
    out = tmp_path / "a" / "bundle"
    capsys.readouterr()
    before = _children()
    t0 = time.monotonic()
    code = main([str(ckpt), "--out", str(out), "--workers", "2", "-q"])
    assert time.monotonic() - t0 < 30
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("weightvis: error: tensor 'model.layers.") and \
        err[0].endswith(": planted failure"), err
    assert not (tmp_path / "a").exists()  # (nor the parent it made)
    assert _no_children_left(before)


LAUNCH = """
import sys, time, threading
from pathlib import Path
sys.path.insert(0, {root!r})
from weightvis.moe import summary

real = summary.group_task

calls = []

def slow(reader, task):
    # a side thread: the first {free} tasks as they are, then says it started and reads on
    # (a cancelled run stops at a read)
    assert threading.current_thread().name.startswith("weightvis-side")
    calls.append(task)
    if len(calls) <= {free}:
        return real(reader, task)
    Path({marker!r}).write_text("started")
    while True:
        if {reads}:
            reader.info(task.slices[0].tensor)
        time.sleep(0.01)  # (without reads: as a long product would, never looking up)

summary.group_task = slow
from weightvis.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def _started(ckpt: Path, out: Path, marker: Path, *, free: int, reads: bool,
             env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """A CLI render (LAUNCH) running, once its side work has started (``marker`` written)."""
    script = LAUNCH.format(root=str(ROOT), marker=str(marker), free=free, reads=reads)
    proc = subprocess.Popen([sys.executable, "-c", script, str(ckpt), "--out", str(out),
                             "--workers", "2", "-q"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    deadline = time.monotonic() + 120
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the side work never started: {proc.communicate()}")
        time.sleep(0.02)
    return proc


@pytest.mark.parametrize("sig, code, words, reads", [
    (signal.SIGTERM, 143, "weightvis: terminated", True),
    (signal.SIGINT, 130, "weightvis: interrupted", True),
    (signal.SIGTERM, 143, "weightvis: terminated", False),  # stopped within STOP_WAIT_S
])
def test_a_stop_signal_during_the_side_work_leaves_nothing(ckpt: Path, tmp_path: Path,
                                                           sig: int, code: int, words: str,
                                                           reads: bool) -> None:
    out = tmp_path / "o" / "bundle"
    proc = _started(ckpt, out, tmp_path / "started", free=0, reads=reads)
    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        t0 = time.monotonic()
        os.kill(proc.pid, sig)
        _, stderr = proc.communicate(timeout=30)
        assert time.monotonic() - t0 < 3 + (0 if reads else STOP_WAIT_S), "not promptly"
    finally:
        if proc.poll() is None:  # (a failed check: no run left behind)
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, stderr
    assert stderr.strip().splitlines() == [words], stderr
    assert not (tmp_path / "o").exists()
    _, alive = psutil.wait_procs(family[1:], timeout=10)  # (no worker, no helper left)
    assert alive == []


def test_a_run_killed_during_the_side_work_resumes_to_the_same_bytes(
        ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL while the side thread computes (sidecars half written): the next run on the
    same --out gives the uninterrupted bundle."""
    ref = weightvis.render([ckpt], tmp_path / "ref", executor=LocalPoolExecutor(2),
                           moe=MoEOptions(inline_max=0))
    out = tmp_path / "o" / "bundle"
    proc = _started(ckpt, out, tmp_path / "started", free=4, reads=True,
                    env={"WEIGHTVIS_MOE_INLINE_MAX": "0"})
    proc.kill()
    proc.communicate()
    assert not out.exists()
    monkeypatch.setenv("WEIGHTVIS_MOE_INLINE_MAX", "0")
    assert main([str(ckpt), "--out", str(out), "--workers", "2", "-q"]) == 0
    assert _digest(out) == _digest(ref.out)
