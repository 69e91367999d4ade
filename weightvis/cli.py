"""Command line: translate flags into one library call, print the outcome. The only place errors
become messages (tracebacks only with WEIGHTVIS_DEBUG=1).

Over ~450 lines on purpose: the parsers and outputs of every command (render, demo, info, diff,
publish) in the one module allowed to print."""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import InputError, WeightvisError, WeightvisWarning
from .untrusted import printable, printable_json

if TYPE_CHECKING:
    from .executors import Executor

__all__ = ["main"]

_COMMANDS = ("demo", "info", "diff", "publish", "moe")


def _add_values_options(p: argparse.ArgumentParser) -> None:
    """--values / --no-values / --no-sidecars / --values-limit (options.VALUES_MODES)."""
    from .options import VALUES_LIMIT_MB

    g = p.add_mutually_exclusive_group()
    g.add_argument("--values", dest="values", action="store_const", const="values",
                   default="auto",
                   help="keep every element's exact value for the viewer's readout, whatever "
                        "the size (default: only when the values take at most --values-limit "
                        "MB; otherwise the readout shows the value interval of each colour)")
    g.add_argument("--no-values", dest="values", action="store_const", const="index",
                   help="keep only the colour indices: the readout shows value intervals")
    g.add_argument("--no-sidecars", dest="values", action="store_const", const="none",
                   help="write no sidecar scripts beside the tiles (the readout shows no value)")
    p.add_argument("--values-limit", type=float, default=VALUES_LIMIT_MB, metavar="MB",
                   help=f"keep the values by default when the inputs' elements take at most "
                        f"this many MB at 2 bytes each (16-bit and narrower types) or 4 (others, "
                        f"quantized GGUF included) (default {VALUES_LIMIT_MB:g})")


def _tile_format_option(p: argparse.ArgumentParser) -> None:
    """``--tile-format png`` is still accepted (scripts that spell the default), not shown;
    anything else is refused in one line by ``_check_tile_format`` (not by argparse: its usage
    block would bury why AVIF went)."""
    p.add_argument("--tile-format", default="png", metavar="png", help=argparse.SUPPRESS)


def _check_tile_format(a: argparse.Namespace) -> None:
    from .options import tile_format_problem

    problem = tile_format_problem(a.tile_format)
    if problem is not None:
        raise InputError(f"--tile-format {a.tile_format}: {problem}")


def _add_space_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-space-check", action="store_true",
                   help="render even when --out's file system seems too small for the bundle "
                        "(its expected size, printed before the tiles, is an estimate)")


def _notice(quiet: bool) -> Callable[[str], None] | None:
    """Where the library's lines before the tiles go (stderr, beside the progress bars)."""
    if quiet:
        return None

    def say(text: str) -> None:
        print(f"weightvis: {text}", file=sys.stderr, flush=True)
    return say


