"""Tensor names that are also names of Object.prototype's properties (``constructor``,
``toString``, ``valueOf``, ``hasOwnProperty``, ``__proto__``) are data like any other: the viewer
starts, search finds them, the readout and stats show them, and the change table of a diff lists
them, from file:// with no error (the viewer keys names with ``Map``, never with ``{}``).

And the names that once broke a render or the viewer (``BROKE``; the hostile-names fuzz target,
tests/fuzz/test_fuzz_viewer_names.py, found them) go through the same checks as its cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .conftest_viewer import (  # noqa: F401  (fixtures)
    chromium_reusing,
    make_diff_bundle,
    open_page,
    write_tiny_checkpoint,
)
from .fuzz.hostile_names import JS, check_page
from .test_viewer_browser import Bundle, hover_canvas_pixel, readout, set_view

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PROTO_NAMES = ["constructor", "toString", "valueOf", "hasOwnProperty", "__proto__"]

BROKE = [
    "a\ud800b", "\udcff",   # lone surrogates: manifest.json could not be written (traceback)
    "model.layers." + "1" * 5000 + ".mlp.weight",  # int() of 5,000 digits: name index, layout
    "model.layers.1.mlp.experts." + "7" * 5000 + ".up_proj.weight",  # ... and info
    "model.layers.\u0663.mlp.weight",   # an Arabic-Indic 3 posed as block 3
    # the overlay measured every cut of these: 0.2-0.5 s a frame, 190 M characters of cached
    # widths; and the stats box grew to fill the side panel
    "x" * 10_000, "a." * 5_000,
    f"</script ><script>{JS}</script>", f"<!--<script>{JS}</script>-->",  # stayed text: kept
    "model.layers.0.mlp.weight", "model.layers.1.mlp.weight",  # a block stack beside them
]


def _tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    t = {n: rng.standard_normal((6 + i, 9)).astype(np.float32) for i, n in enumerate(PROTO_NAMES)}
    # the same names as the slot of a block, whose label is the slot alone
    t.update({f"model.layers.0.{n}": rng.standard_normal((4, 5)).astype(np.float32)
              for n in PROTO_NAMES})
    t["model.norm.weight"] = np.ones(12, np.float32)
    return t


@pytest.fixture(scope="module")
def protob(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    import weightvis

    root = tmp_path_factory.mktemp("proto")
    ckpt = write_tiny_checkpoint(root / "model.safetensors", _tensors())
    result = weightvis.render([ckpt], root / "bundle", workers=1, quiet=True)
    manifest = json.loads((Path(result.out) / "manifest.json").read_text("utf-8"))
    return Bundle(Path(result.out), manifest)


def results(page: Any) -> list[str]:
    return page.eval_on_selector_all("#wv-results li.wv-result",
                                     "els => els.map(e => e.textContent)")


def test_prototype_names_render_search_and_read_out(protob: Bundle, open_page: Any) -> None:
    assert set(PROTO_NAMES) <= set(protob.manifest["tensors"])
    page, log = open_page(protob.url)
    assert page.evaluate("weightvis.app.model.items.length") == len(protob.manifest["tensors"])
    for name in PROTO_NAMES:
        page.fill("#wv-search", name)
        found = results(page)
        assert found[0] == name, found  # the exact name ranks first (match at 0, shortest)
        assert set(found) == {name, f"model.layers.0.{name}"}, found
        page.press("#wv-search", "Enter")
        assert page.evaluate("weightvis.app.selected.name") == name
        assert page.text_content("#wv-s-name") == name
        stats = page.eval_on_selector_all("#wv-s-table th", "els => els.map(e => e.textContent)")
        assert "elements" in stats
        (rect,) = protob.rects(name)
        set_view(page, rect[0] + rect[2] / 2, rect[1] + rect[3] / 2,
                 protob.scene()["max_zoom"] + 2)
        hover_canvas_pixel(page, rect[0] + 1, rect[1] + 2)
        r = readout(page)
        assert r["name"] == name
        assert r["element"] == "[2, 1]"
        assert r["shape"] == f"[{6 + PROTO_NAMES.index(name)}, 9]"
    page.fill("#wv-search", "")
    # labels of the block slots are the bare names, one per tensor
    set_view(page, 0, 0, 0)
    page.evaluate("weightvis.app.overlay.draw()")
    labels = page.evaluate("weightvis.labels()")
    names = [lab["name"] for lab in labels if lab["kind"] == "tensor"]
    assert len(names) == len(set(names))
    log.assert_clean()


def test_prototype_names_in_a_diff(tmp_path: Path, open_page: Any) -> None:
    a = _tensors()
    b = {k: v.copy() for k, v in a.items()}
    b["constructor"][1, 2] += np.float32(0.5)
    b["__proto__"][0, :] = 0
    del b["valueOf"]
    manifest = make_diff_bundle(tmp_path / "bundle", a, b, scenes=("delta", "a"))
    bundle = Bundle(tmp_path / "bundle", manifest)
    page, log = open_page(bundle.url)
    listed = page.eval_on_selector_all(
        "#wv-ct-rows tr.wv-ct-row td:first-child", "els => els.map(e => e.textContent)")
    assert set(listed) == {"constructor", "__proto__", "valueOf"}
    page.fill("#wv-search", "constructor")
    page.press("#wv-search", "Enter")
    stats = dict(zip(
        page.eval_on_selector_all("#wv-s-table th", "els => els.map(e => e.textContent)"),
        page.eval_on_selector_all("#wv-s-table td", "els => els.map(e => e.textContent)"),
        strict=True))
    assert stats["status"] == "changed" and stats["changed"].startswith("1 of 54 ")
    (rect,) = bundle.rects("constructor", "delta")
    set_view(page, rect[0] + rect[2] / 2, rect[1] + rect[3] / 2, bundle.scene()["max_zoom"] + 2)
    hover_canvas_pixel(page, rect[0] + 2, rect[1] + 1)
    assert page.text_content("#wv-r-delta") == "+0.5"
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("a")
    page.wait_for_function("weightvis.app.model.key === 'a'")
    assert page.evaluate("weightvis.app.selected.name") == "constructor"
    assert page.text_content("#wv-r-scale-label") == "scale s (A)"
    log.assert_clean()


def test_names_that_once_broke_weightvis(tmp_path: Path, open_page: Any) -> None:
    import weightvis
    from weightvis.formats.safetensors import write_safetensors

    rng = np.random.default_rng(11)
    ckpt = tmp_path / "broke.safetensors"
    write_safetensors(ckpt, {n: ("F32", (3, 8), rng.standard_normal((3, 8)).astype(np.float32))
                             for n in BROKE})
    result = weightvis.render([ckpt], tmp_path / "bundle", workers=1, quiet=True)
    page, log = open_page((Path(result.out) / "index.html").as_uri())
    check_page(page, log, BROKE, Path(result.out), diff=False)
