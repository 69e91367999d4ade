"""Value pass: each tensor's colour scale from a deterministic sample, and the statistics record.

The scale s of a tensor is the 99.9th percentile of |v| over the finite elements of its sample:
linear interpolation between the order statistics at (n-1)*0.999, as numpy.quantile does, in
float64 (16-bit tensors get the same order statistics from a histogram of their codes); if that
is 0, the sample's max |v|; if that is 0 or the sample has no finite value, 1.0. The sample is the
whole tensor up to SAMPLE_LIMIT elements, otherwise SAMPLE_RUNS evenly spaced runs of consecutive
elements (row-major in the 2-D view) totalling SAMPLE_LIMIT. ``--scale global`` uses one s for
all tensors: the 99.9th percentile of the union of the samples (each thinned to every k-th
element, at most 2^16), each sample element weighted by numel/len(sample) of its tensor.

Statistics (min, max, mean, std, rms, zero fraction, NaN/Inf counts) cover every element; they
are accumulated by the leaf-tile kernels, which visit each element exactly once, so the data is
streamed once for tiles and stats together.

Over the ~450-line guide (~505 lines): the scale rule, its sample, the statistics record and
the helper that computes scales ahead of the workers all rest on the one sample definition.
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .formats.base import Reader
from .formats.dtypes import CODE_DTYPES, code_values
from .scale_global import (
    GLOBAL_SAMPLE_LIMIT,
    QUANTILE,
    GlobalSample,
    global_sample,
    global_scale,
    thin,
)
from .types import TensorInfo, TensorStats

if TYPE_CHECKING:
    from .executors import Executor

__all__ = ["SAMPLE_LIMIT", "SAMPLE_RUNS", "QUANTILE", "sample", "robust_scale", "global_scale",
           "stats_from_acc", "thin", "GLOBAL_SAMPLE_LIMIT", "GlobalSample", "global_sample",
           "tensor_scales", "sample_rms",
           "SharedScales", "start_scale_helper", "numpy_code_counts",
           "tensor_scale"]

SAMPLE_LIMIT = 1 << 20
SAMPLE_RUNS = 64


def _flat_range(reader: Reader, t: TensorInfo, start: int, count: int) -> np.ndarray:
    cols = t.e_cols
    r0, c0 = divmod(start, cols)
    if c0 + count <= cols:
        return reader.read(t.name, r0, r0 + 1, c0, c0 + count).reshape(-1)
    r1 = -(-(start + count) // cols)
    block = reader.read(t.name, r0, r1).reshape(-1)
    return block[c0:c0 + count]


def _flat_codes(reader: Reader, t: TensorInfo, start: int, count: int) -> np.ndarray | None:
    cols = t.e_cols
    r0, c0 = divmod(start, cols)
    if c0 + count <= cols:
        block = reader.read_codes(t.name, r0, r0 + 1, c0, c0 + count)
        return None if block is None else block.reshape(-1)
    r1 = -(-(start + count) // cols)
    block = reader.read_codes(t.name, r0, r1)
    return None if block is None else block.reshape(-1)[c0:c0 + count]


def sample_codes(reader: Reader, t: TensorInfo) -> np.ndarray | None:
    """The same sample as ``sample``, as raw 16-bit codes (BF16/F16 tensors), or None."""
    n = t.numel
    if n == 0 or t.dtype not in CODE_DTYPES:
        return None
    if n <= SAMPLE_LIMIT:
        block = reader.read_codes(t.name, 0, t.e_rows)
        return None if block is None else block.reshape(-1)
    per = SAMPLE_LIMIT // SAMPLE_RUNS
    starts = [(i * (n - per)) // (SAMPLE_RUNS - 1) for i in range(SAMPLE_RUNS)]
    whole = reader.read_codes(t.name, 0, t.e_rows)
    if whole is None:
        return None
    if whole.flags.c_contiguous:  # a view of the mapped file: slice the runs out of it
        flat = whole.reshape(-1)
        return np.concatenate([flat[s:s + per] for s in starts])
    parts = [_flat_codes(reader, t, s, per) for s in starts]
    return np.concatenate(parts)  # type: ignore[arg-type]


def _quantile_sorted(lo: float, hi: float, frac: float) -> float:
    """numpy's linear interpolation between two order statistics, in float64."""
    return lo + frac * (hi - lo)


