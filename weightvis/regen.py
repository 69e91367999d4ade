"""The bundle's web page written from a manifest: ``index.html`` and the viewer assets. numpy-free,
so ``weightvis --regen-html BUNDLE`` runs without numpy (or anything numerical) loaded."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .manifest import read_manifest

__all__ = ["write_viewer", "regen_html", "write_text"]


def write_text(folder: Path, name: str, text: str) -> None:
    """Write ``folder/name`` under a temporary name, then rename it into place (``name`` may
    hold a subfolder: ``moe/layer-3.js``)."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_text(text, "utf-8")
    os.replace(tmp, path)


def write_viewer(folder: Path, manifest: dict[str, Any], compact: str | None = None) -> None:
    """``index.html`` and the viewer assets the manifest needs, into ``folder`` (``compact``:
    the manifest's compact JSON, when the caller has it)."""
    from .html import ALL_VIEWER_SCRIPTS, copy_viewer_assets, render_index_html, viewer_scripts

    copy_viewer_assets(folder, manifest)
    # scripts of ours this page does not use: those of another kind of bundle, and the single
    # viewer.js of bundles written before the viewer was split
    needed = set(viewer_scripts(manifest))
    stale = [folder / "assets" / "js" / s for s in ALL_VIEWER_SCRIPTS if s not in needed]
    for path in [*stale, folder / "assets" / "viewer.js"]:
        path.unlink(missing_ok=True)
    write_text(folder, "index.html",
               render_index_html(manifest, title=manifest.get("title"), compact=compact))


def regen_html(bundle: str | os.PathLike[str]) -> Path:
    """Rebuild ``index.html`` (and the viewer assets) of an existing bundle from its manifest
    (any manifest version this weightvis reads)."""
    b = Path(bundle)
    write_viewer(b, read_manifest(b))
    return b / "index.html"
