"""Command line: translate flags into one library call, print the outcome. The only place errors
become messages (tracebacks only with WEIGHTVIS_DEBUG=1)."""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import WeightvisError

__all__ = ["main"]

_COMMANDS = ("demo", "info", "diff", "moe")


def _render_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="weightvis",
        description="Render model checkpoints into a static, zoomable bundle (open index.html in "
                    "a browser; no server, no network). Also: 'weightvis demo --out DIR', "
                    "'weightvis info SRC [SRC2]', 'weightvis diff A B --out DIR', "
                    "'weightvis moe SRC --out DIR'.",
    )
    p.add_argument("sources", nargs="*", metavar="SRC",
                   help="a .safetensors file, a sharded set (its model.safetensors.index.json) "
                        "or a directory")
    p.add_argument("-l", "--file-list", metavar="FILE",
                   help="read further inputs from FILE, one per line")
    p.add_argument("-o", "--out", metavar="DIR", help="bundle folder to write")
    p.add_argument("--layout", choices=("arch", "hilbert"), default="arch",
                   help="arch: transformer blocks stacked, sub-tensors aligned (default); "
                        "hilbert: all elements along one Hilbert curve")
    p.add_argument("--hilbert-unit", choices=("element", "byte"), default="element",
                   help="with --layout hilbert: one pixel per element (value colours) or per raw "
                        "file byte (byte-class colours)")
    p.add_argument("--tile-format", choices=("png", "avif"), default="png",
                   help="png: exact palette colours (default); avif: smaller, lossy")
    p.add_argument("--scale", choices=("tensor", "global"), default="tensor",
                   help="colour scale per tensor (default) or one scale for all tensors")
    p.add_argument("--title", help="title shown in the viewer")
    p.add_argument("--workers", type=int, metavar="N",
                   help="worker processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing weightvis bundle at --out")
    p.add_argument("--regen-html", metavar="DIR",
                   help="rebuild index.html of an existing bundle from its manifest (no render)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--version", action="version", version=f"weightvis {__version__}")
    _moe_arguments(p, render=True)
    return p


def _moe_arguments(p: argparse.ArgumentParser, *, render: bool) -> None:
    g = p.add_argument_group("Mixture-of-Experts scenes (summary, similarity, routing)")
    if render:
        g.add_argument("--no-moe", action="store_true",
                       help="leave out the MoE summary and similarity scenes of an MoE "
                            "checkpoint (also 'weightvis moe SRC' / '--moe': only them)")
    g.add_argument("--cka", choices=("auto", "exact", "sketch"), default="auto",
                   help="expert similarity: exact debiased CKA where cheap, sketched above "
                        "(auto, default), or always one of them")
    g.add_argument("--cka-sample", type=int, default=None, metavar="K",
                   help="features of each of the two CKA sketches (default: 256 for up to 32 "
                        "experts, 128 up to 128, 64 above)")
    g.add_argument("--moe-memory", default="512M", metavar="BYTES",
                   help="expert matrices one MoE task keeps for the cosines, e.g. 512M, 2G "
                        "(default 512M; a bigger group: cosines from every s-th element)")
    g.add_argument("--stable-rank-tol", type=float, default=5e-2, metavar="TOL",
                   help="residual tolerance of the top singular value, relative (default "
                        "0.05: stable rank within ~6 %%; 1e-6 for numpy's svd to 1e-5)")
    g.add_argument("--probe", action="store_true",
                   help="run a short text through the model (transformers, one layer at a "
                        "time) and add routing frequency and co-activation panels")
    g.add_argument("--probe-text", metavar="FILE", help="the probe's text (implies --probe)")
    g.add_argument("--probe-tokens", metavar="FILE",
                   help="the probe's token ids, a JSON list (implies --probe)")


