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
viewer loads with a ``<script>`` element from ``file://`` (where ``fetch`` is refused). Its
matrices are **float32**, little-endian, row-major, base64 (``SIDECAR_ENCODING``; NaN where
moe.json would say null): 5.3 bytes a number where JSON text of doubles took ~20 (DeepSeek-V3's
22.8 M similarity numbers: 122 MB, not 463 MB), and 7 significant digits — finer than the
sketched CKA's own error (≥ 1e-3) and than any cosine a reader would tell apart. The viewer
shows the float32 itself (its shortest decimal). ``read_sidecar`` decodes one;
``json.loads(text[text.index("(") + 1:text.rindex(")")])`` gives ``{"layer": L, "experts": E,
"encoding": "float32-le-base64", "similarity": {metric: {role: str}}, "coact": str or null}``.
Sidecars are written one layer at a time, as the layer's numbers are complete
(``layer_sidecar``), not held until the end.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .stats import STATS
from .summary import MoENumbers

__all__ = ["moe_document", "json_matrix", "SIDECAR_CALL", "SIDECAR_ENCODING", "sidecar_name",
           "sidecar_text", "layer_sidecar", "read_sidecar", "routing_rows",
           "similarity_numbers"]

SIDECAR_CALL = "weightvisMoeSidecar"
SIDECAR_ENCODING = "float32-le-base64"


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
                 sidecars: bool) -> dict[str, Any]:
    """moe.json; with ``sidecars``, its matrices are references to the per-layer files
    (``layer_sidecar``, written by the caller as each layer completes)."""
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
    return doc


def _f32(m: Any) -> str:
    """A matrix as float32 little-endian row-major bytes in base64 (SIDECAR_ENCODING)."""
    a = np.ascontiguousarray(np.asarray(m, np.float64).astype("<f4"))
    return base64.b64encode(a.tobytes()).decode("ascii")


def layer_sidecar(part: MoENumbers, routing: Mapping[str, Any] | None) -> str:
    """The sidecar script of the one MoE layer of ``part`` (MoENumbers of that layer): every
    similarity matrix of the layer and its co-activation, SIDECAR_ENCODING."""
    (layer,) = part.layers
    coact = {int(k): v for k, v in ((routing or {}).get("coact") or {}).items()}.get(layer)
    content = {"layer": layer, "experts": part.experts, "encoding": SIDECAR_ENCODING,
               "similarity": {metric: {role: _f32(by_layer[layer])
                                       for role, by_layer in by_role.items()
                                       if layer in by_layer}
                              for metric, by_role in part.similarity.items()},
               "coact": _f32(coact) if coact is not None else None}
    return sidecar_text(content)


def read_sidecar(text: str) -> dict[str, Any]:
    """A sidecar script's content with its matrices decoded: ``{"layer": L, "similarity":
    {metric: {role: float32 [E, E]}}, "coact": float32 [E, E] or None}``."""
    raw = json.loads(text[text.index("(") + 1:text.rindex(")")])
    if raw.get("encoding") != SIDECAR_ENCODING:
        raise ValueError(f"unknown MoE sidecar encoding {raw.get('encoding')!r}")
    e = int(raw["experts"])

    def dec(s: str) -> np.ndarray:
        return np.frombuffer(base64.b64decode(s), "<f4").reshape(e, e)

    return {"layer": raw["layer"],
            "similarity": {metric: {role: dec(v) for role, v in by_role.items()}
                           for metric, by_role in raw["similarity"].items()},
            "coact": dec(raw["coact"]) if raw["coact"] is not None else None}


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
