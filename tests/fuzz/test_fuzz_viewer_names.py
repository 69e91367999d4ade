"""Hostile tensor names are data everywhere, in a real browser (headless Chromium, from file://).

Each case writes a small safetensors checkpoint whose names come from a seeded mix of hostile
families (tests/fuzz/hostile_names.py: Object.prototype names and ``__proto__`` paths, HTML and
script payloads, template and CSS injections, bidi overrides and zero-width characters, emoji,
10,000-character names, path-like names and the bundle's own file names, NUL, control characters
and lone surrogates, layer-like names with odd indices), under a file name drawn from the same
mix, renders it with the CLI (arch, Hilbert by element, Hilbert by file byte: the items are then
the file) and diffs two such checkpoints (``--scenes a,b,delta``). The CLI keeps its promises and
exits 0: no name is refused, and no tile or file name derives from a name. Then the page:

* starts with no page error, console error, dialog or failed request, and never requests
  anything off ``file://``;
* runs no payload: ``window.__pwned`` unset, the title unchanged, no element with an ``on*``
  attribute, no element a payload could add (``iframe``, ``svg``, ``base``...), no extra script;
* holds every name exactly as the checkpoint spells it (UTF-16 units compared);
* finds every name with search, selects it, shows it in the stats box and, under the cursor, in
  the readout, as text; a diff lists it in the change table; the file name is the page's title;
* measures no overlay label longer than its cap, and keeps a long name's box small.

Default: 3 renders and 2 diffs (about a minute). ``WEIGHTVIS_FUZZ_CASES=N``: N renders and
N // 3 + 1 diffs; ``WEIGHTVIS_FUZZ_SEED`` changes the names.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from weightvis.formats.safetensors import write_safetensors
from weightvis.scenes import default_title

from ..conftest_viewer import chromium_reusing, open_page  # noqa: F401  (fixtures)
from .common import broken_promise, cases, rng_for, run_cli
from .hostile_names import check_page, file_name, name_set, tensors_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NAMES_PER_CASE = 18
RENDERS = cases(3)
DIFFS = RENDERS // 3 + 1
LAYOUTS = [("--layout", "arch"), ("--layout", "hilbert"),
           ("--layout", "hilbert", "--hilbert-unit", "byte")]

def _write(path: Path, tensors: dict[str, np.ndarray]) -> Path:
    write_safetensors(path, {n: ("F32", a.shape, a) for n, a in tensors.items()})
    return path


def _cli(args: list[str]) -> None:
    o = run_cli(args)
    problem = broken_promise(o)
    assert problem is None, f"{args}: {problem}"
    assert o.returncode == 0, f"{args} refused a name: {o.stderr.strip()}"


@pytest.mark.parametrize("case", range(RENDERS))
def test_hostile_names_render_as_text(case: int, tmp_path: Path, open_page: Any) -> None:
    rng = rng_for(f"viewer-names-{case}")
    names = name_set(rng, NAMES_PER_CASE)
    ckpt = _write(tmp_path / file_name(rng), tensors_for(names, rng))
    out = tmp_path / "bundle"
    layout = LAYOUTS[case % len(LAYOUTS)]
    t0 = time.perf_counter()
    _cli([str(ckpt), "--out", str(out), "--workers", "1", "-q", *layout])
    _cli(["info", str(ckpt)])
    rendered = time.perf_counter() - t0
    # no file of the bundle is named after a tensor
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {f for f in files if not f.startswith(("assets/", "tiles/"))} == \
        {"index.html", "manifest.json"}
    assert all(part.isdigit() or re.fullmatch(r"\d+\.(png|js)", part)  # a tile, its sidecar
               for f in files if f.startswith("tiles/") for part in f.split("/")[2:])
    page, log = open_page((out / "index.html").as_uri())
    check_page(page, log, names, out, diff=False, title=default_title([str(ckpt)]),
               items=[ckpt.name] if "byte" in layout else None)
    print(f"case {case}: {len(names)} names, render+info {rendered:.1f} s, "
          f"browser {time.perf_counter() - t0 - rendered:.1f} s")


@pytest.mark.parametrize("case", range(DIFFS))
def test_hostile_names_in_a_diff(case: int, tmp_path: Path, open_page: Any) -> None:
    rng = rng_for(f"viewer-names-diff-{case}")
    names = name_set(rng, NAMES_PER_CASE)
    a = tensors_for(names, rng)
    b = {n: v.copy() for n, v in a.items()}
    for v in b.values():
        v.reshape(-1)[0] += np.float32(0.25)   # every pair changed: the table lists them all
    gone = names[-1]
    del b[gone]
    extra = next(n for n in name_set(rng, NAMES_PER_CASE) if n not in a)
    b[extra] = rng.standard_normal((2, 3)).astype(np.float32)
    out = tmp_path / "diff"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _cli(["diff", str(_write(tmp_path / "a" / file_name(rng), a)),
          str(_write(tmp_path / "b" / file_name(rng), b)), "--out", str(out),
          "--scenes", "a,b,delta", "--workers", "1", "-q"])
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {f for f in files if not f.startswith(("assets/", "tiles/"))} == \
        {"index.html", "manifest.json", "diff.json"}
    page, log = open_page((out / "index.html").as_uri())
    check_page(page, log, [*names, extra], out, diff=True)
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("a")
    page.wait_for_function("weightvis.app.model.key === 'a'")
    log.assert_clean()
