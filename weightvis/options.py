"""Frozen, validated option objects: what a render or a diff was asked to do, checked once at the
public boundary and trusted afterwards (STYLE.md 5). numpy-free.

>>> RenderOptions(layout="hilbert", hilbert_unit="byte").scene_key
'bytes'
>>> DiffOptions(scenes=("a", "delta")).scenes
('delta', 'a')
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Literal

from .types import HilbertUnit, LayoutKind, ScaleMode, TileFormat

__all__ = ["RenderOptions", "DiffOptions", "DiffMetric", "DiffPalette", "METRICS", "MoEOptions",
           "resolve_workers", "ValuesMode", "VALUES_MODES", "VALUES_LIMIT_MB", "value_width",
           "sidecar_mode", "PngDeflate", "PNG_DEFLATES", "TILE_FORMAT_GONE",
           "tile_format_problem"]

DiffMetric = Literal["rms", "abs-log", "exact"]
DiffPalette = Literal["default", "cvd"]
METRICS: dict[str, int] = {"rms": 0, "abs-log": 1, "exact": 2}
"""Diff metric name -> the kernels' integer mode (kernels.METRIC_*; equal by test: this module
stays numpy-free, so it does not import them)."""

TILE_FORMAT_GONE = (
    "AVIF tiles were removed: they made real bundles only 2-5 % smaller, over 10x slower to "
    "render and wrong at max zoom, and with exact max-zoom tiles at most 11 % is left to save "
    "(README \"Tile format\"); tiles are palette PNG, exact and fastest: leave the tile format "
    "out")
"""Why ``avif`` is no longer a tile format (benchmarks/tile_formats.py measured it; README "Tile
format" has the numbers)."""


def tile_format_problem(tile_format: str) -> str | None:
    """None for a tile format weightvis writes ("png"), else what to say about it."""
    if tile_format == "png":
        return None
    if tile_format == "avif":
        return TILE_FORMAT_GONE
    return f"unknown tile format {tile_format!r}: tiles are palette PNG (the only format)"


ValuesMode = Literal["auto", "values", "index", "none"]
PngDeflate = Literal["rle", "zlib"]
"""How PNG tiles and sidecars are compressed (png.py): ``rle``, weightvis's numba deflate (the
fastest per tile; compiled once per install); ``zlib``, the standard library's (Z_RLE, level 1:
about 5x slower on dense tiles, nothing to compile, the same size within 1 %)."""
PNG_DEFLATES = ("rle", "zlib")
VALUES_MODES = ("auto", "values", "index", "none")
"""What the max-zoom tiles' sidecars hold (sidecars.py): ``values`` the element values and the
palette indices (``--values``), ``index`` the indices only (``--no-values``: the viewer shows the
value interval of each colour), ``none`` no sidecars (``--no-sidecars``), ``auto`` values when
the checkpoint's stored values are at most ``values_limit_mb``, else indices."""

VALUES_LIMIT_MB = 100.0
"""``auto`` keeps the element values when the inputs' values, at their stored width (2 bytes for
16-bit and narrower types, 4 otherwise: see value_width), take at most this many MB (10^6 bytes).
README "Values under the cursor" has the measurements behind it."""

_NARROW = frozenset({"BF16", "F16", "F8_E4M3", "F8_E5M2", "F8_E8M0", "I8", "U8", "BOOL"})


def value_width(dtype: str) -> int:
    """Bytes a value sidecar spends on an element of ``dtype`` before compression (its values
    fit bf16 or f16 exactly: 2; anything else, quantized GGUF types included, as float32: 4)."""
    return 2 if dtype in _NARROW else 4


def sidecar_mode(values: str, value_bytes: int, limit_mb: float) -> str:
    """The sidecar content of a render asked for ``values`` whose inputs' values take
    ``value_bytes`` (sum of numel * value_width)."""
    if values != "auto":
        return values
    return "values" if value_bytes <= limit_mb * 1e6 else "index"


def _check_values(values: str, limit_mb: float) -> None:
    if values not in VALUES_MODES:
        raise ValueError(f"values must be one of {', '.join(VALUES_MODES)}, not {values!r}")
    if not limit_mb >= 0:
        raise ValueError(f"the values limit must be a size in MB >= 0, not {limit_mb!r}")


def resolve_workers(workers: int | None) -> int:
    """``None`` -> every core; at least 1."""
    return max(1, workers if workers is not None else (os.cpu_count() or 1))


def _check_common(tile_format: str, workers: int | None) -> None:
    problem = tile_format_problem(tile_format)
    if problem is not None:
        raise ValueError(problem)
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")


@dataclass(frozen=True)
class RenderOptions:
    """A render of one checkpoint."""

    layout: LayoutKind = "arch"
    hilbert_unit: HilbertUnit = "element"
    tile_format: TileFormat = "png"
    scale: ScaleMode = "tensor"
    title: str | None = None
    workers: int | None = None
    overwrite: bool = False
    values: ValuesMode = "auto"
    values_limit_mb: float = VALUES_LIMIT_MB
    png_deflate: PngDeflate = "rle"

    def __post_init__(self) -> None:
        _check_values(self.values, self.values_limit_mb)
        if self.png_deflate not in PNG_DEFLATES:
            raise ValueError(f"png_deflate must be one of {PNG_DEFLATES}, not {self.png_deflate!r}")
        if self.layout not in ("arch", "hilbert"):
            raise ValueError(f"layout must be 'arch' or 'hilbert', not {self.layout!r}")
        if self.hilbert_unit not in ("element", "byte"):
            raise ValueError(f"hilbert_unit must be 'element' or 'byte', not "
                             f"{self.hilbert_unit!r}")
        if self.scale not in ("tensor", "global"):
            raise ValueError(f"scale must be 'tensor' or 'global', not {self.scale!r}")
        _check_common(self.tile_format, self.workers)

    @property
    def bytes_scene(self) -> bool:
        """The scene draws the files' raw bytes (``--layout hilbert --hilbert-unit byte``)."""
        return self.layout == "hilbert" and self.hilbert_unit == "byte"

    @property
    def scene_key(self) -> str:
        if self.layout == "arch":
            return "main"
        return "bytes" if self.bytes_scene else "hilbert"

    @property
    def scene_label(self) -> str:
        return {"main": "Weights", "hilbert": "Hilbert (elements)",
                "bytes": "Hilbert (file bytes)"}[self.scene_key]


@dataclass(frozen=True)
class DiffOptions:
    """A diff B - A of two checkpoints."""

    metric: DiffMetric = "rms"
    palette: DiffPalette = "default"
    scenes: tuple[str, ...] = field(default=("delta",))
    """Scene keys, ``delta`` first (normalised), then ``a`` and ``b`` in that order."""
    svd: bool = True
    finetune: bool | None = None
    """None: decided from the inputs (diff_analysis.detect_finetune)."""
    tile_format: TileFormat = "png"
    title: str | None = None
    workers: int | None = None
    overwrite: bool = False
    values: ValuesMode = "auto"
    values_limit_mb: float = VALUES_LIMIT_MB

    def __post_init__(self) -> None:
        _check_values(self.values, self.values_limit_mb)
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, not {self.metric!r}")
        if self.palette not in ("default", "cvd"):
            raise ValueError(f"palette must be 'default' or 'cvd', not {self.palette!r}")
        scenes = tuple(self.scenes)
        bad = [s for s in scenes if s not in ("a", "b", "delta")]
        if bad or "delta" not in scenes:
            raise ValueError(f"scenes must include 'delta' and be among a, b, delta; got "
                             f"{','.join(scenes)}")
        _check_common(self.tile_format, self.workers)
        object.__setattr__(self, "scenes",
                           tuple(s for s in ("delta", "a", "b") if s in scenes))


MoESketch = Literal["rows", "countsketch", "gaussian"]
CkaMode = Literal["auto", "exact", "sketch"]


@dataclass(frozen=True)
class MoEOptions:
    """The MoE summary and similarity scenes of a render (weightvis.moe; README "MoE")."""

    enabled: bool = True
    """Add the MoE scenes when the checkpoint has routed experts (``--no-moe``: False)."""
    only: bool = False
    """Render only the MoE scenes (``weightvis moe``)."""
    cka_sample: int | None = None
    """The sketch's size (``--cka-sample``): hidden coordinates m whose Gram rows the row
    sample computes (``cka_sketch`` "rows"), or features k of each of the two feature
    sketches; None: ``sketch_size``."""
    cka_heavy: int = 64
    """Most heavy hidden coordinates — outlier channels, whose terms otherwise dominate the
    estimate's noise — whose Gram rows are computed exactly (``--cka-heavy``): per group for
    the row sample (squared norm above 4x the mean in any expert), per expert for the feature
    sketches (above 8x); h·H·I multiply-adds and h·H float32 per expert."""
    cka_sketch: MoESketch = "rows"
    """The estimator above the exact size: "rows" (exact Gram rows at a shared random sample
    of hidden coordinates, weightvis.moe.sampled), or two independent feature sketches,
    "countsketch" or "gaussian" (weightvis.moe.cka; kept to compare)."""
    cka: CkaMode = "auto"
    """"auto": exact CKA for a (layer, role) when it costs at most ``cka_exact_max``
    multiply-adds or at most half the sketch's pairs' (float64 Grams against float32
    sketches), and its Grams fit in a quarter of ``memory``;
    sketched otherwise. "exact" / "sketch" force one (``--cka``; forced exact ignores
    ``memory`` for the Grams)."""
    cka_exact_max: int = 1 << 31
    memory: int = 768 << 20
    """Bytes all MoE tasks running at once may hold (``--moe-memory``): as many run as fit
    (at least one); each keeps for the cosines the whole group when its share holds it (exact
    cosines), else every s-th element of each expert."""
    stable_rank_tol: float = 5e-2
    """Lanczos stops when the residual bound of σ₁² is at most this fraction of it and it has
    stopped growing (measured on random matrices from 200 x 256 to 2048 x 1024: σ₁ within
    4 %, so stable rank within 8 %, in 7-10 steps; within 1 % where the spectrum has a gap;
    ``--stable-rank-tol``; 1e-6 matches numpy's SVD to 1e-5). Matrices with at most 128 rows
    or columns get σ₁ exactly."""
    stable_rank_max_iter: int = 64
    seed: int = 0
    inline_max: int = 1 << 16
    """Similarity / co-activation numbers kept in the manifest; above, per-layer sidecars."""
    probe: bool = False
    probe_text: str | None = None
    probe_tokens: tuple[int, ...] | None = None

    def sketch_size(self, experts: int, examples: int = 1, features: int = 0) -> int:
        """The sketch's size for a (layer, role) of ``experts`` routed experts whose CKA
        representations are ``examples`` (H) x ``features`` (I): ``cka_sample``, or by
        default — rows: m = ``sampled.sample_rows(H)`` (at least 32, m·H ≥ 2¹⁵: 32 from
        H = 1024, 64 at H = 512; the error ≈ 1/√(m·H), README "Accuracy"); feature
        sketches: the power of two at least 256 and at least 128·I/H (their noise grows with
        I/(k·H))."""
        if self.cka_sample is not None:
            return self.cka_sample
        if self.cka_sketch == "rows":
            from .moe.sampled import sample_rows

            return sample_rows(examples)
        need = 128 * features / max(1, examples)
        return max(256, 1 << max(0, math.ceil(math.log2(max(1.0, need)))))

    def sketch_cost(self, experts: int, examples: int, features: int) -> int:
        """Multiply-adds of the sketched CKA of a group (rows: each expert's sampled rows,
        m·H·I, and the pairs, E²·m·H; feature sketches: their pairs, E²·k²·H)."""
        k = self.sketch_size(experts, examples, features)
        if self.cka_sketch == "rows":
            return experts * k * examples * features + experts * experts * k * examples
        return experts * experts * k * k * examples

    def __post_init__(self) -> None:
        if self.cka_sample is not None and self.cka_sample < 1:
            raise ValueError(f"cka_sample must be at least 1, not {self.cka_sample}")
        if self.cka not in ("auto", "exact", "sketch"):
            raise ValueError(f"cka must be auto, exact or sketch, not {self.cka!r}")
        if self.cka_sketch not in ("rows", "countsketch", "gaussian"):
            raise ValueError(f"cka_sketch must be rows, countsketch or gaussian, not "
                             f"{self.cka_sketch!r}")
        if self.memory < 1:
            raise ValueError(f"moe memory must be positive, not {self.memory}")
        if not (self.stable_rank_tol > 0) or self.stable_rank_max_iter < 1:
            raise ValueError("stable_rank_tol must be > 0 and stable_rank_max_iter >= 1")
        if self.cka_heavy < 0:
            raise ValueError(f"cka_heavy must be >= 0, not {self.cka_heavy}")
        if self.inline_max < 0 or self.cka_exact_max < 0:
            raise ValueError("inline_max and cka_exact_max must be >= 0")
        if self.only and not self.enabled:
            raise ValueError("only MoE scenes, but MoE scenes disabled")
        if self.probe_text is not None and self.probe_tokens is not None:
            raise ValueError("give probe text or probe tokens, not both")