def _render_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        allow_abbrev=False,  # exact option names only: a prefix is an error, not a guess
        prog="weightvis",
        description="Render model checkpoints into a static, zoomable bundle (open index.html in "
                    "a browser; no server, no network). Also: 'weightvis demo --out DIR', "
                    "'weightvis info SRC [SRC2]', 'weightvis diff A B --out DIR', "
                    "'weightvis publish BUNDLE hf://spaces/NS/NAME', "
                    "'weightvis moe SRC --out DIR'.",
    )
    p.add_argument("sources", nargs="*", metavar="SRC",
                   help="a checkpoint, detected by its bytes: safetensors (a file, or a sharded "
                        "set by its .index.json), GGUF (any ggml type), PyTorch (.pt / .pth / "
                        ".bin / .ckpt: zip or legacy pickle, read without running it; "
                        "TorchScript), a directory holding one, or a Hugging Face Hub location "
                        "hf://[datasets/|spaces/]NS/NAME[@REVISION][/PATH]; several SRC are "
                        "drawn as one model (shards)")
    p.add_argument("-l", "--file-list", metavar="FILE",
                   help="read further inputs from FILE, one per line (blank lines and # "
                        "comments skipped); a relative path in FILE is relative to FILE's own "
                        "folder, not to the current directory, so a list kept beside its "
                        "checkpoints works from anywhere; hf:// lines are taken as they are")
    p.add_argument("-o", "--out", metavar="DIR",
                   help="bundle folder to write, or hf://spaces/NS/NAME to publish it there")
    p.add_argument("--layout", choices=("arch", "hilbert"), default="arch",
                   help="arch: transformer blocks stacked, sub-tensors aligned (default); "
                        "hilbert: all elements along one Hilbert curve")
    p.add_argument("--hilbert-unit", choices=("element", "byte"), default="element",
                   help="with --layout hilbert: one pixel per element (value colours) or per raw "
                        "file byte (byte-class colours)")
    _tile_format_option(p)
    p.add_argument("--scale", choices=("tensor", "global"), default="tensor",
                   help="colour scale per tensor (default) or one scale for all tensors")
    p.add_argument("--title", help="title shown in the viewer")
    p.add_argument("--workers", type=int, metavar="N",
                   help="worker processes (default: all cores)")
    p.add_argument("--scheduler", metavar="ADDR",
                   help="render on a Dask cluster: tcp://HOST:PORT of a running scheduler, or "
                        "local[:N] to start N local workers (needs weightvis[dask]; inputs and "
                        "--out on a folder every worker sees)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing weightvis bundle at --out")
    _add_space_option(p)
    _add_values_options(p)
    p.add_argument("--regen-html", metavar="DIR",
                   help="rebuild index.html of an existing bundle from its manifest (no render; "
                        "with --title, the new title is written to the manifest too)")
    _hub_options(p)
    p.add_argument("--show-xet-xorbs", action="store_true",
                   help="with an hf:// input stored with Xet: one more scene, every byte of the "
                        "files on a Hilbert curve coloured by the Xet xorb that stores it on the "
                        "Hub (asks the Hub's Xet storage for the files' reconstruction terms)")
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
    g.add_argument("--cka-sample", type=int, default=None, metavar="M",
                   help="hidden coordinates whose Gram rows the sketched CKA computes exactly "
                        "(default: at least 32 and M·H >= 32768: within 0.02 of exact; "
                        "each expert costs M·H·I)")
    g.add_argument("--cka-heavy", type=int, default=64, metavar="N",
                   help="per (layer, role), most outlier hidden coordinates (squared norm > "
                        "4x the mean in an expert) whose CKA terms are all computed exactly "
                        "(default 64)")
    g.add_argument("--moe-memory", default="768M", metavar="BYTES",
                   help="memory of the MoE computation, all its processes together, e.g. "
                        "768M, 4G (default 768M; less: fewer processes, and cosines from every "
                        "s-th element)")
    g.add_argument("--stable-rank-tol", type=float, default=5e-2, metavar="TOL",
                   help="residual tolerance of the top singular value, relative (default "
                        "0.05: stable rank within ~8 %%; 1e-6 for numpy's svd to 1e-5)")
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
    if a.cka_heavy < 0:
        parser.error("--cka-heavy must be at least 0")
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
                      cka_sample=a.cka_sample, cka_heavy=a.cka_heavy, cka=a.cka, memory=memory,
                      stable_rank_tol=a.stable_rank_tol,
                      probe=bool(a.probe or text is not None or tokens is not None),
                      probe_text=text, probe_tokens=tokens, **extra)


def _hub_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stream", action="store_true",
                   help="read hf:// inputs by HTTP ranges instead of downloading them into the "
                        "Hugging Face cache (for checkpoints that do not fit on disk)")
    p.add_argument("--private", action="store_true",
                   help="with --out hf://spaces/...: create the Space private")


