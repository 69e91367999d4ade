"""``weightvis publish`` and ``--out hf://spaces/...`` against a fake Hub on loopback, with the
real huggingface_hub client uploading through xet (hf_xet's local CAS) and through LFS: a static
Space whose files are the bundle plus its README, resumable re-runs, refusal to overwrite what is
not a weightvis bundle, --overwrite, --private, model repo folders, packed bundles."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from .fakehub import FakeHub
from .hub_fixtures import (  # noqa: F401  (fixtures)
    env_for,
    error_line,
    hub,
    llama_tensors,
    sharded_files,
    weightvis,
    write_files,
)

pytestmark = pytest.mark.slow


def _render(tmp: Path, name: str, seed: int) -> Path:
    import weightvis as wv
    from weightvis.executors import InlineExecutor

    ckpt = write_files(tmp / f"{name}-ckpt", sharded_files(llama_tensors(seed), shards=1))
    return wv.render([ckpt], tmp / name, executor=InlineExecutor(), title=name).out


def _bundle_files(bundle: Path) -> dict[str, bytes]:
    return {p.relative_to(bundle).as_posix(): p.read_bytes()
            for p in bundle.rglob("*") if p.is_file()}


def _remote(hub: FakeHub, repo: str, rtype: str = "space") -> dict[str, str]:
    """path -> sha256 of every file of the repo's main branch (LFS and xet files by their
    oid: the bytes of xet uploads live in hf_xet's CAS)."""
    out = {}
    for path, e in hub.files(repo, rtype).items():
        out[path] = e.sha256 or hashlib.sha256(e.content or b"").hexdigest()
    return out


def _sha(files: dict[str, bytes], prefix: str = "") -> dict[str, str]:
    return {prefix + k: hashlib.sha256(v).hexdigest() for k, v in files.items()}


def _front_matter(text: str) -> dict[str, object]:
    head = text.split("---\n")[1]
    out: dict[str, object] = {}
    key = ""
    for line in head.splitlines():
        if line.startswith("- "):
            out.setdefault(key, [])
            assert isinstance(out[key], list)
            out[key].append(line[2:])  # type: ignore[union-attr]
        else:
            key, _, val = line.partition(":")
            if val.strip():
                out[key] = val.strip()
    return out


@pytest.fixture
def xet_hub(hub: FakeHub, tmp_path: Path) -> FakeHub:
    """The fake Hub handing out hf_xet's local CAS for uploads (skipped when this hf_xet no
    longer honours local:// CAS URLs)."""
    hub.xet_cas_url = "local://" + str(tmp_path / "cas")
    hub.accept_unknown_lfs = True
    probe = hub.add_repo("org/xet-probe", files={"a": b"a"})
    try:
        hub.add_xet_file(probe, "probe.bin", b"\0probe")
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"hf_xet does not write to a local:// CAS here ({type(e).__name__}: {e})")
    return hub