def code_counts(codes: np.ndarray, magnitude: bool = False) -> np.ndarray:
    """``kernels.code_counts`` (compiled; loaded on first use, see tiling)."""
    from .kernels import code_counts as compiled

    return compiled(codes, magnitude)


def numpy_code_counts(codes: np.ndarray, magnitude: bool = False) -> np.ndarray:
    """``kernels.code_counts`` with numpy alone (the same counts; for a process that has not
    loaded the compiled kernels, see ``start_scale_helper``)."""
    return np.bincount(codes & np.uint16(0x7FFF if magnitude else 0xFFFF),
                       minlength=1 << (15 if magnitude else 16)).astype(np.int64, copy=False)


_VALUES64: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def _values64(dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """The float64 value of every 16-bit code of a dtype and which are finite; built once."""
    got = _VALUES64.get(dtype)
    if got is None:
        with np.errstate(invalid="ignore"):
            v = code_values(dtype).astype(np.float64)
        got = _VALUES64[dtype] = (v, np.isfinite(v))
    return got


def codes_rms(codes: np.ndarray, dtype: str) -> float:
    """``sample_rms`` of a 16-bit sample, from its code histogram (for a sample smaller than
    ``SORT_BELOW``, from its distinct codes: the same terms in the same ascending code order, so
    the same sum, without a 65,536-bin pass per tensor)."""
    v, finite = _values64(dtype)
    if codes.size < SORT_BELOW:
        present, counts = np.unique(codes.reshape(-1), return_counts=True)
        keep = finite[present]
        present, counts = present[keep], counts[keep]
        n = int(counts.sum())
        vals = v[present]
        return float(np.sqrt((counts * vals * vals).sum() / n)) if n else 0.0
    hist = code_counts(codes)
    fin = finite & (hist > 0)
    n = int(hist[fin].sum())
    return float(np.sqrt((hist[fin] * v[fin] * v[fin]).sum() / n)) if n else 0.0


_MAGNITUDES: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}

SORT_BELOW = 1 << 13
"""Samples of fewer 16-bit codes than this take their order statistics from a sort of the codes
(cost ~ the sample) instead of a 32,768-bin histogram (cost ~ 32,768 per tensor, which dominated
checkpoints of many tiny tensors); both give the same two order statistics, hence the same
scale."""


def _magnitudes(dtype: str) -> tuple[np.ndarray, np.ndarray, int]:
    """|value| (float64) of each magnitude code 0..0x7FFF of a 16-bit dtype, which are finite,
    and the first non-finite code (the finite codes are exactly those below it: the all-ones
    exponent of BF16 and F16); built once per dtype."""
    got = _MAGNITUDES.get(dtype)
    if got is None:
        with np.errstate(invalid="ignore"):  # signalling-NaN codes are quieted by the cast
            table = np.abs(code_values(dtype)[: 1 << 15].astype(np.float64))
        finite = np.isfinite(table)
        first_bad = int(np.argmin(finite)) if not finite.all() else 1 << 15
        assert finite[:first_bad].all() and not finite[first_bad:].any()
        got = _MAGNITUDES[dtype] = (table, finite, first_bad)
    return got


