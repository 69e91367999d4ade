# Over the 450-line guide (~520): everything a pickle can reach - the allow-list, its stand-ins,
# the records and placeholders they build - stays in this one module, to be audited as one.
"""The restricted unpickler of PyTorch checkpoints: **no code from the file ever runs**.

Split from ``pytorch.py`` (which reads the containers and the tensors) so that what a pickle can
reach is in one place: this module, and the opcode checks of ``pickle_scan.py``.

``RestrictedUnpickler.find_class`` resolves a short allow-list (tensor/parameter rebuild
functions, storage classes, dtype names, ``collections.OrderedDict``, a few harmless builtins) to
stand-ins of this module that only build lightweight records (:class:`TensorRef`: storage key,
dtype, storage offset, size, stride). Every other global - ``omegaconf.dictconfig.DictConfig``,
``argparse.Namespace``, ``os.system``, ``builtins.eval`` - becomes a *placeholder* class that is
never imported: calling it, ``NEWOBJ``, ``BUILD``/``__setstate__``, item and list assignment just
record the global's name, the arguments and the state. So a Lightning checkpoint with
hyper-parameters from uninstalled packages still reads, and a pickle whose ``__reduce__`` names
``os.system`` yields an inert record. Persistent ids are checked here (kind, storage class, key,
element count in range, legacy views inside their storage); the records' other fields are
checked by the reader.
"""

from __future__ import annotations

import _compat_pickle
import pickle
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NoReturn

__all__ = ["RestrictedUnpickler", "DTYPES", "StorageRef", "TensorRef", "Unsupported",
           "Placeholder", "placeholder_children", "short", "MAX_NUMEL"]

MAX_NUMEL = 1 << 62
"""Element counts, sizes, strides and offsets of a checkpoint are below this (numpy's indices are
int64; no storage holds 2^62 elements)."""

# -- dtypes ---------------------------------------------------------------------------------------
# torch dtype name -> (ELEMENT_TYPES name or None, bytes per element, why unsupported)
DTYPES: dict[str, tuple[str | None, int, str]] = {
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


class StorageRef(_Inert):
    """A storage named by a persistent id: ``key``'s bytes from ``base`` (legacy views), ``nbytes``
    long, elements of ``dtype``."""

    __slots__ = ("key", "dtype", "nbytes", "base", "archive", "sclass")

    def __init__(self, key: str, dtype: str | None, nbytes: int, base: int,
                 archive: str, sclass: str) -> None:
        self.key, self.dtype, self.nbytes, self.base, self.archive, self.sclass = (
            key, dtype, nbytes, base, archive, sclass)


class TensorRef(_Inert):
    """A dense tensor as rebuilt by ``torch._utils._rebuild_tensor*``; fields unvalidated."""

    __slots__ = ("storage", "offset", "size", "stride", "dtype", "neg")

    def __init__(self, storage: object, offset: object, size: object, stride: object,
                 dtype: object, neg: bool = False) -> None:
        self.storage, self.offset, self.size, self.stride, self.dtype, self.neg = (
            storage, offset, size, stride, dtype, neg)


class Unsupported(_Inert):
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


def _rebuild_placeholder(qualname: str, args: tuple[Any, ...], state: object) -> Placeholder:
    """Re-pickling support for placeholders (``copy``/``pickle`` of a loaded object)."""
    obj = placeholder_class(qualname)(*args)
    obj.__setstate__(state)
    return obj


class Placeholder(metaclass=_FrozenMeta):
    """Stands in for any global not on the allow-list. Instances record the arguments they were
    created with, the state ``BUILD`` gave them, and items / list elements pickle added; nothing
    of the named class is ever imported or run."""

    _wv_global = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Placeholder:
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

    def __call__(self, *args: Any, **kwargs: Any) -> Placeholder:
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


def placeholder_class(qualname: str) -> type[Placeholder]:
    """A fresh placeholder class for the global ``qualname`` (never imported)."""
    name = qualname.rpartition(".")[2]
    cls = _FrozenMeta(name if name.isidentifier() else "Placeholder", (Placeholder,),
                      {"_wv_global": qualname, "__module__": __name__})
    assert issubclass(cls, Placeholder)
    return cls


def _placeholder_state(obj: Placeholder) -> object:
    return object.__getattribute__(obj, "_wv_state")


def placeholder_children(obj: Placeholder) -> tuple[list[tuple[object, object]], bool]:
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
                    *rest: object) -> TensorRef:
    dtype = storage.dtype if isinstance(storage, StorageRef) else None
    return TensorRef(storage, storage_offset, size, stride, dtype)


def _rebuild_tensor_v2(storage: object, storage_offset: object, size: object, stride: object,
                       requires_grad: object = False, backward_hooks: object = None,
                       metadata: object = None) -> TensorRef:
    dtype = storage.dtype if isinstance(storage, StorageRef) else None
    return TensorRef(storage, storage_offset, size, stride, dtype, _neg_of(metadata))


def _rebuild_tensor_v3(storage: object, storage_offset: object, size: object, stride: object,
                       requires_grad: object, backward_hooks: object, dtype: object,
                       metadata: object = None) -> TensorRef:
    if isinstance(dtype, _DType):
        name = dtype.name
    elif isinstance(dtype, type) and issubclass(dtype, Placeholder):
        name = dtype._wv_global  # a dtype name this reader does not know
    else:
        name = type(dtype).__name__
    return TensorRef(storage, storage_offset, size, stride, name, _neg_of(metadata))


