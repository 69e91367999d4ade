"""Output stores: where a bundle's files go. numpy-free.

A store gives the tile workers a picklable ``TileSink`` and the orchestration a folder to put the
other files in; ``commit`` publishes the bundle, ``abort`` removes what a failed run wrote.
The manifest and ``index.html`` are written last (bundle.build_bundle), so a bundle without a
manifest is never mistaken for a complete one.

- ``StagedFolderStore``: the default. Everything is written into ``.NAME.weightvis-staging``
  beside ``--out`` and moved into place when complete: a failed run leaves nothing
  half-written and never touches a folder that is not a weightvis bundle. The staging folder
  also keeps each finished tile subtree's result (resume.SubtreeRecords), so a run that was
  killed (SIGKILL, out of memory, power loss) is resumed by the next run on the same
  ``--out`` with the same inputs and options, or removed when they differ (the *fingerprint*
  written at ``begin``).
- ``FolderStore``: writes straight into a folder every worker can see (a shared folder for
  cluster workers); each tile is written under a temporary name and renamed, so no partial tile
  is ever visible. A remote store (the Hub, an fsspec URL) stages locally the same way and
  uploads on ``commit``.

Both work on ``--out``'s real location (a symlink is followed: the link stays, the folder it
points to receives the bundle) and, from construction to ``commit`` / ``abort`` / ``close``:

- hold an exclusive lock (``fcntl.flock``) on ``.NAME.weightvis-lock`` beside it, so a second
  run on the same folder fails at once; the kernel drops the lock of a killed run and the next
  run takes the file over; the file is removed when the store ends;
- remember the parent folders they had to create, and remove them again unless the bundle
  was committed.

Every name a store makes is ``.NAME.weightvis-*`` beside ``--out``; none survives a run that
ends (successfully, by an error, or by a signal the CLI handles); after a SIGKILL the next run
on the same ``--out`` resumes or removes them.
"""

from __future__ import annotations

import abc
import contextlib
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from .errors import OutputError
from .interrupts import deferred
from .manifest import is_bundle
from .outdir import OutLock, make_parents, pid_alive, remove, remove_empty

__all__ = ["Store", "TileSink", "StagedFolderStore", "FolderStore", "check_out", "writing",
           "BUNDLE_ENTRIES"]

Parts = Sequence[bytes | memoryview]

BUNDLE_ENTRIES = frozenset({"index.html", "manifest.json", "diff.json", "moe.json", "moe",
                            "assets", "tiles"})
"""What weightvis writes at the top of a bundle (tests/test_trust_outputs.py checks that every
bundle kind stays within it). ``--overwrite`` refuses a bundle holding anything else."""
_OS_LITTER = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
"""Files a file browser drops into folders it shows: not the user's work."""

RESUME_DIR = ".weightvis-resume"
"""Inside the staging folder: the fingerprint and the finished subtrees (removed at commit)."""


class TileSink(NamedTuple):
    """Writes tiles under ``root`` (picklable: every worker process gets a copy)."""

    root: str
    atomic: bool = False
    """Write each tile under a temporary name and rename it (for folders others read while
    the render runs); a staged folder needs no rename per tile."""
    out: str = ""
    """The bundle's final place, named in error messages."""

    def tile_dir(self, key: str, z: int, t_x: int) -> str:
        return os.path.join(self.root, "tiles", key, str(z), str(t_x))

    def make_dir(self, key: str, z: int, t_x: int) -> str:
        """``tile_dir``, created if missing."""
        d = self.tile_dir(key, z, t_x)
        if os.path.isdir(d):
            return d
        # level by level below root, never root itself: a task still running after its run was
        # aborted (a cluster's) fails here instead of bringing back a removed staging folder
        chain = [os.path.join(self.root, "tiles"), os.path.join(self.root, "tiles", key),
                 os.path.join(self.root, "tiles", key, str(z)), d]
        try:
            for level in chain:
                try:
                    os.mkdir(level)
                except FileExistsError:
                    pass
        except OSError as e:
            raise self._error(d, e) from None
        return d

    def write(self, directory: str, t_y: int, ext: str, parts: Parts) -> int:
        """Write one tile into ``directory`` (made by the caller); returns its size."""
        from .encode import write_parts

        path = os.path.join(directory, f"{t_y}.{ext}")
        try:
            if not self.atomic:
                return write_parts(path, list(parts))
            tmp = os.path.join(directory, f".{t_y}.{ext}.{os.getpid()}.tmp")
            n = write_parts(tmp, list(parts))
            os.replace(tmp, path)
            return n
        except OSError as e:
            raise self._error(path, e) from None

    def _error(self, path: str, e: OSError) -> OutputError:
        return _write_error(self.out or self.root, os.path.relpath(path, self.root), e)


