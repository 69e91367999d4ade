"""The scenes of a diff — ``[delta]`` or ``[delta, a, b]`` — and the diff analysis that ends it:
per-pair numbers, the summary, per-block norms and the diagnosis (``diff.json``, also the
manifest's ``diff``; docs/diff-manifest.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from . import color
from . import delta as wdiff
from .diff_analysis import (
    block_norms,
    detect_finetune,
    diagnose,
    json_number,
    pair_numbers,
    summary,
    svd_summaries,
)
from .errors import InputError
from .executors import Executor
from .layout import arch_layout
from .manifest import build_manifest, manifest_head
from .options import METRICS, DiffOptions, sidecar_mode, value_width
from .painters import DeltaPainter, ValuesPainter
from .scenes import SCALE_DOC, Plan, Progress, Scene, default_title, file_name, source_json
from .tiling import CheckpointSpec, Geometry
from .types import SceneLayout
from .values import tensor_scales

__all__ = ["plan_diff", "architectures"]


def _arch_text(name: str, arch: Mapping[str, Any]) -> str:
    """``llama (30 blocks, hidden size 576)``."""
    parts = []
    if arch.get("blocks"):
        parts.append(f"{arch['blocks']} block{'s' if arch['blocks'] != 1 else ''}")
    if arch.get("hidden_size"):
        parts.append(f"hidden size {arch['hidden_size']}")
    return name + (f" ({', '.join(parts)})" if parts else "")


def architectures(reader: wdiff.DiffReader) -> tuple[dict[str, Any], list[str]]:
    """diff.json's ``architectures`` (what each side declares; ``same``: null when either
    declares none or they are named in different vocabularies) and ``warnings``: the sentence
    that leads the diff's words when the architectures differ (delta.py, "Architectures")."""
    from .info import reader_architecture

    da, db = wdiff.declared_architecture(reader.a), wdiff.declared_architecture(reader.b)
    comparable = da is not None and db is not None and da[0] == db[0]
    doc = {"a": da[1] if da else None, "b": db[1] if db else None,
           "same": (da == db) if comparable else None}
    if not comparable or da == db:
        return doc, []
    assert da is not None and db is not None
    pairs = [p for p in reader.pairs if p.a is not None and p.b is not None]
    compared = sum(p.compared for p in pairs)
    skipped = len(pairs) - compared
    return doc, [
        f"different architectures: A is {_arch_text(da[1], reader_architecture(reader.a))}, "
        f"B is {_arch_text(db[1], reader_architecture(reader.b))}: two different models, not "
        f"two versions of one. Tensors are paired by name only; of {len(pairs)} pairs, "
        f"{compared} of equal shape are compared and {skipped} of different shapes are not"]


def _clip_layout(lay: SceneLayout, pairs: Mapping[str, wdiff.Pair], side: str) -> SceneLayout:
    """The delta geometry restricted to one side's elements (for the A and B scenes)."""
    placements = []
    for p in lay.placements:
        pair = pairs[p.tensor]
        view = pair.view_a if side == "a" else pair.view_b
        if view is None:
            continue
        r1, c1 = min(p.e_r1, view[0]), min(p.e_c1, view[1])
        if r1 > p.e_r0 and c1 > p.e_c0:
            placements.append(p._replace(e_r1=r1, e_c1=c1))
    return lay._replace(placements=tuple(placements))