def test_publish_a_hub_render_as_a_static_space_via_xet(xet_hub: FakeHub,
                                                        tmp_path: Path) -> None:
    hub = xet_hub
    hub.add_repo("org/model", files=sharded_files(llama_tensors(0), shards=2))
    env = env_for(hub, tmp_path / "home")
    o = weightvis(["hf://org/model", "--out", str(tmp_path / "b"), "-q"], env)
    assert o.returncode == 0, o.stderr
    n = len(hub.log)
    o = weightvis(["publish", str(tmp_path / "b"), "hf://spaces/org/viz"], env)
    assert o.returncode == 0, o.stderr
    assert o.stdout.strip().endswith(f"{hub.endpoint}/spaces/org/viz")
    space = hub.repos[("space", "org/viz")]
    assert space.sdk == "static" and not space.private
    local = _bundle_files(tmp_path / "b")
    remote = _remote(hub, "org/viz")
    readme = hub.file_bytes("org/viz", "README.md", "space")
    assert readme is not None
    assert remote.pop("README.md") == hashlib.sha256(readme).hexdigest()
    remote.pop(".gitattributes")
    assert remote == _sha(local)  # the Space's files are the bundle's, byte for byte
    fm = _front_matter(readme.decode())
    assert fm["sdk"] == "static" and fm["app_file"] == "index.html"
    assert fm["title"] == '"org/model"' and fm["tags"] == ["weightvis"]
    assert fm["models"] == ["org/model"]
    commit = hub.repos[("model", "org/model")].refs["main"]
    assert f"({hub.endpoint}/org/model/tree/{commit})" in readme.decode()
    paths = [e["path"] for e in hub.log[n:]]
    assert "/api/spaces/org/viz/xet-write-token/main" in paths  # through xet ...
    assert not [p for p in paths if p.endswith("/objects/batch")]  # ... not the LFS batch
    assert not [e for e in hub.log if e["kind"] == "cdn" and e["auth"]]
    # resumable: the same command again uploads nothing and commits nothing
    commits = len(space.commits)
    o = weightvis(["publish", str(tmp_path / "b"), "hf://spaces/org/viz", "-q"], env)
    assert o.returncode == 0, o.stderr
    assert len(space.commits) == commits


def test_publish_via_lfs_then_overwrite_rules(hub: FakeHub, tmp_path: Path) -> None:
    a, b = _render(tmp_path, "a", 1), _render(tmp_path, "b", 2)
    env = env_for(hub, tmp_path / "home", HF_HUB_DISABLE_XET="1")
    o = weightvis(["publish", str(a), "hf://spaces/org/viz", "--private", "-q"], env)
    assert o.returncode == 0, o.stderr
    space = hub.repos[("space", "org/viz")]
    assert space.private
    puts = [e for e in hub.log if e["kind"] == "cdn" and e["method"] == "PUT"]
    assert puts, "no LFS upload"
    for path, data in _bundle_files(a).items():  # LFS bytes as stored by the Hub
        assert hub.file_bytes("org/viz", path, "space") == data, path
    # another bundle: refused without --overwrite, nothing committed
    commits = len(space.commits)
    line = error_line(weightvis(["publish", str(b), "hf://spaces/org/viz"], env))
    assert line == ("weightvis: error: hf://spaces/org/viz: a weightvis bundle is already "
                    "there; pass --overwrite to replace it")
    assert len(space.commits) == commits
    o = weightvis(["publish", str(b), "hf://spaces/org/viz", "--overwrite"], env)
    assert o.returncode == 0, o.stderr
    remote = _remote(hub, "org/viz")
    readme = remote.pop("README.md")
    remote.pop(".gitattributes")
    assert remote == _sha(_bundle_files(b))  # a's files that b lacks were removed
    assert readme == hashlib.sha256(hub.file_bytes("org/viz", "README.md", "space") or b""
                                    ).hexdigest()
    assert '"b"' in (hub.file_bytes("org/viz", "README.md", "space") or b"").decode()


