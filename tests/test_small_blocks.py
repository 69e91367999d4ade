"""Small blocks coloured in one compiled call per leaf (kernels.colorize_code_blocks, used by
ValuesPainter.rects): the same indices and the same statistics, bit for bit, as one
colorize_codes_small call per block, and the same bundle as one ``rect`` per placement."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import weightvis
from weightvis import executors, painters
from weightvis.formats import open_checkpoint
from weightvis.formats.dtypes import code_values
from weightvis.formats.safetensors import write_safetensors
from weightvis.kernels import (
    BLOCK_FIELDS,
    BlockScratch,
    colorize_code_blocks,
    colorize_codes_small,
    new_acc,
)

SPECIAL_BF16 = [0x7FC0, 0x7F80, 0xFF80, 0x0000, 0x8000, 0x0001, 0x8001, 0x7F7F]
"""NaN, +inf, -inf, +0, -0, the smallest subnormals, the largest finite."""


def _codes(rng: np.random.Generator, n: int, std: float) -> np.ndarray:
    f = (rng.standard_normal(n) * std).astype(np.float32)
    c = (f.view(np.uint32) >> 16).astype(np.uint16)
    c[rng.integers(0, n, 8)] = SPECIAL_BF16
    return c


@pytest.mark.parametrize("dtype", ["BF16", "F16"])
def test_blocks_match_one_call_per_block(dtype: str) -> None:
    rng = np.random.default_rng(7)
    values = np.stack([code_values("BF16"), code_values("F16")])
    tab = 0 if dtype == "BF16" else 1
    # (rows, row stride, first column, width): whole rows, column slices, one element
    shapes = [(4, 8, 0, 8), (3, 40, 5, 17), (1, 1, 0, 1), (64, 64, 0, 64), (2, 300, 299, 1),
              (7, 9, 2, 7)]
    tile = np.zeros((96, 96), np.uint8)
    ref = np.zeros_like(tile)
    blocks, parts, scales = [], [], []
    off = 0
    for k, (h, stride, c0, w) in enumerate(shapes * 2):
        rows = _codes(rng, h * stride, 0.02 * (k + 1))
        parts.append(rows)
        py, px = (k * 7) % (96 - h), (k * 13) % (96 - w)
        blocks.append((off, stride, c0, h, w, py, px, tab, k % 3))  # accumulators shared
        scales.append(float(rng.uniform(0.01, 0.2)))
        off += h * stride
    codes = np.concatenate(parts)
    table = np.array(blocks, np.int64)
    accs = np.stack([new_acc() for _ in range(3)])
    ref_accs = np.stack([new_acc() for _ in range(3)])
    for (o, stride, c0, h, w, py, px, _t, slot), s in zip(blocks, scales, strict=True):
        block = codes[o:o + h * stride].reshape(h, stride)[:, c0:c0 + w]
        colorize_codes_small(block, values[tab], s, ref[py:py + h, px:px + w], ref_accs[slot])
    scratch = BlockScratch()
    colorize_code_blocks(codes, table, np.array(scales), values, tile, accs, scratch)
    assert np.array_equal(tile, ref)
    assert accs.tobytes() == ref_accs.tobytes()  # the very same bits, NaN counts included
    assert ref_accs[:, 0].sum() > 0 and not scratch.hist.any()  # scratch left all zero


@pytest.mark.parametrize("dtype", ["BF16", "F16"])
def test_every_code_in_one_block_matches_the_lut_path(dtype: str) -> None:
    """A block holding every 16-bit code (the distinct codes read from a bitmap, the indices
    computed apart): the indices and statistics of the LUT path (colorize_codes), for scales
    from subnormal to near the largest float."""
    from weightvis.kernels import code_lut, colorize_codes
    from weightvis.kernels.values import BITMAP_ABOVE

    values = code_values(dtype)
    codes = np.random.default_rng(5).permutation(1 << 16).astype(np.uint16)
    table = np.array([[0, 1 << 16, 0, 1, 1 << 16, 0, 0, 0, 0]], np.int64)
    assert (1 << 16) > BITMAP_ABOVE
    scratch = BlockScratch()
    for s in (1e-40, 6e-5, 0.02, 1.0, 65504.0, 3e38):
        tile, ref = np.zeros((1, 1 << 16), np.uint8), np.zeros((1, 1 << 16), np.uint8)
        acc, ref_acc = new_acc()[None], new_acc()
        colorize_code_blocks(codes, table, np.array([s]), values[None], tile, acc, scratch)
        colorize_codes(codes[None], code_lut(values, s), values, ref, ref_acc,
                       np.zeros(1 << 16, np.int32))
        assert np.array_equal(tile, ref), s
        assert acc[0].tobytes() == ref_acc.tobytes(), s
        assert not scratch.hist.any() and not scratch.bits.any()  # scratch left all zero


def test_blocks_are_validated() -> None:
    values = code_values("BF16")[None]
    out = np.zeros((4, 4), np.uint8)
    accs = new_acc()[None]
    codes = np.zeros(16, np.uint16)
    ok = np.array([[0, 4, 0, 4, 4, 0, 0, 0, 0]], np.int64)
    assert ok.shape[1] == BLOCK_FIELDS
    colorize_code_blocks(codes, ok, np.ones(1), values, out, accs, BlockScratch())
    assert accs[0, 0] == 16
    for bad in ([0, 4, 0, 5, 4, 0, 0, 0, 0],   # past the end of codes
                [0, 4, 1, 4, 4, 0, 0, 0, 0],   # columns past the row stride
                [0, 4, 0, 4, 4, 1, 0, 0, 0],   # past the bottom of out
                [0, 4, 0, 4, 4, 0, 0, 1, 0],   # no such values table
                [0, 4, 0, 4, 4, 0, 0, 0, 1]):  # no such accumulator
        with pytest.raises(ValueError):
            colorize_code_blocks(codes, np.array([bad], np.int64), np.ones(1), values, out,
                                 accs, BlockScratch())
    with pytest.raises(ValueError, match="scales"):
        colorize_code_blocks(codes, ok, np.zeros(1), values, out, accs, BlockScratch())


def _many_tensors(path: Path) -> None:
    """Tiny BF16 and F16 tensors, one F32 and one bigger than SMALL_BLOCK between them (the
    batches are cut around them), and a constant tensor."""
    rng = np.random.default_rng(3)
    tensors: dict[str, tuple[str, list[int], np.ndarray]] = {}
    for layer in range(3):
        for e in range(12):
            shape = [8 + e % 3, 16 + 4 * (e % 2)]
            n = shape[0] * shape[1]
            pre = f"model.layers.{layer}.mlp.experts.{e}"
            tensors[f"{pre}.gate_proj.weight"] = ("BF16", shape, _codes(rng, n, 0.02 + e / 100))
            f16 = (rng.standard_normal(n) * 0.05).astype(np.float16).view(np.uint16)
            tensors[f"{pre}.up_proj.weight"] = ("F16", shape, f16)
        tensors[f"model.layers.{layer}.input_layernorm.weight"] = (
            "F32", [64], rng.standard_normal(64).astype(np.float32))
        tensors[f"model.layers.{layer}.self_attn.q_proj.weight"] = (
            "BF16", [96, 80], _codes(rng, 96 * 80, 0.03))
        tensors[f"model.layers.{layer}.post_attention_layernorm.weight"] = (
            "BF16", [40], np.full(40, 0x3F80, np.uint16))
    write_safetensors(path, tensors)


def _bundle_files(out: Path) -> dict[str, bytes]:
    files = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*.png")}
    m = json.loads((out / "manifest.json").read_text())
    m.pop("generator", None)
    files["manifest"] = json.dumps(m, sort_keys=True).encode()
    return files


def test_render_same_as_one_rect_per_placement(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = tmp_path / "model.safetensors"
    _many_tensors(ckpt)
    calls = []
    batched = painters._SmallBlocks.paint

    def counted(self: painters._SmallBlocks, *a: object) -> None:
        calls.append(len(a[1]))  # type: ignore[arg-type]
        batched(self, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(painters._SmallBlocks, "paint", counted)
    weightvis.render([ckpt], tmp_path / "a", executor=executors.InlineExecutor())
    assert calls and max(calls) > 1  # several blocks per compiled call
    monkeypatch.setattr(painters.ValuesPainter, "rects", painters.Painter.rects)
    weightvis.render([ckpt], tmp_path / "b", executor=executors.InlineExecutor())
    a, b = _bundle_files(tmp_path / "a"), _bundle_files(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) > 2
    assert [k for k in a if a[k] != b[k]] == []


def test_code_span_is_the_codes_and_reading_releases(tmp_path: Path) -> None:
    ckpt = tmp_path / "model.safetensors"
    _many_tensors(ckpt)
    r = open_checkpoint([ckpt])
    try:
        name = "model.layers.1.mlp.experts.4.gate_proj.weight"
        span = r.code_span(name)
        assert span is not None and span.dtype == "BF16" and (span.rows, span.cols) == (9, 16)
        codes = r.read_codes(name, 2, 5)
        assert codes is not None
        r.release()
        raw = span.source.view(span.start + 2 * span.row_bytes, span.start + 5 * span.row_bytes)
        assert np.array_equal(raw.view(np.uint16).reshape(3, span.cols), codes)
        assert r.code_span("model.layers.1.input_layernorm.weight") is None  # F32
        r.release()
        assert span.source.touched is not None  # viewed, not yet reported
        r.reading(name)
        r.release()
        assert span.source.touched is None
    finally:
        r.close()


def test_small_scales_are_the_one_by_one_scales_bit_for_bit(tmp_path: Path) -> None:
    """values.small_scales (tiny 16-bit tensors stacked and sorted together) gives exactly
    tensor_scale's number for each, NaN / Inf / zero / subnormal tensors included."""
    import torch
    from safetensors.torch import save_file as save_torch

    from weightvis import values
    from weightvis.formats import open_checkpoint

    rng = np.random.default_rng(3)
    tensors = {}
    for i in range(300):
        a = rng.standard_normal([2048, 96, 1, 8191][i % 4]) * rng.choice([0.02, 1.0, 1e-30, 0.0])
        if i % 7 == 0:
            a[: i % 11] = np.nan
        if i % 13 == 0:
            a[:] = np.inf
        tensors[f"w{i}"] = torch.from_numpy(a.astype(np.float32)).to(
            torch.bfloat16 if i % 2 else torch.float16)
    tensors["big"] = torch.zeros(1 << 14, dtype=torch.bfloat16)  # histogram path: left out
    tensors["f32"] = torch.ones(10)  # not 16-bit: left out
    save_torch(tensors, str(tmp_path / "m.safetensors"))
    with open_checkpoint([tmp_path / "m.safetensors"]) as r:
        names = [t.name for t in r.tensors()]
        got = values.small_scales(r, names)
        assert set(got) == set(names) - {"big", "f32"}
        for n, v in got.items():
            want = values.tensor_scale(r, n, values.numpy_code_counts)
            assert np.float64(v).tobytes() == np.float64(want).tobytes(), (n, v, want)


