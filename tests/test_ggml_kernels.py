"""The compiled ggml decoders are bit-identical to gguf-py's reference on every type they
decode: random block bytes (every scale and code pattern, NaN and Inf scales included), one row
and many, and the column windows a reader asks for; and the GGUF reader uses them."""

from __future__ import annotations

import gguf
import gguf.quants
import numpy as np
import pytest

from weightvis.kernels.ggml import BLOCK, decode


def _reference(raw: np.ndarray, name: str) -> np.ndarray:
    return gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[name])


@pytest.mark.parametrize("name", sorted(BLOCK))
@pytest.mark.parametrize("rows,blocks", [(1, 1), (7, 5), (64, 12)])
def test_bit_identical_to_gguf_quants(name: str, rows: int, blocks: int) -> None:
    bs, ts = BLOCK[name]
    rng = np.random.default_rng([rows, blocks, *name.encode()])
    raw = rng.integers(0, 256, (rows, blocks * ts), dtype=np.uint8)
    got = decode(raw, name)
    want = _reference(raw, name).reshape(rows, blocks * bs)
    assert got is not None and got.dtype == np.float32 and got.shape == want.shape
    same = got.view(np.uint32) == want.astype(np.float32).view(np.uint32)
    both_nan = np.isnan(got) & np.isnan(want)
    assert (same | both_nan).all(), (name, np.argwhere(~(same | both_nan))[:5])
    assert np.isfinite(want).mean() > 0.5  # the comparison is over real numbers mostly


def _quantizable() -> list[str]:
    """The types gguf-py can also quantize (the others are covered by random blocks above)."""
    ok = []
    for name in sorted(BLOCK):
        try:
            gguf.quants.quantize(np.zeros((1, 256), np.float32), gguf.GGMLQuantizationType[name])
            ok.append(name)
        except NotImplementedError:
            pass
    return ok


@pytest.mark.parametrize("name", _quantizable())
def test_realistic_blocks_from_the_reference_quantizer(name: str) -> None:
    qtype = gguf.GGMLQuantizationType[name]
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((16, 4 * 256)) * 0.02).astype(np.float32)
    raw = gguf.quants.quantize(x, qtype)
    got = decode(raw, name)
    want = _reference(raw, name)
    assert got is not None
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    assert np.abs(got - x).max() < 0.02  # a real decode: close to what was quantized


def test_unknown_types_are_left_to_gguf_py() -> None:
    assert decode(np.zeros((1, 66), np.uint8), "IQ2_XXS") is None
    with pytest.raises(ValueError):
        decode(np.zeros((1, 33), np.uint8), "Q8_0")