def _demo_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        allow_abbrev=False,  # exact option names only: a prefix is an error, not a guess
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
        allow_abbrev=False,  # exact option names only: a prefix is an error, not a guess
        prog="weightvis diff",
        description="Map what changed between two checkpoints (B - A, element by element) into a "
                    "bundle, with per-tensor numbers in diff.json and a summary here.")
    p.add_argument("a", metavar="A", help="the first (base) checkpoint: file, index, directory "
                                          "or hf:// location")
    p.add_argument("b", metavar="B", help="the second checkpoint")
    p.add_argument("-o", "--out", metavar="DIR", required=True,
                   help="bundle folder to write, or hf://spaces/NS/NAME to publish it there")
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
    _tile_format_option(p)
    _add_values_options(p)
    p.add_argument("--title", help="title shown in the viewer")
    p.add_argument("--workers", type=int, metavar="N", help="worker processes (default: all)")
    p.add_argument("--scheduler", metavar="ADDR",
                   help="run on a Dask cluster: tcp://HOST:PORT or local[:N] (see the main help)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing weightvis bundle at --out")
    _add_space_option(p)
    _hub_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")
    return p


def _diff_summary(res: Any) -> str:
    d = res.diff
    s = d["summary"]
    lines = [f"warning: {w}" for w in d.get("warnings", [])] + [
             f"{_wrote(res)} and diff.json in {res.seconds:.1f} s"
             + (f" ({res.tiles_reused} tiles kept from an interrupted run)"
                if res.tiles_reused else ""),
             f"{d['mode']} mode: {s['identical']} identical, {s['changed']} changed, "
             f"{s['shape_changed']} shape-changed, {s['only_in_a']} only in A, "
             f"{s['only_in_b']} only in B; {s['elements_changed']:,} of "
             f"{s['elements_compared']:,} elements changed"]
    lines += ["  " + printable(ln) for ln in d["diagnosis"]]
    rows = [p for p in d["pairs"] if p["status"] != "identical"]
    rows.sort(key=lambda p: (p["status"] not in ("shape-changed", "only-in-b"),
                             -((p["numbers"] or {}).get("rel") or 0)))
    if rows:
        lines.append(f"  {'status':14s} {'‖Δ‖/‖A‖':>9s} {'changed':>11s}  tensor")
        for p in rows[:20]:
            nb = p["numbers"] or {}
            rel = f"{nb['rel']:.3g}" if nb.get("rel") is not None else "-"
            ch = f"{nb['changed']:,}" if nb else "-"
            lines.append(f"  {p['status']:14s} {rel:>9s} {ch:>11s}  {printable(p['name'])}")
        if len(rows) > 20:
            lines.append(f"  … {len(rows) - 20} more in diff.json")
    return "\n".join(lines)


@contextlib.contextmanager
def _executor(scheduler: str | None, workers: int | None, inputs: Sequence[str],
              out: str) -> Iterator[Executor | None]:
    """The Dask executor ``--scheduler`` names (checked to see the inputs and the output
    folder, closed afterwards), or None: the local pool of ``--workers``."""
    if scheduler is None:
        yield None
        return
    if workers is not None:
        raise InputError("--workers and --scheduler exclude each other (the cluster decides)")
    from .dask_executor import dask_executor

    ex = dask_executor(scheduler)
    try:
        ex.check_shared(Path(out).resolve().parent, inputs)
        yield ex
    finally:
        ex.close()


def _run_diff(argv: Sequence[str]) -> int:
    parser = _diff_parser()
    a = parser.parse_args(argv)
    _check_tile_format(a)
    scenes = [x.strip() for x in a.scenes.split(",") if x.strip()]
    if not scenes or any(x not in ("a", "b", "delta") for x in scenes) or "delta" not in scenes:
        parser.error("--scenes takes a comma list among a, b, delta, and includes delta")
    if a.workers is not None and a.workers < 1:
        parser.error("--workers must be at least 1")
    if not a.values_limit >= 0:
        parser.error("--values-limit must be a size in MB, at least 0")
    from . import bundle

    bar = _Bar(a.quiet)
    with _published(a) as out:
        try:
            with _naming([a.a, a.b]), _executor(a.scheduler, a.workers, [a.a, a.b], out) as ex:
                res = bundle.render_diff([a.a], [a.b], out, metric=a.diff_metric,
                                         palette=a.palette, scenes=scenes, svd=not a.no_svd,
                                         finetune=a.finetune, tile_format=a.tile_format,
                                         title=a.title, workers=a.workers,
                                         overwrite=a.overwrite or out != a.out,
                                         progress=bar, stream=a.stream, executor=ex,
                                         values=a.values, values_limit_mb=a.values_limit,
                                         space_check=not a.no_space_check,
                                         notice=_notice(a.quiet))
        finally:
            bar.close()
        if not a.quiet:
            _say(_diff_summary(res))
        else:  # -q drops the summary, never a warning
            for w in res.diff.get("warnings", []):
                print(f"weightvis: warning: {w}", file=sys.stderr)
    return 0


