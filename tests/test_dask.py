"""The Dask executor: renders and diffs on a ``LocalCluster`` are byte-identical to the local
pool; a task's error comes back typed and cancels the rest; a worker killed mid-render has its
tasks re-run and the bundle is still identical; bad ``--scheduler`` values fail in one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import weightvis
from weightvis.errors import WeightvisError

distributed = pytest.importorskip("distributed")

from weightvis.dask_executor import DaskExecutor, SchedulerError, parse_scheduler  # noqa: E402

pytestmark = pytest.mark.slow


def _tree(root: Path) -> dict[str, bytes]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if p.name in ("manifest.json", "index.html"):
                data = b"\n".join(ln for ln in data.split(b"\n") if b'"generator"' not in ln)
            out[str(p.relative_to(root))] = data
    return out


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[object, str]]:
    c = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                 host="127.0.0.1", dashboard_address=None, silence_logs=50)
    try:
        yield c, c.scheduler_address
    finally:
        c.close()


@pytest.fixture()
def executor(cluster: tuple[object, str]) -> Iterator[DaskExecutor]:
    ex = DaskExecutor(distributed.Client(cluster[1], set_as_default=False))
    try:
        yield ex
    finally:
        ex.close()


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    rng = np.random.default_rng(11)
    a = {f"model.layers.{i}.mlp.{n}.weight": rng.standard_normal((300, 700)).astype(np.float32)
         for i in range(8) for n in ("up_proj", "down_proj")}
    a["model.embed_tokens.weight"] = rng.standard_normal((3000, 64)).astype(np.float32)
    b = {k: v + (rng.standard_normal(v.shape).astype(np.float32) * 0.01
                 if "layers.3" in k else 0) for k, v in a.items()}
    d = tmp_path_factory.mktemp("dask-ck")
    save_file(a, str(d / "a.safetensors"))
    save_file(b, str(d / "b.safetensors"))
    return d / "a.safetensors", d / "b.safetensors"


def test_render_is_byte_identical_to_the_local_pool(ckpts: tuple[Path, Path], tmp_path: Path,
                                                     executor: DaskExecutor) -> None:
    a, _ = ckpts
    weightvis.render([a], tmp_path / "local", workers=2)
    weightvis.render([a], tmp_path / "dask", executor=executor)
    local, dask = _tree(tmp_path / "local"), _tree(tmp_path / "dask")
    assert len(local) > 20
    assert local.keys() == dask.keys()
    assert [k for k in local if local[k] != dask[k]] == []


def test_diff_is_byte_identical_to_the_local_pool(ckpts: tuple[Path, Path], tmp_path: Path,
                                                   executor: DaskExecutor) -> None:
    a, b = ckpts
    weightvis.render_diff([a], [b], tmp_path / "local", scenes=["a", "b", "delta"], workers=2)
    weightvis.render_diff([a], [b], tmp_path / "dask", scenes=["a", "b", "delta"],
                          executor=executor)
    local, dask = _tree(tmp_path / "local"), _tree(tmp_path / "dask")
    assert "diff.json" in local
    assert local.keys() == dask.keys()
    assert [k for k in local if local[k] != dask[k]] == []


def test_moe_render_is_byte_identical_to_the_local_pool(tmp_path: Path,
                                                         executor: DaskExecutor) -> None:
    """The MoE summary and similarity scenes: their numbers are tasks on the cluster (one
    reader per worker) where the local pool computes them in side threads."""
    from weightvis.options import MoEOptions

    from .moe_fakes import write_moe_checkpoint

    ck = write_moe_checkpoint(tmp_path / "moe")
    for moe in (MoEOptions(), MoEOptions(inline_max=0)):   # (moe.json alone; sidecars)
        weightvis.render([ck], tmp_path / "local", workers=2, moe=moe, overwrite=True)
        weightvis.render([ck], tmp_path / "dask", executor=executor, moe=moe, overwrite=True)
        local, dask = _tree(tmp_path / "local"), _tree(tmp_path / "dask")
        assert "moe.json" in local and any(k.startswith("tiles/moe-similarity") for k in local)
        assert local.keys() == dask.keys()
        assert [k for k in local if local[k] != dask[k]] == []


def _inject_failure(slow: float = 0.0) -> None:
    """On a worker: drawing any tensor of layer 3 raises the error a broken file would; any
    other takes ``slow`` seconds more."""
    from weightvis import painters
    from weightvis.errors import FormatError

    original = painters.ValuesPainter.rect

    def rect(self, w, tensor, *args, **kwargs):  # type: ignore[no-untyped-def]
        if "layers.3." in tensor:
            raise FormatError("a.safetensors", "injected failure", tensor=tensor, offset=64)
        time.sleep(slow)
        return original(self, w, tensor, *args, **kwargs)

    painters.ValuesPainter.rect = rect  # type: ignore[method-assign]


def test_a_task_error_comes_back_typed_and_leaves_nothing(ckpts: tuple[Path, Path],
                                                         tmp_path: Path,
                                                         executor: DaskExecutor) -> None:
    a, _ = ckpts
    executor.client.run(_inject_failure)
    try:
        t0 = time.perf_counter()
        with pytest.raises(WeightvisError) as e:
            weightvis.render([a], tmp_path / "out", executor=executor)
        assert "injected failure" in str(e.value) and "layers.3." in str(e.value)
        assert time.perf_counter() - t0 < 30
        assert list(tmp_path.iterdir()) == []
    finally:
        executor.client.restart()


def _executing(dask_worker) -> list[str]:  # type: ignore[no-untyped-def]
    state = dask_worker.state
    return [str(ts.key) for ts in state.executing | state.long_running]


def test_an_aborted_render_waits_for_its_running_tasks(ckpts: tuple[Path, Path], tmp_path: Path,
                                                       executor: DaskExecutor) -> None:
    """Dask cannot stop a running task: the failed render waits until its cancelled tasks
    have stopped (each at its next leaf tile) before it removes its staging folder, so no
    task writes into a folder being removed (CI once saw part of one left behind)."""
    a, _ = ckpts
    executor.client.run(_inject_failure, 0.2)
    try:
        with pytest.raises(WeightvisError, match="injected failure"):
            weightvis.render([a], tmp_path / "out", executor=executor)
        running = executor.client.run(_executing)
        assert [k for keys in running.values() for k in keys if "weightvis" in k] == []
        time.sleep(0.5)  # (a straggler would write now)
        assert list(tmp_path.iterdir()) == []
    finally:
        executor.client.restart()


def test_a_worker_killed_mid_render_is_replaced_and_the_bundle_identical(
        ckpts: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = ckpts
    weightvis.render([a], tmp_path / "local", workers=2)
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None,
                                       silence_logs=50)
    ex = DaskExecutor(distributed.Client(cluster, set_as_default=False))
    try:
        pids = ex.client.run(os.getpid)
        killed: list[int] = []

        def progress(stage: str, n: int, total: int) -> None:
            if n > 0 and not killed:  # the first subtree is in: kill a worker mid-run
                pid = sorted(pids.values())[0]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

        weightvis.render([a], tmp_path / "dask", executor=ex, progress=progress)
        assert killed, "the render finished before a worker could be killed"
    finally:
        ex.close()
        cluster.close()
    local, dask = _tree(tmp_path / "local"), _tree(tmp_path / "dask")
    assert [k for k in local if local.get(k) != dask.get(k)] == []
    assert local.keys() == dask.keys()


def test_parse_scheduler() -> None:
    assert parse_scheduler("local") == ("local", None)
    assert parse_scheduler("local:3") == ("local", 3)
    assert parse_scheduler("tcp://10.0.0.1:8786") == ("tcp://10.0.0.1:8786", None)
    for bad in ("local:0", "tcp://host", "http://x y:1", ""):
        with pytest.raises(SchedulerError):
            parse_scheduler(bad)


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "weightvis", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_cli_local_scheduler_and_one_line_errors(ckpts: tuple[Path, Path],
                                                tmp_path: Path) -> None:
    a, _ = ckpts
    r = _cli(str(a), "--out", str(tmp_path / "b"), "-q", "--scheduler", "local:2")
    assert r.returncode == 0, r.stderr
    weightvis.render([a], tmp_path / "ref", workers=2)
    ref, got = _tree(tmp_path / "ref"), _tree(tmp_path / "b")
    assert [k for k in ref if ref[k] != got.get(k)] == []

    t0 = time.perf_counter()
    r = _cli(str(a), "--out", str(tmp_path / "c"), "--scheduler", "tcp://127.0.0.1:1")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert "127.0.0.1:1" in r.stderr
    assert time.perf_counter() - t0 < 30
    r = _cli(str(a), "--out", str(tmp_path / "d"), "--scheduler", "local:2", "--workers", "2")
    assert r.returncode == 2 and "exclude" in r.stderr
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


def test_cancelled_on_interrupt_leaves_no_task(ckpts: tuple[Path, Path], tmp_path: Path,
                                              executor: DaskExecutor) -> None:
    a, _ = ckpts

    def progress(stage: str, n: int, total: int) -> None:
        if n > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        weightvis.render([a], tmp_path / "out", executor=executor, progress=progress)
    deadline = time.time() + 20
    while time.time() < deadline:
        left = executor.client.run_on_scheduler(
            lambda dask_scheduler: [k for k in dask_scheduler.tasks
                                    if str(k).startswith("weightvis-subtree")])
        if not left:
            break
        time.sleep(0.2)
    assert not left
    assert not (tmp_path / "out").exists()
    assert threading.active_count() >= 1


def _which_reader(reader: object, item: int) -> tuple[int, int, str, int]:
    """On a worker: who ran ``item``, with which reader, in which task."""
    return os.getpid(), id(reader), distributed.get_worker().get_current_task(), item


def test_mapped_items_share_one_reader_per_worker_and_each_runs_once(
        ckpts: tuple[Path, Path], executor: DaskExecutor) -> None:
    from weightvis.dask_executor import MAP_TASKS_PER_WORKER
    from weightvis.tiling import CheckpointSpec

    a, _ = ckpts
    items = list(range(3 * executor.workers * MAP_TASKS_PER_WORKER + 5))
    got = list(executor.map_unordered(_which_reader, CheckpointSpec((str(a),)), items))
    assert sorted(i for *_, i in got) == items
    # few tasks (Dask's round trip per task cost more than a tensor's scale), and the tasks
    # of one scene open the checkpoint once per worker, not once per task
    assert len({key for _, _, key, _ in got}) == executor.workers * MAP_TASKS_PER_WORKER
    assert len({(pid, rid) for pid, rid, _, _ in got}) <= executor.workers
    assert list(executor.map_unordered(_which_reader, CheckpointSpec((str(a),)), [])) == []
