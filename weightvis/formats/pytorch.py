# Over the 450-line guide: the restricted unpickler and state-dict search (~600 lines) belong
# in formats/unpickler.py, in a change of their own.
"""PyTorch checkpoints (``.bin``, ``.pt``, ``.pth``, ``.ckpt``) read without torch and without
running code from the file.

Containers (torch/serialization.py):

- **zip** (torch >= 1.6): ``<prefix>/data.pkl`` (the object, tensors as persistent ids
  ``('storage', storage_type, key, location, numel)``), ``<prefix>/data/<key>`` (raw storage
  bytes in the writer's ``byteorder``), ``<prefix>/version``. Entries stored uncompressed (the
  normal case) are memory-mapped at ``local header offset + 30 + name length + extra length``;
  compressed entries are inflated into memory when first read (an LRU cache of at most 1 GiB).
  TorchScript archives (``code/``, ``constants.pkl``) are read the same way: the tensors of their
  ``data.pkl`` are the module's attributes.
- **legacy** (torch < 1.6, ``_use_new_zipfile_serialization=False``): five pickles in a row —
  magic number ``0x1950a86a20f9469cfc6c``, protocol version 1001, ``sys_info``, the object
  (persistent ids ``('storage', storage_type, key, location, numel, view_metadata)``), the list of
  storage keys — then each storage as a little-endian int64 element count and its raw bytes
  (always little-endian; THPStorage_writeFileRaw converts). Storages are memory-mapped in place.

**Reading never executes code from the file.** ``_RestrictedUnpickler.find_class`` resolves a
short allow-list (tensor/parameter rebuild functions, storage classes, dtype names,
``collections.OrderedDict``, a few harmless builtins) to stand-ins of this module that only build
lightweight records (:class:`_TensorRef`: storage key, dtype, storage offset, size, stride). Every
other global — ``omegaconf.dictconfig.DictConfig``, ``argparse.Namespace``, ``os.system``,
``builtins.eval`` — becomes a *placeholder* class that is never imported: calling it, ``NEWOBJ``,
``BUILD``/``__setstate__``, item and list assignment just record the global's name, the arguments
and the state. So a Lightning checkpoint with hyper-parameters from uninstalled packages still
reads, and a pickle whose ``__reduce__`` names ``os.system`` yields an inert record.

**State dict discovery.** The tensors drawn are those of one container of the object: the top
level, or a dict nested under a well-known key (``state_dict``, ``model``, ``model_state_dict``,
``ema``, ... see ``STATE_DICT_KEYS``), whichever holds the most tensors (ties go to the nested
key, then to the order of ``STATE_DICT_KEYS``); optimizer / scheduler / scaler entries are never
drawn. Whole pickled ``nn.Module`` objects are walked through ``_parameters``, ``_buffers`` and
``_modules`` so names match ``state_dict()``. Tensor names are the dotted paths; a ``module.`` (or
``_orig_mod.``) prefix shared by every tensor is stripped. ``metadata`` says which key was used
(``state_dict_key``), lists the entries not drawn (``other_entries``) and the unresolved globals
(``placeholder_globals``).

**Unsupported tensors** (quantized, complex, sparse, nested, meta, fnuz float8, sub-byte types)
are *excluded* from :meth:`PyTorchReader.tensors` and listed in ``metadata["unsupported_tensors"]``
with the reason, so the rest of the checkpoint still renders; :meth:`PyTorchReader.read` on one of
them raises :class:`UnsupportedDtypeError`.

Storage offsets, strides (transposed and other non-contiguous views) and storages shared by
several tensors are honoured: a block read is ``np.lib.stride_tricks.as_strided`` over the
storage's mapped bytes, after every tensor's extent has been checked against its storage and the
file at open time.
"""

from __future__ import annotations

import _compat_pickle
import io
import math
import mmap
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from ..errors import FormatError, UnsupportedDtypeError
from ..index import view_row_dims
from ..sources import ByteSource, SourceFile, as_source
from ..types import TensorInfo
from .base import Reader, check_block, gc_paused
from .dtypes import ELEMENT_TYPES, ElementType

__all__ = ["PyTorchReader", "LEGACY_MAGIC", "STATE_DICT_KEYS"]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
"""First pickle of a legacy (non-zip) ``torch.save`` file."""
LEGACY_PROTOCOL = 1001

STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "module", "net",
                   "network", "params", "weights", "ema", "model_ema", "ema_state_dict",
                   "state_dict_ema", "params_ema")
"""Keys under which training scripts nest the state dict, in order of preference on ties."""

STRIP_PREFIXES = ("module.", "_orig_mod.")
"""Prefixes added by DataParallel / DistributedDataParallel and torch.compile."""

_PAGE = mmap.PAGESIZE
_MAX_DEPTH = 64            # object-graph nesting walked for tensors
_MAX_OTHER_ENTRIES = 200   # entries listed in metadata["other_entries"]
_INFLATED_CACHE_BYTES = 1 << 30

