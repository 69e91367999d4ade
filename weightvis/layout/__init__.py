"""Layouts: data-free geometry (placements on a canvas at 1 px = 1 element)."""

from .arch import arch_layout, natural_key
from .hilbert import curve_order_for, hilbert_layout

__all__ = ["arch_layout", "natural_key", "hilbert_layout", "curve_order_for"]