def test_never_overwrites_what_is_not_a_bundle(hub: FakeHub, tmp_path: Path) -> None:
    a = _render(tmp_path, "a", 1)
    env = env_for(hub, tmp_path / "home", HF_HUB_DISABLE_XET="1")
    hub.add_repo("org/app", files={"app.py": b"import gradio\n"}, repo_type="space",
                 sdk="gradio")
    hub.add_repo("org/site", files={"index.html": b"<p>mine</p>"}, repo_type="space",
                 sdk="static")
    hub.add_repo("org/model", files={"viz/notes.txt": b"mine", "config.json": b"{}"})
    cases = [
        ("hf://spaces/org/app", [], "hf://spaces/org/app: a gradio Space, not a static one; "
                                    "weightvis never overwrites it"),
        ("hf://spaces/org/site", ["--overwrite"], "hf://spaces/org/site: holds files that are "
                                                  "not a weightvis bundle (index.html)"),
        ("hf://org/model", ["--path-in-repo", "viz", "--overwrite"],
         "hf://org/model: holds files that are not a weightvis bundle (viz/notes.txt)"),
        ("hf://org/model", [], "hf://org/model: a model repo takes the bundle in a folder"),
    ]
    before = {k: len(r.commits) for k, r in hub.repos.items()}
    for target, extra, want in cases:
        line = error_line(weightvis(["publish", str(a), target, *extra], env))
        assert line.startswith(f"weightvis: error: {want}"), line
    assert {k: len(r.commits) for k, r in hub.repos.items()} == before
    line = error_line(weightvis(["publish", str(a), "hf://spaces/org/new"],
                                env_for(hub, tmp_path / "home", token=None)))
    assert "publishing needs a write token: set HF_TOKEN or run 'hf auth login'" in line
    # --out hf://... is refused before rendering anything
    n = len(hub.log)
    line = error_line(weightvis([str(a.parent / "a-ckpt"), "--out", "hf://spaces/org/app"], env))
    assert line.startswith("weightvis: error: hf://spaces/org/app: a gradio Space"), line
    assert not [e for e in hub.log[n:] if e["method"] == "POST"]
    # a folder of a model repo: the model's own files stay
    o = weightvis(["publish", str(a), "hf://org/model", "--path-in-repo", "maps/a", "-q"], env)
    assert o.returncode == 0, o.stderr
    assert o.stdout.strip().endswith(f"{hub.endpoint}/org/model/tree/main/maps/a")
    remote = _remote(hub, "org/model", "model")
    assert {k: v for k, v in remote.items() if k.startswith("maps/a/")} == \
        _sha(_bundle_files(a), "maps/a/")
    assert {"viz/notes.txt", "config.json"} <= set(remote)


def test_render_out_hf_space_and_packed_publish(xet_hub: FakeHub, tmp_path: Path) -> None:
    hub = xet_hub
    hub.add_repo("org/model", files=sharded_files(llama_tensors(4, vocab=2500, hidden=256)))
    env = env_for(hub, tmp_path / "home", TMPDIR=str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    o = weightvis(["hf://org/model", "--out", "hf://spaces/org/live", "--workers", "1"], env)
    assert o.returncode == 0, o.stderr
    rendered, published = o.stdout.strip().splitlines()
    assert rendered.startswith("rendered a bundle to publish: ") and str(tmp_path) not in rendered
    assert published.endswith(f"{hub.endpoint}/spaces/org/live")
    assert list((tmp_path / "tmp").iterdir()) == []  # the temporary bundle is gone
    live = hub.files("org/live", "space")
    assert "manifest.json" in live and any(p.startswith("tiles/main/") for p in live)
    # the same render, published packed: a few shards instead of the loose tiles
    o = weightvis(["hf://org/model", "--out", str(tmp_path / "b"), "-q", "--workers", "1"], env)
    assert o.returncode == 0, o.stderr
    o = weightvis(["publish", str(tmp_path / "b"), "hf://spaces/org/packed", "--pack-above", "5",
                   "--pack-shard-mb", "0.8"], env)
    assert o.returncode == 0, o.stderr
    assert "(tiles packed)" in o.stdout
    files = hub.files("org/packed", "space")
    tiles = sorted(p for p in files if p.startswith("tiles/"))
    assert tiles and all(p.startswith("tiles/main/pack-") and p.endswith(".wvpack")
                         for p in tiles)
    loose = [p for p in (tmp_path / "b" / "tiles").rglob("*.png")]
    assert 1 < len(tiles) < len(loose)
    man = json.loads(hub.file_bytes("org/packed", "manifest.json", "space") or b"{}")
    assert [sh["file"] for sh in man["scenes"][0]["pack"]["shards"]] == tiles
    assert not list((tmp_path).glob(".b.weightvis-publish-*")), "staging left behind"
