"""``moe.json`` (also the manifest's ``moe``): the numbers of the MoE scenes for scripts and for
the viewer's hover readout (README "MoE numbers").

Keys (issue 12, item 8): ``layers``, ``dense_layers``, ``experts``, ``shared_experts``,
``top_k``, ``roles``, ``stats[stat][role]`` (rows x experts), ``router`` {``row_norm``,
``bias``}, ``similarity[metric][role][str(layer)]`` (E x E; null in a dead expert's row and
column) and, when probed, ``routing`` {``tokens``, ``top_k``, ``freq``, ``coact``}. Rows are the
MoE layers in ascending order; a number that does not exist is null, never NaN.

Large parts are referenced, not inlined: when a bundle's similarity and co-activation matrices
hold more than ``MoEOptions.inline_max`` numbers, each ``similarity[metric][role][str(layer)]``
and ``routing.coact[str(layer)]`` is ``{"sidecar": "moe/layer-<L>.js"}``, and that file holds
every matrix of layer L as one call ``weightvisMoeSidecar(<JSON>);`` — a classic script the
viewer loads with a ``<script>`` element from ``file://`` (where ``fetch`` is refused). A
script reads it as JSON: ``json.loads(text[text.index("(") + 1:text.rindex(")")])`` gives
``{"layer": L, "similarity": {metric: {role: E x E}}, "coact": E x E or null}``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .stats import STATS
from .summary import MoENumbers

__all__ = ["moe_document", "json_matrix", "SIDECAR_CALL", "sidecar_name", "sidecar_text",
           "routing_rows"]

SIDECAR_CALL = "weightvisMoeSidecar"


def sidecar_name(layer: int) -> str:
    return f"moe/layer-{layer}.js"


def _num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def json_matrix(a: np.ndarray) -> list[Any]:
    """A float array as nested lists, NaN / Inf -> null."""
    arr = np.asarray(a, np.float64)
    if arr.ndim == 1:
        return [_num(v) for v in arr.tolist()]
    return [json_matrix(row) for row in arr]


def routing_rows(routing: Mapping[str, Any], layers: Sequence[int], experts: int
                 ) -> np.ndarray:
    """The probe's frequencies as rows x experts aligned with ``layers`` (NaN for a layer the
    probe has no row for)."""
    freq = np.full((len(layers), experts), np.nan)
    got = [int(x) for x in routing.get("layers", [])]
    rows = routing.get("freq") or []
    for i, layer in enumerate(layers):
        if layer in got:
            row = np.asarray(rows[got.index(layer)], np.float64).reshape(-1)[:experts]
            freq[i, :row.size] = row
    return freq


def moe_document(numbers: MoENumbers, structure: Any, routing: Mapping[str, Any] | None,
                 sidecars: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """(moe.json, sidecar files by bundle path)."""
    layers = numbers.layers
    stats = {s: {r: json_matrix(numbers.stats[s][r]) for r in numbers.roles} for s in STATS}
    doc: dict[str, Any] = {
        "layers": list(layers),
        "dense_layers": [int(x) for x in structure.dense_layers],
        "experts": numbers.experts,
        "shared_experts": int(structure.shared_experts),
        "top_k": structure.top_k,
        "roles": list(numbers.roles),
        "stats": stats,
        "router": {"row_norm": json_matrix(numbers.row_norm),
                   "bias": json_matrix(numbers.bias) if numbers.bias is not None else None},
        "similarity": {},
    }
    files: dict[str, str] = {}
    coact_by_layer = {int(k): v for k, v in ((routing or {}).get("coact") or {}).items()}
    for metric, by_role in numbers.similarity.items():
        doc["similarity"][metric] = {
            role: {str(layer): ({"sidecar": sidecar_name(layer)} if sidecars
                                else json_matrix(by_layer[layer]))
                   for layer in layers if layer in by_layer}
            for role, by_layer in by_role.items()}
    if routing is not None:
        doc["routing"] = {"tokens": int(routing.get("tokens", 0)),
                          "top_k": routing.get("top_k"),
                          "freq": json_matrix(routing_rows(routing, layers, numbers.experts)),
                          "coact": {str(layer): ({"sidecar": sidecar_name(layer)}
                                                 if sidecars and layer in layers
                                                 else json_matrix(np.asarray(m, np.float64)))
                                    for layer, m in coact_by_layer.items()}}
    if sidecars:  # one layer's lists at a time (58 layers x 6 matrices of 256 x 256 for
        for layer in layers:  # DeepSeek-V3: held at once as Python floats, ~4 GB)
            content = {"layer": layer,
                       "similarity": {metric: {role: json_matrix(by_layer[layer])
                                               for role, by_layer in by_role.items()
                                               if layer in by_layer}
                                      for metric, by_role in numbers.similarity.items()},
                       "coact": (json_matrix(np.asarray(coact_by_layer[layer], np.float64))
                                 if layer in coact_by_layer else None)}
            files[sidecar_name(layer)] = sidecar_text(content)
    return doc, files


def sidecar_text(content: Mapping[str, Any]) -> str:
    """A sidecar script: one call of SIDECAR_CALL with the JSON (safe inside a script: no
    "</script", no U+2028)."""
    text = json.dumps(content, allow_nan=False, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return f"{SIDECAR_CALL}({text});\n"


def similarity_numbers(numbers: MoENumbers, routing: Mapping[str, Any] | None) -> int:
    """How many similarity and co-activation numbers a bundle holds (for ``inline_max``)."""
    n = sum(m.size for by_role in numbers.similarity.values() for by_layer in by_role.values()
            for m in by_layer.values())
    if routing is not None:
        n += sum(np.asarray(m).size for m in (routing.get("coact") or {}).values())
    return int(n)