def _info_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        allow_abbrev=False,  # exact option names only: a prefix is an error, not a guess
        prog="weightvis info",
        description="The structure of a checkpoint at a glance, from headers only; with two "
                    "checkpoints, how their architectures differ.")
    p.add_argument("sources", nargs="+", metavar="SRC",
                   help="a checkpoint (file, sharded index, directory or hf:// location: read "
                        "from its headers by HTTP ranges, or from the Hugging Face cache); give "
                        "two to compare")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--scan", action="store_true",
                   help="also read every tensor (row blocks, bounded memory) and list NaN / Inf, "
                        "all-zero and constant tensors, all-zero rows and columns")
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
            unit = ("tile" if stage.startswith("tiles") else
                    {"download": "B", "moe": "group"}.get(stage, "tensor"))
            if stage.startswith(("compiling", "generating")):
                unit = "step"  # (kernel groups; the demo's checkpoint)
            bar = self.bars[stage] = tqdm(total=total, desc=stage, unit=unit, file=sys.stderr,
                                          leave=False, dynamic_ncols=True,
                                          unit_scale=stage == "download")
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
        if line.startswith("hf://"):  # a Hub location, not a path relative to the list
            out.append(line)
        elif line and not line.startswith("#"):
            p = Path(line)
            out.append(str(p if p.is_absolute() else base / p))
    return out


def _wrote(res: Any) -> str:
    """What a render wrote: its page, or (``--out hf://``) a bundle about to be published."""
    if Path(res.out).parent.name.startswith(_PUBLISH_TMP):
        return "rendered a bundle to publish"
    return f"wrote {res.out}/index.html"
def _reused(res: Any) -> str:
    n = res.tiles_reused
    return f", {n} of them kept from an interrupted run" if n else ""


def _summary(res: Any) -> str:
    m = res.manifest
    sc = m["scenes"][0]
    mb = res.bytes_written / 1e6
    text = (f"{_wrote(res)}: {len(m['tensors'])} tensors, "
            f"{res.elements:,} elements, canvas {sc['width']}x{sc['height']} px, "
            f"zoom 0-{sc['max_zoom']}, {res.tiles_written} tiles ({mb:.1f} MB{_reused(res)}) "
            f"in {res.seconds:.1f} s")
    return text + _moe_summary(m)


def _moe_summary(m: dict[str, Any]) -> str:
    """The MoE line of the summary (numpy-free): layers, experts, scenes, dead experts."""
    moe = m.get("moe")
    if not isinstance(moe, dict):
        return ""
    rms = moe["stats"]["rms"]
    dead = sorted({(moe["layers"][i], e) for by_role in rms.values()
                   for i, row in enumerate(by_role) for e, v in enumerate(row) if v == 0})
    return (f"\nMoE: {len(moe['layers'])} MoE layers, {len(moe['dense_layers'])} dense, "
            f"{moe['experts']} routed experts, roles {', '.join(moe['roles'])}; scenes "
            f"{', '.join(s['key'] for s in m['scenes'] if 'moe' in s)} and moe.json; "
            + (f"dead experts (layer, expert): {dead[:10]}"
               + (f" and {len(dead) - 10} more" if len(dead) > 10 else "")
               if dead else "no dead expert"))


