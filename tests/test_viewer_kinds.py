"""Scene kinds are plug-ins: a bundle loads the kinds its scenes use (weightvis.html.viewer_scripts)
and each kind draws its own legend. A byte-curve bundle loads ``kind-bytes.js`` and shows byte
values and classes, not a colour scale; a values bundle does not load it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from weightvis.html import viewer_scripts

from .conftest_viewer import chromium_reusing, open_page, write_tiny_checkpoint  # noqa: F401
from .test_viewer_browser import Bundle

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TEXTS = "els => els.map(e => e.textContent)"


def test_bytes_scene_kind_legend(tmp_path: Path, open_page: Any) -> None:
    import weightvis

    ckpt = write_tiny_checkpoint(tmp_path / "model.safetensors")
    result = weightvis.render([ckpt], tmp_path / "bytes", workers=1, quiet=True,
                              layout="hilbert", hilbert_unit="byte")
    manifest = json.loads((Path(result.out) / "manifest.json").read_text("utf-8"))
    bundle = Bundle(Path(result.out), manifest)
    assert "kind-bytes.js" in viewer_scripts(manifest)
    assert "kind-bytes.js" not in viewer_scripts({"scenes": [{"colormap": "values"}]})
    page, log = open_page(bundle.url)
    assert page.evaluate("weightvis.app.model.kind.name") == "bytes"
    # the byte classes of colormaps.bytes, no colour bar (test_viewer_legible.py checks them)
    assert page.eval_on_selector_all("#wv-legend-ticks .wv-tick", TEXTS) == []
    assert page.is_hidden("#wv-legend-bar")
    swatches = page.eval_on_selector_all("#wv-legend-swatches .wv-swatch", TEXTS)
    classes = manifest["colormaps"]["bytes"]["classes"]
    assert len(swatches) == len(classes) + 1 and swatches[-1] == "padding"
    assert all(s.startswith(c["label"]) for s, c in zip(swatches, classes, strict=False))
    assert page.text_content("#wv-legend-values") == "1 px = 1 byte, in file order"
    assert page.text_content(".wv-sub") == "weightvis · 1 px = 1 byte at full zoom"
    assert page.text_content("#wv-r-scale-label") == "scale"
    log.assert_clean()
