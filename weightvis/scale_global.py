"""``--scale global``: one colour scale for every tensor, the weighted 99.9th percentile of |v| over
the tensors' thinned samples (``values`` module docstring), computed without building their
union."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import NamedTuple

import numpy as np

__all__ = ["GLOBAL_SAMPLE_LIMIT", "thin", "GlobalSample", "global_sample", "global_scale"]

QUANTILE = 0.999
"""The percentile of every scale, per tensor (``values``) and global."""

GLOBAL_SAMPLE_LIMIT = 1 << 16


def thin(values: np.ndarray) -> np.ndarray:
    """Every k-th element of a sample, at most GLOBAL_SAMPLE_LIMIT of them (for --scale global,
    which must hold every tensor's sample at once)."""
    k = -(-values.size // GLOBAL_SAMPLE_LIMIT)
    return values[::k].copy() if k > 1 else values


class GlobalSample(NamedTuple):
    """One tensor's share of ``--scale global``: what ``global_scale`` needs of its thinned
    sample, made where the sample is read (a worker)."""

    magnitudes: np.ndarray
    """float32, ascending: |v| of the finite elements of the thinned sample."""
    weight: float
    """numel / len(thinned sample): how many of the tensor's elements each one stands for."""


def global_sample(thinned: np.ndarray, numel: int) -> GlobalSample:
    """``GlobalSample`` of a thinned sample (``thin(sample(...))``) of a tensor of ``numel``
    elements."""
    a = np.abs(thinned[np.isfinite(thinned)]).astype(np.float32)
    a.sort()
    return GlobalSample(a, numel / thinned.size if thinned.size else 0.0)


def global_scale(samples: Sequence[GlobalSample]) -> float:
    """Weighted 99.9th percentile of |v| over the tensors' samples (see module docstring): the
    smallest sample value x whose weight at or below x, W(x) = sum of weight x count(|v| <= x),
    reaches QUANTILE x W(inf). W is summed exactly (``Fraction``: the weights are floats, so
    their sums are exact binary fractions) and x found by bisection on float32 bit patterns
    (ascending for non-negative floats): ~31 steps of one ``searchsorted`` per tensor. Memory:
    the samples themselves (no union is built, sorted or summed; that took ~5x the time and
    ~4x the render's memory on a 135M-parameter checkpoint)."""
    parts = [(g.magnitudes, Fraction(g.weight)) for g in samples if g.magnitudes.size]
    if not parts:
        return 1.0
    target = Fraction(QUANTILE) * sum((w * a.size for a, w in parts), Fraction(0))

    def weight_upto(bits: int) -> Fraction:
        x = np.array(bits, np.uint32).view(np.float32)
        return sum((w * int(np.searchsorted(a, x, side="right")) for a, w in parts),
                   Fraction(0))

    top = max(float(a[-1]) for a, _ in parts)
    lo, hi = 0, int(np.array(top, np.float32).view(np.uint32))  # weight_upto(hi) = total
    while lo < hi:
        mid = (lo + hi) // 2
        if weight_upto(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    s = float(np.array(lo, np.uint32).view(np.float32))
    if s > 0:
        return s
    return top if top > 0 else 1.0
