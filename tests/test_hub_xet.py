"""``--show-xet-xorbs`` against the fake Hub on loopback (tests/fakehub.py), real huggingface_hub
client code in weightvis subprocesses: the two Xet calls (read token, CAS reconstruction) seen in
the request log, the manifest's xorb ranges against the terms the CAS served, the xorb scene's
leaf tiles against the colour rule at known bytes, paged reconstructions, every refusal as one
line with exit 2 and no token, and the viewer from file:// (legend, readout under the cursor).

The fake CAS serves terms only (no xorb data), so the file's bytes are downloaded from the CDN
as an LFS file's (``HF_HUB_DISABLE_XET=1``); the terms are synthetic (HUB.md §4: no shipped API
gives real chunk boundaries offline)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .conftest_viewer import _d2xy as d2xy
from .conftest_viewer import chromium_reusing, open_page  # noqa: F401  (fixtures)
from .fakehub import XET_TOKEN, FakeHub
from .hub_fixtures import (  # noqa: F401  (fixtures)
    TOKEN,
    env_for,
    error_line,
    hub,
    llama_tensors,
    weightvis,
)

pytestmark = pytest.mark.slow

SHOTS = Path("/work/shots/r3-xet")
TILE = 512


def xorb(i: int) -> str:
    return hashlib.sha256(b"xorb %d" % i).hexdigest()


def checkpoint(seed: int = 0) -> bytes:
    from safetensors.numpy import save

    return save(llama_tensors(seed, vocab=3000, hidden=128), metadata={"format": "pt"})


def terms_for(size: int, cuts: list[int], xorbs: list[int]) -> list[dict[str, Any]]:
    """Terms covering bytes cuts[k]..cuts[k+1]-1 (and the rest) with xorb xorbs[k]."""
    ends = [*cuts[1:], size]
    return [{"hash": xorb(x), "unpacked_length": b - a, "range": {"start": 0, "end": 1}}
            for x, a, b in zip(xorbs, cuts, ends, strict=True)]


def expected_runs(terms: list[dict[str, Any]]) -> list[tuple[int, int, str]]:
    """(start, end, xorb) of each term, neighbours of one xorb joined (what the manifest lists)."""
    out: list[tuple[int, int, str]] = []
    at = 0
    for t in terms:
        end = at + t["unpacked_length"]
        if out and out[-1][2] == t["hash"]:
            out[-1] = (out[-1][0], end, t["hash"])
        else:
            out.append((at, end, t["hash"]))
        at = end
    return out


def xet_repo(hub: FakeHub, data: bytes, terms: list[dict[str, Any]], repo: str = "org/xet"
             ) -> str:
    hub.xet_cas_url = f"{hub.endpoint}/cas"
    r = hub.add_repo(repo, files={"config.json": b'{"model_type": "llama"}'})
    return hub.add_xet_terms(r, "model.safetensors", data, terms)


def xet_env(hub: FakeHub, home: Path) -> dict[str, str]:
    return env_for(hub, home, HF_HUB_DISABLE_XET="1")


def log_of(hub: FakeHub, part: str) -> list[dict[str, Any]]:
    return [e for e in hub.log if part in e["path"]]


class Rendered:
    def __init__(self, out: Path, data: bytes, terms: list[dict[str, Any]], commit: str,
                 log: list[dict[str, Any]], stderr: str) -> None:
        self.out, self.data, self.terms, self.commit, self.log = out, data, terms, commit, log
        self.stderr = stderr
        self.manifest = json.loads((out / "manifest.json").read_text("utf-8"))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rendered]:
    """hf://org/xet rendered with --show-xet-xorbs: four terms over three xorbs, the first
    xorb used twice (so it has two ranges and colours are given by first appearance)."""
    tmp = tmp_path_factory.mktemp("xet")
    data = checkpoint()
    terms = terms_for(len(data), [0, 100_000, 250_000, 400_000], [7, 3, 7, 5])
    with FakeHub(tokens={TOKEN: "tester"}, lifetime=300) as hub:
        commit = xet_repo(hub, data, terms)
        o = weightvis(["hf://org/xet", "--out", str(tmp / "b"), "--show-xet-xorbs",
                       "--workers", "2", "-q"], xet_env(hub, tmp / "home"))
        assert o.returncode == 0, o.stderr
        yield Rendered(tmp / "b", data, terms, commit, list(hub.log), o.stdout + o.stderr)


def test_two_xet_calls_in_the_request_log(rendered: Rendered) -> None:
    log = rendered.log
    tokens = [e for e in log if "xet-read-token" in e["path"]]
    cas = [e for e in log if e["path"].startswith("/cas/")]
    # one read token for the repo at the pinned commit (with the user's Hub token) ...
    assert [(e["method"], e["path"]) for e in tokens] == [
        ("GET", f"/api/models/org/xet/xet-read-token/{rendered.commit}")]
    assert tokens[0]["auth"]
    # ... then one reconstruction query of the file's xet hash, whole file (no Range)
    (xet_hash,) = [f["xet_hash"] for f in rendered.manifest["xet"]["files"]]
    assert [(e["method"], e["path"], e["range"]) for e in cas] == [
        ("GET", f"/cas/v2/reconstructions/{xet_hash}", None)]
    assert log.index(tokens[0]) < log.index(cas[0])
    # (the fake CAS answers 401 to anything but the CAS token: the query carried that one)
    assert cas[0]["auth"]
    assert XET_TOKEN not in rendered.stderr and TOKEN not in json.dumps(rendered.manifest)
    assert XET_TOKEN not in json.dumps(rendered.manifest)


def test_manifest_lists_the_served_xorbs(rendered: Rendered) -> None:
    m = rendered.manifest
    xet = m["xet"]
    size = len(rendered.data)
    assert xet["files"] == [{
        "file": "model.safetensors", "path": "model.safetensors",
        "uri": f"hf://org/xet@{rendered.commit}/model.safetensors",
        "xet_hash": xet["files"][0]["xet_hash"], "size": size}]
    runs = expected_runs(rendered.terms)
    order = list(dict.fromkeys(x for _, _, x in runs))
    assert [x["hash"] for x in xet["xorbs"]] == order == [xorb(7), xorb(3), xorb(5)]
    for k, entry in enumerate(xet["xorbs"]):
        mine = [[0, a, b] for a, b, x in runs if x == entry["hash"]]
        assert entry["ranges"] == mine
        assert entry["colour"] == k
        assert entry["bytes"] == sum(b - a for _, a, b in mine)
        assert entry["share"] == pytest.approx(entry["bytes"] / size)
    assert sum(x["bytes"] for x in xet["xorbs"]) == size
    # the scenes: the usual weights scene, then the xorbs over every byte
    assert [s["key"] for s in m["scenes"]] == ["main", "xorbs"]
    scene = m["scenes"][1]
    assert scene["colormap"] == "xorbs" and scene["layout"] == "hilbert"
    assert scene["curve"]["unit"] == "byte"
    assert scene["curve"]["segments"] == [{"file": "model.safetensors", "start": 0,
                                           "length": size}]


def test_xorb_tiles_follow_the_colour_rule(rendered: Rendered) -> None:
    from PIL import Image

    m = rendered.manifest
    scene = m["scenes"][1]
    cm = m["colormaps"]["xorbs"]
    shades, colours = cm["shades"], cm["colours"]
    n = 1 << scene["curve"]["order"]
    z = scene["max_zoom"]
    colour = {x["hash"]: x["colour"] for x in m["xet"]["xorbs"]}
    rng = np.random.default_rng(1)
    size = len(rendered.data)
    offsets = {0, size - 1}
    for a, b, _ in expected_runs(rendered.terms):
        offsets |= {a, b - 1, *rng.integers(a, b, 20).tolist()}
    tiles: dict[tuple[int, int], np.ndarray] = {}
    for off in sorted(offsets):
        x, y = d2xy(n, off)
        key = (x // TILE, y // TILE)
        if key not in tiles:
            with Image.open(rendered.out / f"tiles/xorbs/{z}/{key[0]}/{key[1]}.png") as im:
                assert im.mode == "P"
                tiles[key] = np.asarray(im)
        got = int(tiles[key][y % TILE, x % TILE])
        (held,) = [h for a, b, h in expected_runs(rendered.terms) if a <= off < b]
        c = colour[held] % colours
        assert got == 1 + c * shades + rendered.data[off] * shades // 256, off
    # the palette: shade j of colour c is the Tableau colour scaled by 0.4 + 0.6 j / (shades-1)
    from weightvis.xorbs import TABLEAU_20

    assert cm["palette"][1 + 2 * shades + shades - 1] == list(TABLEAU_20[2])


def test_paged_reconstruction_gives_the_same_xorbs(hub: FakeHub, tmp_path: Path) -> None:
    """A CAS that answers a few terms at a time is asked again from the first byte not covered
    (Range), and the first term of each later answer starts inside its own bytes
    (offset_into_first_range)."""
    data = checkpoint()
    cuts = [0, 50_000, 120_000, 130_000, 600_000, 900_000]
    terms = terms_for(len(data), cuts, [1, 2, 1, 3, 4, 2])
    xet_repo(hub, data, terms)
    hub.reconstruction_page = 2
    o = weightvis(["hf://org/xet", "--out", str(tmp_path / "b"), "--show-xet-xorbs",
                   "--workers", "1", "-q"], xet_env(hub, tmp_path / "home"))
    assert o.returncode == 0, o.stderr
    cas = log_of(hub, "/cas/v2/reconstructions/")
    assert [e["range"] for e in cas] == [None, f"bytes={cuts[2]}-{len(data) - 1}",
                                         f"bytes={cuts[4]}-{len(data) - 1}"]
    m = json.loads((tmp_path / "b" / "manifest.json").read_text("utf-8"))
    got = sorted((a, b, x["hash"]) for x in m["xet"]["xorbs"] for _, a, b in x["ranges"])
    assert got == expected_runs(terms)


def test_refusals_are_one_line(hub: FakeHub, tmp_path: Path) -> None:
    data = checkpoint()
    terms = terms_for(len(data), [0, 300_000], [1, 2])
    xet_repo(hub, data, terms)
    env = xet_env(hub, tmp_path / "home")
    out = str(tmp_path / "b")
    # an LFS file (the Hub lists no xet hash for it)
    # (other bytes: the fake Hub knows xet files by their content)
    hub.add_repo("org/lfs", files={"model.safetensors": checkpoint(1)})
    line = error_line(weightvis(["hf://org/lfs", "--out", out, "--show-xet-xorbs"], env))
    assert line.startswith("weightvis: error: hf://org/lfs@") and "model.safetensors" in line
    assert "not stored with Xet (an LFS file)" in line
    # a plain git file
    rule = hub.lfs_rule
    hub.lfs_rule = lambda *a: False
    hub.add_repo("org/git", files={"model.safetensors": checkpoint(2)})
    hub.lfs_rule = rule
    line = error_line(weightvis(["hf://org/git", "--out", out, "--show-xet-xorbs"], env))
    assert "not stored with Xet (a plain git file)" in line
    # a local path
    local = tmp_path / "model.safetensors"
    local.write_bytes(data)
    line = error_line(weightvis([str(local), "--out", out, "--show-xet-xorbs"], env))
    assert line.startswith(f"weightvis: error: {local}: --show-xet-xorbs") and "hf://" in line
    # --stream: the bytes must be downloaded
    line = error_line(weightvis(["hf://org/xet", "--out", out, "--show-xet-xorbs", "--stream"],
                                env))
    assert "without --stream" in line
    # the CAS fails: the message names the file; nothing was downloaded before
    hub.log.clear()
    hub.inject("GET", r"^/cas/v2/reconstructions/", 500)
    line = error_line(weightvis(["hf://org/xet", "--out", out, "--show-xet-xorbs"], env))
    assert "hf://org/xet@" in line and "/model.safetensors: the Xet storage service" in line
    assert "HTTP 500" in line
    assert not [e for e in hub.log if e["kind"] == "cdn" and e["range"] is None]
    # terms that do not cover the file
    (xet_hash,) = [h for h, t in hub.reconstructions.items() if t[0]["hash"] == xorb(1)]
    hub.reconstructions[xet_hash] = hub.reconstructions[xet_hash][:1]
    line = error_line(weightvis(["hf://org/xet", "--out", out, "--show-xet-xorbs"], env))
    assert "/model.safetensors: the Xet reconstruction terms cover 300,000 bytes, the file " \
        f"has {len(data):,}" in line
    # offline: the terms are not cached anywhere
    line = error_line(weightvis(["hf://org/xet", "--out", out, "--show-xet-xorbs"],
                                {**env, "HF_HUB_OFFLINE": "1"}))
    assert line == ("weightvis: error: hf://org/xet: --show-xet-xorbs asks the Hub's Xet storage "
                    "for the files' reconstruction terms, which HF_HUB_OFFLINE=1 forbids")
    # the Hub hands out no read token
    hub.xet_cas_url = None  # (the fake answers the token route with 501)
    line = error_line(weightvis(["hf://org/xet", "--out", out, "--show-xet-xorbs"], env))
    assert line.startswith("weightvis: error: hf://org/xet: ") and "HTTP 501" in line
    assert not Path(out).exists()


def _screen_point(page: Any, x: int, y: int) -> tuple[float, float]:
    """The page coordinates of canvas pixel (x, y)'s centre in the current view."""
    sx, sy = page.evaluate(
        """([cx, cy]) => { const p = weightvisMap.latLngToContainerPoint(
               weightvis.llFromC(cx, cy));
           const r = weightvisMap.getContainer().getBoundingClientRect();
           return [r.left + p.x, r.top + p.y]; }""", [x + 0.5, y + 0.5])
    return sx, sy