def _robust_scale_sorted(codes: np.ndarray, table: np.ndarray, first_bad: int) -> float:
    """``robust_scale_codes`` of a small sample: the order statistics from sorted codes."""
    mags = codes.reshape(-1) & np.uint16(0x7FFF)  # a new array: sorted in place
    mags.sort()
    n = int(np.searchsorted(mags, first_bad))  # the finite ones come first
    if n == 0:
        return 1.0
    h = (n - 1) * QUANTILE
    k = int(math.floor(h))
    v_lo = float(table[mags[k]])
    v_hi = float(table[mags[min(k + 1, n - 1)]])
    s = _quantile_sorted(v_lo, v_hi, h - k)
    if s > 0 and math.isfinite(s):
        return s
    m = float(table[mags[n - 1]])
    return m if m > 0 else 1.0


def robust_scale_codes(codes: np.ndarray, dtype: str,
                       counter: Callable[..., np.ndarray] = code_counts) -> float:
    """``robust_scale`` of a 16-bit sample from a histogram of its magnitude codes: for BF16 and
    F16 the order of |v| is the order of ``code & 0x7FFF`` (sign bit cleared), so the order
    statistics, and the percentile, come out of a 32,768-bin count without sorting (or, for a
    sample smaller than ``SORT_BELOW``, of a sort of its codes)."""
    table, finite, first_bad = _magnitudes(dtype)
    if codes.size < SORT_BELOW:
        return _robust_scale_sorted(codes, table, first_bad)
    counts = counter(codes, magnitude=True)
    counts = np.where(finite, counts, 0)
    n = int(counts.sum())
    if n == 0:
        return 1.0
    cum = np.cumsum(counts)
    h = (n - 1) * QUANTILE
    k = int(math.floor(h))
    v_lo = float(table[np.searchsorted(cum, k + 1)])
    v_hi = float(table[np.searchsorted(cum, min(k + 2, n))])
    s = _quantile_sorted(v_lo, v_hi, h - k)
    if s > 0 and math.isfinite(s):
        return s
    m = float(table[np.flatnonzero(counts)[-1]])
    return m if m > 0 else 1.0


