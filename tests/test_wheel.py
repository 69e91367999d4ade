"""The wheel carries the viewer (top-level viewer/ is shipped as weightvis/_viewer) and the
installed package renders a bundle with it."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from weightvis.html import ALL_VIEWER_SCRIPTS, viewer_scripts


@pytest.mark.slow
def test_wheel_contains_viewer_and_vendored_leaflet(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    res = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation",
                          "--outdir", str(tmp_path), str(root)], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (whl,) = tmp_path.glob("weightvis-*.whl")
    names = set(zipfile.ZipFile(whl).namelist())
    for f in ("weightvis/_viewer/index.html.j2",
              "weightvis/_viewer/viewer.css", "weightvis/_viewer/vendor/leaflet-1.9.4/leaflet.js",
              "weightvis/_viewer/vendor/leaflet-1.9.4/leaflet.css",
              "weightvis/_viewer/vendor/leaflet-1.9.4/LICENSE", "weightvis/py.typed",
              "weightvis/cli.py", "weightvis/formats/safetensors.py", "weightvis/layout/arch.py",
              "weightvis/moe/probe.py", "weightvis/moe/probe_text.txt"):
        assert f in names, f
    assert not any(n.startswith("tests/") for n in names)
    # every script any bundle's page can list (weightvis.html.viewer_scripts) is in the wheel
    assert ALL_VIEWER_SCRIPTS and set(viewer_scripts({})) < set(ALL_VIEWER_SCRIPTS)
    for script in ALL_VIEWER_SCRIPTS:
        assert f"weightvis/_viewer/js/{script}" in names, script
    assert not any(n.startswith("weightvis/_viewer/js/") and n.split("/")[-1] not in
                   ALL_VIEWER_SCRIPTS for n in names), "a viewer script no bundle lists"
    # installed from the wheel (no source tree beside it), a render finds the viewer
    site = tmp_path / "site"
    zipfile.ZipFile(whl).extractall(site)
    code = ("import sys, numpy as np; from safetensors.numpy import save_file; import weightvis;"
            "assert weightvis.__file__.startswith(sys.argv[1]), weightvis.__file__;"
            "save_file({'w': np.ones((3, 3), np.float32)}, sys.argv[2] + '/m.safetensors');"
            "weightvis.render([sys.argv[2] + '/m.safetensors'], sys.argv[2] + '/out', workers=1)")
    res = subprocess.run([sys.executable, "-c", code, str(site), str(tmp_path)],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr[-3000:]
    html = (tmp_path / "out" / "index.html").read_text()
    assert "leaflet.js" in html
    assert (tmp_path / "out" / "assets" / "leaflet.js").is_file()
    # every script the page references was copied from the installed wheel
    srcs = re.findall(r'<script src="([^"]+)"', html)
    assert "assets/js/start.js" in srcs
    for src in srcs:
        assert (tmp_path / "out" / src).is_file(), src
