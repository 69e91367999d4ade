"""Executors: who runs a scene's tile subtrees.

- ``InlineExecutor``: in this process, one subtree after another (tests, debugging, one core).
- ``LocalPoolExecutor``: a pool of forked processes on this machine. Its start-up tricks live
  here: the compiled kernels load once before the fork (the workers inherit them), and a
  numpy-only helper process, forked before the kernels load, computes per-tensor scales in the
  order the tiles need them (values.start_scale_helper).
- A distributed executor (Dask) implements the same interface: tasks are
  ``pyramid.subtree_task(job, root)`` with explicit, picklable inputs and outputs, and the
  results are merged by ``pyramid.render_scene`` in a fixed order, so the bundle is
  byte-identical whatever runs the tasks.

``local_executor(workers)`` picks the inline executor for one worker and the pool otherwise.
"""

from __future__ import annotations

import abc
import contextlib
import gc
import multiprocessing as mp
import os
import pickle
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from .errors import WorkerError
from .interrupts import become_helper, deferred, leave_to_main_thread, start_forked
from .tiling import SceneJob
from .types import TileAddress

if TYPE_CHECKING:
    from .pyramid import SubtreeResult, TileWorker

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["Executor", "InlineExecutor", "LocalPoolExecutor", "local_executor"]


class Executor(abc.ABC):
    """Runs the tile subtrees of a scene."""

    workers: int
    """How many subtrees run at once (the pyramid splits the work for this many)."""

    @property
    def in_other_processes(self) -> bool:
        """Tiles render outside this process (so this one is free meanwhile)."""
        return self.workers > 1

    @contextlib.contextmanager
    def scene(self, job: SceneJob) -> Iterator[SceneJob]:
        """Around one scene: may start helpers for it (and returns the job they serve), stops
        them when the block ends or fails."""
        yield job

    def start_scales(self, spec: Any, names: Sequence[str], small: Sequence[str]) -> None:
        """A hint while a plan is made: a scene of ``spec`` will prefetch the scales of
        ``names`` (SceneJob.prefetch); ``small`` are those of them ``values.small_scales``
        computes in batches (the tiny tensors of an MoE). An executor may start on them now,
        before the tiles (and must then stop in ``stop_scales``). Default: nothing."""

    def stop_scales(self) -> None:
        """Stop what ``start_scales`` started and no scene took (a plan that failed)."""

    @abc.abstractmethod
    def run_subtrees(self, job: SceneJob, roots: Sequence[TileAddress], *, reader: Any = None,
                     meanwhile: Callable[[], None] | None = None) -> Iterator[SubtreeResult]:
        """Render every subtree under ``roots``, yielding results in any order. ``reader`` is
        this process's open reader of the job (an in-process worker may use it);
        ``meanwhile`` runs in this process once the work has started."""

    @abc.abstractmethod
    def map_unordered(self, task: Callable[[Any, T], R], spec: Any, items: Sequence[T], *,
                      reader: Any = None, processes: int | None = None,
                      meanwhile: Callable[[], None] | None = None) -> Iterator[R]:
        """``task(reader, item)`` for every item, results in any order, where ``reader`` is
        ``spec.open()`` in the process that runs it (``reader`` given here: this process's,
        for work done in this process). At most ``processes`` at once (default: workers).
        ``task`` must be a module-level function (picklable). For the value pass and the
        diff's low-rank summaries."""


class InlineExecutor(Executor):
    """Every subtree in this process, in order."""

    workers = 1

    def run_subtrees(self, job: SceneJob, roots: Sequence[TileAddress], *, reader: Any = None,
                     meanwhile: Callable[[], None] | None = None) -> Iterator[SubtreeResult]:
        from .pyramid import TileWorker, render_subtree, warm_up_all

        warm_up_all()
        if meanwhile is not None:
            meanwhile()
        worker = TileWorker(job, reader)
        for a in roots:
            yield render_subtree(worker, a)

    def map_unordered(self, task: Callable[[Any, T], R], spec: Any, items: Sequence[T], *,
                      reader: Any = None, processes: int | None = None,
                      meanwhile: Callable[[], None] | None = None) -> Iterator[R]:
        own = reader is None
        r = spec.open() if own else reader
        try:
            if meanwhile is not None:
                meanwhile()
            for item in items:
                yield task(r, item)
        finally:
            if own:
                r.close()


class _PoolState:
    """What a pool process keeps between its tasks: the job or reader spec it was started
    with (by _pool_init, which does nothing that can fail) and what it opened from it on its
    first task (so that any error is a task's error, reported with its words)."""

    job: SceneJob | None = None
    worker: TileWorker | None = None
    spec: Any = None
    reader: Any = None


