"""Hugging Face -> GGUF tensor names, from gguf-py's own name map (``gguf.get_tensor_name_map``).

llama.cpp's converter names every tensor it writes by looking the Hugging Face name up in
gguf-py's ``TensorNameMap`` for the model's architecture (``encoder.layer.3.attention.self.query``
-> ``blk.3.attn_q`` for ``bert``). weightvis uses the same table, for every architecture gguf-py
knows, to give a tensor of a Hugging Face-named checkpoint its GGUF name: the diff pairs a
safetensors file with a GGUF of the same model by it, and the viewer's search finds a tensor by
it. Nothing here is a hand table.

The map is built once per architecture for blocks 0 and 1 (``get_tensor_name_map(arch, 2)``); a
name of block N is looked up as the name of block 1 and gets N in its GGUF name
(``gguf.TENSOR_NAMES``), so the cost does not grow with the number of blocks and no block index
from a file makes a table grow. Like the converter, the lookup tries the name with ``.weight`` /
``.bias`` split off (old BERT checkpoints' ``.gamma`` / ``.beta`` stand for them), then without
the wrapper prefixes a state dict may carry (``index.WRAPPERS``) or one leading component
(``bert.``, ``language_model.``: the converters strip those per model) - a shortened name only
matches a key of two components or more, so ``pooler.dense`` never becomes a bare ``dense``.

Pure Python; gguf-py is imported on first use.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from typing import Any

from .index import strip_wrappers

__all__ = ["arch_of_config", "detect_arch", "gguf_names", "known_arch"]

_BID = re.compile(r"(?<![0-9])(0|[1-9][0-9]{0,8})(?![0-9])")
"""A block index inside a name: a canonical decimal number of at most nine digits (``007`` is not
block 7: it could not have come from formatting an index)."""

_SUFFIXES = ((".weight", ".weight"), (".bias", ".bias"), (".gamma", ".weight"),
             (".beta", ".bias"))
"""(suffix of a checkpoint's name, suffix of the GGUF name)."""

_ARCH_SUFFIXES = re.compile(r"(For[A-Z][A-Za-z]*|Model|LMHeadModel)$")


@lru_cache(maxsize=1)
def _arch_by_name() -> dict[str, Any]:
    import gguf

    return {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}


def known_arch(arch: str | None) -> bool:
    """True when gguf-py has a name map for this llama.cpp architecture name."""
    return arch is not None and arch in _arch_by_name()


_Tables = tuple[dict[str, str], dict[str, str], frozenset[str]]


@lru_cache(maxsize=256)
def _tables(arch: str) -> _Tables:
    """(every HF base name of block 0 and outside blocks, every HF base name of block 1 only)
    -> GGUF base name template (``{bid}`` for a block tensor), for one architecture; and the
    shapes of all those names (numbers as ``#``): a name of another shape matches none."""
    import gguf

    cfg = gguf.TensorNameMap.block_mappings_cfg
    saved = dict(cfg)
    try:
        one = gguf.get_tensor_name_map(_arch_by_name()[arch], 1).mapping
        two = gguf.get_tensor_name_map(_arch_by_name()[arch], 2).mapping
    finally:
        # gguf-py's constructor updates this class-level table with an architecture's overrides
        # (arctic's): put it back, or every later map of this process would carry them
        cfg.clear()
        cfg.update(saved)
    names = gguf.TENSOR_NAMES
    table0 = {key: names[tensor] for key, (tensor, _name) in one.items()}
    table1 = {key: names[tensor] for key, (tensor, _name) in two.items() if key not in one}
    shapes = frozenset(_BID.sub("#", key) for key in (*table0, *table1))
    return table0, table1, shapes


def _dotted(text: str, start: int, end: int) -> bool:
    """True when text[start:end] is a whole dotted component."""
    return (start == 0 or text[start - 1] == ".") and (end == len(text) or text[end] == ".")


def _lookup(tables: _Tables, name: str, dotted: bool = False) -> str | None:
    """The GGUF name of one name (suffix and block index handled), or None. A name of block N
    is looked up as block 1 (keys only a block has: a digit group elsewhere in the name is never
    taken for the block index) and gets N in its GGUF name. ``dotted``: only keys of two
    components or more (a name shortened by a prefix must not match a bare ``dense``)."""
    table0, table1, shapes = tables
    shape = _BID.sub("#", name)  # (the suffixes hold no digits: they end both alike)
    bases = [(name, shape, "")] + [(name[:-len(s)], shape[:-len(s)], g) for s, g in _SUFFIXES
                                   if name.endswith(s)]
    for base, base_shape, suffix in bases:
        if base_shape not in shapes or (dotted and "." not in base):
            continue
        tpl = table0.get(base)
        if tpl is not None:
            return tpl.format(bid=0) + suffix if "{bid}" in tpl else tpl + suffix
        groups = list(_BID.finditer(base))  # ``layers.3.`` before ``conv2d``'s 2
        groups.sort(key=lambda m: not _dotted(base, m.start(), m.end()))
        for m in groups:
            tpl = table1.get(base[:m.start()] + "1" + base[m.end():])
            if tpl is not None:
                return tpl.format(bid=int(m.group())) + suffix if "{bid}" in tpl else tpl + suffix
    return None


def _may_match(shapes: frozenset[str], shape: str) -> bool:
    """Whether a name of this shape, with or without its suffix, has the shape of a key."""
    return shape in shapes or any(shape.endswith(s) and shape[:-len(s)] in shapes
                                  for s, _ in _SUFFIXES)


def _variants(name: str) -> list[str]:
    """The name, then without wrapper prefixes, then without its first component."""
    out = [name]
    stripped = strip_wrappers(name)
    if stripped != name:
        out.append(stripped)
    head, dot, rest = name.partition(".")
    if dot and rest and "." in rest and rest not in out:
        out.append(rest)
    return out


_NONZERO_AS_1 = bytes.maketrans(b"23456789", b"11111111")
_DIGIT = re.compile(r"[0-9]")


def _shapes(names: Iterable[str]) -> Iterator[tuple[str, str]]:
    """Each name and its shape (``_BID.sub("#", name)``), the shape found once per key: the
    name's bytes with each nonzero digit as ``1``. The key keeps where the digit runs are,
    their lengths and which digits are ``0``, which decide the runs ``_BID`` takes; when it
    takes them all, every name of the key has that shape (45k DeepSeek-V3 names: 132 keys,
    0.01 s instead of 0.05)."""
    memo: dict[bytes, str | None] = {}
    for n in names:
        key = n.encode("utf-8", "surrogatepass").translate(_NONZERO_AS_1)
        got = memo.get(key)
        if got is not None:
            yield n, got
            continue
        shape = _BID.sub("#", n)
        if key not in memo:  # (None: a run it keeps; each name of the key is looked at)
            memo[key] = None if _DIGIT.search(shape) else shape
        yield n, shape


def gguf_names(names: Iterable[str], arch: str) -> dict[str, str]:
    """name -> its GGUF name under ``arch``'s map, for every name the map knows. Two names that
    would get one GGUF name: the one found with fewer prefixes removed keeps it, a tie drops
    both (a pairing by GGUF name must never guess)."""
    if not known_arch(arch):
        return {}
    tables = _tables(arch)
    found: dict[str, tuple[int, str]] = {}  # gguf name -> (variant rank, name)
    tied: set[str] = set()
    hopeless: set[str] = set()  # shapes of names no key can match (46k expert names: 0.1 s)
    for n, shape in _shapes(names):
        if shape in hopeless:
            continue
        variants = _variants(n)
        if not any(_may_match(tables[2], _BID.sub("#", v)) for v in variants):
            hopeless.add(shape)  # (a name's variants are shaped by its shape alone)
            continue
        for rank, v in enumerate(variants):
            g = _lookup(tables, v, dotted=rank > 0)
            if g is None:
                continue
            prev = found.get(g)
            if prev is None or rank < prev[0]:
                found[g] = (rank, n)
                tied.discard(g)
            elif rank == prev[0]:
                tied.add(g)
            break
    return {n: g for g, (_, n) in found.items() if g not in tied}


def arch_of_config(config: Mapping[str, Any]) -> str | None:
    """The llama.cpp architecture a ``config.json`` names, when its ``model_type`` is one gguf-py
    knows, else the one llama.cpp's converter writes for its ``architectures`` class
    (``converter_archs``), else that class's name (``BertModel`` -> ``bert``) if gguf-py knows
    it; else None."""
    cands: list[str] = []
    mt = config.get("model_type")
    if isinstance(mt, str):
        mt = mt.lower()
        base = mt.removesuffix("_text")
        cands += [mt, mt.replace("_", ""), mt.replace("_", "-"), base, base.replace("_", "")]
    archs = config.get("architectures")
    if isinstance(archs, list) and archs and isinstance(archs[0], str):
        from .converter_archs import CONVERTER_ARCHS

        converted = CONVERTER_ARCHS.get(archs[0])
        cands += [converted] if converted else []
        cands.append(_ARCH_SUFFIXES.sub("", archs[0]).lower())
    return next((c for c in cands if known_arch(c)), None)


@lru_cache(maxsize=1)
def _all_shapes() -> frozenset[str]:
    """The shapes of every key of every architecture's map."""
    return frozenset().union(*(_tables(arch)[2] for arch in _arch_by_name()))


def _representatives(names: Iterable[str]) -> list[str]:
    """One name per shape of name (block and expert indices aside): enough to score a map."""
    seen: dict[str, str] = {}
    for n in names:
        seen.setdefault(_BID.sub("#", n), n)
    return list(seen.values())


def detect_arch(names: Iterable[str], config: Mapping[str, Any] | None = None) -> str | None:
    """The llama.cpp architecture whose name map to use for a Hugging Face-named checkpoint:
    the one its ``config.json`` names (``arch_of_config``), else the architecture whose map
    knows the most kinds of name (first in gguf-py's order on a tie: ``llama`` before its
    variants), provided it knows at least half of them; else None (not a model gguf-py maps)."""
    declared = arch_of_config(config or {})
    if declared is not None:
        return declared
    reps = _representatives(names)
    if not reps:
        return None
    # names no architecture's map could match are scored once, not once per architecture
    any_shape = _all_shapes()
    plausible = [n for n in reps
                 if any(_may_match(any_shape, _BID.sub("#", v)) for v in _variants(n))]
    best, best_n = None, 0
    for arch in _arch_by_name() if plausible else ():
        n = len(gguf_names(plausible, arch))
        if n > best_n:
            best, best_n = arch, n
    return best if 2 * best_n >= len(reps) else None
