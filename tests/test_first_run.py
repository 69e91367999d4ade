"""A first run: numba's kernels compile in background processes while the checkpoint is read and
the plan made, the wait is a named progress stage, and the bundle is the same as without it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from weightvis import compiling


def _record(path: Path):  # type: ignore[no-untyped-def]
    def warm(group: str) -> None:
        with open(path, "a") as f:
            f.write(group + "\n")
    return warm


def test_background_groups_run_once_each_and_tick(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "groups.txt"
    monkeypatch.setattr(compiling, "_cached", lambda group: group == "reduce")
    monkeypatch.setattr(compiling, "_warm", _record(log))  # the forked processes inherit it
    monkeypatch.delenv("WEIGHTVIS_BACKGROUND_COMPILE", raising=False)
    ticks: list[tuple[str, int, int]] = []
    compiling.start(delta=True)
    compiling.start(delta=True)  # already running: no second set of processes
    compiling.wait(lambda stage, n, total: ticks.append((stage, n, total)))
    done = sorted(log.read_text().split())
    assert done == ["codes", "codes-small", "delta", "png", "values"]  # uncached, each once
    assert ticks[0] == (compiling.COMPILE_STAGE, 0, 5)
    assert sum(n for _, n, _ in ticks) == 5 and {t for _, _, t in ticks} == {5}
    assert not compiling._running
    compiling.wait(lambda *a: ticks.append(a))  # nothing running: no stage shown
    assert len(ticks) == 6


def test_groups_a_run_does_not_need_are_deferred(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """``needed``: the other uncached groups compile neither in the background nor before the
    workers fork (warm_all); cached ones still load; the next start() without ``needed``
    defers nothing."""
    log = tmp_path / "groups.txt"
    monkeypatch.setattr(compiling, "_cached", lambda group: group == "values")
    monkeypatch.setattr(compiling, "_warm", _record(log))
    monkeypatch.delenv("WEIGHTVIS_BACKGROUND_COMPILE", raising=False)
    compiling.start(needed=("png", "codes"))
    compiling.start()  # render() after the demo's start: changes nothing until wait()
    compiling.wait()
    assert sorted(log.read_text().split()) == ["codes", "png"]
    warmed: list[str] = []
    monkeypatch.setattr(compiling, "warm", warmed.append)
    compiling.warm_all()
    assert warmed == ["png", "codes", "values"]  # not reduce, codes-small (uncached, unneeded)
    monkeypatch.setenv("WEIGHTVIS_BACKGROUND_COMPILE", "0")
    compiling.start()
    compiling.wait()
    warmed.clear()
    compiling.warm_all()
    assert warmed == ["png", "reduce", "codes", "codes-small", "values"]
    with pytest.raises(ValueError, match="unknown kernel groups"):
        compiling.start(needed=("pngg",))


def test_no_background_when_cached_or_disabled(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "groups.txt"
    monkeypatch.setattr(compiling, "_warm", _record(log))
    monkeypatch.setattr(compiling, "_cached", lambda group: True)
    compiling.start()
    assert not compiling._running
    compiling.wait()
    monkeypatch.setattr(compiling, "_cached", lambda group: False)
    monkeypatch.setenv("WEIGHTVIS_BACKGROUND_COMPILE", "0")
    compiling.start()
    assert not compiling._running and not log.exists()
    compiling.wait()


def _sidecar_streams(path: Path) -> list[bytes]:
    """The decompressed zlib streams of a sidecar script (palette indices, value planes)."""
    import base64
    import json
    import zlib

    text = path.read_text("ascii")
    doc = json.loads(text[text.index("(") + 1:text.rindex(")")])
    streams = [doc["index"]] + ([doc["values"]["data"]] if "values" in doc else [])
    return [zlib.decompress(base64.b64decode(s)) for s in streams]


def test_zlib_deflate_renders_the_same_bundle_but_for_compression(tmp_path: Path) -> None:
    """``png_deflate="zlib"`` (the demo's): every tile decodes to the same palette indices and
    every sidecar to the same rows as with weightvis's deflate; the manifests are equal."""
    import numpy as np
    from PIL import Image

    import weightvis

    from .conftest_viewer import write_tiny_checkpoint

    ckpt = write_tiny_checkpoint(tmp_path / "model.safetensors")
    a = weightvis.render([ckpt], tmp_path / "rle", workers=1, values="values")
    b = weightvis.render([ckpt], tmp_path / "zlib", workers=1, values="values",
                         png_deflate="zlib")
    assert a.manifest == b.manifest
    files = sorted(p.relative_to(tmp_path / "rle") for p in (tmp_path / "rle").rglob("*")
                   if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "zlib")
                           for p in (tmp_path / "zlib").rglob("*") if p.is_file())
    tiles = [f for f in files if f.suffix == ".png"]
    sidecars = [f for f in files if f.suffix == ".js" and f.parts[0] == "tiles"]
    assert tiles and sidecars
    for f in tiles:
        pa, pb = (Image.open(tmp_path / side / f) for side in ("rle", "zlib"))
        assert np.array_equal(np.asarray(pa), np.asarray(pb)) and pa.getpalette() == \
            pb.getpalette(), f
    for f in sidecars:
        assert _sidecar_streams(tmp_path / "rle" / f) == _sidecar_streams(tmp_path / "zlib" / f)
    with pytest.raises(ValueError, match="png_deflate"):
        weightvis.render([ckpt], tmp_path / "bad", png_deflate="gzip")  # type: ignore[arg-type]


def test_a_failing_group_leaves_the_compile_to_first_use(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def warm(group: str) -> None:
        if group == "png":
            os._exit(3)  # the process dies mid-compile
    monkeypatch.setattr(compiling, "_cached", lambda group: False)
    monkeypatch.setattr(compiling, "_warm", warm)
    monkeypatch.delenv("WEIGHTVIS_BACKGROUND_COMPILE", raising=False)
    compiling.start()
    compiling.wait()  # returns (does not hang on the dead process)
    assert not compiling._running


@pytest.mark.slow
def test_first_demo_speaks_and_second_is_quiet(tmp_path: Path) -> None:
    """With an empty numba cache the demo says it compiles; with the cache filled it does not;
    both bundles are identical to one rendered without background compiling."""
    env = {k: v for k, v in os.environ.items() if k != "WEIGHTVIS_DEBUG"}
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "numba")

    def demo(out: str, **extra: str) -> str:
        res = subprocess.run([sys.executable, "-m", "weightvis", "demo", "--out",
                              str(tmp_path / out), "--workers", "2"],
                             capture_output=True, text=True, env={**env, **extra}, timeout=900)
        assert res.returncode == 0, res.stderr
        return res.stderr

    first = demo("a")
    assert compiling.COMPILE_STAGE in first and "generating the demo checkpoint" in first
    # the groups the demo defers were not needed: no tile compiled them on first use
    cached = {f.name.split("-")[0] for f in (tmp_path / "numba").rglob("*.nbi")}
    assert "values._colorize_blocks" in cached and "reduce._reduce_signed_rms" in cached, cached
    for kernel in ("values._colorize_codes_sorted", "values._accumulate_stats",
                   "deflate._deflate_rle", "deflate._filter_rows"):  # the demo's PNGs: zlib
        assert kernel not in cached, kernel
    assert compiling.COMPILE_STAGE not in demo("b")
    demo("c", WEIGHTVIS_BACKGROUND_COMPILE="0")
    for out in ("b", "c"):
        for f in sorted((tmp_path / "a").rglob("*")):
            if f.is_file():
                assert f.read_bytes() == (tmp_path / out / f.relative_to(tmp_path / "a"))\
                    .read_bytes(), f
