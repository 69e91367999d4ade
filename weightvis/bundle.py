"""``build_bundle``: the one orchestration every bundle goes through, and the public entries that
plan one: ``render`` (a checkpoint, with its MoE scenes), ``render_moe`` (the MoE scenes alone),
``render_diff`` (two), ``regen_html``.

    scenes (scenes.plan_render, diff_plan.plan_diff) -> executor (tile subtrees) -> store
    (tiles, then the side documents, the manifest and index.html last) -> commit

Nothing here prints: progress goes through the ``progress`` callback (the CLI shows it).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from . import compiling
from .disk import estimate_bytes, human_bytes
from .errors import InputError, OutputError
from .executors import Executor, InlineExecutor, LocalPoolExecutor, local_executor
from .formats import open_checkpoint
from .manifest import MANIFEST_VERSION, dumps, dumps_utf8, is_bundle, read_manifest
from .manifest_text import compose_parts, compose_utf8
from .options import (
    VALUES_LIMIT_MB,
    DiffMetric,
    DiffOptions,
    DiffPalette,
    MoEOptions,
    PngDeflate,
    RenderOptions,
    ValuesMode,
    resolve_workers,
)
from .outdir import fingerprint
from .regen import regen_html, write_text, write_viewer
from .scenes import Plan, Progress
from .sidework import SideWork
from .store import FolderStore, StagedFolderStore, Store, writing
from .tiling import SceneJob
from .types import HilbertUnit, LayoutKind, ScaleMode, TileFormat

__all__ = ["build_bundle", "render", "render_moe", "render_diff", "regen_html", "RenderResult",
           "DiffResult",
           "BundleResult", "MANIFEST_VERSION", "is_bundle", "read_manifest", "Progress",
           "Notice"]

_SHAPE = operator.attrgetter("shape")

Notice = Callable[[str], None]
"""notice(text): a line for the user before the tiles (the bundle's expected size)."""


class BundleResult(NamedTuple):
    out: Path
    manifest: dict[str, Any]
    documents: dict[str, Any]
    """Side documents written beside the manifest (``diff.json``, ``moe.json``…), by path in
    the bundle: JSON documents, or text (``str``). (MoE sidecars are written by the scenes'
    ``prepare``, as they are made, and are not here.)"""
    tiles_written: int
    bytes_written: int
    tile_seconds: float = 0.0
    """Wall time of the tile phases (every scene's render_scene)."""
    leaves: int = 0
    """Max-zoom tiles holding content, over every scene."""
    tiles_reused: int = 0
    """Of ``tiles_written``, those an interrupted run had written (resumed)."""


class RenderResult(NamedTuple):
    out: Path
    manifest: dict[str, Any]
    tiles_written: int
    bytes_written: int
    seconds: float
    elements: int
    tile_seconds: float = 0.0
    leaves: int = 0
    tiles_reused: int = 0


class DiffResult(NamedTuple):
    out: Path
    manifest: dict[str, Any]
    diff: dict[str, Any]
    tiles_written: int
    bytes_written: int
    seconds: float
    tiles_reused: int = 0


def build_bundle(plan: Plan, store: Store, executor: Executor,
                 progress: Progress | None = None, *, fingerprint: str | None = None,
                 space_check: bool = True, notice: Notice | None = None) -> BundleResult:
    """Render every scene of ``plan`` with ``executor`` into ``store``, then its side documents,
    the manifest and ``index.html`` (last), and commit. A failure or an interruption aborts the
    store (nothing half-written stays). ``fingerprint`` (outdir.fingerprint of the plan's
    inputs and options) lets a store that keeps records resume a killed run's subtrees.
    Before any tile, the bundle's expected size goes to ``notice``, and (``space_check``) a
    destination that can't hold it is refused (disk.py)."""
    def tick(stage: str, n: int, total: int) -> None:
        if progress is not None:
            progress(stage, n, total)

    needed = estimate_bytes(plan)
    where = store.space(needed) if space_check else None
    if notice is not None:
        free = f" ({human_bytes(where[1])} free in {where[0]})" if where else ""
        notice(f"expected bundle size: about {human_bytes(needed)}{free}")

    results: dict[str, Any] = {}
    written = nbytes = reused = all_leaves = 0
    tile_s = 0.0
    compiling.wait(progress)  # a first run's kernels, compiled while the plan was made
    side: SideWork | None = None
    try:
        store.begin(fingerprint)
        sink = store.sink()
        write = functools.partial(_write_file, store)
        for i, scene in enumerate(plan.scenes):
            if scene.prepare is not None and not (side is not None and side.did(scene)):
                scene.prepare(executor, write, tick)
            meanwhile = scene.meanwhile
            if side is None and not scene.inline and _overlaps(executor):
                later = next((s for s in plan.scenes[i + 1:] if s.prepare is not None), None)
                if later is not None:
                    side = SideWork(later, executor.workers, write, tick)
                    meanwhile = side.meanwhile(meanwhile)
            job = SceneJob(scene.spec, scene.key, scene.geometry, dict(scene.scales), sink,
                           plan.tile_format, scene.painter, prefetch=scene.prefetch,
                           sidecars=scene.sidecars, png_deflate=plan.png_deflate)
            leaves = len(scene.geometry.occupied[scene.geometry.max_zoom])
            all_leaves += leaves
            t0 = time.perf_counter()
            ex = InlineExecutor() if scene.inline else executor
            with ex.scene(job) as job:
                # the compiled kernels load here, after the executor forked its helpers
                from .pyramid import render_scene
                from .resume import SubtreeRecords

                kept = store.records
                records = SubtreeRecords(kept / scene.key, job, store.out) if kept else None
                res = render_scene(job, ex, functools.partial(_tick, tick, scene.stage,
                                                                     leaves),
                                   plan.reader if scene.key == plan.scenes[0].key else None,
                                   meanwhile, records)
            if side is not None:  # (before any other scene's workers fork)
                side.join()
            tile_s += time.perf_counter() - t0
            results[scene.key] = res
            written += res.tiles_written
            nbytes += res.bytes_written
            reused += res.tiles_reused
        manifest, documents = plan.finish(results, executor)
        root = store.root
        with writing(store.out, "the manifest and index.html"):
            for name, doc in documents.items():
                write_text(root, name, doc if isinstance(doc, str) else dumps(doc))
            write_manifest(root, manifest, plan.texts(manifest) if plan.texts else {})
        out = store.commit()
    except BaseException:
        if side is not None:  # (nothing may write into the bundle being removed)
            side.stop()
        store.abort()
        raise
    return BundleResult(out, manifest, documents, written, nbytes, tile_s, all_leaves, reused)


def write_manifest(root: Path, manifest: dict[str, Any],
                   texts: Mapping[str, tuple[str, str]]) -> None:
    """``manifest.json`` and ``index.html`` (which inlines the manifest), from the manifest and
    the texts of its values its plan made already (scenes.Texts: a 45k-tensor checkpoint's
    manifest is ~28 MB of JSON, nearly all of it made while the tiles were drawn)."""
    from .html import ascii_json

    plain = {k: t for k, (t, _) in texts.items()}
    # manifest.json beside index.html: its indentation is compiled code that lets go of the
    # interpreter, so the two overlap
    _concurrently(lambda: write_text(root, "manifest.json",
                                     dumps_utf8(manifest, compose_utf8(manifest, plain))),
                  lambda: write_viewer(root, manifest, compose_parts(
                      manifest, {k: t for k, (_, t) in texts.items()}, ascii_json)))


def _overlaps(executor: Executor) -> bool:
    """A later scene's ``prepare`` may run in a side thread of this process while this
    executor draws a scene's tiles: the local pool's processes draw them (this process only
    waits on their pipes). With any other executor it runs in its turn, on that executor (a
    Dask cluster keeps the MoE tasks)."""
    return isinstance(executor, LocalPoolExecutor)


def _concurrently(side: Callable[[], None], main: Callable[[], None]) -> None:
    """``side()`` in a thread while ``main()`` runs here; returns when both are done, raising
    the first exception (``main``'s, else ``side``'s). The thread is always joined first, so
    nothing writes into a bundle its caller is about to abort."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            side()
        except BaseException as e:  # noqa: BLE001 - raised again below, in the caller
            failed.append(e)

    thread = threading.Thread(target=run, name="weightvis-manifest", daemon=True)
    thread.start()
    try:
        main()
    finally:
        thread.join()
    if failed:
        raise failed[0]


def _write_file(store: Store, name: str, text: str) -> None:
    """A side file of the bundle, written as soon as it is made (not held until the end)."""
    with writing(store.out, name):
        write_text(store.root, name, text)


def _tick(tick: Progress, stage: str, total: int, n: int) -> None:
    tick(stage, n, total)


def _store(out: str | os.PathLike[str], overwrite: bool, in_place: bool) -> Store:
    if os.fspath(out).startswith("hf://"):
        raise OutputError(f"{os.fspath(out)}: a bundle is written to a folder; publish it with "
                          "weightvis.hub.publish.publish (the CLI's --out hf://... does both)")
    return (FolderStore if in_place else StagedFolderStore)(out, overwrite=overwrite)


def _options(opts: RenderOptions | DiffOptions, plan: Plan) -> dict[str, Any]:
    """What a bundle's bytes depend on besides its inputs' bytes (for the resume fingerprint):
    the options (not ``workers``, ``overwrite``), and each scene's painter with its settings
    (a diff's painter also depends on B's model card)."""
    opt = {k: v for k, v in dataclasses.asdict(opts).items() if k not in ("workers", "overwrite")}
    painters = [[s.key, type(s.painter).__name__, vars(s.painter)] for s in plan.scenes]
    return {"options": opt, "scenes": painters}


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
    stream: bool = False,
    values: ValuesMode = "auto",
    values_limit_mb: float = VALUES_LIMIT_MB,
    moe: MoEOptions | None = None,
    show_xet_xorbs: bool = False,
    png_deflate: PngDeflate = "rle",
    space_check: bool = True,
    notice: Notice | None = None,
) -> RenderResult:
    """Render a checkpoint (files, a sharded index, directories, ``hf://`` locations) into a
    bundle at ``out``. ``executor`` and ``store`` default to the local pool of ``workers``
    processes and a folder staged beside ``out``. An ``hf://`` input is downloaded into the
    Hugging Face cache first (``stream``: read by HTTP ranges instead). ``values``: what the
    max-zoom tiles' sidecars hold (options.VALUES_MODES; ``auto``: the values when they take at
    most ``values_limit_mb``). An MoE checkpoint also gets its MoE scenes and ``moe.json``
    (``moe``: how, default ``MoEOptions()``; ``MoEOptions(enabled=False)`` leaves them out;
    ``only=True`` renders them alone, as ``render_moe``). ``show_xet_xorbs``: one more scene,
    the files' bytes coloured by the Xet xorb that stores each on the Hub (``hf://`` inputs
    only; their reconstruction terms are asked for before anything is downloaded).
    ``png_deflate``: options.PngDeflate.
    ``space_check``, ``notice``: as for ``build_bundle``."""
    from .scenes import plan_moe_only, plan_render

    t0 = time.perf_counter()
    opts = RenderOptions(layout, hilbert_unit, tile_format, scale, title, workers, overwrite,
                         values, values_limit_mb, png_deflate)
    moe = moe if moe is not None else MoEOptions()
    if executor is None:  # this machine renders: compile uncached kernels meanwhile
        compiling.start()
    if stream and opts.bytes_scene:
        raise InputError("--hilbert-unit byte draws every byte of the files: render it from "
                         "downloaded files (without --stream)")
    xet: list[Any] = []
    if show_xet_xorbs:
        from .hub.xet import check_sources, xet_files

        given = [os.fspath(s) for s in sources]
        check_sources(given, stream=stream)
        if moe.only:
            raise InputError(f"{given[0]}: --show-xet-xorbs draws the files' bytes, which "
                             "'weightvis moe' does not (render without --moe)")
        xet = xet_files(given)
    ex = executor or local_executor(resolve_workers(opts.workers))
    st = store or _store(out, opts.overwrite, False)  # (a locked --out fails here, at once)
    try:
        (srcs,) = _localize([[os.fspath(s) for s in sources]], stream, progress)
        reader = open_checkpoint(srcs)
        try:
            tick = progress or _no_progress
            plan = (plan_moe_only(reader, srcs, opts, ex, tick, moe) if moe.only
                    else plan_render(reader, srcs, opts, ex, tick, moe, xet))
            plan = plan._replace(png_deflate=opts.png_deflate)
            fp = fingerprint("render", {**_options(opts, plan), "moe": dataclasses.asdict(moe)},
                             [reader.files])
            res = build_bundle(plan, st, ex, progress, fingerprint=fp, space_check=space_check,
                               notice=notice)
            elements = sum(map(math.prod, map(_SHAPE, reader.tensors())))  # (numel, 3x faster)
        finally:
            ex.stop_scales()  # (what the plan started and no scene took: a failed plan)
            reader.close()
    finally:
        st.close()
    return RenderResult(res.out, res.manifest, res.tiles_written, res.bytes_written,
                        time.perf_counter() - t0, elements, res.tile_seconds, res.leaves,
                        res.tiles_reused)


def render_moe(
    sources: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    moe: MoEOptions | None = None,
    **kw: Any,
) -> RenderResult:
    """Only the MoE scenes of an MoE checkpoint (summary, relative summary, similarity) and
    ``moe.json``; the other arguments as for ``render``."""
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
    stream: bool = False,
    values: ValuesMode = "auto",
    values_limit_mb: float = VALUES_LIMIT_MB,
    space_check: bool = True,
    notice: Notice | None = None,
) -> DiffResult:
    """Render the element-wise difference B - A of two checkpoints into a bundle at ``out``,
    with per-tensor numbers (``diff.json`` and ``manifest["diff"]``). ``hf://`` inputs and
    ``values`` as for ``render`` (the delta scene's sidecars hold A and B)."""
    from . import delta as wdiff
    from .diff_plan import plan_diff

    t0 = time.perf_counter()
    opts = DiffOptions(metric, palette, tuple(scenes), svd, finetune, tile_format, title,
                       workers, overwrite, values, values_limit_mb)
    if executor is None:
        compiling.start(delta=True)
    ex = executor or local_executor(resolve_workers(opts.workers))
    st = store or _store(out, opts.overwrite, False)  # (a locked --out fails here, at once)
    try:
        a_srcs, b_srcs = _localize([[os.fspath(s) for s in a_sources],
                                    [os.fspath(s) for s in b_sources]], stream, progress)
        ra = open_checkpoint(a_srcs)
        try:
            rb = open_checkpoint(b_srcs)
        except BaseException:
            ra.close()
            raise
        reader = wdiff.DiffReader(ra, rb)
        try:
            plan = plan_diff(reader, a_srcs, b_srcs, opts, ex, progress or _no_progress)
            fp = fingerprint("diff", _options(opts, plan), [ra.files, rb.files])
            res = build_bundle(plan, st, ex, progress, fingerprint=fp, space_check=space_check,
                               notice=notice)
        finally:
            reader.close()
    finally:
        st.close()
    return DiffResult(res.out, res.manifest, res.documents["diff.json"], res.tiles_written,
                      res.bytes_written, time.perf_counter() - t0, res.tiles_reused)


def _no_progress(stage: str, n: int, total: int) -> None:
    pass


def _localize(groups: list[list[str]], stream: bool, progress: Progress | None
              ) -> list[list[str]]:
    """Each group of inputs with its ``hf://`` inputs downloaded (their cached paths) or pinned
    for ranged reads (``stream``), all resolved before any download, in this process, before
    any worker starts; other inputs as they are."""
    from .hub.uri import is_hub_uri

    flat = [s for g in groups for s in g]
    if not any(is_hub_uri(s) for s in flat):
        return groups
    from .hub.fetch import localize

    got = iter(localize(flat, stream=stream, progress=progress))
    return [[p for _ in g for p in next(got)] for g in groups]