def _write_error(out: object, what: str, e: OSError) -> OutputError:
    return OutputError(f"{out}: cannot write {what}: {e.strerror or e}")


@contextlib.contextmanager
def writing(out: object, what: str) -> Iterator[None]:
    """Turn an OSError of the block (disk full, permission denied...) into an OutputError
    naming the bundle and what was being written."""
    try:
        yield
    except OSError as e:
        raise _write_error(out, what, e) from None


def check_out(out: Path, overwrite: bool, shown: object = None) -> None:
    """Refuse an ``--out`` that is a file, a folder that is not a bundle, a bundle without
    ``overwrite``, or a bundle holding files weightvis did not write (``shown``: how to name
    ``out`` in messages)."""
    shown = out if shown is None else shown
    if out.exists() and not out.is_dir():
        raise OutputError(f"{shown}: exists and is not a directory; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if not is_bundle(out):
            raise OutputError(f"{shown}: exists and is not a weightvis bundle; weightvis never "
                              "overwrites it - choose another --out")
        if not overwrite:
            raise OutputError(f"{shown}: a weightvis bundle is already there; pass --overwrite "
                              "to replace it")
        foreign = sorted(p.name for p in out.iterdir()
                         if p.name not in BUNDLE_ENTRIES and p.name not in _OS_LITTER)
        if foreign:
            more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
            raise OutputError(f"{shown}: this bundle also holds {', '.join(foreign[:3])}{more}, "
                              "which weightvis did not write and --overwrite would delete; move "
                              "them out or choose another --out")


class Store(abc.ABC):
    """Where a bundle is written: ``begin`` -> tiles through ``sink()`` and files into
    ``root`` -> ``commit`` (or ``abort``); ``close`` ends a store that was never begun."""

    out: Path
    """What the user named (the bundle's final place)."""

    @abc.abstractmethod
    def begin(self, fingerprint: str | None = None) -> Path:
        """Prepare and return the folder files are written into until ``commit``.
        ``fingerprint`` identifies what will be written (inputs, options, version): a store
        that keeps ``records`` resumes the leftovers of a killed run with the same one."""

    @abc.abstractmethod
    def sink(self) -> TileSink:
        """The tile writer handed to workers (after ``begin``)."""

    @abc.abstractmethod
    def commit(self) -> Path:
        """Publish the complete bundle; returns its final location."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Remove what this run wrote (a failed or interrupted run)."""

    def close(self) -> None:
        """Release what the store holds (a store that was begun and not committed aborts)."""

    def space(self, needed: int) -> tuple[Path, int] | None:
        """Before ``begin``: raise OutputError if the destination can't take ``needed`` more
        bytes; return the folder checked and its free bytes (None: nothing to check)."""
        return None

    @property
    def records(self) -> Path | None:
        """Where finished subtrees are kept for a resume (after ``begin``); None: nowhere."""
        return None

    @property
    def resumed(self) -> bool:
        """``begin`` found a killed run's leftovers with the same fingerprint and kept them."""
        return False

    @property
    def root(self) -> Path:
        r = self._root
        assert r is not None, "Store.begin() first"
        return r

    _root: Path | None = None


class _LocalStore(Store):
    """The lock, the created parents and the overwrite rules of a store on a local folder."""

    def __init__(self, out: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        self.out = Path(out)
        self.path = Path(os.path.realpath(out))
        """Where the bundle goes: ``out`` with every symlink followed."""
        self.overwrite = overwrite
        self._committed = False
        self._lock: OutLock | None = None
        if not self.path.name:
            raise OutputError(f"{self.out}: cannot write a bundle here; name a folder")
        self._made = make_parents(self.path.parent)
        try:
            self._lock = OutLock(self._beside("lock"), self.out)
            self._recover()
            check_out(self.path, overwrite, self.out)
        except BaseException:
            self.close()
            raise

    def _beside(self, what: str) -> Path:
        return self.path.parent / f".{self.path.name}.weightvis-{what}"

    def space(self, needed: int) -> tuple[Path, int] | None:
        """The files go beside ``out`` (a staging folder) or into it: its parent's filesystem
        must hold them; a killed run's staging folder is reused or removed, so its bytes
        count as free."""
        from .disk import check_space, folder_bytes

        staged = folder_bytes(self._beside("staging"))
        where = self.path.parent
        return where, check_space(where, needed, self.out, reclaimable=staged)

    def _recover(self) -> None:
        """Tidy what killed runs left beside ``out`` (we hold the lock: none of it is in use).
        A run killed between moving the previous bundle aside and its own into place leaves
        the previous one as ``-old``: it goes back. Names of older weightvis versions
        (``-tmp-PID``, ``-old-PID``) go when that process is gone."""
        old = self._beside("old")
        if os.path.lexists(old):
            if not os.path.lexists(self.path):
                os.replace(old, self.path)
            else:
                remove(old)
        named = {self.path, Path(os.path.abspath(self.out))}  # (older versions: the link)
        for place in named:
            prefix = f".{place.name}.weightvis-"
            try:
                with os.scandir(place.parent) as entries:
                    legacy = [Path(e.path) for e in entries if e.name.startswith(prefix)
                              and e.name[len(prefix):].split("-")[0] in ("tmp", "old")
                              and e.name.rsplit("-", 1)[-1].isdigit()]
            except OSError:
                continue
            for p in legacy:
                if not pid_alive(int(p.name.rsplit("-", 1)[-1])):
                    remove(p)

    def close(self) -> None:
        if self._root is not None:
            self.abort()
            return
        with deferred():
            if self._lock is not None:
                self._lock.release()
                self._lock = None
            if not self._committed:
                remove_empty(self._made)
            self._made = []


class StagedFolderStore(_LocalStore):
    """A staging folder beside ``out``, moved into place when complete (resumable)."""

    _records: Path | None = None
    _resumed = False

    def begin(self, fingerprint: str | None = None) -> Path:
        stage = self._beside("staging")
        mark = stage / RESUME_DIR / "fingerprint"
        with writing(self.out, "the staging folder"):
            self._resumed = (fingerprint is not None and stage.is_dir()
                             and not stage.is_symlink() and _read(mark) == fingerprint)
            if not self._resumed:
                if os.path.lexists(stage):
                    remove(stage)
                stage.mkdir()
                if fingerprint is not None:
                    mark.parent.mkdir()
                    tmp = mark.with_name(".fingerprint.tmp")
                    tmp.write_text(fingerprint, "ascii")
                    os.replace(tmp, mark)
            else:  # keep the tiles and the records; the rest is written again
                for p in stage.iterdir():
                    if p.name not in ("tiles", RESUME_DIR):
                        remove(p)
        self._root = stage
        self._records = mark.parent / "subtrees" if fingerprint is not None else None
        return stage

    @property
    def records(self) -> Path | None:
        return self._records

    @property
    def resumed(self) -> bool:
        return self._resumed

    def sink(self) -> TileSink:
        return TileSink(str(self.root), out=str(self.out))

    def commit(self) -> Path:
        stage, path = self.root, self.path
        with deferred(), writing(self.out, "the bundle into place"):
            remove(stage / RESUME_DIR)  # a bundle carries no resume records
            # another program may have written there meanwhile (weightvis runs wait: the lock)
            check_out(path, self.overwrite, self.out)
            old = None
            if os.path.lexists(path) and any(path.iterdir()):
                old = self._beside("old")
                os.replace(path, old)  # (a run killed right here gets it back: _recover)
            try:
                os.replace(stage, path)  # onto nothing or an empty folder
            except BaseException:
                if old is not None:
                    os.replace(old, path)
                raise
            self._root = None
            self._committed = True
            if old is not None:
                remove(old)
        self.close()
        return self.out

    def abort(self) -> None:
        with deferred():
            if self._root is not None:
                remove(self._root)
                self._root = None
            self.close()


def _read(path: Path) -> str | None:
    try:
        return path.read_text("ascii")
    except (OSError, UnicodeDecodeError):
        return None


class FolderStore(_LocalStore):
    """Writes into ``out`` itself (created if missing; must be empty or a bundle with
    ``overwrite``): for a folder that every worker of a cluster can write to."""

    _made_out = False

    def begin(self, fingerprint: str | None = None) -> Path:
        with writing(self.out, "the bundle folder"):
            self._made_out = not self.path.exists()
            self.path.mkdir(exist_ok=True)
            self._root = self.path
            for stale in ("manifest.json", "index.html"):  # incomplete until commit
                (self.path / stale).unlink(missing_ok=True)
            old_tiles = self.path / "tiles"
            if old_tiles.exists():
                shutil.rmtree(old_tiles)
        return self.path

    def sink(self) -> TileSink:
        return TileSink(str(self.root), atomic=True, out=str(self.out))

    def commit(self) -> Path:
        self._root = None
        self._committed = True
        self.close()
        return self.out

    def abort(self) -> None:
        with deferred():
            if self._root is not None:
                if self._made_out:
                    remove(self.path)
                else:  # (an old bundle here was taken apart by begin)
                    for name in BUNDLE_ENTRIES:
                        remove(self.path / name)
                self._root = None
            self.close()
