"""``build_bundle``: the one orchestration every bundle goes through, and the public entries that
plan one: ``render`` (a checkpoint, with its MoE scenes), ``render_moe`` (the MoE scenes alone),
``render_diff`` (two), ``regen_html``.

    scenes (scenes.plan_render, diff_plan.plan_diff) -> executor (tile subtrees) -> store
    (tiles, then the side documents, the manifest and index.html last) -> commit

Nothing here prints: progress goes through the ``progress`` callback (the CLI shows it).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from .executors import Executor, local_executor
from .formats import open_checkpoint
from .manifest import MANIFEST_VERSION, compact, dumps, is_bundle, read_manifest
from .options import (
    DiffMetric,
    DiffOptions,
    DiffPalette,
    MoEOptions,
    RenderOptions,
    resolve_workers,
)
from .regen import regen_html, write_text, write_viewer
from .scenes import Plan, Progress
from .store import FolderStore, StagedFolderStore, Store
from .tiling import SceneJob
from .types import HilbertUnit, LayoutKind, ScaleMode, TileFormat

__all__ = ["build_bundle", "render", "render_moe", "render_diff", "regen_html", "RenderResult",
           "DiffResult",
           "BundleResult", "MANIFEST_VERSION", "is_bundle", "read_manifest", "Progress"]


class BundleResult(NamedTuple):
    out: Path
    manifest: dict[str, Any]
    documents: dict[str, Any]
    """Side documents written beside the manifest (``diff.json``, ``moe.json``…), by path in
    the bundle: JSON documents, or text (``str``: MoE sidecar scripts)."""
    tiles_written: int
    bytes_written: int


class RenderResult(NamedTuple):
    out: Path
    manifest: dict[str, Any]
    tiles_written: int
    bytes_written: int
    seconds: float
    elements: int


class DiffResult(NamedTuple):
    out: Path
    manifest: dict[str, Any]
    diff: dict[str, Any]
    tiles_written: int
    bytes_written: int
    seconds: float


def build_bundle(plan: Plan, store: Store, executor: Executor,
                 progress: Progress | None = None) -> BundleResult:
    """Render every scene of ``plan`` with ``executor`` into ``store``, then its side documents,
    the manifest and ``index.html`` (last), and commit. A failure or an interruption aborts the
    store (nothing half-written stays)."""
    def tick(stage: str, n: int, total: int) -> None:
        if progress is not None:
            progress(stage, n, total)

    results: dict[str, Any] = {}
    written = nbytes = 0
    store.begin()
    try:
        sink = store.sink()
        for scene in plan.scenes:
            if scene.prepare is not None:
                scene.prepare(executor)
            job = SceneJob(scene.spec, scene.key, scene.geometry, dict(scene.scales), sink,
                           plan.tile_format, scene.painter, prefetch=scene.prefetch)
            leaves = len(scene.geometry.occupied[scene.geometry.max_zoom])
            with executor.scene(job) as job:
                # the compiled kernels load here, after the executor forked its helpers
                from .pyramid import render_scene

                res = render_scene(job, executor, functools.partial(_tick, tick, scene.stage,
                                                                     leaves),
                                   plan.reader if scene.key == plan.scenes[0].key else None,
                                   scene.meanwhile)
            results[scene.key] = res
            written += res.tiles_written
            nbytes += res.bytes_written
        manifest, documents = plan.finish(results, executor)
        root = store.root
        for name, doc in documents.items():
            write_text(root, name, doc if isinstance(doc, str) else dumps(doc))
        text = compact(manifest)  # encoded once for manifest.json and index.html
        write_text(root, "manifest.json", dumps(manifest, text))
        write_viewer(root, manifest, text)
        out = store.commit()
    except BaseException:
        store.abort()
        raise
    return BundleResult(out, manifest, documents, written, nbytes)


def _tick(tick: Progress, stage: str, total: int, n: int) -> None:
    tick(stage, n, total)


def _store(out: str | os.PathLike[str], overwrite: bool, in_place: bool) -> Store:
    return (FolderStore if in_place else StagedFolderStore)(out, overwrite=overwrite)


def render(
    sources: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    layout: LayoutKind = "arch",
    hilbert_unit: HilbertUnit = "element",
    tile_format: TileFormat = "png",
    scale: ScaleMode = "tensor",
    title: str | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    quiet: bool = True,
    progress: Progress | None = None,
    executor: Executor | None = None,
    store: Store | None = None,
    moe: MoEOptions | None = None,
) -> RenderResult:
    """Render a checkpoint (files, a sharded index, or directories) into a bundle at ``out``.
    ``executor`` and ``store`` default to the local pool of ``workers`` processes and a folder
    staged beside ``out``. An MoE checkpoint also gets its MoE scenes and ``moe.json`` (``moe``:
    how, default ``MoEOptions()``; ``MoEOptions(enabled=False)`` leaves them out;
    ``only=True`` renders them alone, as ``render_moe``)."""
    from .encode import check_format
    from .scenes import plan_moe_only, plan_render

    t0 = time.perf_counter()
    opts = RenderOptions(layout, hilbert_unit, tile_format, scale, title, workers, overwrite)
    moe = moe if moe is not None else MoEOptions()
    check_format(opts.tile_format)
    ex = executor or local_executor(resolve_workers(opts.workers))
    st = store or _store(out, opts.overwrite, False)
    srcs = [str(s) for s in sources]
    reader = open_checkpoint(srcs)
    try:
        tick = progress or _no_progress
        plan = (plan_moe_only(reader, srcs, opts, ex, tick, moe) if moe.only
                else plan_render(reader, srcs, opts, ex, tick, moe))
        res = build_bundle(plan, st, ex, progress)
        elements = sum(t.numel for t in reader.tensors())
    finally:
        reader.close()
    return RenderResult(res.out, res.manifest, res.tiles_written, res.bytes_written,
                        time.perf_counter() - t0, elements)


def render_moe(
    sources: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    moe: MoEOptions | None = None,
    **kw: Any,
) -> RenderResult:
    """Only the MoE scenes of an MoE checkpoint (summary, relative summary, similarity) and
    ``moe.json``; the other arguments as for ``render``."""
    import dataclasses

    opts = dataclasses.replace(moe or MoEOptions(), enabled=True, only=True)
    return render(sources, out, moe=opts, **kw)


def render_diff(
    a_sources: Sequence[str | os.PathLike[str]],
    b_sources: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    metric: DiffMetric = "rms",
    palette: DiffPalette = "default",
    scenes: Sequence[str] = ("delta",),
    svd: bool = True,
    finetune: bool | None = None,
    tile_format: TileFormat = "png",
    title: str | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    executor: Executor | None = None,
    store: Store | None = None,
) -> DiffResult:
    """Render the element-wise difference B - A of two checkpoints into a bundle at ``out``,
    with per-tensor numbers (``diff.json`` and ``manifest["diff"]``)."""
    from . import delta as wdiff
    from .diff_plan import plan_diff
    from .encode import check_format

    t0 = time.perf_counter()
    opts = DiffOptions(metric, palette, tuple(scenes), svd, finetune, tile_format, title,
                       workers, overwrite)
    check_format(opts.tile_format)
    ex = executor or local_executor(resolve_workers(opts.workers))
    st = store or _store(out, opts.overwrite, False)
    a_srcs, b_srcs = [str(s) for s in a_sources], [str(s) for s in b_sources]
    ra = open_checkpoint(a_srcs)
    try:
        rb = open_checkpoint(b_srcs)
    except BaseException:
        ra.close()
        raise
    reader = wdiff.DiffReader(ra, rb)
    try:
        plan = plan_diff(reader, a_srcs, b_srcs, opts, ex, progress or _no_progress)
        res = build_bundle(plan, st, ex, progress)
    finally:
        reader.close()
    return DiffResult(res.out, res.manifest, res.documents["diff.json"], res.tiles_written,
                      res.bytes_written, time.perf_counter() - t0)


def _no_progress(stage: str, n: int, total: int) -> None:
    pass
