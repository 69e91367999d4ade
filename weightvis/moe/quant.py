"""True values of block-scaled storage, decoded where a checkpoint is read (MOE.md §1.5).

- **FP8 with block scales** (DeepSeek-V3/R1, ``quantization_config.quant_method = "fp8"``): a
  weight ``X.weight`` (F8_E4M3, [R, C], or fused [E, r, c]) has a sibling ``X.weight_scale_inv``
  (F32, [⌈R/b0⌉, ⌈C/b1⌉], per expert for a fused weight) and the true weight is
  ``w · scale_inv`` over b0 × b1 blocks (``weight_block_size``, default 128 × 128). The name says
  "inverse", but the value multiplies: llama.cpp's converter (``dequant_simple``) and
  transformers' FP8 integration both do. The product is one float32 multiplication of two
  exactly decoded float32 numbers, so it is the float64 product correctly rounded.
- **MXFP4** (gpt-oss, OCP Microscaling Formats spec v1.0): ``P_blocks`` (U8, [E, n, G, 16]: two
  E2M1 codes per byte, the low nibble first) and ``P_scales`` (U8, [E, n, G]: E8M0 exponents) hold
  ``P`` = [E, n, G·32]; value = ``E2M1[code] · 2^(scale − 127)`` (scale 255 is NaN). As
  transformers does (``integrations/mxfp4.py``: ``convert_moe_packed_tensors``), the checkpoint
  then presents ``P`` transposed, [E, G·32, n] - the layout of gpt-oss' bf16 files, so the two
  releases name, shape and slice their experts alike - with dtype ``MXFP4``; the two stored
  tensors are not listed (their bytes are ``P``'s).

``Decoding`` finds both in a tensor listing (one pass, dictionary lookups) and reads the true
values by block for ``formats.MultiReader``; every scene, statistic and ``expert_matrix`` reads
through it, so raw codes are never shown as weights. ``expert_rows`` reads rows of one expert's
matrix of a fused tensor whatever its 2-D view.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np

from ..errors import FormatError
from ..index import view_row_dims
from ..types import TensorInfo

__all__ = ["FP4_E2M1", "DEFAULT_FP8_BLOCK", "Decoding", "decode_mxfp4", "expert_rows",
           "fp8_block", "SCALE_SUFFIX"]

FP4_E2M1 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                     -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0], np.float32)
"""The 16 E2M1 values by code (OCP MX spec, table 5)."""
DEFAULT_FP8_BLOCK = (128, 128)
"""DeepSeek-V3's ``weight_block_size``, used when config.json names none."""
SCALE_SUFFIX = "_scale_inv"
_FP8 = ("F8_E4M3", "F8_E5M2")
_MX_BYTES = 16  # bytes per 32-element MXFP4 block


class _Reads(Protocol):
    """What the decoders need of a reader (``formats.base.Reader``)."""

    def info(self, name: str) -> TensorInfo: ...

    def read(self, name: str, e_r0: int, e_r1: int, e_c0: int = 0,
             e_c1: int | None = None) -> np.ndarray: ...


def fp8_block(config: Mapping[str, Any] | None) -> tuple[int, int]:
    """The FP8 scale block (rows, cols) from ``quantization_config.weight_block_size``."""
    qc = config.get("quantization_config") if isinstance(config, Mapping) else None
    bs = qc.get("weight_block_size") if isinstance(qc, Mapping) else None
    if (isinstance(bs, list) and len(bs) == 2
            and all(type(v) is int and 0 < v <= 1 << 20 for v in bs)):  # noqa: E721
        return (bs[0], bs[1])
    return DEFAULT_FP8_BLOCK


def expert_rows(reader: _Reads, t: TensorInfo, e: int, lo: int, hi: int, c0: int, c1: int
                ) -> np.ndarray:
    """Rows ``lo..hi-1``, cols ``c0..c1-1`` of expert ``e``'s matrix (``shape[1]`` ×
    ``prod(shape[2:])``) of a fused tensor, whatever its 2-D view: a row range of the stacked
    view (``row_dims`` 2), else a column range of view row ``e``."""
    r = t.shape[1]
    if t.row_dims == 2:
        return reader.read(t.name, e * r + lo, e * r + hi, c0, c1)
    w = math.prod(t.shape[2:])
    flat = reader.read(t.name, e, e + 1, lo * w, hi * w).reshape(hi - lo, w)
    return np.ascontiguousarray(flat[:, c0:c1])


