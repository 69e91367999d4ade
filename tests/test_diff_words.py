"""What a diff's diagnosis says, checked against numbers computed here with torch / numpy from the
checkpoints themselves: high rank alone never makes a "rewrite"; cosine and ‖Δ‖/‖A‖ decide
(two CV folds from one initialisation keep A's direction, a model trained apart does not);
near-zero and negative cosines are named."""

from __future__ import annotations

import re
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

import weightvis

from .conftest import real_checkpoint, view2d

MEDIAN = re.compile(r"median cosine (−?[0-9.e+-]+)")


def _state(key: str) -> dict[str, np.ndarray]:
    torch = pytest.importorskip("torch")
    sd = torch.load(str(real_checkpoint(key)), map_location="cpu", weights_only=True)
    return {k: v.numpy().astype(np.float64) for k, v in sd.items()}


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    """cosine over the overlap of the two 2-D views (what the diff compares)."""
    va, vb = view2d(a), view2d(b)
    r, c = min(va.shape[0], vb.shape[0]), min(va.shape[1], vb.shape[1])
    x, y = va[:r, :c].ravel(), vb[:r, :c].ravel()
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def _is_matrix(a: np.ndarray) -> bool:
    v = view2d(a)
    return a.ndim >= 2 and v.shape[0] >= 2 and v.shape[1] >= 2


def _number(text: str) -> float:
    return float(text.replace("−", "-"))


def _verdict(diagnosis: list[str]) -> str:
    (line,) = [ln for ln in diagnosis if "median cosine" in ln]
    return line


def _diff(a: Path, b: Path, out: Path, **kw: Any) -> dict[str, Any]:
    return weightvis.diff([a], [b], out, workers=2, **kw).diff


@pytest.mark.slow
def test_two_cv_folds_are_not_a_rewrite(tmp_path: Path) -> None:
    a, b = _state("pocketnet0"), _state("pocketnet1")
    d = _diff(real_checkpoint("pocketnet0"), real_checkpoint("pocketnet1"), tmp_path / "d")
    verdict = _verdict(d["diagnosis"])
    changed = [k for k in a if not np.array_equal(a[k], b[k])]
    mats = [k for k in changed if _is_matrix(a[k])]
    want = statistics.median(_cos(a[k], b[k]) for k in mats)
    assert 0.5 < want < 0.99  # the folds keep A's direction, far from a fine-tune
    m = MEDIAN.search(verdict)
    assert m is not None and _number(m.group(1)) == pytest.approx(want, rel=2e-3)
    assert f"over {len(mats)} weight matrices" in verdict
    assert "B keeps A's direction" in verdict and "not a rewrite" in verdict
    for line in d["diagnosis"]:  # no sentence calls it a rewrite
        assert "rewrite" not in line.replace("not a rewrite", ""), line
    assert any("high-rank (> 64): not a low-rank" in ln for ln in d["diagnosis"])


@pytest.mark.slow
def test_narrower_model_trained_apart_is_unrelated(tmp_path: Path) -> None:
    a, b = _state("crepe-full"), _state("crepe-tiny")
    d = _diff(real_checkpoint("crepe-full"), real_checkpoint("crepe-tiny"), tmp_path / "d")
    shaped = [k for k in a if a[k].shape != b[k].shape]
    ratios = {y / x for k in shaped for x, y in zip(a[k].shape, b[k].shape, strict=True)
              if x != y}
    assert ratios == {0.125}
    (shape_line,) = [ln for ln in d["diagnosis"] if "tensors changed shape" in ln]
    assert shape_line.startswith(f"{len(shaped)} tensors changed shape")
    assert "changes by ×0.125: the same design, narrower" in shape_line
    verdict = _verdict(d["diagnosis"])
    changed = [k for k in a if view2d(a[k]).shape != view2d(b[k]).shape
               or not np.array_equal(a[k], b[k])]
    want = statistics.median(_cos(a[k], b[k]) for k in changed if _is_matrix(a[k]))
    assert abs(want) < 0.1
    m = MEDIAN.search(verdict)
    assert m is not None and _number(m.group(1)) == pytest.approx(want, rel=2e-3, abs=1e-4)
    assert "unrelated" in verdict
    (odd,) = [ln for ln in d["diagnosis"] if ln.startswith("cosine near zero or negative")]
    low = {k for k in changed if _cos(a[k], b[k]) < 0.1}
    assert odd.startswith(f"cosine near zero or negative in {len(low)} tensor(s): ")
    named = re.findall(r"(\S+) −?[0-9.e-]+(?:;|$| and)", odd.split(": ", 1)[1])
    assert named and set(named) <= low
    lowest = min(low, key=lambda k: _cos(a[k], b[k]))
    assert named[0] == lowest


