"""What the safetensors and GGUF fuzz targets share: one case run in this process (``info``,
``info --json``, a ``--workers 1`` render, each under a wall-clock alarm) or through
``run_cli`` (``--workers 2``, memory bounded too), and the promises checked on the outcome.

In-process promises, beyond ``common.broken_promise``'s: no exception escapes ``cli.main``; exit 0
or 2; on exit 2 one ``weightvis: error:`` line that is not the last resort's ``internal error``
(an error no reader turned into words is a finding) and no output folder; on exit 0 only
``weightvis: warning:`` lines on stderr, ``info --json`` and ``manifest.json`` valid JSON (no
NaN); no raw control character on stdout or stderr.
"""

from __future__ import annotations

import os
import shutil
import stat
import traceback
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from ..trust_fixtures import Overtime, Ran, run_main, strict_json
from .common import CRASHES, broken_promise, run_cli

CASE_SECONDS = 30.0
"""Wall-clock bound of one in-process command (numba compiles the kernels on the first
render: that one takes a few seconds)."""

class Verdict(NamedTuple):
    problem: str | None
    """A broken promise (the case fails), or None."""
    rendered: bool = False
    """The render exited 0 (the input was accepted)."""


def _raw_controls(text: str) -> bool:
    return any((ord(c) < 32 and c != "\n") or 0x7F <= ord(c) < 0xA0 or c == "\u202e"
               for c in text)


def judge(args: Sequence[str], r: Ran, out: Path | None) -> Verdict:
    """The promises for one in-process command's outcome ``r`` (``out``: its bundle folder)."""
    if r.code not in (0, 2):
        return Verdict(f"exit {r.code}: {r.stderr[-500:]!r}")
    if _raw_controls(r.stdout) or _raw_controls(r.stderr):
        return Verdict(f"raw control character: {ascii((r.stdout + r.stderr)[-500:])}")
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    if r.code == 2:
        if len(lines) != 1 or not lines[0].startswith("weightvis: error: "):
            return Verdict(f"not one error line: {r.stderr[-500:]!r}")
        if "internal error" in lines[0]:
            return Verdict(f"last resort: {lines[0][:500]}")
        if out is not None and out.exists():
            return Verdict("a failed render left its output folder")
        return Verdict(None)
    if any(not ln.startswith("weightvis: warning: ") for ln in lines):
        return Verdict(f"stderr on success: {r.stderr[-500:]!r}")
    try:
        if "--json" in args:
            strict_json(r.stdout)
        if out is not None:
            strict_json((out / "manifest.json").read_text("utf-8"))
    except (OSError, ValueError) as e:
        return Verdict(f"invalid JSON output: {e}")
    return Verdict(None)


VARIANTS: list[tuple[list[str], list[str]]] = [
    ([], []), ([], []), (["--scan", "-q"], ["--layout", "hilbert"]),
    ([], ["--layout", "hilbert", "--hilbert-unit", "byte"]), ([], ["--scale", "global"])]
"""Options of ``info`` and of the render a case may take (the plain ones most often)."""


def run_in_process(src: Path, work: Path, *, render: bool = True, variant: int = 0) -> Verdict:
    """``info``, ``info --json`` and (``render``) a ``--workers 1`` render of ``src``, with the
    options of ``VARIANTS[variant]``."""
    info_opts, render_opts = VARIANTS[variant]
    commands: list[tuple[list[str], Path | None]] = [
        (["info", *info_opts, str(src)], None), (["info", "--json", str(src)], None)]
    if render:
        out = work / "bundle"
        commands.append(([str(src), "--out", str(out), "--workers", "1", "-q", *render_opts],
                         out))
    for args, out_dir in commands:
        try:
            r = run_main(args, seconds=CASE_SECONDS)
        except Overtime:
            return Verdict(f"{args[:2]}: still running after {CASE_SECONDS} s")
        except BaseException as e:  # noqa: BLE001 (anything escaping main breaks the promise)
            tb = "".join(traceback.format_exception(e))[-1500:]
            return Verdict(f"{args[:2]}: {type(e).__name__} escaped cli.main:\n{tb}")
        v = judge(args, r, out_dir)
        if v.problem is not None:
            return Verdict(f"{args[:2]}: {v.problem}")
        if out_dir is not None:
            shutil.rmtree(out_dir, ignore_errors=True)
    return Verdict(None, render and r.code == 0)


def run_subprocess(src: Path, work: Path) -> Verdict:
    """``info`` and a ``--workers 2`` render in a subprocess (``common.broken_promise``, and
    the in-process checks of the last resort and of the output folder)."""
    for args, out in ((["info", str(src)], None),
                      ([str(src), "--out", str(work / "bundle"), "--workers", "2", "-q"],
                       work / "bundle")):
        o = run_cli(args)
        problem = broken_promise(o)
        if problem is not None:
            return Verdict(f"{args[:2]}: {problem}")
        v = judge(args, Ran(o.returncode or 0, o.stdout, o.stderr), out)
        if v.problem is not None:
            return Verdict(f"{args[:2]}: {v.problem}")
        if out is not None:
            shutil.rmtree(out, ignore_errors=True)
    return Verdict(None, o.returncode == 0)


def keep(target: str, label: str, src: Path) -> Path:
    """Copy a failing input (file or folder) under ``tests/fuzz/crashes/``."""
    CRASHES.mkdir(exist_ok=True)
    dest = CRASHES / f"{target}-{label}{src.suffix if src.is_file() else ''}"
    if src.is_dir():
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(src, dest, symlinks=True, copy_function=_copy)
    else:
        shutil.copyfile(src, dest)
    return dest


def _copy(src: str, dst: str) -> None:
    """``shutil.copy2``, but a FIFO is made anew (copying one would block on reading it)."""
    if stat.S_ISFIFO(os.lstat(src).st_mode):
        os.mkfifo(dst)
    else:
        shutil.copy2(src, dst)


class Tally:
    """Counts of a campaign, reported at its end."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, key: str) -> None:
        self.counts[key] += 1

    def __str__(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
