"""Value sidecars: what the viewer reads about the element under the cursor.

A page opened from ``file://`` cannot read its tiles' pixels (a canvas that draws a ``file://``
image is tainted) nor ``fetch()`` a file, but it can run a classic ``<script src>``. So beside
every max-zoom tile ``tiles/<scene>/<z>/<x>/<y>.png`` a render may write
``tiles/<scene>/<z>/<x>/<y>.js``, one call::

    WV.sidecar({"scene": "main", "z": 7, "x": 3, "y": 4, "size": 512,
                "index": "<base64>", "values": {"dtype": "bf16", "sides": 1, "data": "<base64>"}})

- ``index``: the tile's palette indices, ``size`` rows of ``size`` bytes, as the zlib stream of a
  PNG's IDAT (each row prefixed with filter byte 0; for a PNG tile it is the tile's own IDAT). With
  the colour rule of the manifest's colormap and the tensor's scale, an index is an exact value
  interval: the viewer shows it for every element.
- ``values`` (``--values``, or by default when the checkpoint is small, see
  ``options.VALUES_LIMIT_MB``): the element values as stored, one per pixel (0 on padding):
  ``dtype`` is the narrowest of ``bf16``, ``f16``, ``f32`` that holds every value of the tile
  exactly (the float32 the reader decodes: bf16 / f16 tensors exactly as stored, quantized GGUF
  types as their float32 decode), ``u8`` for file bytes. ``sides`` is 2 in a diff's delta scene:
  A's values, then B's XOR A's bit patterns (an unchanged element costs nothing after deflate).
  ``data`` is the zlib stream of the little-endian bytes split into byte planes (byte 0 of every
  element, then byte 1, ...: each plane a ``size``-row image, rows prefixed with filter byte 0,
  one deflate block per plane), as blosc's shuffle does: the sign and exponent bytes compress,
  mantissa bytes are stored.

The viewer inflates both with ``DecompressionStream("deflate")``. A sidecar depends only on its
tile's data, so bundles stay byte-identical whatever the executor and worker count.
"""

from __future__ import annotations

import base64
import json

import numpy as np

from .png import idat_stream, zlib_rows

__all__ = ["narrowest", "byte_planes", "encode_sidecar", "SIDECAR_EXT"]

SIDECAR_EXT = "js"

_LE = {np.dtype(np.float32): "<f4", np.dtype(np.float16): "<f2", np.dtype(np.uint16): "<u2",
       np.dtype(np.uint8): "u1"}


def narrowest(vals: np.ndarray) -> tuple[str, np.ndarray]:
    """The narrowest storage of float32 ``vals`` that keeps every bit: ``("bf16", uint16 codes)``
    when every value's low 16 bits are zero, ``("f16", float16)`` when every value converts to
    float16 and back to the same bits, else ``("f32", vals)``.

    >>> narrowest(np.array([1.5, -2.0], np.float32))[0], narrowest(np.array([0.1], np.float32))[0]
    ('bf16', 'f32')
    >>> narrowest(np.array([1.0009765625], np.float32))[0]
    'f16'
    """
    bits = vals.view(np.uint32)
    if not (bits & 0xFFFF).any():
        return "bf16", (bits >> 16).astype(np.uint16)
    with np.errstate(over="ignore", invalid="ignore"):
        probe = vals.reshape(-1)[::997]  # most float32 tiles fail on a sample: no full pass
        if not np.array_equal(probe.astype(np.float16).astype(np.float32).view(np.uint32),
                              probe.view(np.uint32)):
            return "f32", vals
        half = vals.astype(np.float16)
    if np.array_equal(half.astype(np.float32).view(np.uint32), bits):
        return "f16", half
    return "f32", vals


def _bits(dtype: str, vals: np.ndarray) -> np.ndarray:
    """float32 ``vals`` stored as ``dtype`` (known to hold them), as unsigned integers."""
    if dtype == "bf16":
        return (vals.view(np.uint32) >> 16).astype(np.uint16)
    if dtype == "f16":
        with np.errstate(over="ignore", invalid="ignore"):
            return vals.astype(np.float16).view(np.uint16)
    return vals.view(np.uint32)


_WIDTH = {"bf16": 2, "f16": 2, "f32": 4}


def byte_planes(arr: np.ndarray) -> np.ndarray:
    """The (k*h, w) uint8 image of an (h, w) array of k-byte elements: byte plane j (byte j of
    every little-endian element) in rows j*h..(j+1)*h-1."""
    h, w = arr.shape
    le = np.ascontiguousarray(arr, dtype=_LE.get(arr.dtype, arr.dtype.newbyteorder("<")))
    k = le.dtype.itemsize
    if k == 1:
        return le.view(np.uint8)
    return np.ascontiguousarray(le.view(np.uint8).reshape(h, w, k).transpose(2, 0, 1)
                                ).reshape(k * h, w)


def _values_parts(sides: list[np.ndarray], deflate: str = "rle") -> list[bytes]:
    """The ``values`` member of a sidecar (JSON text pieces) for the value buffers ``sides``."""
    size = sides[0].shape[1]
    if sides[0].dtype == np.uint8:  # file bytes
        dtype, planes = "u8", sides[0]
    elif len(sides) == 1:
        dtype, stored = narrowest(sides[0])
        planes = byte_planes(stored)
    else:
        a_dtype, _ = narrowest(sides[0])
        b_dtype, _ = narrowest(sides[1])
        dtype = a_dtype if a_dtype == b_dtype else "f32"
        a_bits, b_bits = _bits(dtype, sides[0]), _bits(dtype, sides[1])
        planes = np.concatenate([byte_planes(a_bits), byte_planes(b_bits ^ a_bits)])
    block = planes.shape[0] // max(1, _WIDTH.get(dtype, 1) * len(sides)) * (size + 1)
    data = zlib_rows(planes, block_bytes=block, deflate=deflate)
    return [b',"values":{"dtype":"%s","sides":%d,"data":"' % (dtype.encode(), len(sides)),
            base64.b64encode(data), b'"}']


def encode_sidecar(key: str, z: int, t_x: int, t_y: int, idx: np.ndarray,
                   png_parts: list[bytes | memoryview] | None,
                   sides: list[np.ndarray] | None, deflate: str = "rle") -> list[bytes]:
    """The sidecar script of leaf tile (z, t_x, t_y) of scene ``key``, as pieces to write in
    order: ``idx`` its palette indices, ``png_parts`` its encoded tile (a PNG's IDAT is reused;
    None or another format's: compressed here), ``sides`` the value buffers (None: indices
    only); ``deflate``: options.PngDeflate.
    (Built from pieces, not ``json.dumps``: escaping the base64 text costs more than the rest.)"""
    stream = idat_stream(png_parts) if png_parts is not None else None
    if stream is None:
        stream = zlib_rows(idx, deflate=deflate)
    head = (f'{{"scene":{json.dumps(key, ensure_ascii=True)},"z":{z:d},"x":{t_x:d},'
            f'"y":{t_y:d},"size":{idx.shape[1]:d},"index":"')
    parts = [b"WV.sidecar(", head.encode("ascii"), base64.b64encode(stream), b'"']
    if sides:
        parts += _values_parts(sides, deflate)
    parts.append(b"});\n")
    return parts
