"""Reading hf:// inputs against a fake Hub on loopback (tests/fakehub.py) with the real
huggingface_hub client, in weightvis subprocesses: info from header ranges only, renders that
equal the local ones (downloaded, offline from the cache, streamed), diff, file lists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .fakehub import FakeHub
from .hub_fixtures import (  # noqa: F401  (fixtures)
    TOKEN,
    env_for,
    gguf_with_big_header,
    hub,
    llama_tensors,
    ranges,
    sharded_files,
    tile_bytes,
    weightvis,
    whole_gets,
    write_files,
)

pytestmark = pytest.mark.slow

MIB = 1 << 20


def _info_json(args: list[str], env: dict[str, str]) -> dict[str, object]:
    o = weightvis(["info", *args, "--json"], env)
    assert o.returncode == 0, o.stderr
    doc = json.loads(o.stdout)
    doc.pop("files")
    return doc


def test_info_sharded_reads_headers_only(hub: FakeHub, tmp_path: Path) -> None:
    # shards of ~3.3 MB each: a header read is their first MiB, never more
    files = sharded_files(llama_tensors(vocab=6000, hidden=256), shards=2)
    assert all(len(d) > 3 * MIB for n, d in files.items() if n.endswith(".safetensors"))
    hub.add_repo("org/sharded", files=files)
    local = _info_json([str(write_files(tmp_path / "local", files))], {})
    remote = _info_json(["hf://org/sharded"], env_for(hub, tmp_path / "home"))
    assert remote == local
    got = ranges(hub.log)
    assert len(got) == 2 and whole_gets(hub.log) == []
    for _path, first, last in got:
        assert first == 0 and last < MIB
    # the shards were never fetched through /resolve (only HEADs: one resolver request each)
    shard_gets = [e for e in hub.log if e["kind"] == "hub" and e["method"] == "GET"
                  and e["path"].endswith(".safetensors")]
    assert shard_gets == []
    heads = [e["path"] for e in hub.log if e["method"] == "HEAD"
             and e["path"].endswith(".safetensors")]
    assert sorted(heads) == sorted(set(heads)) and len(heads) == 2


def test_info_gguf_reads_a_growing_prefix(hub: FakeHub, tmp_path: Path) -> None:
    path = tmp_path / "local" / "model-Q.gguf"
    path.parent.mkdir()
    header = gguf_with_big_header(path)
    size = path.stat().st_size
    assert MIB < header < size - 5 * MIB  # a header of a few MB before ~6 MB of data
    hub.add_repo("org/gguf", files={"model-Q.gguf": path.read_bytes()})
    local = _info_json([str(path)], {})
    remote = _info_json(["hf://org/gguf"], env_for(hub, tmp_path / "home"))
    assert remote == local
    got = ranges(hub.log)
    assert got[0][1:] == (0, 15)  # the magic bytes, to choose the file as in a local folder
    got = got[1:]
    assert whole_gets(hub.log) == [] and len(got) >= 2  # grown at least once
    end = max(last for _, _, last in got) + 1
    assert header <= end <= 2 * header + MIB, (header, end, size)
    assert sum(last + 1 - first for _, first, last in got) == end  # each byte read once


def test_render_pinned_branch_equals_local_then_offline_then_stream(hub: FakeHub,
                                                                    tmp_path: Path) -> None:
    base = sharded_files(llama_tensors(0), shards=2)
    dev = sharded_files(llama_tensors(1), shards=2)  # the branch holds other weights
    repo = hub.add_repo("org/model", files=base)
    repo.refs["dev"] = repo.refs["main"]
    commit = hub.commit(repo, "dev", {p: hub.entry(p, d) for p, d in dev.items()}, "dev")
    local = write_files(tmp_path / "local", dev)
    ref = weightvis([str(local), "--out", str(tmp_path / "ref"), "--workers", "2", "-q"], {})
    assert ref.returncode == 0, ref.stderr

    home = tmp_path / "home"
    o = weightvis(["hf://org/model@dev", "--out", str(tmp_path / "b"), "--workers", "2"],
                  env_for(hub, home))
    assert o.returncode == 0, o.stderr
    assert tile_bytes(tmp_path / "b") == tile_bytes(tmp_path / "ref")
    man = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert man["source"]["uris"] == [f"hf://org/model@{commit}/{f}"
                                     for f in man["source"]["files"]]
    assert man["title"] == "org/model"
    for f in (tmp_path / "b").rglob("*"):  # no token, no signed URL anywhere in the bundle
        assert not f.is_file() or (TOKEN.encode() not in f.read_bytes()
                                   and b"sig=" not in f.read_bytes()), f
    # one revision lookup, then only the pinned commit
    revs = {e["path"] for e in hub.log if e["kind"] == "hub"} - {"/api/agent-harnesses"}
    assert "/api/models/org/model/revision/dev" in revs
    assert all(commit in p for p in revs if "/resolve/" in p or "/tree/" in p)

    n = len(hub.log)
    o = weightvis(["hf://org/model@dev", "--out", str(tmp_path / "offline"), "-q"],
                  env_for(hub, home, HF_HUB_OFFLINE="1"))
    assert o.returncode == 0, o.stderr
    assert len(hub.log) == n  # not one request
    assert tile_bytes(tmp_path / "offline") == tile_bytes(tmp_path / "ref")
    # info of cached files reads them from the cache: API calls only, offline none at all
    info = _info_json(["hf://org/model@dev"], env_for(hub, home))
    assert not [e for e in hub.log[n:] if e["kind"] == "cdn" or e["method"] == "HEAD"]
    assert _info_json(["hf://org/model@dev"], env_for(hub, home, HF_HUB_OFFLINE="1")) == info
    assert info == _info_json([str(local)], {})
    n = len(hub.log)

    o = weightvis(["hf://org/model@dev", "--out", str(tmp_path / "s"), "--stream",
                   "--workers", "2", "-q"], env_for(hub, tmp_path / "home-stream"))
    assert o.returncode == 0, o.stderr
    assert tile_bytes(tmp_path / "s") == tile_bytes(tmp_path / "ref")
    log = hub.log[n:]
    assert whole_gets(log) == [] and len(ranges(log)) > 0
    heads = [e["path"] for e in log if e["method"] == "HEAD"]
    assert len(heads) == len(set(heads)), "one HEAD per file for the whole run"
    cached = list((tmp_path / "home-stream" / "hub").rglob("*.safetensors"))
    assert cached == [], "--stream downloaded a checkpoint file"


def test_download_survives_a_cut_and_resumes_per_file(hub: FakeHub, tmp_path: Path) -> None:
    files = sharded_files(llama_tensors(2, vocab=3000, hidden=256), shards=2)
    hub.add_repo("org/cut", files=files)
    env = env_for(hub, tmp_path / "home")
    # a run whose second shard cannot be fetched fails with one line ...
    hub.inject("GET", r"^/lfs/", 404, count=1)
    o = weightvis(["hf://org/cut", "--out", str(tmp_path / "b"), "-q", "--workers", "1"], env)
    assert "weightvis: error: hf://org/cut" in o.stderr and not (tmp_path / "b").exists()
    done = {p.name for p in (tmp_path / "home" / "hub").rglob("model-*.safetensors")}
    assert len(done) == 1  # ... and keeps the shard it completed
    # the next run fetches only what is missing; a connection cut mid-file is retried
    n = len(hub.log)
    hub.truncate_next = 1
    o = weightvis(["hf://org/cut", "--out", str(tmp_path / "b"), "-q", "--workers", "1"], env)
    assert o.returncode == 0, o.stderr
    gets = {e["path"] for e in hub.log[n:] if e["kind"] == "cdn" and e["method"] == "GET"}
    assert len(gets) == 1 and len([e for e in hub.log[n:] if e["kind"] == "cdn"]) == 2
    local = write_files(tmp_path / "local", files)
    ref = weightvis([str(local), "--out", str(tmp_path / "ref"), "-q", "--workers", "1"], {})
    assert ref.returncode == 0
    assert tile_bytes(tmp_path / "b") == tile_bytes(tmp_path / "ref")


def test_diff_of_two_hub_repos_is_the_local_diff(hub: FakeHub, tmp_path: Path) -> None:
    a = sharded_files(llama_tensors(3), shards=1)
    tb = llama_tensors(3)
    tb["model.layers.1.mlp.up_proj.weight"][7, :] += 0.25
    b = {**sharded_files(tb, shards=2),
         "README.md": b"---\nbase_model: org/base\nbase_model_relation: finetune\n---\n"}
    hub.add_repo("org/base", files=a)
    hub.add_repo("org/finetune", files=b)
    la, lb = write_files(tmp_path / "base", a), write_files(tmp_path / "finetune", b)
    ref = weightvis(["diff", str(la), str(lb), "--out", str(tmp_path / "ref"), "-q",
                     "--finetune"], {})
    assert ref.returncode == 0, ref.stderr
    o = weightvis(["diff", "hf://org/base", "hf://org/finetune", "--out", str(tmp_path / "d")],
                  env_for(hub, tmp_path / "home"))
    assert o.returncode == 0, o.stderr
    assert "finetune mode" in o.stdout  # from B's model card: base_model: org/base
    assert tile_bytes(tmp_path / "d") == tile_bytes(tmp_path / "ref")
    got = json.loads((tmp_path / "d" / "diff.json").read_text())
    want = json.loads((tmp_path / "ref" / "diff.json").read_text())
    assert got["pairs"] == want["pairs"] and got["summary"] == want["summary"]
    assert got["finetune_reason"] == "B's model card declares base_model: org/base (finetune)"
    assert got["a"]["title"] == "org/base" and got["b"]["title"] == "org/finetune"
    man = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert all(u.startswith("hf://org/finetune@") for u in man["source"]["b"]["uris"])


def test_file_lists_and_repo_files(hub: FakeHub, tmp_path: Path) -> None:
    gguf_path = tmp_path / "m.gguf"
    gguf_with_big_header(gguf_path, tokens=100)
    hub.add_repo("org/quants", files={"m-Q4.gguf": gguf_path.read_bytes(),
                                      "m-Q8.gguf": gguf_path.read_bytes(), "notes.txt": b"hi"})
    env = env_for(hub, tmp_path / "home")
    o = weightvis(["hf://org/quants", "--out", str(tmp_path / "x")], env)
    assert "holds 2 GGUF files (m-Q4.gguf (" in o.stderr and "hf://org/quants/m-Q4.gguf" \
        in o.stderr, o.stderr
    listing = tmp_path / "inputs.txt"
    listing.write_text("# one quantization\nhf://org/quants/m-Q8.gguf\n")
    o = weightvis(["-l", str(listing), "--out", str(tmp_path / "b"), "-q"], env)
    assert o.returncode == 0, o.stderr
    man = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert man["source"]["files"] == ["m-Q8.gguf"] and man["title"] == "org/quants/m-Q8.gguf"
    # only the named file was downloaded
    got = {p.name for p in (tmp_path / "home" / "hub").rglob("*.gguf")}
    assert got == {"m-Q8.gguf"}


def test_expired_cdn_url_is_renewed(hub: FakeHub, tmp_path: Path) -> None:
    files = sharded_files(llama_tensors(6), shards=1)
    hub.add_repo("org/model", files=files)
    hub.inject("GET", r"^/lfs/", 403, count=1)  # the signed URL "expired"
    remote = _info_json(["hf://org/model"], env_for(hub, tmp_path / "home"))
    assert remote == _info_json([str(write_files(tmp_path / "local", files))], {})
    heads = [e["path"] for e in hub.log if e["method"] == "HEAD"
             and e["path"].endswith(".safetensors")]
    assert len(heads) == 2  # asked the Hub again for the file's URL, once


def test_private_repo_of_plain_git_files(tmp_path: Path) -> None:
    from .hub_fixtures import TOKEN

    files = sharded_files(llama_tensors(7), shards=1)
    with FakeHub(tokens={TOKEN: "tester"}, lfs_rule=lambda *a: False, lifetime=120) as h:
        h.add_repo("org/priv", files=files, private=True)
        remote = _info_json(["hf://org/priv"], env_for(h, tmp_path / "home"))
        # not LFS: the bytes come from the Hub itself, by ranges, with the token; no CDN
        got = ranges(h.log, "hub")
        assert got and not [e for e in h.log if e["kind"] == "cdn"]
        assert all(e["auth"] for e in h.log if e["kind"] == "hub" and e["range"])
    assert remote == _info_json([str(write_files(tmp_path / "local", files))], {})
