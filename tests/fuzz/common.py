"""What every fuzz target shares: the campaign size, byte mutators, and a CLI runner that checks
the promises (exit 0 or 2, at most one line on stderr, no traceback, no hang, bounded memory).

Campaign size: each target runs its own bounded default in CI (a fixed seed, a few minutes in
all). ``WEIGHTVIS_FUZZ_CASES=N`` runs N cases per target instead and ``WEIGHTVIS_FUZZ_SEED=S``
changes the seed (the long mode of the README). A failing case is saved under
``tests/fuzz/crashes/`` and named in the assertion; once fixed, it is moved into
``tests/fuzz/corpus/<target>/`` where ``test_corpus.py`` replays it forever.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

FUZZ_DIR = Path(__file__).resolve().parent
CORPUS = FUZZ_DIR / "corpus"
CRASHES = FUZZ_DIR / "crashes"

SEED = int(os.environ.get("WEIGHTVIS_FUZZ_SEED", "20261130"))
RSS_LIMIT = 2 << 30
TIMEOUT_S = 60.0


def cases(default: int) -> int:
    """How many cases a target runs: its bounded CI default, or ``WEIGHTVIS_FUZZ_CASES``."""
    return int(os.environ.get("WEIGHTVIS_FUZZ_CASES", default))


def rng_for(target: str) -> np.random.Generator:
    """A generator per target, fixed by the campaign seed and the target's name."""
    return np.random.default_rng([SEED, *target.encode()])


INTERESTING_INTS = [0, 1, 2, 7, 8, 127, 128, 255, 256, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000,
                    0xFFFFFFFF, 1 << 32, (1 << 63) - 1, 1 << 63, (1 << 64) - 1]


def mutate(data: bytes, rng: np.random.Generator, *, protect: int = 0) -> bytes:
    """One to four random generic mutations of ``data``: bit flips, interesting bytes and
    little-endian integers, insertions, deletions, duplicated chunks, truncation. The first
    ``protect`` bytes (a magic number) are left alone, so the file still reaches the parser."""
    buf = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        n = len(buf)
        lo = min(protect, n)
        at = int(rng.integers(lo, n)) if n > lo else lo
        kind = int(rng.integers(0, 8))
        if kind == 0 and n > lo:
            buf[at] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1 and n > lo:
            buf[at] = int(rng.choice([0, 1, 0x7F, 0x80, 0xFF, ord("9"), ord('"'), ord("[")]))
        elif kind == 2:
            width = int(rng.choice([2, 4, 8]))
            value = int(rng.choice(INTERESTING_INTS)) & ((1 << (8 * width)) - 1)
            buf[at:at + width] = value.to_bytes(width, "little")
        elif kind == 3:
            buf[at:at] = rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8).tobytes()
        elif kind == 4 and n > lo:
            del buf[at:at + int(rng.integers(1, 64))]
        elif kind == 5 and n > lo:
            chunk = bytes(buf[at:at + int(rng.integers(1, 256))])
            to = int(rng.integers(lo, n + 1))
            buf[to:to] = chunk
        elif kind == 6 and n > lo:
            del buf[int(rng.integers(lo, n)):]
        elif kind == 7 and n > lo:  # ASCII digits grow a number: "12" -> "12999999"
            buf[at:at] = b"9" * int(rng.integers(1, 24))
    return bytes(buf)


@dataclass(frozen=True)
class Outcome:
    args: tuple[str, ...]
    returncode: int | None
    stdout: str
    stderr: str
    wall_s: float
    peak_rss: int
    timed_out: bool


def run_cli(args: list[str], *, timeout: float = TIMEOUT_S, rss_limit: int = RSS_LIMIT,
            cwd: Path | None = None, env: dict[str, str] | None = None) -> Outcome:
    """``python -m weightvis ARGS`` in a subprocess, its process tree's RSS sampled; killed (tree
    and all) past ``timeout`` seconds or ``rss_limit`` bytes."""
    full_env = {**os.environ, **(env or {})}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "weightvis", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env,
                            start_new_session=True)
    peak = 0
    killed = False
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [ps, *ps.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        if time.perf_counter() - t0 > timeout or peak > rss_limit:
            killed = True
            _kill_group(proc)
            break
        time.sleep(0.02)
    out, err = proc.communicate()
    return Outcome(tuple(args), None if killed else proc.returncode,
                   out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                   time.perf_counter() - t0, peak, killed)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    import signal
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def broken_promise(o: Outcome, *, rss_limit: int = RSS_LIMIT) -> str | None:
    """What the run did that weightvis promises never to do, or None."""
    if o.timed_out:
        return f"killed after {o.wall_s:.1f} s at {o.peak_rss / 2**20:.0f} MiB (hang or budget)"
    if o.peak_rss > rss_limit:
        return f"peak RSS {o.peak_rss / 2**20:.0f} MiB"
    if o.returncode not in (0, 2):
        return f"exit {o.returncode}: {o.stderr[-2000:]}"
    if "Traceback" in o.stderr or "Traceback" in o.stdout:
        return f"traceback: {o.stderr[-2000:]}"
    if o.returncode == 2:
        lines = [ln for ln in o.stderr.splitlines() if ln.strip()]
        if len(lines) != 1 or not lines[0].startswith("weightvis: "):
            return f"not one error line: {o.stderr[-2000:]!r}"
    return None


def keep_crash(target: str, label: str, data: bytes, suffix: str) -> Path:
    """Save a failing input under ``tests/fuzz/crashes/`` and return its path."""
    CRASHES.mkdir(exist_ok=True)
    path = CRASHES / f"{target}-{label}{suffix}"
    path.write_bytes(data)
    return path


def scratch(prefix: str = "wv-fuzz-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
