"""Fast palette-PNG encoder: the public, validating wrapper of the numba kernels in
``weightvis.kernels.deflate`` (run-length-only deflate with dynamic Huffman blocks).

The PNG (colour type 3, bit depth 8, filter type 0 on every row) wraps a zlib stream (RFC 1950:
2-byte header, deflate, big-endian Adler-32) whose deflate data (RFC 1951) is what zlib makes with
``strategy=Z_RLE``: literals and runs of the previous byte only, with per-block Huffman codes.

Speed (benchmarks/png_bench.py): about 0.5 ms per 512x512 tile of weight-like noise on one core,
5-6x faster than Pillow with zlib level 1 + Z_RLE, and 0.1-0.2 % smaller.

``deflate="zlib"`` compresses the same rows with the standard library's zlib instead (level 1,
Z_RLE; 1.7 ms per noise tile against 0.3 ms, within 1 % of the size): nothing to compile, for
a small render on a first run (the demo: the numba kernels cost ~4.6 CPU-s to compile once).
"""

from __future__ import annotations

import struct
import threading
import zlib

import numpy as np

from .kernels.deflate import deflate_bound, deflate_rle, deflate_scratch_runs, filter_rows

__all__ = ["encode_png_palette", "png_parts", "zlib_rows", "idat_stream", "BLOCK_BYTES",
           "warm_up"]

BLOCK_BYTES = 1 << 18
"""Input bytes per deflate block (one histogram and Huffman code each; the input is split into
equal blocks, a 512x512 tile into two). Measured with ``benchmarks/png_bench.py --block-sizes``:
sizes from 32 KiB to whole tiles are within 0.3 % of each other on noise, demo weight tiles and
half-padding tiles (32-64 KiB best on weight tiles, whole tiles on noise); each block costs about
20 us of code building, and blocks below 32 KiB pay more for headers than they gain."""

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_ZLIB_HEADER = b"\x78\x01"  # deflate, 32 KiB window, FLEVEL 0 (fastest); 0x7801 % 31 == 0
_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_IDAT_CRC0 = zlib.crc32(b"IDAT" + _ZLIB_HEADER)
_IDAT_MAX = 1 << 30


_LOCAL = threading.local()