def _pool_init(job: SceneJob | None, spec: Any, parent: int) -> None:
    # Ctrl-C and SIGTERM are the main process's to handle (it stops the pool): no worker
    # tracebacks; and no worker outlives the main process, even killed
    become_helper(parent)
    # everything inherited from the parent lives as long as the worker: keep it out of the
    # collector's full passes (measured: 3 % of the worker's time went to gc over it)
    gc.freeze()
    _PoolState.job, _PoolState.spec = job, spec
    _PoolState.worker = _PoolState.reader = None


def _portable(e: BaseException) -> BaseException:
    """``e`` if it survives pickling (the way back to the main process), else a RuntimeError
    with its words: an exception that cannot be unpickled must not break the pool."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001 - any failure to round-trip
        return RuntimeError(f"{type(e).__name__}: {e}")


def _pool_run(root: TileAddress) -> SubtreeResult:
    from .pyramid import TileWorker, render_subtree

    if _PoolState.worker is None:
        assert _PoolState.job is not None
        _PoolState.worker = TileWorker(_PoolState.job)
    return render_subtree(_PoolState.worker, root)


def _map_run(task_item: tuple[Callable[[Any, Any], Any], Any]) -> Any:
    task, item = task_item
    if _PoolState.reader is None:
        _PoolState.reader = _PoolState.spec.open()
    return task(_PoolState.reader, item)


def _worker_main(conn: Connection, job: SceneJob | None, spec: Any,
                 call: Callable[[Any], Any], parent: int) -> None:
    """A pool process: ``call(item)`` for every (index, item) received, until None or EOF;
    each answer is (index, True, result) or (index, False, exception)."""
    _pool_init(job, spec, parent)
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        i, item = msg
        try:
            answer: tuple[int, bool, Any] = (i, True, call(item))
        except BaseException as e:  # noqa: BLE001 - every failure goes back to the main process
            answer = (i, False, _portable(e))
        try:
            conn.send(answer)
        except Exception as e:  # noqa: BLE001 - e.g. a result that cannot be pickled
            conn.send((i, False, RuntimeError(f"task result could not be sent back: {e}")))


def _signals_to_main(target: Callable[[], None]) -> Callable[[], None]:
    """``target`` in a thread that leaves Ctrl-C and SIGTERM to the main thread."""
    def run() -> None:
        leave_to_main_thread()
        target()
    return run


_DIED = "a worker process died before finishing its task (killed, or out of memory?)"

_SWITCH_S = 0.0005
"""The interpreter's switch interval while a ``meanwhile`` thread runs beside the pool (the
default is 5 ms): reading a worker's answer (~0.5 MB for a subtree of a 45k-tensor checkpoint)
takes the interpreter back after each chunk the pipe holds, and the worker cannot go on until
it is read. Measured (45k tensors, 2 workers, 17 subtrees each, time between a worker's
subtrees): 0.13-0.22 s per worker with 5 ms, 0.06-0.10 s with 0.5 ms."""


def _pool_results(workers: int, job: SceneJob | None, spec: Any,
                  call: Callable[[Any], R], items: Sequence[Any],
                  meanwhile: Callable[[], None] | None) -> Iterator[R]:
    """``call(item)`` over ``workers`` processes of our own, results as they complete. Each
    process has one pipe and one task at a time; no thread of ours waits on them, so nothing
    can be left blocked. The first failure ends the run at once: the task's own exception is
    raised here (a process that died raises WorkerError), and every process is stopped."""
    methods = mp.get_all_start_methods()
    ctx: Any = mp.get_context("fork" if "fork" in methods else "spawn")
    pending = deque(enumerate(items))
    total = len(pending)
    procs: list[tuple[BaseProcess, Connection]] = []
    side = None
    ok = False
    try:
        for _ in range(min(workers, total)):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(child, job, spec, call, os.getpid()),
                               daemon=True, name="weightvis-worker")
            start_forked(proc)
            child.close()
            procs.append((proc, parent))
        busy: dict[Connection, BaseProcess] = {}
        for proc, conn in procs:
            if pending:
                conn.send(pending.popleft())
                busy[conn] = proc
        if meanwhile is not None:
            switch = sys.getswitchinterval()
            sys.setswitchinterval(min(switch, _SWITCH_S))
            # in a thread started after the workers forked, so they inherit no lock it takes
            side = threading.Thread(target=_signals_to_main(meanwhile), name="weightvis-meanwhile",
                                    daemon=True)
            with deferred():  # (born with the stop signals blocked)
                side.start()
        done = 0
        while done < total:
            ready = wait([*busy, *(p.sentinel for p in busy.values())])
            for conn in [c for c in busy if c in ready or c.poll()]:
                try:
                    _, good, value = conn.recv()
                except (EOFError, OSError):
                    raise WorkerError(_DIED) from None
                if not good:
                    raise value
                done += 1
                if pending:
                    conn.send(pending.popleft())
                else:
                    del busy[conn]
                yield value
            for conn, proc in list(busy.items()):
                if not proc.is_alive() and not conn.poll():
                    raise WorkerError(_DIED)
        ok = True
    finally:
        with deferred():  # a second signal must not leave workers behind
            _stop(procs, polite=ok)
        if side is not None:
            side.join()
        if meanwhile is not None:
            sys.setswitchinterval(switch)


def _stop(procs: list[tuple[BaseProcess, Connection]], *, polite: bool) -> None:
    """End every pool process: asked to exit after a complete run, killed after a failure or
    an interruption (they ignore SIGTERM, and hold nothing worth a goodbye: what they wrote
    goes with the failed run); their pipes closed."""
    for proc, conn in procs:
        if polite:
            with contextlib.suppress(OSError):
                conn.send(None)
        elif proc.is_alive():
            proc.kill()
    for proc, conn in procs:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join()
        conn.close()


class LocalPoolExecutor(Executor):
    """Subtrees over ``workers`` forked processes (spawned where fork does not exist)."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self._early: _EarlyScales | None = None

    def start_scales(self, spec: Any, names: Sequence[str], small: Sequence[str]) -> None:
        """The small tensors' scales in a helper process from now on, while this process
        plans on the other core (a 45k-tensor checkpoint: ~0.4 CPU-s, no longer taken from
        the tile workers)."""
        from .values import SharedScales, start_scale_helper

        self.stop_scales()
        if self.workers > 1 and small:
            shared = SharedScales(list(names))
            proc = start_scale_helper(spec, small, shared, small_only=True)
            if proc is not None:
                self._early = _EarlyScales(spec, tuple(names), frozenset(small), shared, proc)

    def stop_scales(self) -> None:
        early, self._early = self._early, None
        if early is not None:
            _kill([early.proc])

    @contextlib.contextmanager
    def scene(self, job: SceneJob) -> Iterator[SceneJob]:
        """Start the scale helper for the job's ``prefetch`` tensors (before the kernels
        load: call this before importing the pyramid), or for those ``start_scales`` left
        to it; join them when the scene completes, stop them when the scene fails or is
        interrupted (their results are not needed then)."""
        from .values import SharedScales, start_scale_helper

        early, self._early = self._early, None
        helpers = []
        if job.prefetch and self.workers > 1:
            if early is not None and (early.spec, early.names) == (job.spec, job.prefetch):
                shared = early.shared
                helpers.append(early.proc)
                order = job.drawing_order(self.workers, early.small)
            else:
                order = job.drawing_order(self.workers)
                shared = SharedScales(list(job.prefetch))
                if early is not None:
                    _kill([early.proc])
            if order:
                helpers.append(start_scale_helper(job.spec, order, shared))
            job = job._replace(shared=shared)
        elif early is not None:
            _kill([early.proc])
        helpers = [h for h in helpers if h is not None]
        try:
            yield job
        except BaseException:
            _kill(helpers)
            raise
        for h in helpers:
            h.join()

    def run_subtrees(self, job: SceneJob, roots: Sequence[TileAddress], *, reader: Any = None,
                     meanwhile: Callable[[], None] | None = None) -> Iterator[SubtreeResult]:
        from .pyramid import warm_up_all

        # before forking: numba's first load costs ~0.2 s per process, the workers inherit it
        warm_up_all()
        return _pool_results(self.workers, job, None, _pool_run, roots, meanwhile)

    def map_unordered(self, task: Callable[[Any, T], R], spec: Any, items: Sequence[T], *,
                      reader: Any = None, processes: int | None = None,
                      meanwhile: Callable[[], None] | None = None) -> Iterator[R]:
        n = min(self.workers, processes or self.workers, len(items))
        if n <= 1:
            return InlineExecutor().map_unordered(task, spec, items, reader=reader,
                                                  meanwhile=meanwhile)
        return _pool_results(n, None, spec, _map_run, [(task, i) for i in items], meanwhile)


class _EarlyScales(NamedTuple):
    """A scale helper ``LocalPoolExecutor.start_scales`` started before its scene."""

    spec: Any
    names: tuple[str, ...]
    small: frozenset[str]
    shared: Any
    proc: Any


def _kill(procs: Sequence[Any]) -> None:
    with deferred():
        for p in procs:
            p.kill()
        for p in procs:
            p.join()


def local_executor(workers: int) -> Executor:
    """The inline executor for one worker, the local process pool for more."""
    return InlineExecutor() if workers <= 1 else LocalPoolExecutor(workers)
