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
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

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
    """The pool worker's own ``TileWorker`` (made by the initializer from the job it is
    handed: each pool process renders one scene)."""

    worker: TileWorker | None = None
    reader: Any = None


def _pool_init(job: SceneJob) -> None:
    from .pyramid import TileWorker

    # everything inherited from the parent lives as long as the worker: keep it out of the
    # collector's full passes (measured: 3 % of the worker's time went to gc over it)
    gc.freeze()
    _PoolState.worker = TileWorker(job)


def _map_init(spec: Any) -> None:
    gc.freeze()
    _PoolState.reader = spec.open()


def _map_run(task_item: tuple[Callable[[Any, Any], Any], Any]) -> Any:
    task, item = task_item
    return task(_PoolState.reader, item)


def _pool_run(root: TileAddress) -> SubtreeResult:
    from .pyramid import render_subtree

    assert _PoolState.worker is not None
    return render_subtree(_PoolState.worker, root)


class LocalPoolExecutor(Executor):
    """Subtrees over ``workers`` forked processes (spawned where fork does not exist)."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)

    @staticmethod
    def _context() -> mp.context.BaseContext:
        methods = mp.get_all_start_methods()
        return mp.get_context("fork" if "fork" in methods else "spawn")

    @contextlib.contextmanager
    def scene(self, job: SceneJob) -> Iterator[SceneJob]:
        """Start the scale helper for the job's ``prefetch`` tensors (before the kernels
        load: call this before importing the pyramid); join it when the scene completes,
        stop it when the scene fails or is interrupted (its results are not needed then)."""
        from .values import SharedScales, start_scale_helper

        helper = None
        if job.prefetch and self.workers > 1:
            shared = SharedScales(list(job.prefetch))
            helper = start_scale_helper(job.spec, job.drawing_order(self.workers), shared)
            job = job._replace(shared=shared)
        try:
            yield job
        except BaseException:
            if helper is not None:
                helper.terminate()
                helper.join()
            raise
        if helper is not None:
            helper.join()

    def run_subtrees(self, job: SceneJob, roots: Sequence[TileAddress], *, reader: Any = None,
                     meanwhile: Callable[[], None] | None = None) -> Iterator[SubtreeResult]:
        from .pyramid import warm_up_all

        # before forking: numba's first load costs ~0.2 s per process, the workers inherit it
        warm_up_all()
        with self._context().Pool(self.workers, initializer=_pool_init,
                                  initargs=(job,)) as pool:
            results = pool.imap_unordered(_pool_run, roots)
            if meanwhile is not None:
                meanwhile()
            yield from results


    def map_unordered(self, task: Callable[[Any, T], R], spec: Any, items: Sequence[T], *,
                      reader: Any = None, processes: int | None = None,
                      meanwhile: Callable[[], None] | None = None) -> Iterator[R]:
        n = min(self.workers if processes is None else processes, len(items))
        if n <= 1:
            yield from InlineExecutor().map_unordered(task, spec, items, reader=reader,
                                                      meanwhile=meanwhile)
            return
        side = None
        with self._context().Pool(n, initializer=_map_init, initargs=(spec,)) as pool:
            results = pool.imap_unordered(_map_run, [(task, i) for i in items], chunksize=1)
            if meanwhile is not None:
                # in a thread started after the workers forked, so they inherit no lock it takes
                import threading

                side = threading.Thread(target=meanwhile, name="weightvis-meanwhile",
                                        daemon=True)
                side.start()
            try:
                yield from results
            finally:
                if side is not None:
                    side.join()


def local_executor(workers: int) -> Executor:
    """The inline executor for one worker, the local process pool for more."""
    return InlineExecutor() if workers <= 1 else LocalPoolExecutor(workers)