def _run_render(argv: Sequence[str], *, moe_only: bool = False) -> int:
    parser = _render_parser()
    if moe_only:
        parser.prog = "weightvis moe"
        parser.description = ("Render only the Mixture-of-Experts scenes of an MoE checkpoint: "
                              "per-expert heatmaps, expert similarity (debiased CKA, cosine) "
                              "and, with --probe, routing; plus moe.json.")
    a = parser.parse_args(argv)
    _check_tile_format(a)
    if moe_only and a.no_moe:
        parser.error("--no-moe leaves out the only scenes 'weightvis moe' draws")
    if a.regen_html:
        if a.sources or a.out or a.file_list:
            parser.error("--regen-html DIR takes no inputs and no --out")
        unused = [f"--{k.replace('_', '-')}" for k, v in vars(a).items()
                  if k not in _REGEN_OPTIONS and v != parser.get_default(k)]
        if unused:
            parser.error(f"--regen-html only rebuilds the page: {', '.join(unused)} would "
                         "need a render")
        from .regen import regen_html  # numpy-free: works on a machine without numpy

        path = regen_html(a.regen_html, title=a.title)
        _say(f"rebuilt {path}")
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
    if not a.values_limit >= 0:
        parser.error("--values-limit must be a size in MB, at least 0")
    moe = _moe_options(parser, a, only=moe_only)
    bar = _Bar(a.quiet)
    with _published(a) as out:
        try:
            with _naming(sources), _executor(a.scheduler, a.workers, sources, out) as ex:
                res = bundle.render(sources, out, layout=a.layout, hilbert_unit=a.hilbert_unit,
                                    tile_format=a.tile_format, scale=a.scale, title=a.title,
                                    workers=a.workers, overwrite=a.overwrite or out != a.out,
                                    progress=bar, stream=a.stream, executor=ex,
                                    values=a.values, values_limit_mb=a.values_limit, moe=moe,
                                    show_xet_xorbs=a.show_xet_xorbs,
                                    space_check=not a.no_space_check, notice=_notice(a.quiet))
        finally:
            bar.close()
        if os.environ.get("WEIGHTVIS_TIMING"):
            _write_timing(os.environ["WEIGHTVIS_TIMING"], res)
        if not a.quiet:
            _say(_summary(res))
    return 0


_PUBLISH_TMP = "weightvis-publish-"
_REGEN_OPTIONS = {"regen_html", "title", "quiet", "sources", "out", "file_list"}
"""The render options --regen-html takes (the others would need a render)."""


class _StdoutClosed(Exception):
    """The reader of our standard output went away (``weightvis info x | head``)."""


