"""Diffs: pairing two checkpoints' tensors and the diff reader (B - A). What the numbers say is
diff_analysis.py; the scenes of a diff are diff_plan.py.

Pairing (every tensor of A and of B ends in exactly one pair):
1. exact: the same name in A and B;
2. name map: the same GGUF name - a GGUF's own names, and the names a Hugging Face-named side
   gets from gguf-py's name map of the GGUF side's architecture (gguf_names.py; of its own
   architecture, from config.json or the names, when neither side is a GGUF) - then the same
   canonical name (index.py: GGUF names mapped to their HF spelling);
3. prefix: the same canonical name once wrapper prefixes (``module.``, ``_orig_mod.``,
   ``base_model.model.``, ``model.``, ``transformer.``: index.WRAPPERS) are stripped from both,
   when that leaves one candidate on each side;
4. expert: routed experts still unpaired, expert by expert (layer, role, expert number) through
   each side's MoE structure, whatever the layouts (per-expert, fused 3-D in any orientation,
   GGUF ``ffn_*_exps``): moe/pairing.py. Each such pair is one expert matrix on both sides;
   router: a layer's router and selection bias still unpaired, through the same structures.
Names are parsed by the name index (weightvis.index): canonical names, the Q/K role.
Status: identical (same view, every element equal; NaN equals NaN), changed, shape-changed
(different 2-D views: the overlapping part is compared), only-in-a, only-in-b.

Architectures. When both checkpoints declare an architecture (GGUF ``general.architecture``;
``config.json``'s ``model_type``, as gguf-py's architecture name when it is one) and they differ,
the diff is *cross-architecture* (``declared_architecture``): a pair whose shapes differ is not
compared at all (``Pair.compared`` false: the same llama.cpp name in two architectures names two
different parameters, and the top-left overlap of a [1024, 640] and a [576, 576] matrix holds no
correspondence), while a same-shaped pair still is (t5 and t5encoder, llama and a llama-derived
architecture share such tensors). Nothing is decided from shapes alone: a PyTorch file declares
no architecture, so a narrower model of the same design is compared over the overlap.

When one side is a llama-family GGUF and a paired tensor is Q or K of attention, llama.cpp's
converter permuted its rows for its RoPE layout; the GGUF side is read with the permutation
undone: ``w.reshape(n_head, 2, d // n_head // 2, -1).swapaxes(1, 2).reshape(w.shape)`` (n_head
for Q, n_head_kv for K) when that makes the pair closer on a sample of rows (checked per tensor,
so a GGUF written without the permutation is read as is). When one side is a GGUF of any
architecture and a paired norm vector (``…norm.weight``) is, on every element, the other plus one
within float32 rounding, the GGUF side is read minus one (``minus-one``): llama.cpp's converter
stores Gemma's (1 + w) RMSNorm scales that way (Gemma 1-3, Qwen3-Next); decided by the data, so
a GGUF without the shift is read as is.

Over the ~450-line guide (~480 lines): the pairing stages and the pair reader share the pair
records; split, they would pass them back and forth between modules.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .formats import MultiReader, open_checkpoint
from .formats.base import Reader
from .gguf_names import arch_of_config, detect_arch, gguf_names
from .index import NameIndex, looks_gguf, strip_wrappers
from .types import TensorInfo

__all__ = ["Pair", "pair_tensors", "pair_index", "DiffReader", "DiffSpec", "SideReader",
           "STATUSES", "cross_architecture", "declared_architecture", "pair_gguf_names",
           "unpermute_rows"]

STATUSES = ("identical", "changed", "shape-changed", "only-in-a", "only-in-b")
_NORM = re.compile(r"norm\.weight$")
_PLUS_ONE_TOLERANCE = 2.0 ** -22
"""|(g - 1) - h| allowed, relative to max(1, |g|), for a GGUF norm g stored as 1 + h: the
converter adds in float32, so g carries h rounded to g's spacing (at most 2^-23 |g|)."""
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
    compared: bool = True
    """False for a shape-changed pair of a cross-architecture diff: drawn and counted, never
    compared (its ``overlap`` is empty)."""
    slice_a: Any = None
    """An expert pair (``paired_by`` "expert"): A's ``structure.ExpertSlice``; ``a`` is then
    the expert's matrix ([out, in]) under its stored tensor's name."""
    slice_b: Any = None

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
        """The compared part of both views (empty when the pair is not compared)."""
        if not self.compared:
            return (0, 0)
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


def declared_architecture(reader: MultiReader) -> tuple[str, str] | None:
    """The architecture a checkpoint declares, as (namespace, name): ``("gguf", "llama")`` for
    a GGUF's ``general.architecture`` or a ``config.json`` whose ``model_type`` gguf-py knows,
    ``("hf", "mistral")`` for any other ``model_type``; None when it declares none (two names
    are comparable only within one namespace)."""
    arch = reader.gguf_architecture() if reader.format == "gguf" else None
    if arch:
        return ("gguf", arch)
    known = arch_of_config(reader.config)
    if known is not None:
        return ("gguf", known)
    mt = reader.config.get("model_type")
    return ("hf", mt) if isinstance(mt, str) and mt else None