# -- dtypes ---------------------------------------------------------------------------------------
# torch dtype name -> (ELEMENT_TYPES name or None, bytes per element, why unsupported)
_DTYPES: dict[str, tuple[str | None, int, str]] = {
    "float64": ("F64", 8, ""), "float32": ("F32", 4, ""), "float16": ("F16", 2, ""),
    "bfloat16": ("BF16", 2, ""), "float8_e4m3fn": ("F8_E4M3", 1, ""),
    "float8_e5m2": ("F8_E5M2", 1, ""), "float8_e8m0fnu": ("F8_E8M0", 1, ""),
    "int64": ("I64", 8, ""), "int32": ("I32", 4, ""), "int16": ("I16", 2, ""),
    "int8": ("I8", 1, ""), "uint8": ("U8", 1, ""), "uint16": ("U16", 2, ""),
    "uint32": ("U32", 4, ""), "uint64": ("U64", 8, ""), "bool": ("BOOL", 1, ""),
    "complex32": (None, 4, "complex tensors are not supported"),
    "complex64": (None, 8, "complex tensors are not supported"),
    "complex128": (None, 16, "complex tensors are not supported"),
    "float8_e4m3fnuz": (None, 1, "float8_e4m3fnuz is not supported"),
    "float8_e5m2fnuz": (None, 1, "float8_e5m2fnuz is not supported"),
    "float4_e2m1fn_x2": (None, 1, "packed float4 is not supported"),
    "qint8": (None, 1, "quantized tensors are not supported"),
    "quint8": (None, 1, "quantized tensors are not supported"),
    "qint32": (None, 4, "quantized tensors are not supported"),
    "quint4x2": (None, 1, "quantized tensors are not supported"),
    "quint2x4": (None, 1, "quantized tensors are not supported"),
    **{f"bits{s}": (None, 1 if s != "16" else 2, "bits types are not supported")
       for s in ("8", "16", "1x8", "2x4", "4x2")},
    **{f"{u}int{n}": (None, 1, "sub-byte integer types are not supported")
       for u in ("", "u") for n in range(1, 8)},
}
_DTYPE_ALIASES = {"double": "float64", "float": "float32", "half": "float16", "long": "int64",
                  "int": "int32", "short": "int16", "cfloat": "complex64",
                  "cdouble": "complex128", "chalf": "complex32"}
_STORAGE_DTYPES = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16",
    "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
    "BFloat16Storage": "bfloat16", "ComplexDoubleStorage": "complex128",
    "ComplexFloatStorage": "complex64", "QInt8Storage": "qint8", "QInt32Storage": "qint32",
    "QUInt8Storage": "quint8", "QUInt4x2Storage": "quint4x2", "QUInt2x4Storage": "quint2x4",
    "UntypedStorage": "uint8",
}


class _Inert:
    """Base of this module's records: no ``__dict__``, and a pickle cannot ``BUILD`` into them."""

    __slots__ = ()

    def __setstate__(self, state: object) -> NoReturn:
        raise pickle.UnpicklingError(f"BUILD on {type(self).__name__} is not allowed")


class _DType(_Inert):
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"torch.{self.name}"


class _StorageType(_Inert):
    __slots__ = ("name", "dtype")

    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = _STORAGE_DTYPES.get(name)

    def __repr__(self) -> str:
        return f"torch.{self.name}"


class _StorageRef(_Inert):
    """A storage named by a persistent id: ``key``'s bytes from ``base`` (legacy views), ``nbytes``
    long, elements of ``dtype``."""

    __slots__ = ("key", "dtype", "nbytes", "base", "archive", "sclass")

    def __init__(self, key: str, dtype: str | None, nbytes: int, base: int,
                 archive: str, sclass: str) -> None:
        self.key, self.dtype, self.nbytes, self.base, self.archive, self.sclass = (
            key, dtype, nbytes, base, archive, sclass)


class _TensorRef(_Inert):
    """A dense tensor as rebuilt by ``torch._utils._rebuild_tensor*``; fields unvalidated."""

    __slots__ = ("storage", "offset", "size", "stride", "dtype", "neg")

    def __init__(self, storage: object, offset: object, size: object, stride: object,
                 dtype: object, neg: bool = False) -> None:
        self.storage, self.offset, self.size, self.stride, self.dtype, self.neg = (
            storage, offset, size, stride, dtype, neg)


class _Unsupported(_Inert):
    """A tensor kind this reader does not decode (quantized, sparse, nested, meta, ...)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class _StandIn(_Inert):
    """A harmless function of this module handed to the unpickler instead of a torch global."""

    __slots__ = ("qualname", "fn")
    qualname: str
    fn: Callable[..., Any]

    def __init__(self, qualname: str, fn: Callable[..., Any]) -> None:
        object.__setattr__(self, "qualname", qualname)
        object.__setattr__(self, "fn", fn)

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise pickle.UnpicklingError(f"cannot set attributes of {self.qualname}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<stand-in for {self.qualname}>"


# -- placeholders ---------------------------------------------------------------------------------
class _FrozenMeta(type):
    """Metaclass of placeholder classes: a pickle cannot set attributes on the class."""

    def __setattr__(cls, name: str, value: object) -> NoReturn:
        raise pickle.UnpicklingError(f"cannot set attributes of placeholder {cls.__name__}")

    def __delattr__(cls, name: str) -> NoReturn:
        raise pickle.UnpicklingError(f"cannot delete attributes of placeholder {cls.__name__}")


def _rebuild_placeholder(qualname: str, args: tuple[Any, ...], state: object) -> _Placeholder:
    """Re-pickling support for placeholders (``copy``/``pickle`` of a loaded object)."""
    obj = _placeholder_class(qualname)(*args)
    obj.__setstate__(state)
    return obj


class _Placeholder(metaclass=_FrozenMeta):
    """Stands in for any global not on the allow-list. Instances record the arguments they were
    created with, the state ``BUILD`` gave them, and items / list elements pickle added; nothing
    of the named class is ever imported or run."""

    _wv_global = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> _Placeholder:
        self = object.__new__(cls)
        object.__setattr__(self, "_wv_args", args)
        object.__setattr__(self, "_wv_kwargs", kwargs)
        object.__setattr__(self, "_wv_state", None)
        object.__setattr__(self, "_wv_items", {})
        object.__setattr__(self, "_wv_list", [])
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        object.__setattr__(self, "_wv_state", state)

    def __call__(self, *args: Any, **kwargs: Any) -> _Placeholder:
        """REDUCE on a placeholder's result (``getattr(m, f)(...)``): another inert record."""
        return type(self)(*args, **kwargs)

    def __setattr__(self, name: str, value: object) -> None:  # BUILD slot state
        items = object.__getattribute__(self, "_wv_items")
        items[name] = value

    def __setitem__(self, key: object, value: object) -> None:
        object.__getattribute__(self, "_wv_items")[key] = value

    def append(self, value: object) -> None:
        object.__getattribute__(self, "_wv_list").append(value)

    def extend(self, values: object) -> None:
        if isinstance(values, (list, tuple)):
            object.__getattribute__(self, "_wv_list").extend(values)

    def add(self, value: object) -> None:
        object.__getattribute__(self, "_wv_list").append(value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_placeholder, (type(self)._wv_global,
                                       object.__getattribute__(self, "_wv_args"),
                                       object.__getattribute__(self, "_wv_state")))

    def __repr__(self) -> str:
        return f"<{type(self)._wv_global} object (not imported)>"


