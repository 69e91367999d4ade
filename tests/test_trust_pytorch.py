"""Hostile and broken PyTorch checkpoints (issue 11, part B): views that claim more elements than
their storage holds, zip bombs and lying zip headers, and every malformed input the attack
found - each refused before anything big is allocated, with one error line naming the file
(and tensor / entry / byte), exit 2; the honest neighbours of each case still read, bit for bit.

Memory is checked on the CLI in a subprocess (``run_cli`` samples the process tree's RSS)."""

from __future__ import annotations

import contextlib
import io
import re
import struct
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from weightvis import cli
from weightvis.errors import FormatError
from weightvis.formats import zipread
from weightvis.formats.pt_limits import INFLATE_ALLOWANCE, VIEW_ALLOWANCE
from weightvis.formats.pytorch import PyTorchReader

from . import pytorch_fixtures as fx
from .fuzz.common import broken_promise, run_cli

F32 = np.arange(12, dtype="<f4")
MiB = 1 << 20


def one_error(args: list[str]) -> str:
    """``cli.main(args)`` in this process must fail with exit 2 and one line: that line."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(args)
    lines = err.getvalue().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("weightvis: error: "), (
        code, err.getvalue())
    return lines[0]


def refused(p: Path, pattern: str) -> FormatError:
    """The reader refuses ``p`` with a message naming it and matching ``pattern``; ``info``
    gives the same words on one line."""
    with pytest.raises(FormatError) as ei:
        PyTorchReader(p)
    msg = str(ei.value)
    assert msg.startswith(str(p)) and re.search(pattern, msg), msg
    assert one_error(["info", str(p)]) == f"weightvis: error: {msg}"
    return ei.value


def zip_with(tmp_path: Path, name: str, tensors: dict[str, Any],
             storages: dict[str, bytes] | None = None, **kw: Any) -> Path:
    return fx.write_zip(tmp_path / name, fx.dumps(fx.ordered_dict(tensors)),
                        {"0": F32.tobytes()} if storages is None else storages, **kw)


# -- 1. views: extents and the element budget -----------------------------------------------------
def test_stride0_view_of_one_element_is_refused_before_anything_is_drawn(tmp_path: Path) -> None:
    """The attack: 637 bytes, a 1-element storage viewed as 2^20 x 2^20 with strides (0, 0)."""
    p = zip_with(tmp_path, "stride0.pt",
                 {"w": fx.tensor("0", "FloatStorage", 1, 0, (1 << 20, 1 << 20), (0, 0))},
                 {"0": F32[:1].tobytes()})
    assert p.stat().st_size < 1000
    t0 = time.perf_counter()
    e = refused(p, r"tensor 'w': 1,099,511,627,776 elements \(size \[1048576, 1048576\]\) over 1 "
                   r"of its storage; .*from 4 bytes of storage, more than 4 per byte.*"
                   r"WEIGHTVIS_MAX_VIEW_RATIO")
    assert e.tensor == "w" and time.perf_counter() - t0 < 5
    o = run_cli([str(p), "--out", str(tmp_path / "b"), "-q"], timeout=60)
    assert broken_promise(o) is None and o.returncode == 2, o
    assert o.peak_rss < 600 * MiB and not (tmp_path / "b").exists()


def test_real_expand_views_and_tied_weights_render(tmp_path: Path) -> None:
    """Overlap is not refused as such: a stride-0 broadcast bias, an expanded position_ids
    buffer and a tied embedding read exactly as torch materialises them."""
    torch = pytest.importorskip("torch")
    emb = torch.randn(50, 16)
    sd = {"bias": torch.randn(16).expand(40, 16), "position_ids": torch.arange(64).expand(1, -1),
          "embed.weight": emb, "lm_head.weight": emb, "row": torch.randn(1, 8).expand(300, 8)}
    assert sd["bias"].stride() == (0, 1)
    p = tmp_path / "tied.pt"
    torch.save(sd, p)
    with PyTorchReader(p) as r:
        for name, t in sd.items():
            want = t.float().numpy().reshape(t.shape[0], -1)
            np.testing.assert_array_equal(r.read_all(name), want, err_msg=name)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert cli.main([str(p), "--out", str(tmp_path / "b"), "--workers", "1", "-q"]) == 0


def test_the_view_budget_is_an_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """256 float32 (1 KiB) broadcast to 2^17 rows: 2^25 elements, past 4 per byte + 2^24; with
    WEIGHTVIS_MAX_VIEW_RATIO raised, it opens and reads as the broadcast."""
    base = np.arange(256, dtype="<f4")
    p = zip_with(tmp_path, "wide.pt",
                 {"w": fx.tensor("0", "FloatStorage", 256, 0, (1 << 17, 256), (0, 1))},
                 {"0": base.tobytes()})
    assert (1 << 25) > 4 * 1024 + VIEW_ALLOWANCE
    refused(p, r"tensor 'w': 33,554,432 elements .* from 1,024 bytes of storage")
    monkeypatch.setenv("WEIGHTVIS_MAX_VIEW_RATIO", str(1 << 15))
    with PyTorchReader(p) as r:
        assert r.info("w").shape == (1 << 17, 256)
        np.testing.assert_array_equal(r.read("w", 70000, 70003, 10, 20),
                                      np.broadcast_to(base[10:20], (3, 10)))
    monkeypatch.setenv("WEIGHTVIS_MAX_VIEW_RATIO", "lots")
    assert "WEIGHTVIS_MAX_VIEW_RATIO='lots': expected a non-negative integer" in one_error(
        ["info", str(p)])


def test_one_storage_shared_many_times_over_counts_every_view(tmp_path: Path) -> None:
    """No stride 0, but 3,000 tensors each viewing all of one 1 MiB storage: 768 Mi elements
    from 1 MiB, refused; 3 such tensors are fine."""
    n = 1 << 18
    data = {"0": np.zeros(n, "<f4").tobytes()}
    many = {f"t{i}": fx.tensor("0", "FloatStorage", n, 0, (512, 512), (512, 1))
            for i in range(3000)}
    refused(zip_with(tmp_path, "many.pt", many, data),
            r"would draw 786,432,000 elements from 1,048,576 bytes of storage")
    few = dict(list(many.items())[:3])
    with PyTorchReader(zip_with(tmp_path, "few.pt", few, data)) as r:
        assert len(r.tensors()) == 3


@pytest.mark.parametrize("case", [
    "last_element_fits", "one_past_the_end", "negative_stride", "negative_offset",
    "size_2_62", "numel_past_2_62", "rank_65", "legacy_view_negative_offset",
    "legacy_view_past_its_storage", "legacy_view_inside"])
def test_extents(tmp_path: Path, case: str) -> None:
    """max reachable index = offset + sum((size_i - 1) * stride_i) must be < storage numel."""
    t = lambda off, size, stride: fx.tensor("0", "FloatStorage", 12, off, size, stride)  # noqa
    if case == "last_element_fits":  # 2 + (2-1)*5 + (3-1)*2 = 11 = numel - 1
        with PyTorchReader(zip_with(tmp_path, "a.pt", {"w": t(2, (2, 3), (5, 2))})) as r:
            np.testing.assert_array_equal(r.read_all("w"), [[2, 4, 6], [7, 9, 11]])
        return
    if case == "legacy_view_inside":  # view of elements 4..11, tensor at its offset 1
        w = fx.tensor("0", "FloatStorage", 12, 1, (2, 3), (3, 1), legacy_view=("v", 4, 8))
        p = fx.write_legacy(tmp_path / "v.pth", fx.dumps(fx.ordered_dict({"w": w})),
                            [("0", 4, F32.tobytes())])
        with PyTorchReader(p) as r:
            np.testing.assert_array_equal(r.read_all("w"), [[5, 6, 7], [8, 9, 10]])
        return
    cases = {
        "one_past_the_end": (t(3, (2, 3), (5, 2)),
                             r"tensor 'w': float32 elements 3\.\.12 .* extend past the end of "
                             r"storage data/0 \(12 elements\)"),
        "negative_stride": (t(11, (3, 4), (-4, -1)),
                            r"tensor 'w': stride \(-4, -1\) does not match size \[3, 4\]"),
        "negative_offset": (t(-1, (3,), (1,)), r"tensor 'w': storage offset -1 is not"),
        "size_2_62": (t(0, (1 << 62,), (0,)), r"tensor 'w': size \(4611686018427387904,\) is "
                                              r"not a list of non-negative integers"),
        "numel_past_2_62": (t(0, (1 << 31, 1 << 31), (0, 0)),
                            r"tensor 'w': size \[2147483648, 2147483648\] makes "
                            r"4,611,686,018,427,387,904 elements"),
        "rank_65": (t(0, (1,) * 65, (0,) * 65), r"tensor 'w': size .* \(at most 64"),
        "legacy_view_negative_offset": (
            fx.tensor("0", "FloatStorage", 12, 0, (2,), (1,), legacy_view=("v", -4, 4)),
            r"at byte \d+: legacy pickle: cannot unpickle .*malformed storage view "
            r"\('v', -4, 4\) of storage '0'"),
        "legacy_view_past_its_storage": (
            fx.tensor("0", "FloatStorage", 12, 0, (2,), (1,), legacy_view=("v", 10, 4)),
            r"storage view \('v', 10, 4\) runs past the end of storage '0' \(12 elements\)"),
    }
    tensor, pattern = cases[case]
    if case.startswith("legacy"):
        p = fx.write_legacy(tmp_path / "l.pth", fx.dumps(fx.ordered_dict({"w": tensor})),
                            [("0", 4, F32.tobytes())])
    else:
        p = zip_with(tmp_path, "z.pt", {"w": tensor})
    refused(p, pattern)


# -- 2. zip bombs, headers, CRCs ------------------------------------------------------------------
@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """1 GiB deflated into ~1 MB: under a 4x4 tensor, as data.pkl, as byteorder."""
    d = tmp_path_factory.mktemp("bombs")
    return {k: fx.bomb_zip(d / f"{k}.pt", bomb=k) for k in ("storage", "pkl", "byteorder")}


@pytest.mark.parametrize("kind", ["storage", "pkl", "byteorder"])
def test_bombs_are_refused_by_the_ratio_before_inflating(bombs: dict[str, Path],
                                                         kind: str) -> None:
    p = bombs[kind]
    entry = {"storage": "data/0", "pkl": "data.pkl", "byteorder": "byteorder"}[kind]
    assert p.stat().st_size < 2 * MiB
    refused(p, rf"zip entry 'archive/{entry}' inflates to 1,073,741,\d+ bytes from [\d,]+: .* "
               rf"more than 100x the file's [\d,]+ bytes .*WEIGHTVIS_MAX_ZIP_RATIO")
    o = run_cli(["info", str(p)])
    assert broken_promise(o) is None and o.returncode == 2 and o.peak_rss < 300 * MiB, o


def test_a_bomb_allowed_by_the_user_is_inflated_only_as_far_as_needed(
        bombs: dict[str, Path], tmp_path: Path) -> None:
    """With the ratio raised, the 4x4 tensor on the 1 GiB storage renders (two workers) and the
    process tree never holds more than a fraction of the bomb."""
    env = {"WEIGHTVIS_MAX_ZIP_RATIO": "5000"}
    o = run_cli([str(bombs["storage"]), "--out", str(tmp_path / "b"), "--workers", "2", "-q"],
                env=env)
    assert broken_promise(o) is None and o.returncode == 0, o
    assert o.peak_rss < 500 * MiB, o.peak_rss  # the bomb is 1024 MiB (2.1 GB peak before)
    o = run_cli(["info", str(bombs["byteorder"])], env=env)
    assert o.returncode == 2 and "'archive/byteorder' holds 1,073,741,824 bytes; at most 64 " \
                                  "expected" in o.stderr and o.peak_rss < 300 * MiB, o


def test_entries_are_held_to_their_declared_size(tmp_path: Path) -> None:
    """A deflated storage declaring 48 bytes whose stream inflates to 64 MiB stops at byte 49;
    one declaring more than its stream holds ends early: both one clear error on read."""
    big = np.zeros(16 * MiB, "<f4").tobytes()
    src = zip_with(tmp_path, "src.pt", {"w": fx.tensor("0", "FloatStorage", 12, 0, (3, 4),
                                                       (4, 1))},
                   {"0": big}, compress=True)
    lie = fx.edit_headers(src, tmp_path / "lie.pt", "data/0", usize=48)
    with PyTorchReader(lie) as r, pytest.raises(FormatError, match=r"lie\.pt: zip entry "
                                                "'archive/data/0' inflates to more than the 48 "
                                                "bytes it declares"):
        r.read_all("w")
    short_ = zip_with(tmp_path, "s.pt", {"w": fx.tensor("0", "FloatStorage", 12, 0, (3, 4),
                                                        (4, 1))}, compress=True)
    grown = fx.edit_headers(short_, tmp_path / "grown.pt", "data/0", usize=4096)
    with PyTorchReader(grown) as r, pytest.raises(
            FormatError, match=r"'archive/data/0' inflates to fewer bytes than the 4,096"):
        r.read_all("w")


def test_deflated_storages_read_by_chunks_equal_the_data(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Random blocks of a 12 MiB deflated storage (three 4 MiB chunks, the cache cut to one
    chunk so reads re-inflate from the kept decompressor copies) equal the stored array."""
    monkeypatch.setattr(zipread, "_CACHED_CHUNKS", 1)
    rng = np.random.default_rng(3)
    w = rng.standard_normal((1536, 2048)).astype("<f4")
    w[:, 1000:] = 0  # compressible halves
    p = zip_with(tmp_path, "d.pt", {"w": fx.tensor("0", "FloatStorage", w.size, 0, w.shape,
                                                   (2048, 1)),
                                    "wt": fx.tensor("0", "FloatStorage", w.size, 0, (2048, 1536),
                                                    (1, 2048))},
                 {"0": w.tobytes()}, compress=True)
    with PyTorchReader(p) as r:
        for _ in range(12):
            r0 = int(rng.integers(0, 1536))
            r1 = int(rng.integers(r0 + 1, min(1536, r0 + 700) + 1))
            c0 = int(rng.integers(0, 2000))
            np.testing.assert_array_equal(r.read("w", r0, r1, c0, 2048), w[r0:r1, c0:])
        np.testing.assert_array_equal(r.read("wt", 5, 9, 1400, 1536), w.T[5:9, 1400:])
        np.testing.assert_array_equal(r.read_all("w"), w)


