"""The Dask executor: a scene's tile subtrees as tasks on a ``dask.distributed`` cluster.

``--scheduler tcp://HOST:PORT`` sends the render to a running cluster; ``--scheduler local[:N]``
starts a ``LocalCluster`` of N single-threaded worker processes on loopback (N defaults to the
number of cores). Every task is ``pyramid.render_subtree`` on a subtree root, with the scene's
job pickled once and sent to every worker as bytes, which each unpickles once per scene; mapped
work (the value pass) goes in a few tasks per worker, through the reader the tiles then use.
The main process reduces the levels above the subtrees as results arrive and merges statistics
in a fixed order (``pyramid.render_scene``), so the bundle is byte-identical to a local render.

The workers read the checkpoint and write tiles themselves, so both must be on paths every
worker sees (a shared folder): ``check_shared`` verifies that before any work is sent, by
asking every worker to find a marker file in the output folder and to see the inputs with the
sizes this process sees. A worker lost mid-run has its tasks re-run by Dask on another worker
(each re-run rewrites every tile of its subtree whole); a task that fails raises its own error
here and the remaining tasks are cancelled, as is everything on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import pickle
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import MissingExtraError, WeightvisError
from .executors import Executor
from .tiling import SceneJob
from .types import TileAddress

if TYPE_CHECKING:
    from .pyramid import SubtreeResult, TileWorker

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["DaskExecutor", "SchedulerError", "parse_scheduler", "dask_executor"]


class SchedulerError(WeightvisError):
    """The Dask scheduler can't be used (missing extra, unreachable, unshared paths)."""


_LOCAL = re.compile(r"local(?::(\d+))?")


def parse_scheduler(text: str) -> tuple[str, int | None]:
    """``("local", N or None)`` for ``local[:N]``, ``("address", None)`` for a scheduler
    address (``tcp://HOST:PORT``, ``tls://…``, ``HOST:PORT``)."""
    m = _LOCAL.fullmatch(text)
    if m:
        n = int(m.group(1)) if m.group(1) else None
        if n is not None and n < 1:
            raise SchedulerError(f"--scheduler {text}: a local cluster needs at least 1 worker")
        return "local", n
    if not re.fullmatch(r"(?:[a-z]+://)?[^\s/]+:\d+", text):
        raise SchedulerError(f"--scheduler {text!r}: expected tcp://HOST:PORT or local[:N]")
    return text, None


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise MissingExtraError("distributed", "dask", "--scheduler") from None
    return distributed


# -- what runs on a worker -----------------------------------------------------------------

class _Held:
    """What the tasks of one scene share on a worker thread: the readers they opened (by
    spec: the scales pass and the tiles read through the same one) and the scene's tile
    worker (unpickled from the job once, not once per task)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.readers: dict[str, Any] = {}
        self.tiles: tuple[str, TileWorker] | None = None

    def reader(self, key: str, spec: Any) -> Any:
        r = self.readers.get(key)
        if r is None:
            r = self.readers[key] = spec.open()
        return r

    def close(self) -> None:
        for r in self.readers.values():
            with contextlib.suppress(Exception):
                r.close()
        self.readers.clear()
        self.tiles = None


_HELD: dict[int, _Held] = {}
"""Per worker thread, kept between the tasks of one scene (opening a checkpoint of 45k tensors
and unpickling its layout cost ~0.2 s). Keyed by a token the scene chose, so a new scene never
sees an old one's readers."""
_HELD_LOCK = threading.Lock()


def _held(token: str) -> _Held:
    tid = threading.get_ident()
    with _HELD_LOCK:
        got = _HELD.get(tid)
    if got is not None and got.token == token:
        return got
    if got is not None:
        got.close()
    got = _Held(token)
    with _HELD_LOCK:
        _HELD[tid] = got
    return got


def _subtree_on_worker(token: str, job_key: str, spec_key: str, job_blob: bytes,
                       root: TileAddress) -> SubtreeResult:
    from .pyramid import TileWorker, render_subtree, warm_up_all

    warm_up_all()
    held = _held(token)
    if held.tiles is None or held.tiles[0] != job_key:
        job: SceneJob = pickle.loads(job_blob)
        held.tiles = (job_key, TileWorker(job, held.reader(spec_key, job.spec)))
    held.tiles[1].before_leaf = _cancel_check()
    return render_subtree(held.tiles[1], root)


def _map_on_worker(token: str, spec_key: str, spec_blob: bytes,
                   task: Callable[[Any, Any], Any], items: Sequence[Any]) -> list[Any]:
    reader = _held(token).reader(spec_key, pickle.loads(spec_blob))
    check = _cancel_check()
    out = []
    for item in items:
        check()
        out.append(task(reader, item))
    return out


class _TaskCancelled(Exception):
    """Raised in a worker's task whose future the client cancelled (nobody receives it)."""


