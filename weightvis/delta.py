"""Diffs: pairing two checkpoints' tensors and the diff reader (B - A). What the numbers say is
diff_analysis.py; the scenes of a diff are diff_plan.py.

Pairing (every tensor of A and of B ends in exactly one pair):
1. exact: the same name in A and B;
2. name map: the same canonical name (index.py: GGUF names mapped to their HF spelling);
3. prefix: the same canonical name once wrapper prefixes (``module.``, ``_orig_mod.``,
   ``base_model.model.``, ``model.``, ``transformer.``: index.WRAPPERS) are stripped from both,
   when that leaves one candidate on each side.
Names are parsed by the name index (weightvis.index): canonical names, the Q/K role.
Status: identical (same view, every element equal; NaN equals NaN), changed, shape-changed
(different 2-D views: the overlapping part is compared), only-in-a, only-in-b.

When one side is a llama-family GGUF and a paired tensor is Q or K of attention, llama.cpp's
converter permuted its rows for its RoPE layout; the GGUF side is read with the permutation
undone: ``w.reshape(n_head, 2, d // n_head // 2, -1).swapaxes(1, 2).reshape(w.shape)`` (n_head
for Q, n_head_kv for K) when that makes the pair closer on a sample of rows (checked per tensor,
so a GGUF written without the permutation is read as is).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .formats import MultiReader, open_checkpoint
from .formats.base import Reader
from .index import NameIndex, strip_wrappers
from .types import TensorInfo

__all__ = ["Pair", "pair_tensors", "pair_index", "DiffReader", "DiffSpec", "SideReader",
           "STATUSES", "unpermute_rows"]

STATUSES = ("identical", "changed", "shape-changed", "only-in-a", "only-in-b")
_LLAMA_FAMILY = {"llama", "mistral", "granite", "granitemoe", "deci", "llama4", "mistral3"}


class Pair(NamedTuple):
    """A tensor of A and/or B, drawn under ``name``."""

    name: str
    a: TensorInfo | None
    b: TensorInfo | None
    paired_by: str | None
    """``exact``, ``name-map``, ``prefix``; None for one-sided pairs."""
    transform: str | None = None
    """``unpermute-q`` / ``unpermute-k`` (applied to the GGUF side), or None."""
    heads: int = 0
    gguf_side: str | None = None

    @property
    def view_a(self) -> tuple[int, int] | None:
        return None if self.a is None else (self.a.e_rows, self.a.e_cols)

    @property
    def view_b(self) -> tuple[int, int] | None:
        return None if self.b is None else (self.b.e_rows, self.b.e_cols)

    @property
    def shape_status(self) -> str:
        if self.a is None:
            return "only-in-b"
        if self.b is None:
            return "only-in-a"
        return "same" if self.view_a == self.view_b else "shape-changed"

    @property
    def view(self) -> tuple[int, int]:
        """The drawn area: both views' union."""
        va, vb = self.view_a or (0, 0), self.view_b or (0, 0)
        return (max(va[0], vb[0]), max(va[1], vb[1]))

    @property
    def overlap(self) -> tuple[int, int]:
        va, vb = self.view_a or (0, 0), self.view_b or (0, 0)
        return (min(va[0], vb[0]), min(va[1], vb[1]))


def _gguf_heads(reader: MultiReader) -> tuple[int, int]:
    for meta in reader.metadata.values():
        if not isinstance(meta, dict):
            continue
        arch = meta.get("general.architecture")
        h = meta.get(f"{arch}.attention.head_count")
        kv = meta.get(f"{arch}.attention.head_count_kv", h)
        if isinstance(h, int) and h > 0:
            return h, kv if isinstance(kv, int) and kv > 0 else h
    return 0, 0