def sample(reader: Reader, t: TensorInfo) -> np.ndarray:
    """The deterministic float32 sample of a tensor defined in the module docstring."""
    n = t.numel
    if n == 0:
        return np.zeros(0, np.float32)
    if n <= SAMPLE_LIMIT:
        return reader.read(t.name, 0, t.e_rows).reshape(-1)
    per = SAMPLE_LIMIT // SAMPLE_RUNS
    parts = [_flat_range(reader, t, (i * (n - per)) // (SAMPLE_RUNS - 1), per)
             for i in range(SAMPLE_RUNS)]
    return np.concatenate(parts)


def robust_scale(values: np.ndarray) -> float:
    a = np.abs(values[np.isfinite(values)])
    if a.size == 0:
        return 1.0
    h = (a.size - 1) * QUANTILE
    k = int(math.floor(h))
    part = np.partition(a, [k, min(k + 1, a.size - 1)])
    s = _quantile_sorted(float(part[k]), float(part[min(k + 1, a.size - 1)]), h - k)
    if s > 0 and math.isfinite(s):
        return s
    m = float(a.max())
    return m if m > 0 else 1.0


class ScaleTask(NamedTuple):
    """Scale of one tensor (and its thinned sample for --scale global), computed in a worker."""

    name: str
    keep_sample: bool
    want_rms: bool = False


def sample_rms(values: np.ndarray) -> float:
    """RMS of the finite values of a sample (0 when there are none)."""
    fin = values[np.isfinite(values)].astype(np.float64)
    return float(np.sqrt(np.mean(fin * fin))) if fin.size else 0.0


_ScaleResult = tuple[str, float, float, "GlobalSample | None"]


def _scale_of(reader: Reader, task: ScaleTask,
              counter: Callable[..., np.ndarray] = code_counts) -> _ScaleResult:
    t = reader.info(task.name)
    if not task.keep_sample:
        codes = sample_codes(reader, t)
        if codes is not None:  # 16-bit: percentile from a code histogram, no decode, no sort
            reader.release()
            rms = codes_rms(codes, t.dtype) if task.want_rms else 0.0
            return task.name, robust_scale_codes(codes, t.dtype, counter), rms, None
    smp = sample(reader, t)
    reader.release()
    rms = sample_rms(smp) if task.want_rms else 0.0
    kept = global_sample(thin(smp), t.numel) if task.keep_sample else None
    return task.name, robust_scale(smp), rms, kept


def tensor_scale(reader: Reader, name: str,
                 counter: Callable[..., np.ndarray] = code_counts) -> float:
    """The per-tensor scale of one tensor (what ``tensor_scales`` computes for it)."""
    return _scale_of(reader, ScaleTask(name, False), counter)[1]


class SharedScales:
    """Per-tensor scales in memory shared with processes forked after it was made: NaN until
    computed. A scale is finite and > 0 and is written with one aligned 8-byte store, so a
    reader sees NaN or the value, never a torn one. Pickled (non-fork start), it is a copy."""

    def __init__(self, names: Sequence[str]) -> None:
        self.index = {n: i for i, n in enumerate(names)}
        self._mem: mmap.mmap | None = mmap.mmap(-1, 8 * max(1, len(names)))
        self.values = np.frombuffer(self._mem, np.float64, count=len(names))
        self.values[:] = np.nan

    def get(self, name: str) -> float | None:
        i = self.index.get(name)
        v = float(self.values[i]) if i is not None else math.nan
        return v if v == v else None

    def put(self, name: str, value: float) -> None:
        self.values[self.index[name]] = value

    def known(self) -> dict[str, float]:
        """``{name: get(name)}`` of the names whose scale is computed, in the table's order
        (one read of the table: 45k names, ~5 ms instead of ~25)."""
        values = self.values.tolist()
        return {n: v for n, i in self.index.items() if (v := values[i]) == v}

    def __getstate__(self) -> dict[str, Any]:
        return {"index": self.index, "values": self.values.copy()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.index, self.values, self._mem = state["index"], state["values"], None


def _fill_scales(spec: Any, names: Sequence[str], table: SharedScales, parent: int,
                 small_only: bool = False) -> None:
    from .interrupts import become_helper

    become_helper(parent)  # signals are the main process's to handle; dies with it
    try:
        reader = spec.open()
        try:
            for i in range(0, len(names), SMALL_GROUP):
                chunk = [n for n in names[i:i + SMALL_GROUP] if table.get(n) is None]
                small = small_scales(reader, chunk)
                for name in chunk:
                    got = small.get(name)
                    if got is None and not small_only:
                        got = tensor_scale(reader, name, numpy_code_counts)
                    if got is not None:
                        table.put(name, got)
        finally:
            reader.close()
    except Exception:  # noqa: BLE001 - a scale left out is computed where it is needed,
        return         # which reports any error with the file and tensor


def start_scale_helper(spec: Any, names: Sequence[str], table: SharedScales,
                       small_only: bool = False) -> Any:
    """Fill ``table`` with the per-tensor scales of ``names`` (in that order) in a forked
    process that uses numpy only, so it can run while this process is still loading the
    compiled kernels (~0.2 s at start-up with a core idle, measured). ``small_only``: only
    those ``small_scales`` computes (the others are left out). Returns the process (``join``
    it), or None where processes cannot be forked. Whoever needs a scale the helper has not
    written yet computes it itself (the same deterministic function)."""
    import multiprocessing as mp
    import os

    if "fork" not in mp.get_all_start_methods():
        return None
    p = mp.get_context("fork").Process(target=_fill_scales,
                                       args=(spec, list(names), table, os.getpid(),
                                             small_only),
                                       name="weightvis-scales", daemon=True)
    from .interrupts import start_forked

    start_forked(p)
    return p


def _run_batch(reader: Reader, batch: list[ScaleTask]) -> list[_ScaleResult]:
    small = small_scales(reader, [t.name for t in batch if not (t.keep_sample or t.want_rms)])
    return [(t.name, small[t.name], 0.0, None) if t.name in small else _scale_of(reader, t)
            for t in batch]


SMALL_GROUP = 256
"""The scale helper takes its names this many at a time, for ``small_scales``."""


def small_scales(reader: Reader, names: Sequence[str]) -> dict[str, float]:
    """``tensor_scale`` of those ``names`` that are whole-tensor 16-bit samples sorted for
    their order statistics (``numel < SORT_BELOW``), computed together: tensors of one dtype
    and size are stacked and sorted row by row, and the percentile is taken with the same
    float64 operations as ``_robust_scale_sorted`` (so the same scale, bit for bit). A
    checkpoint of many tiny tensors (the experts of an MoE) spends its value pass here; one
    at a time, numpy's per-call overhead was most of it."""
    groups: dict[tuple[str, int], list[str]] = {}
    for name in names:
        t = reader.info(name)
        if t.dtype in CODE_DTYPES and 0 < t.numel < SORT_BELOW:
            groups.setdefault((t.dtype, t.numel), []).append(name)
    out: dict[str, float] = {}
    for (dtype, n), group in groups.items():
        rows = []
        for name in group:
            codes = reader.read_codes(name, 0, reader.info(name).e_rows)
            if codes is None:
                break
            rows.append(codes.reshape(-1))
        else:
            table, _, first_bad = _magnitudes(dtype)
            mags = np.stack(rows) & np.uint16(0x7FFF)
            mags.sort(axis=1)
            finite = (mags < first_bad).sum(axis=1)  # searchsorted: the finite ones first
            h = (finite - 1) * QUANTILE
            k = np.floor(h).astype(np.int64)
            at = np.arange(len(group))
            lo = table[mags[at, np.clip(k, 0, n - 1)]]
            hi = table[mags[at, np.clip(np.minimum(k + 1, finite - 1), 0, n - 1)]]
            with np.errstate(invalid="ignore", over="ignore"):
                s = lo + (h - k) * (hi - lo)  # _quantile_sorted, row by row
            top = table[mags[at, np.clip(finite - 1, 0, n - 1)]]
            for i, name in enumerate(group):
                if finite[i] == 0:
                    out[name] = 1.0
                elif s[i] > 0 and math.isfinite(s[i]):
                    out[name] = float(s[i])
                else:
                    out[name] = float(top[i]) if top[i] > 0 else 1.0
    reader.release()
    return out


BATCH_ELEMENTS = 1 << 20
"""Small tensors go to the value-pass workers in batches of about this many elements (at most
``BATCH_TENSORS``): one message per tensor cost more than the scale of a tiny tensor."""
BATCH_TENSORS = 256


def _batches(tasks: Sequence[ScaleTask], numel: Callable[[str], int]) -> list[list[ScaleTask]]:
    """``tasks`` (biggest first) cut into consecutive batches: a big tensor alone, small ones
    together."""
    out: list[list[ScaleTask]] = []
    cur: list[ScaleTask] = []
    cur_n = 0
    for t in tasks:
        n = numel(t.name)
        if cur and (cur_n + n > BATCH_ELEMENTS or len(cur) >= BATCH_TENSORS):
            out.append(cur)
            cur, cur_n = [], 0
        cur.append(t)
        cur_n += n
    if cur:
        out.append(cur)
    return out


def tensor_scales(reader: Reader, spec: Any, names: Sequence[str], *, executor: Executor,
                  keep_samples: bool = False, want_rms: bool = False,
                  tick: Callable[[], None] | None = None,
                  meanwhile: Callable[[], None] | None = None,
                  ) -> tuple[dict[str, float], dict[str, GlobalSample], dict[str, float]]:
    """Each tensor's robust scale, its ``GlobalSample`` (with ``keep_samples``) and its sample's
    RMS, by ``executor`` (its workers open ``spec`` themselves; in this process, ``reader``).
    ``meanwhile`` runs in this process while the workers compute."""
    tasks = [ScaleTask(n, keep_samples, want_rms) for n in names]
    scales: dict[str, float] = {}
    kept: dict[str, GlobalSample] = {}
    rms: dict[str, float] = {}
    # big tensors first, so no worker is left with one at the end; small ones in batches
    numel = {t.name: reader.info(t.name).numel for t in tasks}
    order = sorted(tasks, key=lambda t: -numel[t.name])
    batches = executor.map_unordered(_run_batch, spec, _batches(order, numel.__getitem__),
                                     reader=reader, meanwhile=meanwhile)
    for batch in batches:
        for name, s, r, smp in batch:
            scales[name] = s
            rms[name] = r
            if smp is not None:
                kept[name] = smp
            if tick is not None:
                tick()
    return scales, kept, rms


def stats_from_acc(acc: np.ndarray, numel: int, robust: float) -> TensorStats:
    from .kernels import ACC_SIZE

    assert acc.shape == (ACC_SIZE,)
    n, tot, tot2, lo, hi, zeros, nans, infs = (float(x) for x in acc)
    if n > 0:
        mean = tot / n
        var = max(tot2 / n - mean * mean, 0.0)
        std, rms = math.sqrt(var), math.sqrt(tot2 / n)
    else:
        mean = std = rms = lo = hi = math.nan
    return TensorStats(min=lo, max=hi, mean=mean, std=std, rms=rms,
                       zero_fraction=(zeros / numel) if numel else 0.0,
                       nan_count=int(nans), inf_count=int(infs), robust=robust)


def stats_json_many(accs: np.ndarray, numels: np.ndarray, robusts: np.ndarray
                    ) -> list[dict[str, float | int | None]]:
    """``stats_from_acc(acc, numel, robust).to_json()`` of many tensors at once (rows of
    ``accs``), vectorised: the same IEEE operations element by element, so the same numbers."""
    from .kernels import ACC_SIZE

    assert accs.ndim == 2 and accs.shape[1] == ACC_SIZE
    n, tot, tot2, lo, hi, zeros, nans, infs = (accs[:, i].copy() for i in range(ACC_SIZE))
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = tot / n
        std = np.sqrt(np.maximum(tot2 / n - mean * mean, 0.0))
        rms = np.sqrt(tot2 / n)
        numel = numels.astype(np.float64)
        zero_fraction = np.where(numel != 0, zeros / np.where(numel != 0, numel, 1.0), 0.0)
    empty = ~(n > 0)
    for col in (mean, std, rms, lo, hi):
        col[empty] = math.nan

    def nums(col: np.ndarray) -> list[float | None]:
        """The column's floats, None for each NaN or infinity (set by index: 45k tensors'
        columns are nearly all finite, and a test per value cost 0.01 s a column)."""
        out: list[float | None] = col.tolist()
        for i in np.flatnonzero(~np.isfinite(col)).tolist():
            out[i] = None
        return out

    def counts(col: np.ndarray) -> list[int]:  # (whole numbers below 2**53: exact)
        return col.astype(np.int64).tolist()  # type: ignore[no-any-return]

    cols = [nums(lo), nums(hi), nums(mean), nums(std), nums(rms), zero_fraction.tolist(),
            counts(nans), counts(infs), nums(np.asarray(robusts, np.float64))]
    # (a dict display, not dict(zip(keys, row)): 45k tensors, 0.02 s instead of 0.04)
    return [{"min": v_min, "max": v_max, "mean": v_mean, "std": v_std, "rms": v_rms,
             "zero_fraction": v_zero, "nan_count": v_nan, "inf_count": v_inf, "robust": v_robust}
            for v_min, v_max, v_mean, v_std, v_rms, v_zero, v_nan, v_inf, v_robust
            in zip(*cols, strict=True)]
