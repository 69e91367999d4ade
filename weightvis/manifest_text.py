"""The manifest's JSON text made in parts: what the tiles do not change (a render's scene and
the tensors' entries up to their statistics: ~28 MB of JSON for a 45k-tensor checkpoint)
encoded while the tiles are drawn, a few entries per call, and the scales and statistics
encoded after them and spliced in: the very text ``manifest.compact`` writes of the whole
(bundle.write_manifest writes ``manifest.json`` and ``index.html`` from it). numpy-free.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from .manifest import compact

__all__ = ["StaticParts", "compose", "compose_parts", "compose_utf8", "cut_members",
           "join_members", "cut_items", "encode_members", "encode_list", "encode_numbers",
           "PIECE"]


def compose(doc: Mapping[str, Any], texts: Mapping[str, str],
            convert: Callable[[str], str] | None = None) -> str:
    """:func:`compact` of ``doc``, given the compact text of some of its values already:
    ``texts[key]`` stands for ``doc[key]`` (its text is not made again, the caller vouches that
    it is ``compact(doc[key])``). ``convert`` is applied to the text of every other key and
    value (html.ascii_json, when ``texts`` hold that form).

    >>> compose({"a": 1, "b": [2]}, {"b": "[2]"}) == compact({"a": 1, "b": [2]})
    True
    """
    return "".join(compose_parts(doc, texts, convert))


def compose_parts(doc: Mapping[str, Any], texts: Mapping[str, str],
                  convert: Callable[[str], str] | None = None) -> list[str]:
    """The parts :func:`compose` joins, the texts of ``texts`` among them as they are (a
    45k-tensor manifest's are ~28 MB: each copy of them ~0.01 s).

    >>> compose_parts({"a": 1, "b": [2]}, {"b": "[2]"})
    ['{"a":', '1', ',"b":', '[2]', '}']
    """
    def text(value: Any) -> str:
        got = compact(value)
        return convert(got) if convert is not None else got

    parts: list[str] = []
    for key, value in doc.items():
        given = texts.get(key)
        parts += [("," if parts else "{") + text(key) + ":",
                  given if given is not None else text(value)]
    parts.append("}" if parts else "{}")
    return parts


def compose_utf8(doc: Mapping[str, Any], texts: Mapping[str, str]) -> bytes:
    """``compose(doc, texts).encode("utf-8")``, each part encoded alone (a text mixing a few
    non-ASCII characters into 28 MB of ASCII is not widened and joined first), and joined once.

    >>> compose_utf8({"a": "é", "b": [2]}, {"b": "[2]"}) == compact({"a": "é", "b": [2]}).encode()
    True
    """
    return b"".join([p.encode("utf-8") for p in compose_parts(doc, texts)])


def cut_members(text: str, count: int) -> list[str]:
    r"""The compact text of an object of ``count`` members whose values are objects holding no
    object (the manifest's tensor entries before their statistics), cut into its members, each
    without its opening quote and its closing brace, for :func:`join_members` to add fields to.

    Outside a string ``},"`` only ends such a member; inside one every quote is escaped
    (``\"``), so no string holds that sequence (a tensor may be named ``},"``).

    >>> cut_members('{"a":{"x":1},"b\\"},\\"":{"y":null}}', 2)
    ['a":{"x":1', 'b\\"},\\"":{"y":null']
    """
    if count == 0:
        assert text == "{}", text[:80]
        return []
    assert text.startswith('{"') and text.endswith("}}"), text[:80]
    members = text[2:-2].split('},"')
    assert len(members) == count, (len(members), count)
    return members


def join_members(members: Sequence[str], *tails: str | Sequence[str], close: str = "}"
                 ) -> str:
    """The object :func:`cut_members` cut, with ``,"key":value...`` added at the end of member
    ``i``: the concatenation of ``tail[i]`` over ``tails`` (a ``str``: the same for every
    member), then ``close``.

    >>> join_members(cut_members('{"a":{"x":1},"b":{}}', 2), [',"y":2', ''])
    '{"a":{"x":1,"y":2},"b":{}}'
    >>> join_members(['a":{"x":1', 'b":{"x":2'], ',"y":', ["3", "4"], ',"z":{"w":', ["5", "6"],
    ...              close="}}")
    '{"a":{"x":1,"y":3,"z":{"w":5}},"b":{"x":2,"y":4,"z":{"w":6}}}'
    """
    n = len(members)
    assert all(isinstance(t, str) or len(t) == n for t in tails)
    if not n:
        return "{}"
    k = len(tails) + 2
    # member, tails, closing and separator: one join (45k members: 6 ms, not 15)
    parts = [""] * (k * n)
    parts[0::k] = members
    for j, tail in enumerate(tails, 1):
        parts[j::k] = [tail] * n if isinstance(tail, str) else tail
    parts[k - 1::k] = [close + ',"'] * n
    parts[-1] = close + "}"
    return '{"' + "".join(parts)


_NUMBER_TYPES = frozenset({float, int, type(None)})


def encode_numbers(values: Sequence[Any]) -> list[str] | None:
    """``cut_items(compact(values), len(values))``: the compact JSON text of each value, for
    values that are all floats, ints or None (else None: the caller encodes them otherwise). A
    value repeated is formatted once: the min, max and robust scale of 45k tiny BF16 tensors
    are a few thousand distinct floats, and formatting floats was most of their encoding.

    >>> encode_numbers([0.5, None, 0.5, -0.0, 3]), encode_numbers(["a"])
    (['0.5', 'null', '0.5', '-0.0', '3'], None)
    """
    n = len(values)
    kinds = set(map(type, values))
    if not kinds <= _NUMBER_TYPES:
        return None
    # a dict holds 1 and 1.0, or 0.0 and -0.0, as one key: share texts only when it can't
    distinct: dict[Any, None] = {}
    if not (float in kinds and int in kinds):
        distinct = dict.fromkeys(values)  # (45k values: ~1.5 ms)
        if 0.0 in distinct and float in kinds:
            zeros = list(filter(functools.partial(operator.eq, 0.0), values))
            if abs(sum(map(math.copysign, itertools.repeat(1.0), zeros))) != len(zeros):
                distinct = {}  # (both zeros)
    if not distinct or len(distinct) * 2 > n:
        return cut_items(compact(list(values)), n)
    texts = dict(zip(distinct, cut_items(compact(list(distinct)), len(distinct)),
                     strict=True))
    return list(map(texts.__getitem__, values))


PIECE = 1024
"""Items encoded per call by :func:`encode_members` and :func:`encode_list`. The C encoder
holds the interpreter for a whole call (a 45k-tensor checkpoint's entries: ~0.1 s in one call),
and a thread encoding them meanwhile would keep the main thread from handing the tile workers
their next subtree that long; a piece takes ~2 ms."""


def encode_members(entries: Mapping[str, Any], convert: Callable[[str], str]
                   ) -> tuple[list[str], list[str]]:
    """:func:`cut_members` of ``compact(entries)`` and of ``convert`` of it (a conversion
    character by character: html.ascii_json), encoded :data:`PIECE` entries at a time."""
    items = list(entries.items())
    plain: list[str] = []
    other: list[str] = []
    for i in range(0, len(items), PIECE):
        piece = dict(items[i:i + PIECE])
        text = compact(piece)
        members = cut_members(text, len(piece))
        converted = convert(text)
        plain += members
        other += members if converted is text else cut_members(converted, len(piece))
    return plain, other


def encode_list(items: Sequence[Any], convert: Callable[[str], str]) -> tuple[str, str]:
    """``compact(items)`` and ``convert`` of it (as :func:`encode_members`), encoded
    :data:`PIECE` items at a time."""
    texts = [compact(items[i:i + PIECE])[1:-1] for i in range(0, len(items), PIECE)]
    return "[" + ",".join(texts) + "]", "[" + ",".join(map(convert, texts)) + "]"


def cut_items(text: str, count: int, sep: str = ",") -> list[str]:
    """The items of the compact text of a list of ``count`` numbers or nulls (``sep`` ``,``),
    or of flat objects of numbers (``sep`` ``},{``: each item's members, no braces).

    >>> cut_items('[1.5,null]', 2), cut_items('[{"a":1},{"a":2}]', 2, "},{")
    (['1.5', 'null'], ['"a":1', '"a":2'])
    """
    if count == 0:
        assert text == "[]", text[:80]
        return []
    edge = 1 if sep == "," else 2
    items = text[edge:-edge].split(sep)
    assert len(items) == count, (len(items), count)
    return items


class StaticParts(NamedTuple):
    """The parts of a render's manifest the tiles do not change (scenes.plan_render):
    its first scene and the tensors' entries up to ``slot``, and their compact JSON texts as
    (manifest.compact, html.ascii_json of it), the entries' cut into members
    (:func:`cut_members`)."""

    scene: dict[str, Any]
    entries: dict[str, Any]
    scene_text: tuple[str, str]
    members: tuple[list[str], list[str]]
    fields: int
    """The entries' fields, over all of them."""

    @classmethod
    def of(cls, scene: dict[str, Any], entries: dict[str, Any]) -> StaticParts:
        from .html import ascii_json

        placements = encode_list(scene["placements"], ascii_json)  # (45k placements)
        scene_text = (compose(scene, {"placements": placements[0]}),
                      compose(scene, {"placements": placements[1]}, ascii_json))
        return cls(scene, entries, scene_text, encode_members(entries, ascii_json),
                   sum(map(len, entries.values())))

    def texts(self, more_scenes: Sequence[Mapping[str, Any]], entries: Mapping[str, Any]
              ) -> dict[str, tuple[str, str]]:
        """The texts of the manifest's ``scenes`` (this scene, then ``more_scenes``) and
        ``tensors`` (``entries``: the static entries, each with ``scale`` and maybe ``stats``
        added); no ``tensors`` text when an entry got other fields."""
        from .html import ascii_json

        more = [compact(s) for s in more_scenes]
        out = {"scenes": ("[" + ",".join([self.scene_text[0], *more]) + "]",
                          "[" + ",".join([self.scene_text[1], *map(ascii_json, more)]) + "]")}
        docs = list(entries.values())
        n = len(docs)
        stats = [e.get("stats") for e in docs]
        with_stats = n > 0 and stats[0] is not None
        if (entries is not self.entries
                or sum(map(len, docs)) != self.fields + (2 if with_stats else 1) * n
                or not all("scale" in e and (st is not None) == with_stats
                           for e, st in zip(docs, stats, strict=True))):
            return out  # (not the entries cut, or not just those fields added)
        # the fields ``finish`` added, encoded a column at a time (C speed, each distinct
        # number once: 45k entries' statistics are ~400k numbers) and spliced in
        scales = encode_numbers([e["scale"] for e in docs])
        if scales is None:
            return out
        tails: list[str | list[str]] = [',"scale":', scales]
        if with_stats:
            keys = tuple(stats[0])
            if not keys or not all(map(keys.__eq__, map(tuple, stats))):
                return out  # (statistics objects of different keys: not columns)
            for j, key in enumerate(keys):
                column = encode_numbers(list(map(operator.itemgetter(key), stats)))
                if column is None:
                    return out
                tails += [(',"stats":{' if j == 0 else ",") + compact(key) + ":", column]
        close = "}}" if with_stats else "}"
        plain = join_members(self.members[0], *tails, close=close)
        same = self.members[1] is self.members[0] or self.members[1] == self.members[0]
        out["tensors"] = (plain, plain if same else join_members(self.members[1], *tails,
                                                                 close=close))
        return out
