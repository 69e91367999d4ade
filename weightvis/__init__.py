"""weightvis: a static, zoomable map of a model's weights, one pixel per tensor element."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["render", "render_moe", "render_diff", "diff", "regen_html", "RenderResult",
           "DiffResult", "WeightvisError", "__version__"]

if TYPE_CHECKING:
    from .bundle import DiffResult, RenderResult, regen_html, render, render_diff, render_moe
    from .errors import WeightvisError

    diff = render_diff


def __getattr__(name: str) -> Any:
    # the public API is imported on first use: the command line sets its process-wide
    # defaults (cli.main) before numpy is loaded
    if name in ("render", "render_moe", "render_diff", "diff", "regen_html", "RenderResult",
                "DiffResult"):
        from . import bundle

        return bundle.render_diff if name == "diff" else getattr(bundle, name)
    if name == "WeightvisError":
        from .errors import WeightvisError

        return WeightvisError
    raise AttributeError(f"module 'weightvis' has no attribute {name!r}")
