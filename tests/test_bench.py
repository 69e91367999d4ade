"""The benchmark script end to end on a tiny checkpoint: its numbers are consistent with each
other, every measured run is repeated, and it leaves no output behind."""

from __future__ import annotations

import array
import fcntl
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"


@pytest.mark.slow
def test_bench_small_run_is_consistent(tmp_path: Path) -> None:
    if importlib.util.find_spec("pyvips") is None or importlib.util.find_spec("psutil") is None:
        pytest.skip("the bench extra (pyvips, psutil) is not installed")
    out = tmp_path / "r.json"
    res = subprocess.run([sys.executable, str(BENCH), "--params", "2e7", "--cache-dir",
                          str(tmp_path / "cache"), "--repeat", "2", "--wait-idle", "0",
                          "--out-json", str(out)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    r = json.loads(out.read_text())
    el = r["checkpoint"]["elements"]
    assert abs(el - 2e7) / 2e7 < 0.05
    for case in ("weightvis", "diff"):
        w = r[case]
        assert w["ok"] and len(w["wall_s_all"]) == 2 and w["wall_s"] == min(w["wall_s_all"])
        assert w["elements_per_s"] == pytest.approx(el / w["wall_s"], rel=1e-12)
        assert w["output_tiles"] > 0 and w["output_bytes"] > 0
        assert 0 < w["peak_rss_sum_bytes"] < 4 << 30
    assert len({w for w in r["weightvis"]["wall_s_all"]}) == 2  # two runs, not one reported twice
    v = r["vips"]
    assert v["ok"] and len(v["dzsave_s_all"]) == 2 and v["dzsave_s"] == min(v["dzsave_s_all"])
    assert v["pixels"] >= el and v["width"] % 512 == 0 and v["pixels"] - el < v["width"]
    assert v["px_per_s"] == pytest.approx(v["pixels"] / v["dzsave_s"], rel=1e-12)
    assert r["vips_ratio"] == pytest.approx(r["weightvis"]["elements_per_s"] / v["px_per_s"])
    assert r["diff_ratio"] == pytest.approx(r["diff"]["wall_s"] / r["weightvis"]["wall_s"])
    runs = tmp_path / "cache" / "runs"
    assert runs.is_dir() and not list(runs.iterdir())  # every output removed at the end


def test_spread_subfolders_sets_the_topdir_attribute_where_it_exists(tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCH.parent))
    try:
        from bench import spread_subfolders
    finally:
        sys.path.remove(str(BENCH.parent))
    d = tmp_path / "runs"
    d.mkdir()
    spread_subfolders(d)  # never raises, whatever the filesystem
    spread_subfolders(tmp_path / "missing")
    flags = array.array("i", [0])
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, 0x80086601, flags, True)  # FS_IOC_GETFLAGS
    except OSError:
        pytest.skip("this filesystem has no inode flags")
    finally:
        os.close(fd)
    if Path("/proc/mounts").exists() and _fs_type(d) in ("ext2", "ext3", "ext4"):
        assert flags[0] & 0x00020000  # FS_TOPDIR_FL


def _fs_type(path: Path) -> str:
    best, kind = "", ""
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mnt, fs, *_ = line.split()
        if str(path.resolve()).startswith(mnt) and len(mnt) > len(best):
            best, kind = mnt, fs
    return kind