def _say(text: str) -> None:
    """print to stdout; a closed pipe ends the command quietly (``_StdoutClosed``)."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        raise _StdoutClosed from None


@contextlib.contextmanager
def _published(a: argparse.Namespace) -> Iterator[str]:
    """``--out``, or for ``--out hf://...`` a temporary folder published there afterwards (and
    removed; kept, and named, when the upload fails, so that publish can resume it)."""
    if not str(a.out).startswith("hf://"):
        yield a.out
        return
    import shutil
    import tempfile

    from .hub.publish import preflight

    preflight(a.out, overwrite=a.overwrite)  # what publish would refuse fails before the render
    tmp = tempfile.mkdtemp(prefix=_PUBLISH_TMP)
    out = os.path.join(tmp, "bundle")
    done = False
    try:
        yield out
        try:
            _publish(out, a.out, private=a.private, overwrite=a.overwrite, title=a.title,
                     quiet=a.quiet)
        except WeightvisError as e:
            raise WeightvisError(f"{e} (the bundle is kept in {out}: 'weightvis publish {out} "
                                 f"{a.out}' resumes)") from e
        done = True
    finally:
        if done or not os.path.exists(os.path.join(out, "manifest.json")):
            shutil.rmtree(tmp, ignore_errors=True)


def _publish(bundle_dir: str, target: str, **kw: Any) -> None:
    from .hub.publish import publish

    quiet = kw.pop("quiet")
    if quiet:
        from huggingface_hub.utils.tqdm import disable_progress_bars

        disable_progress_bars()  # its upload bars
    res = publish(bundle_dir, target, log=None if quiet else
                  (lambda text: print(f"weightvis: {text}", file=sys.stderr)), **kw)
    _say(f"published {res.files:,} files{' (tiles packed)' if res.packed else ''}"
          f"{f', {res.deleted:,} old files removed' if res.deleted else ''}: {res.url}")


def _publish_parser() -> argparse.ArgumentParser:
    from .hub.publish import PACK_ABOVE, SHARD_BYTES

    p = argparse.ArgumentParser(
        allow_abbrev=False,  # exact option names only: a prefix is an error, not a guess
        prog="weightvis publish",
        description="Upload a bundle as a static Hugging Face Space (README front matter "
                    "'sdk: static'), or into a folder of a model / dataset repo. Needs a write "
                    "token (HF_TOKEN or 'hf auth login'). Re-running resumes an interrupted "
                    "upload.")
    p.add_argument("bundle", metavar="BUNDLE", help="a bundle folder written by weightvis")
    p.add_argument("target", metavar="TARGET",
                   help="hf://spaces/NS/NAME, or hf://[datasets/]NS/NAME with --path-in-repo")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a weightvis bundle already there")
    p.add_argument("--path-in-repo", metavar="DIR",
                   help="folder of the repo that receives the bundle (model / dataset repos)")
    p.add_argument("--title", help="the Space's title (default: the bundle's)")
    p.add_argument("--message", help="commit message")
    p.add_argument("--pack", choices=("auto", "never", "always"), default="auto",
                   help="pack the tiles into archive shards read by HTTP Range (auto: when the "
                        "bundle has more than --pack-above files); a packed bundle works over "
                        "http(s) only")
    p.add_argument("--pack-above", type=int, default=PACK_ABOVE, metavar="N",
                   help=f"file count above which --pack auto packs (default {PACK_ABOVE:,}; the "
                        "Hub recommends < 100k files per repo)")
    p.add_argument("--pack-shard-mb", type=float, default=SHARD_BYTES >> 20, metavar="MB",
                   help=f"largest pack shard in MiB (default {SHARD_BYTES >> 20})")
    p.add_argument("-q", "--quiet", action="store_true", help="say only the URL")
    return p


def _run_publish(argv: Sequence[str]) -> int:
    parser = _publish_parser()
    a = parser.parse_args(argv)
    if a.pack_above < 0 or not a.pack_shard_mb > 0:
        parser.error("--pack-above must be >= 0 and --pack-shard-mb > 0")
    if not a.target.startswith("hf://"):
        parser.error("TARGET is a Hub location: hf://spaces/NS/NAME")
    _publish(a.bundle, a.target, private=a.private, overwrite=a.overwrite,
             path_in_repo=a.path_in_repo, title=a.title, message=a.message, pack=a.pack,
             pack_above=a.pack_above, shard_bytes=int(a.pack_shard_mb * (1 << 20)),
             quiet=a.quiet)
    return 0


def _write_timing(path: str, res: Any) -> None:
    """``WEIGHTVIS_TIMING=FILE``: the render's phase times and counts as JSON (benchmarks)."""
    import json

    tensors = len(res.manifest.get("tensors", {}))
    Path(path).write_text(json.dumps({
        "seconds": round(res.seconds, 4), "tiles_s": round(res.tile_seconds, 4),
        "leaves": res.leaves, "tiles": res.tiles_written, "bytes": res.bytes_written,
        "elements": res.elements, "tensors": tensors}) + "\n")


def _run_demo(argv: Sequence[str]) -> int:
    a = _demo_parser().parse_args(argv)
    from .demo import render_demo

    bar = _Bar(a.quiet)
    try:
        res = render_demo(a.out, workers=a.workers, overwrite=a.overwrite,
                          keep_checkpoint=a.keep_checkpoint, progress=bar)
    finally:
        bar.close()
    _say(_summary(res))
    _say("open it: file://" + str(Path(res.out).resolve() / "index.html"))
    return 0


