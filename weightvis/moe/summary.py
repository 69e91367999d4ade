"""The per-layer MoE computation on the executor: every expert's statistics, the E x E debiased
CKA and flattened-weight cosine of each (MoE layer, role), the router's numbers, merged in a
fixed order into ``MoENumbers`` (the same bits whatever the executor and worker count).

One task per (layer, role) (``group_task``), run by ``Executor.map_unordered`` with the
checkpoint's spec (each worker opens its own reader). A task reads the group's experts through
``structure.expert_matrix`` (true values) and holds at most ``memory`` bytes of them at once:
experts are read in chunks of T = max(1, memory // matrix_bytes - 1); each expert's statistics
and sketches (or Gram, for exact CKA) are computed when its chunk is read, and the cosines
between a chunk and the later experts by reading those again one at a time. When the whole
group fits (T ≥ E) every expert is read once; otherwise the group costs about E + E²/(2T)
expert reads. Peak memory per task: (T + 1) float32 matrices, plus the sketches
(2·E·k·H float32) or Grams (E·H² float64).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from ..errors import InputError
from ..executors import Executor
from ..options import MoEOptions
from .cka import (
    FeatureSketch,
    canonical,
    cka_exact,
    cosine_from_dots,
    exact_cost,
    features,
    sketched_cka,
)
from .stats import STATS, StableRankOptions, expert_stats, moment_stats, router_row_norms

__all__ = ["GroupTask", "GroupResult", "MoENumbers", "plan_groups", "group_task",
           "moe_numbers", "cka_mode", "ROLE_INDEX"]

ROLE_INDEX = {"gate": 0, "up": 1, "down": 2, "gate_up": 3}
"""A role's number in the sketch seed (bundle seed, layer, role)."""


class GroupTask(NamedTuple):
    """One (layer, role): its experts' slices and how to compute (picklable)."""

    layer: int
    role: str
    slices: tuple[Any, ...]
    """structure.ExpertSlice per routed expert, in expert order."""
    mode: str
    """"exact" or "sketch" (cka_mode)."""
    options: MoEOptions


class GroupResult(NamedTuple):
    layer: int
    role: str
    stats: np.ndarray
    """float64 [E, len(STATS)] (NaN where undefined)."""
    dead: np.ndarray
    """bool [E]: every element exactly zero."""
    cka: np.ndarray
    """float64 [E, E] (NaN row and column for an expert without CKA)."""
    cosine: np.ndarray
    mode: str
    reads: int
    """Expert matrices read (E when the group fits in memory)."""
    lanczos_steps: int


class MoENumbers(NamedTuple):
    """Every number of the MoE scenes, rows = MoE layers in ascending order."""

    layers: tuple[int, ...]
    roles: tuple[str, ...]
    experts: int
    stats: dict[str, dict[str, np.ndarray]]
    """stats[stat][role] = float64 [rows, E]."""
    dead: dict[str, np.ndarray]
    """dead[role] = bool [rows, E]."""
    similarity: dict[str, dict[str, dict[int, np.ndarray]]]
    """similarity[metric][role][layer] = float64 [E, E]."""
    modes: dict[str, dict[int, str]]
    """CKA mode per role and layer ("exact" / "sketch")."""
    row_norm: np.ndarray
    """float64 [rows, E] (NaN where a layer has no router)."""
    bias: np.ndarray | None
    """float64 [rows, E], or None when no layer has a selection bias."""
    reads: int
    lanczos_steps: int


def _shape(reader: Any, s: Any) -> tuple[int, int]:
    """(rows, cols) of the matrix an ExpertSlice gives (from the slice, no data read)."""
    rows = s.rows[1] - s.rows[0]
    cols = len(range(s.cols[0], s.cols[1], s.col_step))
    return (cols, rows) if s.transpose else (rows, cols)


def cka_mode(experts: int, shape: tuple[int, int], role: str, opts: MoEOptions) -> str:
    """"exact" when exact CKA is cheap (≤ cka_exact_max multiply-adds, or ≤ twice the
    sketch's) and its Grams fit in half the task memory; else "sketch" (unless ``opts.cka``
    forces one)."""
    if opts.cka != "auto":
        return opts.cka
    x_shape = (shape[1], shape[0]) if role in ("gate", "up", "gate_up") else shape
    n, p = x_shape
    cost = exact_cost(experts, n, p)
    sketch = experts * experts * opts.cka_sample * opts.cka_sample * n
    fits = experts * n * n * 8 <= opts.memory // 2
    return "exact" if fits and (cost <= opts.cka_exact_max or cost <= 2 * sketch) else "sketch"


