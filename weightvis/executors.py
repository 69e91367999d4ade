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
from typing import TYPE_CHECKING, Any

from .tiling import SceneJob
from .types import TileAddress

if TYPE_CHECKING:
    from .pyramid import SubtreeResult, TileWorker

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


class _PoolState:
    """The pool worker's own ``TileWorker`` (made by the initializer from the job it is
    handed: each pool process renders one scene)."""

    worker: TileWorker | None = None


def _pool_init(job: SceneJob) -> None:
    from .pyramid import TileWorker

    # everything inherited from the parent lives as long as the worker: keep it out of the
    # collector's full passes (measured: 3 % of the worker's time went to gc over it)
    gc.freeze()
    _PoolState.worker = TileWorker(job)


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


def local_executor(workers: int) -> Executor:
    """The inline executor for one worker, the local process pool for more."""
    return InlineExecutor() if workers <= 1 else LocalPoolExecutor(workers)
