"""Sidecar files beside a checkpoint - ``config.json``, the model card ``README.md`` - read with
a size bound and validated. A sidecar is optional: one that is unreadable, too large, not JSON,
or holds values of the wrong type is ignored (wholly, or the one bad value) with a
``WeightvisWarning`` naming the file, and the run goes on - a broken optional file must not stop
a render that needs nothing from it.

Bound: ``WEIGHTVIS_MAX_SIDECAR_BYTES`` (``formats/limits.py``; default 16 MiB: the largest
``config.json`` on the Hub is well under 1 MiB, a long model card a few hundred KiB).

numpy-free.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path
from typing import Any

from ..errors import FormatError, WeightvisWarning
from ..untrusted import json_safe, load_json
from .limits import MAX_SIDECAR_BYTES_ENV, max_sidecar_bytes

__all__ = ["CONFIG_FIELDS", "Enclosure", "read_limited", "read_bounded", "read_config",
           "read_model_card"]

CONFIG_FIELDS: dict[str, type] = {
    **{k: int for k in ("hidden_size", "d_model", "n_embd", "num_attention_heads", "n_head",
                        "num_key_value_heads", "num_hidden_layers", "vocab_size",
                        "max_position_embeddings", "num_local_experts", "num_experts")},
    "tie_word_embeddings": bool,
    "model_type": str,
}
"""The ``config.json`` fields weightvis uses, and their type (counts are non-negative integers;
``null`` means absent). A field of another type is dropped with a warning."""


class Enclosure:
    """Where the files found through a folder (its listing, its index's ``weight_map``, its
    sidecars) may lie: inside the folder, symbolic links followed - or, for a folder of a
    Hugging Face cache (``<repo>/snapshots/<revision>``, whose files are links to
    ``<repo>/blobs/<sha>``), inside that repository's ``blobs``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        try:
            root = folder.resolve()
        except (OSError, RuntimeError, ValueError):  # RuntimeError: a link loop (Python < 3.13)
            self.roots: tuple[Path, ...] = ()
            return
        blobs = (root.parent.parent / "blobs",) if root.parent.name == "snapshots" else ()
        self.roots = (root, *blobs)

    def holds(self, path: Path) -> bool:
        """True when ``path`` resolves inside (False when it cannot be resolved)."""
        try:
            real = path.resolve()
        except (OSError, RuntimeError, ValueError):
            return False
        return any(real.is_relative_to(r) for r in self.roots)


def _warn(path: Path, problem: str) -> None:
    warnings.warn(f"{path}: {problem}", WeightvisWarning, stacklevel=3)


def read_limited(path: Path, what: str, limit: int | None = None,
                 enclosure: Enclosure | None = None) -> bytes:
    """The bytes of the regular file ``path``; a ``FormatError`` naming it when it cannot be
    read, is not a regular file (a FIFO would block the read), lies outside ``enclosure`` or
    is larger than ``limit`` (default: ``max_sidecar_bytes()``)."""
    hint = f" ({MAX_SIDECAR_BYTES_ENV})" if limit is None else ""
    limit = max_sidecar_bytes() if limit is None else limit
    try:
        st = path.stat()
    except (OSError, ValueError) as e:  # absent, a symlink loop, a NUL in the name ...
        raise FormatError(path, f"{what} cannot be read ({_why(e)})") from None
    if enclosure is not None and not enclosure.holds(path):
        raise FormatError(path, f"{what} resolves outside {enclosure.folder} (a symbolic "
                                "link)")
    if not stat.S_ISREG(st.st_mode):
        raise FormatError(path, f"{what} is not a regular file")
    if st.st_size > limit:
        raise FormatError(path, f"{what} is {st.st_size} bytes, over the {limit}-byte "
                                f"bound{hint}")
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as e:
        raise FormatError(path, f"{what} cannot be read ({_why(e)})") from None
    if len(data) > limit:  # grew since the stat
        raise FormatError(path, f"{what} is over the {limit}-byte bound{hint}")
    return data


def read_bounded(path: Path, what: str, limit: int | None = None,
                 enclosure: Enclosure | None = None) -> bytes | None:
    """``read_limited`` for an optional file: None when it is absent, and None with a warning
    when it is unusable."""
    if not os.path.lexists(path):
        return None
    try:
        return read_limited(path, what, limit, enclosure)
    except FormatError as e:
        _warn(path, f"{e.problem}: ignored")
        return None


def _why(e: BaseException) -> str:
    return e.strerror if isinstance(e, OSError) and e.strerror else str(e)


def read_config(path: Path, enclosure: Enclosure | None = None) -> dict[str, Any]:
    """``config.json`` as a JSON-safe dict (``untrusted.json_safe``), the fields of
    ``CONFIG_FIELDS`` type-checked; {} when absent or unusable (with a warning). With an
    ``enclosure``, a file resolving outside it is unusable: the config is copied into the
    bundle, and a link must not make it carry a file the user did not name."""
    data = read_bounded(path, "config.json", enclosure=enclosure)
    if data is None:
        return {}
    try:
        doc = load_json(data.decode("utf-8"), path, what="config.json")
        if not isinstance(doc, dict):
            raise FormatError(path, f"config.json holds a JSON {type(doc).__name__}, not an "
                                    "object")
        doc = json_safe(doc, path, what="config.json")
    except UnicodeDecodeError as e:
        _warn(path, f"config.json is not UTF-8 text (byte {e.start}): ignored")
        return {}
    except FormatError as e:
        _warn(path, f"{e.problem}: ignored")
        return {}
    assert isinstance(doc, dict)
    for key, typ in CONFIG_FIELDS.items():
        v = doc.get(key)
        if v is None:
            continue
        ok = (type(v) is bool if typ is bool  # noqa: E721 (bool is an int: exact types)
              else type(v) is int and v >= 0 if typ is int  # noqa: E721
              else isinstance(v, typ))
        if not ok:
            shown = repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "..."
            want = "a non-negative integer" if typ is int else f"a JSON {typ.__name__}"
            _warn(path, f"config.json field {key!r} is {shown}, not {want}: ignored")
            del doc[key]
    return doc


def read_model_card(folder: Path) -> str:
    """The model card (``README.md``) of a checkpoint folder as text ('' when absent or
    unusable - not a regular file, too large, a link out of the folder - with a warning);
    invalid UTF-8 is replaced, NUL characters dropped."""
    data = read_bounded(folder / "README.md", "the model card", enclosure=Enclosure(folder))
    if data is None:
        return ""
    return data.decode("utf-8", errors="replace").replace("\x00", "")
