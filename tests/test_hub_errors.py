"""Every way reading from the Hub can fail gives one line on stderr, exit 2, no traceback and no
token in any output (fake Hub on loopback, real huggingface_hub client, weightvis subprocesses);
plus the pure pieces: the hf:// grammar against huggingface_hub's own parser, the directory
rules, the scrubbing of messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from weightvis.errors import InputError
from weightvis.formats import choose_checkpoint_files
from weightvis.hub.uri import parse_hub_uri, ref_of_cached_path

from .fakehub import Entry, FakeHub
from .hub_fixtures import (  # noqa: F401  (fixtures)
    TOKEN,
    env_for,
    error_line,
    hub,
    llama_tensors,
    sharded_files,
    weightvis,
)

URIS = [
    "hf://org/m", "hf://org/m@v1/a.safetensors", "hf://datasets/org/ds@refs/pr/3/data/x.bin",
    "hf://org/m@refs/convert/parquet/x", "hf://org/m@feat%2Fb/file", "hf://spaces/o/s",
    "hf://models/o/m", "hf://org/m/", "hf://org/m/a@b/c", "hf://org/m@main/", "hf:///org/m",
    "hf://org/m@a@b/c", "hf://o/m@refs/pr/x/y", "hf://org/m/file@1.txt",
    # refused by both
    "hf://gpt2", "hf://org/m@", "hf://model/org/m", "hf://org/m//x", "hf://o--x/m",
    "hf://o/m.git", "hf://datasets", "hf://", "hf://org/-m", "hf://org/m@/x",
]


@pytest.mark.parametrize("uri", URIS)
def test_grammar_is_huggingface_hubs(uri: str) -> None:
    from huggingface_hub.errors import HfUriError
    from huggingface_hub.utils import parse_hf_uri

    try:
        h = parse_hf_uri(uri)
        want: object = (h.type, h.id, h.revision, h.path_in_repo)
    except HfUriError:
        want = "refused"
    try:
        got: object = tuple(parse_hub_uri(uri))
    except InputError as e:
        assert str(e).startswith(uri) and "\n" not in str(e)
        got = "refused"
    assert got == want


def test_pinned_spelling_and_cache_paths() -> None:
    ref = parse_hub_uri("hf://datasets/org/ds@feat%2Fx/sub/f.gguf")
    commit = "ab" * 20
    assert ref.uri == "hf://datasets/org/ds@feat%2Fx/sub/f.gguf"
    assert parse_hub_uri(ref.uri) == ref
    assert ref.pinned(commit) == f"hf://datasets/org/ds@{commit}/sub/f.gguf"
    got = ref_of_cached_path(f"/h/hub/datasets--org--ds/snapshots/{commit}/sub/f.gguf")
    assert got == (ref._replace(revision=None), commit)
    with pytest.raises(InputError, match="kernel repos hold no checkpoints"):
        parse_hub_uri("hf://kernels/org/k")


def test_directory_rules_on_a_listing() -> None:
    kinds = {"a.gguf": "gguf", "b.gguf": "gguf", "x.bin": "pytorch-zip", "w.safetensors":
             "safetensors", "tf_model.h5": "unknown"}
    pick = choose_checkpoint_files
    assert pick(list(kinds), kinds.__getitem__, "d") == ["w.safetensors"]
    assert pick(["m.safetensors.index.json", "w.safetensors"], kinds.get, "d") == \
        ["m.safetensors.index.json"]
    assert pick(["x.bin", "tf_model.h5", "README.md"], kinds.__getitem__, "d") == ["x.bin"]
    with pytest.raises(InputError, match=r"^hf://o/m: holds 2 GGUF files \(a\.gguf \(1\.00 GB"
                                         r"\), b\.gguf .*name one, e\.g\. hf://o/m/a\.gguf$"):
        pick(["a.gguf", "b.gguf"], kinds.__getitem__, "hf://o/m", size_of=lambda n: 10**9)
    parts = [f"m-0000{i}-of-00002.gguf" for i in (1, 2)]
    assert pick(parts, lambda n: "gguf", "d") == parts  # one split model is one checkpoint
    with pytest.raises(InputError, match="no checkpoint files found.*only README.md, sub"):
        pick(["README.md"], kinds.get, "d", others=["sub"])


def test_messages_are_scrubbed() -> None:
    from weightvis.hub.calls import scrub

    text = ("GET https://cdn.example/x/y?X-Amz-Signature=abc&sig=1 failed for "
            "hf_abcdefghijklmnop with Bearer xyz\nsecond line")
    got = scrub(text)
    assert got == "GET https://cdn.example/x/y failed for <hidden> with <hidden>"


# -- subprocesses against the fake Hub ---------------------------------------------------------
pytestmark_slow = pytest.mark.slow


def _seed(hub: FakeHub) -> None:
    files = sharded_files(llama_tensors(0), shards=1)
    hub.add_repo("org/model", files=files)
    hub.add_repo("org/private", files=files, private=True)
    hub.add_repo("org/gated", files=files, gated=True)


@pytest.mark.slow
def test_every_error_is_one_line(hub: FakeHub, tmp_path: Path) -> None:
    _seed(hub)
    huge = hub.repos[("model", "org/model")]
    index = b'{"weight_map": {"w": "big.safetensors"}}'
    repo = hub.add_repo("org/huge", files={"model.safetensors.index.json": index})
    hub.commit(repo, "main", {"big.safetensors": Entry(12 * 10**12, sha256="0" * 64)}, "12 TB")
    env = env_for(hub, tmp_path / "home")
    anon = env_for(hub, tmp_path / "home", token=None)
    out = str(tmp_path / "out")
    page = f"{hub.endpoint}/org/gated"
    cases: list[tuple[list[str], dict[str, str], str]] = [
        (["info", "hf://org/nope"], env,
         f"hf://org/nope: repository org/nope not found on {hub.endpoint} (a private repo?"),
        (["info", "hf://org/private"], anon, "hf://org/private: repository org/private not "
                                             "found"),
        (["info", "hf://org/model@v9"], env, "hf://org/model@v9: org/model has no revision "
                                             "'v9'"),
        (["info", f"hf://org/model@{'0' * 40}"], env, f"hf://org/model@{'0' * 40}: org/model "
                                                      f"has no revision '{'0' * 40}'"),
        (["info", "hf://org/model/nope.safetensors"], env,
         "hf://org/model/nope.safetensors: org/model has no file or folder 'nope.safetensors'"),
        (["hf://org/gated", "--out", out], anon,
         f"hf://org/gated: org/gated is gated: request access at {page}, then set HF_TOKEN"),
        (["info", "hf://org/gated"], anon, f"hf://org/gated: org/gated is gated: request access "
                                            f"at {page}"),
        (["info", "hf://org/model"], env_for(hub, tmp_path / "home", token="hf_bad_token_123"),
         "hf://org/model: the Hub rejected the token (HF_TOKEN or 'hf auth login')"),
        (["hf://org/huge", "--out", out], env, "hf://org/huge: needs 12000.00 GB more in the "
                                               "Hugging Face cache"),
        (["info", "hf://org/model"], env_for(hub, tmp_path / "empty", HF_HUB_OFFLINE="1"),
         "hf://org/model: revision 'main' is not in the local Hugging Face cache, and "
         "HF_HUB_OFFLINE=1"),
        (["info", "HuggingFaceTB/SmolLM2-135M"], env,
         "HuggingFaceTB/SmolLM2-135M: no such file or directory; for the Hugging Face Hub "
         "repo, write hf://HuggingFaceTB/SmolLM2-135M"),
        (["info", "hf://org"], env, "hf://org: not a Hub location (the repo id must be"),
        (["info", "hf://buckets/org/b"], env, "hf://buckets/org/b: buckets hold no checkpoints"),
        (["diff", "hf://org/model", "hf://org/nope", "--out", out], env,
         "hf://org/nope: repository org/nope not found"),
        (["hf://org/model", "--stream", "--layout", "hilbert", "--hilbert-unit", "byte",
          "--out", out], env, "--hilbert-unit byte draws every byte of the files"),
    ]
    for args, e, want in cases:
        n = len(hub.log)
        line = error_line(weightvis(args, e, timeout=120))
        assert line.startswith(f"weightvis: error: {want}"), (args, line)
        if "huge" in args[0]:
            assert not [r for r in hub.log[n:] if r["kind"] == "cdn"], "downloaded anyway"
        if "HF_HUB_OFFLINE" in e:
            assert len(hub.log) == n, "a request in offline mode"
    assert not (tmp_path / "out").exists()
    assert huge.id == "org/model"
    # the token went to the Hub only, never to the CDN
    assert not [r for r in hub.log if r["kind"] == "cdn" and r["auth"]]


@pytest.mark.slow
def test_rate_limits_are_retried_then_reported(hub: FakeHub, tmp_path: Path) -> None:
    _seed(hub)
    env = env_for(hub, tmp_path / "home", WEIGHTVIS_HUB_RETRIES="3")
    # two 429s: waited out (Retry-After: 1), then it works
    hub.inject("GET", r"^/api/models/org/model$", 429, count=2, headers={"Retry-After": "1"})
    o = weightvis(["info", "hf://org/model"], env)
    assert o.returncode == 0, o.stderr
    tries = [r for r in hub.log if r["path"] == "/api/models/org/model"]
    assert len(tries) == 3
    # still limited after the retries: one line naming it
    hub.inject("GET", r"^/api/models/org/model$", 429, count=50, headers={"Retry-After": "0"})
    n = len(hub.log)
    line = error_line(weightvis(["info", "hf://org/model"], env))
    assert line == ("weightvis: error: hf://org/model: rate limited by the Hub (HTTP 429), "
                    "still after 3 retries over 0 s; try again later (a logged-in user gets a "
                    "larger quota)")
    assert len([r for r in hub.log[n:] if r["path"] == "/api/models/org/model"]) == 4


@pytest.mark.slow
def test_unreachable_hub(tmp_path: Path) -> None:
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "home"),
           "HF_TOKEN": TOKEN}
    line = error_line(weightvis(["info", "hf://org/model"], env))
    assert line.startswith("weightvis: error: hf://org/model: cannot reach the Hub at "
                           "http://127.0.0.1:9 (")


def test_library_render_to_a_hub_location_is_refused(ramp_file: Path) -> None:
    import weightvis
    from weightvis.errors import OutputError

    with pytest.raises(OutputError, match=r"^hf://spaces/org/x: a bundle is written to a folder"):
        weightvis.render([ramp_file], "hf://spaces/org/x", workers=1)
    assert not Path("hf:").exists()
