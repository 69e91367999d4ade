"""Bounds on what a PyTorch checkpoint may make weightvis do that a real checkpoint could come
near: options, read from the environment when a reader opens (so that a forked worker and the
main process agree). Each bounds work or memory by a multiple of the file's own size, so a small
hostile file cannot cost much more than a big honest one.

- ``WEIGHTVIS_MAX_PICKLE_MEMORY`` (default 1 GiB): growth of the process's resident memory
  while one pickle is read (``data.pkl``, or one of a legacy file's pickles).
- ``WEIGHTVIS_MAX_ZIP_RATIO`` (default 100): the compressed zip entries read inflate, together,
  to at most this many times the file's size (+ ``INFLATE_ALLOWANCE``, 64 MiB).
- ``WEIGHTVIS_MAX_ZIP_ENTRIES`` (default 262,144): entries in a zip checkpoint.
- ``WEIGHTVIS_MAX_VIEW_RATIO`` (default 4): elements drawn per byte of the storages they view
  (+ ``VIEW_ALLOWANCE``, 16 Mi elements): views that overlap (stride 0, a storage shared many
  times over) cannot multiply the work without bound.
- ``WEIGHTVIS_CHECK_CRC`` (default 1): 0 skips the CRC-32 check of zip entries.

numpy-free.
"""

from __future__ import annotations

from .limits import env_limit

__all__ = ["PICKLE_MEMORY_ENV", "ZIP_RATIO_ENV", "ZIP_ENTRIES_ENV", "VIEW_RATIO_ENV", "CRC_ENV",
           "INFLATE_ALLOWANCE", "VIEW_ALLOWANCE", "max_pickle_memory", "max_zip_ratio",
           "max_zip_entries", "max_view_ratio", "check_crc"]

PICKLE_MEMORY_ENV = "WEIGHTVIS_MAX_PICKLE_MEMORY"
ZIP_RATIO_ENV = "WEIGHTVIS_MAX_ZIP_RATIO"
ZIP_ENTRIES_ENV = "WEIGHTVIS_MAX_ZIP_ENTRIES"
VIEW_RATIO_ENV = "WEIGHTVIS_MAX_VIEW_RATIO"
CRC_ENV = "WEIGHTVIS_CHECK_CRC"

INFLATE_ALLOWANCE = 64 << 20
"""Bytes every zip checkpoint may inflate whatever its size (a tiny file of zeros is no bomb)."""
VIEW_ALLOWANCE = 1 << 24
"""Elements every checkpoint may draw whatever its storages (64 tiles of 512²)."""


def max_pickle_memory() -> int:
    """Bytes one pickle may add to the resident memory (``WEIGHTVIS_MAX_PICKLE_MEMORY``)."""
    return env_limit(PICKLE_MEMORY_ENV, 1 << 30)


def max_zip_ratio() -> int:
    """Inflated bytes per byte of file (``WEIGHTVIS_MAX_ZIP_RATIO``)."""
    return env_limit(ZIP_RATIO_ENV, 100)


def max_zip_entries() -> int:
    """Entries of a zip checkpoint (``WEIGHTVIS_MAX_ZIP_ENTRIES``; every storage is one)."""
    return env_limit(ZIP_ENTRIES_ENV, 1 << 18)


def max_view_ratio() -> int:
    """Elements drawn per byte of storage (``WEIGHTVIS_MAX_VIEW_RATIO``)."""
    return env_limit(VIEW_RATIO_ENV, 4)


def check_crc() -> bool:
    """Whether zip entries' CRC-32 are checked (``WEIGHTVIS_CHECK_CRC``, default 1)."""
    return env_limit(CRC_ENV, 1) != 0