def cross_architecture(a: MultiReader, b: MultiReader) -> bool:
    """True when both declare an architecture, in one namespace, and they differ."""
    da, db = declared_architecture(a), declared_architecture(b)
    return da is not None and db is not None and da[0] == db[0] and da[1] != db[1]


def _gguf_keys(reader: MultiReader, names: Sequence[str], other: MultiReader) -> dict[str, str]:
    """name -> GGUF name: a GGUF's own names; a Hugging Face-named side mapped through the
    GGUF side's architecture, or its own (config.json or the names) when neither is a GGUF."""
    if reader.format == "gguf" or looks_gguf(names):
        return {n: n for n in names}
    arch = other.gguf_architecture() if other.format == "gguf" else None
    if arch is None:
        arch = detect_arch(names, reader.config)
    return gguf_names(names, arch) if arch is not None else {}


def pair_tensors(a: MultiReader, b: MultiReader) -> list[Pair]:
    """Pair every tensor of A with its counterpart in B (module docstring); B's order first,
    then what only A has, in A's order."""
    ta, tb = list(a.tensors()), list(b.tensors())
    names_a, names_b = [t.name for t in ta], [t.name for t in tb]
    ia = NameIndex(names_a, gguf_arch=a.gguf_architecture())
    ib = NameIndex(names_b, gguf_arch=b.gguf_architecture())
    a_by = {t.name: t for t in ta}
    matched: dict[str, tuple[str, str]] = {}  # b name -> (a name, how)
    free_a = dict(a_by)
    for t in tb:
        if t.name in free_a:
            matched[t.name] = (t.name, "exact")
            del free_a[t.name]
    gg_a, gg_b = _gguf_keys(a, names_a, b), _gguf_keys(b, names_b, a)

    def by_gguf_a(n: str) -> str | None:
        return gg_a.get(n)

    def by_gguf_b(n: str) -> str | None:
        return gg_b.get(n)

    def by_canon_a(n: str) -> str | None:
        return ia[n].canonical

    def by_canon_b(n: str) -> str | None:
        return ib[n].canonical

    def stripped_a(n: str) -> str | None:
        return strip_wrappers(ia[n].canonical)

    def stripped_b(n: str) -> str | None:
        return strip_wrappers(ib[n].canonical)

    keys: list[tuple[str, Callable[[str], str | None], Callable[[str], str | None]]] = [
        ("name-map", by_gguf_a, by_gguf_b), ("name-map", by_canon_a, by_canon_b),
        ("prefix", stripped_a, stripped_b)]
    for how, key_a, key_b in keys:
        index: dict[str, list[str]] = {}
        for n in free_a:
            ka = key_a(n)
            if ka is not None:
                index.setdefault(ka, []).append(n)
        unmatched_b = [t.name for t in tb if t.name not in matched]
        counts: dict[str, int] = {}
        for n in unmatched_b:
            kb = key_b(n)
            if kb is not None:
                counts[kb] = counts.get(kb, 0) + 1
        for n in unmatched_b:
            kb = key_b(n)
            if kb is None:
                continue
            cands = index.get(kb, [])
            if len(cands) == 1 and counts[kb] == 1:
                matched[n] = (cands[0], how)
                del free_a[cands[0]]
                index[kb] = []
    from .moe import pairing

    experts: dict[str, list[Any]] = {}   # B's stored tensor -> its expert pairs, in order
    moe = pairing.structures(a, b) if len(free_a) and len(matched) < len(tb) else None
    if moe is not None:
        free_b = {t.name for t in tb if t.name not in matched}
        for ep in pairing.expert_pairs(*moe, a, b, set(free_a), free_b):
            experts.setdefault(ep.slice_b.tensor, []).append(ep)
            free_a.pop(ep.slice_a.tensor, None)
        for an, bn in pairing.router_pairs(*moe, a, b, set(free_a), free_b):
            matched[bn] = (an, "router")
            del free_a[an]
    gguf_a = a.format == "gguf" and (a.gguf_architecture() or "") in _LLAMA_FAMILY
    gguf_b = b.format == "gguf" and (b.gguf_architecture() or "") in _LLAMA_FAMILY
    any_a, any_b = a.format == "gguf", b.format == "gguf"
    heads_a, heads_b = _gguf_heads(a), _gguf_heads(b)
    cross = cross_architecture(a, b)
    pairs: list[Pair] = []
    for t in tb:
        if t.name in matched:
            an, how = matched[t.name]
            transform, heads, side = None, 0, None
            if gguf_a != gguf_b:  # exactly one side is a llama-family GGUF
                role = ib[t.name].qk_role if gguf_b else ia[an].qk_role
                if role is not None:
                    hq, hkv = heads_a if gguf_a else heads_b
                    heads = hq if role == "q" else hkv
                    if heads > 0:
                        transform, side = f"unpermute-{role}", "a" if gguf_a else "b"
            if transform is None and any_a != any_b and len(t.shape) == 1 and _NORM.search(
                    (ia[an] if any_a else ib[t.name]).canonical):
                transform, side = "minus-one", "a" if any_a else "b"  # confirmed on the data
            pair = Pair(t.name, a_by[an], t, how, transform, heads, side)
            if cross and pair.shape_status == "shape-changed":
                pair = pair._replace(compared=False, transform=None, heads=0, gguf_side=None)
            pairs.append(pair)
        elif t.name in experts:
            pairs.extend(Pair(ep.name, ep.info_a, ep.info_b, "expert", slice_a=ep.slice_a,
                              slice_b=ep.slice_b) for ep in experts[t.name])
        else:
            pairs.append(Pair(t.name, None, t, None))
    taken = {p.name for p in pairs}
    for n, t in free_a.items():
        name = n if n not in taken else f"{n} (A)"
        pairs.append(Pair(name, t, None, None))
    return pairs