def _byte_count(text: str) -> int | None:
    """'512M' -> 536870912; None when it is not a size."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(t[-1:], 1)
    digits = t[:-1] if t[-1:] in "KMGT" and t[-1:] else t
    try:
        value = float(digits)
    except ValueError:
        return None
    return int(value * mult) if value > 0 and value * mult < 1 << 62 else None


def _moe_options(parser: argparse.ArgumentParser, a: argparse.Namespace, *, only: bool) -> Any:
    """MoEOptions from the flags (the probe's text or token file read here)."""
    import json

    from .options import MoEOptions

    memory = _byte_count(a.moe_memory)
    if memory is None:
        parser.error(f"--moe-memory takes a size such as 512M or 2G, not {a.moe_memory!r}")
    if a.cka_sample is not None and a.cka_sample < 1:
        parser.error("--cka-sample must be at least 1")
    if not a.stable_rank_tol > 0:
        parser.error("--stable-rank-tol must be positive")
    if a.probe_text and a.probe_tokens:
        parser.error("give --probe-text or --probe-tokens, not both")
    text = tokens = None
    if a.probe_text:
        try:
            text = Path(a.probe_text).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise WeightvisError(f"{a.probe_text}: cannot read the probe text ({e})") from None
    if a.probe_tokens:
        try:
            raw = json.loads(Path(a.probe_tokens).read_text("utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise WeightvisError(f"{a.probe_tokens}: cannot read the probe tokens ({e})"
                                 ) from None
        if not isinstance(raw, list) or not raw or not all(
                isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in raw):
            raise WeightvisError(f"{a.probe_tokens}: expected a JSON list of token ids "
                                 f"(non-negative integers)")
        tokens = tuple(raw)
    inline = os.environ.get("WEIGHTVIS_MOE_INLINE_MAX")
    extra: dict[str, Any] = {}
    if inline is not None:
        if not inline.isdigit():
            raise WeightvisError(f"WEIGHTVIS_MOE_INLINE_MAX must be a count, not {inline!r}")
        extra["inline_max"] = int(inline)
    return MoEOptions(enabled=only or not getattr(a, "no_moe", False), only=only,
                      cka_sample=a.cka_sample, cka=a.cka, memory=memory,
                      stable_rank_tol=a.stable_rank_tol,
                      probe=bool(a.probe or text is not None or tokens is not None),
                      probe_text=text, probe_tokens=tokens, **extra)


def _demo_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="weightvis demo",
        description="Render the embedded synthetic Llama-style checkpoint (no download) with "
                    "planted features to find: a dead attention head, an outlier channel, a "
                    "layer quantized to few levels, tied embeddings.")
    p.add_argument("-o", "--out", metavar="DIR", required=True, help="bundle folder to write")
    p.add_argument("--workers", type=int, metavar="N", help="worker processes (default: all)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing weightvis bundle at --out")
    p.add_argument("--keep-checkpoint", metavar="DIR",
                   help="also write the synthetic checkpoint (safetensors + config.json) here")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def _diff_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="weightvis diff",
        description="Map what changed between two checkpoints (B - A, element by element) into a "
                    "bundle, with per-tensor numbers in diff.json and a summary here.")
    p.add_argument("a", metavar="A", help="the first (base) checkpoint: file, index or directory")
    p.add_argument("b", metavar="B", help="the second checkpoint")
    p.add_argument("-o", "--out", metavar="DIR", required=True, help="bundle folder to write")
    p.add_argument("--diff-metric", choices=("rms", "abs-log", "exact"), default="rms",
                   help="rms: relative to A's RMS (default); abs-log: raw magnitude on a log "
                        "scale; exact: any change at full brightness")
    p.add_argument("--palette", choices=("default", "cvd"), default="default",
                   help="default: green grew / red shrank; cvd: blue / orange")
    p.add_argument("--scenes", default="delta", metavar="LIST",
                   help="scenes to draw, among a,b,delta (default: delta)")
    ft = p.add_mutually_exclusive_group()
    ft.add_argument("--finetune", dest="finetune", action="store_true", default=None,
                    help="treat B as a finetune of A (default: when B's model card says so)")
    ft.add_argument("--no-finetune", dest="finetune", action="store_false")
    p.add_argument("--no-svd", action="store_true",
                   help="skip the low-rank estimate of each 2-D delta")
    p.add_argument("--tile-format", choices=("png", "avif"), default="png")
    p.add_argument("--title", help="title shown in the viewer")
    p.add_argument("--workers", type=int, metavar="N", help="worker processes (default: all)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing weightvis bundle at --out")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")
    return p


def _diff_summary(res: Any) -> str:
    d = res.diff
    s = d["summary"]
    lines = [f"wrote {res.out}/index.html and diff.json in {res.seconds:.1f} s",
             f"{d['mode']} mode: {s['identical']} identical, {s['changed']} changed, "
             f"{s['shape_changed']} shape-changed, {s['only_in_a']} only in A, "
             f"{s['only_in_b']} only in B; {s['elements_changed']:,} of "
             f"{s['elements_compared']:,} elements changed"]
    lines += ["  " + ln for ln in d["diagnosis"]]
    rows = [p for p in d["pairs"] if p["status"] != "identical"]
    rows.sort(key=lambda p: (p["status"] not in ("shape-changed", "only-in-b"),
                             -((p["numbers"] or {}).get("rel") or 0)))
    if rows:
        lines.append(f"  {'status':14s} {'‖Δ‖/‖A‖':>9s} {'changed':>11s}  tensor")
        for p in rows[:20]:
            nb = p["numbers"] or {}
            rel = f"{nb['rel']:.3g}" if nb.get("rel") is not None else "-"
            ch = f"{nb['changed']:,}" if nb else "-"
            lines.append(f"  {p['status']:14s} {rel:>9s} {ch:>11s}  {p['name']}")
        if len(rows) > 20:
            lines.append(f"  … {len(rows) - 20} more in diff.json")
    return "\n".join(lines)


