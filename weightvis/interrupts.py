"""Signals and helper processes: what keeps an interrupted run from leaving anything behind.
numpy-free.

- The signals that stop a run (``STOP_SIGNALS``: Ctrl-C, SIGTERM, SIGHUP) are the main
  process's to handle (the CLI turns them into an exception, so every ``finally`` runs).
- ``deferred()`` holds them off while a few steps must all happen or none (moving a bundle
  into place, removing a failed run's files): they are delivered when the block ends.
- Helper processes (the tile workers, the scale helper) call ``become_helper`` first: they
  ignore the stop signals (the main process stops them), and the kernel kills them when the
  process that started them dies, even by SIGKILL, so none outlives a killed run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["STOP_SIGNALS", "deferred", "start_forked", "unblock_stop_signals", "become_helper",
           "leave_to_main_thread"]

STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))

_PR_SET_PDEATHSIG = 1
"""prctl option (linux/prctl.h): the signal this process gets when its parent thread dies."""


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Block the stop signals in this thread for the duration of the block; one that arrives
    meanwhile is delivered (and its handler runs) right after. A no-op where signal masks
    do not exist."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def start_forked(proc: Any) -> None:
    """``proc.start()`` (a process about to fork) with the stop signals held off: a handler
    that ran inside the fork's Python hooks would have its exception dropped there
    ("Exception ignored in ... _releaseLock": logging's lock left held, the stop lost, the run
    hanging); held off, the signal is handled in the caller right after the fork. The child
    starts with them blocked: ``become_helper`` (or ``unblock_stop_signals``) unblocks them."""
    with deferred():
        proc.start()


def unblock_stop_signals() -> None:
    """Unblock the stop signals in this thread (a child of ``start_forked``)."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def leave_to_main_thread() -> None:
    """Block the stop signals in this (side) thread for good, so the kernel delivers them to
    the main thread, whatever it waits on (a signal taken by a side thread would only be
    handled at the main thread's next bytecode: late, when it waits on a worker's pipe)."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def become_helper(parent: int) -> None:
    """Set up a helper process started by ``parent`` (call it first thing in the helper):
    ignore the stop signals, and die with ``parent``: Linux's ``PR_SET_PDEATHSIG`` (SIGKILL
    when the parent dies), elsewhere a thread that watches the parent's pid."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    unblock_stop_signals()  # (forked inside a deferred() block)
    armed = False
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent:  # the parent died before the kernel could be told
        os._exit(1)
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent,), name="weightvis-orphan-watch",
                         daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)
