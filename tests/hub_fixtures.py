"""Helpers of the Hub tests: a fake Hub per test (tests/fakehub.py, loopback only, stops by
itself), checkpoints to seed it with, the environment a weightvis subprocess needs to talk to it,
and readers of its request log."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .fakehub import FakeHub
from .fuzz.common import Outcome, broken_promise, run_cli

TOKEN = "hf_test_token_do_not_print_0123456789"
"""The fake Hub's valid token: no output may ever contain it."""


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub(tokens={TOKEN: "tester"}, lifetime=300) as h:
        yield h


def env_for(hub: FakeHub, home: Path, *, token: str | None = TOKEN, **extra: str
            ) -> dict[str, str]:
    """The environment of a weightvis process talking to ``hub`` with ``home`` as HF_HOME."""
    env = {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(home), "HF_HUB_DISABLE_TELEMETRY": "1",
           "HF_HUB_DISABLE_UPDATE_CHECK": "1", "NO_PROXY": "127.0.0.1,127.0.0.2",
           "WEIGHTVIS_HUB_MAX_WAIT": "2", **extra}
    if token is not None:
        env["HF_TOKEN"] = token
    return env


def weightvis(args: list[str], env: dict[str, str], *, timeout: float = 300) -> Outcome:
    """Run the CLI; fail the test on a broken promise (traceback, several error lines, hang) or
    on a token in any output."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    o = run_cli(args, env={**clean, **env}, timeout=timeout)
    problem = broken_promise(o)
    assert problem is None, f"{args}: {problem}"
    for text in (o.stdout, o.stderr):
        assert TOKEN not in text and "hf_bad" not in text and "sig=" not in text, text
    return o


def error_line(o: Outcome) -> str:
    assert o.returncode == 2, (o.returncode, o.stdout[-2000:], o.stderr[-2000:])
    (line,) = [ln for ln in o.stderr.splitlines() if ln.strip()]
    return line


# -- checkpoints -------------------------------------------------------------------------------
def llama_tensors(seed: int = 0, *, vocab: int = 600, hidden: int = 64, layers: int = 2,
                  dtype: Any = np.float16) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = {"model.embed_tokens.weight": rng.standard_normal((vocab, hidden))}
    for i in range(layers):
        p = f"model.layers.{i}."
        t[p + "self_attn.q_proj.weight"] = rng.standard_normal((hidden, hidden))
        t[p + "mlp.up_proj.weight"] = rng.standard_normal((hidden * 3, hidden))
        t[p + "input_layernorm.weight"] = rng.standard_normal(hidden)
    t["lm_head.weight"] = rng.standard_normal((vocab, hidden))
    return {k: (v * 0.05).astype(dtype) for k, v in t.items()}


def sharded_files(tensors: dict[str, np.ndarray], shards: int = 2,
                  config: dict[str, Any] | None = None) -> dict[str, bytes]:
    """A sharded safetensors checkpoint as repo files: shards, index, config.json."""
    from safetensors.numpy import save

    names = list(tensors)
    files: dict[str, bytes] = {}
    weight_map = {}
    for k in range(shards):
        part = names[k::shards]
        fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        files[fname] = save({n: tensors[n] for n in part}, metadata={"format": "pt"})
        weight_map.update({n: fname for n in part})
    files["model.safetensors.index.json"] = json.dumps(
        {"metadata": {}, "weight_map": weight_map}).encode()
    files["config.json"] = json.dumps(config or {"model_type": "llama"}).encode()
    return files


def write_files(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def gguf_with_big_header(path: Path, *, tokens: int = 120_000, seed: int = 0) -> int:
    """A GGUF whose header (a tokenizer vocabulary) is a few MB, before ~6 MB of tensor data;
    returns the header's length (where the data starts)."""
    import gguf

    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_token_list([f"token-{i:08d}-{'x' * 8}" for i in range(tokens)])
    w.add_tensor("token_embd.weight", rng.standard_normal((3000, 512)).astype(np.float32))
    w.add_tensor("blk.0.attn_q.weight", rng.standard_normal((512, 512)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    from weightvis.formats.gguf import GGUFReader

    with GGUFReader(path) as r:
        return int(r.data_start)


# -- the request log ---------------------------------------------------------------------------
_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


def ranges(log: list[dict[str, Any]], kind: str = "cdn") -> list[tuple[str, int, int]]:
    """(path, first, last) of every ranged GET of ``kind``."""
    out = []
    for e in log:
        if e["kind"] == kind and e["method"] == "GET" and e["range"]:
            m = _RANGE.match(e["range"])
            assert m is not None, e["range"]
            out.append((e["path"], int(m.group(1)), int(m.group(2) or -1)))
    return out


def whole_gets(log: list[dict[str, Any]]) -> list[str]:
    """Paths of GETs of LFS bytes without a Range (whole-file downloads)."""
    return [e["path"] for e in log if e["kind"] == "cdn" and e["method"] == "GET"
            and not e["range"]]


def tile_bytes(bundle: Path) -> dict[str, bytes]:
    return {p.relative_to(bundle).as_posix(): p.read_bytes()
            for p in sorted((bundle / "tiles").rglob("*")) if p.is_file()}
