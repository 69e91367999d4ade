"""The per-layer MoE computation on the executor: every expert's statistics, the E x E debiased
CKA and flattened-weight cosine of each (MoE layer, role), the router's numbers, merged in a
fixed order into ``MoENumbers`` (the same bits whatever the executor and worker count).

One task per (layer, role) (``group_task``), run by ``Executor.map_unordered`` with the
checkpoint's spec (each worker opens its own reader). A task reads each of the group's experts
once, through ``structure.expert_matrix`` (true values), and keeps of it only what the pairs
need: its sampled Gram rows, two CKA sketches (2·k·H float32) or its Gram (H² float64, exact
CKA), and for the cosines the whole matrix when the group fits in ``memory`` (its bfloat16
codes when every expert's values are bfloat16), else every s-th element (s =
``cosine_step``: the smallest stride that fits; the cosine of two vectors from n' sampled
elements is off by about 1/√n' where it is near 0 — 3e-4 for Mixtral-8x7B, 1.5e-3 for
DeepSeek-V3). ``memory`` also bounds all the tasks running at once: as many run as it holds
together (``task_processes``, ``task_bytes``: two matrices being read, the cosine elements
and the sketches or Grams; at least one runs) — how many never changes a number.
"""

from __future__ import annotations

import functools
import math
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ..errors import InputError
from ..executors import Executor
from ..options import MoEOptions
from .budget import cosine_step, rep_bytes, row_count, task_bytes, task_processes
from .cka import (
    ExpertSketch,
    FeatureSketch,
    canonical,
    cka_exact,
    cosine_from_dots,
    exact_cost,
    features,
    sketched_cka,
)
from .sampled import (
    RowRep,
    draw_sample,
    finish_rows,
    needs_matrix,
    plan_rows,
    raw_rows,
    row_moments,
    sampled_cka,
)
from .stats import STATS, StableRankOptions, expert_stats, router_row_norms

if TYPE_CHECKING:
    from ..kernels.moe import StatsPass

__all__ = ["GroupTask", "GroupResult", "MoENumbers", "plan_groups", "group_task",
           "moe_numbers", "cka_mode", "cosine_step", "task_processes", "task_bytes", "rep_bytes",
           "row_count",
           "ROLE_INDEX"]

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
    """Expert matrices read (E: each once)."""
    lanczos_steps: int
    cosine_step: int
    """1: exact cosines; s: from every s-th element (the group did not fit in memory)."""


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
    cosine_steps: dict[str, dict[int, int]]
    """Element stride of the cosines per role and layer (1: exact)."""
    row_norm: np.ndarray
    """float64 [rows, E] (NaN where a layer has no router)."""
    bias: np.ndarray | None
    """float64 [rows, E], or None when no layer has a selection bias."""
    reads: int
    lanczos_steps: int
    sketch_size: int
    """The sketch's size where sketched: m sampled coordinates (rows) or k features."""
    estimator: str = "rows"
    """The estimate where sketched: "rows" (sampled.py) or "countsketch" / "gaussian"."""


def _shape(reader: Any, s: Any) -> tuple[int, int]:
    """(rows, cols) of the matrix an ExpertSlice gives (from the slice, no data read)."""
    rows = s.rows[1] - s.rows[0]
    cols = len(range(s.cols[0], s.cols[1], s.col_step))
    return (cols, rows) if s.transpose else (rows, cols)


def cka_mode(experts: int, shape: tuple[int, int], role: str, opts: MoEOptions) -> str:
    """"exact" when exact CKA is cheap (≤ cka_exact_max multiply-adds, or in float64 no
    slower than the sketch in float32: half its multiply-adds) and its Grams fit in
    a quarter of the MoE memory; else "sketch" (unless ``opts.cka``
    forces one)."""
    if opts.cka != "auto":
        return opts.cka
    x_shape = (shape[1], shape[0]) if role in ("gate", "up", "gate_up") else shape
    n, p = x_shape
    cost = exact_cost(experts, n, p)
    sketch = opts.sketch_cost(experts, n, p)
    fits = experts * n * n * 8 <= opts.memory // 4
    return "exact" if fits and (cost <= opts.cka_exact_max or 2 * cost <= sketch) else "sketch"


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


