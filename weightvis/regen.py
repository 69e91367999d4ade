"""The bundle's web page written from a manifest: ``index.html`` and the viewer assets. numpy-free,
so ``weightvis --regen-html BUNDLE`` runs without numpy (or anything numerical) loaded."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .manifest import encodable, read_manifest

__all__ = ["write_viewer", "regen_html", "write_text"]


def write_text(folder: Path, name: str, text: str | bytes | list[str]) -> None:
    """Write ``folder/name`` (``text``, bytes already UTF-8, or the parts of a text: a 30 MB
    page is not joined first) under a temporary name, then rename it into place (``name`` may
    hold a subfolder: ``moe/layer-3.js``)."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp"
    if isinstance(text, list):
        with open(tmp, "wb") as f:
            for part in text:
                f.write(part.encode("utf-8"))
    else:
        tmp.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    os.replace(tmp, path)


def write_viewer(folder: Path, manifest: dict[str, Any],
                 compact: str | Sequence[str] | None = None) -> None:
    """``index.html`` and the viewer assets the manifest needs, into ``folder`` (``compact``:
    the manifest's compact JSON, or its parts, when the caller has it)."""
    from .html import ALL_VIEWER_SCRIPTS, copy_viewer_assets, index_html_parts, viewer_scripts

    copy_viewer_assets(folder, manifest)
    # scripts of ours this page does not use: those of another kind of bundle, and the single
    # viewer.js of bundles written before the viewer was split
    needed = set(viewer_scripts(manifest))
    stale = [folder / "assets" / "js" / s for s in ALL_VIEWER_SCRIPTS if s not in needed]
    for path in [*stale, folder / "assets" / "viewer.js"]:
        path.unlink(missing_ok=True)
    write_text(folder, "index.html",
               index_html_parts(manifest, title=manifest.get("title"), compact=compact))


def regen_html(bundle: str | os.PathLike[str], title: str | None = None) -> Path:
    """Rebuild ``index.html`` (and the viewer assets) of an existing bundle from its manifest
    (any manifest version this weightvis reads). ``title``: a new title, written to
    ``manifest.json`` as well, so that the page and the manifest (which other tools read, and a
    later rebuild starts from) agree."""
    b = Path(bundle)
    manifest = read_manifest(b)
    if title is not None and title != manifest.get("title"):
        # the stored document, as it is (not as read_manifest upgraded it), with a new title
        stored = json.loads((b / "manifest.json").read_text("utf-8"))
        stored["title"] = title
        write_text(b, "manifest.json", encodable(json.dumps(stored, indent=1, allow_nan=False,
                                                            ensure_ascii=False)))
        manifest = {**manifest, "title": title}
    write_viewer(b, manifest)
    return b / "index.html"
