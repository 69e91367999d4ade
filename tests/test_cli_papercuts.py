"""What a new user trips over at the command line (issue 14, item 8): abbreviated options, a closed
pipe, relative paths in a file list, the help's words, --regen-html --title, AVIF's removal."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from weightvis import cli

ROOT = Path(__file__).resolve().parents[1]


def _exit_code(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    return int(e.value.code or 0), capsys.readouterr().err


@pytest.mark.parametrize("argv, prefix", [
    (["m.safetensors", "--out", "o", "--overwrit"], "--overwrit"),
    (["m.safetensors", "--out", "o", "--lay", "hilbert"], "--lay"),
    (["demo", "--out", "o", "--overwr"], "--overwr"),
    (["demo", "--out", "o", "--keep", "k"], "--keep"),
    (["info", "m.safetensors", "--sca"], "--sca"),
    (["diff", "a", "b", "--out", "o", "--no-sv"], "--no-sv"),
    (["publish", "b", "hf://spaces/a/b", "--privat"], "--privat"),
])
def test_option_prefixes_are_not_accepted(argv: list[str], prefix: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _exit_code(argv, capsys)
    assert code == 2 and f"unrecognized arguments: {prefix}" in err, err


def test_exact_option_names_still_work(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _exit_code(["info", "--scan", "--json"], capsys)  # fails on SRC, not options
    assert code == 2 and "the following arguments are required: SRC" in err, err


def _many_tensors(path: Path, n: int = 4000) -> Path:
    save_file({f"model.layers.{i}.some_rather_long_module_name.weight": np.ones((2, 2), np.float32)
               for i in range(n)}, str(path))
    return path


def test_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    src = _many_tensors(tmp_path / "m.safetensors")
    env = {k: v for k, v in os.environ.items() if k != "WEIGHTVIS_DEBUG"}
    proc = subprocess.Popen([sys.executable, "-m", "weightvis", "info", "--json", str(src)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.read(100)  # like `| head -c 100`: read a little, then go away
    proc.stdout.close()
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=300)
    assert first.startswith(b"{")
    assert code == 0 and err == "", (code, err)
    # the whole output really is larger than the pipe could hold (else nothing was tested)
    full = subprocess.run([sys.executable, "-m", "weightvis", "info", "--json", str(src)],
                          capture_output=True, env=env, timeout=300)
    assert full.returncode == 0 and len(full.stdout) > 1 << 18


def test_file_list_entries_are_relative_to_the_list(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "models").mkdir()
    save_file({"w": np.ones((4, 4), np.float32)}, str(tmp_path / "models" / "m.safetensors"))
    lst = tmp_path / "models" / "list.txt"
    lst.write_text("# the checkpoint beside this list\nm.safetensors\n\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert cli._read_file_list(str(lst)) == [str(tmp_path / "models" / "m.safetensors")]
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "relative to FILE's own folder" in text


def test_main_help_names_every_format(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for word in ("safetensors", "GGUF", "PyTorch", "TorchScript", "hf://"):
        assert word in text, word


def test_regen_html_honours_title_and_refuses_render_options(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "m.safetensors"
    save_file({"w": np.arange(64, dtype=np.float32).reshape(8, 8)}, str(src))
    out = tmp_path / "b"
    assert cli.main([str(src), "--out", str(out), "--workers", "1", "-q"]) == 0
    before = json.loads((out / "manifest.json").read_text())
    title = "Ablation <3> & \"friends\""
    assert cli.main(["--regen-html", str(out), "--title", title]) == 0
    after = json.loads((out / "manifest.json").read_text())
    assert after["title"] == title
    assert {k: v for k, v in after.items() if k != "title"} == \
        {k: v for k, v in before.items() if k != "title"}
    page = (out / "index.html").read_text()
    assert "<title>Ablation &lt;3&gt; &amp; " in page and title not in page
    capsys.readouterr()
    code, err = _exit_code(["--regen-html", str(out), "--layout", "hilbert"], capsys)
    assert code == 2 and "--layout would need a render" in err, err
    assert json.loads((out / "manifest.json").read_text()) == after


@pytest.mark.parametrize("command", ["render", "diff"])
def test_tile_format_avif_says_why_it_went(command: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """AVIF tiles were removed (benchmarks/tile_formats.py): asking for them is one line, exit 2,
    saying why and what to use, naming no extra to install; nothing is written."""
    src = tmp_path / "m.safetensors"
    save_file({"w": np.arange(64, dtype=np.float32).reshape(8, 8)}, str(src))
    out = tmp_path / "b"
    head = ["diff", str(src), str(src)] if command == "diff" else [str(src)]
    code = cli.main([*head, "--out", str(out), "--tile-format", "avif", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("weightvis: error: --tile-format avif: AVIF tiles were removed"), err
    assert "palette PNG" in err and "leave the tile format out" in err, err
    assert "weightvis[" not in err and "Traceback" not in err
    assert not out.exists()
    code = cli.main([*head, "--out", str(tmp_path / "c"), "--tile-format", "gif", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "unknown tile format 'gif'" in err, err
    # the default, spelled out, still renders (scripts written for the old option keep working)
    assert cli.main([*head, "--out", str(out), "--tile-format", "png", "-q", "--workers",
                     "1"]) == 0
    assert json.loads((out / "manifest.json").read_text())["tile_format"] == "png"
    assert "--tile-format" not in cli._render_parser().format_help()


def test_no_avif_extra_is_declared_or_named() -> None:
    tomllib = pytest.importorskip("tomllib")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert "avif" not in declared
    named = set(re.findall(r"weightvis\[(\w+)\]", (ROOT / "weightvis" / "cli.py").read_text()))
    assert named <= set(declared), named - set(declared)


def test_regen_html_of_a_bundle_with_avif_tiles(tmp_path: Path) -> None:
    """A bundle written while AVIF was an option keeps its page: --regen-html rebuilds it from
    the manifest, whose tile template still names the .avif files."""
    src = tmp_path / "m.safetensors"
    save_file({"w": np.arange(64, dtype=np.float32).reshape(8, 8)}, str(src))
    out = tmp_path / "b"
    assert cli.main([str(src), "--out", str(out), "--workers", "1", "-q", "--no-sidecars"]) == 0
    doc = json.loads((out / "manifest.json").read_text())
    doc["tile_format"] = "avif"
    for scene in doc["scenes"]:
        scene["tiles"] = scene["tiles"].replace(".png", ".avif")
    (out / "manifest.json").write_text(json.dumps(doc))
    (out / "index.html").unlink()
    assert cli.main(["--regen-html", str(out)]) == 0
    page = (out / "index.html").read_text()
    assert "tiles/main/{z}/{x}/{y}.avif" in page and '"tile_format":"avif"' in page