class _Scratch(threading.local):
    """A float32 buffer per thread, reused by its tasks (fresh pages cost a fault and a clear
    each: ~0.3 ns per element); one per thread, as two side threads may run tasks at once
    (sidework.SideExecutor)."""

    buffer: np.ndarray | None = None

    def get(self, n: int) -> np.ndarray:
        if self.buffer is None or self.buffer.size < n:
            self.buffer = np.empty(n, np.float32)
        return self.buffer[:n]

    def clear(self) -> None:
        self.buffer = None


_SCRATCH = _Scratch()
"""For the cosines' elements (``_kept``)."""

_HOT = _Scratch()
"""For one expert's float32 matrix: a group kept as bfloat16 codes decodes each expert into
it (reused, it stays in cache; decoding into the kept group instead wrote 117 MB of fresh
memory a Mixtral-shaped group)."""


def _kept(experts: int, size: int, step: int) -> np.ndarray:
    """This thread's buffer for the cosines' elements, as [experts, elements kept]."""
    m = len(range(0, size, step))
    return _SCRATCH.get(experts * m).reshape(experts, m)


def _read_into(reader: Any, s: Any, out: np.ndarray
               ) -> tuple[np.ndarray, StatsPass | None, np.ndarray | None]:
    """An expert's matrix (as ``structure.expert_matrix``) in ``out`` (float32 [rows, cols],
    C-contiguous): a stored BF16 block is decoded straight into it (no fresh buffer, no copy:
    measured 9 % of a Mixtral-shaped group's time), with its ``stats_pass`` made in the same
    pass (measured 3584 x 1024: 1.3 ms against 2.1 ms in three passes), and its codes are
    returned too (C-contiguous; resident until the reader's next ``release``); anything else is
    read and copied (no pass made, no codes: None). A matrix of another shape is returned as
    read (the caller names the error)."""
    from ..kernels.moe import decode_stats_pass
    from .structure import expert_matrix

    if s.expert_axis_index is None and s.col_step == 1 and not s.transpose \
            and reader.info(s.tensor).dtype == "BF16":
        codes = reader.read_codes(s.tensor, s.rows[0], s.rows[1], s.cols[0], s.cols[1])
        if codes is not None and codes.shape == out.shape:
            codes = np.ascontiguousarray(codes)
            return out, decode_stats_pass(codes, out), codes
    w: np.ndarray = expert_matrix(reader, s)
    if w.shape != out.shape:
        return w, None, None
    np.copyto(out, w)
    return out, None, None


def _read_expert(reader: Any, task: GroupTask, e: int, into: np.ndarray | None
                 ) -> tuple[np.ndarray, StatsPass | None, np.ndarray | None]:
    """Expert ``e``'s float32 matrix (C-contiguous), decoded into ``into`` where given and
    possible (``_read_into``), its ``stats_pass`` and bfloat16 codes where the decoding made
    them (else None); a matrix of another shape or type is one clear error. The caller
    releases the reader's pages (``reader.release()``) once done with the codes."""
    from .structure import expert_matrix

    s = task.slices[e]
    sums = codes = None
    if into is not None:
        w, sums, codes = _read_into(reader, s, into)
    else:
        w = expert_matrix(reader, s)
    shape = _shape(reader, task.slices[0])
    if w.shape != shape or w.dtype != np.float32:
        reader.release()
        raise InputError(f"tensor {s.tensor!r}: expert {e} of layer {task.layer} ({task.role}) "
                         f"is {w.dtype} {w.shape}, expected float32 {shape}")
    return np.ascontiguousarray(w), sums, codes