def _run_diff(argv: Sequence[str]) -> int:
    parser = _diff_parser()
    a = parser.parse_args(argv)
    scenes = [x.strip() for x in a.scenes.split(",") if x.strip()]
    if not scenes or any(x not in ("a", "b", "delta") for x in scenes) or "delta" not in scenes:
        parser.error("--scenes takes a comma list among a, b, delta, and includes delta")
    if a.workers is not None and a.workers < 1:
        parser.error("--workers must be at least 1")
    from . import bundle

    bar = _Bar(a.quiet)
    try:
        res = bundle.render_diff([a.a], [a.b], a.out, metric=a.diff_metric, palette=a.palette,
                                 scenes=scenes, svd=not a.no_svd, finetune=a.finetune,
                                 tile_format=a.tile_format, title=a.title, workers=a.workers,
                                 overwrite=a.overwrite, progress=bar)
    finally:
        bar.close()
    if not a.quiet:
        print(_diff_summary(res))
    return 0


def _info_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="weightvis info",
        description="The structure of a checkpoint at a glance, from headers only; with two "
                    "checkpoints, how their architectures differ.")
    p.add_argument("sources", nargs="+", metavar="SRC",
                   help="a checkpoint (file, sharded index or directory); give two to compare")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--scan", action="store_true",
                   help="also read every tensor and list NaN / Inf / all-zero tensors")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar with --scan")
    return p