def _rebuild_parameter(data: object, *rest: object) -> object:
    return data


def _rebuild_from_type_v2(func: object, new_type: object, args: object, state: object) -> object:
    if isinstance(func, _StandIn) and isinstance(args, tuple):
        out = func(*args)
        if isinstance(out, (TensorRef, Unsupported)):
            return out
    return Unsupported(f"tensor subclass {getattr(new_type, '_wv_global', '?')}")


def _rebuild_device_tensor_from_cpu_tensor(data: object, *rest: object) -> object:
    return data if isinstance(data, TensorRef) else Unsupported("device tensor")


def _unsupported(reason: str) -> Callable[..., Unsupported]:
    def make(*args: object, **kwargs: object) -> Unsupported:
        return Unsupported(reason)
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
    if isinstance(cls, type) and issubclass(cls, Placeholder):
        return cls()
    return Placeholder()


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


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose globals come only from the allow-list or are placeholders."""

    def __init__(self, file: Any, archive: str = "data") -> None:
        super().__init__(file, encoding="utf-8")
        self.archive = archive
        self.placeholders: dict[str, type[Placeholder]] = {}
        self.storages: dict[str, StorageRef] = {}
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
        if module == "torch" and (name in DTYPES or name in _DTYPE_ALIASES):
            return _DType(_DTYPE_ALIASES.get(name, name))
        cls = self.placeholders.get(qual)
        if cls is None:
            cls = self.placeholders[qual] = placeholder_class(qual)
        return cls

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid:
            raise pickle.UnpicklingError(f"unsupported persistent id {short(pid)}")
        kind = pid[0].decode("latin-1") if isinstance(pid[0], bytes) else pid[0]
        if kind == "module":  # legacy: (module class, source file, source) of pickled modules
            return pid[1] if len(pid) > 1 else None
        if kind != "storage" or len(pid) not in (5, 6):
            raise pickle.UnpicklingError(f"unsupported persistent id {short(pid)}")
        stype, key, _location, numel = pid[1:5]
        if _is_count(key):
            key = str(key)
        if not isinstance(stype, _StorageType):
            raise pickle.UnpicklingError(f"persistent id names storage type {short(stype)}, "
                                         "not a torch storage class")
        if not isinstance(key, str) or not _is_count(numel):
            raise pickle.UnpicklingError(f"malformed storage persistent id {short(pid)}: "
                                         "expects a key and an element count below 2^62")
        dt = stype.dtype
        itemsize = DTYPES[dt][1] if dt in DTYPES else 1
        root = self.storages.get(key)
        if root is None:
            root = self.storages[key] = StorageRef(key, dt, numel * itemsize, 0, self.archive,
                                                   stype.name)
        view = pid[5] if len(pid) == 6 else None
        if view is None:
            return root
        # legacy views: (view key, offset, size) in elements, inside the root storage
        if not (isinstance(view, tuple) and len(view) == 3 and _is_count(view[1])
                and _is_count(view[2])):
            raise pickle.UnpicklingError(f"malformed storage view {short(view)} of storage "
                                         f"{short(key)}: expects (key, offset, size)")
        _vkey, off, vsize = view
        if off + vsize > root.nbytes // itemsize:
            raise pickle.UnpicklingError(
                f"storage view {short(view)} runs past the end of storage {short(key)} "
                f"({root.nbytes // itemsize} elements)")
        return StorageRef(key, dt, vsize * itemsize, off * itemsize, self.archive, stype.name)


def _is_count(v: object) -> bool:
    """A non-negative integer below ``MAX_NUMEL`` (not a bool)."""
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < MAX_NUMEL


def short(obj: object, limit: int = 80, depth: int = 2) -> str:
    """A one-line description of a value from a pickle, for a message: bounded in length and in
    depth, escaped like ``repr``, never raising (huge integers and deep nesting included).

    >>> short((1, [2, [3, [4]]], 10 ** 5000))
    '(1, [2, [3, [...]]], <16610-bit integer>)'
    """
    if isinstance(obj, bool) or obj is None:
        return repr(obj)
    if isinstance(obj, int):
        return repr(obj) if obj.bit_length() <= 64 else f"<{obj.bit_length()}-bit integer>"
    if isinstance(obj, float):
        return repr(obj)
    if isinstance(obj, (str, bytes)):
        text = repr(obj[:limit])
    elif isinstance(obj, (tuple, list)):
        if depth < 0:
            return "[...]" if isinstance(obj, list) else "(...)"
        parts, size = [], 0
        for v in obj[:16]:
            parts.append(short(v, limit, depth - 1))
            size += len(parts[-1]) + 2
            if size > limit:
                break
        inner = ", ".join(parts) + (", ..." if len(parts) < len(obj) else "")
        text = (f"[{inner}]" if isinstance(obj, list)
                else f"({inner}{',' if len(obj) == 1 else ''})")
    elif isinstance(obj, Placeholder) or (isinstance(obj, type) and issubclass(obj, Placeholder)):
        text = f"<{repr(obj._wv_global[:limit])[1:-1]}>"  # a global's name is the file's text
    elif isinstance(obj, (_DType, _StorageType, _StandIn)):
        text = repr(obj)
    else:
        text = f"<{type(obj).__name__}>"
    return text if len(text) <= limit else text[:limit - 1] + "…"