def _placeholder_class(qualname: str) -> type[_Placeholder]:
    """A fresh placeholder class for the global ``qualname`` (never imported)."""
    name = qualname.rpartition(".")[2]
    cls = _FrozenMeta(name if name.isidentifier() else "Placeholder", (_Placeholder,),
                      {"_wv_global": qualname, "__module__": __name__})
    assert issubclass(cls, _Placeholder)
    return cls


def _placeholder_state(obj: _Placeholder) -> object:
    return object.__getattribute__(obj, "_wv_state")


def _placeholder_children(obj: _Placeholder) -> tuple[list[tuple[object, object]], bool]:
    """(children, is_module): the named values a placeholder holds. ``nn.Module`` state is walked
    the way ``state_dict()`` names it."""
    items = list(dict.items(object.__getattribute__(obj, "_wv_items")))
    items += list(enumerate(object.__getattribute__(obj, "_wv_list")))
    state = _placeholder_state(obj)
    if (isinstance(state, tuple) and len(state) == 2
            and all(s is None or isinstance(s, dict) for s in state)):
        merged: dict[object, object] = {}
        for s in state:
            if s:
                merged.update(dict.items(s))
        state = merged
    if isinstance(state, dict):
        if "_parameters" in state and "_modules" in state:
            out: list[tuple[object, object]] = []
            skip = dict.get(state, "_non_persistent_buffers_set")
            skip = skip if isinstance(skip, (set, frozenset)) else set()
            for part in ("_parameters", "_buffers", "_modules"):
                d = dict.get(state, part)
                if isinstance(d, dict):
                    out += [(k, v) for k, v in dict.items(d)
                            if v is not None and not (part == "_buffers" and k in skip)]
            return out, True
        items += list(dict.items(state))
    elif isinstance(state, (list, tuple)):
        items += list(enumerate(state))
    return items, False


# -- stand-ins for the allow-listed globals -------------------------------------------------------
def _neg_of(metadata: object) -> bool:
    return isinstance(metadata, dict) and dict.get(metadata, "neg") is True


def _rebuild_tensor(storage: object, storage_offset: object, size: object, stride: object,
                    *rest: object) -> _TensorRef:
    dtype = storage.dtype if isinstance(storage, _StorageRef) else None
    return _TensorRef(storage, storage_offset, size, stride, dtype)


def _rebuild_tensor_v2(storage: object, storage_offset: object, size: object, stride: object,
                       requires_grad: object = False, backward_hooks: object = None,
                       metadata: object = None) -> _TensorRef:
    dtype = storage.dtype if isinstance(storage, _StorageRef) else None
    return _TensorRef(storage, storage_offset, size, stride, dtype, _neg_of(metadata))


def _rebuild_tensor_v3(storage: object, storage_offset: object, size: object, stride: object,
                       requires_grad: object, backward_hooks: object, dtype: object,
                       metadata: object = None) -> _TensorRef:
    if isinstance(dtype, _DType):
        name = dtype.name
    elif isinstance(dtype, type) and issubclass(dtype, _Placeholder):
        name = dtype._wv_global  # a dtype name this reader does not know
    else:
        name = type(dtype).__name__
    return _TensorRef(storage, storage_offset, size, stride, name, _neg_of(metadata))


def _rebuild_parameter(data: object, *rest: object) -> object:
    return data


def _rebuild_from_type_v2(func: object, new_type: object, args: object, state: object) -> object:
    if isinstance(func, _StandIn) and isinstance(args, tuple):
        out = func(*args)
        if isinstance(out, (_TensorRef, _Unsupported)):
            return out
    return _Unsupported(f"tensor subclass {getattr(new_type, '_wv_global', '?')}")


def _rebuild_device_tensor_from_cpu_tensor(data: object, *rest: object) -> object:
    return data if isinstance(data, _TensorRef) else _Unsupported("device tensor")


def _unsupported(reason: str) -> Callable[..., _Unsupported]:
    def make(*args: object, **kwargs: object) -> _Unsupported:
        return _Unsupported(reason)
    return make


def _ordered_dict(*args: object) -> OrderedDict[Any, Any]:
    out: OrderedDict[Any, Any] = OrderedDict()
    if args and isinstance(args[0], dict):
        out.update(dict.items(args[0]))
    elif args and isinstance(args[0], (list, tuple)):
        for pair in args[0]:
            if isinstance(pair, (list, tuple)) and len(pair) == 2:
                out[pair[0]] = pair[1]
    return out


def _plain_dict(*args: object) -> dict[Any, Any]:
    return dict(dict.items(args[0])) if args and isinstance(args[0], dict) else {}


def _iterable_of(args: tuple[object, ...]) -> list[object]:
    if args and isinstance(args[0], (list, tuple, set, frozenset)):
        return list(args[0])
    return []


def _codecs_encode(obj: object = "", encoding: object = "utf-8", *rest: object) -> object:
    if isinstance(obj, str) and encoding in ("latin1", "latin-1", "utf-8", "utf8", "ascii"):
        return obj.encode(str(encoding))
    return b""


def _complex(*args: object) -> complex:
    nums = [a for a in args[:2] if isinstance(a, (int, float)) and not isinstance(a, bool)]
    return complex(*nums)


def _slice(*args: object) -> slice:
    ok = [a if a is None or (isinstance(a, int) and not isinstance(a, bool)) else None
          for a in args[:3]]
    return slice(*ok) if ok else slice(None)


