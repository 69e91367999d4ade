"""The ``--out`` folder's surroundings: the lock beside it, the parent folders a run creates,
removing what a run leaves, and the fingerprint that tells a killed run's leftovers it may
resume from those it must remove. numpy-free (store.py uses it; bundle.py computes the
fingerprint before the compiled kernels load).

The fingerprint is the sha256 of what a bundle's bytes depend on: the weightvis version, the
kind of bundle and its settings (the options without ``workers`` and ``overwrite``, each
scene's painter), and every input file: its real path, size, mtime, inode, and a hash of its
first ``HEADER_BYTES`` (where the safetensors and GGUF headers, a PyTorch archive's first
entries are).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import OutputError

__all__ = ["OutLock", "make_parents", "remove_empty", "remove", "pid_alive", "fingerprint",
           "HEADER_BYTES", "STAGING_VERSION"]

STAGING_VERSION = 1
"""Bumped when what a staging folder keeps changes (part of every fingerprint)."""
HEADER_BYTES = 1 << 20
"""Bytes hashed at the start of each input file for the fingerprint (where a safetensors or
GGUF header, a PyTorch archive's first entries are), with its size and mtime for the rest."""


def fingerprint(kind: str, settings: Mapping[str, Any],
                inputs: Sequence[Sequence[str | os.PathLike[str]]]) -> str:
    """sha256 (hex) of what a bundle's bytes depend on (module docstring). ``inputs``: the
    files of each checkpoint read (one list per side of a diff)."""
    doc = {"weightvis": __version__, "staging": STAGING_VERSION, "kind": kind,
           "settings": dict(settings), "inputs": [[_file_id(f) for f in side] for side in inputs]}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _file_id(path: str | os.PathLike[str]) -> list[Any]:
    if not os.path.exists(path):  # a file read by ranges (--stream): its pinned hf://…@commit
        return [os.fspath(path)]
    real = os.path.realpath(path)
    with open(real, "rb") as fh:
        st = os.fstat(fh.fileno())
        head = hashlib.sha256(fh.read(HEADER_BYTES)).hexdigest()
    return [real, st.st_size, st.st_mtime_ns, st.st_ino, head]


def remove(path: Path) -> None:
    """Remove a file, a symlink or a folder tree (whichever ``path`` is); gone is fine. A
    tree is tried again a few times while it is still there (a file written into it as it
    was removed: a cluster task that had not stopped yet)."""
    if path.is_dir() and not path.is_symlink():
        for attempt in range(5):
            shutil.rmtree(path, ignore_errors=True)
            if not os.path.lexists(path):
                break
            time.sleep(0.05 * (attempt + 1))
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: someone else's process
        return True
    return True


class OutLock:
    """An exclusive ``flock`` on ``path``, taken at once or not at all. The holder's pid is
    written into the file for the message another run shows."""

    def __init__(self, path: Path, shown: object) -> None:
        self.path = path
        self.fd: int | None = None
        try:
            import fcntl
        except ImportError:  # no flock (Windows): runs on one --out are not kept apart
            return
        for _ in range(50):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as e:
                raise OutputError(f"{shown}: cannot write beside it ({e.strerror or e})"
                                  ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode("ascii", "replace").strip()
                os.close(fd)
                who = f" (pid {holder})" if holder.isdigit() else ""
                raise OutputError(f"{shown}: another weightvis run{who} is writing this "
                                  "bundle; wait for it to end or choose another --out") from None
            except BaseException:
                os.close(fd)
                raise
            # the holder we waited for may have removed the file it locked: lock the file
            # that is there now, not the one we opened
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode("ascii"))
                self.fd = fd
                return
            os.close(fd)
        raise OutputError(f"{shown}: could not lock {path.name}; try again")

    def release(self) -> None:
        """Remove the file, then unlock it (so a waiter that opened it retries on a new one)."""
        if self.fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self.fd)
        self.fd = None


def make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns those created, deepest first."""
    missing = []
    p = folder
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    made: list[Path] = []
    try:
        for d in reversed(missing):
            d.mkdir()
            made.insert(0, d)
    except OSError as e:
        remove_empty(made)
        raise OutputError(f"{folder}: cannot create this folder ({e.strerror or e})") from None
    return made


def remove_empty(folders: list[Path]) -> None:
    for d in folders:  # deepest first; a folder something else now uses stays
        try:
            d.rmdir()
        except OSError:
            return
