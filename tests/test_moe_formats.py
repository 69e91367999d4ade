"""One set of reference experts (tests/moe_models.py) stored in every family — per-expert
(DeepSeek, Qwen, Mixtral names), fused (linear, halves, gpt-oss interleaved), DBRX stacks, GGUF
F32 — gives the same moe.json numbers in the same expert order, equal to numpy's; a GGUF Q8_0
agrees within quantization error (issue 12, acceptance)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import weightvis
from weightvis.executors import InlineExecutor

from .moe_models import Ref, dbrx, fused, gguf_moe, per_expert, reference

REF = reference(H=64, I=32, E=4, n_layers=4, moe_layers=(1, 2, 3))


def moe_json(src: Path, out: Path) -> dict[str, Any]:
    doc: dict[str, Any] = weightvis.render_moe([src], out, executor=InlineExecutor()
                                               ).manifest["moe"]
    return doc


def numpy_stats(ref: Ref, layer: int, role: str, e: int) -> tuple[float, float, float]:
    w = ref.matrix(layer, role, e).astype(np.float64)
    rms = math.sqrt(float(np.mean(w * w)))
    return rms, float(np.abs(w).mean()), float(np.abs(w).max()) / rms


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    base = tmp_path_factory.mktemp("families")
    srcs = {
        "deepseek": per_expert(REF, base / "deepseek", "deepseek"),
        "qwen": per_expert(REF, base / "qwen", "qwen"),
        "mixtral": per_expert(REF, base / "mixtral", "mixtral"),
        "fused-linear": fused(REF, base / "linear", "linear"),
        "fused-halves": fused(REF, base / "halves", "halves"),
        "gpt-oss-interleaved": fused(REF, base / "interleaved", "interleaved"),
        "dbrx": dbrx(REF, base / "dbrx"),
        "gguf-f32": gguf_moe(REF, base / "m-f32.gguf")[0],
    }
    return {k: moe_json(v, base / f"out-{k}") for k, v in srcs.items()}


def test_every_family_gives_the_same_numbers(docs: dict[str, dict[str, Any]]) -> None:
    first = docs["deepseek"]
    assert first["layers"] == [1, 2, 3] and first["experts"] == 4
    for name, doc in docs.items():
        assert doc["layers"] == first["layers"], name
        assert doc["roles"] == ["gate", "up", "down"], name
        assert doc["stats"] == first["stats"], name
        assert doc["similarity"] == first["similarity"], name
        assert doc["router"]["row_norm"] == first["router"]["row_norm"], name


def test_the_numbers_are_numpy_s(docs: dict[str, dict[str, Any]]) -> None:
    doc = docs["gguf-f32"]
    for i, layer in enumerate(doc["layers"]):
        for role in doc["roles"]:
            for e in range(4):
                rms, mean_abs, ratio = numpy_stats(REF, layer, role, e)
                assert doc["stats"]["rms"][role][i][e] == pytest.approx(rms, rel=1e-12)
                assert doc["stats"]["mean_abs"][role][i][e] == pytest.approx(mean_abs, rel=1e-12)
                assert doc["stats"]["max_over_rms"][role][i][e] == pytest.approx(ratio,
                                                                                 rel=1e-12)
            a, b = REF.matrix(layer, role, 0), REF.matrix(layer, role, 1)
            cos = float((a.astype(np.float64) * b).sum()
                        / np.linalg.norm(a.astype(np.float64)) / np.linalg.norm(b))
            assert doc["similarity"]["cosine"][role][str(layer)][0][1] == pytest.approx(
                cos, abs=1e-6)
        norms = np.linalg.norm(REF.router[layer].astype(np.float64), axis=1)
        assert doc["router"]["row_norm"][i] == pytest.approx(norms.tolist(), rel=1e-12)
    # the selection bias, where the family has one (DeepSeek, GGUF exp_probs_b, gpt-oss)
    for name in ("deepseek", "gguf-f32", "gpt-oss-interleaved"):
        np.testing.assert_allclose(docs[name]["router"]["bias"],
                                   [REF.bias[layer] for layer in (1, 2, 3)], rtol=1e-7,
                                   err_msg=name)
    assert docs["mixtral"]["router"]["bias"] is None


def test_q8_0_agrees_within_quantization_error(docs: dict[str, dict[str, Any]],
                                               tmp_path: Path) -> None:
    q8 = moe_json(gguf_moe(REF, tmp_path / "m-q8.gguf", "Q8_0")[0], tmp_path / "out")
    f32 = docs["gguf-f32"]
    for role in f32["roles"]:
        np.testing.assert_allclose(q8["stats"]["rms"][role], f32["stats"]["rms"][role],
                                   rtol=5e-3)
        np.testing.assert_allclose(q8["stats"]["stable_rank"][role],
                                   f32["stats"]["stable_rank"][role], rtol=5e-2)
        for layer in ("1", "2", "3"):
            np.testing.assert_allclose(q8["similarity"]["cka"][role][layer],
                                       f32["similarity"]["cka"][role][layer], atol=5e-3)
            np.testing.assert_allclose(q8["similarity"]["cosine"][role][layer],
                                       f32["similarity"]["cosine"][role][layer], atol=5e-3)
    assert q8["stats"]["rms"] != f32["stats"]["rms"]      # (it is quantized)


def _bf16_values(ref: Ref) -> Ref:
    """``ref`` with every array rounded to the nearest bfloat16 (held as float32)."""
    def r(a: np.ndarray) -> np.ndarray:
        b = a.astype(np.float32).view(np.uint32).astype(np.uint64)
        b = (b + 0x7FFF + ((b >> 16) & 1)) >> 16 << 16
        return b.astype(np.uint32).view(np.float32)

    def each(d: dict[Any, Any]) -> dict[Any, Any]:
        return {k: each(v) if isinstance(v, dict) else r(v) for k, v in d.items()}
    return ref._replace(gate=each(ref.gate), up=each(ref.up), down=each(ref.down),
                        router=each(ref.router), bias=each(ref.bias), shared=each(ref.shared))


def test_bf16_storage_gives_the_numbers_of_its_float32_values(tmp_path: Path) -> None:
    """A BF16 expert is decoded with its moments and sums in one pass (kernels.moe
    ``decode_stats_pass``); every other storage reads the float32 matrix, then makes that
    pass. The same values stored as BF16 and as F32, per expert and fused, give the same
    moe.json, bit for bit — at sizes where σ₁ comes from Lanczos and the CKA from the row
    sample (H > 128; ``--cka-exact-max 0``)."""
    from weightvis.formats.safetensors import write_safetensors
    from weightvis.options import MoEOptions

    ref = _bf16_values(reference(H=192, I=136, E=3, n_layers=2, moe_layers=(1,), seed=5))
    f32_dir = per_expert(ref, tmp_path / "f32", "mixtral")
    fused_dir = fused(ref, tmp_path / "fused", "linear")
    bf16_dir = tmp_path / "bf16"
    bf16_dir.mkdir()
    from safetensors.numpy import load_file

    arrays = load_file(str(f32_dir / "model.safetensors"))
    write_safetensors(bf16_dir / "model.safetensors",
                      {k: ("BF16", v.shape, (v.view(np.uint32) >> 16).astype(np.uint16))
                       for k, v in arrays.items()})
    (bf16_dir / "config.json").write_text((f32_dir / "config.json").read_text())
    opts = MoEOptions(cka_exact_max=0)
    docs = {name: weightvis.render_moe([d], tmp_path / f"out-{name}", executor=InlineExecutor(),
                                       moe=opts).manifest["moe"]
            for name, d in (("bf16", bf16_dir), ("f32", f32_dir), ("fused", fused_dir))}
    assert docs["bf16"]["stats"]["stable_rank"]["gate"][0][0] > 1.0
    for name in ("f32", "fused"):
        assert docs[name]["stats"] == docs["bf16"]["stats"], name
        assert docs[name]["similarity"] == docs["bf16"]["similarity"], name


def test_a_group_not_all_bfloat16_is_kept_as_float32(tmp_path: Path) -> None:
    """A group whose experts are all bfloat16 is kept (for the cosines) as codes; one expert
    that is not — its gate has one value off the bfloat16 grid, after two that are — turns the
    group's kept experts into float32 midway. Both give the cosines of numpy's float64
    products, and the other groups' numbers do not change."""
    from weightvis.options import MoEOptions

    ref = _bf16_values(reference(H=192, I=136, E=3, n_layers=2, moe_layers=(1,), seed=5))
    gate = ref.gate[1].copy()
    gate[2, 5, 7] = np.nextafter(gate[2, 5, 7], np.float32(np.inf))  # (low bits set)
    off = ref._replace(gate={1: gate})
    opts = MoEOptions(cka_exact_max=0)
    docs = {name: weightvis.render_moe([per_expert(r, tmp_path / name, "mixtral")],
                                       tmp_path / f"out-{name}", executor=InlineExecutor(),
                                       moe=opts).manifest["moe"]
            for name, r in (("bf16", ref), ("off", off))}
    for name, r in (("bf16", ref), ("off", off)):
        for role in ("gate", "up", "down"):
            flat = np.stack([r.matrix(1, role, e).astype(np.float64).reshape(-1)
                             for e in range(3)])
            dots = flat @ flat.T
            norms = np.sqrt(np.diag(dots))
            want = dots / np.outer(norms, norms)
            got = np.array(docs[name]["similarity"]["cosine"][role]["1"], float)
            np.testing.assert_allclose(got, want, rtol=0, atol=2e-7, err_msg=f"{name} {role}")
    for role in ("up", "down"):
        assert docs["off"]["similarity"]["cosine"][role] == \
            docs["bf16"]["similarity"]["cosine"][role]
        assert docs["off"]["similarity"]["cka"][role] == docs["bf16"]["similarity"]["cka"][role]