def _reconstructor(cls: object = None, *rest: object) -> object:
    """``copyreg._reconstructor`` (protocol 0/1 objects): an empty instance of a placeholder."""
    if isinstance(cls, type) and issubclass(cls, _Placeholder):
        return cls()
    return _Placeholder()


def _first_arg(*args: object) -> object:
    return args[0] if args else None


_ALLOWED: dict[str, Callable[..., Any]] = {
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
    "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch.nn.parameter.Parameter": _rebuild_parameter,
    "torch._tensor._rebuild_from_type_v2": _rebuild_from_type_v2,
    "torch._utils._rebuild_device_tensor_from_cpu_tensor": _rebuild_device_tensor_from_cpu_tensor,
    "torch._utils._rebuild_qtensor": _unsupported("quantized tensors are not supported"),
    "torch._utils._rebuild_sparse_tensor": _unsupported("sparse tensors are not supported"),
    "torch._utils._rebuild_sparse_csr_tensor": _unsupported("sparse tensors are not supported"),
    "torch._utils._rebuild_nested_tensor": _unsupported("nested tensors are not supported"),
    "torch._utils._rebuild_meta_tensor_no_storage": _unsupported("meta tensor: no data saved"),
    "torch._utils._rebuild_wrapper_subclass": _unsupported("tensor subclass without storage"),
    "torch._utils._rebuild_device_tensor_from_numpy": _unsupported(
        "device tensor stored as a numpy array is not supported"),
    "torch._utils._rebuild_xla_tensor": _unsupported("XLA tensors are not supported"),
    "torch._utils._rebuild_mtia_tensor": _unsupported("MTIA tensors are not supported"),
    "torch.Size": lambda *a: tuple(_iterable_of(a)),
    "torch.serialization._get_layout": lambda *a: str(a[0]) if a else "",
    "collections.OrderedDict": _ordered_dict,
    "collections.Counter": _plain_dict,
    "collections.defaultdict": _plain_dict,
    "builtins.set": lambda *a: set(_iterable_of(a)),
    "builtins.frozenset": lambda *a: frozenset(_iterable_of(a)),
    "builtins.bytearray": lambda *a: bytearray(a[0]) if a and isinstance(a[0], bytes) else b"",
    "builtins.slice": _slice,
    "builtins.complex": _complex,
    "_codecs.encode": _codecs_encode,
    "copyreg._reconstructor": _reconstructor,
    **{f"torch.jit._pickle.{n}": _first_arg
       for n in ("build_intlist", "build_doublelist", "build_boollist", "build_tensorlist",
                 "build_genericlist", "restore_type_tag")},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose globals come only from the allow-list or are placeholders."""

    def __init__(self, file: Any, archive: str = "data") -> None:
        super().__init__(file, encoding="utf-8")
        self.archive = archive
        self.placeholders: dict[str, type[_Placeholder]] = {}
        self.storages: dict[str, _StorageRef] = {}
        self._standins: dict[str, _StandIn] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        qual = f"{module}.{name}"
        fn = _ALLOWED.get(qual)
        if fn is not None:
            s = self._standins.get(qual)
            if s is None:
                s = self._standins[qual] = _StandIn(qual, fn)
            return s
        if module in ("torch", "torch.cuda", "torch.storage") and name.endswith("Storage"):
            return _StorageType(name)
        if module == "torch" and (name in _DTYPES or name in _DTYPE_ALIASES):
            return _DType(_DTYPE_ALIASES.get(name, name))
        cls = self.placeholders.get(qual)
        if cls is None:
            cls = self.placeholders[qual] = _placeholder_class(qual)
        return cls

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid:
            raise pickle.UnpicklingError(f"unsupported persistent id {type(pid).__name__}")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind == "module":  # legacy: (module class, source file, source) of pickled modules
            return pid[1] if len(pid) > 1 else None
        if kind != "storage" or len(pid) not in (5, 6):
            raise pickle.UnpicklingError(f"unsupported persistent id {str(pid)[:80]}")
        stype, key, _location, numel = pid[1:5]
        if isinstance(key, int) and not isinstance(key, bool):
            key = str(key)
        if not isinstance(stype, _StorageType):
            raise pickle.UnpicklingError(f"persistent id names storage type {stype!r}, "
                                         "not a torch storage class")
        if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"malformed storage persistent id {str(pid)[:80]}")
        dt = stype.dtype
        itemsize = _DTYPES[dt][1] if dt in _DTYPES else 1
        root = self.storages.get(key)
        if root is None:
            root = self.storages[key] = _StorageRef(key, dt, numel * itemsize, 0, self.archive,
                                                    stype.name)
        view = pid[5] if len(pid) == 6 else None
        if view is None:
            return root
        if (not isinstance(view, tuple) or len(view) != 3
                or not all(isinstance(v, int) for v in view[1:])):
            raise pickle.UnpicklingError(f"malformed storage view {str(view)[:80]}")
        _vkey, off, vsize = view
        return _StorageRef(key, dt, vsize * itemsize, off * itemsize, self.archive, stype.name)


# -- object graph ---------------------------------------------------------------------------------
def _children(obj: object) -> tuple[list[tuple[object, object]], bool] | None:
    """(children, is_module) of a container, None for a leaf."""
    if isinstance(obj, dict):
        return list(dict.items(obj)), False
    if isinstance(obj, (list, tuple)):
        return list(enumerate(obj)), False
    if isinstance(obj, _Placeholder):
        return _placeholder_children(obj)
    return None


def _key_str(k: object) -> str:
    if isinstance(k, str):
        return k
    if isinstance(k, bytes):
        return k.decode("latin-1")
    if isinstance(k, (int, float)):
        return str(k)
    return f"<{type(k).__name__}>"


class _Counter:
    """Tensors reachable from an object (cycle-safe, memoized by identity)."""

    def __init__(self) -> None:
        self._memo: dict[int, int] = {}
        self._keep: list[object] = []

    def __call__(self, obj: object, depth: int = 0) -> int:
        if isinstance(obj, (_TensorRef, _Unsupported)):
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
        return obj if not isinstance(obj, int) or abs(obj) < 1 << 53 else str(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, str):
        return obj if len(obj) <= 200 else obj[:200] + "…"
    if isinstance(obj, (bytes, bytearray)):
        return f"<bytes: {len(obj)}>"
    if isinstance(obj, _TensorRef):
        return f"<tensor {obj.dtype} {list(obj.size) if isinstance(obj.size, tuple) else '?'}>"
    if isinstance(obj, _Unsupported):
        return f"<tensor: {obj.reason}>"
    n = count(obj)
    tail = f", {n} tensors" if n else ""
    if isinstance(obj, dict):
        return f"<dict: {len(obj)} entries{tail}>"
    if isinstance(obj, (list, tuple)):
        return f"<{type(obj).__name__}: {len(obj)} items{tail}>"
    if isinstance(obj, _Placeholder):
        return f"<{type(obj)._wv_global} object{tail}>"
    return f"<{type(obj).__name__}>"


_EXCLUDED_KEYS = frozenset({"opt", "opt_state", "amp", "scheduler", "schedulers",
                            "lr_scheduler", "lr_schedulers", "scaler", "grad_scaler",
                            "amp_scaler", "scheduler_state_dict", "lr_scheduler_state_dict",
                            "scaler_state_dict"})


def _is_excluded(key: object, value: object) -> bool:
    """Containers never drawn: optimizer, LR-scheduler and grad-scaler state (``optimizer``,
    ``optimizer_states``, ``optim``, ``lr_schedulers``, ``scaler``, ...)."""
    if isinstance(value, (_TensorRef, _Unsupported)):
        return False
    k = _key_str(key).lower()
    return k.startswith("optim") or k in _EXCLUDED_KEYS


def _mapping_children(obj: object) -> list[tuple[object, object]] | None:
    """Children of an object that may hold a nested state dict under a well-known key: dicts and
    dict-like placeholders (EasyDict, ...), not modules."""
    if isinstance(obj, dict):
        return list(dict.items(obj))
    if isinstance(obj, _Placeholder) and object.__getattribute__(obj, "_wv_items"):
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
    return isinstance(obj, (dict, _Placeholder))


def _collect(obj: object, path: tuple[str, ...], tensors: list[tuple[tuple[str, ...], object]],
             other: dict[str, Any], count: _Counter, seen: set[int], depth: int,
             top: bool) -> None:
    if isinstance(obj, (_TensorRef, _Unsupported)):
        tensors.append((path, obj))
        return
    kids = _children(obj)
    if kids is None or depth > _MAX_DEPTH or count(obj) == 0:
        if path and len(other) < _MAX_OTHER_ENTRIES:
            other[".".join(path)] = _describe(obj, count)
        return
    if id(obj) in seen:
        return
    seen.add(id(obj))
    children, is_module = kids
    report = not isinstance(obj, _Placeholder)
    for k, v in children:
        sub = path + (_key_str(k),)
        if top and not is_module and _is_excluded(k, v):
            if len(other) < _MAX_OTHER_ENTRIES:
                other[".".join(sub)] = _describe(v, count)
            continue
        if not report and count(v) == 0:
            continue  # attributes of a placeholder object that hold no tensors: not listed
        _collect(v, sub, tensors, other, count, seen, depth + 1, False)


# -- containers -----------------------------------------------------------------------------------
class _Blob:
    """Where a storage key's bytes live: ``start`` in the mapped file (stored), or a zip entry to
    inflate (compressed)."""

    __slots__ = ("name", "start", "size", "zinfo")

    def __init__(self, name: str, start: int, size: int,
                 zinfo: zipfile.ZipInfo | None = None) -> None:
        self.name, self.start, self.size, self.zinfo = name, start, size, zinfo


class _Entry:
    __slots__ = ("info", "etype", "blob", "base", "offset", "rows", "row_stride", "trailing",
                 "neg", "storage_dtype")

    def __init__(self, info: TensorInfo, etype: ElementType, blob: _Blob, base: int, offset: int,
                 rows: int, row_stride: int, trailing: list[tuple[int, int]], neg: bool,
                 storage_dtype: np.dtype[Any]) -> None:
        self.info, self.etype, self.blob, self.base, self.offset = info, etype, blob, base, offset
        self.rows, self.row_stride, self.trailing, self.neg = rows, row_stride, trailing, neg
        self.storage_dtype = storage_dtype


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _merge_trailing(size: Sequence[int], stride: Sequence[int]) -> list[tuple[int, int]]:
    """Trailing dims (size, stride) of the 2-D view's columns with size-1 dims dropped and
    adjacent dims merged where one stride steps over the other; at least one dim."""
    dims = [(s, t) for s, t in zip(size, stride, strict=True) if s != 1]
    out: list[tuple[int, int]] = []
    for s, t in dims:
        if out and out[-1][1] == t * s:
            ps, _pt = out[-1]
            out[-1] = (ps * s, t)
        else:
            out.append((s, t))
    return out or [(1, 0)]


class PyTorchReader(Reader):
    """One PyTorch checkpoint file (zip, TorchScript zip or legacy pickle)."""

    format = "pytorch"

    def __init__(self, source: ByteSource | str | os.PathLike[str]) -> None:
        self._file = as_source(source)
        self.path = self._file.path
        self._size = self._file.size
        self._closed = False
        self._tensors: tuple[TensorInfo, ...] | None = None
        self._fh = io.BufferedReader(SourceFile(self._file), 1 << 16)
        try:
            if self._size < 2:
                raise FormatError(self.path, f"file is {self._size} bytes, too short for a "
                                             "PyTorch checkpoint")
            self._zip: zipfile.ZipFile | None = None
            self._inflated: OrderedDict[str, np.ndarray] = OrderedDict()
            self._inflated_bytes = 0
            self._entries: dict[str, _Entry] = {}
            self._unsupported: dict[str, str] = {}
            self._metadata: dict[str, Any] = {}
            with gc_paused():
                self._open()
        except BaseException:
            self.close()
            raise

    # -- containers --------------------------------------------------------------------------
    def _open(self) -> None:
        head = self._file.read(0, min(4, self._size))
        if head == b"PK\x03\x04":
            root, storages, blobs, little = self._open_zip()
        elif head[:1] == b"\x80":
            root, storages, blobs, little = self._open_legacy()
        else:
            raise FormatError(self.path, f"not a PyTorch checkpoint (starts with {head!r}; "
                                         "expected a zip archive or a pickle)", offset=0)
        self._build(root, storages, blobs, little)

    def _unpickle(self, fh: Any, what: str, archive: str = "data",
                  storages: dict[str, _StorageRef] | None = None) -> tuple[Any,
                                                                           _RestrictedUnpickler]:
        up = _RestrictedUnpickler(fh, archive)
        if storages is not None:
            up.storages = storages
        try:
            return up.load(), up
        except FormatError:
            raise
        except Exception as e:  # any failure of a hostile or broken pickle
            msg = str(e) or type(e).__name__
            raise FormatError(self.path, f"{what}: cannot unpickle ({type(e).__name__}: "
                                         f"{msg[:200]})") from None

    def _open_zip(self) -> tuple[Any, dict[str, _StorageRef], dict[str, _Blob], bool]:
        p = self.path
        try:
            zf = self._zip = zipfile.ZipFile(self._fh)
            infos = zf.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
            raise FormatError(p, f"not a readable zip archive ({e}): truncated or corrupt?"
                              ) from None
        names = {i.filename: i for i in infos}
        pkls = [n for n in names if n == "data.pkl"
                or (n.endswith("/data.pkl") and n.count("/") == 1)]
        if not pkls:
            raise FormatError(p, "zip archive has no <archive>/data.pkl: not a PyTorch "
                                 "checkpoint")
        first_top = infos[0].filename.split("/")[0] + "/" if infos else ""
        pkl = next((n for n in pkls if n == first_top + "data.pkl"), pkls[0])
        prefix = pkl[: -len("data.pkl")]
        torchscript = any(n.startswith(prefix + "code/") for n in names) or (
            prefix + "constants.pkl" in names)
        what = ("TorchScript archive: " if torchscript else "") + pkl

        def small(name: str) -> bytes:
            try:
                return zf.read(names[name])
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError,
                    RuntimeError) as e:
                raise FormatError(p, f"zip entry {name} is unreadable ({e})") from None

        little = True
        if prefix + "byteorder" in names:
            order = small(prefix + "byteorder").strip()
            if order not in (b"little", b"big"):
                raise FormatError(p, f"{prefix}byteorder is {order[:20]!r}, expected "
                                     "'little' or 'big'")
            little = order == b"little"
        meta: dict[str, Any] = {"container": "torchscript" if torchscript else "zip",
                                "archive": prefix.rstrip("/"),
                                "byteorder": "little" if little else "big"}
        if prefix + "version" in names:
            meta["version"] = small(prefix + "version").decode("latin-1").strip()[:20]
        self._metadata.update(meta)
        root, up = self._unpickle(io.BytesIO(small(pkl)), what)
        self._placeholder_names = sorted(up.placeholders)
        blobs: dict[str, _Blob] = {}
        for key, st in up.storages.items():
            name = f"{prefix}{st.archive}/{key}"
            info = names.get(name)
            if info is None:
                continue  # reported for the tensors that use it
            blobs[key] = self._zip_blob(info)
        return root, up.storages, blobs, little

    def _zip_blob(self, info: zipfile.ZipInfo) -> _Blob:
        p = self.path
        if info.flag_bits & 0x1:
            raise FormatError(p, f"zip entry {info.filename} is encrypted")
        off = info.header_offset
        if off + 30 > self._size:
            raise FormatError(p, f"local header of {info.filename} is past the end of the file",
                              offset=off)
        hdr = self._file.read(off, off + 30)
        if hdr[:4] != b"PK\x03\x04":
            raise FormatError(p, f"zip entry {info.filename} has no local header", offset=off)
        n, e = struct.unpack("<HH", hdr[26:30])
        start = off + 30 + n + e
        if start + info.compress_size > self._size:
            raise FormatError(p, f"zip entry {info.filename} runs past the end of the file "
                                 f"({self._size} bytes): truncated?", offset=start)
        if info.compress_type == zipfile.ZIP_STORED:
            return _Blob(info.filename, start, info.file_size)
        if info.compress_type not in (zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
            raise FormatError(p, f"zip entry {info.filename} uses compression method "
                                 f"{info.compress_type}, which cannot be read")
        return _Blob(info.filename, -1, info.file_size, info)

    def _open_legacy(self) -> tuple[Any, dict[str, _StorageRef], dict[str, _Blob], bool]:
        p = self.path
        mm = self._fh
        mm.seek(0)
        magic, _ = self._unpickle(mm, "legacy pickle (magic number)")
        if magic != LEGACY_MAGIC:
            raise FormatError(p, "a pickle, but not a torch.save file (no PyTorch magic "
                                 "number)", offset=0)
        proto, _ = self._unpickle(mm, "legacy pickle (protocol version)")
        if proto != LEGACY_PROTOCOL:
            raise FormatError(p, f"legacy protocol version {proto!r}, expected "
                                 f"{LEGACY_PROTOCOL}")
        sys_info, _ = self._unpickle(mm, "legacy pickle (sys_info)")
        root, up = self._unpickle(mm, "legacy pickle")
        self._placeholder_names = sorted(up.placeholders)
        keys, _ = self._unpickle(mm, "legacy pickle (storage keys)")
        if not isinstance(keys, list) or not all(isinstance(k, (str, int)) for k in keys):
            raise FormatError(p, "legacy storage key list is not a list of keys",
                              offset=mm.tell())
        self._metadata.update({"container": "legacy", "byteorder": "little"})
        endian = dict.get(sys_info, "little_endian") if isinstance(sys_info, dict) else None
        if isinstance(endian, bool):
            self._metadata["writer_little_endian"] = endian
        pos = mm.tell()
        blobs: dict[str, _Blob] = {}
        for k in keys:
            key = str(k)
            st = up.storages.get(key)
            if st is None:
                raise FormatError(p, f"storage key {key!r} listed but never referenced by the "
                                     "pickle", offset=pos)
            if pos + 8 > self._size:
                raise FormatError(p, f"storage {key!r} header is past the end of the file "
                                     f"({self._size} bytes): truncated?", offset=pos)
            (numel,) = struct.unpack("<q", self._file.read(pos, pos + 8))
            itemsize = _DTYPES[st.dtype][1] if st.dtype in _DTYPES else 1
            nbytes = numel * itemsize
            if numel < 0 or nbytes != st.nbytes:
                raise FormatError(p, f"storage {key!r} holds {numel} elements of {st.dtype}, "
                                     f"the pickle declares {st.nbytes // itemsize}", offset=pos)
            if pos + 8 + nbytes > self._size:
                raise FormatError(p, f"storage {key!r} ({nbytes} bytes) runs past the end of "
                                  f"the file ({self._size} bytes): truncated?", offset=pos + 8)
            blobs[key] = _Blob(f"storage {key}", pos + 8, nbytes)
            pos += 8 + nbytes
        return root, up.storages, blobs, True

    # -- tensors -----------------------------------------------------------------------------
    def _build(self, root: object, storages: Mapping[str, _StorageRef],
               blobs: Mapping[str, _Blob], little: bool) -> None:
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
                    other[".".join(path[:i] + (_key_str(k),))] = _describe(v, count)
        names = [".".join(p) if p else "tensor" for p, _ in found]
        stripped = ""
        for pre in STRIP_PREFIXES:
            while names and all(n.startswith(pre) and len(n) > len(pre) for n in names):
                names = [n[len(pre):] for n in names]
                stripped += pre
        meta = self._metadata
        meta["state_dict_key"] = ".".join(path)
        if stripped:
            meta["stripped_prefix"] = stripped
        duplicates: list[str] = []
        for name, (_p, t) in zip(names, found, strict=True):
            if name in self._entries or name in self._unsupported:
                duplicates.append(name)
                continue
            if isinstance(t, _Unsupported):
                self._unsupported[name] = t.reason
                continue
            assert isinstance(t, _TensorRef)
            why = self._add(name, t, blobs, little)
            if why:
                self._unsupported[name] = why
        meta["tensor_count"] = len(self._entries)
        if other:
            meta["other_entries"] = other
        if self._unsupported:
            meta["unsupported_tensors"] = dict(self._unsupported)
        if duplicates:
            meta["duplicate_names"] = duplicates[:_MAX_OTHER_ENTRIES]
        if self._placeholder_names:
            meta["placeholder_globals"] = self._placeholder_names[:_MAX_OTHER_ENTRIES]

    def _add(self, name: str, t: _TensorRef, blobs: Mapping[str, _Blob], little: bool
             ) -> str | None:
        """Validate one tensor and register it; returns why it is unsupported, or None."""
        p = self.path
        st = t.storage
        if not isinstance(st, _StorageRef):
            raise FormatError(p, f"tensor storage is {type(st).__name__}, not a storage "
                                 "persistent id", tensor=name)
        dname = t.dtype
        if not isinstance(dname, str) or dname not in _DTYPES:
            return f"element type {dname or 'of ' + st.sclass} is not recognised"
        etname, itemsize, why = _DTYPES[dname]
        if etname is None:
            return f"{dname}: {why}"
        size, stride, offset = t.size, t.stride, t.offset
        if (not isinstance(size, (tuple, list)) or not all(_is_int(s) and s >= 0 for s in size)):
            raise FormatError(p, f"size {str(size)[:80]} is not a list of non-negative "
                                 "integers", tensor=name)
        if (not isinstance(stride, (tuple, list)) or len(stride) != len(size)
                or not all(_is_int(s) and s >= 0 for s in stride)):
            raise FormatError(p, f"stride {str(stride)[:80]} does not match size "
                                 f"{list(size)} (needs {len(size)} non-negative integers)",
                              tensor=name)
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise FormatError(p, f"storage offset {offset!r} is not a non-negative integer",
                              tensor=name)
        size, stride = tuple(size), tuple(stride)
        numel = math.prod(size)
        blob = blobs.get(st.key)
        where = f"storage {st.archive}/{st.key}"
        if blob is None:
            raise FormatError(p, f"{where} is missing from the file", tensor=name)
        if st.base + st.nbytes > blob.size:
            raise FormatError(p, f"{where} declares {st.nbytes} bytes (from byte {st.base}) "
                                 f"but the file holds {blob.size}", tensor=name)
        if numel:
            last = offset + sum((s - 1) * d for s, d in zip(size, stride, strict=True))
            if (last + 1) * itemsize > st.nbytes:
                raise FormatError(
                    p, f"{dname} elements {offset}..{last} (size {list(size)}, stride "
                       f"{list(stride)}) extend past the end of {where} "
                       f"({st.nbytes // itemsize} elements)", tensor=name)
        etype = ELEMENT_TYPES[etname]
        sdt = etype.storage if little else etype.storage.newbyteorder(">")
        if len(size) == 0:
            rows, row_stride, trailing = 1, 0, [(1, 0)]
        elif len(size) == 1:
            rows, row_stride, trailing = 1, 0, _merge_trailing(size, stride)
        else:
            rows, row_stride = size[0], stride[0]
            trailing = _merge_trailing(size[1:], stride[1:])
        row_dims = view_row_dims(name, size) if len(size) > 2 else 1
        if row_dims == 2:  # a fused expert tensor: its view's rows span dims 0 and 1
            lead = _merge_trailing(size[:2], stride[:2])
            if len(lead) == 1:
                rows, row_stride = size[0] * size[1], lead[0][1]
                trailing = _merge_trailing(size[2:], stride[2:])
            else:  # strides that do not merge: the plain N-D view
                row_dims = 1
        info = TensorInfo(name, size, etname, self._file.name, row_dims)
        self._entries[name] = _Entry(info, etype, blob, st.base, offset, rows, row_stride,
                                     trailing, bool(t.neg), sdt)
        return None

    # -- Reader ------------------------------------------------------------------------------
    def tensors(self) -> Sequence[TensorInfo]:
        got = self._tensors
        if got is None:
            got = self._tensors = tuple(e.info for e in self._entries.values())
        return got

    def info(self, name: str) -> TensorInfo:
        return self._entry(name).info

    @property
    def files(self) -> Sequence[Path]:
        return (self.path,)

    @property
    def metadata(self) -> Mapping[str, Any]:
        return self._metadata

    def _blob_range(self, blob: _Blob, lo: int, hi: int) -> np.ndarray:
        """Bytes ``lo..hi-1`` of a storage blob: a (tracked) view of the source when stored,
        a slice of the inflated entry otherwise."""
        if blob.zinfo is None:
            if self._closed:
                raise ValueError(f"{self.path}: reader is closed")
            return self._file.view(blob.start + lo, blob.start + hi)
        return self._inflate(blob)[lo:hi]

    def _inflate(self, blob: _Blob) -> np.ndarray:
        got = self._inflated.get(blob.name)
        if got is not None:
            self._inflated.move_to_end(blob.name)
            return got
        assert self._zip is not None and blob.zinfo is not None
        try:
            data = self._zip.read(blob.zinfo)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError) as e:
            raise FormatError(self.path, f"zip entry {blob.name} cannot be inflated ({e})"
                              ) from None
        if len(data) != blob.size:
            raise FormatError(self.path, f"zip entry {blob.name} inflates to {len(data)} bytes, "
                                         f"expected {blob.size}")
        arr = np.frombuffer(data, np.uint8)
        self._inflated[blob.name] = arr
        self._inflated_bytes += arr.nbytes
        while self._inflated_bytes > _INFLATED_CACHE_BYTES and len(self._inflated) > 1:
            self._inflated_bytes -= self._inflated.popitem(last=False)[1].nbytes
        return arr

    def _entry(self, name: str) -> _Entry:
        ent = self._entries.get(name)
        if ent is None:
            if name in self._unsupported:
                raise UnsupportedDtypeError(self.path, self._unsupported[name], tensor=name)
            raise KeyError(f"{self.path}: no tensor {name!r}")
        return ent

    def _strided(self, ent: _Entry, e_r0: int, e_r1: int, e_c0: int, e_c1: int
                 ) -> tuple[np.ndarray, int]:
        """A no-copy strided view (storage dtype) covering rows ``e_r0..e_r1-1`` and at least
        cols ``e_c0..e_c1-1`` of the 2-D view, and the column to start from once it is flattened
        to 2-D. With one trailing dim the view is exactly the block (skip 0); otherwise it spans
        the whole dim-1 slices the columns fall in: ``(rows, b - a, *trailing[1:])``."""
        isz = ent.etype.itemsize
        first = ent.offset + e_r0 * ent.row_stride
        trailing = ent.trailing
        skip = 0
        if len(trailing) == 1:
            (_n, t1), = trailing
            first += e_c0 * t1
            shape: tuple[int, ...] = (e_r1 - e_r0, e_c1 - e_c0)
            strides_e: tuple[int, ...] = (ent.row_stride, t1)
        else:
            inner = math.prod(s for s, _ in trailing[1:])
            a, b = e_c0 // inner, -(-e_c1 // inner)
            skip = e_c0 - a * inner
            first += a * trailing[0][1]
            shape = (e_r1 - e_r0, b - a) + tuple(s for s, _ in trailing[1:])
            strides_e = (ent.row_stride,) + tuple(d for _, d in trailing)
        last = first + sum((s - 1) * d for s, d in zip(shape, strides_e, strict=True))
        lo, hi = ent.base + first * isz, ent.base + (last + 1) * isz
        assert 0 <= lo <= hi <= ent.blob.size, (ent.info.name, lo, hi, ent.blob.size)
        flat = self._blob_range(ent.blob, lo, hi).view(ent.storage_dtype)
        arr = np.lib.stride_tricks.as_strided(
            flat, shape=shape, strides=tuple(d * isz for d in strides_e), writeable=False)
        return arr, skip

    def read(self, name: str, e_r0: int, e_r1: int, e_c0: int = 0,
             e_c1: int | None = None) -> np.ndarray:
        ent = self._entry(name)
        c1 = check_block(ent.info, e_r0, e_r1, e_c0, e_c1)
        if e_r1 == e_r0 or c1 == e_c0:
            return np.zeros((e_r1 - e_r0, c1 - e_c0), np.float32)
        arr, skip = self._strided(ent, e_r0, e_r1, e_c0, c1)
        if arr.ndim > 2:
            arr = arr.reshape(arr.shape[0], -1)[:, skip:skip + (c1 - e_c0)]
        out = np.ascontiguousarray(ent.etype.decode(arr), dtype=np.float32)
        if ent.neg:
            np.negative(out, out=out)
        return out

    def raw_bytes(self) -> np.ndarray:
        """The whole file as a read-only uint8 array (a view of the source, not tracked)."""
        if self._closed:
            raise ValueError(f"{self.path}: reader is closed")
        return self._file.view(0, self._size, track=False)

    def release(self) -> None:
        self._file.release()

    def close(self) -> None:
        self._closed = True
        self._inflated = OrderedDict()
        self._inflated_bytes = 0
        zf = getattr(self, "_zip", None)
        if zf is not None:
            zf.close()
            self._zip = None
        self._file.close()


def _lookup(obj: object, key: str) -> object:
    for k, v in _mapping_children(obj) or []:
        if _key_str(k) == key:
            return v
    raise AssertionError(key)

