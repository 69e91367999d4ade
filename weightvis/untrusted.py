"""Data read from a file is untrusted: the one place that makes it safe to show and to store.

- ``printable``: text for a terminal, every control character (C0, DEL, C1: escape sequences
  would run in the user's terminal), bidirectional override and lone surrogate escaped as
  ``\\x1b`` / ``\\u202e`` / ``\\ud800``. Every name, path or value from a file that reaches the
  terminal goes through it (``cli.py`` prints error messages and ``info`` text through it).
- ``printable_json``: a document as JSON text for a terminal or a pipe: valid JSON (no NaN),
  encodable as UTF-8 (lone surrogates escaped), and with no raw control character.
- ``load_json``: ``json.loads`` whose every failure - bad syntax, nesting past the parser's
  recursion limit, an integer past Python's 4,300-digit limit - is one ``FormatError`` naming the
  file and the byte offset.
- ``json_safe``: a parsed value made fit for JSON output: non-finite floats become the strings
  ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (JSON has no such numbers), tuples become lists,
  nesting is bounded (``MAX_JSON_DEPTH``) so that no later encoder recurses without bound.

numpy-free (``cli.py`` imports it).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from .errors import FormatError

__all__ = ["printable", "printable_json", "load_json", "json_safe", "MAX_JSON_DEPTH",
           "MAX_INT_DIGITS"]

MAX_JSON_DEPTH = 64
"""Deepest nesting of metadata and sidecar values kept (a real checkpoint's metadata is 1-3
levels deep; the bound keeps every recursive encoder far from Python's recursion limit)."""

MAX_INT_DIGITS = 4300
"""Python's default limit on the digits of an integer parsed from text (``sys.int_info``)."""

_INVISIBLE = "\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_UNSAFE = re.compile(f"[\x00-\x1f{_INVISIBLE}]")
_UNSAFE_IN_JSON = re.compile(f"[{_INVISIBLE}]")
"""What ``printable`` escapes but C0 controls, which ``json.dumps`` escapes itself."""


def _escape(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def printable(text: str) -> str:
    """``text`` safe to write to a terminal: control characters, bidirectional controls and lone
    surrogates escaped (other characters, backslashes included, unchanged).

    >>> printable("w\\x1b[31m\\ud800 ok")
    'w\\\\x1b[31m\\\\ud800 ok'
    """
    return _UNSAFE.sub(_escape, text)


def printable_json(doc: Any, *, indent: int | None = 1) -> str:
    """``doc`` as JSON text safe to print: ``json_safe`` values, and the characters
    ``printable`` escapes written as JSON escapes (``\\u009b``; JSON text has non-ASCII
    characters only inside strings, where the escape is the same character).

    >>> printable_json({"n\\u202e": float("nan")}, indent=None)
    '{"n\\\\u202e": "NaN"}'
    """
    text = json.dumps(json_safe(doc, "output"), indent=indent, ensure_ascii=False,
                      allow_nan=False)
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


_MAX_INT_BITS = int(MAX_INT_DIGITS * math.log2(10))
_LONG_DIGITS = re.compile(f"[0-9]{{{MAX_INT_DIGITS + 1}}}")


def load_json(text: str, where: object, *, offset: int = 0, what: str = "JSON") -> Any:
    """``json.loads(text)``; any failure is a ``FormatError`` naming ``where`` and the byte
    offset (``offset`` is where ``text`` starts in the file; offsets count characters, which is
    bytes for the ASCII JSON of a header)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise FormatError(where, f"{what} is not valid JSON ({e.msg}, line {e.lineno} column "
                                 f"{e.colno})", offset=offset + e.pos) from None
    except RecursionError:
        raise FormatError(where, f"{what} is nested too deeply to parse", offset=offset
                          ) from None
    except ValueError:  # an integer literal past the int-str conversion limit
        m = _LONG_DIGITS.search(text)
        at = offset + (m.start() if m is not None else 0)
        raise FormatError(where, f"{what} holds an integer of more than {MAX_INT_DIGITS} digits",
                          offset=at) from None


def json_safe(value: Any, where: object, *, what: str = "metadata",
              max_depth: int = MAX_JSON_DEPTH, max_string: int | None = None) -> Any:
    """A copy of a parsed value that ``json.dumps(..., allow_nan=False)`` always encodes: floats
    that are not finite as strings, tuples as lists, dict keys as strings; strings longer than
    ``max_string`` characters as a summary ``{"type": "STRING", "length": n}`` (as the GGUF
    reader keeps long values). Nesting deeper than ``max_depth`` is a ``FormatError`` naming
    ``where``.

    >>> json_safe({"a": [float("nan"), 1e999, (1, 2)]}, "f")
    {'a': ['NaN', 'Infinity', [1, 2]]}
    """
    def walk(v: Any, depth: int) -> Any:
        if isinstance(v, float):
            if math.isfinite(v):
                return v
            return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
        if isinstance(v, int) and v.bit_length() > _MAX_INT_BITS:
            return f"<integer of {v.bit_length()} bits>"  # str() of it would raise
        if isinstance(v, str) and max_string is not None and len(v) > max_string:
            return {"type": "STRING", "length": len(v)}
        if isinstance(v, (str, int, bool)) or v is None:
            return v
        if depth >= max_depth:
            raise FormatError(where, f"{what} is nested deeper than {max_depth} levels")
        if isinstance(v, dict):
            return {k if isinstance(k, str) else str(k): walk(x, depth + 1) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(x, depth + 1) for x in v]
        return str(v)

    return walk(value, 0)