def _run_info(argv: Sequence[str]) -> int:
    parser = _info_parser()
    a = parser.parse_args(argv)
    if len(a.sources) > 2:
        parser.error("give one checkpoint, or two to compare (a sharded set is one checkpoint: "
                     "pass its directory or its .index.json)")
    from . import info as winfo

    bar = _Bar(a.quiet or not a.scan)
    with _naming(a.sources):
        try:
            infos = [winfo.checkpoint_info([s], scan=a.scan, progress=bar) for s in a.sources]
        finally:
            bar.close()
        if len(infos) == 1:
            out: Any = infos[0]
            text = winfo.format_info(infos[0])
        else:
            out = {"a": infos[0], "b": infos[1], "comparison": winfo.compare_info(*infos)}
            text = "\n\n".join([f"A: {printable(a.sources[0])}\n" + winfo.format_info(infos[0]),
                                f"B: {printable(a.sources[1])}\n" + winfo.format_info(infos[1]),
                                "A vs B\n" + winfo.format_compare(out["comparison"])])
        # valid JSON (no NaN), nothing a terminal would run (untrusted.printable_json)
        _say(printable_json(out) if a.json else text)
    return 0


def run() -> None:
    """The console entry point (``weightvis``, ``python -m weightvis``): ``main`` without the
    cyclic garbage collector (a command makes little cyclic garbage; the collector's passes
    over the objects numba creates while loading cost ~0.05-0.1 s, measured), then exit
    without the interpreter's teardown, which spends ~0.12 s unloading numba and LLVM after a
    render (measured); by then every file is closed, and the output is flushed here."""
    gc.disable()
    code = main(_exiting=True)
    with contextlib.suppress(OSError):  # a closed pipe (``| head``) has nothing to flush to
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


@contextlib.contextmanager
def _naming(sources: Sequence[str]) -> Iterator[None]:
    """The last resort: an exception that no reader turned into words (a bug to fix where it
    arises) still ends the run as one line naming the inputs, not a traceback."""
    try:
        yield
    except (WeightvisError, OSError, MemoryError, KeyboardInterrupt, _StdoutClosed):
        raise
    except Exception as e:
        what = str(e) if len(str(e)) <= 200 else str(e)[:197] + "..."
        raise WeightvisError(
            f"{', '.join(sources)}: {_INTERNAL} ({type(e).__name__}: {what}); please report it "
            "(WEIGHTVIS_DEBUG=1 shows where)") from e


_INTERNAL = "internal error"
"""Marks the last resort's messages (the fuzz tests count them as findings)."""


class _Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP: the run stops as on Ctrl-C (every ``finally`` runs, the output is
    cleaned up)."""


_STOPPED_BY: list[int] = []
"""The stop signal this command received, if any: whatever exception then ends the command
is its consequence (a KeyboardInterrupt raised inside an import may come out as an
ImportError), and the command ends as stopped, not as failed."""


def _on_stop(signum: int, frame: Any) -> None:
    from .interrupts import STOP_SIGNALS

    for s in STOP_SIGNALS:  # a second signal must not interrupt the clean-up of the first
        signal.signal(s, signal.SIG_IGN)
    _STOPPED_BY.append(signum)
    # the exception raised here can land inside any object's construction (numba compiling,
    # llvmlite's half-built ObjectRef): freed while the run unwinds, such an object's
    # ``__del__`` fails, and Python prints "Exception ignored in ..." and a traceback. The
    # run is ending as stopped, and says so in one line: those are its noise
    sys.unraisablehook = _quiet_unraisable
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise _Stopped(signum)


def _quiet_unraisable(unraisable: Any) -> None:
    """``sys.unraisablehook`` once a stop signal arrived: says nothing (see ``_on_stop``)."""


@contextlib.contextmanager
def _stop_signals(exiting: bool) -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP stop the command cleanly while the block runs (in the main
    thread; a signal the caller ignores, as under ``nohup``, stays ignored). Afterwards the
    caller's handlers are back, or, when the process ``exiting`` ends with the command, the
    signals are ignored: a late one cannot turn a finished command into a traceback."""
    from .interrupts import STOP_SIGNALS

    _STOPPED_BY.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for s, h in old.items():
        if h is not signal.SIG_IGN:
            signal.signal(s, _on_stop)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, signal.SIG_IGN if exiting else h)


