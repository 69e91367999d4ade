"""The bundle's expected size and the early refusal when the destination can't hold it
(weightvis/disk.py): on a real 1 MB tmpfs, with an injected free-space function, and the
estimate against the bytes a render really writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

import weightvis
from weightvis import disk
from weightvis.cli import main

# the trust tests' checkpoint writer, ``small`` (6 x 700 x 600 f32: 10 MB of values, which the
# sidecars hold) and ``tiny_disk`` (a real 1 MB tmpfs)
from .test_trust_outputs import _write, small, tiny_disk  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 x 1500 x 1500 f16 past the values limit we give it (index sidecars)."""
    return _write(tmp_path_factory.mktemp("wide") / "w.safetensors", 8, 1500, 1500,
                  np.float16, 6)


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("which, values", [("small", "auto"), ("wide", "index"),
                                          ("wide", "none")])
def test_the_estimate_is_within_a_quarter_of_the_bundle(
        which: str, values: str, request: pytest.FixtureRequest, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from weightvis import bundle

    src = request.getfixturevalue(which)
    made: list[int] = []

    def spy(plan: Any) -> int:
        made.append(disk.estimate_bytes(plan))
        return made[-1]

    monkeypatch.setattr(bundle, "estimate_bytes", spy)
    said: list[str] = []
    out = tmp_path / "b"
    weightvis.render([src], out, workers=1, values=values,  # type: ignore[arg-type]
                     notice=said.append)
    actual = _bytes(out)
    [line] = said
    [estimate] = made
    assert line.startswith(f"expected bundle size: about {disk.human_bytes(estimate)} (")
    assert 0.8 <= estimate / actual <= 1.25, (estimate, actual)


def test_refused_before_any_tile_when_the_free_space_is_short(
        small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    asked: list[str] = []

    def free(path: str) -> int:
        asked.append(path)
        return 1_000_000

    monkeypatch.setattr(disk, "_free", free)
    out = tmp_path / "new" / "bundle"
    assert main([str(small), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"weightvis: error: {out}: the bundle needs about ")
    assert f"and {out.parent} has 1.0 MB free;" in err[0] and "--no-space-check" in err[0]
    assert asked == [str(out.parent)]
    assert not (tmp_path / "new").exists()  # nothing left: not even the parent it made


def test_enough_space_renders_and_no_space_check_skips_the_question(
        small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[str] = []
    monkeypatch.setattr(disk, "_free", lambda p: calls.append(p) or 10**12)
    assert main([str(small), "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "weightvis: expected bundle size: about " in err and "1.0 TB free in" in err
    assert calls == [str(tmp_path)]
    monkeypatch.setattr(disk, "_free", lambda p: 0)
    assert main([str(small), "--out", str(tmp_path / "b"), "-q", "--no-space-check"]) == 0
    assert (tmp_path / "b" / "index.html").exists()


def test_a_killed_runs_staging_counts_as_free(tmp_path: Path) -> None:
    from weightvis.errors import OutputError
    from weightvis.store import StagedFolderStore

    stage = tmp_path / ".b.weightvis-staging"
    (stage / "tiles").mkdir(parents=True)
    (stage / "tiles" / "x.png").write_bytes(b"x" * 5000)
    store = StagedFolderStore(tmp_path / "b")
    try:
        real = disk._free
        disk._free = lambda p: 6000  # type: ignore[assignment]
        try:
            assert store.space(11_000) == (tmp_path, 6000)
            with pytest.raises(OutputError, match="has 11.0 kB free"):
                store.space(11_001)
        finally:
            disk._free = real  # type: ignore[assignment]
    finally:
        store.close()


def test_a_real_small_file_system_is_refused_at_once(small: Path, tiny_disk: Path) -> None:
    out = tiny_disk / "a" / "bundle"
    r = subprocess.run([sys.executable, "-m", "weightvis", str(small), "--out", str(out),
                        "--workers", "2"], capture_output=True, text=True, env=ENV, timeout=120)
    err = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("weightvis: error")]
    assert r.returncode == 2 and len(err) == 1, r.stderr
    assert err[0].startswith(f"weightvis: error: {out}: the bundle needs about ")
    free = disk.human_bytes(os.statvfs(tiny_disk).f_bavail * os.statvfs(tiny_disk).f_frsize)
    assert f"and {out.parent} has {free} free" in err[0]
    assert "tiles" not in r.stderr  # refused before the tiles: no tile progress was shown
    assert list(tiny_disk.iterdir()) == []


def test_a_diffs_estimate_is_an_upper_bound(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Unchanged tensors' deltas compress to almost nothing: for a diff the estimate is an
    upper bound (measured 1.2-2.7x on half-changed pairs), never far below."""
    from weightvis import bundle

    rng = np.random.default_rng(3)
    a = {f"model.layers.{i}.mlp.up_proj.weight":
         rng.standard_normal((900, 700)).astype(np.float16) for i in range(4)}
    b = {k: v + np.float16(0.01) * rng.standard_normal(v.shape).astype(np.float16)
         if i % 2 else v for i, (k, v) in enumerate(a.items())}
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file(b, str(tmp_path / "b.safetensors"))
    made: list[int] = []
    monkeypatch.setattr(bundle, "estimate_bytes",
                        lambda plan: made.append(disk.estimate_bytes(plan)) or made[-1])
    out = tmp_path / "d"
    weightvis.render_diff([tmp_path / "a.safetensors"], [tmp_path / "b.safetensors"], out,
                          workers=1, scenes=("delta", "a", "b"))
    [estimate] = made
    actual = _bytes(out)
    assert actual <= estimate <= 3 * actual, (estimate, actual)
