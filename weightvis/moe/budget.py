"""How much memory an MoE group task holds (moe.summary), and so how many run at once and how
many of each expert's elements the cosines keep. A task is a ``summary.GroupTask``: its
``role``, ``slices`` (one per expert), ``mode`` ("exact" / "sketch") and ``options``
(``MoEOptions``); a shape is the (rows, cols) of its experts' matrices."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .summary import GroupTask

__all__ = ["row_count", "rep_bytes", "cosine_step", "task_bytes", "task_processes"]


def row_count(task: GroupTask, shape: tuple[int, int]) -> int:
    """Most Gram rows per expert of a row-sampled task: its sample m and up to ``cka_heavy``
    heavy coordinates — fewer heavy ones where ``memory`` does not hold them beside two
    matrices being read and one kept for the cosines (never fewer than m: a group whose m rows
    alone do not fit still runs, one task at a time)."""
    e = len(task.slices)
    n, p = (shape[1], shape[0]) if task.role in ("gate", "up", "gate_up") else shape
    m = task.options.sketch_size(e, n, p)
    room = task.options.memory - 3 * 4 * n * p - e * (3 * n + p) * 8
    fit = room // max(1, e * n * 4)
    return min(n, max(m, min(m + task.options.cka_heavy, fit)))


def rep_bytes(task: GroupTask, shape: tuple[int, int]) -> int:
    """Bytes of a task's CKA representations: per expert its sampled and heavy float32 Gram
    rows [≤ m + ``cka_heavy``, n] and float64 sums ([3n + p]: ``sampled.RowMoments``); or two
    float32 feature sketches [k, n], at most ``cka_heavy`` exact float32 Gram rows [n] and the
    float64 d and r [n]; or an n x n float64 Gram."""
    e = len(task.slices)
    n, p = (shape[1], shape[0]) if task.role in ("gate", "up", "gate_up") else shape
    if task.mode == "sketch":
        k = task.options.sketch_size(e, n, p)
        if task.options.cka_sketch == "rows":
            return e * row_count(task, shape) * n * 4 + e * (3 * n + p) * 8
        return e * (2 * k + task.options.cka_heavy) * n * 4 + e * 2 * n * 8
    return e * n * n * 8


def cosine_step(experts: int, size: int, budget: int, reps: int = 0) -> int:
    """Every how many elements (flattened) the cosines use: 1 (exact) when the group's
    matrices fit in ``budget`` beside two being read (the matrix and its decode) and the CKA
    representations ``reps``, else the smallest stride that fits (keeping at least one
    matrix's worth)."""
    room = max(4 * size, budget - 2 * 4 * size - reps)
    return max(1, -(-experts * 4 * size // room))


def task_bytes(task: GroupTask, shape: tuple[int, int], memory: int) -> int:
    """Bytes one task holds: two matrices being read, its cosine elements (at the stride
    ``cosine_step`` gives it for ``memory`` alone) and its CKA representations."""
    size = shape[0] * shape[1]
    reps = rep_bytes(task, shape)
    step = cosine_step(len(task.slices), size, memory, reps)
    return 2 * 4 * size + len(task.slices) * 4 * -(-size // step) + reps


def task_processes(tasks: list[GroupTask], shapes: list[tuple[int, int]], workers: int,
                   memory: int) -> int:
    """How many tasks run at once: as many as ``memory`` holds together (``task_bytes``; at
    least one, at most ``workers``). Each task's cosine stride is chosen for ``memory``
    alone, so the numbers are the same however many run at once."""
    need = max((task_bytes(t, shape, memory) for t, shape in zip(tasks, shapes, strict=True)),
               default=1)
    return max(1, min(workers, memory // max(1, need)))
