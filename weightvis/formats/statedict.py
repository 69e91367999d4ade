"""Where the tensors of an unpickled PyTorch checkpoint are, and what they are called.

The tensors drawn are those of one container of the object: the top level, or a dict nested
under a well-known key (``state_dict``, ``model``, ``model_state_dict``, ``ema``, ... see
``STATE_DICT_KEYS``), whichever holds the most tensors (ties go to the nested key, then to the
order of ``STATE_DICT_KEYS``); optimizer / scheduler / scaler entries are never drawn. Whole
pickled ``nn.Module`` objects are walked through ``_parameters``, ``_buffers`` and ``_modules``
so names match ``state_dict()``. Tensor names are the dotted paths; a ``module.`` (or
``_orig_mod.``) prefix shared by every tensor is stripped.

Split from ``pytorch.py``: this is pure object-graph work on the records of ``pickle_safe.py``.
The graph comes from a hostile file: every walk is bounded in depth (``MAX_DEPTH``), cycle-safe,
and names are bounded in length (``MAX_NAME_LENGTH``).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from ..errors import FormatError
from .base import MAX_NAME_LENGTH
from .pickle_safe import Placeholder, TensorRef, Unsupported, placeholder_children, short

__all__ = ["STATE_DICT_KEYS", "STRIP_PREFIXES", "MAX_NAME_LENGTH", "Found", "find_tensors"]

STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "module", "net",
                   "network", "params", "weights", "ema", "model_ema", "ema_state_dict",
                   "state_dict_ema", "params_ema")
"""Keys under which training scripts nest the state dict, in order of preference on ties."""

STRIP_PREFIXES = ("module.", "_orig_mod.")
"""Prefixes added by DataParallel / DistributedDataParallel and torch.compile."""

"""Longest tensor name, in characters (a real checkpoint's longest are ~150)."""

_MAX_DEPTH = 64            # object-graph nesting walked for tensors
_MAX_OTHER_ENTRIES = 200   # entries listed in metadata["other_entries"]
_MAX_KEY_SHOWN = 200       # characters of an entry's name in other_entries


class Found(NamedTuple):
    """The tensors of a checkpoint's object: (name, record) in pickle order, the path of the
    container chosen, the prefix stripped from every name, and the entries not drawn."""

    tensors: list[tuple[str, TensorRef | Unsupported]]
    path: tuple[str, ...]
    stripped: str
    other: dict[str, Any]


def find_tensors(root: object, where: object) -> Found:
    """The tensors of ``root`` (see the module doc); ``where`` names the file in errors."""
    count = _Counter()
    path, node = _choose_state_dict(root, count)
    found: list[tuple[tuple[str, ...], object]] = []
    other: dict[str, Any] = {}
    _collect(node, (), found, other, count, set(), 0, True)
    # entries of the enclosing containers that are not on the chosen path
    for i in range(len(path)):
        parent = root
        for step in path[:i]:
            parent = _lookup(parent, step)
        for k, v in _mapping_children(parent) or []:
            if _key_str(k) != path[i] and len(other) < _MAX_OTHER_ENTRIES:
                other[_shown(path[:i] + (_key_str(k),))] = _describe(v, count)
    names = []
    for p, _t in found:
        name = ".".join(p) if p else "tensor"
        if len(name) > MAX_NAME_LENGTH:
            raise FormatError(where, f"a tensor name of {len(name):,} characters (starting "
                                     f"{short(name[:60])}): more than {MAX_NAME_LENGTH:,}")
        names.append(name)
    stripped = ""
    for pre in STRIP_PREFIXES:
        while names and all(n.startswith(pre) and len(n) > len(pre) for n in names):
            names = [n[len(pre):] for n in names]
            stripped += pre
    tensors = []
    for name, (_p, t) in zip(names, found, strict=True):
        assert isinstance(t, (TensorRef, Unsupported))
        tensors.append((name, t))
    return Found(tensors, path, stripped, other)


def _shown(path: tuple[str, ...]) -> str:
    name = ".".join(path)
    return name if len(name) <= _MAX_KEY_SHOWN else name[:_MAX_KEY_SHOWN] + "…"


def _children(obj: object) -> tuple[list[tuple[object, object]], bool] | None:
    """(children, is_module) of a container, None for a leaf."""
    if isinstance(obj, dict):
        return list(dict.items(obj)), False
    if isinstance(obj, (list, tuple)):
        return list(enumerate(obj)), False
    if isinstance(obj, Placeholder):
        return placeholder_children(obj)
    return None


def _key_str(k: object) -> str:
    if isinstance(k, str):
        return k
    if isinstance(k, bytes):
        return k.decode("latin-1")
    if isinstance(k, (int, float)):
        return short(k)
    return f"<{type(k).__name__}>"


class _Counter:
    """Tensors reachable from an object (cycle-safe, memoized by identity)."""

    def __init__(self) -> None:
        self._memo: dict[int, int] = {}
        self._keep: list[object] = []

    def __call__(self, obj: object, depth: int = 0) -> int:
        if isinstance(obj, (TensorRef, Unsupported)):
            return 1
        kids = _children(obj)
        if kids is None or depth > _MAX_DEPTH:
            return 0
        got = self._memo.get(id(obj))
        if got is not None:
            return got
        self._memo[id(obj)] = 0  # cycles count once
        self._keep.append(obj)
        n = sum(self(v, depth + 1) for _, v in kids[0])
        self._memo[id(obj)] = n
        return n


def _describe(obj: object, count: _Counter) -> Any:
    """A short JSON-able description of an entry that is not drawn."""
    if obj is None or isinstance(obj, (bool, int)):
        return obj if not isinstance(obj, int) or abs(obj) < 1 << 53 else short(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, str):
        return obj if len(obj) <= 200 else obj[:200] + "…"
    if isinstance(obj, (bytes, bytearray)):
        return f"<bytes: {len(obj)}>"
    if isinstance(obj, TensorRef):
        return f"<tensor {obj.dtype} {list(obj.size) if isinstance(obj.size, tuple) else '?'}>"
    if isinstance(obj, Unsupported):
        return f"<tensor: {obj.reason}>"
    n = count(obj)
    tail = f", {n} tensors" if n else ""
    if isinstance(obj, dict):
        return f"<dict: {len(obj)} entries{tail}>"
    if isinstance(obj, (list, tuple)):
        return f"<{type(obj).__name__}: {len(obj)} items{tail}>"
    if isinstance(obj, Placeholder):
        return f"<{type(obj)._wv_global} object{tail}>"
    return f"<{type(obj).__name__}>"


_EXCLUDED_KEYS = frozenset({"opt", "opt_state", "amp", "scheduler", "schedulers",
                            "lr_scheduler", "lr_schedulers", "scaler", "grad_scaler",
                            "amp_scaler", "scheduler_state_dict", "lr_scheduler_state_dict",
                            "scaler_state_dict"})


def _is_excluded(key: object, value: object) -> bool:
    """Containers never drawn: optimizer, LR-scheduler and grad-scaler state (``optimizer``,
    ``optimizer_states``, ``optim``, ``lr_schedulers``, ``scaler``, ...)."""
    if isinstance(value, (TensorRef, Unsupported)):
        return False
    k = _key_str(key).lower()
    return k.startswith("optim") or k in _EXCLUDED_KEYS


def _mapping_children(obj: object) -> list[tuple[object, object]] | None:
    """Children of an object that may hold a nested state dict under a well-known key: dicts and
    dict-like placeholders (EasyDict, ...), not modules."""
    if isinstance(obj, dict):
        return list(dict.items(obj))
    if isinstance(obj, Placeholder) and object.__getattribute__(obj, "_wv_items"):
        return list(dict.items(object.__getattribute__(obj, "_wv_items")))
    return None


def _choose_state_dict(root: object, count: _Counter) -> tuple[tuple[str, ...], object]:
    """The path of well-known keys to the container holding the most tensors (see module doc)."""
    best: tuple[int, int, int, tuple[str, ...], object] | None = None
    order = 0

    def consider(node: object, path: tuple[str, ...], depth: int) -> None:
        nonlocal best, order
        kids = _mapping_children(node)
        if kids is None:
            n = count(node)
        else:
            n = sum(count(v) for k, v in kids
                    if not _is_excluded(k, v) and not (isinstance(k, str) and k in STATE_DICT_KEYS
                                                    and _mapping_or_module(v)))
        # more tensors first; on ties the deeper (nested) candidate, then the earlier one
        rank = (n, depth, -order)
        order += 1
        if best is None or rank > best[:3]:
            best = (n, depth, -order + 1, path, node)
        if kids is None or depth >= 3:
            return
        byname = {k: v for k, v in kids if isinstance(k, str)}
        for k in STATE_DICT_KEYS:
            if k in byname and _mapping_or_module(byname[k]):
                consider(byname[k], path + (k,), depth + 1)

    consider(root, (), 0)
    assert best is not None
    return best[3], best[4]


def _mapping_or_module(obj: object) -> bool:
    return isinstance(obj, (dict, Placeholder))


def _collect(obj: object, path: tuple[str, ...], tensors: list[tuple[tuple[str, ...], object]],
             other: dict[str, Any], count: _Counter, seen: set[int], depth: int,
             top: bool) -> None:
    if isinstance(obj, (TensorRef, Unsupported)):
        tensors.append((path, obj))
        return
    kids = _children(obj)
    if kids is None or depth > _MAX_DEPTH or count(obj) == 0:
        if path and len(other) < _MAX_OTHER_ENTRIES:
            other[_shown(path)] = _describe(obj, count)
        return
    if id(obj) in seen:
        return
    seen.add(id(obj))
    children, is_module = kids
    report = not isinstance(obj, Placeholder)
    for k, v in children:
        sub = path + (_key_str(k),)
        if top and not is_module and _is_excluded(k, v):
            if len(other) < _MAX_OTHER_ENTRIES:
                other[_shown(sub)] = _describe(v, count)
            continue
        if not report and count(v) == 0:
            continue  # attributes of a placeholder object that hold no tensors: not listed
        _collect(v, sub, tensors, other, count, seen, depth + 1, False)


def _lookup(obj: object, key: str) -> object:
    for k, v in _mapping_children(obj) or []:
        if _key_str(k) == key:
            return v
    raise AssertionError(key)
