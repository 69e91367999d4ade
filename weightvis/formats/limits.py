"""Bounds on what a checkpoint may claim that a real checkpoint could come near: options, read
from the environment when needed (so a forked worker and the main process agree). Bounds no real
checkpoint comes near (a tensor rank of 64, a name of 64 Ki characters, 64 Ki GGUF KV pairs) are
constants beside the parser that enforces them.

| variable | default | bounds |
|---|---|---|
| ``WEIGHTVIS_MAX_TENSORS`` | 262,144 | tensors in one checkpoint (DeepSeek-V3 has 91k) |
| ``WEIGHTVIS_MAX_SIDECAR_BYTES`` | 16 MiB | size of ``config.json`` / the model card read |

numpy-free.
"""

from __future__ import annotations

import os

from ..errors import InputError

__all__ = ["MAX_TENSORS_ENV", "DEFAULT_MAX_TENSORS", "MAX_SIDECAR_BYTES_ENV",
           "DEFAULT_MAX_SIDECAR_BYTES", "max_tensors", "max_sidecar_bytes", "env_limit"]

MAX_TENSORS_ENV = "WEIGHTVIS_MAX_TENSORS"
DEFAULT_MAX_TENSORS = 1 << 18
MAX_SIDECAR_BYTES_ENV = "WEIGHTVIS_MAX_SIDECAR_BYTES"
DEFAULT_MAX_SIDECAR_BYTES = 16 << 20


def env_limit(name: str, default: int) -> int:
    """The non-negative integer in environment variable ``name``, or ``default`` when unset."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        n = int(raw.strip().replace("_", ""))
    except ValueError:
        n = -1
    if n < 0:
        raise InputError(f"{name}={raw!r}: expected a non-negative integer")
    return n


def max_tensors() -> int:
    """Most tensors a checkpoint may hold (``WEIGHTVIS_MAX_TENSORS``)."""
    return env_limit(MAX_TENSORS_ENV, DEFAULT_MAX_TENSORS)


def max_sidecar_bytes() -> int:
    """Largest sidecar read (``WEIGHTVIS_MAX_SIDECAR_BYTES``)."""
    return env_limit(MAX_SIDECAR_BYTES_ENV, DEFAULT_MAX_SIDECAR_BYTES)