@pytest.mark.slow
def test_lpips_versions_name_each_change_with_its_cosine(tmp_path: Path) -> None:
    a, b = _state("lpips-v0.0-alex"), _state("lpips-v0.1-alex")
    d = _diff(real_checkpoint("lpips-v0.0-alex"), real_checkpoint("lpips-v0.1-alex"),
              tmp_path / "d")
    for k in a:
        (line,) = [ln for ln in d["diagnosis"] if ln.startswith(k + ": ")]
        assert "row 0 changed" not in line  # a [1, C, 1, 1] tensor has one row: say more
        m = re.search(r"cosine (−?[0-9.]+)", line)
        assert m is not None and _number(m.group(1)) == pytest.approx(_cos(a[k], b[k]),
                                                                     rel=2e-3)
        changed = int(np.count_nonzero(a[k] != b[k]))
        if changed < a[k].size:
            assert f"({changed:,} of {a[k].size:,})" in line
    # LPIPS's linear weights are non-negative: their high cosines say little, and the
    # diagnosis says so instead of a verdict
    assert all((v >= 0).all() for v in (*a.values(), *b.values()))
    verdict = _verdict(d["diagnosis"])
    assert verdict.startswith("median cosine ") and "none a weight matrix: too little to tell" \
        in verdict and "rewrite" not in verdict


def _random_model(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"layers.{i}.weight": rng.standard_normal((24, 32)).astype(np.float32)
            for i in range(5)}


@pytest.mark.parametrize("kind", ["independent", "negated", "nudged"])
def test_verdict_follows_cosine(tmp_path: Path, kind: str) -> None:
    a = _random_model(1)
    if kind == "independent":
        b = _random_model(2)
    elif kind == "negated":
        b = {k: -v for k, v in a.items()}
    else:
        rng = np.random.default_rng(3)
        b = {k: v + 0.05 * rng.standard_normal(v.shape).astype(np.float32) for k, v in a.items()}
    pa, pb = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file(a, str(pa))
    save_file(b, str(pb))
    d = weightvis.diff([pa], [pb], tmp_path / "d", workers=1, svd=False).diff
    verdict = _verdict(d["diagnosis"])
    cosines = [_cos(a[k].astype(np.float64), b[k].astype(np.float64)) for k in a]
    m = MEDIAN.search(verdict)
    assert m is not None
    assert _number(m.group(1)) == pytest.approx(statistics.median(cosines), rel=2e-3, abs=1e-4)
    per_tensor = [ln for ln in d["diagnosis"] if ln.startswith("layers.")]
    assert len(per_tensor) == 5
    if kind == "independent":
        assert max(abs(c) for c in cosines) < 0.1
        assert "B's values are unrelated to A's" in verdict
        assert all("(near zero: unrelated values)" in ln for ln in per_tensor)
    elif kind == "negated":
        assert "point away" in verdict and "negatively correlated" in verdict
        assert all("cosine −1 (negative: B points away from A)" in ln for ln in per_tensor)
    else:
        assert min(cosines) > 0.99
        assert "B stays close to A" in verdict and "not a rewrite" in verdict
