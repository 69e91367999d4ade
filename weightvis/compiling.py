"""The first run's numba compile, moved off the critical path.

numba compiles every kernel on first use and keeps the result in its cache (``cache=True``); a
fresh install with an empty cache spends ~9 s of CPU compiling before the first tile. When the
kernels are not cached yet, ``start()`` forks (at most) two processes, before the checkpoint is
even opened, that compile the kernel groups and write numba's cache while this process reads the
checkpoint and plans; ``wait()`` (before the first tile) shows the compile as a progress stage
and returns when the groups are done. The kernels then load from the cache (~0.2 s), and the
tile workers fork with them loaded, as before.

A run that knows which kernels it uses (the demo: 16-bit codes on the arch layout) passes
``needed``: groups outside it that are not cached yet are *deferred* - neither compiled in the
background nor by ``warm_up_all`` before the workers fork - and compile on first use, should
a tile need them after all (correct, only slower once). The demo needs ``reduce`` and ``codes``
only (its PNGs are the standard library's zlib: demo.DEMO_KERNELS): its first run compiles
~4 CPU-s instead of ~9.7 (numba 0.68).

Nothing here is needed for correctness: a group whose process failed, or a cache that cannot be
written, leaves the kernels to compile in this process on first use (``pyramid.warm_up_all``).
Set ``WEIGHTVIS_BACKGROUND_COMPILE=0`` to compile in this process only.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Collection
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_any
from typing import Any

from .interrupts import start_forked, unblock_stop_signals

__all__ = ["start", "wait", "warm", "warm_all", "COMPILE_STAGE", "GROUPS"]

COMPILE_STAGE = "compiling kernels (first run only)"
"""The progress stage shown while the background compile finishes."""

_GROUPS: dict[str, tuple[str, str]] = {
    # group -> (module, name of a jitted kernel it compiles: cached <=> the group is)
    "png": ("deflate", "_deflate_rle"),                 # ~4.6 CPU-s (measured, numba 0.68)
    "delta": ("delta", "_colorize_delta"),
    "reduce": ("reduce", "_reduce_signed_rms"),         # ~2.4
    "codes-small": ("values", "_colorize_codes_sorted"),  # ~1.6
    "codes": ("values", "_colorize_blocks"),            # ~1.6
    "values": ("values", "_index_values"),              # ~0.8
}
"""Kernel groups, longest compile first (they are handed out in this order, to whichever
process is free: the longest ones start first, the short ones fill in)."""

GROUPS = tuple(_GROUPS)

_TILE_GROUPS = ("png", "reduce", "codes", "codes-small", "values")
"""The groups every render's tiles may use (``warm_all``); ``delta`` is the diff's."""

_running: list[tuple[Any, Connection]] = []
_pending = 0
_deferred: frozenset[str] = frozenset()
_claimed = False  # start() ran and wait() has not: a second start() is a no-op


def warm(group: str) -> None:
    """Compile (or load from numba's cache) the kernels of ``group`` in this process."""
    from .kernels import warm as kw

    if group == "png":
        from .png import warm_up

        warm_up()
    else:
        {"values": kw.warm_values, "codes": kw.warm_codes, "codes-small": kw.warm_codes_small,
         "reduce": kw.warm_reduce, "delta": kw.warm_up_delta}[group]()


def warm_all() -> None:
    """Compile (or load) the tile kernels in this process, except the deferred groups."""
    for group in _TILE_GROUPS:
        if group not in _deferred:
            warm(group)


_warm = warm  # the background processes' entry (tests replace it)


def _cached(group: str) -> bool:
    """Whether numba's cache holds the group's kernels (its sentinel kernel's index is current).
    Reads numba's cache index through private names: anything unexpected counts as cached (the
    kernels then compile where they are used, as without this module)."""
    import importlib

    module, name = _GROUPS[group]
    try:
        kernel = getattr(importlib.import_module(f"weightvis.kernels.{module}"), name)
        return bool(kernel._cache._cache_file._load_index())
    except Exception:
        return True


def start(delta: bool = False, needed: Collection[str] | None = None) -> None:
    """Compile the uncached kernel groups in background processes (no-op when all are cached,
    when already started, or with ``WEIGHTVIS_BACKGROUND_COMPILE=0``). ``needed``: the groups
    this run uses (None: all); the uncached others are deferred (module docstring)."""
    global _pending, _deferred, _claimed
    if needed is not None and not set(needed) <= set(_GROUPS):
        raise ValueError(f"unknown kernel groups {sorted(set(needed) - set(_GROUPS))}")
    if _claimed:
        return  # started by the caller (the demo), with its ``needed``; until ``wait``
    _claimed = True
    _deferred = frozenset() if needed is None else frozenset(
        g for g in _GROUPS if g not in needed and not _cached(g))
    if os.environ.get("WEIGHTVIS_BACKGROUND_COMPILE", "1") == "0":
        return
    groups = [g for g in _GROUPS if (delta or g != "delta") and g not in _deferred
              and not _cached(g)]
    if not groups:
        return
    methods = mp.get_all_start_methods()
    ctx: Any = mp.get_context("fork" if "fork" in methods else "spawn")
    tasks = ctx.SimpleQueue()  # no feeder thread: nothing of ours runs beside later forks
    for g in groups:
        tasks.put(g)
    n = min(2, os.cpu_count() or 1, len(groups))
    for _ in range(n):
        tasks.put(None)
    for _ in range(n):
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_compile_main, args=(tasks, child), daemon=True,
                           name="weightvis-compile")
        start_forked(proc)
        child.close()
        _running.append((proc, parent))
    _pending = len(groups)


def _compile_main(tasks: Any, done: Connection) -> None:
    unblock_stop_signals()  # (started by start_forked: a stop signal ends this process too)
    while (group := tasks.get()) is not None:
        try:
            _warm(group)
        except Exception:
            pass  # this process compiles it again on first use, and reports a real error then
        done.send(group)
    done.close()


def wait(progress: Callable[[str, int, int], None] | None = None) -> None:
    """Wait for the background compile (a no-op when none runs), ticking ``progress`` per
    group done."""
    global _pending, _claimed
    _claimed = False
    if not _running:
        return
    total = _pending
    if progress is not None:
        progress(COMPILE_STAGE, 0, total)
    conns = {conn: proc for proc, conn in _running}
    while conns:
        for conn in wait_any(list(conns)):
            assert isinstance(conn, Connection)
            try:
                conn.recv()
            except EOFError:  # finished (or died): its groups compile here if needed
                conns.pop(conn)
                continue
            _pending -= 1
            if progress is not None:
                progress(COMPILE_STAGE, 1, total)
    for proc, conn in _running:
        proc.join()
        conn.close()
    _running.clear()
    _pending = 0
