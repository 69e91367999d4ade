"""Byte sources: a checkpoint read through HTTP ranges (a loopback server owned by the test) reads
exactly as through the memory-mapped local file, for safetensors, GGUF and PyTorch (zip and
legacy); the HTTP source's cache, coalescing and errors; the local source's zero-copy views."""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from weightvis.errors import FormatError
from weightvis.formats import MultiReader, open_checkpoint, open_sources
from weightvis.formats.safetensors import write_safetensors
from weightvis.sources import BlockCache, HTTPRangeSource, LocalFileSource, SourceFile

from .conftest import ramp_tensors
from .gguf_fixtures import stored_tensor, write_gguf

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


class _Server:
    """A ThreadingHTTPServer on 127.0.0.1 (port 0) serving ``files`` from memory, with Range
    support; ``ignore_range`` answers 200 with the whole file instead."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.ignore_range = False
        self.ranges: list[tuple[int, int]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 10

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                data = outer.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                m = _RANGE.fullmatch(self.headers.get("Range", ""))
                if m is None or outer.ignore_range:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                lo = int(m.group(1))
                hi = min(len(data) - 1, int(m.group(2))) if m.group(2) else len(data) - 1
                if lo >= len(data):
                    self.send_error(416)
                    return
                outer.ranges.append((lo, hi + 1))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {lo}-{hi}/{len(data)}")
                self.send_header("Content-Length", str(hi + 1 - lo))
                self.end_headers()
                self.wfile.write(data[lo:hi + 1])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}/{name}"

    def add(self, path: Path) -> str:
        self.files["/" + path.name] = path.read_bytes()
        return self.url(path.name)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture()
def server() -> Iterator[_Server]:
    s = _Server()
    try:
        yield s
    finally:
        s.stop()


# -- checkpoints in every format -------------------------------------------------------------------
def _bf16(a: np.ndarray) -> np.ndarray:
    return (a.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)


def _safetensors(d: Path) -> Path:
    ramp = ramp_tensors()
    spec = {k: ("BF16" if i % 2 else "F32", v.shape, _bf16(v) if i % 2 else v)
            for i, (k, v) in enumerate(ramp.items())}
    p = d / "ramp.safetensors"
    write_safetensors(p, spec, {"format": "pt"})
    return p


def _gguf(d: Path) -> Path:
    rng = np.random.default_rng(3)
    q4, _ = stored_tensor("Q4_K", (6, 512), rng)
    q8, _ = stored_tensor("Q8_0", (4, 64), rng)
    vocab = [f"token-{i:06d}" for i in range(12000)]  # a header longer than the first reads
    return write_gguf(d / "m.gguf", {
        "blk.0.ffn_up.weight": ("Q4_K", q4), "blk.0.attn_q.weight": ("Q8_0", q8),
        "token_embd.weight": ("F32", rng.standard_normal((100, 32)).astype(np.float32)),
        "output_norm.weight": ("F16", rng.standard_normal(32).astype(np.float16))},
        kv={"tokenizer.ggml.tokens": vocab})


def _pytorch(d: Path, container: str) -> Path:
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 48, generator=g)
    sd = {"a.weight": w, "a.weight_t": w.t(), "b.bias": torch.randn(48, generator=g),
          "c.weight": torch.randn(3, 5, 7, generator=g).to(torch.bfloat16),
          "d.weight": torch.randn(20, 30, generator=g).to(torch.float16)[:, 2:17]}
    p = d / f"m-{container}.pt"
    torch.save(sd, p, _use_new_zipfile_serialization=(container == "zip"))
    return p


_MAKERS = {"safetensors": _safetensors, "gguf": _gguf,
           "pytorch-zip": lambda d: _pytorch(d, "zip"),
           "pytorch-legacy": lambda d: _pytorch(d, "legacy")}


def _blocks(rows: int, cols: int) -> list[tuple[int, int, int, int]]:
    out = [(0, rows, 0, cols), (0, 0, 0, cols)]
    if rows > 1:
        out.append((rows // 2, rows, 0, cols))
    if cols > 2:
        out.append((0, rows, 1, cols - 1))
    return out


def _assert_same(local: MultiReader, remote: MultiReader) -> None:
    key = [(t.name, t.shape, t.dtype) for t in local.tensors()]
    assert [(t.name, t.shape, t.dtype) for t in remote.tensors()] == key
    assert remote.format == local.format
    for t in local.tensors():
        assert remote.info(t.name).shape == t.shape
        for block in _blocks(t.e_rows, t.e_cols):
            a = local.read(t.name, *block)
            b = remote.read(t.name, *block)
            assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
            np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
            ca, cb = local.read_codes(t.name, *block), remote.read_codes(t.name, *block)
            assert (ca is None) == (cb is None)
            if ca is not None and cb is not None:
                np.testing.assert_array_equal(ca, cb)
        remote.release()


@pytest.mark.parametrize("kind", sorted(_MAKERS))
@pytest.mark.parametrize("block", [256, 1 << 20])
def test_http_reads_equal_local_reads(tmp_path: Path, server: _Server, kind: str,
                                      block: int) -> None:
    path = _MAKERS[kind](tmp_path)
    url = server.add(path)
    with open_checkpoint([path]) as local, \
            open_sources([HTTPRangeSource(url, block=block, cache=BlockCache(16 * block))]
                         ) as remote:
        assert remote.files == (Path("/" + path.name),) or list(remote.files) == [
            Path("/" + path.name)]
        assert remote.metadata[str(Path("/" + path.name))] == local.metadata[str(path)]
        _assert_same(local, remote)
        raw = remote.readers[0].raw_bytes()  # type: ignore[attr-defined]
        assert raw.tobytes() == path.read_bytes()
    assert server.ranges and all(hi > lo for lo, hi in server.ranges)


def test_local_views_are_zero_copy_and_tracked(tmp_path: Path) -> None:
    p = tmp_path / "f.bin"
    p.write_bytes(bytes(range(256)) * 64)
    with LocalFileSource(p) as src:
        assert src.size == 256 * 64 and src.name == str(p) and src.path == p
        v = src.view(10, 20)
        assert v.tobytes() == bytes(range(10, 20)) and not v.flags.writeable
        assert np.shares_memory(v, src.view(0, src.size, track=False))
        assert src.touched == (10, 20)
        src.view(5000, 6000)
        assert src.touched == (10, 6000)
        src.release()
        assert src.touched is None
        assert src.view(0, src.size, track=False).tobytes() == p.read_bytes()
        assert src.touched is None
        with pytest.raises(FormatError, match=r"at byte 16000.*outside the file"):
            src.view(16000, 16385)


def test_http_blocks_coalesce_and_the_cache_is_bounded(server: _Server) -> None:
    data = bytes(np.random.default_rng(0).integers(0, 256, 100_000, dtype=np.uint8))
    server.files["/blob"] = data
    cache = BlockCache(8000)
    src = HTTPRangeSource(server.url("blob"), block=1000, cache=cache)
    assert src.size == len(data) and src.requests == 1  # size learnt from block 0
    assert server.ranges == [(0, 1000)]
    v = src.view(10, 20)
    assert v.tobytes() == data[10:20] and not v.flags.writeable and src.requests == 1
    server.ranges.clear()
    assert src.view(2500, 6200).tobytes() == data[2500:6200]
    assert server.ranges == [(2000, 7000)]  # four missing blocks, one aligned request
    server.ranges.clear()
    assert src.view(1500, 6500).tobytes() == data[1500:6500]
    assert server.ranges == [(1000, 2000)]  # only the block not cached yet
    assert src.cached_bytes <= 8000
    for lo in range(0, 100_000, 3000):
        assert src.view(lo, lo + 10).tobytes() == data[lo:lo + 10]
        assert src.cached_bytes <= 8000
    server.ranges.clear()
    assert src.view(0, 50_000).tobytes() == data[:50_000]  # bigger than the cache: exact
    assert server.ranges == [(0, 50_000)]
    assert src.view(99_990, 100_000).tobytes() == data[-10:]  # the short last block
    assert src.view(7, 7).size == 0
    src.release()  # nothing to drop: the cache is bounded for the whole process
    server.ranges.clear()
    assert src.view(99_000, 99_100).tobytes() == data[99_000:99_100] and not server.ranges
    f = SourceFile(src)
    f.seek(-5, 2)
    assert f.read() == data[-5:]
    other = HTTPRangeSource(server.url("blob"), block=1000, cache=cache)  # one bound for both
    for lo in range(0, 100_000, 1500):
        assert other.view(lo, lo + 700).tobytes() == data[lo:lo + 700]
        assert cache.nbytes <= 8000 and src.cached_bytes + other.cached_bytes == cache.nbytes
    other.close()
    assert other.cached_bytes == 0
    src.close()
    with pytest.raises(ValueError, match="closed"):
        src.view(0, 1)


def test_http_file_shorter_than_a_block(server: _Server) -> None:
    server.files["/small"] = b"0123456789"
    src = HTTPRangeSource(server.url("small"))
    assert src.size == 10 and src.read(3, 7) == b"3456"
    with pytest.raises(FormatError, match=r"small at byte 8: byte range \[8, 11\)"):
        src.view(8, 11)


def test_http_errors_name_the_url_and_offset(server: _Server) -> None:
    server.files["/blob"] = bytes(5000)
    url = server.url("blob")
    server.ignore_range = True
    with pytest.raises(FormatError, match=rf"{re.escape(url)} at byte 0: .*HTTP 200.*Range"):
        HTTPRangeSource(url, block=1000)
    server.ignore_range = False
    src = HTTPRangeSource(url, block=1000, cache=BlockCache(2000))
    server.ignore_range = True
    with pytest.raises(FormatError, match=rf"{re.escape(url)} at byte 3000: .*not 206"):
        src.view(3100, 3200)
    server.ignore_range = False
    with pytest.raises(FormatError, match=r"missing at byte 0: HTTP 404"):
        HTTPRangeSource(server.url("missing"))
    with pytest.raises(FormatError, match=r"at byte 5000: .*HTTP 416"):
        HTTPRangeSource(url, size=6000, block=1000).view(5000, 5100)
    with pytest.raises(ValueError, match="not an http"):
        HTTPRangeSource("ftp://127.0.0.1/x")


def test_a_broken_remote_checkpoint_is_a_format_error(server: _Server) -> None:
    server.files["/bad.safetensors"] = b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      "
    with pytest.raises(FormatError, match=r"bad\.safetensors at byte 9: header is not valid"):
        open_sources([HTTPRangeSource(server.url("bad.safetensors"))])
    server.files["/junk.bin"] = b"hello world, not a checkpoint"
    with pytest.raises(FormatError, match=r"junk\.bin: not a recognised checkpoint format"):
        open_sources([HTTPRangeSource(server.url("junk.bin"))])


def test_release_after_every_tensor_does_not_refetch(tmp_path: Path, server: _Server) -> None:
    """The value pass releases after every tensor: over HTTP that must not fetch a block again
    for each tiny tensor in it."""
    rng = np.random.default_rng(2)
    spec = {f"model.layers.{i // 50}.mlp.experts.{i % 50}.up_proj.weight":
            ("BF16", (4, 8), rng.integers(0, 1 << 16, 32).astype(np.uint16)) for i in range(2000)}
    path = tmp_path / "many.safetensors"
    write_safetensors(path, spec)
    src = HTTPRangeSource(server.add(path), block=1 << 16, cache=BlockCache(1 << 20))
    with open_sources([src]) as r, open_checkpoint([path]) as local:
        before = src.requests
        for t in r.tensors():
            np.testing.assert_array_equal(r.read_codes(t.name, 0, t.e_rows),
                                          local.read_codes(t.name, 0, t.e_rows))
            r.release()
        blocks = -(-path.stat().st_size // (1 << 16))
        assert src.requests - before <= blocks