def main(argv: Sequence[str] | None = None, *, _exiting: bool = False) -> int:
    """Run one command; returns its exit code: 0, 2 for an error (one line on stderr),
    130 after Ctrl-C, 128 + the signal's number after SIGTERM (143) or SIGHUP (129)."""
    args = list(sys.argv[1:] if argv is None else argv)
    # the render path does no linear algebra; OpenBLAS's thread pool, started when numpy is
    # first imported, spins for ~0.3 CPU-s on the cores the tile workers need (measured)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # huggingface_hub (imported later, only for hf:// work) logs retries and shows its own
    # bars on stderr; weightvis reports through its one-line errors and its own bar instead
    os.environ.setdefault("HF_HUB_VERBOSITY", "error")
    # warnings (WeightvisWarning: an optional file ignored; and any other) are shown after a
    # successful run only, ours as ``weightvis: warning: ...`` lines: a failed run says one
    # line, its error
    unraisable_hook = sys.unraisablehook  # (``_on_stop`` may replace it)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", WeightvisWarning)
        try:
            with _stop_signals(_exiting):
                code = _main(args)
        except BaseException as e:  # noqa: BLE001 - every way a command ends becomes an exit code
            code = _ending(e)
    if not _exiting:  # (the run's frames are freed by now; an exiting process keeps it)
        sys.unraisablehook = unraisable_hook
    for w in caught if code == 0 else ():
        if issubclass(w.category, WeightvisWarning):
            print(f"weightvis: warning: {printable(str(w.message))}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno, w.file, w.line)
    return code


def _main(args: list[str]) -> int:
    if args and args[0] == "demo":
        return _run_demo(args[1:])
    if args and args[0] == "info":
        return _run_info(args[1:])
    if args and args[0] == "diff":
        return _run_diff(args[1:])
    if args and args[0] == "publish":
        return _run_publish(args[1:])
    if args and args[0] == "moe":
        return _run_render(args[1:], moe_only=True)
    if "--moe" in args:  # also spelled: weightvis --moe SRC --out DIR
        return _run_render([x for x in args if x != "--moe"], moe_only=True)
    if "--diff" in args:  # the seed's spelling: weightvis --diff A B --out DIR
        i = args.index("--diff")
        if len(args) < i + 3:
            print("weightvis: error: --diff takes two checkpoints: --diff A B", file=sys.stderr)
            return 2
        return _run_diff(args[i + 1:i + 3] + args[:i] + args[i + 3:])
    return _run_render(args)


def _ending(e: BaseException) -> int:
    """The exit code of a command that ended by ``e`` (raised again where it is not ours to
    turn into words), after one line on stderr."""
    if isinstance(e, _StdoutClosed):
        # the reader of the output stopped (| head): nothing to say, and nothing left to flush
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if _STOPPED_BY or isinstance(e, KeyboardInterrupt):
        signum = _STOPPED_BY[0] if _STOPPED_BY else int(signal.SIGINT)
        interrupted = signum == signal.SIGINT
        print(f"weightvis: {'interrupted' if interrupted else 'terminated'}", file=sys.stderr)
        return 130 if interrupted else 128 + signum
    if isinstance(e, MemoryError):
        print("weightvis: error: out of memory", file=sys.stderr)
        return 2
    if isinstance(e, SystemExit) or os.environ.get("WEIGHTVIS_DEBUG"):
        raise e
    if isinstance(e, WeightvisError):
        print(f"weightvis: error: {printable(str(e))}", file=sys.stderr)
        return 2
    if isinstance(e, OSError):  # disk full, permission denied, ... while writing
        where = f"{e.filename}: " if e.filename else ""
        print(f"weightvis: error: {printable(f'{where}{e.strerror or e}')}", file=sys.stderr)
        return 2
    raise e