def test_resolve_batches_only_placements_in_their_span_with_a_usable_scale(
        tmp_path: Path) -> None:
    """Each placement gets its span's fields and its scale (_BATCH), or is left to ``rect``
    (_SINGLE) when its tensor has no span (F32), its scale is not finite and > 0, or its
    rectangle runs past the span's rows or columns; tensor ids are shared by placements of one
    tensor, and the ids already resolved are not looked up again."""
    from types import SimpleNamespace

    from weightvis.types import Placement

    ckpt = tmp_path / "model.safetensors"
    _many_tensors(ckpt)
    r = open_checkpoint([ckpt])
    g = "model.layers.0.mlp.experts.1.gate_proj.weight"  # BF16 [9, 20]
    u = "model.layers.2.mlp.experts.0.up_proj.weight"  # F16 [8, 16]
    f32 = "model.layers.1.input_layernorm.weight"
    ps = [Placement(g, 0, 0, 0, 9, 0, 20), Placement(u, 0, 0, 2, 8, 1, 16),
          Placement(g, 0, 0, 9, 10, 0, 20),  # row 9 of 9: past the span
          Placement(g, 0, 0, 0, 2, 0, 21),  # column 20 of 20: past it
          Placement(f32, 0, 0, 0, 1, 0, 64), Placement(u, 0, 0, 0, 1, 0, 1)]
    scales = {g: 0.5, u: 0.25, f32: 1.0}
    looked: list[str] = []

    def scale(name: str) -> float:
        looked.append(name)
        return scales[name]

    w = SimpleNamespace(geo=SimpleNamespace(layout=SimpleNamespace(placements=ps)), reader=r,
                        scale=scale, code_values=code_values)
    st = painters._SmallBlocks(w)  # type: ignore[arg-type]
    st.resolve(w, np.array([0, 1, 2, 3, 4], np.int64))  # type: ignore[arg-type]
    assert st.kind[:5].tolist() == [painters._BATCH, painters._BATCH] + [painters._SINGLE] * 3
    assert st.kind[5] == 0  # not asked for
    assert st.names == [g, u, f32] and st.tid[:5].tolist() == [0, 1, 0, 0, 2]
    for i, name in ((0, g), (1, u)):
        span = r.code_span(name)
        assert span is not None
        assert (st.start[i], st.row_bytes[i], st.cols[i]) == (span.start, span.row_bytes,
                                                               span.cols)
        assert st.scale[i] == scales[name] and st.src[i] is span.source
        assert np.array_equal(st.values[st.tab[i]], code_values(span.dtype), equal_nan=True)
    assert st.tab[0] != st.tab[1]  # BF16, F16
    assert st.scale[2:5].tolist() == [1.0] * 3 and st.src[2:5] == [None] * 3
    scales[u] = float("nan")
    looked.clear()
    st.resolve(w, np.array([0, 5], np.int64))  # type: ignore[arg-type]
    assert looked == [u] and st.kind[5] == painters._SINGLE and st.tid[5] == 1
    r.close()