@pytest.fixture()
def small_zip(tmp_path: Path) -> Path:
    torch = pytest.importorskip("torch")
    p = tmp_path / "ok.pt"
    torch.save({"w": torch.arange(12.0).reshape(3, 4), "b": torch.ones(3)}, p)
    return p


def _flip_data_byte(src: Path, dst: Path, entry: str) -> Path:
    start, csize = fx.entry_data_offset(src, entry)
    data = bytearray(src.read_bytes())
    data[start + csize // 2] ^= 0x40
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize("entry", ["data/0", "data.pkl", "byteorder"])
def test_a_bad_crc_is_one_clear_error_with_default_workers(small_zip: Path, tmp_path: Path,
                                                            entry: str) -> None:
    bad = _flip_data_byte(small_zip, tmp_path / "bad.pt", entry)
    pattern = rf"bad\.pt: zip entry 'ok/{re.escape(entry)}' is corrupt: its data has CRC-32 0x"
    o = run_cli([str(bad), "--out", str(tmp_path / "b"), "-q"])  # all cores
    assert broken_promise(o) is None and o.returncode == 2, o
    assert re.search(pattern, o.stderr), o.stderr
    assert re.search(pattern, one_error([str(bad), "--out", str(tmp_path / "b1"),
                                         "--workers", "1", "-q"]))
    assert not (tmp_path / "b").exists() and not (tmp_path / "b1").exists()


def test_crc_zero_is_torch_not_computing_it_and_the_check_is_an_option(
        small_zip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save with compute_crc32=False writes CRC 0 everywhere: read (torch.load reads
    it too). WEIGHTVIS_CHECK_CRC=0 reads a file whose CRC is wrong."""
    torch = pytest.importorskip("torch")
    config = pytest.importorskip("torch.utils.serialization").config
    p = tmp_path / "nocrc.pt"
    config.save.compute_crc32 = False
    try:
        torch.save({"w": torch.arange(12.0).reshape(3, 4)}, p)
    finally:
        config.save.compute_crc32 = True
    with zipfile.ZipFile(p) as z:
        assert {i.CRC for i in z.infolist()} == {0}
    with PyTorchReader(p) as r:
        np.testing.assert_array_equal(r.read_all("w"), np.arange(12.0).reshape(3, 4))
    bad = _flip_data_byte(small_zip, tmp_path / "badcrc.pt", "data/0")
    with PyTorchReader(bad) as r, pytest.raises(FormatError, match="is corrupt"):
        r.read_all("w")
    monkeypatch.setenv("WEIGHTVIS_CHECK_CRC", "0")
    with PyTorchReader(bad) as r:
        got = r.read_all("w")
    assert (got != np.arange(12.0).reshape(3, 4)).sum() == 1  # the flipped byte, read as is


@pytest.mark.parametrize("case", [
    "local_method", "central_method", "local_size", "local_crc", "descriptor", "local_name",
    "bzip2", "lzma",
    "stored_sizes_differ", "pkl_flagged_deflated_but_stored", "pkl_flagged_stored_but_deflated",
    "header_past_end", "data_past_end", "too_many_entries", "encrypted"])
def test_zip_header_lies(small_zip: Path, tmp_path: Path, case: str,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    dst = tmp_path / f"{case}.pt"
    edit = lambda entry, where="both", **kw: fx.edit_headers(small_zip, dst, entry,  # noqa
                                                             where=where, **kw)
    if case == "local_method":
        edit("data/0", "local", method=8)
        pattern = r"'ok/data/0': compression method 8 in its local header, 0 in the central"
    elif case == "central_method":
        edit("data/0", "central", method=8)
        pattern = r"'ok/data/0': compression method 0 in its local header, 8 in the central"
    elif case == "local_size":  # zipfile writes sizes in the local header
        fx.rewrite_zip(small_zip, tmp_path / "plain.pt")
        fx.edit_headers(tmp_path / "plain.pt", dst, "data/1", "local", usize=1 << 20)
        pattern = r"'ok/data/1': size 1048576 in its local header, 12 in the central"
    elif case == "local_crc":
        fx.rewrite_zip(small_zip, tmp_path / "plain.pt")
        fx.edit_headers(tmp_path / "plain.pt", dst, "byteorder", "local", crc=7)
        pattern = r"'ok/byteorder': CRC-32 7 in its local header"
    elif case == "descriptor":  # torch writes sizes and CRC after the data instead
        start, csize = fx.entry_data_offset(small_zip, "data/1")
        data = bytearray(small_zip.read_bytes())
        assert data[start + csize:start + csize + 4] == b"PK\x07\x08"
        data[start + csize + 8] ^= 1  # its compressed size
        dst.write_bytes(bytes(data))
        pattern = (r"'ok/data/1': its data descriptor \(CRC-32 and sizes\) disagrees with the "
                   r"central directory")
    elif case == "local_name":
        data = bytearray(small_zip.read_bytes())
        with zipfile.ZipFile(small_zip) as z:
            off = z.getinfo("ok/data/0").header_offset
        data[off + 30 + 3] = ord("X")  # ok/data/0 -> ok/Xata/0
        dst.write_bytes(bytes(data))
        pattern = r"'ok/data/0': its local header names 'ok/Xata/0'"
    elif case in ("bzip2", "lzma"):
        with zipfile.ZipFile(small_zip) as zi, zipfile.ZipFile(dst, "w") as zo:
            for i in zi.infolist():
                method = (zipfile.ZIP_BZIP2 if case == "bzip2" else zipfile.ZIP_LZMA) if (
                    i.filename.endswith("data/0")) else zipfile.ZIP_STORED
                zo.writestr(i.filename, zi.read(i), compress_type=method)
        pattern = rf"'ok/data/0' is compressed with {case}: a PyTorch checkpoint's entries are"
    elif case == "stored_sizes_differ":
        fx.rewrite_zip(small_zip, tmp_path / "plain.pt")
        fx.edit_headers(tmp_path / "plain.pt", dst, "data/0", csize=40)
        pattern = r"'ok/data/0' is stored, but its sizes differ \(40 and 48\)"
    elif case == "pkl_flagged_deflated_but_stored":
        edit("data.pkl", method=8)
        pattern = r"'ok/data\.pkl' cannot be inflated \(Error -3 .*\): corrupt\?"
    elif case == "pkl_flagged_stored_but_deflated":
        fx.rewrite_zip(small_zip, tmp_path / "defl.pt")
        with zipfile.ZipFile(small_zip) as zi, zipfile.ZipFile(tmp_path / "defl.pt", "w") as zo:
            for i in zi.infolist():
                zo.writestr(i.filename, zi.read(i), compress_type=zipfile.ZIP_DEFLATED if (
                    i.filename.endswith("data.pkl")) else zipfile.ZIP_STORED)
        with zipfile.ZipFile(tmp_path / "defl.pt") as z:
            csize = z.getinfo("ok/data.pkl").compress_size
        fx.edit_headers(tmp_path / "defl.pt", dst, "data.pkl", method=0, usize=csize)
        pattern = r"'ok/data\.pkl' is corrupt: its data has CRC-32"  # read, then checked
    elif case == "header_past_end":
        data = small_zip.read_bytes()
        cd = data.index(b"PK\x01\x02")
        dst.write_bytes(data[:cd + 42] + struct.pack("<I", len(data) - 10) + data[cd + 46:])
        pattern = r"zip entry 'ok/data\.pkl'.*(past the end|no local header)"
    elif case == "data_past_end":
        edit("data/0", csize=1 << 30, usize=1 << 30)
        pattern = r"'ok/data/0' runs past the end of the file \(\d+ bytes\): truncated\?"
    elif case == "too_many_entries":
        monkeypatch.setenv("WEIGHTVIS_MAX_ZIP_ENTRIES", "4")
        dst = small_zip
        pattern = r"zip archive declares \d+ entries, more than 4 \(WEIGHTVIS_MAX_ZIP_ENTRIES\)"
    elif case == "encrypted":
        data = bytearray(small_zip.read_bytes())
        cd = data.index(b"PK\x01\x02")
        data[cd + 8] |= 1
        dst.write_bytes(bytes(data))
        pattern = r"zip entry 'ok/data\.pkl' is encrypted"
    refused(dst, pattern)


# -- 3. one line instead of a traceback -----------------------------------------------------------
def _pid(*items: Any) -> Any:
    return fx.Call(fx.G("torch._utils", "_rebuild_tensor_v2"), fx.PID(*items), 0, (3, 4),
                   (4, 1), False, None)


STORAGE = fx.G("torch", "FloatStorage")
W = fx.tensor("0", "FloatStorage", 12, 0, (3, 4), (4, 1))
MALFORMED: dict[str, tuple[str, Any, str]] = {
    # case: (container, the state dict pickled, what follows "<file>: " or "<file> at byte N: ")
    "long1_offset": ("zip", {"w": fx.tensor("0", "FloatStorage", 12, 10 ** 5000, (3, 4), (4, 1))},
                     r"tensor 'w': storage offset <16610-bit integer> is not a non-negative "),
    "long4_size": ("zip", {"w": fx.tensor("0", "FloatStorage", 12, 0, (10 ** 5000, 0), (4, 1))},
                   r"tensor 'w': size \(<16610-bit integer>, 0\) is not a list"),
    "long_numel": ("legacy", {"w": fx.tensor("0", "FloatStorage", 10 ** 5000, 0, (3,), (1,))},
                   r"legacy pickle: cannot unpickle \(UnpicklingError: malformed storage "
                   r"persistent id \('storage', torch.FloatStorage, '0', 'cpu', <16610-bit "
                   r"integer>\): expects a key and an element count below 2\^62\)"),
    "long_text": ("zip", {"w": W, "x": fx.Raw(b"L" + b"9" * 5000 + b"L\n")},
                  r"archive/data\.pkl: cannot unpickle \(it holds an integer of more digits "),
    "int_text": ("legacy", {"w": W, "x": fx.Raw(b"I" + b"9" * 5000 + b"\n")},
                 r"legacy pickle: cannot unpickle \(ValueError: could not convert string to "
                 r"int\)"),
    "huge_other_entry": ("zip", {"w": W, "step": 10 ** 5000}, ""),
    "deep_lists": ("zip", {"w": W, "x": fx.Raw(b"]" * 100000 + b"a" * 99999)}, ""),
    "deep_tuples": ("legacy", {"w": W, "x": fx.Raw(b"N" + b"\x85" * 300000)},
                    r"legacy pickle: refused \(tuples nested more than 10,000 deep at pickle "
                    r"byte \d+\)"),
    "deep_tuple_as_key": ("zip", {"w": W, "x": fx.Raw(b"(N" + b"\x85" * 200000 + b"K\x01d")},
                          r"archive/data\.pkl: refused \(tuples nested more than 10,000 deep"),
    "deep_tuple_by_memo": ("zip", {"w": W, "x": fx.Raw(
        b"(N" + b"\x85q\x00h\x00" * 20000 + b"K\x01d")},
        r"archive/data\.pkl: refused \(tuples nested more "),
    "tuple_nesting_at_the_bound": ("zip", {"w": W, "x": fx.Raw(b"(N" + b"\x85" * 9999
                                                               + b"K\x01d")}, ""),
    "deep_size": ("zip", {"w": fx.Call(fx.G("torch._utils", "_rebuild_tensor_v2"),
                                       fx.PID("storage", STORAGE, "0", "cpu", 12), 0,
                                       fx.Raw(b"N" + b"\x85" * 100000), (4, 1), False, None)},
                  r"archive/data\.pkl: refused \(tuples nested more than 10,000 deep"),
    "deep_size_within_bound": ("zip", {"w": fx.Call(
        fx.G("torch._utils", "_rebuild_tensor_v2"), fx.PID("storage", STORAGE, "0", "cpu", 12),
        0, fx.Raw(b"N" + b"\x85" * 1000), (4, 1), False, None)},
        r"tensor 'w': size \(\(\(\(\.\.\.\),\),\),\) is not a list"),
    "pid_list": ("zip", {"w": fx.Call(fx.G("torch._utils", "_rebuild_tensor_v2"),
                                      fx.Raw(b"]Q"), 0, (3, 4), (4, 1), False, None)},
                 r"archive/data\.pkl: cannot unpickle \(UnpicklingError: unsupported "
                 r"persistent id \[\]\)"),
    "pid_int": ("legacy", {"w": _pid(fx.Raw(b"K\x05Q"))},
                r"legacy pickle: cannot unpickle \(UnpicklingError: unsupported persistent id "
                r"5\)"),
    "pid_float_numel": ("zip", {"w": _pid("storage", STORAGE, "0", "cpu", 12.0)},
                        r"archive/data\.pkl: cannot unpickle \(UnpicklingError: malformed "
                        r"storage persistent id .*12\.0\): expects a key and an element count "
                        r"below 2\^62\)"),
    "pid_bool_numel": ("legacy", {"w": _pid("storage", STORAGE, "0", "cpu", True)},
                       r"legacy pickle: cannot unpickle .*malformed storage persistent id "
                       r".*'cpu', True\)"),
    "pid_key_tuple": ("zip", {"w": _pid("storage", STORAGE, ("0",), "cpu", 12)},
                      r"archive/data\.pkl: cannot unpickle .*malformed storage persistent id "
                      r".*\('0',\), 'cpu'"),
    "pid_global_type": ("legacy", {"w": _pid("storage", fx.G("os", "system"), "0", "cpu", 12)},
                        r"legacy pickle: cannot unpickle \(UnpicklingError: persistent id names "
                        r"storage type <os\.system>, not a torch storage class\)"),
    "pid_module": ("zip", {"w": _pid("module", fx.G("os", "system"), "x.py", "src")},
                   r"tensor 'w': tensor storage is <os\.system>, not a storage persistent id"),
    "pid_text": ("zip", {"w": fx.Call(fx.G("torch._utils", "_rebuild_tensor_v2"),
                                      fx.Raw(b"Pstorage\n"), 0, (3,), (1,), False, None)},
                 r"archive/data\.pkl: cannot unpickle \(UnpicklingError: unsupported "
                 r"persistent id 'storage'\)"),
    "control_chars": ("zip", {"w": _pid("storage", fx.Raw(
        b"\x8c\x03os\n\x8c\x06\x1b[2J\x07\r\x93"), "0", "cpu", 12)},
        r"archive/data\.pkl: cannot unpickle \(UnpicklingError: persistent id names storage "
        r"type <os\\n\.\\x1b\[2J\\x07\\r>, not a torch storage class\)"),
    "unknown_storage_zip": ("zip", {"w": fx.tensor("7", "Float7Storage", 12, 0, (3, 4), (4, 1)),
                                    "v": fx.tensor("0", "FloatStorage", 12, 0, (12,), (1,))},
                            ""),
    "unknown_storage_legacy": ("legacy", {"w": fx.tensor("0", "Float7Storage", 12, 0, (3,),
                                                         (1,))},
                               r"storage '0' is a 'Float7Storage', whose element size is "
                               r"unknown: the storages after it cannot be found"),
    "missing_entry": ("zip", {"w": fx.tensor("5", "FloatStorage", 12, 0, (3, 4), (4, 1))},
                      r"tensor 'w': storage data/5 is missing from the file"),
    "missing_record": ("legacy", {"w": fx.tensor("5", "FloatStorage", 12, 0, (3, 4), (4, 1))},
                       r"storage key '0' listed but never referenced"),
    "storage_too_small": ("zip", {"w": fx.tensor("0", "FloatStorage", 13, 0, (13,), (1,))},
                          r"tensor 'w': storage data/0 declares 52 bytes \(from byte 0\) but "
                          r"the file holds 48"),
    "truncated": ("zip", {"w": W, "x": fx.Raw(b"X\xff\x00\x00\x00ab")},
                  r"archive/data\.pkl: cannot unpickle \(it ends before its STOP opcode: "
                  r"truncated\?\)"),
    "memo_bomb": ("zip", {"w": W, "x": fx.Raw(b"Nr\x00\xa3\xe1\x11")},
                  r"archive/data\.pkl: refused \(memo index 300000000 at pickle byte \d+ is "
                  r"out of sequence"),
    "memo_bomb_text": ("legacy", {"w": W, "x": fx.Raw(b"Np99999999999\n")},
                       r"legacy pickle: refused \(memo index 99999999999 at pickle byte \d+ "
                       r"is out of sequence"),
    "bytearray8_huge": ("legacy", {"w": W, "x": fx.Raw(b"\x96" + struct.pack("<Q", 1 << 62))},
                        r"legacy pickle: refused \(a 4,611,686,018,427,387,904-byte BYTEARRAY8 "
                        r"at pickle byte \d+: more than the memory allowed for the pickle\)"),
    "binunicode_past_the_bound": ("zip", {"w": W, "x": fx.Raw(b"X\xff\xff\xff\xff")},
                                  r"archive/data\.pkl: refused \(a 4,294,967,295-byte "
                                  r"BINUNICODE at pickle byte \d+: more than the memory"),
    "ext_code": ("zip", {"w": W, "x": fx.Raw(b"\x82\x01")},
                 r"archive/data\.pkl: refused \(extension-code opcode \(EXT\) at pickle byte "
                 r"\d+: not allowed\)"),
}


def _write_malformed(tmp_path: Path, case: str) -> Path:
    container, obj, _ = MALFORMED[case]
    body = obj if isinstance(obj, fx.Raw) else fx.ordered_dict(obj)
    pkl = fx.dumps(body)
    if container == "zip":
        return fx.write_zip(tmp_path / f"{case}.pt", pkl, {"0": F32.tobytes()})
    return fx.write_legacy(tmp_path / f"{case}.pth", pkl, [("0", 4, F32.tobytes())])


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_input_is_one_line_or_reads(tmp_path: Path, case: str) -> None:
    """Each case: exit 2 with the expected words naming the file, or (pattern "") the file
    reads (what is hostile about it is only listed); never a traceback."""
    p = _write_malformed(tmp_path, case)
    pattern = MALFORMED[case][2]
    t0 = time.perf_counter()
    if pattern:
        refused(p, "^" + re.escape(str(p)) + r"(: | at byte \d+: )" + pattern)
        assert one_error([str(p), "--out", str(tmp_path / "b"), "--workers", "1", "-q"])
    else:
        with PyTorchReader(p) as r:
            names = [t.name for t in r.tensors()]
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            assert cli.main(["info", str(p)]) == 0, err.getvalue()
            assert cli.main([str(p), "--out", str(tmp_path / "b"), "--workers", "1",
                             "-q"]) == 0, err.getvalue()
        assert names == (["v"] if case == "unknown_storage_zip" else ["w"])
    assert time.perf_counter() - t0 < 30


def test_truncated_pickles_at_every_opcode(tmp_path: Path) -> None:
    """A zip data.pkl and a legacy file cut after each opcode of the pickle: one line each."""
    import pickletools

    pkl = fx.dumps(fx.ordered_dict({"w": W, "b": fx.tensor("0", "FloatStorage", 12, 2, (2,),
                                                            (5,))}))
    cuts = [pos for _op, _arg, pos in pickletools.genops(pkl)][1:]
    for cut in cuts:
        z = fx.write_zip(tmp_path / "t.pt", pkl[:cut], {"0": F32.tobytes()})
        assert "it ends before its STOP opcode" in one_error(["info", str(z)]), cut
        legacy = fx.write_legacy(tmp_path / "t.pth", pkl, [("0", 4, F32.tobytes())])
        data = legacy.read_bytes()
        legacy.write_bytes(data[:data.index(pkl) + cut])
        assert "legacy pickle: cannot unpickle (it ends before" in one_error(
            ["info", str(legacy)]), cut


def test_a_huge_other_entry_is_described_not_converted(tmp_path: Path) -> None:
    with PyTorchReader(_write_malformed(tmp_path, "huge_other_entry")) as r:
        assert r.metadata["other_entries"] == {"step": "<16610-bit integer>"}


# -- the pickle's memory --------------------------------------------------------------------------
def test_a_pickle_that_builds_sets_is_stopped_by_the_memory_bound(tmp_path: Path) -> None:
    """20 MiB of EMPTY_SET opcodes would take ~4.7 GB; the bound stops it early."""
    pkl = b"\x80\x04" + b"\x8f" * (20 * MiB) + b"N."
    p = fx.write_zip(tmp_path / "sets.pt", pkl, {})
    o = run_cli(["info", str(p)], env={"WEIGHTVIS_MAX_PICKLE_MEMORY": str(256 * MiB)})
    assert broken_promise(o) is None and o.returncode == 2, o
    assert re.search(r"sets\.pt: archive/data\.pkl: refused \(reading it grew memory by \d+ MiB "
                     r"by pickle byte \d+, past the 256 MiB allowed\)", o.stderr), o.stderr
    assert o.peak_rss < 700 * MiB, o.peak_rss


def test_a_memo_index_bomb_allocates_nothing(tmp_path: Path) -> None:
    """12 bytes whose memo index would make the unpickler clear 16 GB."""
    p = fx.write_zip(tmp_path / "memo.pt", b"\x80\x02Nr\x00\xca\x9a\x3b.", {})
    o = run_cli(["info", str(p)])
    assert broken_promise(o) is None and o.returncode == 2 and o.peak_rss < 300 * MiB, o
    assert "memo index 1000000000 at pickle byte 3 is out of sequence" in o.stderr


def test_limits_have_their_documented_defaults() -> None:
    from weightvis.formats import pt_limits as lim

    assert (lim.max_pickle_memory(), lim.max_zip_ratio(), lim.max_zip_entries(),
            lim.max_view_ratio(), lim.check_crc()) == (1 << 30, 100, 1 << 18, 4, True)
    assert (INFLATE_ALLOWANCE, VIEW_ALLOWANCE) == (64 * MiB, 1 << 24)


def test_a_long_text_line_is_scanned_in_linear_time() -> None:
    """A 32 MiB protocol-0 string whose source hands out 1 KiB at a time: the search for the
    line's end resumes where it stopped (from the start each time: 512 GB scanned)."""
    from weightvis.formats.pickle_safe import RestrictedUnpickler
    from weightvis.formats.pickle_scan import PickleStream

    data = b"\x80\x02S'" + b"a" * (32 * MiB) + b"'\n."
    pos = 0

    def fetch(n: int) -> bytes:
        nonlocal pos
        out = data[pos:pos + min(n, 1024)]
        pos += len(out)
        return out

    t0 = time.process_time()
    assert RestrictedUnpickler(PickleStream(fetch, max_memory=1 << 30)).load() == "a" * (32 * MiB)
    assert time.process_time() - t0 < 4


# -- the attack's inputs, kept as corpus files ---------------------------------------------------
ATTACK_CASES = ["long1_offset", "long4_size", "long_numel", "deep_size", "deep_tuple_as_key",
                "memo_bomb"]
"""The cases of ``MALFORMED`` that broke weightvis before (a traceback, a crash, memory)."""


def attack_corpus(d: Path) -> dict[str, bytes]:
    """The inputs of the attack that broke weightvis (the small ones; the bombs are generated
    by the tests above) as ``tests/fuzz/corpus/pytorch/attack-*`` (regenerate with
    ``python -m tests.test_trust_pytorch``); the bad CRCs rendered silently."""
    d.mkdir(parents=True, exist_ok=True)
    out = {f"attack-{c}{_write_malformed(d, c).suffix}": _write_malformed(d, c).read_bytes()
           for c in ATTACK_CASES}
    out["attack-stride0-view.pt"] = zip_with(
        d, "s.pt", {"w": fx.tensor("0", "FloatStorage", 1, 0, (1 << 20, 1 << 20), (0, 0))},
        {"0": F32[:1].tobytes()}).read_bytes()
    w = fx.tensor("0", "FloatStorage", 12, 0, (3, 4), (4, 1))
    legacy_neg = fx.tensor("0", "FloatStorage", 12, 0, (2, 2), (2, 1), legacy_view=("v", -4, 4))
    out["attack-negative-legacy-view.pth"] = fx.write_legacy(
        d / "n.pth", fx.dumps(fx.ordered_dict({"w": legacy_neg})),
        [("0", 4, F32.tobytes())]).read_bytes()
    plain = zip_with(d, "plain.pt", {"w": w})
    out["attack-pkl-flagged-deflated.pt"] = fx.edit_headers(
        plain, d / "m.pt", "data.pkl", method=8).read_bytes()
    for entry in ("data/0", "data.pkl"):
        name = entry.replace("/", "-").replace(".", "-")
        out[f"attack-bad-crc-{name}.pt"] = _flip(plain, entry)
    deflated = zip_with(d, "deflated.pt", {"w": w},
                        {"0": np.arange(4096, dtype="<f4").tobytes()}, compress=True)
    out["attack-bad-crc-deflated.pt"] = _flip(deflated, "data/0")
    start, _ = fx.entry_data_offset(deflated, "data/0")
    broken = bytearray(deflated.read_bytes())
    broken[start:start + 8] = b"\xff" * 8  # an invalid deflate block: zlib.error before
    out["attack-invalid-deflate-stream.pt"] = bytes(broken)
    return out


def _flip(src: Path, entry: str) -> bytes:
    start, csize = fx.entry_data_offset(src, entry)
    data = bytearray(src.read_bytes())
    data[start + csize // 2] ^= 0x40
    return bytes(data)


def test_attack_corpus_is_current(tmp_path: Path) -> None:
    from .fuzz.common import CORPUS

    have = {f.name: f.read_bytes() for f in (CORPUS / "pytorch").glob("attack-*")}
    assert have == attack_corpus(tmp_path)


if __name__ == "__main__":  # regenerate the corpus files
    import tempfile

    from .fuzz.common import CORPUS

    dest = CORPUS / "pytorch"
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("attack-*"):
        old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in attack_corpus(Path(tmp)).items():
            (dest / name).write_bytes(data)