def plan_groups(structure: Any, reader: Any, opts: MoEOptions) -> list[GroupTask]:
    """The tasks of a checkpoint's MoE structure, biggest first (so no worker is left alone
    with a big one at the end). Checks every group's experts share one shape."""
    tasks = []
    for layer in structure.moe_layers:
        for role in structure.roles:
            slices = tuple(structure.slices.get((layer, role), ()))
            if not slices:
                continue
            shape = _shape(reader, slices[0])
            for s in slices[1:]:
                if _shape(reader, s) != shape:
                    raise InputError(f"tensor {s.tensor!r}: expert of layer {layer} ({role}) "
                                     f"has shape {_shape(reader, s)}, expert 0 {shape}")
            tasks.append(GroupTask(layer, role, slices,
                                   cka_mode(len(slices), shape, role, opts), opts))
    tasks.sort(key=lambda t: (-len(t.slices) * math.prod(_shape(reader, t.slices[0])),
                              t.layer, ROLE_INDEX.get(t.role, 9)))
    return tasks


def group_task(reader: Any, task: GroupTask) -> GroupResult:
    """Everything of one (layer, role), with at most ``options.memory`` bytes of experts held
    (module docstring). Runs in any process: ``reader`` is that process's.

    Flattened inner products come from float32 matrix products of the experts held (one pass
    over them), summed in float32 by BLAS (relative error ~1e-6 of the norms). An expert whose
    bytes equal an earlier one's (same moments, then compared) is a copy: its rows and columns
    of every pair matrix are the earlier expert's, so it scores exactly 1."""
    from .structure import expert_matrix

    opts = task.options
    e_count = len(task.slices)
    rows, cols = _shape(reader, task.slices[0])
    size = rows * cols
    hold = max(1, min(e_count, opts.memory // max(1, 4 * size) - 1))
    sr_opts = StableRankOptions(opts.stable_rank_tol, opts.stable_rank_max_iter, opts.seed)
    stats = np.full((e_count, len(STATS)), np.nan)
    dead = np.zeros(e_count, bool)
    dots = np.zeros((e_count, e_count))
    same = list(range(e_count))
    fingerprints: list[tuple[float, ...]] = []
    """per expert read: its first four statistics (equal bytes, equal statistics)"""
    grams: list[np.ndarray] = []
    sketches: list[tuple[np.ndarray, np.ndarray]] = []
    sketch = None
    if task.mode == "sketch":
        p = rows if task.role in ("gate", "up", "gate_up") else cols
        sketch = FeatureSketch(p, opts.cka_sample, (opts.seed, task.layer,
                                                    ROLE_INDEX.get(task.role, 9)),
                               opts.cka_sketch)
    reads = steps = 0
    buf = np.empty((hold, rows, cols), np.float32)

    def read(e: int, into: np.ndarray) -> None:
        nonlocal reads
        w: np.ndarray = expert_matrix(reader, task.slices[e])
        reads += 1
        if w.shape != (rows, cols):
            raise InputError(f"tensor {task.slices[e].tensor!r}: expert {e} of layer "
                             f"{task.layer} ({task.role}) is {w.shape}, expected "
                             f"{(rows, cols)}")
        into[...] = w
        reader.release()

    def copy_of(e: int, w: np.ndarray, held: dict[int, np.ndarray]) -> None:
        """Mark e as a copy of the first earlier expert held with the same bytes."""
        for e2 in range(e):
            w2 = held.get(e2)
            if same[e2] == e2 and w2 is not None and fingerprints[e2] == fingerprints[e] \
                    and np.array_equal(w2, w):
                same[e] = e2
                return

    other = np.empty((rows, cols), np.float32)
    for a0 in range(0, e_count, hold):
        a1 = min(e_count, a0 + hold)
        held = {e: buf[e - a0] for e in range(a0, a1)}
        for e in range(a0, a1):
            w = held[e]
            read(e, w)
            st = expert_stats(w, sr_opts)
            stats[e] = st.values()
            dead[e] = st.dead
            steps += st.iterations
            fingerprints.append(st.values()[:4])
            if same[e] == e:
                copy_of(e, w, held)
            if sketch is not None:
                sketches.append(sketch.apply(w, task.role))
            else:
                x = features(w, task.role).astype(np.float64)
                grams.append(x @ x.T)
        flat = buf[:a1 - a0].reshape(a1 - a0, size)
        dots[a0:a1, a0:a1] = (flat @ flat.T).astype(np.float64)
        for b in range(a1, e_count):  # the later experts, read again one at a time
            read(b, other)
            dots[a0:a1, b] = dots[b, a0:a1] = (flat @ other.reshape(size)).astype(np.float64)
            if same[b] == b:  # (its own chunk cannot see this chunk's experts any more)
                fp = moment_stats(other)
                for e2, w2 in held.items():
                    if same[e2] == e2 and fingerprints[e2] == fp and np.array_equal(w2, other):
                        same[b] = e2
                        break
    n = cols if task.role in ("gate", "up", "gate_up") else rows
    if n < 4:  # the unbiased HSIC needs four examples
        cka = np.full((e_count, e_count), np.nan)
    elif sketch is not None:
        cka = sketched_cka(sketches, same)
    else:
        cka = cka_exact(grams, same)
    return GroupResult(task.layer, task.role, stats, dead, cka,
                       cosine_from_dots(canonical(dots, same)), task.mode, reads, steps)


def moe_numbers(reader: Any, spec: Any, structure: Any, opts: MoEOptions, executor: Executor,
                tick: Callable[[], None] | None = None) -> MoENumbers:
    """All the MoE numbers of a checkpoint: the groups on ``executor`` (tasks in any order,
    merged by layer and role), the routers here (tiny)."""
    tasks = plan_groups(structure, reader, opts)
    results: dict[tuple[int, str], GroupResult] = {}
    for res in executor.map_unordered(group_task, spec, tasks, reader=reader):
        results[(res.layer, res.role)] = res
        if tick is not None:
            tick()
    layers = tuple(structure.moe_layers)
    roles = tuple(r for r in structure.roles if any((lay, r) in results for lay in layers))
    e_count = int(structure.experts)
    stats = {s: {r: np.full((len(layers), e_count), np.nan) for r in roles} for s in STATS}
    dead = {r: np.zeros((len(layers), e_count), bool) for r in roles}
    sim: dict[str, dict[str, dict[int, np.ndarray]]] = {"cka": {r: {} for r in roles},
                                                        "cosine": {r: {} for r in roles}}
    modes: dict[str, dict[int, str]] = {r: {} for r in roles}
    reads = steps = 0
    for i, layer in enumerate(layers):
        for r in roles:
            got = results.get((layer, r))
            if got is None:
                continue
            n = min(e_count, len(got.dead))
            for j, s in enumerate(STATS):
                stats[s][r][i, :n] = got.stats[:n, j]
            dead[r][i, :n] = got.dead[:n]
            sim["cka"][r][layer] = got.cka
            sim["cosine"][r][layer] = got.cosine
            modes[r][layer] = got.mode
            reads += got.reads
            steps += got.lanczos_steps
    row_norm, bias = _router_numbers(reader, structure, layers, e_count)
    return MoENumbers(layers, roles, e_count, stats, dead, sim, modes, row_norm, bias, reads,
                      steps)


def _router_numbers(reader: Any, structure: Any, layers: Sequence[int], e_count: int
                    ) -> tuple[np.ndarray, np.ndarray | None]:
    """Row norms of each layer's router ([E, H]; rows beyond E, such as LongCat's zero experts,
    are left out) and its selection bias, rows = MoE layers."""
    norms = np.full((len(layers), e_count), np.nan)
    bias = np.full((len(layers), e_count), np.nan)
    router: Mapping[int, str] = structure.router
    router_bias: Mapping[int, str] = structure.router_bias
    for i, layer in enumerate(layers):
        name = router.get(layer)
        if name is not None:
            w = reader.read_all(name)
            n = min(e_count, w.shape[0])
            norms[i, :n] = router_row_norms(w[:n])
        bname = router_bias.get(layer)
        if bname is not None:
            b = reader.read_all(bname).reshape(-1).astype(np.float64)
            n = min(e_count, b.size)
            bias[i, :n] = b[:n]
    reader.release()
    return norms, (bias if router_bias else None)
