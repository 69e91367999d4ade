"""Side work: a later scene's ``prepare`` (the MoE numbers) computed in side threads of this
process while the local pool's workers draw an earlier scene's tiles (bundle.build_bundle).

During the tiles this process only waits on its workers' pipes: the MoE group tasks use
what cores the workers leave (measured, Mixtral-shaped, 4 layers, 2 cores: with one tile
worker the MoE numbers cost no wall time at all, 4.5-5.0 s against 5.0-5.2 s without MoE
scenes and 6.7-7.3 s computed after the tiles; with two tile workers, which keep ~1.75 cores
busy, as fast as after the tiles, +44 to +55 % median either way, and 150 MiB less peak RSS:
no MoE processes). ``SideWork`` owns the threads, the held-back progress, the failure and
the cancellation; ``SideExecutor`` is the executor the ``prepare`` gets (the tasks run in the
side thread, and once the tiles are done in helper threads too: as many threads in all as the
pool's workers, never more than the work's ``processes``). No more threads than that run
while the tiles are drawn, even on cores the workers leave: ``--workers`` is what the user
gives the render.

- Forks: the side thread starts from the scene's ``meanwhile`` hook (after the workers forked,
  so none inherits it) and every side thread is joined when those tiles are done, before any
  other process forks.
- Bytes: no number depends on how many tasks run at once (moe.summary), and results are
  merged in a fixed order: the bundle is byte for byte the one computed after the tiles.
- Memory: at most ``processes`` tasks at once (what ``--moe-memory`` holds, at most the
  pool's worker count), as the pool would run them.
- Readers: each side thread reads through its own reader, never the main thread's (in use
  meanwhile by the tiles' reductions and the manifest's static parts).
- Signals: side threads block the stop signals (the main thread gets them, whatever it waits
  on). On a failure or an interruption ``stop`` sets ``cancel``: each side thread stops at its
  next read or task (``Cancelled``) and is joined (for at most STOP_WAIT_S) before the
  bundle's files are removed; from then on no side thread writes into the bundle.
- Failures: a task's exception is raised again by ``join`` in the main thread (the CLI turns
  it into its one line).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from .executors import Executor, InlineExecutor
from .interrupts import deferred, leave_to_main_thread
from .tiling import SceneJob
from .types import TileAddress

if TYPE_CHECKING:
    from .pyramid import SubtreeResult
    from .scenes import Progress, Scene

__all__ = ["SideWork", "SideExecutor", "Cancelled", "reader_for"]

T = TypeVar("T")
R = TypeVar("R")

_WAIT_S = 0.1
"""How often a side thread waiting for a helper's result checks ``cancel``."""

STOP_WAIT_S = 2.0
"""How long ``SideWork.stop`` waits for a side thread to reach its next read (a big group's
pair sums can run for minutes without one); a thread still running after that can no longer
write a file or report progress (its ``write`` and progress go through a gate that
``cancel`` closes), and ends with the process."""


class Cancelled(Exception):
    """Side work stopped because its run failed or was interrupted elsewhere (never shown: the
    run raises its own exception)."""


class _Work:
    """The items of one ``map_unordered`` call, shared by the side thread (which yields every
    result) and a helper thread (``SideExecutor.help``)."""

    def __init__(self, task: Callable[[Any, Any], Any], spec: Any, items: Sequence[Any],
                 limit: int) -> None:
        self.task, self.spec, self.limit = task, spec, limit
        self.pending = deque(items)
        self.changed = threading.Condition()
        self.helping = 0
        """Items a helper took and has not answered yet."""
        self.helpers = 0
        """Helper threads taking items now (``SideExecutor.help``)."""
        self.answers: deque[tuple[bool, Any]] = deque()

    def take(self, helper: bool) -> tuple[bool, Any]:
        """(True, the next item), or (False, None) when none is left."""
        with self.changed:
            if not self.pending:
                return False, None
            self.helping += helper
            return True, self.pending.popleft()

    def answer(self, good: bool, value: Any) -> None:
        with self.changed:
            self.helping -= 1
            self.answers.append((good, value))
            self.changed.notify_all()