class _Bar:
    """tqdm bars on stderr, one per stage."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bars: dict[str, Any] = {}

    def __call__(self, stage: str, advance: int, total: int) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        bar = self.bars.get(stage)
        if bar is None:
            for b in self.bars.values():
                b.close()
            unit = "tile" if stage.startswith("tiles") else "group" if stage == "moe" else "tensor"
            bar = self.bars[stage] = tqdm(total=total, desc=stage, unit=unit, file=sys.stderr,
                                          leave=False, dynamic_ncols=True)
        bar.update(advance)

    def close(self) -> None:
        for b in self.bars.values():
            b.close()
        self.bars.clear()


def _read_file_list(path: str) -> list[str]:
    try:
        text = Path(path).read_text("utf-8")
    except OSError as e:
        raise WeightvisError(f"{path}: cannot read the file list ({e.strerror})") from None
    base = Path(path).parent
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line)
            out.append(str(p if p.is_absolute() else base / p))
    return out


def _summary(res: Any) -> str:
    m = res.manifest
    sc = m["scenes"][0]
    mb = res.bytes_written / 1e6
    text = (f"wrote {res.out}/index.html: {len(m['tensors'])} tensors, "
            f"{res.elements:,} elements, canvas {sc['width']}x{sc['height']} px, "
            f"zoom 0-{sc['max_zoom']}, {res.tiles_written} tiles ({mb:.1f} MB) "
            f"in {res.seconds:.1f} s")
    moe = m.get("moe")
    if isinstance(moe, dict):
        rms = moe["stats"]["rms"]
        dead = sorted({(moe["layers"][i], e) for by_role in rms.values()
                       for i, row in enumerate(by_role) for e, v in enumerate(row) if v == 0})
        text += (f"\nMoE: {len(moe['layers'])} MoE layers, {len(moe['dense_layers'])} dense, "
                 f"{moe['experts']} routed experts, roles {', '.join(moe['roles'])}; scenes "
                 f"{', '.join(s['key'] for s in m['scenes'] if 'moe' in s)} and moe.json; "
                 + (f"dead experts (layer, expert): {dead[:10]}"
                    + (f" and {len(dead) - 10} more" if len(dead) > 10 else "")
                    if dead else "no dead expert"))
    return text


def _run_render(argv: Sequence[str], *, moe_only: bool = False) -> int:
    parser = _render_parser()
    if moe_only:
        parser.prog = "weightvis moe"
        parser.description = ("Render only the Mixture-of-Experts scenes of an MoE checkpoint: "
                              "per-expert heatmaps, expert similarity (debiased CKA, cosine) "
                              "and, with --probe, routing; plus moe.json.")
    a = parser.parse_args(argv)
    if moe_only and a.no_moe:
        parser.error("--no-moe leaves out the only scenes 'weightvis moe' draws")
    if a.regen_html:
        if a.sources or a.out:
            parser.error("--regen-html DIR takes no inputs and no --out")
        from .regen import regen_html  # numpy-free: works on a machine without numpy

        path = regen_html(a.regen_html)
        print(f"rebuilt {path}")
        return 0
    from . import bundle

    sources = list(a.sources) + (_read_file_list(a.file_list) if a.file_list else [])
    if not sources:
        parser.error("give at least one SRC (or -l FILE), or use 'weightvis demo --out DIR'")
    if not a.out:
        parser.error("--out DIR is required")
    if a.workers is not None and a.workers < 1:
        parser.error("--workers must be at least 1")
    if a.hilbert_unit == "byte" and a.layout != "hilbert":
        parser.error("--hilbert-unit byte needs --layout hilbert")
    moe = _moe_options(parser, a, only=moe_only)
    bar = _Bar(a.quiet)
    try:
        res = bundle.render(sources, a.out, layout=a.layout, hilbert_unit=a.hilbert_unit,
                            tile_format=a.tile_format, scale=a.scale, title=a.title,
                            workers=a.workers, overwrite=a.overwrite, progress=bar, moe=moe)
    finally:
        bar.close()
    if not a.quiet:
        print(_summary(res))
    return 0


def _run_demo(argv: Sequence[str]) -> int:
    a = _demo_parser().parse_args(argv)
    from .demo import render_demo

    bar = _Bar(a.quiet)
    try:
        res = render_demo(a.out, workers=a.workers, overwrite=a.overwrite,
                          keep_checkpoint=a.keep_checkpoint, progress=bar)
    finally:
        bar.close()
    print(_summary(res))
    print("open it: file://" + str(Path(res.out).resolve() / "index.html"))
    return 0


def _run_info(argv: Sequence[str]) -> int:
    parser = _info_parser()
    a = parser.parse_args(argv)
    if len(a.sources) > 2:
        parser.error("give one checkpoint, or two to compare (a sharded set is one checkpoint: "
                     "pass its directory or its .index.json)")
    import json

    from . import info as winfo

    bar = _Bar(a.quiet or not a.scan)
    try:
        infos = [winfo.checkpoint_info([s], scan=a.scan, progress=bar) for s in a.sources]
    finally:
        bar.close()
    if len(infos) == 1:
        out: Any = infos[0]
        text = winfo.format_info(infos[0])
    else:
        out = {"a": infos[0], "b": infos[1], "comparison": winfo.compare_info(*infos)}
        text = "\n\n".join([f"A: {a.sources[0]}\n" + winfo.format_info(infos[0]),
                            f"B: {a.sources[1]}\n" + winfo.format_info(infos[1]),
                            "A vs B\n" + winfo.format_compare(out["comparison"])])
    if a.json:
        print(json.dumps(out, indent=1, ensure_ascii=False))
    else:
        print(text)
    return 0


def run() -> None:
    """The console entry point (``weightvis``, ``python -m weightvis``): ``main`` without the
    cyclic garbage collector (a command makes little cyclic garbage; the collector's passes
    over the objects numba creates while loading cost ~0.05-0.1 s, measured), then exit
    without the interpreter's teardown, which spends ~0.12 s unloading numba and LLVM after a
    render (measured); by then every file is closed, and the output is flushed here."""
    gc.disable()
    code = main()
    with contextlib.suppress(OSError):  # a closed pipe (``| head``) has nothing to flush to
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    # the render path does no linear algebra; OpenBLAS's thread pool, started when numpy is
    # first imported, spins for ~0.3 CPU-s on the cores the tile workers need (measured)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        if args and args[0] == "demo":
            return _run_demo(args[1:])
        if args and args[0] == "info":
            return _run_info(args[1:])
        if args and args[0] == "diff":
            return _run_diff(args[1:])
        if args and args[0] == "moe":
            return _run_render(args[1:], moe_only=True)
        if "--moe" in args:  # also spelled: weightvis --moe SRC --out DIR
            return _run_render([x for x in args if x != "--moe"], moe_only=True)
        if "--diff" in args:  # the seed's spelling: weightvis --diff A B --out DIR
            i = args.index("--diff")
            if len(args) < i + 3:
                print("weightvis: error: --diff takes two checkpoints: --diff A B",
                      file=sys.stderr)
                return 2
            return _run_diff(args[i + 1:i + 3] + args[:i] + args[i + 3:])
        return _run_render(args)
    except WeightvisError as e:
        if os.environ.get("WEIGHTVIS_DEBUG"):
            raise
        print(f"weightvis: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, permission denied, ... while writing
        if os.environ.get("WEIGHTVIS_DEBUG"):
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"weightvis: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("weightvis: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("weightvis: error: out of memory", file=sys.stderr)
        return 2