def _scratch(n: int, block_bytes: int, slot: str = "scratch"
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Work arrays for n filtered bytes (raw rows, deflate output, run positions and lengths),
    kept per thread for the last size asked: a tile pyramid encodes thousands of images of one
    size, and fresh arrays cost page faults and clearing each time. ``slot``: one set per
    caller (tiles and sidecars alternate sizes)."""
    key = (n, block_bytes)
    got = getattr(_LOCAL, slot, None)
    if got is None or got[0] != key:
        nruns = deflate_scratch_runs(n, block_bytes)
        got = (key, (np.empty(n, np.uint8), np.empty(deflate_bound(n, block_bytes), np.uint8),
                     np.empty(nruns, np.int32), np.empty(nruns, np.int32)))
        setattr(_LOCAL, slot, got)
    return got[1]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data,
                                                                                   zlib.crc32(kind)))


def encode_png_palette(idx: np.ndarray, palette: bytes, *, block_bytes: int = BLOCK_BYTES,
                       deflate: str = "rle") -> bytes:
    """A palette PNG (colour type 3, bit depth 8, no interlace, filter type 0) of the uint8 index
    image ``idx`` (shape (h, w), h, w >= 1, any strides) with ``palette`` (flat RGB bytes, 1-256
    entries; every index must name an entry). The compressed data is RLE-only deflate with the
    same literals and runs as zlib's Z_RLE strategy and per-block Huffman codes: about the size
    of zlib level 1 + Z_RLE, several times faster. ``block_bytes``: see BLOCK_BYTES.
    Releases the GIL in the kernels and in zlib.crc32, so threads can encode tiles in parallel.

    >>> data = encode_png_palette(np.zeros((2, 3), np.uint8), bytes(768))
    >>> data[:8], data[12:16], data[16:24]
    (b'\\x89PNG\\r\\n\\x1a\\n', b'IHDR', b'\\x00\\x00\\x00\\x03\\x00\\x00\\x00\\x02')
    """
    return b"".join(png_parts(idx, palette, block_bytes=block_bytes, deflate=deflate))


def _zlib_stream(img: np.ndarray) -> bytes:
    """The zlib stream of ``img``'s rows, each prefixed with filter byte 0, by the standard
    library (level 1: header 0x78 0x01, as _ZLIB_HEADER; strategy Z_RLE)."""
    h, w = img.shape
    raw = np.empty((h, w + 1), np.uint8)
    raw[:, 0] = 0
    raw[:, 1:] = img
    z = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    stream = z.compress(raw.data) + z.flush()
    assert stream[:2] == _ZLIB_HEADER
    return stream


def png_parts(idx: np.ndarray, palette: bytes, *, block_bytes: int = BLOCK_BYTES,
              deflate: str = "rle") -> list[bytes | memoryview]:
    """``encode_png_palette`` as buffers to write one after the other (``os.writev``): the
    compressed data is a view of this thread's scratch memory, valid until its next call, so
    a tile costs no fresh allocation of its size (measured: fresh 250 KB objects per tile
    doubled the kernel time of writing a bundle, in page faults)."""
    if not isinstance(idx, np.ndarray) or idx.dtype != np.uint8 or idx.ndim != 2:
        raise ValueError(f"encode_png_palette: need a 2-D uint8 array, got "
                         f"{getattr(idx, 'dtype', type(idx))}{getattr(idx, 'shape', '')}")
    h, w = idx.shape
    if not (1 <= h < 1 << 31 and 1 <= w < 1 << 31):
        raise ValueError(f"encode_png_palette: image size {w}x{h} outside 1..2^31-1")
    palette = bytes(palette)
    if len(palette) % 3 or not 3 <= len(palette) <= 768:
        raise ValueError(f"encode_png_palette: palette must be 1-256 RGB triples, got "
                         f"{len(palette)} bytes")
    if len(palette) < 768 and int(idx.max()) >= len(palette) // 3:
        raise ValueError(f"encode_png_palette: index {int(idx.max())} beyond the "
                         f"{len(palette) // 3}-entry palette")
    if not 1 <= block_bytes <= 1 << 30:
        raise ValueError(f"encode_png_palette: block_bytes must be in 1..2^30, got {block_bytes}")
    body: bytes | memoryview
    if _check_deflate(deflate) == "zlib":
        stream = _zlib_stream(idx)
        body, tail = memoryview(stream)[2:-4], stream[-4:]
        nbytes = len(body)
    else:
        n = h * (w + 1)
        raw, out, rpos, rlen = _scratch(n, block_bytes)
        adler = filter_rows(idx, raw)
        nbytes = deflate_rle(raw, block_bytes, rpos, rlen, out)
        if nbytes < 0:
            raise RuntimeError("encode_png_palette: deflate block size differs from its cost "
                               "(bug)")
        body = out[:nbytes].data
        tail = struct.pack(">I", adler)
    head = (_SIGNATURE + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
            + _chunk(b"PLTE", palette))
    if nbytes + 6 > _IDAT_MAX:  # (not for tiles) a chunk holds < 2^31 bytes: several IDATs
        stream = _ZLIB_HEADER + bytes(body) + tail
        idats = [_chunk(b"IDAT", stream[i:i + _IDAT_MAX])
                 for i in range(0, len(stream), _IDAT_MAX)]
        return [head + b"".join(idats) + _IEND]
    crc = zlib.crc32(tail, zlib.crc32(body, _IDAT_CRC0))
    return [head + struct.pack(">I", nbytes + 6) + b"IDAT" + _ZLIB_HEADER, body,
            tail + struct.pack(">I", crc) + _IEND]


def _check_deflate(deflate: str) -> str:
    if deflate not in ("rle", "zlib"):
        raise ValueError(f"deflate must be 'rle' or 'zlib', not {deflate!r}")
    return deflate


def zlib_rows(img: np.ndarray, *, block_bytes: int = BLOCK_BYTES, deflate: str = "rle") -> bytes:
    """The zlib stream (RFC 1950) that a PNG's IDAT of the 2-D uint8 image ``img`` would hold:
    every row prefixed with filter byte 0, then the RLE-only deflate above. Any bytes, not only
    palette indices (the value sidecars' byte planes, sidecars.py); ``block_bytes`` and
    ``deflate`` as in ``encode_png_palette`` (a block per byte plane keeps each plane's own
    Huffman code; zlib chooses its own blocks).

    >>> import zlib
    >>> zlib.decompress(zlib_rows(np.arange(6, dtype=np.uint8).reshape(2, 3)))
    b'\\x00\\x00\\x01\\x02\\x00\\x03\\x04\\x05'
    """
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 2 \
            or 0 in img.shape:
        raise ValueError(f"zlib_rows: need a non-empty 2-D uint8 array, got "
                         f"{getattr(img, 'dtype', type(img))}{getattr(img, 'shape', '')}")
    if _check_deflate(deflate) == "zlib":
        return _zlib_stream(img)
    h, w = img.shape
    n = h * (w + 1)
    raw, out, rpos, rlen = _scratch(n, block_bytes, "rows")
    adler = filter_rows(img, raw)
    nbytes = deflate_rle(raw, block_bytes, rpos, rlen, out)
    if nbytes < 0:
        raise RuntimeError("zlib_rows: deflate block size differs from its cost (bug)")
    return b"".join((_ZLIB_HEADER, out[:nbytes].data, struct.pack(">I", adler)))


def idat_stream(parts: list[bytes | memoryview]) -> bytes | None:
    """The zlib stream inside a PNG made by ``png_parts`` (``zlib_rows`` of its indices, already
    computed): call before the thread's next encode. None for an image of several IDATs, or
    parts that are not ``png_parts``' (another tile format)."""
    if len(parts) != 3 or bytes(parts[0][:8]) != _SIGNATURE:
        return None
    return b"".join((_ZLIB_HEADER, parts[1], bytes(parts[2][:4])))


def warm_up() -> None:
    """Compile the kernels (C-contiguous and strided input) once."""
    a = np.zeros((2, 4), np.uint8)
    pal = bytes(768)
    encode_png_palette(a, pal)
    encode_png_palette(a[:, ::2], pal)
    zlib_rows(a)