class SideExecutor(InlineExecutor):
    """Tasks in side threads of this process (``SideWork``). ``workers`` is the pool's (the
    same budgets, the same bytes); ``map_unordered`` runs its items here one at a time, and
    ``help`` (helper threads, once the tiles are done) takes items too while ``processes``
    allows more at once. Work reads through readers of its own (``open``); once ``cancel`` is
    set it stops at its next read or task (raising ``Cancelled``)."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self.cancel = threading.Event()
        self._work: _Work | None = None

    @property
    def in_other_processes(self) -> bool:
        return False

    def open(self, spec: Any) -> Any:
        """A reader of ``spec`` for the calling side thread alone, that stops the work once
        ``cancel`` is set (close it when done)."""
        self.check()
        return _Cancellable(spec.open(), self)

    def check(self) -> None:
        if self.cancel.is_set():
            raise Cancelled("side work cancelled")

    def run_subtrees(self, job: SceneJob, roots: Sequence[TileAddress], *, reader: Any = None,
                     meanwhile: Callable[[], None] | None = None) -> Iterator[SubtreeResult]:
        raise NotImplementedError("tiles are drawn by the main thread's executor")

    def map_unordered(self, task: Callable[[Any, T], R], spec: Any, items: Sequence[T], *,
                      reader: Any = None, processes: int | None = None,
                      meanwhile: Callable[[], None] | None = None) -> Iterator[R]:
        own = reader is None
        r = self.open(spec) if own else reader
        work = _Work(task, spec, items, min(self.workers, processes or self.workers))
        self._work = work
        try:
            if meanwhile is not None:
                meanwhile()
            while True:
                self.check()
                more, item = work.take(helper=False)
                if not more:
                    break
                yield task(r, item)
                yield from self._answers(work, wait=False)
            while work.helping or work.answers:  # (what a helper took)
                yield from self._answers(work, wait=True)
        finally:
            with work.changed:  # (a failure here: a helper takes no more)
                work.pending.clear()
            self._work = None
            if own:
                r.close()

    def _answers(self, work: _Work, wait: bool) -> Iterator[Any]:
        with work.changed:
            if wait and not work.answers:
                work.changed.wait(_WAIT_S)
            got = list(work.answers)
            work.answers.clear()
        for good, value in got:
            if not good:
                raise value
            yield value
        self.check()

    def help(self) -> None:
        """Take items of the running ``map_unordered`` in this (helper) thread, each answered
        to the side thread; nothing when none runs or its ``processes`` allow no more
        threads."""
        work = self._work
        if work is None:
            return
        with work.changed:
            if 1 + work.helpers >= work.limit:
                return
            work.helpers += 1
        try:
            self._help(work)
        finally:
            with work.changed:
                work.helpers -= 1

    def _help(self, work: _Work) -> None:
        try:
            r = self.open(work.spec)
        except BaseException:  # noqa: BLE001 - (cancelled, or no reader: the side thread goes on)
            return
        try:
            while True:
                more, item = work.take(helper=True)
                if not more:
                    return
                try:
                    value = work.task(r, item)
                except BaseException as e:  # noqa: BLE001 - raised by the side thread
                    work.answer(False, e)
                    return
                work.answer(True, value)
        finally:
            r.close()


@contextlib.contextmanager
def reader_for(executor: Executor, spec: Any, reader: Any) -> Iterator[Any]:
    """The reader work on ``executor`` uses in this thread: ``reader`` (the main thread's),
    or on a ``SideExecutor`` one of the side thread's own (the main thread's is in use
    meanwhile), closed after the block."""
    if not isinstance(executor, SideExecutor):
        yield reader
        return
    own = executor.open(spec)
    try:
        yield own
    finally:
        own.close()


class _Cancellable:
    """A reader whose every use first checks its side executor's ``cancel`` (so a cancelled
    side thread stops within one read, not one task)."""

    def __init__(self, reader: Any, side: SideExecutor) -> None:
        self._reader = reader
        self._side = side

    def __getattr__(self, name: str) -> Any:
        if name != "close":
            self._side.check()
        return getattr(self._reader, name)


class SideWork:
    """A later scene's ``prepare`` in side threads (module docstring): started by an earlier
    scene's ``meanwhile``, joined (``join``) when that scene's tiles are done, with helpers up
    to the pool's worker count from then on. Its progress is held back while the tiles' bar
    shows, then shown from where it got. ``stop`` cancels and waits, when the run fails or is
    interrupted."""

    def __init__(self, scene: Scene, workers: int, write: Callable[[str, str], None],
                 progress: Progress) -> None:
        self.scene = scene
        self.executor = SideExecutor(workers)
        self._write = write
        self._progress = progress
        self._lock = threading.Lock()
        self._held: dict[str, tuple[int, int]] = {}
        self._live = False
        self._threads: list[threading.Thread] = []
        self._done = False
        self._failed: list[BaseException] = []

    def did(self, scene: Scene) -> bool:
        """``scene``'s prepare ran here (joined): build_bundle does not run it again."""
        return self._done and scene.key == self.scene.key

    def meanwhile(self, then: Callable[[], None] | None) -> Callable[[], None]:
        """The scene's ``meanwhile``: start the side thread, then ``then`` (the scene's own)."""
        def run() -> None:
            self._start(self._run, "weightvis-side")
            if then is not None:
                then()
        return run

    def _start(self, target: Callable[[], None], name: str) -> None:
        def run() -> None:
            leave_to_main_thread()  # Ctrl-C and SIGTERM: the main thread's
            target()

        thread = threading.Thread(target=run, name=name, daemon=True)
        self._threads.append(thread)
        with deferred():  # (born with the stop signals blocked: none lands in it before run)
            thread.start()

    def _run(self) -> None:
        try:
            assert self.scene.prepare is not None
            self.scene.prepare(self.executor, self._gated_write, self._tick)
        except BaseException as e:  # noqa: BLE001 - raised again by join, in the main thread
            self._failed.append(e)

    def _gated_write(self, name: str, text: str) -> None:
        """``write``, unless the work was cancelled (then ``Cancelled``): nothing is written
        into a bundle once ``stop`` began."""
        with self._lock:
            self.executor.check()
            self._write(name, text)

    def _tick(self, stage: str, n: int, total: int) -> None:
        with self._lock:
            if self.executor.cancel.is_set():
                return
            if self._live:
                self._progress(stage, n, total)
            else:
                self._held[stage] = (self._held.get(stage, (0, 0))[0] + n, total)

    def join(self) -> None:
        """Wait for the side work (helper threads join in, its bar shows from now), raising
        its failure. When it never started (no tiles were drawn), nothing: the scene's
        prepare runs in its turn."""
        if not self._threads or self._done:
            return
        for _ in range(self.executor.workers - 1):  # (each helps while there is room)
            self._start(self.executor.help, "weightvis-side-help")
        with self._lock:
            self._live = True
            for stage, (n, total) in self._held.items():
                self._progress(stage, n, total)
        for thread in self._threads:
            while thread.is_alive():
                # timed: a stop signal the kernel gave another thread (one not yet blocking
                # them) is handled at the next wake-up, not when the side work ends
                thread.join(_WAIT_S)
        self._done = True
        if self._failed:
            raise self._failed.pop()

    def stop(self) -> None:
        """Cancel the side work (no file is written from now on) and wait for its threads,
        each until its next read or task, for at most STOP_WAIT_S; its failure, if any, is
        dropped (the caller raises its own)."""
        with self._lock:  # (after a write in progress)
            self.executor.cancel.set()
        with deferred():
            deadline = time.monotonic() + STOP_WAIT_S
            for thread in self._threads:
                thread.join(max(0.0, deadline - time.monotonic()))
        self._failed.clear()