def group_task(reader: Any, task: GroupTask) -> GroupResult:
    """Everything of one (layer, role), each expert read once or twice (module docstring).
    Runs in any process: ``reader`` is that process's.

    Cosines come from the dot products of what was kept of the experts (``pair_dots``:
    float32 sums over blocks of 8192 elements, float64 across them): the whole matrices when
    the group fits in ``memory`` — as bfloat16 codes when every expert's values are bfloat16,
    whatever their storage (a stored BF16 expert's codes are the reader's, not a copy), else
    as float32 — or else every s-th element (``cosine_step``), the same elements of every
    expert. An expert that is an exact copy of an earlier one (the same statistics, the same
    kept elements — all of them when the group fits — and the same sketches or Gram) gets
    that expert's rows and columns of every pair matrix, so it scores exactly 1.

    The row sample (``sampled``) needs every expert's sums before it knows the heavy
    coordinates: a group kept whole computes each expert's Gram rows at the drawn coordinates
    while it reads the expert (``raw_rows``), and its second pass reads an expert again only
    for the heavy coordinates' rows (``finish_rows``); a group not kept whole reads each expert
    again and keeps its cosine elements then, at the stride that ``memory`` leaves beside the
    rows the plan actually has (not the most it could have: an outlier-free DeepSeek-V3 layer
    keeps every 38th element, not every 252nd)."""
    from ..kernels.moe import bf16_codes, decode_stats_pass, pair_dots, stats_pass

    opts = task.options
    e_count = len(task.slices)
    rows, cols = _shape(reader, task.slices[0])
    size = rows * cols
    sr_opts = StableRankOptions(opts.stable_rank_tol, opts.stable_rank_max_iter, opts.seed)
    stats = np.full((e_count, len(STATS)), np.nan)
    dead = np.zeros(e_count, bool)
    same = list(range(e_count))
    fingerprints: list[tuple[float, ...]] = []
    """per expert: its first four statistics (equal bytes, equal statistics)"""
    reps: list[tuple[Any, ...]] = []
    """per expert: its CKA representation (two sketches, or the Gram; rows: its sums first,
    its Gram rows once every expert's sums have chosen them)"""
    n = cols if task.role in ("gate", "up", "gate_up") else rows
    p = rows + cols - n
    seed = (opts.seed, task.layer, ROLE_INDEX.get(task.role, 9))
    sketch = None
    by_rows = task.mode == "sketch" and opts.cka_sketch == "rows"
    if task.mode == "sketch" and opts.cka_sketch != "rows":
        sketch = FeatureSketch(p, opts.sketch_size(e_count, n, p), seed, opts.cka_sketch,
                               opts.cka_heavy)
    step = cosine_step(e_count, size, opts.memory, rep_bytes(task, (rows, cols)))
    whole = step == 1
    later = by_rows and not whole
    """the group is not kept whole: the row sample's second pass reads each expert again, and
    keeps its cosine elements then, at the stride the plan's actual rows leave room for"""
    kept: Any = (np.empty((e_count, 0), np.float32) if later or whole
                 else _kept(e_count, size, step))
    """what the cosines use: [e] = expert e's every step-th element (not whole), or the list
    of its bfloat16 codes (whole, every expert so far a bfloat16 matrix), or float32 [E, size]
    (whole)"""
    codes_kept: list[np.ndarray] | None = [] if whole else None
    m = opts.sketch_size(e_count, n, p)
    drawn = draw_sample(n, m, seed) if by_rows and whole else None
    stacked = (np.empty((e_count, max(drawn.size, row_count(task, (rows, cols))), n), np.float32)
               if drawn is not None else None)
    """the Gram rows at the drawn coordinates, made in the first pass (a group kept whole),
    with room for the heavy coordinates' rows (as many rows as ``rep_bytes`` counts)"""
    steps = 0
    w: np.ndarray | None
    for e in range(e_count):
        into = (_HOT.get(size) if codes_kept is not None else kept[e]) if whole else None
        w, sums, codes = _read_expert(reader, task, e,
                                      into.reshape(rows, cols) if into is not None else None)
        if sums is None:
            sums = stats_pass(w)
        if codes is None and sums.bf16 and codes_kept is not None:
            codes = bf16_codes(w)  # (a bfloat16 matrix is kept as codes whatever its storage)
        # what reads w's float32 values first, while the pass left them in cache (the stable
        # rank's passes may read its codes instead)
        if by_rows:
            mo = row_moments(w, task.role, sums)
            reps.append((mo,))
            if stacked is not None and drawn is not None:
                raw_rows(w, task.role, mo, drawn, stacked[e, :drawn.size])
        elif sketch is not None:
            reps.append(tuple(sketch.apply(w, task.role)))
        else:
            x = features(w, task.role).astype(np.float64)
            reps.append((x @ x.T,))
        if codes_kept is not None and codes is not None:
            codes_kept.append(codes)
        elif whole:
            if codes_kept is not None:  # the first expert that is not bfloat16: all float32
                kept = _kept(e_count, size, 1)
                for e2, c in enumerate(codes_kept):
                    decode_stats_pass(c, kept[e2].reshape(rows, cols))
                codes_kept = None
            if not np.may_share_memory(w, kept[e]):
                np.copyto(kept[e], w.reshape(-1))
        elif not later:
            kept[e] = w.reshape(-1)[::step]
        st = expert_stats(w, sr_opts, sums, codes)
        del codes
        if codes_kept is None:  # (else the stored codes stay mapped until the pairs are made)
            reader.release()
        stats[e] = st.values()
        dead[e] = st.dead
        steps += st.iterations
        fingerprints.append(st.values()[:4])
        del w
    if codes_kept is not None:
        kept = codes_kept
    reads = e_count
    if by_rows:  # the second pass: every expert's Gram rows at the group's coordinates
        plan = plan_rows([r[0] for r in reps], m,
                         max(0, row_count(task, (rows, cols)) - m), seed)
        if stacked is None:
            stacked = np.empty((e_count, plan.rows, n), np.float32)
        if later:
            step = cosine_step(e_count, size, opts.memory,
                               stacked.nbytes + e_count * (3 * n + p) * 8)
            kept = _kept(e_count, size, step)
        for e in range(e_count):
            w = None
            if needs_matrix(plan, drawn):
                if not whole:
                    w = _read_expert(reader, task, e, None)[0]
                    reads += 1
                elif codes_kept is not None:
                    w = _HOT.get(size).reshape(rows, cols)
                    decode_stats_pass(codes_kept[e], w)
                else:
                    w = kept[e].reshape(rows, cols)
            raw = stacked[e, :drawn.size] if drawn is not None else None
            reps[e] = tuple(finish_rows(raw, drawn, w, task.role, reps[e][0], plan,
                                        out=stacked[e, :plan.rows]))
            if later:
                assert w is not None  # (read: drawn is None)
                kept[e] = w.reshape(-1)[::step]
                reader.release()
            del w
        if stacked.shape[1] != plan.rows:  # (one product of the plan's rows: the same bits as
            stacked = np.ascontiguousarray(stacked[:, :plan.rows])  # a group read twice)
    for e in range(e_count):  # an exact copy of an earlier expert?
        for e2 in range(e):
            if same[e2] == e2 and fingerprints[e2] == fingerprints[e] \
                    and np.array_equal(kept[e2], kept[e]) \
                    and all(np.array_equal(a, b) for a, b in zip(reps[e2], reps[e],
                                                                 strict=True)):
                same[e] = e2
                break
    dots = pair_dots(kept)  # (one pass over what was kept)
    if codes_kept is not None:
        del kept, codes_kept
        reader.release()
    if n < 4:  # the unbiased HSIC needs four examples
        cka = np.full((e_count, e_count), np.nan)
    elif by_rows:
        cka = sampled_cka([RowRep(*r) for r in reps], same, stacked)
    elif sketch is not None:
        cka = sketched_cka([ExpertSketch(*r) for r in reps], same)
    else:
        cka = cka_exact([r[0] for r in reps], same)
    return GroupResult(task.layer, task.role, stats, dead, cka,
                       cosine_from_dots(canonical(dots, same)), task.mode, reads, steps,
                       step)


