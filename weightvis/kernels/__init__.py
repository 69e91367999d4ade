"""Every numba kernel of weightvis, in a package that imports nothing else of weightvis.

Kernels are private and pure (arrays in, ``out=`` arrays written; integer mode constants, never
strings); each submodule's public functions validate and dispatch to them.

=============  ====================================================================  ========
module         what                                                                  numba
=============  ====================================================================  ========
constants      palette indices and mode constants, defined once; ``level_values``   no
accumulators   statistics accumulators: ``new_accumulator`` / ``merge_accumulator``  no
values         values / 16-bit codes -> value indices + statistics                   yes
delta          (a, b) -> delta indices + numbers; hatching; identical code blocks    yes
reduce         four children -> parent, one table of rules (``reduce_tile``)         yes
hilbert        Hilbert curve index <-> canvas pixel                                  yes
bits, huffman  the deflate bit writer; Huffman code construction                     yes
deflate        PNG row filter + Adler-32, RLE-only deflate (for ``weightvis.png``)     yes
warm           compile everything once before workers fork                           yes
jsontext       compact JSON re-indented (big manifests; imported directly)           yes
=============  ====================================================================  ========

Importing the package loads ``constants`` and ``accumulators`` only (numpy, no numba), so
``weightvis.color`` can take its constants from here; every other name below loads its
submodule (and numba) on first access (PEP 562 module ``__getattr__``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .accumulators import (
    ACC_SIZE,
    DELTA_ACC_SIZE,
    DELTA_CHANGED,
    merge_acc,
    merge_accumulator,
    merge_delta_acc,
    new_acc,
    new_accumulator,
    new_delta_acc,
)
from .constants import (
    ACC_DELTA,
    ACC_VALUES,
    D_BASE_ONLY,
    D_GAP,
    D_LEVELS,
    D_NONFINITE,
    D_ONLY_A,
    D_ONLY_B,
    LEVELS,
    METRIC_ABSLOG,
    METRIC_EXACT,
    METRIC_RMS,
    NAN,
    NEGINF,
    PAD,
    POSINF,
    REDUCE_DELTA,
    REDUCE_FIRST,
    REDUCE_SIGNED_RMS,
    ZERO,
    level_values,
)

if TYPE_CHECKING:
    from .delta import ELEMENTS_CAP, colorize_delta, hatch, identical_codes
    from .hilbert import hilbert_d2xy, hilbert_tile_offsets, hilbert_xy2d
    from .reduce import reduce_delta, reduce_tile
    from .values import (
        BLOCK_FIELDS,
        SMALL_BLOCK,
        BlockScratch,
        code_counts,
        code_lut,
        colorize,
        colorize_code_blocks,
        colorize_codes,
        colorize_codes_small,
    )
    from .warm import warm_up, warm_up_delta

_LAZY = {
    "colorize": "values", "colorize_codes": "values", "code_lut": "values",
    "code_counts": "values", "colorize_codes_small": "values", "SMALL_BLOCK": "values",
    "colorize_code_blocks": "values", "BLOCK_FIELDS": "values", "BlockScratch": "values",
    "ELEMENTS_CAP": "delta", "colorize_delta": "delta", "hatch": "delta",
    "identical_codes": "delta",
    "reduce_tile": "reduce", "reduce_delta": "reduce",
    "hilbert_xy2d": "hilbert", "hilbert_d2xy": "hilbert", "hilbert_tile_offsets": "hilbert",
    "warm_up": "warm", "warm_up_delta": "warm",
}
"""Name -> the submodule that defines it, loaded on first access."""

__all__ = [
    "PAD", "NAN", "POSINF", "NEGINF", "ZERO", "LEVELS",
    "D_NONFINITE", "D_ONLY_A", "D_ONLY_B", "D_BASE_ONLY", "D_GAP", "D_LEVELS",
    "REDUCE_SIGNED_RMS", "REDUCE_FIRST", "REDUCE_DELTA",
    "METRIC_RMS", "METRIC_ABSLOG", "METRIC_EXACT", "ACC_VALUES", "ACC_DELTA", "level_values",
    "ACC_SIZE", "DELTA_ACC_SIZE", "DELTA_CHANGED", "new_acc", "merge_acc", "new_delta_acc",
    "merge_delta_acc", "new_accumulator", "merge_accumulator",
    "colorize", "colorize_codes", "colorize_codes_small", "colorize_code_blocks", "SMALL_BLOCK",
    "BLOCK_FIELDS", "BlockScratch", "code_lut",
    "code_counts", "ELEMENTS_CAP", "colorize_delta", "hatch", "identical_codes",
    "reduce_tile", "reduce_delta",
    "hilbert_xy2d", "hilbert_d2xy", "hilbert_tile_offsets",
    "warm_up", "warm_up_delta",
]

if not TYPE_CHECKING:  # mypy sees the imports above, so a misspelt name stays an error

    def __getattr__(name: str) -> Any:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
