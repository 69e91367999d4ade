#!/usr/bin/env python3
"""Palette-PNG encoder benchmark: weightvis.png (numba, RLE-only deflate) against Pillow.

For 512x512 palette-index tiles of three kinds, times one encode per tile on one core and prints
the median over ``--runs`` repetitions (the encoders are interleaved within each repetition, so
load from other processes hits them alike) and the PNG size:

- ``noise``: four tiles of Gaussian values through weightvis's sqrt transfer (index 129 +- q,
  scale = the 99.9th percentile of |v|, as ``weightvis.values`` picks it);
- ``real``: max-zoom tiles of the demo bundle (``python -m weightvis demo``; rendered once into
  ``--demo-dir`` if missing), read back with Pillow as uint8 indices;
- ``half``: the noise tiles with their left half set to padding (index 0).

    python benchmarks/png_bench.py --runs 30
    python benchmarks/png_bench.py --block-sizes 32768,65536,262144,1048576

Encoders: ``weightvis`` = ``weightvis.png.encode_png_palette``; ``pillow-rle1`` = Pillow
``save(format="PNG", compress_level=1, compress_type=zlib.Z_RLE)`` (what ``weightvis.encode``
used); ``pillow-0`` = Pillow ``compress_level=0`` (stored, no compression).
"""

from __future__ import annotations

import argparse
import gc
import glob
import io
import os
import platform
import statistics
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import PIL
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from weightvis import color, png  # noqa: E402

TILE = 512
Encoder = Callable[[np.ndarray], bytes]


def noise_tile(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((TILE, TILE))
    s = float(np.quantile(np.abs(v), 0.999))
    q = np.floor(color.LEVELS * np.sqrt(np.minimum(np.abs(v) / s, 1.0)) + 0.5).astype(np.int64)
    return np.where(v > 0, color.ZERO + q, color.ZERO - q).astype(np.uint8)


def real_tiles(demo_dir: Path, count: int) -> list[np.ndarray]:
    tiles_root = demo_dir / "tiles" / "main"
    if not tiles_root.is_dir():
        print(f"rendering the demo bundle into {demo_dir} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "weightvis", "demo", "--out", str(demo_dir),
                        "--overwrite", "--quiet"], check=True, cwd=REPO_ROOT)
    zmax = max(int(p.name) for p in tiles_root.iterdir() if p.name.isdigit())
    files = sorted(glob.glob(str(tiles_root / str(zmax) / "*" / "*.png")))
    tiles = []
    for f in files:
        with Image.open(f) as im:
            a = np.asarray(im)
        if a.shape == (TILE, TILE) and a.dtype == np.uint8:
            tiles.append(a)
    if not tiles:
        raise SystemExit(f"no {TILE}x{TILE} tiles under {tiles_root / str(zmax)}")
    pick = np.linspace(0, len(tiles) - 1, min(count, len(tiles))).round().astype(int)
    return [tiles[i] for i in sorted(set(pick.tolist()))]


def pillow(level: int, palette: bytes) -> Encoder:
    def enc(idx: np.ndarray) -> bytes:
        img = Image.frombuffer("P", (idx.shape[1], idx.shape[0]), np.ascontiguousarray(idx),
                               "raw", "P", 0, 1)
        img.putpalette(palette)
        buf = io.BytesIO()
        img.save(buf, "PNG", compress_level=level, compress_type=zlib.Z_RLE)
        return buf.getvalue()
    return enc


def ours(palette: bytes, block_bytes: int = png.BLOCK_BYTES) -> Encoder:
    return lambda idx: png.encode_png_palette(idx, palette, block_bytes=block_bytes)


def check(enc: Encoder, tiles: list[np.ndarray]) -> None:
    for t in tiles:
        with Image.open(io.BytesIO(enc(t))) as im:
            if not np.array_equal(np.asarray(im), t):
                raise SystemExit("round trip failed")


def measure(encoders: dict[str, Encoder], cases: dict[str, list[np.ndarray]],
            runs: int) -> dict[tuple[str, str], tuple[float, float]]:
    """(case, encoder) -> (median ms per tile, mean bytes per tile)."""
    res = {}
    for case, tiles in cases.items():
        sizes = {name: sum(len(enc(t)) for t in tiles) / len(tiles)  # also warms up
                 for name, enc in encoders.items()}
        times: dict[str, list[float]] = {name: [] for name in encoders}
        gc.disable()
        try:
            for _ in range(runs):
                for name, enc in encoders.items():
                    t0 = time.perf_counter()
                    for t in tiles:
                        enc(t)
                    times[name].append((time.perf_counter() - t0) / len(tiles))
        finally:
            gc.enable()
        for name in encoders:
            res[(case, name)] = (statistics.median(times[name]) * 1e3, sizes[name])
    return res


def machine_line() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy "
            f"{np.__version__}, Pillow {PIL.__version__}, zlib {zlib.ZLIB_RUNTIME_VERSION}, "
            f"load avg {load:.2f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=30, help="repetitions per case (>= 20)")
    ap.add_argument("--real-tiles", type=int, default=16, help="demo tiles to use (spread)")
    ap.add_argument("--demo-dir", type=Path, default=Path("/tmp/pngdemo"))
    ap.add_argument("--block-sizes", type=str, default="",
                    help="comma-separated block_bytes to compare (weightvis only)")
    args = ap.parse_args(argv)
    if args.runs < 20:
        ap.error("--runs must be >= 20")
    palette = color.palette_bytes(color.value_palette())
    png.warm_up()
    noise = [noise_tile(seed) for seed in range(4)]
    half = [t.copy() for t in noise]
    for t in half:
        t[:, : TILE // 2] = 0
    cases = {"noise": noise, "real": real_tiles(args.demo_dir, args.real_tiles), "half": half}
    if args.block_sizes:
        encoders = {f"block {b}": ours(palette, int(b)) for b in args.block_sizes.split(",")}
        encoders["pillow-rle1"] = pillow(1, palette)
    else:
        encoders = {"weightvis": ours(palette), "pillow-rle1": pillow(1, palette),
                    "pillow-0": pillow(0, palette)}
    for name, enc in encoders.items():
        if not name.startswith("pillow"):
            check(enc, [t for ts in cases.values() for t in ts])
    print(f"# {machine_line()}")
    print(f"# {TILE}x{TILE} tiles, median of {args.runs} runs, one core; tiles per case: "
          + ", ".join(f"{k} {len(v)}" for k, v in cases.items()) + " (ms and bytes per tile)")
    res = measure(encoders, cases, args.runs)
    ref = "pillow-rle1"
    head = f"| {'case':6} | {'encoder':14} | {'ms/tile':>8} | {'Mpx/s':>7} | {'bytes':>9} | " \
           f"{'size vs rle1':>12} | {'speed vs rle1':>13} |"
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for case in cases:
        for name in encoders:
            ms, size = res[(case, name)]
            rms, rsize = res[(case, ref)]
            print(f"| {case:6} | {name:14} | {ms:8.3f} | {TILE * TILE / ms / 1e3:7.1f} | "
                  f"{size:9.0f} | {100 * (size / rsize - 1):+11.2f}% | {rms / ms:12.2f}x |")
    print(f"# load avg after: {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
