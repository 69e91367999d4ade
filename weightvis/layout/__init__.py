"""Layouts: data-free geometry (placements on a canvas at 1 px = 1 element)."""

from .arch import arch_layout, detect_blocks, natural_key, slot_kind
from .hilbert import curve_order_for, hilbert_layout

__all__ = ["arch_layout", "detect_blocks", "natural_key", "slot_kind", "hilbert_layout",
           "curve_order_for"]
