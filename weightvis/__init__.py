"""weightvis: a static, zoomable map of a model's weights, one pixel per tensor element."""

from __future__ import annotations

__version__ = "0.1.0"

from .bundle import RenderResult, regen_html, render  # noqa: E402
from .errors import WeightvisError  # noqa: E402

__all__ = ["render", "regen_html", "RenderResult", "WeightvisError", "__version__"]