def _cancel_check() -> Callable[[], None]:
    """In a worker's task: a function that raises ``_TaskCancelled`` once the client cancelled
    this task (Dask cannot stop a running task; it only marks it cancelled)."""
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:  # not in a worker (run inline)
        return lambda: None
    key = worker.get_current_task()
    tasks = worker.state.tasks

    def check() -> None:
        ts = tasks.get(key)
        if ts is None or ts.state == "cancelled":
            raise _TaskCancelled(key)
    return check


def _running(keys: set[str], dask_worker: Any) -> int:
    """On a worker: how many of ``keys`` are still executing there."""
    state = dask_worker.state
    return sum(1 for ts in state.executing | state.long_running if ts.key in keys)


CANCEL_WAIT_S = 30.0
"""How long an aborted run waits for its cancelled tasks to stop (each stops at its next leaf
tile or item) before it removes what it wrote."""


def _warm_worker() -> None:
    from .pyramid import warm_up_all

    warm_up_all()


def _sees(marker: str, inputs: Sequence[tuple[str, int]]) -> str | None:
    """On a worker: what it can't see that the client does, or None."""
    if not os.path.exists(marker):
        return f"the output folder ({os.path.dirname(marker)})"
    for path, size in inputs:
        try:
            if os.path.getsize(path) != size:
                return f"{path} (a different size)"
        except OSError:
            return path
    return None


def _spec_key(spec: Any) -> str:
    """A worker's key for the reader of ``spec`` (shared by the tasks that read it)."""
    return hashlib.blake2b(pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL),
                           digest_size=16).hexdigest()


MAP_TASKS_PER_WORKER = 4
"""Mapped items go to the cluster in this many tasks per worker: one task per item (the value
pass of 45k tensors is 181 batches) cost more in Dask's per-task round trips than the work."""


# -- the executor --------------------------------------------------------------------------

class DaskExecutor(Executor):
    """Subtrees and mapped tasks as Dask tasks on the cluster of ``client``."""

    def __init__(self, client: Any, *, owns_cluster: Any = None) -> None:
        self.client = client
        self._cluster = owns_cluster
        threads = client.nthreads()
        if not threads:
            raise SchedulerError(f"the Dask cluster at {client.scheduler.address} has no workers")
        self.workers = max(1, sum(threads.values()))
        self._warming: list[Any] = []
        self._token = uuid.uuid4().hex
        """What the workers keep (_Held) belongs to this token: a new one for every scene."""

    @property
    def in_other_processes(self) -> bool:
        return True

    @contextlib.contextmanager
    def scene(self, job: SceneJob) -> Iterator[SceneJob]:
        """The scales the tiles need are computed first, as tasks on the cluster (the local
        pool's scale helper has no counterpart here: without this, every worker drawing a
        part of a tensor would compute its scale again); the workers keep the readers they
        opened for them, and draw the tiles through the same ones."""
        self._token = uuid.uuid4().hex
        if job.prefetch:
            from .values import tensor_scales

            reader = job.spec.open()
            try:
                got, _, _ = tensor_scales(reader, job.spec, list(job.prefetch), executor=self)
            finally:
                reader.close()
            job = job._replace(scales={**job.scales, **got})
        yield job

    def warm_up(self) -> None:
        """Load the compiled kernels on every worker (while this process plans the scene)."""
        self._warming = [self.client.submit(_warm_worker, workers=[w], allow_other_workers=False,
                                            pure=False, key=f"weightvis-warm-{uuid.uuid4().hex}")
                         for w in self.client.nthreads()]

    def check_shared(self, folder: Path, inputs: Sequence[str | os.PathLike[str]]) -> None:
        """Fail unless every worker sees ``folder`` (where tiles go) and ``inputs`` with the
        sizes seen here."""
        folder.mkdir(parents=True, exist_ok=True)
        marker = folder / f".weightvis-shared-{uuid.uuid4().hex}"
        marker.write_bytes(b"")
        try:
            files = []
            for src in inputs:
                p = Path(src)
                for f in ([p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file())
                          if p.is_dir() else []):
                    files.append((str(f.resolve()), f.stat().st_size))
            seen = self.client.run(_sees, str(marker.resolve()), files)
        finally:
            marker.unlink(missing_ok=True)
        for worker, missing in sorted(seen.items()):
            if missing is not None:
                raise SchedulerError(
                    f"Dask worker {worker} can't see {missing}: with --scheduler, the inputs "
                    "and --out must be on a folder every worker sees (a shared file system)")

    def _send(self, value: Any) -> tuple[str, Any]:
        """``value`` pickled once here and on every worker once (a Future of its bytes), with
        a key naming its contents. Bytes, because Dask would scatter a NamedTuple field by
        field, through the scheduler (a 45k-tensor scene's job took 4.2 s to send, measured;
        its 11 MB of bytes take milliseconds)."""
        blob = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        key = hashlib.blake2b(blob, digest_size=16).hexdigest()
        return key, self.client.scatter(blob, broadcast=True, hash=False)

    def run_subtrees(self, job: SceneJob, roots: Sequence[TileAddress], *, reader: Any = None,
                     meanwhile: Callable[[], None] | None = None) -> Iterator[SubtreeResult]:
        job_key, blob = self._send(job)
        spec_key = _spec_key(job.spec)
        futures = [self.client.submit(_subtree_on_worker, self._token, job_key, spec_key, blob,
                                      root, pure=False,
                                      key=f"weightvis-subtree-{job_key}-{uuid.uuid4().hex}-{i}")
                   for i, root in enumerate(roots)]
        return self._results(futures, meanwhile)

    def map_unordered(self, task: Callable[[Any, T], R], spec: Any, items: Sequence[T], *,
                      reader: Any = None, processes: int | None = None,
                      meanwhile: Callable[[], None] | None = None) -> Iterator[R]:
        """In at most ``MAP_TASKS_PER_WORKER`` tasks per worker, each a share of ``items``
        dealt round-robin (callers list big items first: the shares come out even)."""
        if not items:
            return iter(())
        spec_key, blob = self._send(spec)
        n = min(len(items), self.workers * MAP_TASKS_PER_WORKER)
        futures = [self.client.submit(_map_on_worker, self._token, spec_key, blob, task,
                                      list(items[i::n]), pure=False,
                                      key=f"weightvis-map-{spec_key}-{uuid.uuid4().hex}-{i}")
                   for i in range(n)]
        return itertools.chain.from_iterable(self._results(futures, meanwhile))

    def _results(self, futures: list[Any], meanwhile: Callable[[], None] | None
                 ) -> Iterator[Any]:
        distributed = _import_distributed()
        done = False
        try:
            if meanwhile is not None:
                meanwhile()
            for fut in distributed.as_completed(futures, loop=self.client.loop):
                if fut.status == "error":
                    exc = fut.exception()
                    raise exc if isinstance(exc, BaseException) else WeightvisError(str(exc))
                if fut.status == "cancelled":
                    raise SchedulerError("a Dask task was cancelled (the cluster went away?)")
                yield fut.result()
            done = True
        finally:
            if not done:  # a failure or an interruption: nothing more runs for this render
                with contextlib.suppress(Exception):
                    self.client.cancel(futures, force=True)
                self._wait_stopped({f.key for f in futures})

    def _wait_stopped(self, keys: set[str]) -> None:
        """Wait (at most ``CANCEL_WAIT_S``) until no worker runs any of the cancelled ``keys``:
        a task still writing tiles while the aborted run removes its staging folder would
        leave part of it behind (seen in CI)."""
        deadline = time.monotonic() + CANCEL_WAIT_S
        while time.monotonic() < deadline:
            try:
                if not any(self.client.run(_running, keys).values()):
                    return
            except Exception:  # noqa: BLE001 - the cluster is going away: nothing to wait for
                return
            time.sleep(0.05)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        if self._cluster is not None:
            with contextlib.suppress(Exception):
                self._cluster.close()