def pair_tensors(a: MultiReader, b: MultiReader) -> list[Pair]:
    """Pair every tensor of A with its counterpart in B (module docstring); B's order first,
    then what only A has, in A's order."""
    ta, tb = list(a.tensors()), list(b.tensors())
    ia = NameIndex([t.name for t in ta], gguf_arch=a.gguf_architecture())
    ib = NameIndex([t.name for t in tb], gguf_arch=b.gguf_architecture())
    a_by = {t.name: t for t in ta}
    matched: dict[str, tuple[str, str]] = {}  # b name -> (a name, how)
    free_a = dict(a_by)
    for t in tb:
        if t.name in free_a:
            matched[t.name] = (t.name, "exact")
            del free_a[t.name]
    def by_canon_a(n: str) -> str:
        return ia[n].canonical

    def by_canon_b(n: str) -> str:
        return ib[n].canonical

    def stripped_a(n: str) -> str:
        return strip_wrappers(ia[n].canonical)

    def stripped_b(n: str) -> str:
        return strip_wrappers(ib[n].canonical)

    keys: list[tuple[str, Callable[[str], str], Callable[[str], str]]] = [
        ("name-map", by_canon_a, by_canon_b), ("prefix", stripped_a, stripped_b)]
    for how, key_a, key_b in keys:
        index: dict[str, list[str]] = {}
        for n in free_a:
            index.setdefault(key_a(n), []).append(n)
        unmatched_b = [t.name for t in tb if t.name not in matched]
        counts: dict[str, int] = {}
        for n in unmatched_b:
            counts[key_b(n)] = counts.get(key_b(n), 0) + 1
        for n in unmatched_b:
            k = key_b(n)
            cands = index.get(k, [])
            if len(cands) == 1 and counts[k] == 1:
                matched[n] = (cands[0], how)
                del free_a[cands[0]]
                index[k] = []
    a_fmt = {t.name: t.file for t in ta}
    gguf_a = a.format == "gguf" and (a.gguf_architecture() or "") in _LLAMA_FAMILY
    gguf_b = b.format == "gguf" and (b.gguf_architecture() or "") in _LLAMA_FAMILY
    heads_a, heads_b = _gguf_heads(a), _gguf_heads(b)
    pairs: list[Pair] = []
    for t in tb:
        if t.name in matched:
            an, how = matched[t.name]
            transform, heads, side = None, 0, None
            if gguf_a != gguf_b:  # exactly one side is a llama-family GGUF
                role = ib[t.name].qk_role
                if role is not None:
                    hq, hkv = heads_a if gguf_a else heads_b
                    heads = hq if role == "q" else hkv
                    if heads > 0:
                        transform, side = f"unpermute-{role}", "a" if gguf_a else "b"
            pairs.append(Pair(t.name, a_by[an], t, how, transform, heads, side))
        else:
            pairs.append(Pair(t.name, None, t, None))
    taken = {p.name for p in pairs}
    for n, t in free_a.items():
        name = n if n not in taken else f"{n} (A)"
        pairs.append(Pair(name, t, None, None))
    del a_fmt
    return pairs


def pair_index(reader: DiffReader) -> NameIndex:
    """The name index of a diff's pairs (by pair name): each pair under the canonical name of
    its tensor in B, or in A when only A has it; kinds and slots as the layout sees them."""
    ia = NameIndex([t.name for t in reader.a.tensors()], gguf_arch=reader.a.gguf_architecture())
    ib = NameIndex([t.name for t in reader.b.tensors()], gguf_arch=reader.b.gguf_architecture())
    canonical = {p.name: ib[p.b.name].canonical if p.b is not None
                 else ia[p.a.name].canonical  # type: ignore[union-attr]
                 for p in reader.pairs}
    return NameIndex(canonical, canonical=canonical)


