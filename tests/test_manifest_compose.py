"""The manifest's text made in parts (manifest_text.py): the scene and the tensor entries
encoded while the tiles are drawn, the statistics after, spliced into exactly the text
json.dumps writes of the whole manifest, for names holding JSON's own punctuation, escapes and
non-ASCII; a manifest the parts do not fit is encoded whole."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from weightvis import manifest, manifest_text
from weightvis.bundle import render
from weightvis.html import ascii_json, manifest_script_json

_ATOMS = ["", "a", '"', "\\", '\\"', "{}", "[]", ",", ":", '},"', '"},{"', "},{", "é", "·",
          "\u2028", "\n", "\x7f", "𝄞", "</script>", '"scale":', "\ud800"]


def _entries(rng: random.Random, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i in range(n):
        name = "".join(rng.choice(_ATOMS) for _ in range(3)) + str(i)
        out[name] = {"shape": [rng.randint(0, 9) for _ in range(rng.randint(0, 3))],
                     "file": rng.choice(_ATOMS) + "x", "block": rng.choice([None, name]),
                     "slot": rng.choice([None, i])}
    return out


@pytest.mark.parametrize("seed", range(20))
def test_cut_and_join_give_json_dumps(seed: int) -> None:
    rng = random.Random(seed)
    entries = _entries(rng, rng.choice([0, 1, 2, 7, 40]))
    n = len(entries)
    members = manifest_text.cut_members(manifest.compact(entries), n)
    scales = [rng.choice([0.0, 1.5, 1e-300, -2.0**70, 3]) for _ in range(n)]
    stats = [{"min": rng.choice([None, -1.25]), "max": 1e16, "nan_count": i} for i in range(n)]
    got_scales = manifest_text.cut_items(manifest.compact(scales), n)
    got_stats = manifest_text.cut_items(manifest.compact(stats), n, "},{")
    tails = [f',"scale":{s},"stats":{{{st}}}' for s, st in zip(got_scales, got_stats,
                                                                       strict=True)]
    for e, s, st in zip(entries.values(), scales, stats, strict=True):
        e["scale"], e["stats"] = s, st
    want = json.dumps(entries, ensure_ascii=False, separators=(",", ":"))
    assert manifest_text.join_members(members, tails) == manifest.encodable(want)
    doc = {"title": "é</script>", "tensors": entries, "n": [1, None]}
    texts = {"tensors": manifest_text.join_members(members, tails)}
    assert manifest_text.compose(doc, texts) == manifest.compact(doc)
    assert manifest_text.compose_utf8(doc, texts) == manifest.compact(doc).encode()
    assert (manifest_text.compose(doc, {"tensors": ascii_json(texts["tensors"])}, ascii_json)
            == ascii_json(manifest.compact(doc))
            == manifest.encodable(json.dumps(doc, separators=(",", ":"))))
    # index.html's text from the parts (each converted alone) is that of the whole
    parts = manifest_text.compose_parts(doc, {"tensors": ascii_json(texts["tensors"])},
                                        ascii_json)
    assert len(parts) == 2 * len(doc) + 1
    assert manifest_script_json(doc, parts) == manifest_script_json(doc)
    assert manifest_script_json({}, manifest_text.compose_parts({}, {})) == "{}"


def test_cut_members_refuses_what_it_cannot_cut() -> None:
    with pytest.raises(AssertionError):  # a member's value holding an object
        manifest_text.cut_members('{"a":{"x":{"y":1},"z":2},"b":{}}', 2)
    with pytest.raises(AssertionError):
        manifest_text.cut_items("[1,2]", 3)


_NAMES = ['model.layers.0.mlp.up_proj.weight', 'odd},"scale":1,"x":{"name', 'é·\u2028</script>',
          'back\\slash"quote', 'model.embed_tokens.weight']


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("hostile") / "model.safetensors"
    tensors = {n: rng.standard_normal((40 + 3 * i, 70), dtype=np.float32)
               for i, n in enumerate(_NAMES)}
    tensors["nan"] = np.full((3, 4), np.nan, np.float32)
    save_file(tensors, str(path))
    return path


def _inlined(page: str) -> str:
    m = re.search(r'<script type="application/json" id="weightvis-manifest">(.*?)</script>',
                  page, re.S)
    assert m is not None
    return m.group(1)


@pytest.mark.parametrize("workers", [1, 2])
def test_rendered_manifest_is_the_whole_documents_encoding(
        hostile: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int) -> None:
    """A render's manifest.json and index.html, made from parts, are what the reference
    encoders write of the manifest it returns; and the parts were used (not a fallback)."""
    spliced: list[set[str]] = []
    real = manifest_text.StaticParts.texts

    def spy(self: Any, *a: Any) -> dict[str, tuple[str, str]]:
        out = real(self, *a)
        spliced.append(set(out))
        return out

    monkeypatch.setattr(manifest_text.StaticParts, "texts", spy)
    res = render([hostile], tmp_path / "b", workers=workers)
    assert spliced == [{"scenes", "tensors"}]
    doc = res.manifest
    assert set(_NAMES) <= set(doc["tensors"]) and doc["tensors"][_NAMES[1]]["stats"]
    text = (res.out / "manifest.json").read_text("utf-8")
    assert text == manifest.encodable(json.dumps(doc, indent=1, ensure_ascii=False))
    page = (res.out / "index.html").read_text("utf-8")
    assert _inlined(page) == manifest_script_json(doc)  # (the ensure_ascii=True encoder)
    assert json.loads(_inlined(page)) == json.loads(text)


def test_a_manifest_changed_after_finish_is_encoded_whole(hostile: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """An entry with a field the parts do not know: no tensors text, the document is right."""
    real = manifest_text.StaticParts.texts

    def changed(self: Any, more: Any, entries: dict[str, Any]) -> dict[str, tuple[str, str]]:
        entries[_NAMES[0]]["extra"] = "é"
        out = real(self, more, entries)
        assert set(out) == {"scenes"}
        return out

    monkeypatch.setattr(manifest_text.StaticParts, "texts", changed)
    res = render([hostile], tmp_path / "b", workers=1)
    text = (res.out / "manifest.json").read_text("utf-8")
    assert json.loads(text)["tensors"][_NAMES[0]]["extra"] == "é"
    assert text == manifest.encodable(json.dumps(res.manifest, indent=1, ensure_ascii=False))


@pytest.mark.parametrize("piece", [1, 3, 1024])
def test_pieces_encode_as_one_call(monkeypatch: pytest.MonkeyPatch, piece: int) -> None:
    """Encoded a few entries at a time (so a thread lets the interpreter go between pieces),
    the texts are those of the whole, for the plain and the converted form."""
    rng = random.Random(piece)
    entries = _entries(rng, 10)
    items = [{"tensor": n, "label": "rows 0–3 · x"} for n in entries]
    monkeypatch.setattr(manifest_text, "PIECE", piece)
    whole = manifest.compact(entries)
    assert manifest_text.encode_members(entries, ascii_json) == (
        manifest_text.cut_members(whole, 10), manifest_text.cut_members(ascii_json(whole), 10))
    assert manifest_text.encode_list(items, ascii_json) == (
        manifest.compact(items), ascii_json(manifest.compact(items)))
    assert manifest_text.encode_members({}, ascii_json) == ([], [])
    assert manifest_text.encode_list([], ascii_json) == ("[]", "[]")


@pytest.mark.parametrize("seed", range(30))
def test_numbers_encode_as_the_whole_list(seed: int) -> None:
    """A column of numbers, each distinct one formatted once, is the text json.dumps writes of
    the list, cut apart: floats that compare equal but print apart (0.0, -0.0; 1, 1.0) too."""
    rng = random.Random(seed)
    pool = rng.choice([[0.0, -0.0, 0.5, None], [1, 1.0, 2, None], [0.0, 0.25, 1e-300, 1e300],
                       [-0.0, 3.5], [0, 7, 2**70], [rng.random() for _ in range(50)]])
    n = rng.choice([0, 1, 5, 600, 3000])
    values = [rng.choice(pool) for _ in range(n)]
    if rng.random() < 0.3:  # mostly distinct
        values = [rng.uniform(-1, 1) for _ in range(n)]
    got = manifest_text.encode_numbers(values)
    want = json.dumps(values, separators=(",", ":"))[1:-1]
    assert got is not None and ",".join(got) == want and len(got) == n
    assert manifest_text.encode_numbers([*values, "x"]) is None
    assert manifest_text.encode_numbers([*values, True]) is None
