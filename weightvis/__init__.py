"""weightvis: a static, zoomable map of a model's weights, one pixel per tensor element."""

from __future__ import annotations

__version__ = "0.1.0"

from .bundle import DiffResult, RenderResult, regen_html, render, render_diff  # noqa: E402
from .errors import WeightvisError  # noqa: E402

diff = render_diff

__all__ = ["render", "render_diff", "diff", "regen_html", "RenderResult", "DiffResult",
           "WeightvisError", "__version__"]
