"""Diff analysis: what the numbers of a diff say. Finetune detection, a low-rank estimate of each
changed 2-D delta (randomised SVD of sampled rows), per-pair numbers from the tile workers'
accumulators, the summary, per-block norms, and an honest diagnosis in words
(docs/diff-manifest.md). The pairs and the diff reader are in delta.py."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .delta import STATUSES, DiffReader, DiffSpec
from .formats.sidecars import read_model_card

if TYPE_CHECKING:
    from .executors import Executor

__all__ = ["detect_finetune", "svd_summary", "svd_summaries", "diagnose", "pair_numbers",
           "summary", "block_norms", "json_number"]


# -- finetune mode ------------------------------------------------------------------------------
def _front_matter(folder: Path) -> dict[str, Any]:
    """The ``key: value`` / ``key:\\n- item`` lines of the YAML front matter of the model card
    in ``folder`` (read with a size bound: ``formats.sidecars.read_model_card``)."""
    text = read_model_card(folder)
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    body = text[3:end if end > 0 else len(text)]
    out: dict[str, Any] = {}
    key: str | None = None
    for line in body.splitlines():
        m = re.match(r"^([A-Za-z_][\w-]*):\s*(.*)$", line)
        if m:
            key, val = m.group(1), m.group(2).strip().strip("'\"")
            out[key] = val if val else []
        elif key is not None and re.match(r"^\s*-\s+", line) and isinstance(out.get(key), list):
            out[key].append(re.sub(r"^\s*-\s+", "", line).strip().strip("'\""))
    return out


def detect_finetune(a_sources: Sequence[str], b_sources: Sequence[str]) -> str | None:
    """The reason B is a finetune of A, or None: B's model card (README.md beside it) names A in
    ``base_model`` - the same path, or a repo id / path whose last part is A's folder name (for
    a Hub input: its repo id or name)."""
    b_dir, readme = _model_card(b_sources[0])
    fm = _front_matter(readme.parent) if readme is not None else {}
    base = fm.get("base_model")
    if not base:
        return None
    bases = base if isinstance(base, list) else [base]
    names = _names_of(a_sources[0])
    for bm in bases:
        bm_s = str(bm).strip().rstrip("/")
        if bm_s.lower() in names or bm_s.split("/")[-1].lower() in names \
                or (b_dir is not None and _resolved(b_dir / bm_s).lower() in names):
            rel = fm.get("base_model_relation")
            return f"B's model card declares base_model: {bm_s}" + (
                f" ({rel})" if isinstance(rel, str) and rel else "")
    return None


def _model_card(src: str) -> tuple[Path | None, Path | None]:
    """(B's folder, its README.md) - for a Hub input, the card beside its files in the cache."""
    from .hub.uri import is_hub_uri

    if is_hub_uri(src):
        from .hub.remote import model_card

        return None, model_card(src)
    b_dir = Path(src)
    b_dir = b_dir if b_dir.is_dir() else b_dir.parent
    return b_dir, b_dir / "README.md"


def _names_of(src: str) -> set[str]:
    """What a model card may call checkpoint A (lower case): its folder's name and path, or its
    repo id and name."""
    from .hub.uri import is_hub_uri, parse_hub_uri, ref_of_cached_path

    cached = ref_of_cached_path(src)
    if is_hub_uri(src) or cached is not None:
        repo_id = parse_hub_uri(src).repo_id if cached is None else cached[0].repo_id
        return {repo_id.lower(), repo_id.split("/")[1].lower()}
    a_path = Path(src).resolve()
    a_dir = a_path if a_path.is_dir() else a_path.parent
    return {a_dir.name.lower(), str(a_dir).lower()}
def _resolved(path: Path) -> str:
    """``str(path.resolve())``, or '' when it cannot be resolved (a link loop, a NUL ...): a
    model card is data, its ``base_model`` may name anything."""
    try:
        return str(path.resolve())
    except (OSError, RuntimeError, ValueError):
        return ""


# -- numbers -------------------------------------------------------------------------------------
SVD_ROWS = 4096
SVD_RANK = 64


def _svd_sampling(rows: int) -> tuple[int, int]:
    """svd_summary's sample of a delta with ``rows`` rows: (runs, rows per run)."""
    runs = max(1, min(64, rows))
    return runs, max(1, min(SVD_ROWS // runs, rows // runs))


def svd_summary(reader: DiffReader, name: str, *, seed: int = 0) -> dict[str, Any] | None:
    """Low-rank estimate of a 2-D delta from up to SVD_ROWS evenly spaced rows: top-k shares of
    the sampled delta's energy and rank_99 (smallest k whose share >= 0.99; None when it is
    above SVD_RANK). Randomized range finder with two power iterations (Halko, Martinsson &
    Tropp, 2011)."""
    p = reader.pair(name)
    rows, cols = p.overlap
    if p.a is None or p.b is None or rows < 2 or cols < 2:
        return None
    runs, per = _svd_sampling(rows)
    starts = np.linspace(0, rows - per, runs).astype(np.int64)
    blocks = []
    for r in np.unique(starts):
        d = reader.read(name, int(r), int(r) + per, 0, cols)
        blocks.append(d)
    reader.release()
    m = np.concatenate(blocks, dtype=np.float64)
    del blocks  # at most the rows twice at once: float32 + float64, then float64 + squares
    m[~np.isfinite(m)] = 0.0
    total = float((m * m).sum())
    if total == 0.0:
        return {"rank_99": 0, "top_share": {}, "rows_used": int(m.shape[0])}
    k = min(SVD_RANK, m.shape[0], m.shape[1])
    rng = np.random.default_rng(seed)
    omega = rng.standard_normal((m.shape[1], min(k + 8, m.shape[1])))
    y = m @ omega
    for _ in range(2):
        y = m @ (m.T @ y)
        y, _ = np.linalg.qr(y)
    q, _ = np.linalg.qr(y)
    s = np.linalg.svd(q.T @ m, compute_uv=False)[:k]
    share = np.cumsum(s * s) / total
    top = {str(j): round(float(share[j - 1]), 6) for j in (1, 2, 4, 8, 16, 32, 64) if j <= k}
    hit = np.flatnonzero(share >= 0.99)
    return {"rank_99": int(hit[0]) + 1 if hit.size else None, "top_share": top,
            "rows_used": int(m.shape[0])}


SVD_MEMORY = 1 << 30
"""Bytes the low-rank summaries computed at once may use together (see svd_summaries)."""


def _svd_bytes(reader: DiffReader, name: str) -> int:
    rows, cols = reader.pair(name).overlap
    runs, per = _svd_sampling(rows)
    return runs * per * cols * (8 + 8)


def _svd_task(reader: DiffReader, name: str) -> tuple[str, dict[str, Any] | None]:
    return name, svd_summary(reader, name)


def svd_summaries(reader: DiffReader, spec: DiffSpec, names: Sequence[str], *,
                  executor: Executor) -> dict[str, dict[str, Any] | None]:
    """``svd_summary`` of each of ``names``, over the executor's workers (each opens ``spec``
    itself), as many at once as SVD_MEMORY allows: a finetune changes every tensor, and each
    summary is a few hundred ms of BLAS."""
    # each summary holds its sampled rows twice at once (as read and in float64, then in
    # float64 and squared): as many at once as fit SVD_MEMORY
    need = max((_svd_bytes(reader, n) for n in names), default=0)
    procs = max(1, SVD_MEMORY // max(1, need))
    order = sorted(names, key=lambda n: -_svd_bytes(reader, n))
    got = dict(executor.map_unordered(_svd_task, spec, order, reader=reader, processes=procs))
    return {n: got[n] for n in names}


def _ranges(ints: Sequence[int]) -> str:
    """[3, 4, 5, 9] -> '3-5, 9'."""
    out, start, prev = [], None, None
    for i in sorted(ints):
        if start is None:
            start = prev = i
        elif i == prev + 1:  # type: ignore[operator]
            prev = i
        else:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = i
    if start is not None:
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ", ".join(out)


def _describe(p: Mapping[str, Any]) -> str:
    """One tensor's change in words, from its numbers."""
    nb = p["numbers"]
    rows, cols = nb["changed_rows"], nb["changed_cols"]
    if nb["changed"] == 1 and p.get("elements"):
        r, c, a, b = p["elements"][0]
        delta = f" ({b - a:+.4g})" if isinstance(a, float) and isinstance(b, float) else ""
        return f"one element changed, [{r}, {c}]{delta}"
    if rows["count"] == 1:
        return f"row {rows['first'][0]} changed ({nb['changed']:,} elements)"
    if cols["count"] == 1:
        return f"column {cols['first'][0]} changed ({nb['changed']:,} elements)"
    cos, an, bn = nb["cosine"], nb["a_norm"], nb["b_norm"]
    frac = nb["changed"] / max(1, nb["compared"])
    if cos is not None and cos > 1 - 1e-9 and an and abs(bn / an - 1) > 1e-7:
        return f"scaled ×{bn / an:.6g} (cosine 1)"
    what = f"{frac:.0%} of elements changed, ‖Δ‖/‖A‖ = {nb['rel']:.3g}" if nb["rel"] is not None \
        else f"{nb['changed']:,} elements changed"
    sv = nb.get("svd")
    if sv:
        r99 = sv["rank_99"]
        what += (f", rank ≤ {r99} (low-rank)" if r99 is not None and r99 <= 16 else
                 f", rank {r99}" if r99 is not None else ", high-rank (> 64)")
    return what


def diagnose(pairs: Sequence[Mapping[str, Any]], mode: str) -> list[str]:
    """Short sentences that say only what the numbers show."""
    by = {s: [p for p in pairs if p["status"] == s] for s in STATUSES}
    n = len(pairs)
    lines: list[str] = []
    if len(by["identical"]) == n:
        return [f"identical: all {n} tensors are bit-for-bit equal"]
    changed = by["changed"] + [p for p in by["shape-changed"]
                               if p["numbers"] and p["numbers"]["changed"]]
    if changed:
        blocks = sorted({p["block"] for p in changed if p["block"] is not None})
        kinds = sorted({p["kind"] for p in changed})
        head = f"{len(changed)} of {n} tensors changed"
        if blocks:
            all_blocks = sorted({p["block"] for p in pairs if p["block"] is not None})
            outside = [p for p in changed if p["block"] is None]
            span = "every layer" if blocks == all_blocks else f"layers {_ranges(blocks)}"
            head += (": " + ("only " if not outside else "") + f"{span} ({', '.join(kinds)})"
                     + (f", plus {len(outside)} outside the blocks" if outside else ""))
        lines.append(head)
    elif by["identical"]:
        lines.append("no values changed in the tensors both have")
    for p in by["shape-changed"]:
        lines.append(f"shape changed: {p['name']} {p['shape_a']} -> {p['shape_b']}")
    for status, what in (("only-in-b", "only in B"),
                         ("only-in-a", "only in the base" if mode == "finetune" else "only in A")):
        if by[status]:
            names = ", ".join(p["name"] for p in by[status][:5])
            more = f" and {len(by[status]) - 5} more" if len(by[status]) > 5 else ""
            lines.append(f"{len(by[status])} tensor(s) {what}: {names}{more}")
    if len(changed) <= 8:
        lines += [f"{p['name']}: {_describe(p)}" for p in changed]
    else:
        ranks = [p["numbers"]["svd"]["rank_99"] for p in changed
                 if p["numbers"].get("svd")]
        rels = [p["numbers"]["rel"] for p in changed if p["numbers"]["rel"] is not None]
        fracs = sorted(p["numbers"]["changed"] / max(1, p["numbers"]["compared"])
                       for p in changed)
        if rels and max(rels) < 0.01 and fracs[len(fracs) // 2] > 0.5:
            lines.append(f"small dense differences (‖Δ‖/‖A‖ ≤ {max(rels):.2g}, most elements "
                         "changed): rounding or quantization scale, not a training update")
        elif ranks and all(r is not None and r <= 16 for r in ranks):
            lines.append(f"every changed 2-D tensor is low-rank (rank ≤ {max(ranks)}): "
                         "LoRA-like")
        elif ranks and any(r is None for r in ranks):
            lines.append(f"{sum(r is None for r in ranks)} of {len(ranks)} changed 2-D "
                         "tensors are high-rank (> 64): a rewrite, not a low-rank update")
        top = sorted(changed, key=lambda p: -(p["numbers"]["rel"] or 0))[:3]
        lines.append("largest relative changes: " + "; ".join(
            f"{p['name']} {p['numbers']['rel']:.3g}" for p in top if p["numbers"]["rel"]))
    nfi = sum(p["numbers"]["nonfinite_introduced"] for p in changed)
    if nfi:
        lines.append(f"{nfi} non-finite value(s) introduced in B")
    return lines




def summary(pair_rows: list[dict[str, Any]]) -> dict[str, int]:
    summary = {s.replace("-", "_"): sum(r["status"] == s for r in pair_rows)
               for s in STATUSES}
    summary["elements_changed"] = sum(r["numbers"]["changed"] for r in pair_rows if r["numbers"])
    summary["elements_compared"] = sum(r["numbers"]["compared"] for r in pair_rows
                                       if r["numbers"])
    return summary


def block_norms(pair_rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    blocks: dict[str, dict[str, Any]] = {}
    for r in pair_rows:
        if r["block"] is None or not r["numbers"]:
            continue
        b = blocks.setdefault(str(r["block"]), {"changed_tensors": 0, "delta_sq": 0.0,
                                                "a_sq": 0.0})
        b["changed_tensors"] += r["status"] != "identical"
        b["delta_sq"] += r["numbers"]["delta_norm"] ** 2
        b["a_sq"] += r["numbers"]["a_norm"] ** 2
    for b in blocks.values():
        b["delta_norm"] = math.sqrt(b.pop("delta_sq"))
        b["a_norm"] = math.sqrt(b.pop("a_sq"))
        b["rel"] = b["delta_norm"] / b["a_norm"] if b["a_norm"] else None
    return dict(sorted(blocks.items(), key=lambda kv: int(kv[0])))


def json_number(x: float) -> float | str:
    """JSON has no NaN/Inf: those become the strings "nan", "inf", "-inf"."""
    x = float(x)
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def _first_indices(flags: np.ndarray, limit: int = 32) -> dict[str, Any]:
    idx = np.flatnonzero(flags)
    return {"count": int(idx.size), "first": [int(i) for i in idx[:limit]]}


def pair_numbers(acc: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> dict[str, Any]:
    """A pair's numbers from its delta accumulator and changed-row/column flags."""
    n, a2, b2, d2, ab, dmax, changed, nfi = (float(x) for x in acc)
    a_norm, b_norm, d_norm = math.sqrt(a2), math.sqrt(b2), math.sqrt(d2)
    r_idx, c_idx = np.flatnonzero(rows), np.flatnonzero(cols)
    return {
        "compared": int(n),
        "a_norm": a_norm, "b_norm": b_norm, "delta_norm": d_norm,
        "rel": d_norm / a_norm if a_norm else None,
        "cosine": ab / (a_norm * b_norm) if a_norm and b_norm else None,
        "max_abs_delta": dmax,
        "changed": int(changed),
        "changed_rows": _first_indices(rows), "changed_cols": _first_indices(cols),
        "bbox": [int(r_idx[0]), int(r_idx[-1]) + 1, int(c_idx[0]), int(c_idx[-1]) + 1]
        if r_idx.size else None,
        "nonfinite_introduced": int(nfi),
        "svd": None,
    }