@pytest.mark.browser
def test_viewer_lists_xorbs_and_names_the_hovered_one(rendered: Rendered, open_page: Any
                                                      ) -> None:
    page, log = open_page((rendered.out / "index.html").as_uri())
    page.keyboard.press("x")
    page.wait_for_function("weightvis.app.model.key === 'xorbs'")
    assert page.evaluate("weightvis.app.model.kind.name") == "xorbs"
    xorbs = rendered.manifest["xet"]["xorbs"]
    items = page.eval_on_selector_all("#wv-legend-swatches .wv-xorb",
                                      "els => els.map(e => e.textContent)")
    assert [t.split()[:2] for t in items] == [[f"#{k + 1}", x["hash"][:12] + "\u2026"]
                                              for k, x in enumerate(xorbs)]
    n = 1 << rendered.manifest["scenes"][1]["curve"]["order"]
    for a, b, held in expected_runs(rendered.terms):
        off = (a + b) // 2
        x, y = d2xy(n, off)
        page.evaluate("([cx, cy]) => weightvisMap.setView(weightvis.llFromC(cx, cy), 3, "
                      "{animate: false})", [x + 0.5, y + 0.5])
        sx, sy = _screen_point(page, x, y)
        page.mouse.move(sx, sy)
        page.wait_for_function("(h) => document.getElementById('wv-r-canvas').textContent"
                               ".endsWith('h ' + h)", arg=str(off))
        assert page.get_attribute("#wv-r-xorb", "data-xorb") == held
        k = [x["hash"] for x in xorbs].index(held)
        assert page.text_content("#wv-r-xorb-name") == f"#{k + 1} {held[:12]}\u2026"
    log.assert_clean()
    if SHOTS.parent.is_dir():  # what a user sees: the whole file, the cursor on the 2nd xorb
        SHOTS.mkdir(exist_ok=True)
        shot, _ = open_page((rendered.out / "index.html").as_uri())
        shot.keyboard.press("x")
        shot.wait_for_function("weightvis.app.model.key === 'xorbs'")
        a, b, _held = expected_runs(rendered.terms)[1]
        x, y = d2xy(n, (a + b) // 2)
        sx, sy = _screen_point(shot, x, y)
        shot.mouse.move(sx, sy)
        shot.wait_for_function("document.getElementById('wv-r-xorb-name') !== null && "
                               "!document.getElementById('wv-r-value').textContent"
                               ".startsWith('loading')")
        shot.screenshot(path=str(SHOTS / "xorbs-hover.png"))


def test_sharded_repo_shares_xorbs_across_files(hub: FakeHub, tmp_path: Path) -> None:
    """Two shards stored with Xet, a xorb holding bytes of both (Xet deduplicates across
    files): one colour for it, its ranges in both files."""
    from .hub_fixtures import sharded_files

    files = sharded_files(llama_tensors(vocab=2000, hidden=128), shards=2)
    hub.xet_cas_url = f"{hub.endpoint}/cas"
    r = hub.add_repo("org/shards", files={k: v for k, v in files.items()
                                          if not k.endswith(".safetensors")})
    names = sorted(k for k in files if k.endswith(".safetensors"))
    all_terms = []
    for k, name in enumerate(names):
        size = len(files[name])
        terms = terms_for(size, [0, size // 3, size // 2], [10 + k, 99, 20 + k])
        hub.add_xet_terms(r, name, files[name], terms)
        all_terms.append(terms)
    o = weightvis(["hf://org/shards", "--out", str(tmp_path / "b"), "--show-xet-xorbs",
                   "--workers", "1", "-q"], xet_env(hub, tmp_path / "home"))
    assert o.returncode == 0, o.stderr
    assert len(log_of(hub, "xet-read-token")) == 1  # one token for the repo at the commit
    assert len(log_of(hub, "/cas/v2/reconstructions/")) == 2
    m = json.loads((tmp_path / "b" / "manifest.json").read_text("utf-8"))
    xet = m["xet"]
    assert [f["path"] for f in xet["files"]] == names
    assert [x["hash"] for x in xet["xorbs"]] == [xorb(10), xorb(99), xorb(20), xorb(11),
                                                 xorb(21)]
    shared = xet["xorbs"][1]
    assert [rg[0] for rg in shared["ranges"]] == [0, 1]
    for i, terms in enumerate(all_terms):
        got = sorted((a, b, x["hash"]) for x in xet["xorbs"] for f, a, b in x["ranges"]
                     if f == i)
        assert got == expected_runs(terms)
    total = sum(len(files[n]) for n in names)
    assert sum(x["share"] for x in xet["xorbs"]) == pytest.approx(1.0)
    assert shared["bytes"] == sum(b - a for _, a, b in shared["ranges"]) < total


@pytest.mark.parametrize("doc", [
    None, [], {"terms": None}, {"terms": [{"hash": "zz", "unpacked_length": 5}]},
    {"terms": [{"hash": "a" * 64, "unpacked_length": 0}]},
    {"terms": [{"hash": "a" * 64, "unpacked_length": True}]},
    {"terms": [{"hash": "a" * 64, "unpacked_length": 5}], "offset_into_first_range": -1},
    {"terms": [{"hash": "a" * 64, "unpacked_length": 5}], "offset_into_first_range": 5},
])
def test_malformed_reconstruction_is_an_error(doc: Any) -> None:
    from weightvis.errors import HubError
    from weightvis.hub.xet import _terms

    with pytest.raises(HubError, match="^hf://o/m@c/f: the Xet storage service answered "):
        _terms(doc, "hf://o/m@c/f", 0)


def test_terms_skip_into_the_first_range() -> None:
    from weightvis.hub.xet import XorbRun, _terms

    doc = {"offset_into_first_range": 3, "terms": [{"hash": "A" * 64, "unpacked_length": 10},
                                                   {"hash": "b" * 64, "unpacked_length": 4}]}
    assert _terms(doc, "x", 100) == [XorbRun(100, 107, "a" * 64), XorbRun(107, 111, "b" * 64)]
