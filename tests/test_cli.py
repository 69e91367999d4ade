"""The command line as a user meets it: exit codes, one-line errors naming the file, nothing
half-written, nothing of the user's overwritten."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from .conftest import real_checkpoint


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "WEIGHTVIS_DEBUG"}
    return subprocess.run([sys.executable, "-m", "weightvis", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=600)


def assert_clean_failure(res: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert res.returncode == 2, res
    assert "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("weightvis: error: "), res.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


def _bad_files(d: Path) -> dict[str, tuple[Path, str]]:
    good = d / "good.safetensors"
    save_file({"w": np.ones((4, 4), np.float32)}, str(good))
    raw = good.read_bytes()
    cases: dict[str, tuple[Path, str]] = {}

    def put(name: str, data: bytes, needle: str) -> None:
        p = d / f"{name}.safetensors"
        p.write_bytes(data)
        cases[name] = (p, needle)

    put("truncated", raw[:-10], "'w'")
    put("header-past-eof", struct.pack("<Q", 99999) + raw[8:40], "header length 99999")
    hdr = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}).encode()
    put("overlap", struct.pack("<Q", len(hdr)) + hdr + b"\0" * 12, "overlaps")
    hdr = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [100, 108]}}).encode()
    put("out-of-range", struct.pack("<Q", len(hdr)) + hdr + b"\0" * 8, "'w'")
    hdr = json.dumps({"w": {"dtype": "Q4_X", "shape": [2], "data_offsets": [0, 2]}}).encode()
    put("unknown-dtype", struct.pack("<Q", len(hdr)) + hdr + b"\0" * 2, "Q4_X")
    return cases


@pytest.mark.slow
def test_bad_inputs_one_clear_error_and_nothing_written(tmp_path: Path) -> None:
    cases = _bad_files(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg_only = tmp_path / "cfg"
    cfg_only.mkdir()
    (cfg_only / "config.json").write_text("{}")
    for name, (path, needle) in cases.items():
        out = tmp_path / f"out-{name}"
        res = run(str(path), "--out", str(out), "--quiet")
        assert_clean_failure(res, str(path), needle)
        assert not out.exists()
    for d, needle in ((empty, "empty"), (cfg_only, "config.json")):
        out = tmp_path / f"out-{d.name}"
        res = run(str(d), "--out", str(out))
        assert_clean_failure(res, str(d), needle)
        assert not out.exists()
    res = run(str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "o"))
    assert_clean_failure(res, "nope.safetensors", "no such file")
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir())  # no temp dirs left


@pytest.mark.slow
def test_existing_output_is_protected(tmp_path: Path) -> None:
    src = tmp_path / "m.safetensors"
    save_file({"w": np.ones((4, 4), np.float32)}, str(src))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("precious")
    res = run(str(src), "--out", str(mine), "--overwrite")
    assert_clean_failure(res, str(mine), "not a weightvis bundle")
    assert (mine / "thesis.txt").read_text() == "precious"
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.txt"]

    out = tmp_path / "b"
    assert run(str(src), "--out", str(out), "--quiet").returncode == 0
    first = json.loads((out / "manifest.json").read_text())
    res = run(str(src), "--out", str(out), "--title", "again")
    assert_clean_failure(res, "--overwrite")
    assert json.loads((out / "manifest.json").read_text()) == first
    res = run(str(src), "--out", str(out), "--title", "again", "--overwrite", "--quiet")
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "manifest.json").read_text())["title"] == "again"


@pytest.mark.slow
def test_file_list_sharded_index_and_progress(tmp_path: Path) -> None:
    a = {"model.layers.0.w": np.ones((3, 3), np.float32)}
    b = {"model.layers.1.w": np.full((3, 3), 2, np.float32)}
    save_file(a, str(tmp_path / "s1.safetensors"))
    save_file(b, str(tmp_path / "s2.safetensors"))
    lst = tmp_path / "inputs.txt"
    lst.write_text("# shards\ns1.safetensors\n\ns2.safetensors\n")
    res = run("-l", str(lst), "--out", str(tmp_path / "o"), "--workers", "1")
    assert res.returncode == 0, res.stderr
    assert "tiles" in res.stderr  # the progress bar goes to stderr
    assert "wrote" in res.stdout and "2 tensors" in res.stdout
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert set(m["tensors"]) == {"model.layers.0.w", "model.layers.1.w"}
    res = run("-l", str(lst), "--out", str(tmp_path / "q"), "--quiet")
    assert res.returncode == 0 and res.stderr == "" and res.stdout == ""


@pytest.mark.slow
def test_regen_html_cli_and_usage_errors(tmp_path: Path) -> None:
    src = real_checkpoint("fracast")
    out = tmp_path / "b"
    assert run(str(src), "--out", str(out), "--quiet").returncode == 0
    (out / "index.html").unlink()
    res = run("--regen-html", str(out))
    assert res.returncode == 0 and (out / "index.html").is_file()
    res = run("--regen-html", str(tmp_path))
    assert_clean_failure(res, "manifest.json")
    res = run(str(src))  # no --out: argparse usage error, exit 2, no traceback
    assert res.returncode == 2 and "--out" in res.stderr and "Traceback" not in res.stderr
    res = run(str(src), "--out", str(tmp_path / "x"), "--hilbert-unit", "byte")
    assert res.returncode == 2 and "--layout hilbert" in res.stderr


@pytest.mark.slow
def test_demo_command(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    res = run("demo", "--out", str(out), "--quiet", "--keep-checkpoint", str(tmp_path / "ck"))
    assert res.returncode == 0, res.stderr
    assert "file://" in res.stdout
    m = json.loads((out / "manifest.json").read_text())
    assert len(m["tensors"]) == 8 * 9 + 2
    assert {t["dtype"] for t in m["tensors"].values()} == {"BF16"}
    assert (tmp_path / "ck" / "config.json").is_file()
    res = run("demo", "--out", str(out), "--quiet")
    assert_clean_failure(res, "--overwrite")


@pytest.mark.slow
def test_every_real_safetensors_checkpoint_renders(tmp_path: Path) -> None:
    for key in ("fracast", "fracast_int8", "akiki", "silero"):
        src = real_checkpoint(key)
        out = tmp_path / key
        res = run(str(src), "--out", str(out), "--quiet")
        assert res.returncode == 0, (key, res.stderr)
        m = json.loads((out / "manifest.json").read_text())
        placed = {p["tensor"] for p in m["scenes"][0]["placements"]}
        nonempty = {k for k, t in m["tensors"].items() if np.prod(t["shape"]) > 0}
        assert placed == nonempty, key