LOCAL_WORKER_CONFIG: dict[str, Any] = {
    "distributed.worker.profile.enabled": False,
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.memory.monitor-interval": "500ms",
}
"""Dask settings of the workers ``--scheduler local[:N]`` starts: two defaults that cost a
render CPU. Measured with a warm 1-worker LocalCluster rendering the 1.1 B-element synthetic
checkpoint from a tmpfs (the worker process's CPU, two runs each, the machine shared): the
statistical profiler, which samples the worker's stack 100 times a second, 9.5-10.3 s ->
8.1-8.9 s without it; ``MALLOC_TRIM_THRESHOLD_=65536``, which fixes glibc's mmap threshold so
that every tile-sized buffer is mapped, faulted in and unmapped again, 7.9-8.8 s (sys 2.8-3.0 s)
-> 6.6-6.8 s (sys 1.8 s) without it. And three timers that wake every process of the cluster
while it waits or works (the event-loop watchdog every 20 ms, the system monitor every 0.5 s,
the memory monitor every 0.1 s): an idle 2-worker LocalCluster used 0.052 cores with them,
0.010 with 1 s, 2 s and 0.5 s (measured over 5 s; a render's share of the 2 cores of this
machine). A cluster started elsewhere should set the same (README, "Clusters")."""


def dask_executor(scheduler: str) -> DaskExecutor:
    """Connect to (or start) the cluster ``--scheduler`` names."""
    distributed = _import_distributed()
    address, n = parse_scheduler(scheduler)
    cluster = None
    try:
        if address == "local":
            import dask

            with dask.config.set(LOCAL_WORKER_CONFIG):
                cluster = distributed.LocalCluster(
                    n_workers=n or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                    host="127.0.0.1", dashboard_address=None, silence_logs=50)
            client = distributed.Client(cluster, set_as_default=False)
        else:
            client = distributed.Client(address, timeout="10s", set_as_default=False)
    except OSError as e:
        if cluster is not None:
            cluster.close()
        raise SchedulerError(f"can't reach the Dask scheduler at {scheduler}: {e}") from None
    ex = DaskExecutor(client, owns_cluster=cluster)
    ex.warm_up()
    return ex