def moe_numbers(reader: Any, spec: Any, structure: Any, opts: MoEOptions, executor: Executor,
                tick: Callable[[], None] | None = None,
                on_layer: Callable[[MoENumbers], None] | None = None,
                keep_similarity: bool = True) -> MoENumbers:
    """All the MoE numbers of a checkpoint: the groups on ``executor`` (tasks in any order,
    merged by layer and role), the routers here (tiny). ``on_layer``: called once per MoE
    layer with that layer's numbers (one row; no router numbers) as soon as its groups are
    done (layers without groups at the end). Without ``keep_similarity`` the E x E matrices
    are dropped after that call: the result's ``similarity`` then holds read-only NaN
    placeholders of their shapes (their numbers went to ``on_layer``; DeepSeek-V3's would be
    182 MB)."""
    if on_layer is not None:
        on_layer = functools.partial(_with_estimator, on_layer, opts.cka_sketch)
    tasks = plan_groups(structure, reader, opts)
    procs = task_processes(tasks, [_shape(reader, t.slices[0]) for t in tasks],
                           executor.workers, opts.memory)
    layers = tuple(structure.moe_layers)
    roles = tuple(r for r in structure.roles if any(t.role == r for t in tasks))
    e_count = int(structure.experts)
    k = _sketch_size(reader, tasks, opts)
    waiting = Counter(t.layer for t in tasks)
    results: dict[tuple[int, str], GroupResult] = {}
    for res in executor.map_unordered(group_task, spec, tasks, reader=reader, processes=procs):
        results[(res.layer, res.role)] = res
        if tick is not None:
            tick()
        waiting[res.layer] -= 1
        if waiting[res.layer] == 0:
            _layer_done(res.layer, roles, e_count, k, results, on_layer, keep_similarity)
    _SCRATCH.clear()  # (tasks run here by an inline executor: their buffers are not needed now)
    _HOT.clear()
    for layer in layers:
        if layer not in waiting:  # (no groups)
            _layer_done(layer, roles, e_count, k, results, on_layer, keep_similarity)
    numbers = _merge(layers, roles, e_count, k, results)._replace(estimator=opts.cka_sketch)
    row_norm, bias = _router_numbers(reader, structure, layers, e_count)
    return numbers._replace(row_norm=row_norm, bias=bias)


