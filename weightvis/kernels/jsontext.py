"""JSON text re-indented at compiled speed: ``json.dumps(doc, indent=k)`` is Python's pure-Python
encoder (its C encoder has no indentation), ~10x slower than the compact C encoding that this
turns into exactly the same text."""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["indent_json"]


@njit(cache=True, nogil=True)
def _indent(src, width, out):  # type: ignore[no-untyped-def]
    """Write the indented form of the compact JSON bytes ``src`` into ``out`` (when it is long
    enough); return its length. Compact means separators ``,`` and ``:``, as json.dumps writes
    with ``separators=(",", ":")``; the result is what it writes with ``indent=width``. (The
    byte writes are spelled out, not in a helper: numba made a helper-based version 13x
    slower, measured.)"""
    size = out.shape[0]
    n = 0
    depth = 0
    in_str = False
    esc = False
    i = 0
    end = src.shape[0]
    while i < end:
        c = src[i]
        if in_str:
            if n < size:
                out[n] = c
            n += 1
            if esc:
                esc = False
            elif c == 92:  # backslash
                esc = True
            elif c == 34:  # closing quote
                in_str = False
        elif c == 34:
            in_str = True
            if n < size:
                out[n] = c
            n += 1
        elif c == 123 or c == 91:  # { [
            if i + 1 < end and (src[i + 1] == 125 or src[i + 1] == 93):  # empty: {} []
                if n + 1 < size:
                    out[n] = c
                    out[n + 1] = src[i + 1]
                n += 2
                i += 1
            else:
                depth += 1
                if n < size:
                    out[n] = c
                n += 1
                if n < size:
                    out[n] = 10
                n += 1
                for _ in range(depth * width):
                    if n < size:
                        out[n] = 32
                    n += 1
        elif c == 125 or c == 93:  # } ]
            depth -= 1
            if n < size:
                out[n] = 10
            n += 1
            for _ in range(depth * width):
                if n < size:
                    out[n] = 32
                n += 1
            if n < size:
                out[n] = c
            n += 1
        elif c == 44:  # ,
            if n < size:
                out[n] = c
            n += 1
            if n < size:
                out[n] = 10
            n += 1
            for _ in range(depth * width):
                if n < size:
                    out[n] = 32
                n += 1
        elif c == 58:  # :
            if n + 1 < size:
                out[n] = c
                out[n + 1] = 32
            n += 2
        else:
            if n < size:
                out[n] = c
            n += 1
        i += 1
    return n


def indent_json(compact: bytes, width: int) -> bytes:
    """``compact`` (UTF-8 JSON written with ``separators=(",", ":")``) as ``indent=width`` would
    have written it."""
    src = np.frombuffer(compact, np.uint8)
    # one pass into room for twice the text (a manifest grows ~1.4x; pages never written are
    # never committed), a second one only when that was short (a 28 MB manifest: 0.03 s less)
    out = np.empty(_ROOM * len(compact) + 4096, np.uint8)
    n = _indent(src, width, out)
    if n > len(out):
        out = np.empty(n, np.uint8)
        _indent(src, width, out)
    return out[:n].tobytes()


_ROOM = 2
