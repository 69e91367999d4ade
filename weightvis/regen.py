"""The bundle's web page written from a manifest: ``index.html`` and the viewer assets. numpy-free,
so ``weightvis --regen-html BUNDLE`` runs without numpy (or anything numerical) loaded."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .manifest import read_manifest

__all__ = ["write_viewer", "regen_html", "write_text"]


def write_text(folder: Path, name: str, text: str) -> None:
    """Write ``folder/name`` under a temporary name, then rename it into place."""
    tmp = folder / f".{name}.tmp"
    tmp.write_text(text, "utf-8")
    os.replace(tmp, folder / name)


def write_viewer(folder: Path, manifest: dict[str, Any]) -> None:
    """``index.html`` and the viewer assets the manifest needs, into ``folder``."""
    from .html import copy_viewer_assets, render_index_html

    copy_viewer_assets(folder)
    write_text(folder, "index.html", render_index_html(manifest, title=manifest.get("title")))


def regen_html(bundle: str | os.PathLike[str]) -> Path:
    """Rebuild ``index.html`` (and the viewer assets) of an existing bundle from its manifest
    (any manifest version this weightvis reads)."""
    b = Path(bundle)
    write_viewer(b, read_manifest(b))
    return b / "index.html"
