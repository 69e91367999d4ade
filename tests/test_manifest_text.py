"""The manifest's JSON text: the compiled indenter writes exactly what json.dumps(indent=1)
writes, for any document (strings holding JSON's own punctuation, escapes, non-ASCII, empty and
nested containers, numbers of every kind)."""

from __future__ import annotations

import json
import random

import pytest

from weightvis import manifest
from weightvis.kernels.jsontext import indent_json

_ATOMS = ["", "a", '"', "\\", '\\"', "{}", "[]", ",", ":", ", ", ": ", "}{", "][", "é", "☃",
          "\u2028", "\n", "\t", "\x00", "\x1f", "𝄞", "</script>", '"},{"']


def _doc(rng: random.Random, depth: int) -> object:
    r = rng.random()
    if depth > 4 or r < 0.35:
        return rng.choice([
            rng.choice(_ATOMS) + rng.choice(_ATOMS), rng.randint(-10**20, 10**20),
            rng.uniform(-1e300, 1e300), rng.random() * 1e-300, 0.0, -0.0, True, False, None,
            1e16, 123456789.125])
    if r < 0.65:
        return [_doc(rng, depth + 1) for _ in range(rng.choice([0, 0, 1, 2, 5]))]
    return {rng.choice(_ATOMS) + str(i): _doc(rng, depth + 1)
            for i in range(rng.choice([0, 0, 1, 3, 6]))}


@pytest.mark.parametrize("seed", range(40))
def test_indenter_equals_json_dumps(seed: int) -> None:
    rng = random.Random(seed)
    doc = {"scenes": [_doc(rng, 0) for _ in range(20)], "x": _doc(rng, 0)}
    compact = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    for width in (1, 2):
        assert indent_json(compact, width).decode() == json.dumps(doc, indent=width,
                                                                  ensure_ascii=False)


def test_big_documents_take_the_compiled_path(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    doc = {"tensors": {f"t{i}": _doc(rng, 2) for i in range(300)}}
    monkeypatch.setattr(manifest, "_COMPILED_ABOVE", 10)
    assert manifest.dumps(doc) == json.dumps(doc, indent=1, ensure_ascii=False)
    with pytest.raises(ValueError):
        manifest.dumps({"x": float("nan")})


def test_index_html_reuses_an_ascii_encoding_and_escapes_the_same() -> None:
    from weightvis.html import manifest_script_json

    doc = {"tensors": {"</script><!--&": 1, "é\u2028": [1.5, None]}, "title": "x"}
    plain = manifest_script_json(doc)
    assert manifest_script_json(doc, manifest.compact(doc)) == plain  # non-ASCII: escaped
    ascii_doc = {"tensors": {"</script><!--&": 1}}
    text = manifest_script_json(ascii_doc, manifest.compact(ascii_doc))
    assert text == manifest_script_json(ascii_doc) and "<" not in text and "&" not in text
    assert json.loads(text) == ascii_doc


def test_lone_surrogates_are_escaped_so_the_bundle_can_be_written(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A tensor name may hold a lone surrogate (a JSON header's "\\ud800", a pickle's str):
    manifest.json and diff.json stay UTF-8 and JSON-decode to the same strings."""
    doc = {"tensors": {"a\ud800b": {"f": ["\udcff", "é\u2028", "\ud800\ud800"]}},
           "title": "x\udfff", "n": [1.5, None]}
    for compiled_above in (1 << 20, 10):  # Python's indenter, then the compiled one
        monkeypatch.setattr(manifest, "_COMPILED_ABOVE", compiled_above)
        for text in (manifest.compact(doc), manifest.dumps(doc)):
            text.encode("utf-8")  # UnicodeEncodeError before
            assert json.loads(text) == doc
            assert "\\ud800b" in text and "\\udcff" in text and "é" in text
    plain = {"tensors": {"é": 1}}  # no surrogate: the text is json.dumps's, unchanged
    assert manifest.dumps(plain) == json.dumps(plain, indent=1, ensure_ascii=False)
def test_index_html_escapes_non_ascii_as_the_ascii_encoder() -> None:
    """The compact text with every character past '~' escaped is json.dumps(ensure_ascii=True):
    DEL, BMP characters, lone surrogates and astral ones (as surrogate pairs)."""
    from weightvis.html import manifest_script_json

    rng = random.Random(11)
    for _ in range(200):
        ranges = [(0, 0x80), (0x80, 0x3000), (0xD800, 0xE000), (0x10000, 0x110000)]
        s = "".join(chr(rng.randrange(*rng.choice(ranges))) for _ in range(rng.randrange(1, 30)))
        doc = {s: [s, {"expert 17 · gate": s}], "x\x7f": 1.5}
        assert manifest_script_json(doc, manifest.compact(doc)) == manifest_script_json(doc), s


@pytest.mark.parametrize("seed", range(10))
def test_inlined_manifest_escapes_like_ensure_ascii(seed: int) -> None:
    """The reused compact text, escaped (few distinct characters: one replace each; many: the
    regex), is exactly json.dumps(ensure_ascii=True)'s text."""
    from weightvis.html import _FEW_CHARACTERS, manifest_script_json

    rng = random.Random(seed)
    pool = ["a", '"', "\\", "\x7f", "~", "·", "é", "\u2028", "\u2029", "𝄞", "中", "\x00", "<"]
    many = [chr(0x4E00 + i) for i in range(_FEW_CHARACTERS + 5)]
    names = ["".join(rng.choice(pool if seed % 2 else pool + many)
                     for _ in range(rng.randint(0, 12))) for _ in range(200)]
    doc = {"tensors": {n: {"label": n[::-1]} for n in names}, "title": "t"}
    text = manifest_script_json(doc, manifest.compact(doc))
    assert text == manifest_script_json(doc)  # (without the compact text: ensure_ascii=True)
    assert text.isascii() and "\x7f" not in text and json.loads(text) == doc


def test_placements_json_is_each_placements_to_json() -> None:
    from weightvis.types import Placement

    ps = [Placement("a", 1, 2, 0, 3, 4, 9), Placement("b\u2028", 0, 0, 5, 6, 0, 1, "expert 3 · up"),
          Placement("c", 7, 8, 0, 0, 0, 0, "")]
    assert manifest.placements_json(ps) == [p.to_json() for p in ps]
    assert manifest.placements_json([]) == []


def test_indenter_output_longer_than_its_first_guess() -> None:
    """A document growing more than the indenter's first guess (deep nesting of tiny values)
    takes a second pass; the text is still json.dumps's."""
    doc: object = 0
    for _ in range(60):
        doc = [doc, {"a": [1, [2]]}]
    compact = json.dumps(doc, separators=(",", ":")).encode()
    out = indent_json(compact, 2)
    assert len(out) > 2 * len(compact) + 4096
    assert out.decode() == json.dumps(doc, indent=2)
