"""Search by any name, in headless Chromium from file:// (issue 14, item 3): a real GGUF's tensors
by their Hugging Face names, a real safetensors' tensors by their GGUF names, a diff's pairs by
the names of either side; partial matches, a list of results to pick from with the keyboard and
the mouse. And a cross-architecture diff's warning leads its change panel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from safetensors.numpy import save_file

import weightvis

from .conftest import real_checkpoint
from .conftest_viewer import chromium_reusing, open_page  # noqa: F401  (fixtures)
from .test_diff_crossformat import _cross_pair
from .test_viewer_browser import Bundle, hover_canvas_pixel, set_view, view_contains
from .test_viewer_diff import diff_readout

pytestmark = [pytest.mark.browser, pytest.mark.slow]

RESULTS = """els => els.map(e => {
    const a = e.querySelector('.wv-result-alias');
    return a ? [e.querySelector('.wv-result-name').textContent,
                a.querySelector('.wv-result-label').textContent,
                a.textContent.slice(a.querySelector('.wv-result-label').textContent.length)]
             : [e.textContent, null, null];
})"""


def _bundle(out: Path) -> Bundle:
    return Bundle(out, json.loads((out / "manifest.json").read_text("utf-8")))


def results(page: Any) -> list[tuple[str, str | None, str | None]]:
    """(tensor name, label of the other name it was found by, that name) per result."""
    return [tuple(r) for r in page.eval_on_selector_all("#wv-results li.wv-result", RESULTS)]


def selected(page: Any) -> str:
    return str(page.evaluate("weightvis.app.selected && weightvis.app.selected.name"))


@pytest.fixture(scope="module")
def smol(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """A real llama GGUF (SmolLM2-135M, Q4_1) rendered."""
    out = tmp_path_factory.mktemp("smol") / "bundle"
    weightvis.render([real_checkpoint("smollm2")], out, workers=2, quiet=True)
    return _bundle(out)


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """A real BERT safetensors (all-MiniLM-L6-v2) rendered."""
    out = tmp_path_factory.mktemp("minilm") / "bundle"
    weightvis.render([real_checkpoint("minilm")], out, workers=2, quiet=True)
    return _bundle(out)


def test_hf_names_find_the_tensors_of_a_real_gguf(smol: Bundle, open_page: Any) -> None:
    tensors = smol.manifest["tensors"]
    q = {f"blk.{i}.attn_q.weight" for i in range(30)}
    assert q <= set(tensors)
    page, log = open_page(smol.url)
    page.fill("#wv-search", "q_proj")  # what the map's labels say
    found = results(page)
    assert {r[0] for r in found} == q and len(found) == 30
    assert all(r[1] == "HF" and r[2] == tensors[r[0]]["canonical"] for r in found)
    assert all(r[2].startswith("model.layers.") and r[2].endswith(".self_attn.q_proj.weight")
               for r in found)
    # a whole HF name: its tensor first; Enter zooms to it and selects it
    page.fill("#wv-search", "model.layers.3.self_attn.q_proj.weight")
    assert results(page)[0] == ("blk.3.attn_q.weight", "HF",
                                "model.layers.3.self_attn.q_proj.weight")
    page.press("#wv-search", "Enter")
    assert selected(page) == "blk.3.attn_q.weight"
    assert view_contains(page, smol.rects("blk.3.attn_q.weight")[0])
    # a part of a name; the arrow keys pick the second result
    page.fill("#wv-search", "layers.12.mlp.")
    found = results(page)
    assert {r[0] for r in found} == {f"blk.12.ffn_{p}.weight" for p in ("gate", "up", "down")}
    page.press("#wv-search", "ArrowDown")
    page.press("#wv-search", "ArrowDown")
    page.press("#wv-search", "Enter")
    assert selected(page) == found[1][0]
    # the GGUF's own names still match, as themselves (no other name shown)
    page.fill("#wv-search", "blk.7.ffn_down")
    assert results(page) == [("blk.7.ffn_down.weight", None, None)]
    # the mouse: a click on a result
    page.fill("#wv-search", "down_proj")
    found = results(page)
    target = "blk.20.ffn_down.weight"
    page.click(f"#wv-results li.wv-result >> nth={[r[0] for r in found].index(target)}")
    assert selected(page) == target
    assert view_contains(page, smol.rects(target)[0])
    log.assert_clean()


def test_gguf_names_find_the_tensors_of_a_real_safetensors(minilm: Bundle,
                                                           open_page: Any) -> None:
    tensors = minilm.manifest["tensors"]
    ref = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, 6)
    for name, t in tensors.items():  # the manifest's gguf names are gguf-py's own
        assert t.get("gguf") == ref.get_name(name, try_suffixes=(".weight", ".bias")), name
    page, log = open_page(minilm.url)
    page.fill("#wv-search", "blk.2.attn_q")
    found = results(page)
    assert sorted(found) == [
        ("encoder.layer.2.attention.self.query.bias", "GGUF", "blk.2.attn_q.bias"),
        ("encoder.layer.2.attention.self.query.weight", "GGUF", "blk.2.attn_q.weight")]
    page.press("#wv-search", "ArrowDown")
    page.press("#wv-search", "Enter")
    assert selected(page) == found[0][0]
    assert view_contains(page, minilm.rects(found[0][0])[0])
    page.fill("#wv-search", "token_embd.weight")
    assert results(page) == [("embeddings.word_embeddings.weight", "GGUF", "token_embd.weight")]
    page.click("#wv-results li.wv-result >> nth=0")
    assert selected(page) == "embeddings.word_embeddings.weight"
    log.assert_clean()


def test_a_diff_finds_a_pair_by_either_sides_name(tmp_path: Path, open_page: Any) -> None:
    rng = np.random.default_rng(0)
    b = {f"model.layers.{i}.mlp.up_proj.weight": rng.standard_normal((8, 6)).astype(np.float32)
         for i in range(3)}
    a = {"module." + k: v for k, v in b.items()}  # DDP's prefix: paired all the same
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file(b, str(tmp_path / "b.safetensors"))
    res = weightvis.diff([tmp_path / "a.safetensors"], [tmp_path / "b.safetensors"],
                         tmp_path / "d", workers=1)
    assert sorted((p["a"], p["b"]) for p in res.diff["pairs"]) == sorted(
        ("module." + k, k) for k in b)
    page, log = open_page((Path(res.out) / "index.html").resolve().as_uri())
    page.fill("#wv-search", "module.model.layers.1")
    assert results(page) == [("model.layers.1.mlp.up_proj.weight", "A",
                              "module.model.layers.1.mlp.up_proj.weight")]
    page.fill("#wv-search", "blk.2.ffn_up")  # and by its GGUF name
    assert results(page) == [("model.layers.2.mlp.up_proj.weight", "GGUF", "blk.2.ffn_up.weight")]
    page.press("#wv-search", "Enter")
    assert selected(page) == "model.layers.2.mlp.up_proj.weight"
    log.assert_clean()


def test_cross_architecture_warning_leads_the_change_panel(tmp_path: Path,
                                                           open_page: Any) -> None:
    a, b = _cross_pair(tmp_path)
    res = weightvis.diff([a], [b], tmp_path / "d", workers=1)
    (warning,) = res.diff["warnings"]
    bundle = _bundle(Path(res.out))
    page, log = open_page(bundle.url)
    box = "#wv-ct-warnings"
    assert page.eval_on_selector_all(f"{box} li", "els => els.map(e => e.textContent)") == [
        warning]
    assert page.is_visible(box)
    # before the counts and the diagnosis, and still shown with the table hidden
    assert page.evaluate("""() => !!(document.getElementById('wv-ct-warnings')
        .compareDocumentPosition(document.getElementById('wv-ct-summary'))
        & Node.DOCUMENT_POSITION_FOLLOWING)""")
    page.click("#wv-ct-toggle")
    assert page.is_visible(box)
    page.click("#wv-ct-toggle")
    # an element both sides have, of a pair that is not compared
    (pl,) = [p for p in bundle.scene("delta")["placements"]
             if p["tensor"] == "blk.0.attn_q.weight"]
    x, y, _, _ = pl["rect"]
    set_view(page, x + 4, y + 4, bundle.scene("delta")["max_zoom"] + 3)
    hover_canvas_pixel(page, x + 2, y + 3)
    r = diff_readout(page)
    assert r["name"] == "blk.0.attn_q.weight"
    assert r["ab"] == "not compared (different architectures)"
    log.assert_clean()