def decode_mxfp4(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """float32 [..., G·32] from MXFP4 ``blocks`` (uint8 [..., G, 16]) and ``scales`` (uint8
    [..., G]): the low nibble of a byte is the even element (OCP MX spec; transformers'
    ``convert_moe_packed_tensors``)."""
    codes = np.empty(blocks.shape[:-1] + (2 * _MX_BYTES,), np.uint8)
    np.bitwise_and(blocks, 0x0F, out=codes[..., 0::2])
    np.right_shift(blocks, 4, out=codes[..., 1::2])
    vals = FP4_E2M1[codes]
    exp = scales.astype(np.int32) - 127
    with np.errstate(over="ignore"):  # 6 · 2^127 is +inf in float32: its true value there
        out: np.ndarray = np.ldexp(vals, exp[..., None]).astype(np.float32, copy=False)
    out[scales == 255] = np.nan  # E8M0 0xFF: not a number
    return out.reshape(blocks.shape[:-2] + (-1,))


class _Scaled(NamedTuple):
    """An FP8 weight and its block scales."""

    scale: str
    block: tuple[int, int]
    problem: str | None
    """Why the scales cannot apply (raised on read), or None."""


class _Mx(NamedTuple):
    """A virtual MXFP4 tensor [E, G·32, n] over its stored ``blocks`` and ``scales``."""

    info: TensorInfo
    blocks: TensorInfo
    scales: TensorInfo


class Decoding:
    """The tensors of a listing whose true values need a decode beyond their dtype's: FP8
    weights with ``weight_scale_inv`` block scales, and MXFP4 ``_blocks`` / ``_scales`` pairs
    (presented as one tensor each). Built in one pass over the listing."""

    __slots__ = ("scaled", "virtual", "hidden")

    def __init__(self, tensors: Sequence[TensorInfo], config: Mapping[str, Any] | None) -> None:
        self.scaled: dict[str, _Scaled] = {}
        self.virtual: dict[str, _Mx] = {}
        self.hidden: set[str] = set()
        """Stored names a virtual tensor stands for (not listed)."""
        by_name: dict[str, TensorInfo] | None = None
        block = fp8_block(config)
        for t in tensors:
            n = t.name
            if t.dtype in _FP8 and n.endswith(".weight"):
                by_name = by_name or {x.name: x for x in tensors}
                s = by_name.get(n + SCALE_SUFFIX)
                if s is not None:
                    self.scaled[n] = _Scaled(s.name, block, _fp8_problem(t, s, block))
            elif n.endswith("_blocks") and t.dtype == "U8" and len(t.shape) == 4:
                by_name = by_name or {x.name: x for x in tensors}
                base = n[:-len("_blocks")]
                s = by_name.get(base + "_scales")
                if (s is None or s.dtype != "U8" or s.shape != t.shape[:-1]
                        or t.shape[-1] != _MX_BYTES or base in by_name):
                    continue
                e, n_rows, g, _ = t.shape
                shape = (e, g * 32, n_rows)
                info = TensorInfo(base, shape, "MXFP4", t.file, view_row_dims(base, shape))
                self.virtual[base] = _Mx(info, t, s)
                self.hidden.update((n, s.name))

    def __bool__(self) -> bool:
        return bool(self.scaled or self.virtual)

    def listing(self, tensors: Sequence[TensorInfo]) -> list[TensorInfo]:
        """``tensors`` with each MXFP4 pair replaced by its tensor (where its blocks were)."""
        if not self.virtual:
            return list(tensors)
        out = []
        for t in tensors:
            if t.name in self.hidden:
                if t.name.endswith("_blocks"):
                    out.append(self.virtual[t.name[:-len("_blocks")]].info)
                continue
            out.append(t)
        return out

    def read(self, reader: _Reads, read_stored: Callable[..., np.ndarray], name: str,
             e_r0: int, e_r1: int, e_c0: int, e_c1: int | None) -> np.ndarray:
        """True values of a block of a tensor this decoding ``handles`` (float32, C order);
        ``read_stored(name, e_r0, e_r1, e_c0, e_c1)`` reads a tensor decoded from its dtype
        alone (the FP8 weight itself)."""
        mx = self.virtual.get(name)
        if mx is not None:
            return _read_mxfp4(reader, mx, e_r0, e_r1, e_c0, e_c1)
        sc = self.scaled[name]
        t = reader.info(name)
        if sc.problem is not None:
            raise FormatError(t.file, sc.problem, tensor=name)
        c1 = t.e_cols if e_c1 is None else e_c1
        vals = read_stored(name, e_r0, e_r1, e_c0, c1)
        if vals.size == 0:
            return vals
        return _apply_fp8_scales(reader, vals, t, reader.info(sc.scale), sc.block,
                                 e_r0, e_r1, e_c0, c1)


def _fp8_problem(w: TensorInfo, s: TensorInfo, block: tuple[int, int]) -> str | None:
    """None when ``s`` tiles ``w`` in ``block`` blocks (per expert for a fused weight)."""
    b0, b1 = block
    fused = len(w.shape) == 3 and w.row_dims == 2 and s.row_dims == 2
    if len(w.shape) != 2 and not fused:
        return f"{s.name} cannot scale a tensor of shape {list(w.shape)} (only 2-D weights " \
               "and fused [experts, rows, cols] ones)"
    r, c = w.shape[-2], w.shape[-1]
    want = (*w.shape[:-2], -(-r // b0), -(-c // b1))
    if s.shape != want:
        return (f"block scales {s.name} have shape {list(s.shape)}, but {b0}×{b1} blocks of "
                f"{list(w.shape)} need {list(want)} (quantization_config.weight_block_size)")
    return None


def _apply_fp8_scales(reader: _Reads, vals: np.ndarray, w: TensorInfo, s: TensorInfo,
                      block: tuple[int, int], e_r0: int, e_r1: int, e_c0: int, e_c1: int
                      ) -> np.ndarray:
    """``vals`` (rows e_r0.., cols e_c0.. of ``w``'s view) times their block scales, in place.
    View row R of a (stacked) weight with r rows per matrix uses scale row
    ``(R // r) · ⌈r/b0⌉ + (R mod r) // b0``."""
    b0, b1 = block
    r = w.shape[-2]
    per = -(-r // b0)
    rows = np.arange(e_r0, e_r1)
    s_rows = (rows // r) * per + (rows % r) // b0
    s_r0, s_c0 = int(s_rows[0]), e_c0 // b1
    scales = reader.read(s.name, s_r0, int(s_rows[-1]) + 1, s_c0, (e_c1 - 1) // b1 + 1)
    cols = np.arange(e_c0, e_c1) // b1 - s_c0
    vals *= scales[(s_rows - s_r0)[:, None], cols[None, :]]
    return vals


def _read_mxfp4(reader: _Reads, mx: _Mx, e_r0: int, e_r1: int, e_c0: int,
                e_c1: int | None) -> np.ndarray:
    """Rows e_r0.. (along [E, H]) and cols e_c0.. (along n) of the virtual [E, H, n] tensor:
    per expert, the stored rows e_c0..e_c1-1 and the 32-element blocks covering the
    requested H range, decoded and transposed."""
    t = mx.info
    _e, h, n = t.shape
    c1 = n if e_c1 is None else e_c1
    if not (0 <= e_r0 <= e_r1 <= t.e_rows and 0 <= e_c0 <= c1 <= n):
        raise ValueError(f"block rows [{e_r0}, {e_r1}) cols [{e_c0}, {c1}) outside tensor "
                         f"{t.name!r} view {t.e_rows}x{t.e_cols}")
    out = np.empty((e_r1 - e_r0, c1 - e_c0), np.float32)
    if out.size == 0:
        return out
    row = e_r0
    while row < e_r1:
        e, lo = divmod(row, h)
        hi = min(h, lo + e_r1 - row)
        g0, g1 = lo // 32, -(-hi // 32)
        blocks = expert_rows(reader, mx.blocks, e, e_c0, c1, g0 * _MX_BYTES, g1 * _MX_BYTES)
        scales = expert_rows(reader, mx.scales, e, e_c0, c1, g0, g1)
        vals = decode_mxfp4(blocks.astype(np.uint8).reshape(c1 - e_c0, g1 - g0, _MX_BYTES),
                            scales.astype(np.uint8))
        out[row - e_r0:row - e_r0 + hi - lo] = vals[:, lo - g0 * 32:hi - g0 * 32].T
        row += hi - lo
    return out