def plan_diff(reader: wdiff.DiffReader, a_srcs: list[str], b_srcs: list[str],
              opts: DiffOptions, executor: Executor, tick: Progress) -> Plan:
    """The scenes of a diff and its analysis. Reads samples of both sides for the scales."""
    from .pyramid import warm_up_all

    pairs = reader.pairs
    if not pairs:
        raise InputError("neither checkpoint holds any tensor")
    by_name = {p.name: p for p in pairs}
    reason = detect_finetune(a_srcs, b_srcs)
    finetune = opts.finetune if opts.finetune is not None else reason is not None
    mode = "finetune" if finetune else "compare"
    index = wdiff.pair_index(reader)
    lay = arch_layout(list(reader.tensors()), index=index)

    # scales: s_delta = 0.5 * rms of A's sample (then B's, then 1); each side's robust scale.
    # A pair that is not compared needs neither unless its sides are drawn (scenes a, b).
    scaled = [p for p in pairs if p.compared or len(opts.scenes) > 1]
    n_pairs = len(scaled)
    robust_a, _, rms_a = tensor_scales(reader.a, CheckpointSpec(tuple(a_srcs)),
                                       [p.a.name for p in scaled if p.a is not None],
                                       executor=executor, want_rms=True,
                                       meanwhile=warm_up_all,
                                       tick=lambda: tick("scales A", 1, n_pairs))
    robust_b, _, rms_b = tensor_scales(reader.b, CheckpointSpec(tuple(b_srcs)),
                                       [p.b.name for p in scaled if p.b is not None],
                                       executor=executor, want_rms=True,
                                       tick=lambda: tick("scales B", 1, n_pairs))
    scales: dict[str, float] = {p.name: 1.0 for p in pairs}
    side_scales: dict[str, dict[str, float]] = {"a": {}, "b": {}}
    for p in scaled:
        rms = (rms_a.get(p.a.name, 0.0) if p.a else 0.0) or (
            rms_b.get(p.b.name, 0.0) if p.b else 0.0)
        scales[p.name] = 0.5 * rms if rms > 0 else 1.0
        if p.a is not None:
            side_scales["a"][p.name] = robust_a[p.a.name]
        if p.b is not None:
            side_scales["b"][p.name] = robust_b[p.b.name]

    spec = wdiff.DiffSpec(tuple(a_srcs), tuple(b_srcs), tuple(pairs))
    painter = DeltaPainter(METRICS[opts.metric], color.ABSLOG_DECADES, opts.palette,
                           mode == "finetune")
    sidecars = sidecar_mode(opts.values, sum(
        t.numel * value_width(t.dtype) for p in pairs for t in (p.a, p.b) if t is not None),
        opts.values_limit_mb)
    scenes = [Scene("delta", "Δ = B − A", lay, Geometry(lay), painter, spec, scales,
                    sidecars=sidecars)]
    for side in opts.scenes[1:]:
        side_lay = _clip_layout(lay, by_name, side)
        side_geo = Geometry(side_lay._replace(c_width=lay.c_width, c_height=lay.c_height))
        scenes.append(Scene(side, side.upper(), side_lay, side_geo, ValuesPainter(),
                            spec._replace(side=side), side_scales[side],
                            stage=f"tiles {side.upper()}", sidecars=sidecars))

    def finish(results: Mapping[str, Any], executor: Executor) -> tuple[dict[str, Any],
                                                                         dict[str, Any]]:
        from .kernels import DELTA_CHANGED, ELEMENTS_CAP, new_delta_acc

        res = results["delta"]
        # numbers; the low-rank summaries of the changed pairs in parallel
        svds = svd_summaries(reader, spec, [
            p.name for p in pairs if opts.svd and p.a is not None and p.b is not None
            and min(p.overlap) >= 2 and res.accs.get(p.name, new_delta_acc())[DELTA_CHANGED]
        ], executor=executor)
        pair_rows: list[dict[str, Any]] = []
        for p in pairs:
            block, slot = lay.slots.get(p.name, (None, None))
            row: dict[str, Any] = {
                "name": p.name, "a": p.a.name if p.a else None, "b": p.b.name if p.b else None,
                "shape_a": list(p.a.shape) if p.a else None,
                "shape_b": list(p.b.shape) if p.b else None,
                "dtype_a": p.a.dtype if p.a else None, "dtype_b": p.b.dtype if p.b else None,
                "paired_by": p.paired_by, "transform": p.transform, "compared": p.compared,
                "block": block,
                "kind": index[p.name].kind,
                "scale": scales[p.name],
                "scale_a": side_scales["a"].get(p.name), "scale_b": side_scales["b"].get(p.name),
                "numbers": None, "elements": None,
            }
            if p.a is not None and p.b is not None and not p.compared:
                row["status"] = p.shape_status
            elif p.a is not None and p.b is not None:
                acc = res.accs.get(p.name, new_delta_acc())
                rows_f, cols_f = res.flags.get(p.name, (np.zeros(p.overlap[0], bool),
                                                        np.zeros(p.overlap[1], bool)))
                row["numbers"] = pair_numbers(acc, rows_f, cols_f)
                changed = row["numbers"]["changed"]
                if p.shape_status == "shape-changed":
                    row["status"] = "shape-changed"
                else:
                    row["status"] = "changed" if changed else "identical"
                el = res.elements.get(p.name)
                if changed and el is not None and changed <= ELEMENTS_CAP:
                    row["elements"] = [[int(e[0]), int(e[1]), json_number(e[2]), json_number(e[3])]
                                       for e in el]
                if p.name in svds:
                    row["numbers"]["svd"] = svds[p.name]
                tick("numbers", 1, len(pairs))
            else:
                row["status"] = p.shape_status
            pair_rows.append(row)
        archs, warnings = architectures(reader)
        diff_doc: dict[str, Any] = {
            "a": {"title": default_title(a_srcs), "format": reader.a.format,
                  "files": [f.name for f in reader.a.files]},
            "b": {"title": default_title(b_srcs), "format": reader.b.format,
                  "files": [f.name for f in reader.b.files]},
            "architectures": archs, "warnings": warnings,
            "mode": mode, "finetune_reason": reason if mode == "finetune" else None,
            "metric": opts.metric, "palette": opts.palette, "summary": summary(pair_rows),
            "diagnosis": diagnose(pair_rows, mode),
            "blocks": block_norms(pair_rows),
            "pairs": pair_rows,
        }
        tensors_json: dict[str, Any] = {}
        gguf_of = wdiff.pair_gguf_names(reader)
        for p, r in zip(pairs, pair_rows, strict=True):
            t = reader.info(p.name)
            entry: dict[str, Any] = {
                "shape": list(t.shape), "dtype": t.dtype, "view": [t.e_rows, t.e_cols],
                "file": file_name(t.file), "canonical": index[p.name].canonical,
            }
            if p.name in gguf_of:
                entry["gguf"] = gguf_of[p.name]
            entry.update({"block": r["block"], "slot": lay.slots.get(p.name, (None, None))[1],
                          "scale": scales[p.name], "stats": None, "status": r["status"]})
            tensors_json[p.name] = entry
        colormaps: dict[str, Any] = {"delta": color.delta_colormap(opts.metric, opts.palette)}
        if len(scenes) > 1:
            colormaps["values"] = color.values_colormap()
        manifest = build_manifest(
            manifest_head(opts.title or f"{diff_doc['a']['title']} → {diff_doc['b']['title']}",
                          opts.tile_format),
            source={"a": source_json(reader.a), "b": source_json(reader.b)},
            scale=SCALE_DOC, colormaps=colormaps,
            scenes=[s.json(opts.tile_format) for s in scenes], tensors=tensors_json,
            extra={"diff": diff_doc})
        return manifest, {"diff.json": diff_doc}

    return Plan(scenes, finish, reader, opts.tile_format)