def pair_index(reader: DiffReader) -> NameIndex:
    """The name index of a diff's pairs (by pair name): each pair under the canonical name of
    its tensor in B, or in A when only A has it; kinds and slots as the layout sees them."""
    ia = NameIndex([t.name for t in reader.a.tensors()], gguf_arch=reader.a.gguf_architecture())
    ib = NameIndex([t.name for t in reader.b.tensors()], gguf_arch=reader.b.gguf_architecture())
    canonical = {p.name: _expert_canonical(p, ia, ib) if p.paired_by == "expert"
                 else ib[p.b.name].canonical if p.b is not None
                 else ia[p.a.name].canonical  # type: ignore[union-attr]
                 for p in reader.pairs}
    return NameIndex(canonical, canonical=canonical)


def _expert_canonical(p: Pair, ia: NameIndex, ib: NameIndex) -> str:
    """An expert pair's canonical name: its per-expert tensor's (named after it), else its
    own HF-style name."""
    for index, t in ((ib, p.b), (ia, p.a)):
        if t is not None and t.name == p.name and index.get(t.name) is not None:
            return index[t.name].canonical
    return p.name


def pair_gguf_names(reader: DiffReader) -> dict[str, str]:
    """pair name -> the GGUF name of its tensor in B (else in A) where one is known and differs
    from the pair's name (the manifest's optional ``gguf``, for the viewer's search)."""
    names_a = [t.name for t in reader.a.tensors()]
    names_b = [t.name for t in reader.b.tensors()]
    gg_a, gg_b = _gguf_keys(reader.a, names_a, reader.b), _gguf_keys(reader.b, names_b, reader.a)
    out: dict[str, str] = {}
    for p in reader.pairs:
        g = (gg_b.get(p.b.name) if p.b is not None else None) or (
            gg_a.get(p.a.name) if p.a is not None else None)
        if g is not None and g != p.name:
            out[p.name] = g
    return out


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
        """Keep an unpermute transform only if it brings the sides closer on a sample; keep
        ``minus-one`` only if the GGUF side is the other plus one, within float32 rounding, on
        every element (a norm vector: read whole)."""
        if p.transform is None or p.shape_status != "same":
            return p
        if p.transform == "minus-one":
            on_a = p.gguf_side == "a"
            tg, th = (p.a, p.b) if on_a else (p.b, p.a)
            rg, rh = (self.a, self.b) if on_a else (self.b, self.a)
            g = rg.read(tg.name, 0, 1).astype(np.float64)  # type: ignore[union-attr]
            h = rh.read(th.name, 0, 1).astype(np.float64)  # type: ignore[union-attr]
            ok = (g.size > 0 and bool(np.isfinite(g).all() and np.isfinite(h).all())
                  and not np.array_equal(g, h) and bool((np.abs(g - 1.0 - h) <= (
                      _PLUS_ONE_TOLERANCE * np.maximum(1.0, np.abs(g)))).all()))
            return p if ok else p._replace(transform=None, gguf_side=None)
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
        expert = p.slice_a if side == "a" else p.slice_b
        if expert is not None:
            from .moe.pairing import read_slice

            return read_slice(reader, expert, e_r0, e_r1, e_c0, c1)
        if p.transform == "minus-one" and p.gguf_side == side:
            shifted: np.ndarray = reader.read(t.name, e_r0, e_r1, e_c0, c1) - np.float32(1.0)
            return shifted
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
        if t is None or (p.transform is not None and p.gguf_side == side) \
                or p.paired_by == "expert":
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