def _with_estimator(report: Callable[[MoENumbers], None], estimator: str,
                    part: MoENumbers) -> None:
    report(part._replace(estimator=estimator))


def _layer_done(layer: int, roles: tuple[str, ...], e_count: int, k: int,
                results: dict[tuple[int, str], GroupResult],
                on_layer: Callable[[MoENumbers], None] | None, keep: bool) -> None:
    if on_layer is not None:
        on_layer(_merge((layer,), roles, e_count, k, results))
    if not keep:
        for r in roles:
            got = results.get((layer, r))
            if got is not None:
                results[(layer, r)] = got._replace(
                    cka=np.broadcast_to(np.float64(np.nan), got.cka.shape),
                    cosine=np.broadcast_to(np.float64(np.nan), got.cosine.shape))


def _merge(layers: tuple[int, ...], roles: tuple[str, ...], e_count: int, k: int,
           results: Mapping[tuple[int, str], GroupResult]) -> MoENumbers:
    """The numbers of ``layers`` (rows) from the groups' results; no router numbers (NaN)."""
    stats = {s: {r: np.full((len(layers), e_count), np.nan) for r in roles} for s in STATS}
    dead = {r: np.zeros((len(layers), e_count), bool) for r in roles}
    sim: dict[str, dict[str, dict[int, np.ndarray]]] = {"cka": {r: {} for r in roles},
                                                        "cosine": {r: {} for r in roles}}
    modes: dict[str, dict[int, str]] = {r: {} for r in roles}
    cosine_steps: dict[str, dict[int, int]] = {r: {} for r in roles}
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
            cosine_steps[r][layer] = got.cosine_step
            reads += got.reads
            steps += got.lanczos_steps
    return MoENumbers(layers, roles, e_count, stats, dead, sim, modes, cosine_steps,
                      np.full((len(layers), e_count), np.nan), None, reads, steps, k)


def _sketch_size(reader: Any, tasks: Sequence[GroupTask], opts: MoEOptions) -> int:
    """The largest k of the tasks' sketches (they share H and I in every model known)."""
    ks = []
    for t in tasks:
        rows, cols = _shape(reader, t.slices[0])
        n, p = (cols, rows) if t.role in ("gate", "up", "gate_up") else (rows, cols)
        ks.append(opts.sketch_size(len(t.slices), n, p))
    return max(ks, default=opts.sketch_size(1))


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