def unpermute_rows(rows: int, heads: int) -> np.ndarray:
    """perm such that hf_rows = gguf_rows[perm] (undoes llama.cpp's RoPE row permutation)."""
    if heads <= 0 or rows % (2 * heads):
        raise ValueError(f"{rows} rows cannot be split into {heads} heads of two halves")
    gg: np.ndarray = np.arange(rows).reshape(heads, rows // heads // 2, 2).swapaxes(1, 2)
    return gg.reshape(-1)


class DiffReader(Reader):
    """The pairs of two checkpoints. ``read`` gives B - A over the overlap (the generic Reader
    view of a diff); ``read_side`` gives one side, aligned (Q/K permutation undone)."""

    format = "diff"

    def __init__(self, a: MultiReader, b: MultiReader, pairs: Sequence[Pair] | None = None,
                 *, check_permutation: bool = True) -> None:
        self.a, self.b = a, b
        self.pairs = list(pairs) if pairs is not None else pair_tensors(a, b)
        self._by_name = {p.name: p for p in self.pairs}
        if check_permutation and pairs is None:
            self.pairs = [self._confirm_transform(p) for p in self.pairs]
            self._by_name = {p.name: p for p in self.pairs}
        self._infos = [TensorInfo(p.name, p.view, _dtype(p), (p.b or p.a).file)  # type: ignore
                       for p in self.pairs]
        self._info_by = {t.name: t for t in self._infos}

    def pair(self, name: str) -> Pair:
        return self._by_name[name]

    def _confirm_transform(self, p: Pair) -> Pair:
        """Keep an unpermute transform only if it brings the sides closer on a sample."""
        if p.transform is None or p.shape_status != "same":
            return p
        rows, cols = p.overlap
        try:
            perm = unpermute_rows(rows, p.heads)
        except ValueError:
            return p._replace(transform=None, heads=0, gguf_side=None)
        n = min(rows, max(2 * rows // p.heads, 64))
        ra = self.a.read(p.a.name, 0, n)  # type: ignore[union-attr]
        rb = self.b.read(p.b.name, 0, n)  # type: ignore[union-attr]
        head_rows = rows // p.heads
        m = (n // head_rows) * head_rows
        if m == 0:
            return p
        local = perm[:m]
        plain = float(np.nansum((rb[:m] - ra[:m]) ** 2))
        if p.gguf_side == "a":
            fixed = float(np.nansum((rb[:m] - ra[local]) ** 2))
        else:
            fixed = float(np.nansum((rb[local] - ra[:m]) ** 2))
        return p if fixed < plain else p._replace(transform=None, heads=0, gguf_side=None)

    # -- Reader ------------------------------------------------------------------------------
    def tensors(self) -> Sequence[TensorInfo]:
        return self._infos

    def info(self, name: str) -> TensorInfo:
        return self._info_by[name]

    def read_side(self, side: str, name: str, e_r0: int, e_r1: int, e_c0: int = 0,
                  e_c1: int | None = None) -> np.ndarray:
        """Block of A's (side ``a``) or B's tensor of the pair, in the pair's row order."""
        p = self._by_name[name]
        t = p.a if side == "a" else p.b
        reader = self.a if side == "a" else self.b
        if t is None:
            raise KeyError(f"{name}: no tensor in {side.upper()}")
        rows, cols = t.e_rows, t.e_cols
        c1 = cols if e_c1 is None else e_c1
        if p.transform is not None and p.gguf_side == side:
            head_rows = rows // p.heads
            h0, h1 = e_r0 // head_rows, -(-e_r1 // head_rows)
            block = reader.read(t.name, h0 * head_rows, h1 * head_rows, e_c0, c1)
            perm = unpermute_rows(rows, p.heads)[h0 * head_rows:h1 * head_rows] - h0 * head_rows
            return np.ascontiguousarray(block[perm][e_r0 - h0 * head_rows:e_r1 - h0 * head_rows])
        return reader.read(t.name, e_r0, e_r1, e_c0, c1)

    def read_side_codes(self, side: str, name: str, e_r0: int, e_r1: int, e_c0: int,
                        e_c1: int) -> np.ndarray | None:
        """The block's raw 16-bit codes on one side (BF16/F16, no row permutation), or None."""
        p = self._by_name[name]
        t = p.a if side == "a" else p.b
        if t is None or (p.transform is not None and p.gguf_side == side):
            return None
        return (self.a if side == "a" else self.b).read_codes(t.name, e_r0, e_r1, e_c0, e_c1)

    def read(self, name: str, e_r0: int, e_r1: int, e_c0: int = 0,
             e_c1: int | None = None) -> np.ndarray:
        p = self._by_name[name]
        if p.a is None or p.b is None:
            raise KeyError(f"{name}: only in one checkpoint")
        rows, cols = p.overlap
        c1 = cols if e_c1 is None else e_c1
        if e_r1 > rows or c1 > cols:
            raise ValueError(f"{name}: block outside the overlap {rows}x{cols}")
        d: np.ndarray = (self.read_side("b", name, e_r0, e_r1, e_c0, c1)
                         - self.read_side("a", name, e_r0, e_r1, e_c0, c1))
        return d

    @property
    def files(self) -> Sequence[Path]:
        return list(self.a.files) + list(self.b.files)

    def release(self) -> None:
        self.a.release()
        self.b.release()

    def close(self) -> None:
        self.a.close()
        self.b.close()


def _dtype(p: Pair) -> str:
    if p.a is not None and p.b is not None:
        return p.a.dtype if p.a.dtype == p.b.dtype else f"{p.a.dtype}→{p.b.dtype}"
    return (p.a or p.b).dtype  # type: ignore[union-attr]


class DiffSpec(NamedTuple):
    """How a worker opens a diff (picklable): the two inputs and the pairs already decided."""

    a_sources: tuple[str, ...]
    b_sources: tuple[str, ...]
    pairs: tuple[Pair, ...]
    side: str | None = None
    """None: the pair reader; ``a``/``b``: that side alone, for the A and B scenes."""

    def open(self) -> Any:
        r = DiffReader(open_checkpoint(self.a_sources), open_checkpoint(self.b_sources),
                       self.pairs, check_permutation=False)
        return r if self.side is None else SideReader(r, self.side)


class SideReader(Reader):
    """One side of a diff as a plain reader, in the pair geometry (for the A and B scenes)."""

    format = "diff-side"

    def __init__(self, diff: DiffReader, side: str) -> None:
        self.diff, self.side = diff, side

    def tensors(self) -> Sequence[TensorInfo]:
        return self.diff.tensors()

    def info(self, name: str) -> TensorInfo:
        return self.diff.info(name)

    def read(self, name: str, e_r0: int, e_r1: int, e_c0: int = 0,
             e_c1: int | None = None) -> np.ndarray:
        return self.diff.read_side(self.side, name, e_r0, e_r1, e_c0, e_c1)

    def release(self) -> None:
        self.diff.release()

    def close(self) -> None:
        self.diff.close()
