"""Output stores: where a bundle's files go. numpy-free.

A store gives the tile workers a picklable ``TileSink`` and the orchestration a folder to put the
other files in; ``commit`` publishes the bundle, ``abort`` removes what a failed run wrote.
The manifest and ``index.html`` are written last (bundle.build_bundle), so a bundle without a
manifest is never mistaken for a complete one.

- ``StagedFolderStore``: the default. Everything is written into a temporary folder beside
  ``--out`` and renamed into place when complete: a failed run leaves nothing half-written and
  never touches a folder that is not a weightvis bundle.
- ``FolderStore``: writes straight into a folder every worker can see (a shared folder for
  cluster workers); each tile is written under a temporary name and renamed, so no partial tile
  is ever visible. A remote store (the Hub, an fsspec URL) stages locally the same way and
  uploads on ``commit``.
"""

from __future__ import annotations

import abc
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from .errors import OutputError
from .manifest import is_bundle

__all__ = ["Store", "TileSink", "StagedFolderStore", "FolderStore", "check_out"]

Parts = Sequence[bytes | memoryview]


class TileSink(NamedTuple):
    """Writes tiles under ``root`` (picklable: every worker process gets a copy)."""

    root: str
    atomic: bool = False
    """Write each tile under a temporary name and rename it (for folders others read while
    the render runs); a staged folder needs no rename per tile."""

    def tile_dir(self, key: str, z: int, t_x: int) -> str:
        return os.path.join(self.root, "tiles", key, str(z), str(t_x))

    def write(self, directory: str, t_y: int, ext: str, parts: Parts) -> int:
        """Write one tile into ``directory`` (made by the caller); returns its size."""
        from .encode import write_parts

        path = os.path.join(directory, f"{t_y}.{ext}")
        if not self.atomic:
            return write_parts(path, list(parts))
        tmp = os.path.join(directory, f".{t_y}.{ext}.{os.getpid()}.tmp")
        n = write_parts(tmp, list(parts))
        os.replace(tmp, path)
        return n


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an ``--out`` that is a file, a folder that is not a bundle, or a bundle without
    ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a directory; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if not is_bundle(out):
            raise OutputError(f"{out}: exists and is not a weightvis bundle; weightvis never "
                              "overwrites it - choose another --out")
        if not overwrite:
            raise OutputError(f"{out}: a weightvis bundle is already there; pass --overwrite to "
                              "replace it")


class Store(abc.ABC):
    """Where a bundle is written: ``begin`` -> tiles through ``sink()`` and files into
    ``root`` -> ``commit`` (or ``abort``)."""

    out: Path
    """What the user named (the bundle's final place)."""

    @abc.abstractmethod
    def begin(self) -> Path:
        """Prepare and return the folder files are written into until ``commit``."""

    @abc.abstractmethod
    def sink(self) -> TileSink:
        """The tile writer handed to workers (after ``begin``)."""

    @abc.abstractmethod
    def commit(self) -> Path:
        """Publish the complete bundle; returns its final location."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Remove what this run wrote (a failed or interrupted run)."""

    @property
    def root(self) -> Path:
        r = self._root
        assert r is not None, "Store.begin() first"
        return r

    _root: Path | None = None


class StagedFolderStore(Store):
    """A temporary folder beside ``out``, renamed into place when complete."""

    def __init__(self, out: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        self.out = Path(out)
        check_out(self.out, overwrite)

    def begin(self) -> Path:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.parent / f".{self.out.name}.weightvis-tmp-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        self._root = tmp
        return tmp

    def sink(self) -> TileSink:
        return TileSink(str(self.root))

    def commit(self) -> Path:
        tmp, out = self.root, self.out
        if out.exists():
            # only an empty folder or one of our bundles gets here (checked at construction)
            if out.is_dir() and any(out.iterdir()) and not is_bundle(out):
                raise OutputError(f"{out}: appeared during rendering and is not a bundle")
            old = out.parent / f".{out.name}.weightvis-old-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
        self._root = None
        return out

    def abort(self) -> None:
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None


class FolderStore(Store):
    """Writes into ``out`` itself (created if missing; must be empty or a bundle with
    ``overwrite``): for a folder that every worker of a cluster can write to."""

    def __init__(self, out: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        self.out = Path(out)
        check_out(self.out, overwrite)
        self._made = False

    def begin(self) -> Path:
        self._made = not self.out.exists()
        self.out.mkdir(parents=True, exist_ok=True)
        for stale in ("manifest.json", "index.html"):  # the bundle is incomplete until commit
            (self.out / stale).unlink(missing_ok=True)
        old_tiles = self.out / "tiles"
        if old_tiles.exists():
            shutil.rmtree(old_tiles)
        self._root = self.out
        return self.out

    def sink(self) -> TileSink:
        return TileSink(str(self.root), atomic=True)

    def commit(self) -> Path:
        self._root = None
        return self.out

    def abort(self) -> None:
        if self._root is None:
            return
        if self._made:
            shutil.rmtree(self.out, ignore_errors=True)
        else:
            shutil.rmtree(self.out / "tiles", ignore_errors=True)
            for f in ("diff.json", "manifest.json", "index.html"):
                (self.out / f).unlink(missing_ok=True)
        self._root = None
